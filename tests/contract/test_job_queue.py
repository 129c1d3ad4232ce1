"""Contract: JobQueue -- enqueue, claims and leases, outcomes, status flags, the dead-letter
queue, progress checkpoints, the transactional outbox and concurrent claimers.

Every test runs on each job-queue backend (memory, SQLite and PostgreSQL); those that reach the
database another way (the caller's connection, other connections and processes) on SQLite and
PostgreSQL. Time is a FakeClock: ``now``
is always ``clock.time()``, and leases run out because the clock is advanced, never by waiting.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from antifragile import ConfigurationError, FakeClock
from antifragile.jobs import (
    FINAL,
    Enqueued,
    Job,
    JobFilter,
    JobQueue,
    JobState,
    NewJob,
    Outcome,
    QueueStats,
    StatusFlag,
)
from antifragile.jobs._open import open_job_queue
from antifragile.stores import Store, open_store
from tests.contract.conftest import JobBackend

ROOT = Path(__file__).resolve().parents[2]
LEASE = 30.0
FLAG = StatusFlag("session:1", "email_status")


def job(
    now: float,
    *,
    id: str | None = None,
    queue: str = "default",
    name: str = "send_summary",
    priority: int = 0,
    delay: float = 0.0,
    key: str | None = None,
    flag: StatusFlag | None = None,
    payload: Any = None,
    provider: str | None = None,
    max_attempts: int = 3,
    state_data: Any = None,
) -> NewJob:
    """A job to enqueue, due at ``now + delay``."""
    extra: dict[str, Any] = {} if id is None else {"id": id}
    return NewJob(
        name=name,
        queue=queue,
        payload={"n": 1} if payload is None else payload,
        run_at=now + delay,
        max_attempts=max_attempts,
        priority=priority,
        idempotency_key=key,
        provider=provider,
        status_flag=flag,
        state_data=state_data,
        **extra,
    )


async def enqueue_one(queue: JobQueue, new: NewJob, now: float) -> str:
    [enqueued] = await queue.enqueue([new], now=now)
    assert enqueued.created
    return enqueued.id


async def get(queue: JobQueue, job_id: str) -> Job:
    found = await queue.get(job_id)
    assert found is not None, job_id
    return found


async def claim_one(queue: JobQueue, now: float, worker: str = "w1") -> Job:
    [claimed] = await queue.claim(worker=worker, limit=1, lease=LEASE, now=now)
    return claimed


async def flag_value(store: Store, now: float, key: str = FLAG.key) -> Any:
    entry = await store.kv.get(key, now=now)
    return None if entry is None else entry.value


async def dead_job(
    jobs: JobQueue, clock: FakeClock, /, *, code: str = "http_500", **fields: Any
) -> str:
    """A job enqueued, claimed and failed for good at ``clock.time()``."""
    now = clock.time()
    job_id = await enqueue_one(jobs, job(now, **fields), now)
    await claim_one(jobs, now)
    outcome = Outcome(job_id, "dead", error_code=code, error="failed", attempt={"number": 1})
    assert await jobs.complete([outcome], worker="w1", now=now) == [job_id]
    return job_id


# -- enqueue -----------------------------------------------------------------------------------


async def test_the_queue_conforms_to_the_protocol(job_queue: JobQueue, job_store: Store) -> None:
    """Each backend is a JobQueue and exposes the store it lives in."""
    assert isinstance(job_queue, JobQueue)
    assert job_queue.store is job_store


async def test_enqueue_stores_every_field(job_queue: JobQueue, clock: FakeClock) -> None:
    """An enqueued job reads back with every field it was given, no attempts, no lease, no
    history, created and updated at ``now``."""
    now = clock.time()
    new = NewJob(
        name="send_summary",
        queue="email",
        payload={"session": "s1", "text": "héllo ✓", "items": [1, 2.5, None, True]},
        run_at=now,
        max_attempts=8,
        priority=3,
        payload_version=2,
        idempotency_key="summary:s1",
        provider="resend",
        timeout=12.5,
        status_flag=StatusFlag("session:s1", "email_status", "wait", "ok", "ko"),
        state_data={"step": 0},
    )
    assert await job_queue.enqueue([new], now=now) == [Enqueued(new.id, True)]
    stored = await get(job_queue, new.id)
    assert stored == Job(
        id=new.id,
        name="send_summary",
        queue="email",
        state=JobState.QUEUED,
        priority=3,
        payload=new.payload,
        payload_version=2,
        idempotency_key="summary:s1",
        attempts=0,
        max_attempts=8,
        run_at=now,
        created_at=now,
        updated_at=now,
        provider="resend",
        timeout=12.5,
        status_flag=new.status_flag,
        state_data={"step": 0},
    )


async def test_enqueue_due_job_is_queued_and_future_job_is_scheduled(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """``run_at <= now`` makes a job queued; ``run_at > now`` makes it scheduled."""
    now = clock.time()
    past = await enqueue_one(job_queue, job(now, delay=-5), now)
    due = await enqueue_one(job_queue, job(now), now)
    later = await enqueue_one(job_queue, job(now, delay=60), now)
    assert (await get(job_queue, past)).state is JobState.QUEUED
    assert (await get(job_queue, due)).state is JobState.QUEUED
    assert (await get(job_queue, later)).state is JobState.SCHEDULED


async def test_enqueue_with_a_known_idempotency_key_returns_the_existing_job(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """A key already used names the existing job (created=False) and inserts nothing -- across
    calls and within one batch; jobs without a key never collide."""
    now = clock.time()
    first = job(now, key="order:1", payload={"v": 1})
    [created] = await job_queue.enqueue([first], now=now)
    assert created == Enqueued(first.id, True)

    clock.advance(5)
    later = clock.time()
    again = job(later, key="order:1", payload={"v": 2})
    other = job(later, key="order:2")
    twin = job(later, key="order:2")
    plain_a, plain_b = job(later), job(later)
    result = await job_queue.enqueue([again, other, twin, plain_a, plain_b], now=later)
    assert result == [
        Enqueued(first.id, False),
        Enqueued(other.id, True),
        Enqueued(other.id, False),
        Enqueued(plain_a.id, True),
        Enqueued(plain_b.id, True),
    ]
    kept = await get(job_queue, first.id)
    assert kept.payload == {"v": 1}
    assert kept.created_at == now
    assert await job_queue.get(again.id) is None
    assert await job_queue.get(twin.id) is None


async def test_a_key_is_still_taken_by_a_finished_job(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """The key stays with its job after it finished: enqueueing it again changes nothing."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now, key="once"), now)
    await claim_one(job_queue, now)
    await job_queue.complete([Outcome(job_id, "succeeded")], worker="w1", now=now)
    [again] = await job_queue.enqueue([job(now, key="once")], now=now)
    assert again == Enqueued(job_id, False)
    assert (await get(job_queue, job_id)).state is JobState.SUCCEEDED


async def test_enqueue_of_no_jobs_returns_nothing(job_queue: JobQueue, clock: FakeClock) -> None:
    """An empty batch is allowed and writes nothing."""
    assert await job_queue.enqueue([], now=clock.time()) == []
    assert await job_queue.stats(now=clock.time()) == []


