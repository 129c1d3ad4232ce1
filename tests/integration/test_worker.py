"""The worker over a real SQLite file, driven by a FakeClock: retries and their schedule,
Retry-After, the dead-letter queue, breaker deferral, lease expiry, graceful stop, status flags,
per-queue limits.

``run_until_idle`` runs every job due *now* and returns; tests advance the fake clock between
calls, so a 15-minute back-off costs nothing. Tests of ``run()`` (the real loop) use short real
waits only where the loop itself is what is proved.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from antifragile import (
    CircuitBreaker,
    CircuitOpenError,
    Constant,
    FakeClock,
    InvalidRequestError,
    RateLimitedError,
    Retry,
    TokenBucket,
    UpstreamUnavailableError,
)
from antifragile.jobs import Job, JobContext, JobFilter, Jobs, JobState, StatusFlag, Worker
from antifragile.jobs.testing import wait_for_redrives
from antifragile.observability import RecordingObserver
from antifragile.policies import CircuitState
from tests._waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def jobs(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Jobs]:
    app = Jobs(database_url=f"sqlite:///{tmp_path / 'jobs.db'}", clock=clock)
    async with app:
        yield app


async def _job(jobs: Jobs, job_id: str) -> Job:
    job = await jobs.get(job_id)
    assert job is not None
    return job


async def test_transient_failures_retry_on_schedule_then_succeed(
    jobs: Jobs, clock: FakeClock
) -> None:
    """A transient failure schedules the next attempt by the back-off; attempts and history
    are recorded; nothing runs early; the job succeeds on the third attempt."""
    attempts: list[int] = []

    @jobs.job(retry=Retry(attempts=5, backoff=Constant(60)))
    async def sync_contact(ctx: JobContext, contact_id: str) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise UpstreamUnavailableError("HTTP 503", status=503, provider="hubspot")
        return f"synced {contact_id}"

    enqueued = await sync_contact.enqueue("c-1")
    worker = Worker(jobs)
    start = clock.time()
    assert await worker.run_until_idle() == 1
    job = await _job(jobs, enqueued.id)
    assert (job.state, job.attempts, job.run_at) == (JobState.RETRYING, 1, start + 60)
    clock.advance(59)
    assert await worker.run_until_idle() == 0  # not due yet
    clock.advance(1)
    await worker.run_until_idle()
    clock.advance(60)
    await worker.run_until_idle()
    job = await _job(jobs, enqueued.id)
    assert attempts == [1, 2, 3]
    assert (job.state, job.attempts, job.result) == (JobState.SUCCEEDED, 3, "synced c-1")
    assert [h["code"] for h in job.history] == ["UPSTREAM_UNAVAILABLE"] * 2 + [None]
    assert [h["status"] for h in job.history[:2]] == [503, 503]
    assert job.first_failed_at == start
    assert job.last_failed_at == start + 60
    assert worker.counts == {"retry": 2, "succeeded": 1}


async def test_retry_after_becomes_the_next_run_time(jobs: Jobs, clock: FakeClock) -> None:
    """A provider's Retry-After (here 600 s, far beyond the back-off) sets the next run."""

    @jobs.job(retry=Retry(attempts=3, backoff=Constant(1)))
    async def post(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise RateLimitedError("HTTP 429", status=429, retry_after=600.0)

    enqueued = await post.enqueue()
    worker = Worker(jobs)
    await worker.run_until_idle()
    job = await _job(jobs, enqueued.id)
    assert job.run_at == clock.time() + 600
    assert job.history[0]["retry_after"] is True
    clock.advance(600)
    await worker.run_until_idle()
    assert (await _job(jobs, enqueued.id)).state is JobState.SUCCEEDED


async def test_permanent_error_is_dead_at_once_with_its_history(
    jobs: Jobs, clock: FakeClock
) -> None:
    """A permanent error (422) goes to the dead-letter queue on the first attempt; the entry
    keeps the code, HTTP status, redacted message and the reason."""

    @jobs.job(retry=Retry(attempts=10), provider="shopify")
    async def create_customer(ctx: JobContext, email: str) -> None:
        raise InvalidRequestError(
            "HTTP 422 email taken; url=https://x.test/?access_token=shpat_0123456789abcdef0123",
            status=422,
            provider="shopify",
        )

    enqueued = await create_customer.enqueue("a@example.com")
    await Worker(jobs).run_until_idle()
    job = await _job(jobs, enqueued.id)
    assert (job.state, job.attempts) == (JobState.DEAD, 1)
    assert job.last_error_code == "VALIDATION"
    [attempt] = job.history
    assert (attempt["code"], attempt["status"], attempt["reason"]) == (
        "VALIDATION",
        422,
        "not_retryable",
    )
    assert "shpat_" not in attempt["message"]
    assert "[REDACTED]" in attempt["message"]
    assert [j.id for j in await jobs.dlq.list()] == [enqueued.id]


async def test_attempts_exhausted_is_dead(jobs: Jobs, clock: FakeClock) -> None:
    """After its last attempt a retryable failure is dead, reason attempts_exhausted."""
    observer = RecordingObserver()
    jobs.observer = observer

    @jobs.job(retry=Retry(attempts=3, backoff=Constant(5)))
    async def flaky(ctx: JobContext) -> None:
        raise ConnectionResetError("peer reset")

    enqueued = await flaky.enqueue()
    worker = Worker(jobs)
    for _ in range(3):
        await worker.run_until_idle()
        clock.advance(5)
    job = await _job(jobs, enqueued.id)
    assert (job.state, job.attempts, job.last_error_code) == (JobState.DEAD, 3, "NETWORK")
    assert job.history[-1]["reason"] == "attempts_exhausted"
    assert [e.kind for e in observer.events].count("GaveUp") == 1


async def test_open_breaker_defers_without_burning_attempts(jobs: Jobs, clock: FakeClock) -> None:
    """While the provider's breaker is open the job is deferred to its half-open time, attempts
    unchanged, the provider untouched; it runs once the breaker half-opens (early probes off:
    the breaker's own open duration decides)."""
    breaker = CircuitBreaker("resend", minimum_calls=1, window=1, open_duration=120, clock=clock)
    jobs.breakers = {"resend": breaker}
    calls: list[int] = []

    @jobs.job(provider="resend", retry=Retry(attempts=2))
    async def send(ctx: JobContext) -> None:
        calls.append(ctx.attempt)

    breaker.on_failure(breaker.acquire(), UpstreamUnavailableError("down"))
    assert breaker.state is CircuitState.OPEN
    enqueued = await send.enqueue()
    worker = Worker(jobs, probe_interval=None)
    for _ in range(3):  # deferred once, to the half-open time: not claimed again before it
        await worker.run_until_idle()
        clock.advance(30)
        job = await _job(jobs, enqueued.id)
        assert job.attempts == 0
        assert not calls
    assert job.run_at == breaker.snapshot.open_until
    clock.advance(30)  # 120 s after opening: half-open
    await worker.run_until_idle()
    job = await _job(jobs, enqueued.id)
    assert (job.state, job.attempts, calls) == (JobState.SUCCEEDED, 1, [1])
    assert worker.counts["defer"] == 1


async def test_circuit_open_raised_by_the_job_defers_it(jobs: Jobs, clock: FakeClock) -> None:
    """A job whose provider call is refused by an open breaker (CircuitOpenError) is deferred
    to the breaker's ``until``; the attempt is not counted."""
    until = clock.time() + 45

    @jobs.job(retry=Retry(attempts=1))
    async def call(ctx: JobContext) -> None:
        if clock.time() < until:
            raise CircuitOpenError("open", until=until)

    enqueued = await call.enqueue()
    worker = Worker(jobs)
    await worker.run_until_idle()
    job = await _job(jobs, enqueued.id)
    assert (job.state, job.attempts, job.run_at) == (JobState.QUEUED, 0, until)
    clock.advance(45)
    await worker.run_until_idle()
    assert (await _job(jobs, enqueued.id)).state is JobState.SUCCEEDED


async def test_dead_jobs_are_redriven_when_the_breaker_closes(jobs: Jobs, clock: FakeClock) -> None:
    """With redrive_when_closed, a provider's recovery (breaker closes) sends its jobs that died
    of transient failures back to the queue; permanent failures stay dead."""
    breaker = CircuitBreaker("slack", minimum_calls=1, window=1, open_duration=10, clock=clock)
    jobs.breakers = {"slack": breaker}
    jobs.redrive_when_closed("slack")
    down = True

    @jobs.job(provider="slack", retry=Retry(attempts=1))
    async def ping(ctx: JobContext, permanent: bool) -> None:
        if permanent:
            raise InvalidRequestError("bad channel", status=400)
        if down:
            raise UpstreamUnavailableError("HTTP 503", status=503)

    transient = await ping.enqueue(False)
    permanent = await ping.enqueue(True)
    await Worker(jobs).run_until_idle()
    assert {j.id for j in await jobs.dlq.list()} == {transient.id, permanent.id}
    breaker.on_failure(breaker.acquire(), UpstreamUnavailableError("down"))
    clock.advance(10)
    down = False
    breaker.on_success(breaker.acquire())  # the probe succeeds: closed
    assert breaker.state is CircuitState.CLOSED
    await asyncio.sleep(0)
    await wait_for_redrives(jobs)
    assert (await _job(jobs, transient.id)).state is JobState.QUEUED
    assert (await _job(jobs, permanent.id)).state is JobState.DEAD
    await Worker(jobs).run_until_idle()
    assert (await _job(jobs, transient.id)).state is JobState.SUCCEEDED


async def test_a_dead_workers_job_is_reclaimed_after_its_lease(
    jobs: Jobs, clock: FakeClock
) -> None:
    """A job claimed by a worker that then died is claimed again once its lease expires, and
    the dead worker's late outcome is ignored."""
    runs: list[str] = []

    @jobs.job
    async def work(ctx: JobContext) -> None:
        runs.append(ctx.worker or "")

    enqueued = await work.enqueue()
    [claimed] = await jobs.queue.claim(worker="ghost", limit=1, lease=30, now=clock.time())
    assert claimed.id == enqueued.id
    worker = Worker(jobs, lease=30, heartbeat=10, name="alive")
    assert await worker.run_until_idle() == 0  # leased to the ghost
    clock.advance(31)
    assert await worker.run_until_idle() == 1
    assert runs == ["alive"]
    from antifragile.jobs import Outcome

    late = await jobs.queue.complete(
        [Outcome(enqueued.id, "dead", error="late")], worker="ghost", now=clock.time()
    )
    assert late == []
    assert (await _job(jobs, enqueued.id)).state is JobState.SUCCEEDED


async def test_a_job_that_keeps_losing_its_worker_ends_dead(jobs: Jobs, clock: FakeClock) -> None:
    """Each takeover of an expired lease is recorded (LEASE_EXPIRED, not an attempt); a job that
    has lost its worker max_lost_leases times ends in the dead-letter queue instead of running
    again (a job that crashes every worker must not loop forever)."""
    runs: list[int] = []

    @jobs.job(retry=Retry(attempts=3, backoff=Constant(1.0)))
    async def poison(ctx: JobContext) -> None:
        runs.append(ctx.attempt)

    enqueued = await poison.enqueue()
    for ghost in ("ghost-1", "ghost-2", "ghost-3"):
        [claimed] = await jobs.queue.claim(worker=ghost, limit=1, lease=30, now=clock.time())
        assert claimed.id == enqueued.id
        clock.advance(31)  # the ghost died holding it
    worker = Worker(jobs, lease=30, heartbeat=10, name="alive", max_lost_leases=3)
    await worker.run_until_idle()
    job = await _job(jobs, enqueued.id)
    assert job.state is JobState.DEAD
    assert runs == []
    assert job.attempts == 0
    assert [entry["code"] for entry in job.history] == ["LEASE_EXPIRED"] * 3
    assert job.last_error is not None
    assert "lost its worker 3 times" in job.last_error


async def _lease_until(jobs: Jobs, job_id: str) -> float:
    job = await _job(jobs, job_id)
    assert job.lease_until is not None
    return job.lease_until


async def test_heartbeats_keep_long_jobs_leased(tmp_path: Path, clock: FakeClock) -> None:
    """A job running longer than its lease keeps it: the heartbeat renews it, so the other
    worker, polling all along, never takes it over. The job moves the jobs' clock 20 s at a
    time (lease 30 s), each time once a heartbeat has renewed the lease: 60 s later, long past
    the first lease, it is still the one worker's, and ran once."""
    jobs = Jobs(database_url=f"sqlite:///{tmp_path / 'hb.db'}", clock=clock)
    runs: list[str] = []
    renewed_for: list[float] = []

    @jobs.job
    async def long(ctx: JobContext) -> None:
        runs.append(ctx.worker or "")
        for _ in range(3):
            leased = await _lease_until(jobs, ctx.job.id)
            clock.advance(20)

            async def renewed(before: float = leased) -> bool:
                return await _lease_until(jobs, ctx.job.id) > before

            await eventually(renewed)
            renewed_for.append(await _lease_until(jobs, ctx.job.id) - clock.time())

    async def finished(job_id: str) -> bool:
        return (await _job(jobs, job_id)).state is JobState.SUCCEEDED

    async with jobs:
        enqueued = await long.enqueue()
        first = Worker(jobs, lease=30, heartbeat=0.02, poll_interval=0.01, name="first")
        second = Worker(jobs, lease=30, heartbeat=0.02, poll_interval=0.01, name="second")
        tasks = [asyncio.create_task(w.run()) for w in (first, second)]
        await eventually(lambda: finished(enqueued.id))
        for w in (first, second):
            w.stop()
        await asyncio.gather(*tasks)
    assert runs == ["first"] or runs == ["second"]
    assert renewed_for == pytest.approx([30.0] * 3)  # each renewal: 30 s from the moved clock


async def test_stop_releases_in_flight_jobs_without_counting_an_attempt(
    jobs: Jobs, clock: FakeClock
) -> None:
    """stop() with no grace left releases running jobs: claimable again at once, attempts
    unchanged; the next worker runs them."""
    started = asyncio.Event()
    gate = asyncio.Event()

    @jobs.job
    async def slow(ctx: JobContext) -> str:
        started.set()
        await gate.wait()
        return "done"

    enqueued = await slow.enqueue()
    worker = Worker(jobs, shutdown_grace=0, poll_interval=0.01)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    await asyncio.wait_for(running, 5)
    job = await _job(jobs, enqueued.id)
    assert (job.state, job.attempts, job.lease_owner) == (JobState.QUEUED, 0, None)
    assert worker.counts == {"release": 1}
    gate.set()
    assert await Worker(jobs).run_until_idle() == 1
    assert (await _job(jobs, enqueued.id)).state is JobState.SUCCEEDED


async def test_stop_lets_running_jobs_finish_within_the_grace(jobs: Jobs) -> None:
    """A graceful stop claims nothing new but lets a running job finish and records it."""
    started = asyncio.Event()

    finish = asyncio.Event()

    @jobs.job
    async def brief(ctx: JobContext, n: int) -> int:
        started.set()
        await finish.wait()
        return n

    first = await brief.enqueue(1)
    worker = Worker(jobs, concurrency=1, shutdown_grace=60, poll_interval=0.01)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 60)
    second = await brief.enqueue(2)
    worker.stop()
    finish.set()  # the running job ends only after the stop
    await asyncio.wait_for(running, 60)
    assert (await _job(jobs, first.id)).state is JobState.SUCCEEDED
    assert (await _job(jobs, second.id)).state is JobState.QUEUED


