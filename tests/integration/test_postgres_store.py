"""PostgresStore against a real PostgreSQL: migrations, several OS processes, failures.

The contract suite (tests/contract) proves the operations' semantics on every backend; these
tests prove what only PostgreSQL has: the migration runner, atomicity across processes that
share nothing but the database, and how connection problems surface.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from antifragile import ConfigurationError, FakeClock, SchemaVersionError, StoreUnavailableError
from antifragile.stores import _postgres as postgres_module
from antifragile.stores import open_store
from antifragile.stores._migrations import load_migrations
from antifragile.stores._postgres import PostgresStore

SPAWN = multiprocessing.get_context("spawn")
PROCESSES = 4

EXPECTED_COLUMNS = {
    "antifragile_migrations": [
        ("version", "integer", "NO"),
        ("name", "text", "NO"),
        ("applied_at", "double precision", "NO"),
    ],
    "antifragile_kv": [
        ("key", "text", "NO"),
        ("value", "text", "NO"),
        ("version", "bigint", "NO"),
        ("expires_at", "double precision", "YES"),
    ],
    "antifragile_idempotency": [
        ("key", "text", "NO"),
        ("status", "text", "NO"),
        ("owner", "text", "YES"),
        ("fingerprint", "text", "YES"),
        ("result", "text", "YES"),
        ("created_at", "double precision", "NO"),
        ("expires_at", "double precision", "NO"),
    ],
    "antifragile_leases": [
        ("name", "text", "NO"),
        ("owner", "text", "YES"),
        ("token", "bigint", "NO"),
        ("expires_at", "double precision", "NO"),
    ],
    "antifragile_rate_limits": [
        ("key", "text", "NO"),
        ("tokens", "double precision", "NO"),
        ("stamp", "double precision", "NO"),
    ],
    "antifragile_breakers": [
        ("name", "text", "NO"),
        ("state", "text", "NO"),
        ("generation", "bigint", "NO"),
        ("open_until", "double precision", "NO"),
        ("consecutive_opens", "integer", "NO"),
        ("probes_left", "integer", "NO"),
        ("writer", "text", "NO"),
    ],
    "antifragile_breaker_windows": [
        ("name", "text", "NO"),
        ("second", "bigint", "NO"),
        ("calls", "bigint", "NO"),
        ("failures", "bigint", "NO"),
        ("slow", "bigint", "NO"),
    ],
    "antifragile_jobs": [
        ("id", "text", "NO"),
        ("name", "text", "NO"),
        ("queue", "text", "NO"),
        ("state", "text", "NO"),
        ("priority", "integer", "NO"),
        ("payload", "jsonb", "NO"),
        ("payload_version", "integer", "NO"),
        ("idempotency_key", "text", "YES"),
        ("attempts", "integer", "NO"),
        ("max_attempts", "integer", "NO"),
        ("run_at", "double precision", "NO"),
        ("created_at", "double precision", "NO"),
        ("updated_at", "double precision", "NO"),
        ("provider", "text", "YES"),
        ("timeout", "double precision", "YES"),
        ("lease_owner", "text", "YES"),
        ("lease_until", "double precision", "YES"),
        ("first_failed_at", "double precision", "YES"),
        ("last_failed_at", "double precision", "YES"),
        ("last_error_code", "text", "YES"),
        ("last_error", "text", "YES"),
        ("history", "jsonb", "NO"),
        ("result", "jsonb", "YES"),
        ("resolution", "text", "YES"),
        ("status_flag", "jsonb", "YES"),
        ("state_data", "jsonb", "YES"),
        ("context", "json", "YES"),
        ("ordering_key", "text", "YES"),
        ("ordering_seq", "bigint", "YES"),
    ],
    "antifragile_inbox": [
        ("id", "text", "NO"),
        ("channel", "text", "NO"),
        ("event_id", "text", "NO"),
        ("kind", "text", "NO"),
        ("tenant_key", "text", "NO"),
        ("payload", "json", "NO"),
        ("received_at", "double precision", "NO"),
        ("expires_at", "double precision", "NO"),
        ("job_id", "text", "YES"),
        ("request_id", "text", "YES"),
    ],
    "antifragile_processes": [
        ("id", "text", "NO"),
        ("kind", "text", "NO"),
        ("host", "text", "NO"),
        ("pid", "integer", "NO"),
        ("queues", "jsonb", "YES"),
        ("started_at", "double precision", "NO"),
        ("last_seen", "double precision", "NO"),
    ],
}

EXPECTED_PRIMARY_KEYS = {
    "antifragile_migrations": ["version"],
    "antifragile_kv": ["key"],
    "antifragile_idempotency": ["key"],
    "antifragile_leases": ["name"],
    "antifragile_rate_limits": ["key"],
    "antifragile_breakers": ["name"],
    "antifragile_breaker_windows": ["name", "second"],
    "antifragile_jobs": ["id"],
    "antifragile_inbox": ["id"],
    "antifragile_processes": ["id"],
}

# every index besides the primary keys: (table, index, is unique, partial predicate or None)
EXPECTED_INDEXES = {
    ("antifragile_kv", "antifragile_kv_expires_at", False, "(expires_at IS NOT NULL)"),
    ("antifragile_idempotency", "antifragile_idempotency_expires_at", False, None),
    ("antifragile_jobs", "antifragile_jobs_idempotency_key", True, None),
    (
        "antifragile_jobs",
        "antifragile_jobs_claim_queue",
        False,
        "(state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'retrying'::text]))",
    ),
    (
        "antifragile_jobs",
        "antifragile_jobs_claim_any",
        False,
        "(state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'retrying'::text]))",
    ),
    ("antifragile_jobs", "antifragile_jobs_leases", False, "(state = 'running'::text)"),
    (
        "antifragile_jobs",
        "antifragile_jobs_finished",
        False,
        "(state = ANY (ARRAY['succeeded'::text, 'dead'::text, 'resolved'::text]))",
    ),
    ("antifragile_jobs", "antifragile_jobs_dead_queue", False, "(state = 'dead'::text)"),
    ("antifragile_jobs", "antifragile_jobs_dead_name", False, "(state = 'dead'::text)"),
    ("antifragile_jobs", "antifragile_jobs_dead_provider", False, "(state = 'dead'::text)"),
    ("antifragile_jobs", "antifragile_jobs_dead_error_code", False, "(state = 'dead'::text)"),
    (
        "antifragile_jobs",
        "antifragile_jobs_ordering_open",
        False,
        "((ordering_key IS NOT NULL) AND (state = ANY (ARRAY['scheduled'::text, 'queued'::text,"
        " 'running'::text, 'retrying'::text])))",
    ),
    ("antifragile_inbox", "antifragile_inbox_event", True, None),
    ("antifragile_inbox", "antifragile_inbox_expires_at", False, None),
    ("antifragile_inbox", "antifragile_inbox_received", False, None),
    ("antifragile_processes", "antifragile_processes_last_seen", False, None),
}

#: every migration shipped for PostgreSQL, and what migrate() records for them
VERSIONS = [m.version for m in load_migrations("postgres")]
LATEST = VERSIONS[-1]


# -- fixtures and helpers ---------------------------------------------------------------------


def _admin_query(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query.encode(), params)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    """A schema name of this test's own, dropped afterwards whatever happened."""
    name = f"it_{uuid.uuid4().hex[:12]}"
    yield name
    _admin_query(postgres_url, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
async def migrated(postgres_url: str, schema: str) -> AsyncIterator[str]:
    """The schema, migrated and open in this process (for tests that spawn workers)."""
    store = PostgresStore(postgres_url, schema=schema)
    await store.open()
    try:
        yield schema
    finally:
        await store.close()


def _url_with(url: str, *, port: int | None = None, user: str | None = None, **query: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user or parts.username or 'postgres'}:s3cret-pw@{host}:{port or parts.port}"
    extra = "&".join(f"{k}={v}" for k, v in query.items())
    return urlunsplit((parts.scheme, netloc, parts.path, extra, ""))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- work done in other processes -------------------------------------------------------------


async def _job(url: str, schema: str, job: str, index: int, barrier: Any) -> Any:
    store = PostgresStore(url, schema=schema, max_size=10)
    if job == "migrate":
        barrier.wait(30)
        return await store.migrate()
    if job == "open":  # the first open of an empty schema migrates it
        barrier.wait(30)
        await store.open()
        await store.close()
        return await store.schema_version()
    await store.open()
    try:
        now = FakeClock().time()
        barrier.wait(30)  # start together, so the processes really contend
        if job == "claims":
            claims = await asyncio.gather(
                *(
                    store.idempotency.claim(f"k{k}", owner=f"p{index}", now=now, ttl=60)
                    for k in range(50)
                )
            )
            return [(c.record.key, c.acquired, c.record.owner) for c in claims]
        if job == "counter":
            for _ in range(25):
                while True:
                    current = await store.kv.get("counter", now=now)
                    assert current is not None
                    won = await store.kv.compare_and_set(
                        "counter", current.value + 1, expected_version=current.version, now=now
                    )
                    if won is not None:
                        break
            return None
        if job == "takes":
            grants = await asyncio.gather(
                *(
                    store.rate_limits.take(
                        "shared", tokens=1, rate=10, burst=10, max_wait=100, now=now
                    )
                    for _ in range(25)
                )
            )
            return [(g.granted, g.wait) for g in grants]
        if job == "lease":
            lease = await store.leases.acquire("scheduler", owner=f"p{index}", now=now, ttl=30)
            return None if lease is None else (lease.owner, lease.token)
        raise AssertionError(job)
    finally:
        await store.close()


def _run_job(url: str, schema: str, job: str, index: int, barrier: Any) -> Any:
    return asyncio.run(_job(url, schema, job, index, barrier))


@dataclass
class Workers:
    """Interpreter processes kept for the module (spawning them is the slow part)."""

    pool: ProcessPoolExecutor
    manager: Any

    def run(self, url: str, schema: str, job: str, count: int = PROCESSES) -> list[Any]:
        """Run *job* in *count* of the processes at once; their results, in order.

        Every job waits at a barrier of *count*, so no process can take two of them: they
        necessarily run in *count* different processes, and start together."""
        barrier = self.manager.Barrier(count)
        futures = [self.pool.submit(_run_job, url, schema, job, i, barrier) for i in range(count)]
        return [future.result(timeout=60) for future in futures]


@pytest.fixture(scope="module")
def workers(postgres_url: str) -> Iterator[Workers]:
    with SPAWN.Manager() as manager, ProcessPoolExecutor(PROCESSES, mp_context=SPAWN) as pool:
        yield Workers(pool, manager)


# -- migrations ---------------------------------------------------------------------------------


async def test_migrating_an_empty_schema_creates_exactly_the_expected_tables(
    postgres_url: str, schema: str
) -> None:
    """migrate() on a missing schema creates it with exactly the expected tables, columns,
    types, nullability, primary keys and indexes (the job table's partial ones included), and
    records every migration."""
    store = PostgresStore(postgres_url, schema=schema, clock=FakeClock())
    assert await store.schema_version() == 0
    assert await store.migrate() == VERSIONS
    assert await store.schema_version() == LATEST

    rows = _admin_query(
        postgres_url,
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = %s ORDER BY table_name, ordinal_position",
        (schema,),
    )
    found: dict[str, list[tuple[str, str, str]]] = {}
    for table, column, data_type, nullable in rows:
        found.setdefault(table, []).append((column, data_type, nullable))
    assert found == EXPECTED_COLUMNS

    keys = _admin_query(
        postgres_url,
        "SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc"
        " JOIN information_schema.key_column_usage kcu"
        "   ON kcu.constraint_schema = tc.constraint_schema"
        "  AND kcu.constraint_name = tc.constraint_name"
        " WHERE tc.table_schema = %s AND tc.constraint_type = 'PRIMARY KEY'"
        " ORDER BY tc.table_name, kcu.ordinal_position",
        (schema,),
    )
    primary: dict[str, list[str]] = {}
    for table, column in keys:
        primary.setdefault(table, []).append(column)
    assert primary == EXPECTED_PRIMARY_KEYS

    indexes = _admin_query(
        postgres_url,
        "SELECT t.relname, i.relname, x.indisunique, pg_get_expr(x.indpred, x.indrelid)"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
        " WHERE n.nspname = %s AND NOT x.indisprimary",
        (schema,),
    )
    assert set(indexes) == EXPECTED_INDEXES
    sequences = _admin_query(
        postgres_url,
        "SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = %s",
        (schema,),
    )
    assert sequences == [("antifragile_jobs_ordering_seq",)]

    recorded = _admin_query(
        postgres_url,
        f'SELECT version, name, applied_at FROM "{schema}".antifragile_migrations ORDER BY 1',
    )
    assert recorded == [
        (m.version, m.name, FakeClock().time()) for m in load_migrations("postgres")
    ]


async def test_migrating_again_applies_nothing(postgres_url: str, schema: str) -> None:
    """A second migrate() finds nothing pending and changes nothing."""
    store = PostgresStore(postgres_url, schema=schema)
    assert await store.migrate() == VERSIONS
    assert await store.migrate() == []
    count = _admin_query(postgres_url, f'SELECT count(*) FROM "{schema}".antifragile_migrations')
    assert count == [(len(VERSIONS),)]


async def test_a_schema_from_a_newer_release_is_refused(postgres_url: str, schema: str) -> None:
    """A recorded migration this release does not know makes open(), open(migrate=True) and
    migrate() raise SchemaVersionError, and migrate() applies nothing."""
    store = PostgresStore(postgres_url, schema=schema)
    await store.migrate()
    _admin_query(
        postgres_url,
        f'INSERT INTO "{schema}".antifragile_migrations VALUES (999, %s, 0)',
        ("from_the_future",),
    )
    with pytest.raises(SchemaVersionError, match="999"):
        await store.open()
    with pytest.raises(SchemaVersionError):
        await PostgresStore(postgres_url, schema=schema, migrate=True).open()
    with pytest.raises(SchemaVersionError):
        await store.migrate()
    assert await store.schema_version() == 999


async def test_open_migrates_a_schema_without_a_migrations_table(
    postgres_url: str, schema: str
) -> None:
    """open() with auto_migrate (the default) migrates a schema that has no migrations table."""
    store = await open_store(postgres_url, schema=schema)
    try:
        assert await store.schema_version() == LATEST  # type: ignore[attr-defined]
        assert await store.kv.get("anything", now=0.0) is None
    finally:
        await store.close()


async def test_open_without_auto_migrate_leaves_a_fresh_schema_alone(
    postgres_url: str, schema: str
) -> None:
    """With auto_migrate=False, open() of an unmigrated schema raises ConfigurationError
    naming the command to run, and creates nothing."""
    store = PostgresStore(postgres_url, schema=schema, auto_migrate=False)
    with pytest.raises(ConfigurationError, match="antifragile migrate"):
        await store.open()
    assert (
        _admin_query(postgres_url, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)) == []
    )


