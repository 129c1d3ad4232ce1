"""Contract: liveness and retention -- processes record heartbeats (one upsert each), leave on a
graceful stop, and the rows of dead ones are forgotten; final jobs are purged in bounded batches,
oldest first, never an unfinished one.

Every test runs on each job-queue backend (memory, SQLite and PostgreSQL). Time is a FakeClock.
"""

from __future__ import annotations

import pytest

from antifragile import FakeClock
from antifragile.errors import ConfigurationError
from antifragile.jobs import JobFilter, JobQueue, JobState, NewJob, Outcome, ProcessBeat
from antifragile.jobs._model import OutcomeKind


def process(id: str, kind: str = "worker", *, started_at: float = 0.0) -> ProcessBeat:
    queues = ("email", "inbound") if kind == "worker" else None
    return ProcessBeat(id, kind, "host-a", 4242, queues, started_at, started_at)


async def test_a_beat_creates_then_refreshes_the_row(job_queue: JobQueue, clock: FakeClock) -> None:
    now = clock.time()
    await job_queue.beat(process("w1", started_at=now), now=now)
    await job_queue.beat(process("s1", "scheduler", started_at=now), now=now)
    clock.advance(10)
    await job_queue.beat(process("w1", started_at=now), now=clock.time())

    found = await job_queue.processes()
    assert [(p.kind, p.id) for p in found] == [("scheduler", "s1"), ("worker", "w1")]
    scheduler, worker = found
    assert worker == ProcessBeat(
        "w1", "worker", "host-a", 4242, ("email", "inbound"), now, now + 10
    )
    assert scheduler.queues is None
    assert scheduler.last_seen == now
    assert worker.alive(now=clock.time(), threshold=30)
    assert not scheduler.alive(now=clock.time() + 25, threshold=30)


async def test_leave_removes_only_its_own_row(job_queue: JobQueue, clock: FakeClock) -> None:
    now = clock.time()
    for name in ("w1", "w2"):
        await job_queue.beat(process(name, started_at=now), now=now)
    assert await job_queue.leave("w1") is True
    assert await job_queue.leave("w1") is False
    assert [p.id for p in await job_queue.processes()] == ["w2"]


async def test_dead_processes_are_forgotten(job_queue: JobQueue, clock: FakeClock) -> None:
    now = clock.time()
    await job_queue.beat(process("old", started_at=now), now=now)
    await job_queue.beat(process("new", started_at=now), now=now + 100)
    assert await job_queue.forget_processes(before=now + 50) == 1
    assert [p.id for p in await job_queue.processes()] == ["new"]


def test_a_process_kind_is_checked() -> None:
    with pytest.raises(ConfigurationError):
        ProcessBeat("x", "robot", "host", 1, None, 0.0, 0.0)
    with pytest.raises(ConfigurationError):
        ProcessBeat("", "worker", "host", 1, None, 0.0, 0.0)


async def _finish(queue: JobQueue, clock: FakeClock, ids: list[str], kind: OutcomeKind) -> None:
    now = clock.time()
    jobs = [
        NewJob(name="send", queue="email", payload={"n": i}, run_at=now, max_attempts=1, id=i)
        for i in ids
    ]
    await queue.enqueue(jobs, now=now)
    claimed = await queue.claim(worker="w", limit=len(ids), lease=30, now=now)
    assert sorted(job.id for job in claimed) == sorted(ids)
    outcomes = [Outcome(i, kind, error_code="X", error="boom") for i in ids]
    await queue.complete(outcomes, worker="w", now=now)


async def test_purge_in_batches_oldest_first(job_queue: JobQueue, clock: FakeClock) -> None:
    """A bounded purge deletes at most *limit* final jobs, the least recently updated first,
    and never one that is still to run."""
    for i in range(5):
        await _finish(job_queue, clock, [f"done-{i}"], "succeeded")
        clock.advance(1)
    now = clock.time()
    await job_queue.enqueue(
        [NewJob(name="send", queue="email", payload={}, run_at=now, max_attempts=1, id="open")],
        now=now,
    )
    where = JobFilter(states=(JobState.SUCCEEDED,), older_than=now)
    assert await job_queue.purge(where, now=now, limit=2) == 2
    left = sorted(j.id for j in await job_queue.find(JobFilter(), limit=10))
    assert left == ["done-2", "done-3", "done-4", "open"]
    assert await job_queue.purge(where, now=now, limit=0) == 0
    assert await job_queue.purge(where, now=now, limit=10) == 3
    assert await job_queue.purge(JobFilter(), now=now, limit=10) == 0
    assert [j.id for j in await job_queue.find(JobFilter())] == ["open"]


async def test_purge_resolved_leaves_dead_jobs(job_queue: JobQueue, clock: FakeClock) -> None:
    await _finish(job_queue, clock, ["a", "b"], "dead")
    now = clock.time()
    assert await job_queue.resolve(JobFilter(ids=("a",)), reason="handled", now=now) == 1
    where = JobFilter(states=(JobState.RESOLVED,), older_than=now + 1)
    assert await job_queue.purge(where, now=now, limit=100) == 1
    assert [j.id for j in await job_queue.find(JobFilter())] == ["b"]