async def test_sigterm_to_a_worker_process_releases_its_jobs(tmp_path: Path) -> None:
    """`antifragile worker` on SIGTERM stops claiming and releases its running job (grace 0):
    the job is claimable again at once -- not after its 60 s lease -- with no attempt counted."""
    module = tmp_path / "sigterm_app.py"
    module.write_text(
        textwrap.dedent(
            """
            import asyncio
            from antifragile.jobs import Jobs, JobContext

            jobs = Jobs()

            @jobs.job
            async def forever(ctx: JobContext) -> None:
                print("started", flush=True)
                await asyncio.sleep(3600)
            """
        )
    )
    url = f"sqlite:///{tmp_path / 'sig.db'}"
    jobs = Jobs(database_url=url)
    jobs.job("forever")(_forever)
    async with jobs:
        enqueued = await jobs.registry["forever"].enqueue()
        env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from antifragile.cli import main; main()",
            "worker",
            "--app",
            "sigterm_app:jobs",
            "--database-url",
            url,
            "--lease",
            "60",
            "--grace",
            "0",
            "--poll-interval",
            "0.05",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert line.strip() == b"started"
        running = await _job(jobs, enqueued.id)
        assert running.state is JobState.RUNNING
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, stderr.decode()
        assert b"Traceback" not in stderr
        job = await _job(jobs, enqueued.id)
        assert (job.state, job.attempts, job.lease_owner) == (JobState.QUEUED, 0, None)