async def test_open_does_not_upgrade_a_managed_schema(postgres_url: str, schema: str) -> None:
    """A schema that has a migrations table but pending migrations is not migrated by open():
    it raises ConfigurationError (not SchemaVersionError); migrate=True upgrades it."""
    _admin_query(postgres_url, f'CREATE SCHEMA "{schema}"')
    _admin_query(
        postgres_url,
        f'CREATE TABLE "{schema}".antifragile_migrations (version INTEGER PRIMARY KEY,'
        " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)",
    )
    with pytest.raises(ConfigurationError, match="antifragile migrate") as raised:
        await PostgresStore(postgres_url, schema=schema).open()
    assert not isinstance(raised.value, SchemaVersionError)
    store = PostgresStore(postgres_url, schema=schema, migrate=True)
    await store.open()
    try:
        assert await store.schema_version() == LATEST
    finally:
        await store.close()


def test_processes_migrating_at_once_apply_each_migration_once(
    workers: Workers, postgres_url: str, schema: str
) -> None:
    """Four processes calling migrate() on the same empty schema at once all succeed, and
    every migration is applied (and recorded) exactly once."""
    applied = workers.run(postgres_url, schema, "migrate")
    assert sorted(v for versions in applied for v in versions) == VERSIONS
    recorded = _admin_query(
        postgres_url, f'SELECT version FROM "{schema}".antifragile_migrations ORDER BY 1'
    )
    assert recorded == [(v,) for v in VERSIONS]