async def test_enqueue_refuses_a_payload_that_is_not_json(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """A payload JSON cannot hold is a ConfigurationError, and no job of the batch is written."""
    now = clock.time()
    good = job(now)
    with pytest.raises(ConfigurationError):
        await job_queue.enqueue([good, job(now, payload={"at": object()})], now=now)
    assert await job_queue.get(good.id) is None


async def test_unknown_job_is_none(job_queue: JobQueue) -> None:
    """get of an id never enqueued is None."""
    assert await job_queue.get("no-such-job") is None


# -- claims ------------------------------------------------------------------------------------


async def test_claim_order_is_priority_then_run_at_then_id(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """Higher priority first; within a priority the earliest run_at; then the smaller id; the
    claimed list comes back in that order."""
    now = clock.time()
    specs = [
        ("j-c", 0, -10.0),
        ("j-b", 0, -10.0),
        ("j-a", 0, -5.0),
        ("j-low", -1, -100.0),
        ("j-high", 5, 0.0),
        ("j-mid", 1, -1.0),
    ]
    await job_queue.enqueue(
        [job(now, id=i, priority=p, delay=d) for i, p, d in specs], now=now - 100
    )
    claimed = await job_queue.claim(worker="w1", limit=10, lease=LEASE, now=now)
    assert [j.id for j in claimed] == ["j-high", "j-mid", "j-b", "j-c", "j-a", "j-low"]


async def test_claim_takes_at_most_limit_jobs_in_order(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """limit caps a claim; successive claims continue in claim order; a limit below one
    claims nothing."""
    now = clock.time()
    await job_queue.enqueue([job(now, id=f"j-{i:02d}") for i in range(7)], now=now)
    assert await job_queue.claim(worker="w1", limit=0, lease=LEASE, now=now) == []
    first = await job_queue.claim(worker="w1", limit=3, lease=LEASE, now=now)
    second = await job_queue.claim(worker="w1", limit=3, lease=LEASE, now=now)
    third = await job_queue.claim(worker="w1", limit=3, lease=LEASE, now=now)
    assert [j.id for j in first] == ["j-00", "j-01", "j-02"]
    assert [j.id for j in second] == ["j-03", "j-04", "j-05"]
    assert [j.id for j in third] == ["j-06"]
    assert await job_queue.claim(worker="w1", limit=3, lease=LEASE, now=now) == []


async def test_claim_leases_the_job_to_the_worker(job_queue: JobQueue, clock: FakeClock) -> None:
    """A claimed job is running, leased to the worker until ``now + lease``, its attempts not
    yet counted; the stored job says the same."""
    start = clock.time()
    job_id = await enqueue_one(job_queue, job(start), start)
    clock.advance(2)
    now = clock.time()
    claimed = await claim_one(job_queue, now, worker="worker-7")
    assert claimed.id == job_id
    assert claimed.state is JobState.RUNNING
    assert claimed.lease_owner == "worker-7"
    assert claimed.lease_until == now + LEASE
    assert claimed.attempts == 0
    assert claimed.updated_at == now
    assert claimed.created_at == start
    assert claimed.payload == {"n": 1}
    assert await get(job_queue, job_id) == claimed


async def test_a_scheduled_job_is_claimable_once_its_time_comes(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """A job is not claimed before run_at, and is claimed at run_at."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now, delay=60), now)
    assert await job_queue.claim(worker="w1", limit=5, lease=LEASE, now=now + 59.9) == []
    clock.advance(60)
    assert (await claim_one(job_queue, clock.time())).id == job_id


async def test_claim_filters_by_queue(job_queue: JobQueue, clock: FakeClock) -> None:
    """``queues`` limits a claim to those queues; an empty list claims nothing; None means all."""
    now = clock.time()
    await job_queue.enqueue(
        [job(now, id=f"{q}-{i}", queue=q) for q in ("email", "crm", "chat") for i in range(2)],
        now=now,
    )
    assert await job_queue.claim(worker="w", limit=10, lease=LEASE, now=now, queues=[]) == []
    email = await job_queue.claim(worker="w", limit=10, lease=LEASE, now=now, queues=["email"])
    assert {j.id for j in email} == {"email-0", "email-1"}
    two = await job_queue.claim(
        worker="w", limit=10, lease=LEASE, now=now, queues=["crm", "chat", "none"]
    )
    assert {j.id for j in two} == {"crm-0", "crm-1", "chat-0", "chat-1"}
    assert await job_queue.claim(worker="w", limit=10, lease=LEASE, now=now) == []


@pytest.mark.parametrize("queues", [None, ["crm", "chat", "email"], ["chat", "crm"]])
async def test_a_claim_across_queues_takes_jobs_in_claim_order(
    job_queue: JobQueue, clock: FakeClock, queues: list[str] | None
) -> None:
    """Claims of one job at a time from several queues (or from all) take the due jobs of
    those queues in one order across them: priority first, then due time, then id."""
    now = clock.time()
    jobs = [  # (id, queue, priority, due in)
        ("a", "crm", 0, -3.0),
        ("b", "chat", 0, -5.0),
        ("c", "email", 2, -1.0),
        ("d", "crm", 1, -2.0),
        ("e", "chat", 1, -2.0),
        ("f", "chat", 0, -4.0),
        ("g", "email", 0, -6.0),
        ("h", "crm", 9, 60.0),  # not due
    ]
    await job_queue.enqueue(
        [job(now, id=i, queue=q, priority=p, delay=d) for i, q, p, d in jobs], now=now
    )
    taken: list[str] = []
    while claimed := await job_queue.claim(
        worker="w", limit=1, lease=LEASE, now=now, queues=queues
    ):
        taken.extend(j.id for j in claimed)
    queue_of = {i: q for i, q, _, _ in jobs}
    expected = [i for i in "cdegbfa" if queues is None or queue_of[i] in queues]
    assert taken == expected


async def test_a_live_lease_keeps_other_workers_out(job_queue: JobQueue, clock: FakeClock) -> None:
    """A job whose lease is live is claimed by nobody else, not even by its own worker again."""
    now = clock.time()
    await enqueue_one(job_queue, job(now), now)
    await claim_one(job_queue, now, worker="w1")
    later = now + LEASE - 0.001
    assert await job_queue.claim(worker="w2", limit=5, lease=LEASE, now=later) == []
    assert await job_queue.claim(worker="w1", limit=5, lease=LEASE, now=later) == []


async def test_an_expired_lease_is_taken_over_by_another_worker(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """Once its lease ran out, a running job is claimable (its worker died): another worker
    takes it, the lost run recorded in the history as LEASE_EXPIRED (not counted as an attempt;
    workers dead-letter a job that keeps losing them); the first worker can no longer
    heartbeat, checkpoint or complete it."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now), now)
    await claim_one(job_queue, now, worker="w1")
    clock.advance(LEASE)
    later = clock.time()
    for elsewhere in (["elsewhere"], ["elsewhere", "nowhere"]):
        claimed = await job_queue.claim(
            worker="w3", limit=5, lease=LEASE, now=later, queues=elsewhere
        )
        assert claimed == []
    taken = await claim_one(job_queue, later, worker="w2")
    assert taken.id == job_id
    assert taken.lease_owner == "w2"
    assert taken.lease_until == later + LEASE
    assert taken.attempts == 0
    assert taken.last_error_code == "LEASE_EXPIRED"
    assert taken.last_failed_at == later
    assert [entry["code"] for entry in taken.history] == ["LEASE_EXPIRED"]

    assert await job_queue.heartbeat([job_id], worker="w1", lease=LEASE, now=later) == []
    assert not await job_queue.save_progress(job_id, worker="w1", state_data={"x": 1}, now=later)
    done = Outcome(job_id, "succeeded", result="from w1")
    assert await job_queue.complete([done], worker="w1", now=later) == []
    assert (await get(job_queue, job_id)).state is JobState.RUNNING
    assert await job_queue.complete([Outcome(job_id, "succeeded")], worker="w2", now=later) == [
        job_id
    ]


async def test_expired_and_ready_jobs_are_claimed_together_in_order(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """Taken-over jobs and ready ones share one claim order (priority, run_at, id)."""
    now = clock.time()
    await job_queue.enqueue([job(now, id="a", priority=1), job(now, id="c")], now=now)
    await job_queue.claim(worker="w1", limit=2, lease=LEASE, now=now)
    clock.advance(LEASE)
    later = clock.time()
    await job_queue.enqueue([job(now, id="b"), job(later, id="d", priority=2)], now=later)
    claimed = await job_queue.claim(worker="w2", limit=10, lease=LEASE, now=later)
    assert [j.id for j in claimed] == ["d", "a", "b", "c"]


async def test_heartbeat_extends_the_leases_the_worker_holds(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """A heartbeat moves lease_until to ``now + lease`` for the jobs the worker holds and
    returns their ids; unknown ids and other workers' jobs are left out and untouched."""
    now = clock.time()
    await job_queue.enqueue([job(now, id="mine-1"), job(now, id="mine-2")], now=now)
    await job_queue.claim(worker="w1", limit=2, lease=LEASE, now=now)
    await enqueue_one(job_queue, job(now, id="theirs"), now)
    await claim_one(job_queue, now, worker="w2")

    clock.advance(LEASE - 1)
    beat_at = clock.time()
    held = await job_queue.heartbeat(
        ["mine-1", "mine-2", "theirs", "unknown"], worker="w1", lease=LEASE, now=beat_at
    )
    assert sorted(held) == ["mine-1", "mine-2"]
    assert (await get(job_queue, "mine-1")).lease_until == beat_at + LEASE
    assert (await get(job_queue, "theirs")).lease_until == now + LEASE

    clock.advance(LEASE - 1)  # past the first lease, within the extended one
    taken = await job_queue.claim(worker="w3", limit=5, lease=LEASE, now=clock.time())
    assert [j.id for j in taken] == ["theirs"]


async def test_heartbeat_of_nothing_is_nothing(job_queue: JobQueue, clock: FakeClock) -> None:
    """An empty heartbeat returns no ids."""
    assert await job_queue.heartbeat([], worker="w1", lease=LEASE, now=clock.time()) == []


async def test_a_worker_still_holds_an_expired_lease_nobody_took(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """Holding means running with the worker as lease owner: after its lease ran out, and
    while nobody took the job over, the worker may still heartbeat and complete it."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now), now)
    await claim_one(job_queue, now)
    clock.advance(LEASE * 3)
    later = clock.time()
    assert await job_queue.heartbeat([job_id], worker="w1", lease=LEASE, now=later) == [job_id]
    assert await job_queue.complete([Outcome(job_id, "succeeded")], worker="w1", now=later) == [
        job_id
    ]


# -- outcomes ----------------------------------------------------------------------------------


async def test_succeeded_stores_the_result_and_counts_the_attempt(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """succeeded: state succeeded, result stored, attempts + 1, the lease cleared, updated at
    ``now``; without an attempt record the history stays empty. A finished job is never
    claimed again."""
    start = clock.time()
    job_id = await enqueue_one(job_queue, job(start), start)
    await claim_one(job_queue, start)
    clock.advance(3)
    now = clock.time()
    result = {"id": "msg_1", "ok": True}
    recorded = await job_queue.complete(
        [Outcome(job_id, "succeeded", result=result)], worker="w1", now=now
    )
    assert recorded == [job_id]
    done = await get(job_queue, job_id)
    assert done.state is JobState.SUCCEEDED
    assert done.result == result
    assert done.attempts == 1
    assert (done.lease_owner, done.lease_until) == (None, None)
    assert done.updated_at == now
    assert done.history == ()
    assert (done.first_failed_at, done.last_error_code) == (None, None)
    clock.advance(3600)
    assert await job_queue.claim(worker="w2", limit=5, lease=LEASE, now=clock.time()) == []


async def test_succeeded_keeps_an_attempt_record_when_given(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """An attempt record given with any outcome is appended to the history."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now), now)
    await claim_one(job_queue, now)
    attempt = {"number": 1, "started_at": now, "duration": 0.25, "status": 200}
    await job_queue.complete([Outcome(job_id, "succeeded", attempt=attempt)], worker="w1", now=now)
    assert (await get(job_queue, job_id)).history == (attempt,)


async def test_retry_counts_the_attempt_and_runs_again_at_run_at(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """retry: state retrying, attempts + 1, run_at as given, the error and failure times
    recorded, the attempt appended; not claimable before run_at, claimable at it. A second
    failure keeps first_failed_at, moves last_failed_at and appends in order."""
    start = clock.time()
    job_id = await enqueue_one(job_queue, job(start, max_attempts=5), start)
    await claim_one(job_queue, start)
    first = {"number": 1, "code": "http_503", "message": "unavailable", "status": 503}
    await job_queue.complete(
        [
            Outcome(
                job_id,
                "retry",
                run_at=start + 10,
                attempt=first,
                error_code="http_503",
                error="unavailable",
            )
        ],
        worker="w1",
        now=start,
    )
    waiting = await get(job_queue, job_id)
    assert waiting.state is JobState.RETRYING
    assert waiting.attempts == 1
    assert waiting.run_at == start + 10
    assert (waiting.first_failed_at, waiting.last_failed_at) == (start, start)
    assert (waiting.last_error_code, waiting.last_error) == ("http_503", "unavailable")
    assert waiting.history == (first,)
    assert (waiting.lease_owner, waiting.lease_until) == (None, None)
    assert await job_queue.claim(worker="w1", limit=1, lease=LEASE, now=start + 9.99) == []

    clock.advance(10)
    now = clock.time()
    assert (await claim_one(job_queue, now)).attempts == 1
    second = {"number": 2, "code": "timeout"}
    await job_queue.complete(
        [Outcome(job_id, "retry", run_at=now + 20, attempt=second, error_code="timeout")],
        worker="w1",
        now=now,
    )
    again = await get(job_queue, job_id)
    assert again.attempts == 2
    assert (again.first_failed_at, again.last_failed_at) == (start, now)
    assert (again.last_error_code, again.last_error) == ("timeout", None)
    assert again.history == (first, second)


async def test_defer_does_not_count_an_attempt(job_queue: JobQueue, clock: FakeClock) -> None:
    """defer (breaker open): back to queued at run_at, attempts unchanged, no failure
    recorded."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now), now)
    await claim_one(job_queue, now)
    await job_queue.complete([Outcome(job_id, "defer", run_at=now + 30)], worker="w1", now=now)
    deferred = await get(job_queue, job_id)
    assert deferred.state is JobState.QUEUED
    assert deferred.attempts == 0
    assert deferred.run_at == now + 30
    assert (deferred.first_failed_at, deferred.last_error_code) == (None, None)
    assert (deferred.lease_owner, deferred.lease_until) == (None, None)
    assert await job_queue.claim(worker="w1", limit=1, lease=LEASE, now=now + 29) == []
    assert (await claim_one(job_queue, now + 30)).id == job_id


async def test_a_defer_records_its_cause_not_a_failure(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """A defer with an error code records it (and its message) as the job's last error -- why
    it waits -- without failure times or an attempt; a later defer without one keeps it."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now, provider="crm"), now)
    await claim_one(job_queue, now)
    deferred = Outcome(
        job_id, "defer", run_at=now + 30, error_code="CIRCUIT_OPEN", error="breaker open"
    )
    await job_queue.complete([deferred], worker="w1", now=now)
    waiting = await get(job_queue, job_id)
    assert (waiting.state, waiting.attempts, waiting.run_at) == (JobState.QUEUED, 0, now + 30)
    assert (waiting.last_error_code, waiting.last_error) == ("CIRCUIT_OPEN", "breaker open")
    assert (waiting.first_failed_at, waiting.last_failed_at, waiting.history) == (None, None, ())
    await claim_one(job_queue, now + 30)
    await job_queue.complete([Outcome(job_id, "defer", run_at=now + 60)], worker="w1", now=now)
    assert (await get(job_queue, job_id)).last_error_code == "CIRCUIT_OPEN"


async def _deferred(
    queue: JobQueue, now: float, code: str | None, *, provider: str = "crm", until: float = 300
) -> str:
    """A job of *provider* claimed and deferred to ``now + until`` with cause *code*."""
    job_id = await enqueue_one(queue, job(now, provider=provider), now)
    [claimed] = await queue.claim(worker="w1", limit=1, lease=LEASE, now=now)
    assert claimed.id == job_id
    outcome = Outcome(job_id, "defer", run_at=now + until, error_code=code, error=code)
    await queue.complete([outcome], worker="w1", now=now)
    return job_id


async def test_wake_deferred_makes_a_providers_breaker_and_limiter_deferrals_due(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """wake_deferred(provider) makes the provider's jobs deferred by its breaker
    (CIRCUIT_OPEN) or rate limiter (RATE_LIMITED) due now, in one statement; a job in its own
    back-off after a real failure, one deferred for another reason, another provider's and a
    scheduled job keep their times."""
    now = clock.time()
    breaker = await _deferred(job_queue, now, "CIRCUIT_OPEN")
    limiter = await _deferred(job_queue, now, "RATE_LIMITED", until=20)
    held = await _deferred(job_queue, now, "DEFERRED")
    silent = await _deferred(job_queue, now, None)
    other = await _deferred(job_queue, now, "CIRCUIT_OPEN", provider="mail")
    failing = await enqueue_one(job_queue, job(now, provider="crm"), now)
    await claim_one(job_queue, now)
    retry = Outcome(failing, "retry", run_at=now + 300, error_code="UPSTREAM_UNAVAILABLE")
    await job_queue.complete([retry], worker="w1", now=now)
    later = await enqueue_one(job_queue, job(now, provider="crm", delay=300), now)

    clock.advance(5)
    woken_at = clock.time()
    assert await job_queue.wake_deferred("crm", now=woken_at) == 2
    runs = {i: (await get(job_queue, i)).run_at for i in (breaker, limiter)}
    assert runs == {breaker: woken_at, limiter: woken_at}
    for kept in (held, silent, other, failing, later):
        assert (await get(job_queue, kept)).run_at == now + 300
    claimed = await job_queue.claim(worker="w2", limit=10, lease=LEASE, now=woken_at)
    assert {j.id for j in claimed} == {breaker, limiter}
    assert all(j.attempts == 0 for j in claimed)
    assert await job_queue.wake_deferred("crm", now=woken_at) == 0  # nothing left to wake


async def test_wake_deferred_with_a_limit_wakes_the_earliest(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """With ``limit=1`` (a probe) only the job deferred to the earliest time is woken; a job
    already due is not counted, and a limit below 1 wakes nothing."""
    now = clock.time()
    late = await _deferred(job_queue, now, "CIRCUIT_OPEN", until=90)
    early = await _deferred(job_queue, now, "CIRCUIT_OPEN", until=60)
    assert await job_queue.wake_deferred("crm", now=now + 1, limit=0) == 0
    assert await job_queue.wake_deferred("crm", now=now + 1, limit=1) == 1
    assert (await get(job_queue, early)).run_at == now + 1
    assert (await get(job_queue, late)).run_at == now + 90
    assert await job_queue.wake_deferred("crm", now=now + 1, limit=1) == 1
    assert (await get(job_queue, late)).run_at == now + 1


async def test_dead_sends_the_job_to_the_dead_letter_queue(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """dead: state dead, attempts + 1, the error and attempt recorded; never claimed again."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now), now)
    await claim_one(job_queue, now)
    attempt = {"number": 1, "code": "http_422", "message": "invalid email"}
    await job_queue.complete(
        [Outcome(job_id, "dead", attempt=attempt, error_code="http_422", error="invalid email")],
        worker="w1",
        now=now,
    )
    dead = await get(job_queue, job_id)
    assert dead.state is JobState.DEAD
    assert dead.attempts == 1
    assert (dead.last_error_code, dead.last_error) == ("http_422", "invalid email")
    assert (dead.first_failed_at, dead.last_failed_at) == (now, now)
    assert dead.history == (attempt,)
    assert dead.result is None
    clock.advance(86400)
    assert await job_queue.claim(worker="w1", limit=5, lease=LEASE, now=clock.time()) == []


async def test_dead_without_an_attempt_keeps_the_count(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """dead with attempted=False (its attempts were used up by lost workers): dead-lettered
    with its error, attempts unchanged."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now), now)
    await claim_one(job_queue, now)
    outcome = Outcome(job_id, "dead", attempted=False, error_code="LEASE_EXPIRED", error="lost")
    assert await job_queue.complete([outcome], worker="w1", now=now) == [job_id]
    dead = await get(job_queue, job_id)
    assert dead.state is JobState.DEAD
    assert dead.attempts == 0
    assert (dead.last_error_code, dead.last_error) == ("LEASE_EXPIRED", "lost")


async def test_release_makes_the_job_claimable_at_once(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """release (worker stopping): back to queued, attempts unchanged, claimable right away by
    any worker."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now), now)
    await claim_one(job_queue, now, worker="w1")
    assert await job_queue.complete([Outcome(job_id, "release")], worker="w1", now=now) == [job_id]
    released = await get(job_queue, job_id)
    assert released.state is JobState.QUEUED
    assert released.attempts == 0
    assert (released.lease_owner, released.lease_until) == (None, None)
    assert (await claim_one(job_queue, now, worker="w2")).id == job_id


async def test_complete_records_a_mixed_batch_and_ignores_jobs_not_held(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """One call records many outcomes of different kinds; it returns exactly the ids recorded:
    unknown jobs, jobs never claimed, other workers' jobs and finished jobs are ignored."""
    now = clock.time()
    ids = [f"j-{i}" for i in range(5)]
    await job_queue.enqueue([job(now, id=i) for i in ids], now=now)
    await job_queue.claim(worker="w1", limit=4, lease=LEASE, now=now)  # j-0 .. j-3
    await enqueue_one(job_queue, job(now, id="other", priority=1), now)
    assert (await claim_one(job_queue, now, worker="w2")).id == "other"
    outcomes = [
        Outcome("j-0", "succeeded", result=1),
        Outcome("j-1", "retry", run_at=now + 5, error_code="e"),
        Outcome("j-2", "defer", run_at=now + 5),
        Outcome("j-3", "dead", error_code="e"),
        Outcome("j-4", "succeeded"),  # never claimed
        Outcome("other", "succeeded"),  # w2's
        Outcome("ghost", "succeeded"),  # unknown
    ]
    recorded = await job_queue.complete(outcomes, worker="w1", now=now)
    assert sorted(recorded) == ["j-0", "j-1", "j-2", "j-3"]
    states = [(await get(job_queue, i)).state for i in [*ids, "other"]]
    assert states == [
        JobState.SUCCEEDED,
        JobState.RETRYING,
        JobState.QUEUED,
        JobState.DEAD,
        JobState.QUEUED,
        JobState.RUNNING,
    ]
    again = await job_queue.complete([Outcome("j-0", "dead")], worker="w1", now=now)
    assert again == []
    assert (await get(job_queue, "j-0")).state is JobState.SUCCEEDED
    assert await job_queue.complete([], worker="w1", now=now) == []


# -- status flags --------------------------------------------------------------------------------


async def test_enqueue_sets_the_flag_pending(
    job_queue: JobQueue, job_store: Store, clock: FakeClock
) -> None:
    """Enqueueing a job with a status flag creates the KV entry with the field pending
    (version 1, no expiry)."""
    now = clock.time()
    await enqueue_one(job_queue, job(now, flag=FLAG), now)
    entry = await job_store.kv.get(FLAG.key, now=now)
    assert entry is not None
    assert (entry.value, entry.version, entry.expires_at) == (
        {"email_status": "pending"},
        1,
        None,
    )


async def test_the_flag_is_merged_into_the_existing_entry(
    job_queue: JobQueue, job_store: Store, clock: FakeClock
) -> None:
    """A flag is merged into the live object like KeyValueStore.merge: other fields kept,
    version + 1 per change, the entry's expiry kept."""
    now = clock.time()
    await job_store.kv.set(FLAG.key, {"name": "Ana", "email_status": "none"}, now=now, ttl=3600)
    job_id = await enqueue_one(job_queue, job(now, flag=FLAG), now)
    entry = await job_store.kv.get(FLAG.key, now=now)
    assert entry is not None
    assert entry.value == {"name": "Ana", "email_status": "pending"}
    assert (entry.version, entry.expires_at) == (2, now + 3600)

    await claim_one(job_queue, now)
    await job_queue.complete([Outcome(job_id, "succeeded")], worker="w1", now=now)
    entry = await job_store.kv.get(FLAG.key, now=now)
    assert entry is not None
    assert entry.value == {"name": "Ana", "email_status": "sent"}
    assert (entry.version, entry.expires_at) == (3, now + 3600)


async def test_an_expired_flag_entry_is_created_afresh(
    job_queue: JobQueue, job_store: Store, clock: FakeClock
) -> None:
    """An expired entry counts as absent: the flag makes a new entry at version 1 without
    expiry, and none of the old fields."""
    now = clock.time()
    await job_store.kv.set(FLAG.key, {"old": True}, now=now, ttl=10)
    clock.advance(10)
    later = clock.time()
    await enqueue_one(job_queue, job(later, flag=FLAG), later)
    entry = await job_store.kv.get(FLAG.key, now=later)
    assert entry is not None
    assert (entry.value, entry.version, entry.expires_at) == ({"email_status": "pending"}, 1, None)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("succeeded", "sent"),
        ("dead", "failed"),
        ("retry", "pending"),
        ("defer", "pending"),
        ("release", "pending"),
    ],
)
async def test_the_flag_follows_the_outcome(
    job_queue: JobQueue, job_store: Store, clock: FakeClock, kind: Any, expected: str
) -> None:
    """succeeded sets the flag's succeeded value, dead its failed value; retry, defer and
    release leave it pending (the entry is not written)."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now, flag=FLAG), now)
    await claim_one(job_queue, now)
    await job_queue.complete([Outcome(job_id, kind, run_at=now + 1)], worker="w1", now=now)
    entry = await job_store.kv.get(FLAG.key, now=now)
    assert entry is not None
    assert entry.value == {"email_status": expected}
    assert entry.version == (1 if expected == "pending" else 2)


async def test_flags_use_their_own_values_and_fields(
    job_queue: JobQueue, job_store: Store, clock: FakeClock
) -> None:
    """Two jobs flag two fields of one entry with their own values; each outcome changes only
    its field."""
    now = clock.time()
    email = StatusFlag("session:9", "email", pending="queued", succeeded="delivered")
    crm = StatusFlag("session:9", "crm", pending="syncing", failed="not synced")
    await job_queue.enqueue(
        [job(now, id="email", flag=email), job(now, id="crm", flag=crm)], now=now
    )
    assert await flag_value(job_store, now, "session:9") == {"email": "queued", "crm": "syncing"}
    await job_queue.claim(worker="w1", limit=2, lease=LEASE, now=now)
    await job_queue.complete(
        [Outcome("email", "succeeded"), Outcome("crm", "dead", error_code="x")],
        worker="w1",
        now=now,
    )
    assert await flag_value(job_store, now, "session:9") == {
        "email": "delivered",
        "crm": "not synced",
    }


async def test_a_duplicate_enqueue_leaves_the_flag_alone(
    job_queue: JobQueue, job_store: Store, clock: FakeClock
) -> None:
    """A job not created (its key exists) does not set its flag: a flag never goes back to
    pending for a job already done."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now, key="k", flag=FLAG), now)
    await claim_one(job_queue, now)
    await job_queue.complete([Outcome(job_id, "succeeded")], worker="w1", now=now)
    [again] = await job_queue.enqueue([job(now, key="k", flag=FLAG)], now=now)
    assert not again.created
    entry = await job_store.kv.get(FLAG.key, now=now)
    assert entry is not None
    assert (entry.value, entry.version) == ({"email_status": "sent"}, 2)


async def test_an_outcome_not_recorded_leaves_the_flag_alone(
    job_queue: JobQueue, job_store: Store, clock: FakeClock
) -> None:
    """A worker that lost its job cannot move the job's flag."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now, flag=FLAG), now)
    await claim_one(job_queue, now, worker="w1")
    clock.advance(LEASE)
    later = clock.time()
    await claim_one(job_queue, later, worker="w2")
    await job_queue.complete([Outcome(job_id, "dead")], worker="w1", now=later)
    assert await flag_value(job_store, later) == {"email_status": "pending"}


async def test_a_flag_entry_that_is_not_an_object_is_left_alone(
    job_queue: JobQueue, job_store: Store, clock: FakeClock
) -> None:
    """A flag whose live entry holds something other than a JSON object does not stop the job:
    it is enqueued and completed, and the entry is never changed."""
    now = clock.time()
    await job_store.kv.set(FLAG.key, ["not", "an", "object"], now=now)
    job_id = await enqueue_one(job_queue, job(now, flag=FLAG), now)
    await claim_one(job_queue, now)
    assert await job_queue.complete([Outcome(job_id, "succeeded")], worker="w1", now=now) == [
        job_id
    ]
    entry = await job_store.kv.get(FLAG.key, now=now)
    assert entry is not None
    assert (entry.value, entry.version) == (["not", "an", "object"], 1)


# -- find --------------------------------------------------------------------------------------


async def _catalogue(queue: JobQueue, clock: FakeClock) -> dict[str, float]:
    """Jobs in several states, queues, providers and error codes; each updated one second after
    the previous. Returns each job's updated_at."""
    updated: dict[str, float] = {}
    await dead_job(queue, clock, id="dead-email", queue="email", provider="resend", code="http_500")
    updated["dead-email"] = clock.time()
    clock.advance(1)
    await dead_job(queue, clock, id="dead-crm", queue="crm", provider="hubspot", code="http_409")
    updated["dead-crm"] = clock.time()
    clock.advance(1)
    await dead_job(
        queue, clock, id="dead-shop", queue="crm", provider="shopify", code="http_500", name="sync"
    )
    updated["dead-shop"] = clock.time()
    clock.advance(1)
    now = clock.time()
    waiting = job(now, id="queued-email", queue="email", provider="resend", priority=-1)
    await enqueue_one(queue, waiting, now)  # claimed after everything else
    updated["queued-email"] = now
    clock.advance(1)
    now = clock.time()
    await enqueue_one(queue, job(now, id="done", queue="email"), now)
    await claim_one(queue, now)
    await queue.complete([Outcome("done", "succeeded")], worker="w1", now=now)
    updated["done"] = now
    return updated


async def test_find_by_every_filter(job_queue: JobQueue, clock: FakeClock) -> None:
    """Each JobFilter field selects the jobs it names, set fields combine with AND, an empty
    filter matches everything; results are the most recently updated first."""
    updated = await _catalogue(job_queue, clock)

    async def ids(where: JobFilter) -> list[str]:
        return [j.id for j in await job_queue.find(where)]

    assert await ids(JobFilter()) == ["done", "queued-email", "dead-shop", "dead-crm", "dead-email"]
    assert await ids(JobFilter(states=(JobState.DEAD,))) == ["dead-shop", "dead-crm", "dead-email"]
    assert await ids(JobFilter(states=(JobState.SUCCEEDED, JobState.QUEUED))) == [
        "done",
        "queued-email",
    ]
    assert await ids(JobFilter(queue="crm")) == ["dead-shop", "dead-crm"]
    assert await ids(JobFilter(name="sync")) == ["dead-shop"]
    assert await ids(JobFilter(provider="resend")) == ["queued-email", "dead-email"]
    assert await ids(JobFilter(error_code="http_500")) == ["dead-shop", "dead-email"]
    assert await ids(JobFilter(older_than=updated["dead-shop"])) == ["dead-crm", "dead-email"]
    assert await ids(JobFilter(newer_than=updated["dead-shop"])) == [
        "done",
        "queued-email",
        "dead-shop",
    ]
    assert await ids(JobFilter(ids=("dead-crm", "done", "nope"))) == ["done", "dead-crm"]
    combined = JobFilter(
        states=(JobState.DEAD,), queue="crm", error_code="http_500", provider="shopify"
    )
    assert await ids(combined) == ["dead-shop"]
    assert await ids(JobFilter(queue="crm", provider="resend")) == []
    assert await ids(JobFilter(states=(JobState.RUNNING,))) == []


async def test_find_by_part_of_an_id(job_queue: JobQueue, clock: FakeClock) -> None:
    """JobFilter(id_part=...) selects the jobs whose id starts or ends with it (a prefix, or
    the short id an operator copied from a table), and combines with the other fields."""
    now = clock.time()
    for job_id in ("01a2aaaa00beef", "01a2bbbb00cafe", "01a3cccc00beef"):
        await enqueue_one(job_queue, job(now, id=job_id), now)

    async def ids(where: JobFilter) -> set[str]:
        return {j.id for j in await job_queue.find(where)}

    assert await ids(JobFilter(id_part="01a2")) == {"01a2aaaa00beef", "01a2bbbb00cafe"}
    assert await ids(JobFilter(id_part="00beef")) == {"01a2aaaa00beef", "01a3cccc00beef"}
    assert await ids(JobFilter(id_part="01a3cccc00beef")) == {"01a3cccc00beef"}
    assert await ids(JobFilter(id_part="bbbb")) == set()  # neither a start nor an end
    assert await ids(JobFilter(id_part="01a2", states=(JobState.DEAD,))) == set()


async def test_find_pages_with_limit_and_offset(job_queue: JobQueue, clock: FakeClock) -> None:
    """limit and offset page through the same order."""
    for i in range(5):
        now = clock.time()
        await enqueue_one(job_queue, job(now, id=f"j-{i}"), now)
        clock.advance(1)
    page = [j.id for j in await job_queue.find(JobFilter(), limit=2, offset=1)]
    assert page == ["j-3", "j-2"]
    assert [j.id for j in await job_queue.find(JobFilter(), limit=10, offset=4)] == ["j-0"]
    assert await job_queue.find(JobFilter(), limit=10, offset=5) == []


async def test_find_returns_whole_dead_letter_entries(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """A dead-letter entry keeps its payload, every attempt, the first and last failure."""
    start = clock.time()
    payload = {"to": "owner@example.com", "session": "s1"}
    job_id = await enqueue_one(job_queue, job(start, payload=payload, max_attempts=2), start)
    await claim_one(job_queue, start)
    one = {"number": 1, "code": "timeout"}
    retry = Outcome(job_id, "retry", run_at=start + 5, attempt=one, error_code="timeout")
    await job_queue.complete([retry], worker="w1", now=start)
    clock.advance(5)
    now = clock.time()
    await claim_one(job_queue, now)
    two = {"number": 2, "code": "http_500"}
    dead = Outcome(job_id, "dead", attempt=two, error_code="http_500", error="server error")
    await job_queue.complete([dead], worker="w1", now=now)
    [entry] = await job_queue.find(JobFilter(states=(JobState.DEAD,)))
    assert entry.payload == payload
    assert entry.history == (one, two)
    assert (entry.first_failed_at, entry.last_failed_at) == (start, now)
    assert (entry.attempts, entry.last_error_code, entry.last_error) == (
        2,
        "http_500",
        "server error",
    )


# -- stats ---------------------------------------------------------------------------------------


async def test_stats_count_jobs_per_state_and_queue(job_queue: JobQueue, clock: FakeClock) -> None:
    """Per queue, sorted by name: a count for every state (zero included)."""
    await _catalogue(job_queue, clock)
    zero = {state.value: 0 for state in JobState}
    stats = {s.queue: s for s in await job_queue.stats(now=clock.time())}
    assert [s.queue for s in await job_queue.stats(now=clock.time())] == ["crm", "email"]
    assert stats["crm"].counts == {**zero, "dead": 2}
    assert stats["email"].counts == {**zero, "dead": 1, "queued": 1, "succeeded": 1}


async def test_stats_give_the_run_at_of_the_oldest_ready_job(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """oldest_ready_at is the earliest run_at among the jobs a claim would take now (due and
    claimable, or running with an expired lease); None when nothing is ready."""
    now = clock.time()
    await job_queue.enqueue(
        [
            job(now, id="future", queue="q", delay=100),
            job(now, id="due-late", queue="q", delay=-5),
            job(now, id="due-early", queue="q", delay=-20, priority=9),
            job(now, id="lonely", queue="idle", delay=50),
        ],
        now=now - 30,
    )
    stats = {s.queue: s for s in await job_queue.stats(now=now)}
    assert stats["q"].oldest_ready_at == now - 20
    assert stats["q"].counts["scheduled"] == 3
    assert stats["idle"] == QueueStats(
        "idle", {**{state.value: 0 for state in JobState}, "scheduled": 1}, None
    )

    await job_queue.claim(worker="w1", limit=1, lease=LEASE, now=now, queues=["q"])  # due-early
    stats = {s.queue: s for s in await job_queue.stats(now=now)}
    assert stats["q"].oldest_ready_at == now - 5
    await job_queue.claim(worker="w1", limit=1, lease=LEASE, now=now, queues=["q"])  # due-late
    assert {s.queue: s for s in await job_queue.stats(now=now)}["q"].oldest_ready_at is None
    expired = {s.queue: s for s in await job_queue.stats(now=now + LEASE)}
    assert expired["q"].oldest_ready_at == now - 20
    assert expired["q"].counts["running"] == 2


# -- the dead-letter queue: redrive, resolve, purge -----------------------------------------------


async def test_redrive_sends_dead_jobs_back_to_the_queue(
    job_queue: JobQueue, job_store: Store, clock: FakeClock
) -> None:
    """redrive: dead -> queued at ``now + delay``, attempts from zero, history and failure
    record kept, the flag pending again; claimable at ``now + delay``, not before."""
    job_id = await dead_job(job_queue, clock, flag=FLAG)
    before = await get(job_queue, job_id)
    assert await flag_value(job_store, clock.time()) == {"email_status": "failed"}
    clock.advance(60)
    now = clock.time()
    assert await job_queue.redrive(JobFilter(), now=now, delay=10) == 1
    redriven = await get(job_queue, job_id)
    assert redriven.state is JobState.QUEUED
    assert redriven.attempts == 0
    assert redriven.run_at == now + 10
    assert redriven.updated_at == now
    assert redriven.history == before.history
    assert (redriven.first_failed_at, redriven.last_error_code) == (
        before.first_failed_at,
        before.last_error_code,
    )
    assert await flag_value(job_store, now) == {"email_status": "pending"}
    assert await job_queue.claim(worker="w1", limit=1, lease=LEASE, now=now + 9) == []
    assert (await claim_one(job_queue, now + 10)).id == job_id


async def test_redrive_touches_only_dead_jobs_matching_the_filter(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """Only dead jobs are redriven, only those matching; the count says how many."""
    await _catalogue(job_queue, clock)
    now = clock.time()
    assert await job_queue.redrive(JobFilter(error_code="http_500", queue="crm"), now=now) == 1
    assert (await get(job_queue, "dead-shop")).state is JobState.QUEUED
    assert (await get(job_queue, "dead-email")).state is JobState.DEAD
    assert await job_queue.redrive(JobFilter(ids=("done", "queued-email")), now=now) == 0
    assert (await get(job_queue, "done")).state is JobState.SUCCEEDED
    assert await job_queue.redrive(JobFilter(), now=now) == 2
    assert await job_queue.find(JobFilter(states=(JobState.DEAD,))) == []


async def test_resolve_closes_dead_jobs_with_a_reason(
    job_queue: JobQueue, job_store: Store, clock: FakeClock
) -> None:
    """resolve: dead -> resolved with the reason, updated at ``now``; other jobs untouched, the
    flag stays failed, and a resolved job is neither redriven nor claimed."""
    await _catalogue(job_queue, clock)
    flagged = await dead_job(job_queue, clock, id="flagged", queue="email", flag=FLAG)
    clock.advance(5)
    now = clock.time()
    where = JobFilter(queue="email")
    assert await job_queue.resolve(where, reason="customer contacted by phone", now=now) == 2
    for job_id in ("dead-email", flagged):
        resolved = await get(job_queue, job_id)
        assert resolved.state is JobState.RESOLVED
        assert resolved.resolution == "customer contacted by phone"
        assert resolved.updated_at == now
    assert (await get(job_queue, "queued-email")).state is JobState.QUEUED
    assert (await get(job_queue, "dead-crm")).state is JobState.DEAD
    assert await flag_value(job_store, now) == {"email_status": "failed"}
    assert await job_queue.redrive(where, now=now) == 0
    assert await job_queue.resolve(where, reason="again", now=now) == 0


async def test_purge_deletes_only_final_jobs_matching_the_filter(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """purge deletes succeeded, dead and resolved jobs that match -- never a scheduled, queued,
    running or retrying one, whatever the filter; the count says how many."""
    now = clock.time()
    await job_queue.enqueue(
        [
            job(now, id="scheduled", delay=999),
            job(now, id="queued", priority=-1),
            job(now, id="running", priority=3),
            job(now, id="retrying", priority=2),
            job(now, id="succeeded", priority=1),
        ],
        now=now,
    )
    await job_queue.claim(worker="w1", limit=3, lease=LEASE, now=now)
    await job_queue.complete(
        [Outcome("retrying", "retry", run_at=now + 999), Outcome("succeeded", "succeeded")],
        worker="w1",
        now=now,
    )
    await dead_job(job_queue, clock, id="dead")
    await dead_job(job_queue, clock, id="resolved")
    await job_queue.resolve(JobFilter(ids=("resolved",)), reason="done by hand", now=now)
    clock.advance(7 * 86400)
    later = clock.time()

    everything = JobFilter(
        states=tuple(JobState), ids=("scheduled", "queued", "running", "retrying")
    )
    assert await job_queue.purge(everything, now=later) == 0
    assert await job_queue.purge(JobFilter(states=(JobState.DEAD,)), now=later) == 1
    assert await job_queue.get("dead") is None
    assert await job_queue.purge(JobFilter(older_than=now), now=later) == 0
    assert await job_queue.purge(JobFilter(older_than=now + 1), now=later) == 2
    left = {j.id: j.state for j in await job_queue.find(JobFilter())}
    assert left == {
        "scheduled": JobState.SCHEDULED,
        "queued": JobState.QUEUED,
        "running": JobState.RUNNING,
        "retrying": JobState.RETRYING,
    }
    assert not any(state in FINAL for state in left.values())


async def test_a_purged_key_may_be_used_again(job_queue: JobQueue, clock: FakeClock) -> None:
    """Once its job is purged, an idempotency key is free: enqueueing it creates a new job."""
    now = clock.time()
    first = await enqueue_one(job_queue, job(now, key="k"), now)
    await claim_one(job_queue, now)
    await job_queue.complete([Outcome(first, "succeeded")], worker="w1", now=now)
    assert await job_queue.purge(JobFilter(ids=(first,)), now=now) == 1
    again = job(now, key="k")
    assert await job_queue.enqueue([again], now=now) == [Enqueued(again.id, True)]


# -- progress checkpoints ------------------------------------------------------------------------


async def test_save_progress_is_fenced_by_the_lease(job_queue: JobQueue, clock: FakeClock) -> None:
    """A worker holding a running job checkpoints its state_data (True, updated at ``now``);
    another worker cannot (False), nor anyone on a job that is not running; the checkpoint is
    what the next claimer sees."""
    now = clock.time()
    job_id = await enqueue_one(job_queue, job(now, state_data={"step": 0}), now)
    assert not await job_queue.save_progress(job_id, worker="w1", state_data={"step": 1}, now=now)
    await claim_one(job_queue, now, worker="w1")
    clock.advance(1)
    later = clock.time()
    assert await job_queue.save_progress(
        job_id, worker="w1", state_data={"step": 1, "done": ["a"]}, now=later
    )
    assert not await job_queue.save_progress(job_id, worker="w2", state_data={"x": 0}, now=later)
    assert not await job_queue.save_progress("ghost", worker="w1", state_data={}, now=later)
    saved = await get(job_queue, job_id)
    assert saved.state_data == {"step": 1, "done": ["a"]}
    assert saved.updated_at == later

    await job_queue.complete([Outcome(job_id, "release")], worker="w1", now=later)
    assert not await job_queue.save_progress(job_id, worker="w1", state_data={"z": 1}, now=later)
    assert (await claim_one(job_queue, later, worker="w2")).state_data == {"step": 1, "done": ["a"]}


# -- the transactional outbox ----------------------------------------------------------------------

CALLER_KINDS = ["driver", "sqlalchemy_session", "sqlalchemy_connection"]


class Caller:
    """The application's side of the outbox: its own connection of one *kind* to the queue's
    database, and a table of its own, ``outbox_orders``.

    *kind* is ``driver`` (a sqlite3 connection for SQLite, a psycopg connection for
    PostgreSQL), ``sqlalchemy_session`` or ``sqlalchemy_connection`` (SQLAlchemy on the same
    database: the same file, or the same server and schema).
    """

    def __init__(self, backend: JobBackend, kind: str) -> None:
        self.backend = backend
        self.kind = kind
        self._closers: list[Any] = []
        setup = self._driver()
        try:
            setup.execute("CREATE TABLE IF NOT EXISTS outbox_orders (id TEXT PRIMARY KEY)")
            setup.commit()
        finally:
            setup.close()
        self.connection = self._open()

    def _driver(self) -> Any:
        if self.backend.name == "sqlite":
            return sqlite3.connect(self.backend.url.removeprefix("sqlite:///"))
        import psycopg

        return psycopg.connect(
            self.backend.url, options=f"-c search_path={self.backend.options['schema']}"
        )

    def _open(self) -> Any:
        if self.kind == "driver":
            conn = self._driver()
            self._closers.append(conn.close)
            return conn
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session

        if self.backend.name == "sqlite":
            engine = create_engine(self.backend.url)
        else:
            engine = create_engine(
                self.backend.url.replace("postgresql://", "postgresql+psycopg://", 1),
                connect_args={"options": f"-c search_path={self.backend.options['schema']}"},
            )
        opened: Any = Session(engine) if self.kind == "sqlalchemy_session" else engine.connect()
        self._closers.extend([opened.close, engine.dispose])
        return opened

    def insert_order(self, order_id: str) -> None:
        if self.kind == "driver":
            marker = "?" if self.backend.name == "sqlite" else "%s"
            sql = f"INSERT INTO outbox_orders (id) VALUES ({marker})"
            self.connection.execute(sql, (order_id,))
            return
        from sqlalchemy import text

        self.connection.execute(
            text("INSERT INTO outbox_orders (id) VALUES (:id)"), {"id": order_id}
        )

    def commit(self) -> None:
        self.connection.commit()

    def rollback(self) -> None:
        self.connection.rollback()

    def orders(self) -> list[str]:
        """The committed orders, read on a connection of their own."""
        conn = self._driver()
        try:
            return [row[0] for row in conn.execute("SELECT id FROM outbox_orders ORDER BY id")]
        finally:
            conn.close()

    def close(self) -> None:
        for close in self._closers:
            close()


@pytest.fixture(params=CALLER_KINDS)
def caller(
    request: pytest.FixtureRequest, job_backend: JobBackend, job_store: Store
) -> Iterator[Caller]:
    """The caller's connection (after the store, so the schema exists)."""
    opened = Caller(job_backend, request.param)
    try:
        yield opened
    finally:
        opened.close()


async def test_outbox_jobs_commit_with_the_callers_transaction(
    job_queue: JobQueue, job_store: Store, caller: Caller, clock: FakeClock
) -> None:
    """Enqueued on the caller's connection, jobs and their flags are invisible until the
    caller commits, then visible and claimable together with the caller's own rows."""
    now = clock.time()
    caller.insert_order("order-1")
    new = job(now, key="order-1:email", flag=FLAG)
    result = await job_queue.enqueue([new], now=now, connection=caller.connection)
    assert result == [Enqueued(new.id, True)]
    assert await job_queue.get(new.id) is None
    assert await job_store.kv.get(FLAG.key, now=now) is None
    caller.commit()
    assert caller.orders() == ["order-1"]
    assert (await get(job_queue, new.id)).state is JobState.QUEUED
    assert await flag_value(job_store, now) == {"email_status": "pending"}
    assert (await claim_one(job_queue, now)).id == new.id


async def test_outbox_jobs_roll_back_with_the_callers_transaction(
    job_queue: JobQueue, job_store: Store, caller: Caller, clock: FakeClock
) -> None:
    """When the caller rolls back, its rows, the jobs and their flags are all gone."""
    now = clock.time()
    caller.insert_order("order-2")
    new = job(now, key="order-2:email", flag=FLAG)
    await job_queue.enqueue([new, job(now)], now=now, connection=caller.connection)
    caller.rollback()
    assert caller.orders() == []
    assert await job_queue.find(JobFilter()) == []
    assert await job_store.kv.get(FLAG.key, now=now) is None
    assert await job_queue.claim(worker="w1", limit=5, lease=LEASE, now=now) == []
    [again] = await job_queue.enqueue([job(now, key="order-2:email")], now=now)
    assert again.created


async def test_outbox_enqueue_may_open_the_callers_transaction(
    job_queue: JobQueue, caller: Caller, clock: FakeClock
) -> None:
    """Enqueued before the caller wrote anything, the jobs still belong to the caller's
    transaction: its rollback removes them."""
    now = clock.time()
    new = job(now)
    await job_queue.enqueue([new], now=now, connection=caller.connection)
    caller.insert_order("order-4")
    caller.rollback()
    assert caller.orders() == []
    assert await job_queue.get(new.id) is None
    await job_queue.enqueue([job(now, id="second")], now=now, connection=caller.connection)
    caller.insert_order("order-5")
    caller.commit()
    assert caller.orders() == ["order-5"]
    assert (await get(job_queue, "second")).state is JobState.QUEUED


async def test_outbox_enqueue_sees_the_keys_already_committed(
    job_queue: JobQueue, caller: Caller, clock: FakeClock
) -> None:
    """In the caller's transaction too, a known idempotency key names the existing job."""
    now = clock.time()
    existing = await enqueue_one(job_queue, job(now, key="k"), now)
    caller.insert_order("order-3")
    [again] = await job_queue.enqueue([job(now, key="k")], now=now, connection=caller.connection)
    caller.commit()
    assert again == Enqueued(existing, False)
    assert len(await job_queue.find(JobFilter())) == 1


# -- several claimers ----------------------------------------------------------------------------


async def test_concurrent_claims_never_share_a_job(job_queue: JobQueue, clock: FakeClock) -> None:
    """Many claims in flight at once on one queue hand out every job exactly once."""
    now = clock.time()
    await job_queue.enqueue([job(now, id=f"j-{i:03d}") for i in range(120)], now=now)
    batches = await asyncio.gather(
        *(job_queue.claim(worker=f"w{i}", limit=7, lease=LEASE, now=now) for i in range(20))
    )
    claimed = Counter(j.id for batch in batches for j in batch)
    assert len(claimed) == 120
    assert set(claimed.values()) == {1}


async def test_claimers_on_separate_connections_never_share_a_job(
    job_backend: JobBackend, job_queue: JobQueue, clock: FakeClock
) -> None:
    """Queues on separate stores (connections) over one database, claiming at the same time,
    hand out every job exactly once."""
    now = clock.time()
    await job_queue.enqueue([job(now, id=f"j-{i:03d}") for i in range(200)], now=now)
    others = [
        await open_store(job_backend.url, clock=clock, **job_backend.options) for _ in range(3)
    ]
    try:
        queues = [job_queue, *[await open_job_queue(store) for store in others]]

        async def drain(queue: JobQueue, worker: str) -> list[str]:
            got: list[str] = []
            while batch := await queue.claim(worker=worker, limit=9, lease=LEASE, now=now):
                got.extend(j.id for j in batch)
                await asyncio.sleep(0)
            return got

        results = await asyncio.gather(*(drain(q, f"w{i}") for i, q in enumerate(queues)))
    finally:
        for store in others:
            await store.close()
    claimed = Counter(i for got in results for i in got)
    assert len(claimed) == 200
    assert set(claimed.values()) == {1}


def _run_claimers(backend: JobBackend, now: float, count: int, **extra: Any) -> list[list[str]]:
    """Start *count* claimer processes (*extra*: more of their config), release them together,
    and collect what each claimed."""
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.contract._job_claimer",
                json.dumps(
                    {
                        "url": backend.url,
                        "options": backend.options,
                        "worker": f"p{i}",
                        "now": now,
                        "limit": 25,
                        **extra,
                    }
                ),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            line = worker.stdout.readline()
            assert line.strip() == "ready", worker.communicate(timeout=30)[1]
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results: list[list[str]] = []
        for worker in workers:
            out, err = worker.communicate(timeout=60)
            assert worker.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


async def test_three_processes_claim_every_job_exactly_once(
    job_backend: JobBackend, job_queue: JobQueue, clock: FakeClock
) -> None:
    """3 OS processes claiming batches from one queue until it is empty: each of 500 jobs is
    claimed by exactly one of them, and all end succeeded."""
    now = clock.time()
    total = 500
    await job_queue.enqueue([job(now, id=f"j-{i:04d}") for i in range(total)], now=now)
    results = await asyncio.to_thread(_run_claimers, job_backend, now, 3)
    claimed = Counter(i for got in results for i in got)
    assert len(claimed) == total
    assert set(claimed.values()) == {1}
    [stats] = await job_queue.stats(now=now)
    assert stats.counts["succeeded"] == total


# -- SQLite only: the outbox's rules, choosing the backend -----------------------------------------


@pytest.fixture
async def sqlite_queue(tmp_path: Path, clock: FakeClock) -> AsyncIterator[JobQueue]:
    queue = await open_job_queue(f"sqlite:///{tmp_path / 'only.db'}", clock=clock)
    try:
        yield queue
    finally:
        await queue.store.close()


async def test_sqlite_outbox_refuses_a_connection_to_another_file(
    sqlite_queue: JobQueue, tmp_path: Path, clock: FakeClock
) -> None:
    """The caller's connection must be on the queue's own database file: another file, or an
    in-memory database, is a ConfigurationError and nothing is written to either."""
    now = clock.time()
    for target in (str(tmp_path / "other.db"), ":memory:"):
        with closing(sqlite3.connect(target)) as other:
            with pytest.raises(ConfigurationError, match="same file"):
                await sqlite_queue.enqueue([job(now)], now=now, connection=other)
            assert not other.in_transaction
    assert await sqlite_queue.find(JobFilter()) == []


async def test_sqlite_outbox_refuses_autocommit_without_a_transaction(
    sqlite_queue: JobQueue, clock: FakeClock
) -> None:
    """A sqlite3 connection in autocommit mode must BEGIN first (its writes would otherwise
    commit one by one); inside an explicit transaction it works as any other."""
    now = clock.time()
    path = sqlite_queue.store.url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        with pytest.raises(ConfigurationError, match="autocommit"):
            await sqlite_queue.enqueue([job(now)], now=now, connection=conn)
        conn.execute("BEGIN")
        new = job(now)
        await sqlite_queue.enqueue([new], now=now, connection=conn)
        assert await sqlite_queue.get(new.id) is None
        conn.execute("COMMIT")
    assert (await get(sqlite_queue, new.id)).state is JobState.QUEUED


async def test_sqlite_outbox_refuses_other_kinds_of_connection(
    sqlite_queue: JobQueue, clock: FakeClock
) -> None:
    """Anything but a sqlite3 connection or an SQLAlchemy session/connection is refused."""
    with pytest.raises(ConfigurationError, match=r"sqlite3\.Connection"):
        await sqlite_queue.enqueue([job(clock.time())], now=clock.time(), connection=object())


async def test_open_job_queue_picks_the_backend_of_the_store(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A SQLite URL or store gives a queue on that store, a memory URL or store a memory queue;
    Redis holds no queue, and store options are only for URLs -- each a ConfigurationError."""
    from antifragile.jobs import MemoryJobQueue
    from antifragile.jobs._sqlite import SQLiteJobQueue

    queue = await open_job_queue(f"sqlite:///{tmp_path / 'a.db'}", clock=clock)
    try:
        assert isinstance(queue, SQLiteJobQueue)
        assert queue.store.url == f"sqlite:///{tmp_path / 'a.db'}"
        same = await open_job_queue(queue.store)
        assert same.store is queue.store
        with pytest.raises(ConfigurationError, match="only apply"):
            await open_job_queue(queue.store, migrate=False)
    finally:
        await queue.store.close()
    with pytest.raises(ConfigurationError, match="sqlite://, postgresql:// or memory://"):
        await open_job_queue("redis://127.0.0.1:6379/0")
    in_memory = await open_job_queue("memory://", clock=clock)
    assert isinstance(in_memory, MemoryJobQueue)
    memory = await open_store("memory://")
    try:
        assert (await open_job_queue(memory)).store is memory
    finally:
        await memory.close()
        await in_memory.store.close()