async def _forever(ctx: JobContext) -> None:
    await asyncio.sleep(3600)


async def test_status_flags_follow_the_job(jobs: Jobs, clock: FakeClock) -> None:
    """A status flag reads pending while the job is retried, then sent on success -- or failed
    when the job dies."""

    @jobs.job(retry=Retry(attempts=2, backoff=Constant(10)))
    async def email(ctx: JobContext, fail: bool) -> None:
        if fail or ctx.attempt == 1:
            raise UpstreamUnavailableError("HTTP 503", status=503)

    async def flag(key: str) -> Any:
        entry = await jobs.queue.store.kv.get(key, now=clock.time())
        assert entry is not None
        return entry.value["summary"]

    await email.configure(status=StatusFlag("session:ok", "summary")).enqueue(False)
    await email.configure(status=StatusFlag("session:ko", "summary")).enqueue(True)
    worker = Worker(jobs)
    await worker.run_until_idle()
    assert (await flag("session:ok"), await flag("session:ko")) == ("pending", "pending")
    clock.advance(10)
    await worker.run_until_idle()
    assert (await flag("session:ok"), await flag("session:ko")) == ("sent", "failed")


async def test_per_queue_concurrency_is_bounded(jobs: Jobs) -> None:
    """queue_concurrency caps the jobs of one queue in flight while other queues use the
    remaining slots."""
    active: dict[str, int] = {"slow": 0, "fast": 0}
    peak: dict[str, int] = {"slow": 0, "fast": 0}

    async def body(queue: str) -> None:
        active[queue] += 1
        peak[queue] = max(peak[queue], active[queue])
        for _ in range(5):
            await asyncio.sleep(0)
        active[queue] -= 1

    @jobs.job(queue="slow")
    async def slow(ctx: JobContext, n: int) -> None:
        await body("slow")

    @jobs.job(queue="fast")
    async def fast(ctx: JobContext, n: int) -> None:
        await body("fast")

    await jobs.enqueue_many([slow.prepare(n) for n in range(12)])
    await jobs.enqueue_many([fast.prepare(n) for n in range(12)])
    worker = Worker(jobs, concurrency=8, queue_concurrency={"slow": 2})
    assert await worker.run_until_idle() == 24
    assert peak["slow"] == 2
    assert peak["fast"] > 2
    assert worker.counts == {"succeeded": 24}