def test_processes_opening_an_empty_schema_at_once_all_open(
    workers: Workers, postgres_url: str, schema: str
) -> None:
    """Four processes opening the same empty schema at once (a service's API and workers
    starting together) all open it: one migrates it, the others wait for the whole run instead
    of finding it half migrated."""
    versions = workers.run(postgres_url, schema, "open")
    assert versions == [VERSIONS[-1]] * len(versions)


# -- atomicity across processes -----------------------------------------------------------------


def test_claims_from_several_processes_have_one_acquirer_per_key(
    workers: Workers, postgres_url: str, migrated: str
) -> None:
    """4 processes x 50 concurrent claims of the same 50 keys: each key is acquired exactly
    once, and every claimant sees the acquirer as the owner."""
    results = workers.run(postgres_url, migrated, "claims")
    acquirers: dict[str, list[str]] = {}
    owners: dict[str, set[str]] = {}
    for claims in results:
        for key, acquired, owner in claims:
            owners.setdefault(key, set()).add(owner)
            if acquired:
                acquirers.setdefault(key, []).append(owner)
    assert sorted(acquirers) == sorted(f"k{k}" for k in range(50))
    assert all(len(who) == 1 for who in acquirers.values())
    assert all(owners[key] == set(who) for key, who in acquirers.items())


