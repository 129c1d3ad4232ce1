"""Concurrent enqueues (and records saved with their jobs) on SQLite share one commit, and stay
durable and separate.

The statements the store's connection runs are traced (SQLite's own trace callback), so the
test counts real ``COMMIT`` statements. A kill -9 of a process in the middle of concurrent
writes loses none that it acknowledged.
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


async def test_records_saved_with_their_jobs_share_commits(jobs: Jobs) -> None:
    """Records written with their jobs (``save_and_enqueue``: a session's turn with its reply)
    that arrive together share commits with each other and with enqueues; each record, the
    entries alongside it and its job are there afterwards."""
    queue = jobs.queue
    db = queue.store._db  # type: ignore[attr-defined]
    statements: list[str] = []
    now = time.time()
    await db.run(lambda conn: conn.set_trace_callback(statements.append))
    try:
        saved = await asyncio.gather(
            *(
                queue.save_and_enqueue(  # type: ignore[attr-defined]
                    f"session:{n}",
                    {"step": n},
                    expected_version=None,
                    jobs=[_new(id=f"reply-{n}")],
                    now=now,
                    alongside={f"outmsg:{n}": {"text": "hi"}},
                )
                for n in range(12)
            ),
            *(queue.enqueue([_new()], now=now) for _ in range(4)),
        )
    finally:
        await db.run(lambda conn: conn.set_trace_callback(None))
    assert all(result is not None for result in saved)
    assert 1 <= statements.count("COMMIT") < len(saved)
    for n in range(12):
        assert await queue.store.kv.get(f"session:{n}", now=now) is not None
        assert await queue.store.kv.get(f"outmsg:{n}", now=now) is not None
        assert await queue.get(f"reply-{n}") is not None


async def test_acknowledged_writes_of_every_kind_survive_kill_9(tmp_path: Path) -> None:
    """A process writes key-value entries, records with their jobs (sharing commits) and
    idempotency claims concurrently and prints each key once its write returned; it is killed
    with SIGKILL mid-stream; every printed key is in the database."""
    path = tmp_path / "writes.db"
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        from antifragile.jobs import Jobs, NewJob

        def say(key):
            sys.stdout.write(key + "\\n")
            sys.stdout.flush()

        async def one(jobs, n):
            store, now = jobs.queue.store, time.time()
            await store.kv.set(f"kv-{{n}}", {{"n": n}}, now=now)
            say(f"kv-{{n}}")
            job = NewJob(name="n", queue="q", payload={{}}, run_at=now, max_attempts=1,
                         id=f"job-{{n}}")
            await jobs.queue.save_and_enqueue(f"rec-{{n}}", {{"n": n}}, expected_version=None,
                                              jobs=[job], now=now, alongside={{f"al-{{n}}": n}})
            say(f"rec-{{n}}")
            await store.idempotency.claim(f"idem-{{n}}", owner="o", now=now, ttl=3600)
            say(f"idem-{{n}}")

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
    while len(acknowledged) < 240:
        line = await proc.stdout.readline()
        if not line:
            break
        acknowledged.append(line.decode().strip())
    proc.send_signal(signal.SIGKILL)
    rest = await proc.stdout.read()
    await proc.wait()
    acknowledged += [line for line in rest.decode().split() if line]
    assert len(acknowledged) >= 240
    with sqlite3.connect(path) as conn:
        stored = {row[0] for row in conn.execute("SELECT key FROM antifragile_kv")}
        stored |= {row[0] for row in conn.execute("SELECT key FROM antifragile_idempotency")}
        jobs = {row[0] for row in conn.execute("SELECT id FROM antifragile_jobs")}
    conn.close()
    assert set(acknowledged) <= stored
    records = [key for key in acknowledged if key.startswith("rec-")]
    assert records
    for key in records:  # a record came with its job and the entry alongside it
        n = key.removeprefix("rec-")
        assert f"job-{n}" in jobs
        assert f"al-{n}" in stored
