"""A SQLite claim commits without waiting for an fsync, and leaves the store's durability as it
was: enqueues and outcomes after it still sync as the URL says."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest

from antifragile.errors import ConfigurationError
from antifragile.jobs import NewJob, Outcome
from antifragile.jobs._sqlite import SQLiteJobQueue
from antifragile.stores._sqlite import SQLiteStore

#: PRAGMA synchronous values
_LEVELS = {"normal": 1, "full": 2, "extra": 3}


def _job(tag: str, now: float, *, max_attempts: int = 1, **fields: Any) -> NewJob:
    return NewJob(
        name="note",
        queue="q",
        payload={"tag": tag},
        run_at=now,
        max_attempts=max_attempts,
        **fields,
    )


@asynccontextmanager
async def _opened(url: str) -> AsyncIterator[tuple[SQLiteStore, SQLiteJobQueue]]:
    """An open store at *url* and its job queue; the store is closed on leaving."""
    store = SQLiteStore(url)
    await store.open()
    try:
        yield store, SQLiteJobQueue(store)
    finally:
        await store.close()


async def _synchronous(store: SQLiteStore) -> Any:
    return await store._db.run(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])


@pytest.mark.parametrize("level", ["full", "extra", "normal"])
async def test_a_claim_leaves_the_stores_synchronous_setting_as_it_was(
    tmp_path: Path, level: str
) -> None:
    """After claims (one that found jobs, one that found none) the connection syncs as its
    URL says; the claim is committed (another connection sees the job running) and the
    outcome that follows is recorded."""
    path = tmp_path / "jobs.db"
    async with _opened(f"sqlite:///{path}?synchronous={level}") as (store, queue):
        now = time.time()
        await queue.enqueue([_job("a", now)], now=now)
        claimed = await queue.claim(worker="w", limit=10, lease=30.0, now=now)
        assert [job.payload for job in claimed] == [{"tag": "a"}]
        assert await _synchronous(store) == _LEVELS[level]
        with closing(sqlite3.connect(path)) as other:
            (state,) = other.execute("SELECT state FROM antifragile_jobs").fetchone()
        assert state == "running"
        assert await queue.claim(worker="w", limit=10, lease=30.0, now=now) == []
        assert await _synchronous(store) == _LEVELS[level]
        done = await queue.complete([Outcome(claimed[0].id, "succeeded")], worker="w", now=now)
        assert done == [claimed[0].id]


async def test_completing_and_claiming_at_once_is_completing_then_claiming(
    tmp_path: Path,
) -> None:
    """``complete_and_claim`` records the outcomes and claims the next jobs as ``complete``
    then ``claim`` do -- same ids recorded (an outcome for a job not held is ignored), same
    jobs claimed in the same order, same rows after --, in one transaction that commits as
    durably as outcomes do, and that keeps nothing when it fails."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    results: dict[str, tuple[list[str], list[Any]]] = {}
    for way in ("apart", "together"):
        async with _opened(f"sqlite:///{tmp_path / way}.db") as (store, queue):
            now = 1000.0
            jobs = [_job(str(n), now, max_attempts=3, id=f"{n:032x}") for n in range(6)]
            await queue.enqueue(jobs, now=now)
            first = await queue.claim(worker="w", limit=3, lease=30.0, now=now)
            outcomes = [
                Outcome(first[0].id, "succeeded"),
                Outcome(first[1].id, "succeeded", result={"ok": 1}),
                Outcome(first[2].id, "retry", run_at=now + 60, error_code="TIMEOUT", error="t"),
                Outcome("f" * 32, "succeeded"),  # not held: ignored
            ]
            later = now + 1
            if way == "apart":
                recorded = await queue.complete(outcomes, worker="w", now=later)
                claimed = await queue.claim(worker="w", limit=2, lease=30.0, now=later)
            else:
                recorded, claimed = await queue.complete_and_claim(
                    outcomes, worker="w", now=later, limit=2, lease=30.0
                )
                assert await _synchronous(store) == _LEVELS["full"]
            results[way] = (sorted(recorded), claimed)
            rows[way] = await store._db.run(
                lambda conn: conn.execute("SELECT * FROM antifragile_jobs ORDER BY id").fetchall()
            )
    assert results["together"] == results["apart"]
    assert len(results["together"][0]) == 3
    assert len(results["together"][1]) == 2
    assert rows["together"] == rows["apart"]


async def test_a_failed_complete_and_claim_keeps_neither(tmp_path: Path) -> None:
    """An outcome the queue refuses fails the whole call: no job is claimed, none recorded."""
    async with _opened(f"sqlite:///{tmp_path / 'jobs.db'}") as (store, queue):
        now = 1000.0
        await queue.enqueue([_job(str(n), now) for n in range(3)], now=now)
        (held,) = await queue.claim(worker="w", limit=1, lease=30.0, now=now)
        bad = Outcome(held.id, "vanish")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            await queue.complete_and_claim([bad], worker="w", now=now, limit=2, lease=30.0)
        states = await store._db.run(
            lambda conn: conn.execute("SELECT state FROM antifragile_jobs").fetchall()
        )
        assert sorted(s for (s,) in states) == ["queued", "queued", "running"]


async def test_a_claimed_job_is_the_job_the_queue_then_holds(tmp_path: Path) -> None:
    """A claim fills in the values it sets itself (state, lease owner and expiry, updated_at)
    instead of reading them back: each job it returns equals the job read afterwards, for a
    fresh claim and for one that takes over an expired lease (whose lost run joins the
    history)."""
    async with _opened(f"sqlite:///{tmp_path / 'jobs.db'}") as (_, queue):
        now = 1000.0
        jobs = [
            _job(str(n), now, max_attempts=3, timeout=30, context={"request_id": f"r{n}"})
            for n in range(3)
        ]
        await queue.enqueue(jobs, now=now)
        fresh = await queue.claim(worker="a", limit=2, lease=5.0, now=now)
        assert fresh == [await queue.get(job.id) for job in fresh]
        later = now + 10  # the first claim's leases ran out
        taken = await queue.claim(worker="b", limit=3, lease=5.0, now=later)
        assert len(fresh) == 2
        assert len(taken) == 3
        for job in fresh:
            assert (job.lease_owner, job.lease_until, job.updated_at) == ("a", now + 5, now)
        held = [await queue.get(job.id) for job in taken]
        assert taken == held
        assert sum(len(job.history) for job in taken) == 2  # the two lost runs