async def test_cas_increments_from_several_processes_lose_nothing(
    workers: Workers, postgres_url: str, migrated: str
) -> None:
    """4 processes x 25 read + compare_and_set increments of one counter: it ends at 100,
    version 101 -- no increment lost, none applied twice."""
    store = await open_store(postgres_url, schema=migrated)
    try:
        await store.kv.set("counter", 0, now=0.0)
        await asyncio.to_thread(workers.run, postgres_url, migrated, "counter")
        final = await store.kv.get("counter", now=0.0)
    finally:
        await store.close()
    assert final is not None
    assert (final.value, final.version) == (100, 101)


def test_takes_from_several_processes_are_spaced_exactly(
    workers: Workers, postgres_url: str, migrated: str
) -> None:
    """4 processes x 25 concurrent takes from one bucket (10/s, burst 10): all granted, and
    the waits are exactly 0 (ten times), then 0.1, 0.2 ... 9.0 -- no reservation shared."""
    results = workers.run(postgres_url, migrated, "takes")
    grants = [g for process in results for g in process]
    assert all(granted for granted, _ in grants)
    waits = sorted(wait for _, wait in grants)
    assert waits == [pytest.approx(max(0, i - 9) / 10, abs=1e-9) for i in range(100)]


def test_a_lease_contended_by_several_processes_has_one_holder(
    workers: Workers, postgres_url: str, migrated: str
) -> None:
    """4 processes acquiring one free lease at once: exactly one gets it, with token 1."""
    results = workers.run(postgres_url, migrated, "lease")
    holders = [r for r in results if r is not None]
    assert len(holders) == 1
    assert holders[0][1] == 1


