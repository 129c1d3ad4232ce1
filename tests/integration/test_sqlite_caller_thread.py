"""A lone write on an idle SQLite store runs in the caller's own thread; concurrent ones go to
the store's thread together and share a commit.

Which thread ran a statement is seen through SQLite's trace callback; commits are counted from
the traced statements (a ``COMMIT``, or a write outside any transaction: its own commit). No
test asserts a duration: the heuristic that sends operations to the thread after slow ones is
switched off where a test needs one path or the other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest

from antifragile.errors import StoreError, StoreUnavailableError
from antifragile.jobs import JobFilter, Jobs, NewJob, StatusFlag
from antifragile.stores import _sqlite
from antifragile.stores._sqlite import SQLiteStore, _Database
from tests._waiting import eventually, wait_until

NOW = 1000.0
_INSERT_JOB = "INSERT INTO antifragile_jobs"


def _new(id: str, **changes: Any) -> NewJob:
    job = NewJob(name="n", queue="q", payload={"n": 1}, run_at=NOW, max_attempts=3, id=id)
    return dataclasses.replace(job, **changes)


@pytest.fixture(autouse=True)
def never_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded machine's slow commits would send operations to the thread for a while."""
    monkeypatch.setattr(_sqlite, "HERE_SLOW_AFTER", float("inf"))


@pytest.fixture
async def jobs(tmp_path: Path) -> AsyncIterator[Jobs]:
    async with Jobs(database_url=f"sqlite:///{tmp_path / 'jobs.db'}") as app:
        yield app


def _db(jobs: Jobs) -> _Database:
    db: _Database = jobs.queue.store._db  # type: ignore[attr-defined]
    return db


@asynccontextmanager
async def _on_either_path(
    tmp_path: Path, *, here: bool, query: str = ""
) -> AsyncIterator[tuple[Jobs, Path]]:
    """Jobs on a SQLite file of their own, and the file: with *here*, a lone write on an idle
    store runs on the caller's thread as usual; without, every operation goes to the store's
    thread."""
    path = tmp_path / ("here" if here else "thread") / "jobs.db"
    path.parent.mkdir()
    async with Jobs(database_url=f"sqlite:///{path}{query}") as jobs:
        if not here:
            _db(jobs)._here_after = float("inf")  # every operation to the store's thread
        yield jobs, path