async def test_per_queue_rate_limit_paces_starts(jobs: Jobs, clock: FakeClock) -> None:
    """queue_rates starts no more jobs of a queue than its token bucket allows; the others
    stay queued (not failed) until tokens come back."""
    bucket = TokenBucket(1, burst=2, clock=clock)

    @jobs.job(queue="sms")
    async def sms(ctx: JobContext, n: int) -> None:
        pass

    await jobs.enqueue_many([sms.prepare(n) for n in range(5)])
    worker = Worker(jobs, queue_rates={"sms": bucket})
    assert await worker.run_until_idle() == 2
    clock.advance(1)
    assert await worker.run_until_idle() == 1
    clock.advance(2)
    assert await worker.run_until_idle() == 2
    done = await jobs.find(JobFilter(states=(JobState.SUCCEEDED,)))
    assert len(done) == 5
    assert worker.counts == {"succeeded": 5}


async def test_a_job_over_its_timeout_is_retried_with_code_timeout(jobs: Jobs) -> None:
    """An attempt that runs past the job's timeout is cancelled and retried (code TIMEOUT)."""

    @jobs.job(timeout=0.05, retry=Retry(attempts=2, backoff=Constant(100)))
    async def stuck(ctx: JobContext) -> None:
        await asyncio.sleep(10)

    enqueued = await stuck.enqueue()
    await Worker(jobs).run_until_idle()
    job = await _job(jobs, enqueued.id)
    assert (job.state, job.last_error_code) == (JobState.RETRYING, "TIMEOUT")
    assert "timeout of 0.05s" in (job.last_error or "")