# -- connection problems ------------------------------------------------------------------------


async def test_an_unreachable_port_raises_store_unavailable_quickly(postgres_url: str) -> None:
    """Nothing listening: open() raises StoreUnavailableError at once -- from the refused
    connection, not after waiting out connect_timeout (a minute here) -- naming host, port and
    database but never the password (which the store's url masks too)."""
    port = _free_port()
    store = PostgresStore(_url_with(postgres_url, port=port), schema="unused", connect_timeout=60)
    with pytest.raises(StoreUnavailableError) as raised:
        await store.open()
    message = str(raised.value)
    assert "Connection refused" in message
    assert f"127.0.0.1:{port}" in message
    assert "database 'test'" in message
    assert "s3cret-pw" not in message
    assert "s3cret-pw" not in store.url
    assert "s3cret-pw" not in repr(store)
    assert raised.value.retryable is True


async def test_a_server_that_never_answers_times_out(postgres_url: str) -> None:
    """A port that accepts TCP but never speaks: open() gives up after connect_timeout with
    StoreUnavailableError."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        store = PostgresStore(_url_with(postgres_url, port=port), connect_timeout=0.3)
        with pytest.raises(StoreUnavailableError, match=r"no answer within 0\.3s"):
            await store.open()


async def test_a_refused_login_raises_store_unavailable(postgres_url: str) -> None:
    """A role the server does not know: StoreUnavailableError naming the user and database,
    without the password."""
    store = PostgresStore(_url_with(postgres_url, user="no_such_role_af"), schema="unused")
    with pytest.raises(StoreUnavailableError) as raised:
        await store.open()
    assert "no_such_role_af" in str(raised.value)
    assert "database 'test'" in str(raised.value)
    assert "s3cret-pw" not in str(raised.value)


async def test_a_dropped_connection_surfaces_as_unavailable_then_recovers(
    postgres_url: str, schema: str
) -> None:
    """When the server ends the store's connection, the next operation raises
    StoreUnavailableError (retryable); the pool replaces the connection and the one after
    that succeeds."""
    app = f"af_{uuid.uuid4().hex[:8]}"
    url = _url_with(postgres_url, application_name=app)
    store = await open_store(url, schema=schema, min_size=1, max_size=1)
    try:
        await store.kv.set("k", 1, now=0.0)
        _admin_query(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        )
        with pytest.raises(StoreUnavailableError) as raised:
            await store.kv.get("k", now=0.0)
        assert raised.value.retryable
        got = await store.kv.get("k", now=0.0)
        assert got is not None
        assert got.value == 1
    finally:
        await store.close()


# -- collecting expired rows -------------------------------------------------------------------


def _row_counts(url: str, schema: str) -> tuple[int, int, int]:
    rows = _admin_query(
        url,
        f'SELECT (SELECT count(*) FROM "{schema}".antifragile_kv),'
        f' (SELECT count(*) FROM "{schema}".antifragile_idempotency),'
        f' (SELECT count(*) FROM "{schema}".antifragile_leases)',
    )
    return rows[0]


def _purging(store: PostgresStore) -> asyncio.Task[int] | None:
    """The store's background collection of expired rows, if one was started."""
    return store._db.purging


