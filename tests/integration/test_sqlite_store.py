"""The SQLite backend on real files: several processes, migrations, pragmas and failures."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from antifragile import (
    ConfigurationError,
    FakeClock,
    SchemaVersionError,
    StoreError,
    StoreUnavailableError,
)
from antifragile.stores import BreakerRecord, open_store
from antifragile.stores._migrations import latest_version
from antifragile.stores._sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[2]


def url_of(path: Path, query: str = "") -> str:
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


async def opened(path: Path, query: str = "", **options: Any) -> SQLiteStore:
    store = SQLiteStore(url_of(path, query), clock=FakeClock(), **options)
    await store.open()
    return store


def pragma(store: SQLiteStore, name: str) -> Any:
    async def read() -> Any:
        return await store._db.run(lambda conn: conn.execute(f"PRAGMA {name}").fetchone()[0])

    return read()


# -- several processes ----------------------------------------------------------------------


def test_three_processes_get_exactly_once_outcomes(tmp_path: Path) -> None:
    """3 OS processes hammering one file: no lost CAS increment, each claim won once, one
    lease holder, rate-limit waits spaced exactly across processes, every merge kept."""
    db = tmp_path / "shared.db"
    rounds = 30
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration._sqlite_hammer",
                str(db),
                f"p{i}",
                str(rounds),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
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
        results: list[dict[str, Any]] = []
        for worker in workers:
            out, err = worker.communicate(timeout=60)
            assert worker.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    versions = sorted(v for r in results for v in r["versions"])
    assert versions == list(range(1, 3 * rounds + 1))
    claims = Counter(k for r in results for k in r["claims"])
    assert set(claims) == {f"claim-{i}" for i in range(rounds)}
    assert set(claims.values()) == {1}
    holders = [r for r in results if r["tokens"]]
    assert len(holders) == 1
    assert set(holders[0]["tokens"]) == {1}
    waits = sorted(w for r in results for w in r["waits"])
    assert waits == [pytest.approx(max(0, i - 4) / 10, abs=1e-6) for i in range(3 * rounds)]

    async def check() -> None:
        store = await opened(db)
        try:
            now = 1_700_000_000.0
            counter = await store.kv.get("counter", now=now)
            assert counter is not None
            assert (counter.value, counter.version) == (3 * rounds, 3 * rounds)
            flags = await store.kv.get("flags", now=now)
            assert flags is not None
            assert len(flags.value) == 3 * (rounds // 2)
            assert flags.version == 3 * (rounds // 2)
            totals = await store.breakers.add_outcomes(
                "shared", second=int(now), calls=0, failures=0, slow=0, window=10
            )
            assert totals.calls == 3 * (rounds // 2)
        finally:
            await store.close()

    asyncio.run(check())


async def test_two_connections_in_one_process_share_atomically(tmp_path: Path) -> None:
    """Two stores (two connections, two threads) on one file: concurrent CAS has one winner."""
    db = tmp_path / "two.db"
    first, second = await opened(db), await opened(db)
    try:
        now = 1_700_000_000.0
        await first.kv.set("k", 0, now=now)
        results = await asyncio.gather(
            *(
                store.kv.compare_and_set("k", i, expected_version=1, now=now)
                for i in range(20)
                for store in (first, second)
            )
        )
        assert sum(r is not None for r in results) == 1
        claims = await asyncio.gather(
            *(
                store.idempotency.claim("c", owner=f"o{i}", now=now, ttl=60)
                for i in range(20)
                for store in (first, second)
            )
        )
        assert sum(c.acquired for c in claims) == 1
    finally:
        await first.close()
        await second.close()


async def test_stores_opening_a_new_file_together_migrate_once(tmp_path: Path) -> None:
    """Several stores opening the same new file at once all succeed; each migration runs once."""
    db = tmp_path / "race.db"
    stores = [SQLiteStore(url_of(db)) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        with closing(sqlite3.connect(db)) as raw:
            rows = raw.execute("SELECT version FROM antifragile_migrations").fetchall()
        assert sorted(r[0] for r in rows) == list(range(1, latest_version("sqlite") + 1))
    finally:
        for s in stores:
            await s.close()


# -- migrations -------------------------------------------------------------------------------


async def test_open_migrates_a_new_database(tmp_path: Path) -> None:
    """open() creates the schema; schema_version is the newest migration; migrate() is then a
    no-op."""
    store = await opened(tmp_path / "new.db")
    try:
        assert await store.schema_version() == latest_version("sqlite")
        assert await store.migrate() == []
    finally:
        await store.close()


async def test_a_newer_schema_is_refused_on_open(tmp_path: Path) -> None:
    """A database migrated by a newer antifragile (version 999 recorded) fails open() with
    SchemaVersionError, with or without migrate."""
    db = tmp_path / "future.db"
    store = await opened(db)
    await store.close()
    with closing(sqlite3.connect(db)) as raw:
        raw.execute("INSERT INTO antifragile_migrations VALUES (999, 'from_the_future', 0)")
        raw.commit()
    for migrate in (True, False):
        later = SQLiteStore(url_of(db), migrate=migrate)
        with pytest.raises(SchemaVersionError, match="999"):
            await later.open()
        await later.close()


async def test_without_migrate_open_leaves_the_schema_to_migrate(tmp_path: Path) -> None:
    """migrate=False opens a new database without migrating it; operations then say to run
    `antifragile migrate`; migrate() applies every migration and reports them."""
    store = await opened(tmp_path / "manual.db", migrate=False)
    try:
        assert await store.schema_version() == 0
        with pytest.raises(StoreError, match="antifragile migrate"):
            await store.kv.get("k", now=1.0)
        assert await store.migrate() == list(range(1, latest_version("sqlite") + 1))
        assert await store.schema_version() == latest_version("sqlite")
        assert await store.kv.get("k", now=1.0) is None
    finally:
        await store.close()


async def test_concurrent_open_calls_open_once(tmp_path: Path) -> None:
    """open() called by several tasks at once connects once; a later open() does nothing."""
    store = SQLiteStore(url_of(tmp_path / "once.db"))
    await asyncio.gather(*(store.open() for _ in range(5)))
    try:
        first = store._db._conn
        await store.open()
        assert store._db._conn is first
        assert (await store.kv.set("k", 1, now=1.0)).version == 1
    finally:
        await store.close()


# -- connection settings ----------------------------------------------------------------------


async def test_default_pragmas(tmp_path: Path) -> None:
    """By default: WAL journal, synchronous FULL, busy_timeout 5000 ms, foreign keys on."""
    store = await opened(tmp_path / "p.db")
    try:
        assert store.journal_mode == "wal"
        assert await pragma(store, "journal_mode") == "wal"
        assert await pragma(store, "synchronous") == 2  # FULL
        assert await pragma(store, "busy_timeout") == 5000
        assert await pragma(store, "foreign_keys") == 1
        assert store.busy_timeout == 5.0
    finally:
        await store.close()


async def test_url_options_set_the_pragmas(tmp_path: Path) -> None:
    """?synchronous=normal&busy_timeout=250 are applied to the connection."""
    store = await opened(tmp_path / "p.db", "synchronous=normal&busy_timeout=250")
    try:
        assert await pragma(store, "synchronous") == 1  # NORMAL
        assert await pragma(store, "busy_timeout") == 250
    finally:
        await store.close()


async def test_a_lock_held_beyond_busy_timeout_is_store_unavailable(tmp_path: Path) -> None:
    """When another connection keeps the write lock past busy_timeout, the operation raises
    StoreUnavailableError naming the file and the timeout; it works again once released."""
    db = tmp_path / "locked.db"
    store = await opened(db, "busy_timeout=20")
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError, match="busy_timeout=20") as caught:
            await store.kv.set("k", 1, now=1.0)
        assert str(db) in str(caught.value)
        assert caught.value.retryable
        blocker.execute("ROLLBACK")
        assert (await store.kv.set("k", 1, now=1.0)).version == 1
    finally:
        blocker.close()
        await store.close()


# -- unusable paths ---------------------------------------------------------------------------


async def test_a_missing_directory_is_store_unavailable(tmp_path: Path) -> None:
    """A path in a directory that does not exist fails open() naming the path and directory."""
    path = tmp_path / "missing" / "state.db"
    store = SQLiteStore(url_of(path))
    with pytest.raises(StoreUnavailableError, match="does not exist") as caught:
        await store.open()
    assert str(path) in str(caught.value)


async def test_a_directory_as_database_is_store_unavailable(tmp_path: Path) -> None:
    """A path that is a directory fails open() naming it."""
    store = SQLiteStore(url_of(tmp_path))
    with pytest.raises(StoreUnavailableError, match="directory") as caught:
        await store.open()
    assert str(tmp_path) in str(caught.value)


async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    """A file with other content fails open() with a StoreError naming the path; retrying
    would not help, so it is not retryable."""
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not a database, just some text " * 100)
    store = SQLiteStore(url_of(path))
    with pytest.raises(StoreError, match="not a database") as caught:
        await store.open()
    assert str(path) in str(caught.value)
    assert caught.value.retryable is False


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anyway")
async def test_a_read_only_file_is_store_unavailable(tmp_path: Path) -> None:
    """A database file that cannot be written fails open() naming the path."""
    path = tmp_path / "ro.db"
    store = await opened(path)
    await store.close()
    os.chmod(path, 0o444)
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await SQLiteStore(url_of(path)).open()
        assert str(path) in str(caught.value)
    finally:
        os.chmod(tmp_path, 0o755)
        os.chmod(path, 0o644)


# -- lifecycle --------------------------------------------------------------------------------


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    """Everything written is there after closing and opening the file again."""
    db = tmp_path / "durable.db"
    now = 1_700_000_000.0
    store = await opened(db)
    await store.kv.set("k", {"a": 1}, now=now)
    await store.idempotency.claim("c", owner="o", now=now, ttl=60)
    await store.leases.acquire("l", owner="o", now=now, ttl=60)
    record = BreakerRecord("b", "open", 1, now + 30, 1, 0)
    await store.breakers.compare_and_set(BreakerRecord("b"), record)
    await store.close()
    again = await opened(db)
    try:
        assert (await again.kv.get("k", now=now)) is not None
        assert (await again.idempotency.get("c", now=now)) is not None
        assert (await again.leases.holder("l", now=now)) is not None
        assert await again.breakers.load("b") == record
    finally:
        await again.close()


async def test_use_before_open_and_after_close(tmp_path: Path) -> None:
    """An operation before open() is a ConfigurationError; after close() the store is
    unavailable."""
    store = SQLiteStore(url_of(tmp_path / "life.db"))
    with pytest.raises(ConfigurationError, match="not open"):
        await store.kv.get("k", now=1.0)
    await store.open()
    await store.close()
    with pytest.raises(StoreUnavailableError, match="closed"):
        await store.kv.get("k", now=1.0)


async def test_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///state.db is the file state.db in the current directory."""
    monkeypatch.chdir(tmp_path)
    store = await open_store("sqlite:///state.db")
    await store.close()
    assert (tmp_path / "state.db").is_file()


