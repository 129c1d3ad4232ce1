"""Migrations: loading numbered SQL files, planning what to apply, splitting statements, and the
schema the SQLite migrations build."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from antifragile import ConfigurationError, SchemaVersionError
from antifragile.stores import _migrations
from antifragile.stores._migrations import (
    Migration,
    latest_version,
    load_migrations,
    plan,
    split_statements,
)

A = Migration(1, "first", "CREATE TABLE a (x INTEGER);")
B = Migration(2, "second", "CREATE TABLE b (x INTEGER);")
C = Migration(3, "third", "CREATE TABLE c (x INTEGER);")


@pytest.fixture
def sql_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake package folder: migrations are loaded from ``tmp_path/sql/fake``."""
    monkeypatch.setattr(_migrations, "files", lambda package: tmp_path)
    folder = tmp_path / "sql" / "fake"
    folder.mkdir(parents=True)
    return folder


# -- load -------------------------------------------------------------------------------------


def test_load_orders_by_number_and_reads_names_and_sql(sql_folder: Path) -> None:
    """Files named NNNN_name.sql load in numeric order with their number, name and text."""
    (sql_folder / "0002_add_jobs.sql").write_text("CREATE TABLE jobs (id INTEGER);\n")
    (sql_folder / "0001_state.sql").write_text("CREATE TABLE kv (k TEXT);\n")
    loaded = load_migrations("fake")
    assert [(m.version, m.name) for m in loaded] == [(1, "state"), (2, "add_jobs")]
    assert loaded[1].sql == "CREATE TABLE jobs (id INTEGER);\n"
    assert latest_version("fake") == 2


def test_load_ignores_files_that_are_not_migrations(sql_folder: Path) -> None:
    """README files, other extensions and malformed names are not migrations."""
    (sql_folder / "0001_state.sql").write_text("SELECT 1;")
    for name in ("README.md", "1_short.sql", "0002_Upper.sql", "0003-dash.sql", "0004_x.txt"):
        (sql_folder / name).write_text("SELECT 1;")
    assert [m.version for m in load_migrations("fake")] == [1]


def test_load_of_an_empty_folder_is_empty(sql_folder: Path) -> None:
    """A dialect without migrations has none, and latest version 0."""
    assert load_migrations("fake") == []
    assert latest_version("fake") == 0


