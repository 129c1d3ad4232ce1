"""A SQLite claim commits without waiting for an fsync, and leaves the store's durability as it
was: enqueues and outcomes after it still sync as the URL says."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from antifragile.jobs import NewJob, Outcome
from antifragile.jobs._sqlite import SQLiteJobQueue
from antifragile.stores._sqlite import SQLiteStore

#: PRAGMA synchronous values
_LEVELS = {"normal": 1, "full": 2, "extra": 3}


def _job(tag: str, now: float) -> NewJob:
    return NewJob(name="note", queue="q", payload={"tag": tag}, run_at=now, max_attempts=1)


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
    store = SQLiteStore(f"sqlite:///{path}?synchronous={level}")
    await store.open()
    try:
        queue = SQLiteJobQueue(store)
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
    finally:
        await store.close()
