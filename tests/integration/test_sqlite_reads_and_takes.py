"""SQLite on real files: point reads in the caller's thread on a read-only connection, rate-limit
takes that commit without an fsync, and shared writes that keep one commit across the other
operations waiting between them.

The store's thread is held busy by an operation that waits for an event (set by the test), so
that what the test starts meanwhile either waits in line or, for a point read, does not; no test
asserts a duration.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import pytest

from antifragile.jobs import NewInboxEntry
from antifragile.jobs._sqlite import SQLiteJobQueue
from antifragile.stores._sqlite import SQLiteStore, _Database, _immediate
from tests._waiting import eventually

NOW = 1000.0


@asynccontextmanager
async def _opened(url: str) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def _held(db: _Database, *, write: str | None = None) -> AsyncIterator[asyncio.Task[None]]:
    """The store's thread busy until the block ends: running an operation that waits for an
    event -- inside a write transaction that has run *write* (not committed until then) when
    given. Yields the operation's task once it runs."""
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        if write is None:
            started.set()
            release.wait()
            return
        with _immediate(conn):
            conn.execute(write)
            started.set()
            release.wait()

    task = asyncio.ensure_future(db.run(hold))
    try:
        await eventually(started.is_set)
        yield task
    finally:
        release.set()


async def test_a_point_read_does_not_wait_for_the_store_thread(tmp_path: Path) -> None:
    """While the store's thread holds a write transaction open, a kv read answers at once in
    the caller's thread, with what is committed (never the open transaction's write); once
    the transaction commits, reads see it."""
    async with _opened(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        db: _Database = store._db
        assert db._reader is not None
        await store.kv.set("k", {"n": 1}, now=NOW)
        change = """UPDATE antifragile_kv SET value = '{"n":2}', version = 2 WHERE key = 'k'"""
        async with _held(db, write=change) as holding:
            seen = await store.kv.get("k", now=NOW)
            assert seen is not None
            assert seen.value == {"n": 1}
            assert seen.version == 1
            assert not holding.done()
        await holding
        seen = await store.kv.get("k", now=NOW)
        assert seen is not None
        assert seen.value == {"n": 2}


async def test_an_inbox_entry_is_read_while_the_store_thread_is_busy(tmp_path: Path) -> None:
    async with _opened(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        queue = SQLiteJobQueue(store)
        entry = NewInboxEntry("whatsapp", "wamid.1", "message", "t", {"text": "hi"}, 60.0, None)
        (recorded,) = await queue.record_inbound([entry], now=NOW)
        async with _held(store._db) as holding:
            found = await queue.get_inbound(recorded.id)
            assert found is not None
            assert found.payload == {"text": "hi"}
            assert await queue.get_inbound("absent") is None
            assert not holding.done()
        await holding


async def test_reads_go_to_the_store_thread_without_a_free_read_connection(
    tmp_path: Path,
) -> None:
    """A database in memory has no read connection; neither has one read while another thread
    reads on it: their reads wait their turn in the store's thread, with the same result."""
    async with _opened("sqlite:///:memory:") as memory:
        assert memory._db._reader is None
        await memory.kv.set("k", 1, now=NOW)
        seen = await memory.kv.get("k", now=NOW)
        assert seen is not None
        assert seen.value == 1
    async with _opened(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        db: _Database = store._db
        await store.kv.set("k", 1, now=NOW)
        with db._reader_lock:  # another thread is reading
            async with _held(db) as holding:
                read = asyncio.ensure_future(store.kv.get("k", now=NOW))
                await eventually(lambda: len(db._pending) == 1)  # in line behind the holder
                assert not read.done()
            await holding
            seen = await read
        assert seen is not None
        assert seen.value == 1


async def test_closing_the_store_closes_its_read_connection(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await store.open()
    reader = store._db._reader
    assert reader is not None
    assert reader.execute("PRAGMA query_only").fetchone() == (1,)
    await store.close()
    assert store._db._reader is None
    with pytest.raises(sqlite3.ProgrammingError):
        reader.execute("SELECT 1")


class _Trace:
    """The statements the store's connection runs, with whether a transaction was open."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.seen: list[tuple[bool, str]] = []

    def __call__(self, statement: str) -> None:
        self.seen.append((self.conn.in_transaction, statement))

    def statements(self) -> list[str]:
        return [statement for _, statement in self.seen]


async def _traced(db: _Database) -> _Trace:
    def install(conn: sqlite3.Connection) -> _Trace:
        trace = _Trace(conn)
        conn.set_trace_callback(trace)
        return trace

    trace = await db.run(install)
    await eventually(lambda: not db._draining)
    trace.seen.clear()
    return trace


@pytest.mark.parametrize(("level", "value"), [("full", 2), ("extra", 3), ("normal", 1)])
async def test_a_take_commits_without_an_fsync_and_leaves_the_setting(
    tmp_path: Path, level: str, value: int
) -> None:
    """A take's own transaction runs with synchronous=NORMAL (no fsync of its commit in WAL
    mode); the connection syncs as its URL says after it, and the take is committed."""
    path = tmp_path / "db.sqlite"
    async with _opened(f"sqlite:///{path}?synchronous={level}") as store:
        trace = await _traced(store._db)
        grant = await store.rate_limits.take(
            "sender", tokens=1, rate=1.0, burst=5.0, max_wait=0.0, now=NOW
        )
        assert grant.granted
        statements = trace.statements()
        assert "BEGIN IMMEDIATE" in statements
        assert "COMMIT" in statements
        begin, commit = statements.index("BEGIN IMMEDIATE"), statements.index("COMMIT")
        if level == "normal":
            assert not any("synchronous" in s for s in statements)
        else:
            assert statements[begin - 1] == "PRAGMA synchronous = NORMAL"
            assert statements[commit + 1] == f"PRAGMA synchronous = {level.upper()}"
        synchronous = await store._db.run(
            lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]
        )
        assert synchronous == value
        with closing(sqlite3.connect(path)) as other:
            (tokens,) = other.execute(
                "SELECT tokens FROM antifragile_rate_limits WHERE key = 'sender'"
            ).fetchone()
        assert tokens == 4.0


async def test_shared_writes_share_one_commit_across_the_operations_between_them(
    tmp_path: Path,
) -> None:
    """Shared writes that wait with reads and lone writes between them commit together, once;
    the others run alone, outside the shared transaction, and every caller gets its answer."""
    async with _opened(f"sqlite:///{tmp_path / 'db.sqlite'}") as store:
        db: _Database = store._db
        await store.kv.set("lone", 0, now=NOW)
        trace = await _traced(db)

        def shared(conn: sqlite3.Connection, key: str) -> str:
            with _immediate(conn):
                conn.execute(
                    "INSERT INTO antifragile_kv (key, value, version) VALUES (?, '1', 1)", (key,)
                )
            return key

        def read(conn: sqlite3.Connection, key: str) -> int:
            return len(
                conn.execute("SELECT 1 FROM antifragile_kv WHERE key = ?", (key,)).fetchall()
            )

        async with _held(db) as holding:
            waiting = [
                asyncio.ensure_future(db.run_shared(shared, "a")),
                asyncio.ensure_future(db.run(read, "lone")),
                asyncio.ensure_future(db.run_shared(shared, "b")),
                asyncio.ensure_future(store.kv.set("lone", 1, now=NOW)),
                asyncio.ensure_future(db.run_shared(shared, "c")),
                asyncio.ensure_future(db.run(read, "a")),
            ]
            await eventually(lambda: len(db._pending) == len(waiting))
            trace.seen.clear()
        await holding
        results = await asyncio.gather(*waiting)
        assert results[0] == "a"
        assert results[2] == "b"
        assert results[4] == "c"
        assert results[1] == 1
        assert results[5] == 1  # after the group's commit: it sees "a"
        statements = trace.statements()
        assert statements.count("BEGIN IMMEDIATE") == 1  # the group; the kv set is one statement
        assert statements.count("COMMIT") == 1
        in_group = [s for open_, s in trace.seen if open_ and "SELECT 1 FROM" in s]
        assert in_group == []  # no read inside the shared transaction