async def test_each_job_meets_its_own_timeout_whatever_the_order_of_deadlines(
    jobs: Jobs,
) -> None:
    """Jobs bounded by different timeouts, started in an order other than their deadlines':
    each one past its own deadline is cancelled and retried (code TIMEOUT), and a job within
    its timeout -- running all the while -- succeeds untouched."""
    release = asyncio.Event()

    @jobs.job(timeout=60, retry=Retry(attempts=2, backoff=Constant(100)))
    async def patient(ctx: JobContext) -> str:
        await release.wait()
        return "done"

    @jobs.job(timeout=0.2, retry=Retry(attempts=2, backoff=Constant(100)))
    async def later_deadline(ctx: JobContext) -> None:
        await asyncio.sleep(60)

    @jobs.job(timeout=0.05, retry=Retry(attempts=2, backoff=Constant(100)))
    async def earlier_deadline(ctx: JobContext) -> None:
        await asyncio.sleep(60)

    ok = await patient.enqueue()
    late = await later_deadline.enqueue()
    early = await earlier_deadline.enqueue()
    worker = Worker(jobs)

    async def let_go() -> None:
        await eventually(lambda: worker.counts["retry"] == 2)
        release.set()

    helper = asyncio.create_task(let_go())
    assert await worker.run_until_idle() == 3
    await helper
    assert worker.counts == {"retry": 2, "succeeded": 1}
    for enqueued, limit in ((late, "0.2"), (early, "0.05")):
        job = await _job(jobs, enqueued.id)
        assert (job.state, job.last_error_code) == (JobState.RETRYING, "TIMEOUT")
        assert f"timeout of {limit}s" in (job.last_error or "")
    assert (await _job(jobs, ok.id)).state is JobState.SUCCEEDED


