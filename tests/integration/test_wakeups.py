"""Idle workers are woken by new jobs instead of waiting for their next poll.

Every worker here polls once an hour: a job it picks up within the test's patience was noticed
because of a wake-up -- from the same process, from another OS process (SQLite), through
``LISTEN``/``NOTIFY`` (PostgreSQL, also after its listening connection was killed) -- or because
the worker slept exactly until a delayed job fell due. No test bounds how fast that happens.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from antifragile.jobs import JobContext, JobFilter, Jobs, NewInboxEntry, NewJob, Worker
from antifragile.jobs._postgres import channel_name
from antifragile.jobs._wakeup import socket_directory
from tests._waiting import eventually

# The schema fixture is tests/integration/conftest.py's.
HOUR = 3600.0
ROOT = Path(__file__).resolve().parents[2]


def _app(url: str, done: list[str]) -> Jobs:
    jobs = Jobs(database_url=url)

    @jobs.job(queue="q")
    async def note(ctx: JobContext, tag: str) -> None:
        done.append(tag)

    return jobs


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    base: str = request.getfixturevalue("postgres_url")
    schema: str = request.getfixturevalue("schema")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}schema={schema}"


@pytest.fixture
async def running(url: str) -> AsyncIterator[tuple[Jobs, list[str]]]:
    """A worker polling once an hour, running; the jobs and what they did."""
    done: list[str] = []
    jobs = _app(url, done)
    async with jobs:
        worker = Worker(jobs, poll_interval=HOUR, concurrency=2)
        task = asyncio.create_task(worker.run())
        try:
            yield jobs, done
        finally:
            worker.stop(release=True)
            await task


def _watch_idle(jobs: Jobs, done: list[str]) -> list[int]:
    """How many jobs had run each time the worker went idle: a worker reads the next due time
    right before it waits, so an entry *n* means it waited after the *n*-th job."""
    idle: list[int] = []
    queue: Any = jobs.queue
    next_due = queue.next_due

    async def reading(*, now: float) -> float | None:
        due: float | None = await next_due(now=now)
        idle.append(len(done))
        return due

    queue.next_due = reading
    return idle


def _new(tag: str, run_at: float) -> NewJob:
    return NewJob(name="note", queue="q", payload={"tag": tag}, run_at=run_at, max_attempts=1)


async def test_an_enqueue_from_another_connection_wakes_an_idle_worker(
    url: str, running: tuple[Jobs, list[str]]
) -> None:
    """A second queue on the same database (its own store and connections) enqueues; the
    worker, idle with an hour to its next poll, runs the job."""
    _, done = running
    other = Jobs(database_url=url)
    async with other:
        await other.queue.enqueue([_new("first", time.time())], now=time.time())
        await eventually(lambda: done == ["first"])
        await other.queue.enqueue([_new("second", time.time())], now=time.time())
        await eventually(lambda: done == ["first", "second"])


async def test_an_outbox_enqueue_wakes_the_worker_once_the_callers_transaction_commits(
    url: str, running: tuple[Jobs, list[str]], request: pytest.FixtureRequest
) -> None:
    """Jobs enqueued inside the caller's own transaction (``connection=``) wake the idle worker
    when that transaction commits -- on PostgreSQL through the notification the commit
    delivers, on SQLite because the queue watches the caller's connection. The transaction
    stays open over several turns of the event loop first: nothing runs before the commit."""
    jobs, done = running
    idle = _watch_idle(jobs, done)
    await jobs.queue.enqueue([_new("first", time.time())], now=time.time())
    await eventually(lambda: 1 in idle)  # the worker waits now, an hour from its poll
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            conn.execute("BEGIN")
            await jobs.queue.enqueue(
                [_new("outbox", time.time())], now=time.time(), connection=conn
            )
            for _ in range(20):
                await asyncio.sleep(0.005)  # the watch backs off while the transaction is open
            assert done == ["first"]
            conn.commit()
            await eventually(lambda: done == ["first", "outbox"])
        finally:
            conn.close()
        return
    postgres_url: str = request.getfixturevalue("postgres_url")
    async with await psycopg.AsyncConnection.connect(postgres_url) as pg:
        async with pg.transaction():
            await jobs.queue.enqueue([_new("outbox", time.time())], now=time.time(), connection=pg)
            for _ in range(20):
                await asyncio.sleep(0.005)
            assert done == ["first"]
        await eventually(lambda: done == ["first", "outbox"])


async def test_an_outbox_enqueue_rolled_back_runs_nothing_and_later_jobs_still_wake(
    tmp_path: Path,
) -> None:
    """On SQLite a rolled-back outbox transaction wakes the worker for nothing; the next
    outbox enqueue on the same connection, committed, runs."""
    path = tmp_path / "jobs.db"
    done: list[str] = []
    jobs = _app(f"sqlite:///{path}", done)
    async with jobs:
        idle = _watch_idle(jobs, done)
        worker = Worker(jobs, poll_interval=HOUR)
        task = asyncio.create_task(worker.run())
        await jobs.queue.enqueue([_new("first", time.time())], now=time.time())
        await eventually(lambda: 1 in idle)  # the worker waits now, an hour from its poll
        conn = sqlite3.connect(path)
        try:
            conn.execute("BEGIN")
            await jobs.queue.enqueue(
                [_new("undone", time.time())], now=time.time(), connection=conn
            )
            conn.rollback()
            conn.execute("BEGIN")
            await jobs.queue.enqueue([_new("kept", time.time())], now=time.time(), connection=conn)
            conn.commit()
            await eventually(lambda: done == ["first", "kept"])
        finally:
            conn.close()
            worker.stop(release=True)
            await task


async def test_a_delayed_job_wakes_the_worker_when_it_falls_due(
    running: tuple[Jobs, list[str]],
) -> None:
    """The worker sleeps until the delayed job's run time (not an hour): the job runs once
    due, never before."""
    jobs, done = running
    now = time.time()
    due = now + 0.3
    await jobs.queue.enqueue([_new("later", due)], now=now)
    await eventually(lambda: done == ["later"])
    assert time.time() >= due


async def test_an_enqueue_from_another_process_wakes_a_sqlite_worker(tmp_path: Path) -> None:
    """An enqueue committed by another OS process reaches the worker through its socket."""
    path = tmp_path / "jobs.db"
    done: list[str] = []
    jobs = _app(f"sqlite:///{path}", done)
    async with jobs:
        worker = Worker(jobs, poll_interval=HOUR)
        task = asyncio.create_task(worker.run())
        directory = socket_directory(str(path))
        assert directory is not None
        await eventually(lambda: any(n.endswith(".sock") for n in _listing(directory)))
        script = textwrap.dedent(
            f"""
            import asyncio, time
            from antifragile.jobs import Jobs, NewJob

            async def main():
                async with Jobs(database_url={f"sqlite:///{path}"!r}) as jobs:
                    job = NewJob(name="note", queue="q", payload={{"tag": "elsewhere"}},
                                 run_at=time.time(), max_attempts=1)
                    await jobs.queue.enqueue([job], now=time.time())

            asyncio.run(main())
            """
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, env=env)
        assert await proc.wait() == 0
        try:
            await eventually(lambda: done == ["elsewhere"])
        finally:
            worker.stop(release=True)
            await task
    assert not any(n.endswith(".sock") for n in _listing(directory))  # removed on stop


def _listing(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


async def test_a_stale_socket_is_removed_by_the_next_enqueue(tmp_path: Path) -> None:
    """A worker killed without cleaning up leaves its socket; an enqueuer finds it refused and
    removes it."""
    import socket

    path = tmp_path / "jobs.db"
    directory = socket_directory(str(path))
    assert directory is not None
    os.makedirs(directory)
    stale = os.path.join(directory, "1-dead.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(stale)
    sock.close()  # bound, then gone: nobody reads it any more
    async with Jobs(database_url=f"sqlite:///{path}") as jobs:
        await jobs.queue.enqueue([_new("x", time.time())], now=time.time())
    assert "1-dead.sock" not in _listing(directory)


async def test_a_postgres_worker_listens_again_after_its_connection_dies(
    postgres_url: str, schema: str
) -> None:
    """The listening connection is terminated by the server; the worker connects again and
    is woken by the next enqueue."""
    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={schema}"
    done: list[str] = []
    jobs = _app(url, done)
    channel = channel_name(schema)

    def listeners() -> list[int]:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE query = %s",
                (f'LISTEN "{channel}"',),
            ).fetchall()
        return [row[0] for row in rows]

    async with jobs:
        worker = Worker(jobs, poll_interval=HOUR)
        task = asyncio.create_task(worker.run())
        try:
            await eventually(lambda: len(listeners()) == 1)
            (first,) = listeners()
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (first,))
            await eventually(lambda: len(listeners()) == 1 and listeners()[0] != first)
            await jobs.queue.enqueue([_new("after", time.time())], now=time.time())
            await eventually(lambda: done == ["after"])
        finally:
            worker.stop(release=True)
            await task


def test_the_notify_is_sent_once_per_transaction(postgres_url: str, schema: str) -> None:
    """A batch of jobs enqueued in one transaction notifies its channel once."""
    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={schema}"

    async def enqueue() -> None:
        async with Jobs(database_url=url) as jobs:
            now = time.time()
            await jobs.queue.enqueue([_new(str(i), now) for i in range(5)], now=now)

    asyncio.run(enqueue())  # migrates the schema first
    with psycopg.connect(postgres_url, autocommit=True) as listener:
        listener.execute(f'LISTEN "{channel_name(schema)}"'.encode())
        asyncio.run(enqueue())
        # the first notification is meant to come (a generous wait); a second one would
        # follow it at once, so the short wait is only for the one that must not come
        got = list(listener.notifies(timeout=30.0, stop_after=1))
        got += listener.notifies(timeout=0.5, stop_after=10)
    assert len(got) == 1


def _counter(woken: dict[str, int]) -> Any:
    """A factory of wake callbacks that count, each under its name, in *woken*."""

    def waker(name: str) -> Any:
        def wake() -> None:
            woken[name] += 1

        return wake

    return waker


def _job_of(queue: str) -> NewJob:
    return NewJob(name="note", queue=queue, payload={}, run_at=time.time(), max_attempts=1)


async def test_a_worker_of_some_queues_is_woken_by_their_jobs_only(
    postgres_url: str, schema: str
) -> None:
    """Each enqueueing transaction notifies once per queue of its jobs, the queue's name the
    payload: a listener of queue "a" is not woken by a job of "b" (its notification comes
    first on the same connection, so the count shows it), a listener of every queue is woken
    by both, and a notification without a payload (an older version's) wakes both."""
    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={schema}"
    woken = {"a": 0, "all": 0}
    waker, job = _counter(woken), _job_of

    async with Jobs(database_url=url) as jobs:
        queue: Any = jobs.queue
        async with queue.wakeups(waker("a"), queues=["a"]), queue.wakeups(waker("all")):
            # each listener wakes once when it starts listening (for what it may have missed)
            await eventually(lambda: woken == {"a": 1, "all": 1})
            await jobs.queue.enqueue([job("b")], now=time.time())
            await jobs.queue.enqueue([job("a")], now=time.time())
            await eventually(lambda: woken["a"] == 2 and woken["all"] == 3)
            await jobs.queue.enqueue([job("a"), job("b"), job("a")], now=time.time())
            await eventually(lambda: woken["a"] == 3 and woken["all"] >= 4)
            async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as c:
                await c.execute(f'NOTIFY "{channel_name(schema)}"'.encode())
            await eventually(lambda: woken["a"] == 4)


async def test_a_sqlite_worker_of_some_queues_is_woken_by_their_jobs_in_its_process(
    tmp_path: Path,
) -> None:
    """In the enqueuer's own process a listener of queue "a" is woken by jobs of "a" only (an
    enqueue, a record saved with its jobs, an inbox record), a listener of every queue by all."""
    woken = {"a": 0, "all": 0}
    waker, job = _counter(woken), _job_of

    async with Jobs(database_url=f"sqlite:///{tmp_path / 'jobs.db'}") as jobs:
        queue: Any = jobs.queue
        async with queue.wakeups(waker("a"), queues=["a"]), queue.wakeups(waker("all")):
            await jobs.queue.enqueue([job("b")], now=time.time())
            assert woken == {"a": 0, "all": 1}
            await jobs.queue.enqueue([job("b"), job("a")], now=time.time())
            assert woken == {"a": 1, "all": 2}
            await queue.save_and_enqueue(
                "record", {"n": 1}, expected_version=None, jobs=[job("b")], now=time.time()
            )
            assert woken == {"a": 1, "all": 3}
            entry = NewInboxEntry("whatsapp", "wamid.1", "message", "t", {}, 60.0, job("a"))
            await jobs.queue.record_inbound([entry], now=time.time())
            assert woken == {"a": 2, "all": 4}
            await jobs.queue.redrive(JobFilter(), now=time.time())  # nothing dead: no wake
            assert woken == {"a": 2, "all": 4}
