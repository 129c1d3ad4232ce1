"""Liveness and retention over a real SQLite file: workers and schedulers keep heartbeat rows
while they run and remove them when they stop; ``/health`` lists them with the queue lag and is
degraded when no worker is alive or the lag passes its threshold; ``HEAD`` answers on
``/health`` and ``/ready``; the scheduler's retention deletes old succeeded and resolved jobs and
dead processes' rows, never a dead job waiting for an operator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from antifragile.jobs import (
    JobContext,
    JobFilter,
    Jobs,
    JobState,
    NewJob,
    Outcome,
    ProcessBeat,
    Retention,
    Scheduler,
    Worker,
)
from antifragile.jobs._liveness import Presence
from antifragile.jobs._retention import DAY
from antifragile.policies import FakeClock
from tests._service_standin import StandInAssistant
from tests._waiting import eventually
from tests.integration.test_health import serving, settings_for


async def kinds(jobs: Jobs) -> list[str]:
    return [p.kind for p in await jobs.queue.processes()]


async def test_a_worker_is_listed_while_it_runs(tmp_path: Path) -> None:
    async with Jobs(database_url=f"sqlite:///{tmp_path / 'w.db'}") as jobs:
        worker = Worker(jobs, queues=["email"], poll_interval=0.01)
        running = asyncio.create_task(worker.run())
        await eventually(lambda: _has(jobs, "worker"))
        (row,) = await jobs.queue.processes()
        assert (row.id, row.queues) == (worker.id, ("email",))
        worker.stop()
        await running
        assert await jobs.queue.processes() == []


async def _has(jobs: Jobs, kind: str) -> bool:
    return kind in await kinds(jobs)


async def test_a_scheduler_is_listed_while_it_runs(tmp_path: Path) -> None:
    async with Jobs(database_url=f"sqlite:///{tmp_path / 's.db'}") as jobs:

        @jobs.every("* * * * *")
        async def tick(ctx: JobContext) -> None: ...

        scheduler = Scheduler(jobs, retention=None)
        running = asyncio.create_task(scheduler.run())
        await eventually(lambda: _has(jobs, "scheduler"))
        scheduler.stop()
        await running
        assert await jobs.queue.processes() == []


async def test_presence_beats_on_its_clock(tmp_path: Path) -> None:
    """A beat writes once per interval of the injected clock; a forced one always."""
    clock = FakeClock()
    async with Jobs(database_url=f"sqlite:///{tmp_path / 'p.db'}", clock=clock) as jobs:
        presence = Presence(lambda: jobs.queue, kind="worker", clock=clock, interval=10)
        assert await presence.beat() is True
        clock.advance(9)
        assert await presence.beat() is False
        clock.advance(1)
        assert await presence.beat() is True
        (row,) = await jobs.queue.processes()
        assert row.last_seen == clock.time()
        assert row.started_at == clock.time() - 10
        await presence.leave()
        assert await jobs.queue.processes() == []


async def _finished(jobs: Jobs, clock: FakeClock, name: str, kind: str) -> None:
    now = clock.time()
    job = NewJob(name="send", queue="email", payload={}, run_at=now, max_attempts=1, id=name)
    await jobs.queue.enqueue([job], now=now)
    assert [j.id for j in await jobs.queue.claim(worker="w", limit=1, lease=30, now=now)] == [name]
    outcome = Outcome(name, "succeeded") if kind == "succeeded" else Outcome(name, "dead")
    await jobs.queue.complete([outcome], worker="w", now=now)
    if kind == "resolved":
        await jobs.queue.resolve(JobFilter(ids=(name,)), reason="done", now=now)


async def test_the_scheduler_prunes_what_retention_no_longer_keeps(tmp_path: Path) -> None:
    clock = FakeClock()
    async with Jobs(database_url=f"sqlite:///{tmp_path / 'r.db'}", clock=clock) as jobs:
        for name in ("old-ok-1", "old-ok-2", "old-ok-3"):
            await _finished(jobs, clock, name, "succeeded")
        await _finished(jobs, clock, "old-resolved", "resolved")
        await _finished(jobs, clock, "old-dead", "dead")
        gone = ProcessBeat("gone", "worker", "h", 1, None, clock.time(), clock.time())
        await jobs.queue.beat(gone, now=clock.time())
        clock.advance(8 * DAY)
        await _finished(jobs, clock, "new-ok", "succeeded")
        await _finished(jobs, clock, "new-resolved", "resolved")

        scheduler = Scheduler(jobs, clock=clock, retention=Retention(resolved=7 * DAY, batch=2))
        pruned = await scheduler.prune()
        assert pruned.to_json() == {"succeeded": 3, "resolved": 1, "processes": 1}
        left = sorted(j.id for j in await jobs.queue.find(JobFilter()))
        assert left == ["new-ok", "new-resolved", "old-dead"]
        assert (await jobs.queue.get("old-dead")).state == JobState.DEAD  # type: ignore[union-attr]
        assert (await Scheduler(jobs, clock=clock, retention=None).prune()).to_json() == {
            "succeeded": 0,
            "resolved": 0,
            "processes": 0,
        }


async def test_health_lists_workers_and_is_degraded_without_one(tmp_path: Path) -> None:
    """Expecting workers: degraded while none is alive, healthy once one beats, degraded again
    when it goes silent past the threshold; HEAD answers like GET."""
    clock = FakeClock()
    settings = settings_for(
        tmp_path, ANTIFRAGILE_EXPECT_WORKERS="on", ANTIFRAGILE_WORKER_DEAD_AFTER="60"
    )
    assistant = StandInAssistant(settings, clock=clock)
    async with serving(assistant) as (client, _):
        data = (await client.get("/health")).json()["data"]
        assert data["status"] == "degraded"
        assert data["workers"] == {"alive": 0, "dead": 0, "last_seen": None}
        assert data["problems"] == ["no worker is alive: jobs are recorded but not run"]

        presence = Presence(lambda: assistant.jobs.queue, kind="worker", clock=clock)
        await presence.beat()
        data = (await client.get("/health")).json()["data"]
        assert data["status"] == "healthy"
        assert data["workers"] == {"alive": 1, "dead": 0, "last_seen": clock.time()}
        assert data["schedulers"] == {"alive": 0, "dead": 0, "last_seen": None}
        assert data["queue_lag"] == 0.0
        assert (await client.head("/health")).status_code == 200
        assert (await client.head("/ready")).status_code == 200

        clock.advance(61)
        data = (await client.get("/health")).json()["data"]
        assert data["status"] == "degraded"
        assert data["workers"]["dead"] == 1


async def test_a_silent_worker_degrades_even_unexpected(tmp_path: Path) -> None:
    """Without ANTIFRAGILE_EXPECT_WORKERS, a worker that was seen and went silent (killed, not
    stopped) degrades the service; one that stopped gracefully does not."""
    clock = FakeClock()
    assistant = StandInAssistant(settings_for(tmp_path), clock=clock)
    async with serving(assistant) as (client, _):
        killed = Presence(lambda: assistant.jobs.queue, kind="worker", clock=clock)
        stopped = Presence(lambda: assistant.jobs.queue, kind="worker", clock=clock)
        await killed.beat()
        await stopped.beat()
        await stopped.leave()
        assert (await client.get("/health")).json()["data"]["status"] == "healthy"
        clock.advance(120)
        data = (await client.get("/health")).json()["data"]
        assert data["status"] == "degraded"
        assert data["workers"] == {"alive": 0, "dead": 1, "last_seen": clock.time() - 120}


@pytest.mark.parametrize("age", [100.0, 400.0])
async def test_queue_lag_degrades_past_its_threshold(tmp_path: Path, age: float) -> None:
    clock = FakeClock()
    settings = settings_for(tmp_path, ANTIFRAGILE_QUEUE_LAG_THRESHOLD="5m")
    assistant = StandInAssistant(settings, clock=clock)
    async with serving(assistant) as (client, _):
        now = clock.time()
        job = NewJob(name="send", queue="email", payload={}, run_at=now, max_attempts=1)
        await assistant.jobs.queue.enqueue([job], now=now)
        clock.advance(age)
        data = (await client.get("/health")).json()["data"]
        assert data["queue_lag"] == age
        assert data["status"] == ("degraded" if age > 300 else "healthy")
        assert any("queue lag" in p for p in data["problems"]) is (age > 300)


async def test_head_when_the_database_is_gone(tmp_path: Path) -> None:
    assistant = StandInAssistant(settings_for(tmp_path))
    async with serving(assistant) as (client, _):
        await assistant.jobs.queue.store.close()
        health = await client.head("/health")
        ready = await client.head("/ready")
    assert (health.status_code, health.content) == (503, b"")
    assert (ready.status_code, ready.headers["retry-after"]) == (503, "1")