async def test_a_timeout_error_of_the_job_itself_is_not_its_deadline(jobs: Jobs) -> None:
    """A TimeoutError the job raises (an outbound call's own) fails the attempt as any error
    does; a job that survives its deadline's cancellation ends as it returns, as under
    ``asyncio.timeout``."""

    @jobs.job(timeout=60, retry=Retry(attempts=2, backoff=Constant(100)))
    async def own(ctx: JobContext) -> None:
        raise TimeoutError("the provider took too long")

    @jobs.job(timeout=0.05, retry=Retry(attempts=2, backoff=Constant(100)))
    async def stubborn(ctx: JobContext) -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "stopped in time"
        return "slept"

    failed = await own.enqueue()
    kept = await stubborn.enqueue()
    worker = Worker(jobs)
    assert await worker.run_until_idle() == 2
    job = await _job(jobs, failed.id)
    assert job.state is JobState.RETRYING
    assert "ran longer than its timeout" not in (job.last_error or "")
    job = await _job(jobs, kept.id)
    assert (job.state, job.result) == (JobState.SUCCEEDED, "stopped in time")


async def test_unknown_job_names_are_retried_not_lost(jobs: Jobs, clock: FakeClock) -> None:
    """A job no function here knows (a deployment in progress) is retried later, not dropped."""
    other = Jobs(jobs.queue, clock=clock)

    @other.job
    async def newer(ctx: JobContext) -> None:
        pass

    enqueued = await newer.enqueue()
    await Worker(jobs).run_until_idle()
    job = await _job(jobs, enqueued.id)
    assert (job.state, job.last_error_code) == (JobState.RETRYING, "CONFIGURATION")


