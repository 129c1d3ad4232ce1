"""Recovery after an outage, through a real queue (SQLite, PostgreSQL) and a Worker: a closed
breaker makes its provider's deferred jobs due at once; an open breaker is probed by one job per
probe interval; a half-open breaker's probe holds other jobs back only briefly; waiting for a
token or a breaker never costs an attempt.

Time is a FakeClock shared by the jobs, the breaker and the limiter: nothing waits in real time.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from antifragile import (
    CircuitBreaker,
    FakeClock,
    Policy,
    RateLimitedError,
    Retry,
    TokenBucket,
    UpstreamUnavailableError,
)
from antifragile.jobs import Job, JobContext, Jobs, JobState, Worker
from antifragile.jobs._open import open_job_queue
from antifragile.jobs._policy import PROBE_WAIT
from antifragile.policies import CircuitState, Constant
from antifragile.stores import open_store
from tests.conftest import POSTGRES_URL, require_service


@pytest.fixture(params=["sqlite", "postgres"])
async def jobs(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Jobs]:
    """Jobs on a SQLite file, or on a PostgreSQL schema of the test's own (dropped after)."""
    if request.param == "sqlite":
        store = await open_store(f"sqlite:///{tmp_path / 'jobs.db'}", clock=clock)
    else:
        require_service("postgres", POSTGRES_URL)
        schema = f"t{uuid.uuid4().hex[:12]}"
        store = await open_store(
            POSTGRES_URL, clock=clock, schema=schema, drop_schema_on_close=True
        )
    try:
        app = Jobs(await open_job_queue(store), clock=clock)
        async with app:
            yield app
    finally:
        await store.close()


async def _job(jobs: Jobs, job_id: str) -> Job:
    found = await jobs.get(job_id)
    assert found is not None
    return found


def _open(breaker: CircuitBreaker) -> None:
    breaker.on_failure(breaker.acquire(), UpstreamUnavailableError("down"))
    assert breaker.state is CircuitState.OPEN


def _state(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state


async def test_a_closing_breaker_makes_its_deferred_jobs_due_at_once(
    jobs: Jobs, clock: FakeClock
) -> None:
    """Jobs deferred by an open breaker run as soon as it closes -- not at their own deferred
    time -- without an attempt counted; a job in its own back-off after a real failure keeps
    its time."""
    breaker = CircuitBreaker("crm", minimum_calls=1, window=1, open_duration=300, clock=clock)
    jobs.breakers = {"crm": breaker}
    ran: list[int] = []
    failing = True

    @jobs.job(provider="crm", retry=Retry(attempts=5, backoff=Constant(600)))
    async def sync(ctx: JobContext, n: int) -> None:
        if n == 0 and failing:
            raise UpstreamUnavailableError("HTTP 503", status=503)
        ran.append(n)

    backoff = await sync.enqueue(0)
    worker = Worker(jobs, probe_interval=None)
    await worker.run_until_idle()
    assert (await _job(jobs, backoff.id)).state is JobState.RETRYING
    failing = False
    _open(breaker)
    deferred = [await sync.enqueue(n) for n in (1, 2, 3)]
    await worker.run_until_idle()
    for enqueued in deferred:
        job = await _job(jobs, enqueued.id)
        assert (job.state, job.attempts, job.last_error_code) == (
            JobState.QUEUED,
            0,
            "CIRCUIT_OPEN",
        )
        assert job.run_at == breaker.snapshot.open_until
    clock.advance(5)
    breaker.reset()  # the provider is back: the breaker closes
    await worker.run_until_idle()
    assert sorted(ran) == [1, 2, 3]
    assert [(await _job(jobs, e.id)).attempts for e in deferred] == [1, 1, 1]
    assert (await _job(jobs, backoff.id)).state is JobState.RETRYING  # its own back-off


async def test_an_open_breaker_is_probed_by_one_job_per_interval(
    jobs: Jobs, clock: FakeClock
) -> None:
    """While the breaker is open (for 30 s) the worker lets one deferred job probe it after a
    second, not 30; a failed probe re-opens the breaker, and the call's retry meets it open, so
    the job is deferred again without an attempt; the next probe comes a second later,
    succeeds, closes the breaker -- and every other job runs at once."""
    breaker = CircuitBreaker("crm", minimum_calls=1, window=1, open_duration=30, clock=clock)
    retry = Retry(attempts=2, backoff=Constant(0))
    policy = Policy("crm", breaker=breaker, retry=retry, budget=None, clock=clock)
    jobs.breakers = {"crm": breaker}
    up = False
    requests: list[int] = []

    async def provider(n: int) -> None:
        requests.append(n)
        if not up:
            raise UpstreamUnavailableError("HTTP 503", status=503)

    @jobs.job(provider="crm", retry=Retry(attempts=3))
    async def sync(ctx: JobContext, n: int) -> None:
        await policy.acall(provider, n)

    _open(breaker)
    enqueued = [await sync.enqueue(n) for n in range(5)]
    worker = Worker(jobs, probe_interval=1.0)
    await worker.run_until_idle()
    assert requests == []  # deferred, none sent
    clock.advance(1.0)
    await worker.run_until_idle()
    assert len(requests) == 1  # one probe, it failed: open again
    assert _state(breaker) is CircuitState.OPEN
    assert [(await _job(jobs, e.id)).attempts for e in enqueued] == [0] * 5
    clock.advance(0.5)
    await worker.run_until_idle()
    assert len(requests) == 1  # not a second yet
    clock.advance(0.5)
    up = True
    await worker.run_until_idle()
    assert _state(breaker) is CircuitState.CLOSED
    assert len(requests) == 6  # the probe, then every other job at once
    for e in enqueued:
        job = await _job(jobs, e.id)
        assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)