class _Trace:
    """The statements the store's connection runs: (thread, in a transaction, statement)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bool, str]] = []
        self.conn: sqlite3.Connection | None = None

    def __call__(self, statement: str) -> None:
        assert self.conn is not None
        self.seen.append((threading.get_ident(), self.conn.in_transaction, statement))

    def commits(self) -> int:
        """COMMITs, and writes made outside a transaction (each its own commit)."""
        return sum(
            statement == "COMMIT" or (not open_ and statement.lstrip().startswith("INSERT"))
            for _, open_, statement in self.seen
        )

    def threads_of(self, text: str) -> set[int]:
        return {thread for thread, _, statement in self.seen if text in statement}


@pytest.fixture
async def trace(jobs: Jobs) -> AsyncIterator[_Trace]:
    traced = _Trace()

    def install(conn: sqlite3.Connection) -> None:
        traced.conn = conn
        conn.set_trace_callback(traced)

    db = _db(jobs)
    await db.run(install)
    await eventually(lambda: not db._draining)  # the store's thread saw it had nothing left
    traced.seen.clear()
    yield traced
    await db.run(lambda conn: conn.set_trace_callback(None))


async def test_a_lone_enqueue_runs_in_the_callers_thread_with_one_commit(
    jobs: Jobs, trace: _Trace
) -> None:
    (enqueued,) = await jobs.queue.enqueue([_new("alone")], now=NOW)
    assert enqueued.created
    assert trace.threads_of(_INSERT_JOB) == {threading.get_ident()}
    assert trace.commits() == 1
    assert await jobs.queue.get("alone") is not None


async def test_concurrent_enqueues_go_to_the_store_thread_and_share_commits(
    jobs: Jobs, trace: _Trace
) -> None:
    results = await asyncio.gather(
        *(jobs.queue.enqueue([_new(f"burst-{n}")], now=NOW) for n in range(20))
    )
    assert all(enqueued.created for (enqueued,) in results)
    assert threading.get_ident() not in trace.threads_of(_INSERT_JOB)
    assert 1 <= trace.commits() < 20
    await eventually(lambda: not _db(jobs)._draining)  # the thread saw it had nothing left
    trace.seen.clear()
    await jobs.queue.enqueue([_new("after-the-burst")], now=NOW)  # alone again: here
    assert trace.threads_of(_INSERT_JOB) == {threading.get_ident()}


async def _scenario(jobs: Jobs, path: str) -> list[Any]:
    """Enqueues of every kind, a clash and a refused record, then what was stored."""
    queue = jobs.queue
    out: list[Any] = []

    async def step(operation: Any) -> None:
        try:
            out.append(await operation)
        except StoreError as exc:
            out.append((type(exc).__name__, str(exc).replace(path, "<db>")))

    await step(queue.enqueue([_new("plain")], now=NOW))
    await step(queue.enqueue([_new("keyed", idempotency_key="k")], now=NOW))
    await step(queue.enqueue([_new("keyed-again", idempotency_key="k")], now=NOW))
    await step(queue.enqueue([_new("flagged", status_flag=StatusFlag("flag:1", "email"))], now=NOW))
    await step(
        queue.enqueue(
            [_new("ordered-1", ordering_key="o"), _new("ordered-2", ordering_key="o")], now=NOW
        )
    )
    await step(queue.enqueue([_new("later", run_at=NOW + 60)], now=NOW))
    await step(queue.enqueue([_new("plain")], now=NOW))  # the id is taken
    await step(
        queue.save_and_enqueue(  # type: ignore[attr-defined]
            "record", {"a": 1}, expected_version=None, jobs=[_new("with-record")], now=NOW
        )
    )
    await step(
        queue.save_and_enqueue(  # type: ignore[attr-defined]
            "record", {"a": 2}, expected_version=None, jobs=[_new("not-written")], now=NOW
        )
    )
    out.append(await queue.find(JobFilter(), limit=100))
    out.append(await queue.store.kv.get("flag:1", now=NOW))
    return out


async def test_the_callers_thread_and_the_store_thread_give_the_same_results(
    tmp_path: Path,
) -> None:
    outcomes = []
    for here in (True, False):
        async with _on_either_path(tmp_path, here=here) as (jobs, _):
            outcomes.append(await _scenario(jobs, _db(jobs).shown_path))
    here_out, thread_out = outcomes
    assert here_out == thread_out
    clash = here_out[6]
    assert clash[0] == "StoreError"
    assert "UNIQUE" in clash[1]
    assert here_out[2][0].id == "keyed"
    assert not here_out[2][0].created
    assert here_out[8] is None  # the record existed: nothing written
    assert {job.id for job in here_out[9]} == {
        "plain",
        "keyed",
        "flagged",
        "ordered-1",
        "ordered-2",
        "later",
        "with-record",
    }


async def test_an_operation_here_never_overlaps_one_in_the_store_thread(jobs: Jobs) -> None:
    """Callers of this loop (alone, in bursts, shared and not) and of two other threads' loops,
    with real enqueues between them: no two operations ever use the connection at once."""
    db = _db(jobs)
    guard = threading.Lock()
    inside = [0]
    overlaps: list[int] = []
    failures: list[BaseException] = []

    def operation(conn: sqlite3.Connection, n: int) -> int:
        with guard:
            inside[0] += 1
            if inside[0] != 1:
                overlaps.append(n)
        try:
            conn.execute("SELECT count(*) FROM antifragile_jobs").fetchone()
            time.sleep(0.0005)  # widen the window an overlap would need
        finally:
            with guard:
                inside[0] -= 1
        return n

    def elsewhere() -> None:
        async def go() -> None:
            for n in range(300):  # mostly alone (run here when the store is idle)
                size = 1 if n % 5 else 3
                burst = [db.run_shared_here(operation, 10_000 + n * 10 + i) for i in range(size)]
                got = await asyncio.gather(*burst)
                assert got == [10_000 + n * 10 + i for i in range(size)]
                await asyncio.sleep(0.0003 * (n % 3))

        try:
            asyncio.run(go())
        except BaseException as exc:
            failures.append(exc)

    others = [threading.Thread(target=elsewhere) for _ in range(2)]
    for other in others:
        other.start()
    try:
        for n in range(150):
            calls: list[Any] = [db.run_shared_here(operation, n * 10 + i) for i in range(n % 5 + 1)]
            if n % 3 == 0:
                calls.append(db.run(operation, n * 10 + 9))
            if n % 7 == 0:
                calls.append(db.run_shared(operation, n * 10 + 8))
            if n % 4 == 0:
                calls.append(jobs.queue.enqueue([_new(f"stress-{n}")], now=NOW))
            got = await asyncio.gather(*calls)
            expected = [n * 10 + i for i in range(n % 5 + 1)]
            assert got[: len(expected)] == expected
            await asyncio.sleep(0.0003 * (n % 2))
    finally:
        for other in others:
            await asyncio.to_thread(other.join, 60)
    assert not failures
    assert not overlaps
    assert len(await jobs.queue.find(JobFilter(), limit=100)) == len(range(0, 150, 4))


async def test_a_write_lock_held_elsewhere_is_waited_for_without_blocking_the_loop(
    jobs: Jobs, tmp_path: Path, trace: _Trace
) -> None:
    with closing(sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        task = asyncio.create_task(jobs.queue.enqueue([_new("waited")], now=NOW))
        for _ in range(20):  # the loop runs on while the enqueue waits for the lock
            await asyncio.sleep(0.001)
        assert not task.done()
        other.execute("COMMIT")
    (enqueued,) = await asyncio.wait_for(task, 60)
    assert enqueued.created
    assert trace.threads_of(_INSERT_JOB) - {threading.get_ident()}  # written by the thread
    busy = await _db(jobs).run(lambda conn: conn.execute("PRAGMA busy_timeout").fetchone()[0])
    assert busy == _db(jobs).busy_timeout_ms


async def test_a_lock_held_past_the_busy_timeout_is_the_same_error_on_either_path(
    tmp_path: Path,
) -> None:
    messages = []
    for here in (True, False):
        async with _on_either_path(tmp_path, here=here, query="?busy_timeout=50") as (jobs, path):
            with closing(sqlite3.connect(path, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")
                with pytest.raises(StoreUnavailableError) as caught:
                    await jobs.queue.enqueue([_new("locked-out")], now=NOW)
                other.execute("ROLLBACK")
            messages.append(str(caught.value).replace(_db(jobs).shown_path, "<db>"))
            assert await jobs.queue.get("locked-out") is None
            (enqueued,) = await jobs.queue.enqueue([_new("afterwards")], now=NOW)
            assert enqueued.created
    assert messages[0] == messages[1]
    assert "stayed locked" in messages[0]


async def test_closing_from_another_thread_waits_for_an_operation_running_here(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    db = store._db
    closed = threading.Event()
    failures: list[BaseException] = []

    def closer() -> None:
        try:
            asyncio.run(store.close())
        except BaseException as exc:
            failures.append(exc)
        finally:
            closed.set()

    closing_thread = threading.Thread(target=closer)

    def operation(conn: sqlite3.Connection) -> int:
        closing_thread.start()
        wait_until(lambda: bool(db._pending))  # the close waits behind this operation
        time.sleep(0.01)
        assert not closed.is_set()
        conn.execute(
            "INSERT INTO antifragile_kv (key, value, version, expires_at) VALUES (?, ?, 1, NULL)",
            ("written", '"yes"'),
        )
        return threading.get_ident()

    try:
        assert await db.run_shared_here(operation) == threading.get_ident()
    finally:
        await asyncio.to_thread(closing_thread.join, 60)
    assert closed.is_set()
    assert not failures
    with pytest.raises(StoreUnavailableError):
        await store.kv.get("written", now=NOW)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT value FROM antifragile_kv WHERE key = 'written'").fetchone()


async def test_closing_while_an_enqueue_is_about_to_run_here_lets_it_finish(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    jobs = Jobs(database_url=f"sqlite:///{path}")
    await jobs.open()
    task = asyncio.create_task(jobs.queue.enqueue([_new("before-close")], now=NOW))
    await asyncio.sleep(0)  # the enqueue holds the connection, and lets the loop run once
    await jobs.close()
    (enqueued,) = await task
    assert enqueued.created
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT 1 FROM antifragile_jobs WHERE id = 'before-close'").fetchone()


async def test_an_enqueue_cancelled_before_it_ran_still_runs(jobs: Jobs) -> None:
    """As in the store's thread: a cancelled caller's operation is not undone, only its
    result dropped; the store serves the next caller."""
    task = asyncio.create_task(jobs.queue.enqueue([_new("cancelled")], now=NOW))
    await asyncio.sleep(0)  # the enqueue registered and let the loop run once
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def stored() -> bool:
        return await jobs.queue.get("cancelled") is not None

    await eventually(stored)
    (enqueued,) = await jobs.queue.enqueue([_new("next")], now=NOW)
    assert enqueued.created


async def test_expired_rows_are_collected_in_turn_after_writes_made_here(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_sqlite, "PURGE_EVERY", 3)
    store = jobs.queue.store
    await store.kv.set("old", 1, now=NOW, ttl=1)
    later = NOW + _sqlite.PURGE_GRACE + 10
    for n in range(3):
        await jobs.queue.save_and_enqueue(  # type: ignore[attr-defined]
            f"record-{n}", n, expected_version=None, jobs=[_new(f"job-{n}")], now=later
        )

    def purged() -> bool:
        with closing(sqlite3.connect(tmp_path / "jobs.db")) as conn:
            return conn.execute("SELECT 1 FROM antifragile_kv WHERE key = 'old'").fetchone() is None

    await eventually(purged)