async def test_in_memory_database(tmp_path: Path) -> None:
    """sqlite:///:memory: works, for the life of the store."""
    store = await open_store("sqlite:///:memory:")
    try:
        assert (await store.kv.set("k", 1, now=1.0)).version == 1
        assert await store.ping() >= 0
    finally:
        await store.close()


async def test_purge_expired_deletes_only_expired_rows(tmp_path: Path) -> None:
    """purge_expired removes key-value and idempotency rows expired at now, nothing live."""
    store = await opened(tmp_path / "purge.db")
    try:
        now = 1_700_000_000.0
        await store.kv.set("gone", 1, now=now, ttl=5)
        await store.kv.set("kept", 1, now=now, ttl=50)
        await store.kv.set("forever", 1, now=now)
        await store.idempotency.claim("gone", owner="o", now=now, ttl=5)
        await store.idempotency.claim("kept", owner="o", now=now, ttl=50)
        assert await store.purge_expired(now=now + 5) == 2
        assert [v.key for v in await store.kv.scan("", now=now)] == ["forever", "kept"]
        assert await store.idempotency.get("kept", now=now) is not None
    finally:
        await store.close()


async def test_a_cancelled_caller_leaves_the_store_consistent(tmp_path: Path) -> None:
    """Cancelling the awaiting task does not cancel the transaction: it completes whole, and
    the store keeps working."""
    store = await opened(tmp_path / "cancel.db")
    try:
        now = 1_700_000_000.0
        task = asyncio.ensure_future(store.kv.merge("k", {"a": 1}, now=now))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        merged = await store.kv.merge("k", {"b": 2}, now=now)
        assert merged.value in ({"a": 1, "b": 2}, {"b": 2})
        assert merged.version == len(merged.value)
    finally:
        await store.close()


async def test_a_read_only_database_error_reads_as_not_writable(tmp_path: Path) -> None:
    """A real SQLITE_READONLY failure becomes StoreUnavailableError saying the file is not
    writable (works as root too, where file permissions do not stop writes)."""
    path = tmp_path / "ro.db"
    store = await opened(path)
    await store.close()
    with (
        closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as raw,
        pytest.raises(sqlite3.OperationalError) as caught,
    ):
        raw.execute("INSERT INTO antifragile_kv VALUES ('k', '1', 1, NULL)")
    error = store._db.translate(caught.value)
    assert isinstance(error, StoreUnavailableError)
    assert "not writable" in str(error)
    assert str(path) in str(error)