async def test_a_job_meeting_a_half_open_breaker_waits_for_the_probe_only(
    jobs: Jobs, clock: FakeClock
) -> None:
    """A job claimed while the half-open breaker's probe is out is deferred for about a probe's
    time (not a whole open duration), and is due at once when the probe closes the breaker."""
    breaker = CircuitBreaker("crm", minimum_calls=1, window=1, open_duration=30, clock=clock)
    jobs.breakers = {"crm": breaker}

    @jobs.job(provider="crm")
    async def sync(ctx: JobContext) -> None:
        pass

    _open(breaker)
    clock.advance(30)
    probe = breaker.acquire()  # the probe is out
    enqueued = await sync.enqueue()
    worker = Worker(jobs, probe_interval=None)
    await worker.run_until_idle()
    job = await _job(jobs, enqueued.id)
    assert (job.state, job.attempts) == (JobState.QUEUED, 0)
    assert job.run_at == clock.time() + PROBE_WAIT
    breaker.on_success(probe)
    assert breaker.state is CircuitState.CLOSED
    await worker.run_until_idle()
    assert (await _job(jobs, enqueued.id)).state is JobState.SUCCEEDED


async def test_waiting_for_a_token_never_costs_an_attempt(jobs: Jobs, clock: FakeClock) -> None:
    """A job whose call cannot get a token within ``max_wait`` is deferred to when the token is
    there -- attempts unchanged, even on its last one -- and then runs; a provider's 429
    counts as an attempt."""
    bucket = TokenBucket(1.0, burst=1, max_wait=0.5, clock=clock)
    policy = Policy("crm", rate=bucket, retry=None, breaker=None, clock=clock)
    answers: list[int] = []

    async def provider(n: int) -> int:
        answers.append(n)
        return n

    @jobs.job(provider="crm", retry=Retry(attempts=1))
    async def sync(ctx: JobContext, n: int) -> None:
        await policy.acall(provider, n)

    first = await sync.enqueue(1)
    second = await sync.enqueue(2)
    worker = Worker(jobs)
    await worker.run_until_idle()
    assert answers == [1]
    waiting = await _job(jobs, second.id)
    assert (waiting.state, waiting.attempts, waiting.last_error_code) == (
        JobState.QUEUED,
        0,
        "RATE_LIMITED",
    )
    assert waiting.run_at == pytest.approx(clock.time() + 1.0)
    clock.advance(1.0)
    await worker.run_until_idle()
    assert answers == [1, 2]
    assert (await _job(jobs, first.id)).attempts == 1
    assert (await _job(jobs, second.id)).attempts == 1

    @jobs.job(provider="crm", retry=Retry(attempts=2, backoff=Constant(60)))
    async def refused(ctx: JobContext) -> None:
        raise RateLimitedError("HTTP 429", status=429)

    answered = await refused.enqueue()
    await worker.run_until_idle()
    job = await _job(jobs, answered.id)
    assert (job.state, job.attempts) == (JobState.RETRYING, 1)
