"""Concurrent enqueues on SQLite share one commit, and stay durable and separate.

The statements the store's connection runs are traced (SQLite's own trace callback), so the
test counts real ``COMMIT`` statements. A kill -9 of a process in the middle of concurrent
enqueues loses none that it acknowledged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from antifragile.errors import StoreError
from antifragile.jobs import Jobs, NewJob
from tests._waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


def _new(id: str | None = None) -> NewJob:
    job = NewJob(name="n", queue="q", payload={}, run_at=time.time(), max_attempts=1)
    return job if id is None else dataclasses.replace(job, id=id)


@pytest.fixture
async def jobs(tmp_path: Path) -> AsyncIterator[Jobs]:
    async with Jobs(database_url=f"sqlite:///{tmp_path / 'jobs.db'}") as app:
        yield app


async def test_concurrent_enqueues_share_a_commit(jobs: Jobs) -> None:
    db = jobs.queue.store._db  # type: ignore[attr-defined]
    statements: list[str] = []
    await db.run(lambda conn: conn.set_trace_callback(statements.append))
    try:
        results = await asyncio.gather(
            *(jobs.queue.enqueue([_new()], now=time.time()) for _ in range(20))
        )
    finally:
        await db.run(lambda conn: conn.set_trace_callback(None))
    assert all(enqueued.created for (enqueued,) in results)
    commits = statements.count("COMMIT")
    assert 1 <= commits < 20
    for (enqueued,) in results:
        assert await jobs.queue.get(enqueued.id) is not None


async def test_a_failing_enqueue_does_not_take_the_others_down(jobs: Jobs) -> None:
    """A caller whose job cannot be written (a job id taken already) gets the error; the
    callers that shared its transaction keep their jobs."""
    await jobs.queue.enqueue([_new(id="taken")], now=time.time())
    first, clash, last = await asyncio.gather(
        jobs.queue.enqueue([_new(id="first")], now=time.time()),
        jobs.queue.enqueue([_new(id="taken")], now=time.time()),
        jobs.queue.enqueue([_new(id="last")], now=time.time()),
        return_exceptions=True,
    )
    assert isinstance(clash, StoreError)
    assert not isinstance(first, BaseException)
    assert not isinstance(last, BaseException)
    assert [e.created for e in (*first, *last)] == [True, True]
    assert await jobs.queue.get("first") is not None
    assert await jobs.queue.get("last") is not None


async def test_acknowledged_enqueues_survive_kill_9(tmp_path: Path) -> None:
    """A process enqueues concurrently and prints each job id once its enqueue returned; it is
    killed with SIGKILL mid-stream; every printed id is in the database."""
    path = tmp_path / "jobs.db"
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from antifragile.jobs import Jobs, NewJob

        async def one(jobs, n):
            job = NewJob(name="n", queue="q", payload={{}}, run_at=time.time(),
                         max_attempts=1, id=f"job-{{n}}")
            await jobs.queue.enqueue([job], now=time.time())
            sys.stdout.write(f"job-{{n}}\\n")
            sys.stdout.flush()

        async def main():
            async with Jobs(database_url={f"sqlite:///{path}"!r}) as jobs:
                n = 0
                while True:
                    await asyncio.gather(*(one(jobs, n + i) for i in range(8)))
                    n += 8

        asyncio.run(main())
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    acknowledged: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        while len(acknowledged) < 200:
            line = await proc.stdout.readline()
            if not line:
                return
            acknowledged.append(line.decode().strip())

    await read()
    await eventually(lambda: len(acknowledged) >= 200)
    proc.send_signal(signal.SIGKILL)
    rest = await proc.stdout.read()
    await proc.wait()
    acknowledged += [line for line in rest.decode().split() if line]
    with sqlite3.connect(path) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM antifragile_jobs")}
    conn.close()
    assert set(acknowledged) <= stored