async def test_progress_is_saved_and_seen_by_the_next_attempt(jobs: Jobs, clock: FakeClock) -> None:
    """save_progress checkpoints state with the job; the next attempt starts from it."""
    seen: list[Any] = []

    @jobs.job(retry=Retry(attempts=3, backoff=Constant(1)))
    async def saga(ctx: JobContext) -> None:
        seen.append(ctx.state_data)
        assert await ctx.save_progress({"step": ctx.attempt})
        if ctx.attempt == 1:
            raise UpstreamUnavailableError("HTTP 503", status=503)

    enqueued = await saga.enqueue()
    worker = Worker(jobs)
    await worker.run_until_idle()
    clock.advance(1)
    await worker.run_until_idle()
    assert seen == [None, {"step": 1}]
    assert (await _job(jobs, enqueued.id)).state_data == {"step": 2}


async def test_the_real_loop_drains_a_queue(tmp_path: Path) -> None:
    """run() on the system clock drains 500 jobs across two queues, batching claims and
    completions, and stops cleanly."""
    jobs = Jobs(database_url=f"sqlite:///{tmp_path / 'loop.db'}")
    done: list[int] = []

    @jobs.job(queue="a")
    async def a(ctx: JobContext, n: int) -> None:
        done.append(n)

    @jobs.job(queue="b")
    async def b(ctx: JobContext, n: int) -> None:
        await asyncio.sleep(0.001)
        done.append(n)

    async with jobs:
        await jobs.enqueue_many([a.prepare(n) for n in range(250)])
        await jobs.enqueue_many([b.prepare(n) for n in range(250, 500)])
        worker = Worker(jobs, concurrency=20, poll_interval=0.01)
        running = asyncio.create_task(worker.run())
        await eventually(lambda: len(done) == 500, interval=0.02)
        worker.stop()
        await asyncio.wait_for(running, 60)
        assert sorted(done) == list(range(500))
        succeeded = await jobs.find(JobFilter(states=(JobState.SUCCEEDED,)), limit=1000)
        assert len(succeeded) == 500