async def test_purge_expired_deletes_only_expired_rows(postgres_url: str, migrated: str) -> None:
    """purge_expired(now) deletes the key-value and idempotency rows expired at now, keeps
    live and permanent ones, and keeps lease rows (their tokens must keep growing)."""
    store = PostgresStore(postgres_url, schema=migrated)
    await store.open()
    try:
        await store.kv.set("gone", 1, now=0.0, ttl=5)
        await store.kv.set("live", 1, now=0.0, ttl=50)
        await store.kv.set("forever", 1, now=0.0)
        await store.idempotency.claim("gone", owner="w", now=0.0, ttl=5)
        await store.idempotency.claim("live", owner="w", now=0.0, ttl=50)
        await store.leases.acquire("old", owner="w", now=0.0, ttl=5)
        assert await store.purge_expired(now=10.0) == 2
        assert _row_counts(postgres_url, migrated) == (2, 1, 1)
        lease = await store.leases.acquire("old", owner="v", now=10.0, ttl=5)
        assert lease is not None
        assert lease.token == 2
    finally:
        await store.close()


async def test_a_take_commits_without_waiting_for_the_wal_flush(
    postgres_url: str, migrated: str
) -> None:
    """The take statement turns synchronous_commit off for its own transaction, whether it
    takes from the bucket or is refused by it; the connection's own setting is left as it was
    once the transaction ends; the store's takes grant and refuse as before."""
    store = PostgresStore(postgres_url, schema=migrated)
    await store.open()
    try:
        bucket = {"tokens": 1.0, "rate": 0.001, "burst": 1.0, "max_wait": 0.0}
        assert (await store.rate_limits.take("k", now=0.0, **bucket)).granted
        assert not (await store.rate_limits.take("k", now=0.0, **bucket)).granted
    finally:
        await store.close()
    params = {"key": "t", **bucket, "now": 0.0}
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(f'SET search_path TO "{migrated}"'.encode())
        await conn.execute("SET synchronous_commit TO on")
        for granted in (True, False):
            async with conn.transaction(force_rollback=True):
                cursor = await conn.execute(postgres_module.RATE_TAKE, params)
                row = await cursor.fetchone()
                assert row is not None
                assert row[2] is granted
                cursor = await conn.execute("SHOW synchronous_commit")
                assert await cursor.fetchone() == ("off",)
            if granted:  # taken for real, for the refusal that follows
                await conn.execute(postgres_module.RATE_TAKE, params)
            cursor = await conn.execute("SHOW synchronous_commit")
            assert await cursor.fetchone() == ("on",)