def test_load_refuses_a_gap_in_the_numbers(sql_folder: Path) -> None:
    """Migrations must be numbered 1..n: a missing number is a ConfigurationError."""
    (sql_folder / "0001_a.sql").write_text("SELECT 1;")
    (sql_folder / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(ConfigurationError, match=r"1\.\.n"):
        load_migrations("fake")


def test_load_refuses_a_number_used_twice(sql_folder: Path) -> None:
    """Two migrations with the same number are a ConfigurationError."""
    (sql_folder / "0001_a.sql").write_text("SELECT 1;")
    (sql_folder / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(ConfigurationError):
        load_migrations("fake")


def test_load_refuses_numbering_from_zero(sql_folder: Path) -> None:
    """Numbering starts at 1."""
    (sql_folder / "0000_zero.sql").write_text("SELECT 1;")
    with pytest.raises(ConfigurationError):
        load_migrations("fake")


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_shipped_migrations_load(dialect: str) -> None:
    """Each dialect ships migrations numbered from 1, the first named ``state``."""
    loaded = load_migrations(dialect)
    assert loaded
    assert loaded[0].version == 1
    assert loaded[0].name == "state"
    assert all(split_statements(m.sql) for m in loaded)


# -- plan -------------------------------------------------------------------------------------


def test_plan_of_an_empty_database_is_everything() -> None:
    """Nothing applied: every migration, in order."""
    assert plan(set(), [A, B, C]) == [A, B, C]


def test_plan_applies_only_what_is_missing() -> None:
    """Applied versions are skipped; the rest keep their order."""
    assert plan({1}, [A, B, C]) == [B, C]
    assert plan([1, 2, 3], [A, B, C]) == []
    assert plan({2}, [A, B, C]) == [A, C]


def test_plan_refuses_a_schema_newer_than_this_release() -> None:
    """An applied version this release does not know raises SchemaVersionError, naming both
    versions."""
    with pytest.raises(SchemaVersionError, match=r"999.*\(3\)"):
        plan({1, 2, 3, 999}, [A, B, C])
    with pytest.raises(SchemaVersionError):
        plan({1}, [])


def test_schema_version_error_is_a_configuration_error() -> None:
    """SchemaVersionError is a ConfigurationError (a misuse, not retryable)."""
    with pytest.raises(ConfigurationError) as caught:
        plan({4}, [A])
    assert caught.value.retryable is False


# -- split_statements -------------------------------------------------------------------------


def test_split_on_semicolons_at_line_ends() -> None:
    """Statements end with ``;`` at the end of a line; multi-line statements stay whole."""
    sql = "CREATE TABLE a (\n    x INTEGER\n);\nCREATE INDEX a_x ON a (x);\n"
    assert split_statements(sql) == [
        "CREATE TABLE a (\n    x INTEGER\n);",
        "CREATE INDEX a_x ON a (x);",
    ]


def test_split_skips_comment_lines_between_statements() -> None:
    """Comment lines before a statement are dropped, even with a ``;`` inside them."""
    sql = "-- header; with a semicolon\n\n-- more\nSELECT 1;\n\n-- trailing comment\n"
    assert split_statements(sql) == ["SELECT 1;"]


def test_split_keeps_comments_inside_a_statement() -> None:
    """A comment line within a statement stays part of it."""
    sql = "CREATE TABLE a (\n    -- the id\n    id INTEGER\n);"
    assert split_statements(sql) == [sql]


def test_split_keeps_a_last_statement_without_semicolon() -> None:
    """A final statement with no ``;`` is still a statement."""
    assert split_statements("SELECT 1;\nSELECT 2") == ["SELECT 1;", "SELECT 2"]


def test_split_drops_empty_statements() -> None:
    """Lone semicolons and blank text give no statements."""
    assert split_statements(";\n\n  ;\n") == []
    assert split_statements("") == []


def test_split_keeps_dollar_quoted_bodies_whole() -> None:
    """Semicolons inside a ``$$ ... $$`` body do not end the statement."""
    sql = (
        "CREATE FUNCTION f() RETURNS trigger AS $$\n"
        "BEGIN\n"
        "    NEW.x := 1;\n"
        "    RETURN NEW;\n"
        "END;\n"
        "$$ LANGUAGE plpgsql;\n"
        "SELECT 1;\n"
    )
    statements = split_statements(sql)
    assert len(statements) == 2
    assert statements[0].startswith("CREATE FUNCTION")
    assert statements[0].endswith("$$ LANGUAGE plpgsql;")
    assert statements[1] == "SELECT 1;"


# -- the SQLite schema ------------------------------------------------------------------------

EXPECTED_SQLITE_SCHEMA = {
    "antifragile_migrations": ["version", "name", "applied_at"],
    "antifragile_kv": ["key", "value", "version", "expires_at"],
    "antifragile_idempotency": [
        "key",
        "status",
        "owner",
        "fingerprint",
        "result",
        "created_at",
        "expires_at",
    ],
    "antifragile_leases": ["name", "owner", "token", "expires_at"],
    "antifragile_rate_limits": ["key", "tokens", "stamp"],
    "antifragile_breakers": [
        "name",
        "state",
        "generation",
        "open_until",
        "consecutive_opens",
        "probes_left",
        "writer",
    ],
    "antifragile_breaker_windows": ["name", "second", "calls", "failures", "slow"],
    "antifragile_jobs": [
        "id",
        "name",
        "queue",
        "state",
        "priority",
        "payload",
        "payload_version",
        "idempotency_key",
        "attempts",
        "max_attempts",
        "run_at",
        "created_at",
        "updated_at",
        "provider",
        "timeout",
        "lease_owner",
        "lease_until",
        "first_failed_at",
        "last_failed_at",
        "last_error_code",
        "last_error",
        "history",
        "result",
        "resolution",
        "status_flag",
        "state_data",
        "context",
        "ordering_key",
        "ordering_seq",
    ],
    "antifragile_inbox": [
        "id",
        "channel",
        "event_id",
        "kind",
        "tenant_key",
        "payload",
        "received_at",
        "expires_at",
        "job_id",
        "request_id",
    ],
    "antifragile_processes": [
        "id",
        "kind",
        "host",
        "pid",
        "queues",
        "started_at",
        "last_seen",
    ],
}
EXPECTED_SQLITE_INDEXES = {
    "antifragile_kv_expires_at",
    "antifragile_idempotency_expires_at",
    "antifragile_jobs_idempotency_key",
    "antifragile_jobs_claim_queue",
    "antifragile_jobs_leases",
    "antifragile_jobs_finished",
    "antifragile_jobs_dead_queue",
    "antifragile_jobs_dead_provider",
    "antifragile_jobs_dead_error_code",
    "antifragile_jobs_ordering_open",
    "antifragile_jobs_ordering_seq",
    "antifragile_inbox_expires_at",
    "antifragile_inbox_received",
    "antifragile_processes_last_seen",
}


async def test_sqlite_migrations_build_the_expected_schema(tmp_path: Path) -> None:
    """All SQLite migrations applied to an empty database give exactly the expected tables,
    columns and indexes, and record every version."""
    from antifragile.stores._sqlite import SQLiteStore

    db = tmp_path / "schema.db"
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    await store.close()
    with closing(sqlite3.connect(db)) as raw:
        tables = {
            row[0]
            for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith("sqlite_")
        }
        columns = {
            table: [row[1] for row in raw.execute(f"PRAGMA table_info({table})")]
            for table in tables
        }
        indexes = {
            row[0]
            for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            if not row[0].startswith("sqlite_autoindex")
        }
        versions = [row[0] for row in raw.execute("SELECT version FROM antifragile_migrations")]
    assert columns == EXPECTED_SQLITE_SCHEMA
    assert indexes == EXPECTED_SQLITE_INDEXES
    assert versions == [m.version for m in load_migrations("sqlite")]


async def test_sqlite_migrations_each_apply_in_order_on_a_raw_connection(tmp_path: Path) -> None:
    """Every SQLite migration's statements run, in order, on a plain sqlite3 connection."""
    with closing(sqlite3.connect(tmp_path / "raw.db")) as raw:
        for migration in plan(set(), load_migrations("sqlite")):
            for statement in split_statements(migration.sql):
                raw.execute(statement)


def test_the_jobs_table_has_a_column_per_job_field() -> None:
    """antifragile_jobs mirrors jobs.Job: one column per field, in the same order."""
    from dataclasses import fields

    from antifragile.jobs import Job

    assert EXPECTED_SQLITE_SCHEMA["antifragile_jobs"] == [f.name for f in fields(Job)]


def test_the_inbox_table_has_a_column_per_inbox_entry_field() -> None:
    """antifragile_inbox mirrors jobs.InboxEntry: one column per field, in the same order."""
    from dataclasses import fields

    from antifragile.jobs import InboxEntry

    assert EXPECTED_SQLITE_SCHEMA["antifragile_inbox"] == [f.name for f in fields(InboxEntry)]


def _database_at(path: Path, version: int) -> sqlite3.Connection:
    """A connection to a new SQLite database at *path* migrated to schema *version* (the
    shipped migrations up to it, recorded as applied), as an older release left it."""
    raw = sqlite3.connect(path)
    raw.execute(
        "CREATE TABLE antifragile_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    for migration in load_migrations("sqlite")[:version]:
        for statement in split_statements(migration.sql):
            raw.execute(statement)
        raw.execute(
            "INSERT INTO antifragile_migrations VALUES (?, ?, 0)",
            (migration.version, migration.name),
        )
    return raw


async def test_jobs_written_before_the_context_column_read_back_with_an_empty_context(
    tmp_path: Path,
) -> None:
    """A database at schema version 3 with a job in it upgrades to the latest version when a
    store opens it; the old job reads back (and is claimed) with an empty context."""
    from antifragile.jobs._sqlite import SQLiteJobQueue
    from antifragile.stores._sqlite import SQLiteStore

    db = tmp_path / "v3.db"
    with closing(_database_at(db, 3)) as raw:
        raw.execute(
            "INSERT INTO antifragile_jobs (id, name, queue, state, payload, max_attempts, run_at,"
            " created_at, updated_at) VALUES ('old', 'noop', 'default', 'queued', '{}', 3, 0, 0, 0)"
        )
        raw.commit()
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    try:
        assert await store.schema_version() == latest_version("sqlite")
        queue = SQLiteJobQueue(store)
        old = await queue.get("old")
        assert old is not None
        assert old.context == {}
        [claimed] = await queue.claim(worker="w", limit=1, lease=30.0, now=1.0)
        assert claimed.context == {}
    finally:
        await store.close()


async def test_jobs_written_before_ordering_keys_run_unordered_beside_keyed_ones(
    tmp_path: Path,
) -> None:
    """A database at schema version 4 with a job in it upgrades to the latest version; the old
    job has no ordering key and is claimed together with the first job of a new key."""
    from antifragile.jobs import NewJob
    from antifragile.jobs._sqlite import SQLiteJobQueue
    from antifragile.stores._sqlite import SQLiteStore

    db = tmp_path / "v4.db"
    with closing(_database_at(db, 4)) as raw:
        raw.execute(
            "INSERT INTO antifragile_jobs (id, name, queue, state, payload, max_attempts, run_at,"
            " created_at, updated_at) VALUES ('old', 'noop', 'default', 'queued', '{}', 3, 0, 0, 0)"
        )
        raw.commit()
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    try:
        assert await store.schema_version() == latest_version("sqlite")
        queue = SQLiteJobQueue(store)
        new = [
            NewJob("noop", "default", {}, run_at=0.0, max_attempts=3, id=f"k{n}", ordering_key="k")
            for n in range(2)
        ]
        await queue.enqueue(new, now=1.0)
        claimed = await queue.claim(worker="w", limit=5, lease=30.0, now=1.0)
        assert sorted((j.id, j.ordering_key, j.ordering_seq) for j in claimed) == [
            ("k0", "k", 1),
            ("old", None, None),
        ]
    finally:
        await store.close()


async def test_jobs_of_a_version_6_database_are_claimed_from_any_queue_in_order(
    tmp_path: Path,
) -> None:
    """A populated database at schema version 6 (with the any-queue claim index) upgrades to
    the latest version, which drops that index and keeps every row; a claim from any queue
    id), and no running, scheduled or finished one."""
    from antifragile.jobs import JobFilter
    from antifragile.jobs._sqlite import SQLiteJobQueue
    from antifragile.stores._sqlite import SQLiteStore

    db = tmp_path / "v6.db"
    with closing(_database_at(db, 6)) as raw:
        jobs = [  # (id, queue, state, priority, run_at)
            ("a1", "alpha", "queued", 0, 3.0),
            ("a2", "alpha", "retrying", 5, 4.0),
            ("a3", "alpha", "scheduled", 9, 50.0),  # not due yet
            ("b1", "beta", "queued", 0, 1.0),
            ("b2", "beta", "running", 9, 0.0),  # leased until 100
            ("b3", "beta", "queued", 0, 2.0),
            ("c1", "gamma", "succeeded", 9, 0.0),
            ("c2", "gamma", "scheduled", 1, 5.0),  # due at 5
        ]
        raw.executemany(
            "INSERT INTO antifragile_jobs (id, name, queue, state, priority, payload,"
            " max_attempts, run_at, created_at, updated_at, lease_owner, lease_until)"
            " VALUES (?, 'noop', ?, ?, ?, '{}', 3, ?, 0, 0,"
            " CASE WHEN ?3 = 'running' THEN 'w0' END, CASE WHEN ?3 = 'running' THEN 100 END)",
            jobs,
        )
        raw.commit()
        indexes_before = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    assert "antifragile_jobs_claim_any" in indexes_before
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    try:
        assert await store.schema_version() == latest_version("sqlite")
        queue = SQLiteJobQueue(store)
        first = await queue.claim(worker="w", limit=2, lease=30.0, now=10.0)
        rest = await queue.claim(worker="w", limit=10, lease=30.0, now=10.0)
        ordered = sorted(first, key=lambda j: (-j.priority, j.run_at, j.id))
        assert [j.id for j in ordered] == ["a2", "c2"]
        assert sorted(j.id for j in rest) == ["a1", "b1", "b3"]
        assert {j.id for j in await queue.find(JobFilter(), limit=100)} == {j[0] for j in jobs}
    finally:
        await store.close()
    with closing(sqlite3.connect(db)) as raw:
        indexes_after = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    assert indexes_after == indexes_before - {"antifragile_jobs_claim_any"}