async def test_prefetch_claims_in_full_batches_not_job_by_job(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The buffer's share goes into the statement that claims for the free slots (one
    statement of at most ``batch`` jobs), and the buffer is topped up once half empty: a
    backlog is claimed a few jobs at a time, never one by one, and every job runs once."""
    ran: list[int] = []

    @jobs.job
    async def tick(ctx: JobContext, n: int) -> None:
        ran.append(n)

    await jobs.enqueue_many([tick.prepare(n) for n in range(40)])
    limits: list[int] = []
    claim = jobs.queue.claim

    async def counted(**kwargs: Any) -> list[Job]:
        limits.append(kwargs["limit"])
        return await claim(**kwargs)

    monkeypatch.setattr(jobs.queue, "claim", counted)
    worker = Worker(jobs, concurrency=2, batch=5, prefetch=5)
    assert await worker.run_until_idle() == 40
    assert sorted(ran) == list(range(40))
    assert max(limits) <= 5
    assert min(limits) >= 3  # half of the buffer at least: no top-up job by job
    assert len(limits) <= 40 // 3 + 2


async def test_outcomes_carried_by_a_failed_claim_are_recorded_later(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker records outcomes with its next claim (one transaction); when that call
    fails, the outcomes are kept and recorded by a later one: every job of a backlog ends
    succeeded, once, and the counts say so."""
    from antifragile.errors import StoreUnavailableError

    ran: list[int] = []

    @jobs.job
    async def tick(ctx: JobContext, n: int) -> None:
        ran.append(n)

    await jobs.enqueue_many([tick.prepare(n) for n in range(30)])
    together = jobs.queue.complete_and_claim  # type: ignore[attr-defined]
    calls: list[int] = []

    async def flaky(outcomes: list[Any], **kwargs: Any) -> Any:
        calls.append(len(outcomes))
        if len(calls) == 2:
            raise StoreUnavailableError("the disk went away for a moment")
        return await together(outcomes, **kwargs)

    monkeypatch.setattr(jobs.queue, "complete_and_claim", flaky)
    worker = Worker(jobs, concurrency=2, batch=5, prefetch=5, poll_interval=0.01)
    running = asyncio.create_task(worker.run())
    await eventually(lambda: worker.counts["succeeded"] == 30)
    worker.stop()
    await asyncio.wait_for(running, 60)
    assert sorted(ran) == list(range(30))
    assert worker.counts == {"succeeded": 30}
    assert len(calls) > 2
    done = await jobs.find(JobFilter(states=(JobState.SUCCEEDED,)), limit=50)
    assert len(done) == 30
    assert all(job.attempts == 1 for job in done)


async def test_outcomes_held_for_the_next_claim_are_recorded_when_none_comes(
    jobs: Jobs,
) -> None:
    """A finished job's outcome may wait for the next claim while buffered jobs run; when no
    claim comes (the buffer stays more than half full, the running job does not finish), it is
    recorded by itself all the same."""
    gate = asyncio.Event()

    @jobs.job
    async def step(ctx: JobContext, n: int) -> None:
        if n > 0:
            await gate.wait()

    first = await step.enqueue(0)
    await jobs.enqueue_many([step.prepare(n) for n in range(1, 6)])
    worker = Worker(jobs, concurrency=1, prefetch=4, shutdown_grace=0, poll_interval=0.01)
    running = asyncio.create_task(worker.run())

    async def first_recorded() -> bool:
        return (await _job(jobs, first.id)).state is JobState.SUCCEEDED

    await eventually(first_recorded)
    assert worker.counts == {"succeeded": 1}
    assert len(await jobs.find(JobFilter(states=(JobState.RUNNING,)))) == 4  # 1 + 3 buffered
    worker.stop()
    await asyncio.wait_for(running, 60)
    gate.set()


async def test_prefetched_jobs_are_leased_and_released_on_stop(jobs: Jobs) -> None:
    """With prefetch, claimed jobs wait leased in the worker's buffer while the slots are busy;
    a stop releases them at once, none counted as an attempt."""
    started = asyncio.Event()
    gate = asyncio.Event()

    @jobs.job
    async def hold(ctx: JobContext, n: int) -> None:
        started.set()
        await gate.wait()

    await jobs.enqueue_many([hold.prepare(n) for n in range(10)])
    worker = Worker(jobs, concurrency=1, prefetch=4, shutdown_grace=0, poll_interval=0.01)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 60)

    async def running_jobs() -> list[Job]:
        return await jobs.find(JobFilter(states=(JobState.RUNNING,)))

    async def all_held() -> bool:
        return len(await running_jobs()) == 5  # one running, four buffered

    await eventually(all_held)
    held = await running_jobs()
    assert len(held) == 5
    assert {job.lease_owner for job in held} == {worker.id}
    worker.stop()
    await asyncio.wait_for(running, 5)
    queued = await jobs.find(JobFilter(states=(JobState.QUEUED,)), limit=20)
    assert len(queued) == 10
    assert all(job.attempts == 0 for job in queued)
    assert worker.counts == {"release": 5}
    gate.set()