async def test_writes_collect_expired_rows_now_and_then(
    postgres_url: str, migrated: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every PURGE_EVERY writes the store deletes, in the background, the rows expired
    PURGE_GRACE seconds before the writer's now; what is visible does not change."""
    monkeypatch.setattr(postgres_module, "PURGE_EVERY", 4)
    monkeypatch.setattr(postgres_module, "PURGE_GRACE", 10.0)
    store = PostgresStore(postgres_url, schema=migrated)
    await store.open()
    try:
        await store.kv.set("a", 1, now=0.0, ttl=1)
        await store.kv.set("b", 1, now=0.0, ttl=15)
        await store.kv.set("c", 1, now=0.0)
        assert _purging(store) is None
        await store.kv.set("c", 2, now=20.0)  # the 4th write: rows expired by 10.0 go
        purging = _purging(store)
        assert purging is not None
        assert await purging == 1
        assert _row_counts(postgres_url, migrated)[0] == 2
        assert [v.key for v in await store.kv.scan("", now=20.0)] == ["c"]
    finally:
        await store.close()


# -- options ------------------------------------------------------------------------------------


async def test_the_schema_can_come_from_the_url(postgres_url: str, schema: str) -> None:
    """``?schema=`` in the URL selects the schema; the query option is not passed to libpq."""
    store = await open_store(f"{postgres_url}?schema={schema}")
    try:
        await store.kv.set("k", "v", now=0.0)
    finally:
        await store.close()
    assert _admin_query(postgres_url, f'SELECT key FROM "{schema}".antifragile_kv') == [("k",)]


async def test_drop_schema_on_close_drops_it(postgres_url: str, schema: str) -> None:
    """drop_schema_on_close removes the schema and its tables on close()."""
    store = await open_store(postgres_url, schema=schema, drop_schema_on_close=True)
    await store.close()
    assert (
        _admin_query(postgres_url, "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)) == []
    )


def test_dropping_public_on_close_is_refused() -> None:
    """drop_schema_on_close is refused for the public schema (ConfigurationError)."""
    with pytest.raises(ConfigurationError):
        PostgresStore("postgresql://u@localhost/db", drop_schema_on_close=True)


async def test_operations_before_open_are_refused() -> None:
    """Using the store before open() raises ConfigurationError, not a driver error."""
    store = PostgresStore("postgresql://u@localhost/db")
    with pytest.raises(ConfigurationError, match="not open"):
        await store.kv.get("k", now=0.0)
