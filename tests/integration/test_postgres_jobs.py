"""PostgresJobQueue against a real PostgreSQL: what only PostgreSQL has.

The contract suite (tests/contract/test_job_queue.py) proves the queue's semantics on every
backend. These tests prove the PostgreSQL mechanics: claims by OS processes that share nothing
but the server, ``SKIP LOCKED`` (a claim never waits on rows another transaction holds), the
transactional outbox on the connection kinds the contract suite does not use (psycopg
``AsyncConnection``, SQLAlchemy ``AsyncSession`` and ``AsyncConnection``), table names that do
not depend on the caller's ``search_path``, and the claim's plan on a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from typing import Any

import psycopg
import pytest

from antifragile import ConfigurationError, FakeClock, StoreError, StoreUnavailableError
from antifragile.jobs import Enqueued, Job, JobFilter, NewJob, Outcome, StatusFlag
from antifragile.jobs._postgres import _JOB_FIELDS, _NO_SORT, CLAIM_ANY, PostgresJobQueue
from antifragile.stores._postgres import (
    LONE_CONNECTIONS,
    POOL_RESERVE,
    LoneStatement,
    PostgresStore,
)
from tests._waiting import eventually
from tests.integration._postgres import KeptPlan, admin, open_queue

# The clock, schema and queue fixtures are tests/integration/conftest.py's.
SPAWN = multiprocessing.get_context("spawn")
PROCESSES = 4
LEASE = 30.0
FLAG = StatusFlag("session:1", "email_status")


def new_job(now: float, id: str, **fields: Any) -> NewJob:
    fields.setdefault("queue", "default")
    return NewJob(name="noop", payload={"id": id}, run_at=now, max_attempts=3, id=id, **fields)


# -- several OS processes ------------------------------------------------------------------------


async def _drain(url: str, schema: str, worker: str, now: float, barrier: Any) -> list[str]:
    async with open_queue(url, schema, max_size=2) as queue:
        barrier.wait(30)  # start together, so that the processes really contend
        claimed: list[str] = []
        while jobs := await queue.claim(worker=worker, limit=25, lease=3600, now=now):
            claimed.extend(job.id for job in jobs)
            outcomes = [Outcome(job.id, "succeeded") for job in jobs]
            recorded = await queue.complete(outcomes, worker=worker, now=now)
            assert sorted(recorded) == sorted(job.id for job in jobs)
        return claimed


def _run_drain(url: str, schema: str, worker: str, now: float, barrier: Any) -> list[str]:
    return asyncio.run(_drain(url, schema, worker, now, barrier))


async def test_four_processes_claim_every_job_exactly_once(
    postgres_url: str, schema: str, queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """4 OS processes claiming batches of 25 from 3,000 jobs of mixed priorities at once: every
    job is claimed by exactly one process and recorded once, every job ends succeeded, and
    each process received its jobs in claim order (priority, then id)."""
    now = clock.time()
    total = 3000
    for first in range(0, total, 1000):
        batch = [new_job(now, f"j-{i:05d}", priority=i % 3) for i in range(first, first + 1000)]
        await queue.enqueue(batch, now=now)
    with SPAWN.Manager() as manager, ProcessPoolExecutor(PROCESSES, mp_context=SPAWN) as pool:
        barrier = manager.Barrier(PROCESSES)
        futures = [
            pool.submit(_run_drain, postgres_url, schema, f"p{i}", now, barrier)
            for i in range(PROCESSES)
        ]
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    claimed = Counter(job_id for got in results for job_id in got)
    assert len(claimed) == total
    assert set(claimed.values()) == {1}
    [stats] = await queue.stats(now=now)
    assert stats.counts["succeeded"] == total
    for got in results:
        order = [(-(int(i[2:]) % 3), i) for i in got]
        assert order == sorted(order)


# -- SKIP LOCKED ---------------------------------------------------------------------------------


async def test_a_claim_skips_rows_another_transaction_holds_without_waiting(
    postgres_url: str, schema: str, queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """While another transaction holds row locks on the two first jobs in claim order, a claim
    returns with the next ones without waiting for that transaction (which only ends after the
    claim returned: a claim that waited would never return); once it ends, the two are
    claimable."""
    now = clock.time()
    await queue.enqueue([new_job(now, f"j-{i}") for i in range(5)], now=now)
    with psycopg.connect(postgres_url) as holder:  # a transaction stays open until the end
        holder.execute(
            f"SELECT id FROM \"{schema}\".antifragile_jobs WHERE id IN ('j-0', 'j-1')"
            " FOR UPDATE".encode()
        )
        claimed = await asyncio.wait_for(
            queue.claim(worker="w1", limit=10, lease=LEASE, now=now), timeout=60
        )
        assert [j.id for j in claimed] == ["j-2", "j-3", "j-4"]
        holder.rollback()
    rest = await queue.claim(worker="w2", limit=10, lease=LEASE, now=now)
    assert [j.id for j in rest] == ["j-0", "j-1"]


async def test_concurrent_claims_on_one_pool_split_the_jobs(
    queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """Ten claims in flight on the pool's connections at once hand out disjoint batches that
    together are every job (each claim skips what the others locked)."""
    now = clock.time()
    await queue.enqueue([new_job(now, f"j-{i:03d}") for i in range(100)], now=now)
    batches = await asyncio.gather(
        *(queue.claim(worker=f"w{i}", limit=10, lease=LEASE, now=now) for i in range(10))
    )
    claimed = Counter(j.id for batch in batches for j in batch)
    leftovers = await queue.claim(worker="late", limit=100, lease=LEASE, now=now)
    claimed.update(j.id for j in leftovers)
    assert len(claimed) == 100
    assert set(claimed.values()) == {1}


# -- the transactional outbox ----------------------------------------------------------------------


async def _jobs(queue: PostgresJobQueue) -> list[Job]:
    return await queue.find(JobFilter())


async def test_outbox_on_a_psycopg_async_connection(
    postgres_url: str, queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """Jobs enqueued on the caller's psycopg AsyncConnection (whose search_path is not the
    store's schema) appear, with their flag, only when the caller commits, and vanish with a
    rollback; the queue never commits for the caller."""
    now = clock.time()
    store = queue.store
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        kept = new_job(now, "kept", status_flag=FLAG)
        await queue.enqueue([kept], now=now, connection=conn)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert await _jobs(queue) == []
        assert await store.kv.get(FLAG.key, now=now) is None
        await conn.commit()
        assert [j.id for j in await _jobs(queue)] == ["kept"]
        flag = await store.kv.get(FLAG.key, now=now)
        assert flag is not None
        assert flag.value == {"email_status": "pending"}

        await queue.enqueue([new_job(now, "dropped")], now=now, connection=conn)
        await conn.rollback()
    assert [j.id for j in await _jobs(queue)] == ["kept"]


async def test_a_single_job_by_position_is_stored_as_by_name(
    postgres_url: str, queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """A single job sent with positional parameters (on the store's connections) is stored
    exactly as the same job sent with named ones (on the caller's connection), every field
    set, with and without a status flag; a repeat of either is found, not inserted."""
    now = clock.time()
    fields: dict[str, Any] = {
        "priority": 7,
        "payload_version": 2,
        "provider": "twilio",
        "timeout": 12.5,
        "state_data": {"step": 1},
        "context": {"request_id": "r-1"},
        "ordering_key": "k",
    }
    pairs = [("pos", "named", None), ("pos-flag", "named-flag", FLAG)]
    for positional, named, flag in pairs:
        made = await queue.enqueue(
            [new_job(now, positional, idempotency_key=positional, status_flag=flag, **fields)],
            now=now,
        )
        assert made == [Enqueued(positional, True)]
        async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
            job = new_job(now, named, idempotency_key=named, status_flag=flag, **fields)
            await queue.enqueue([job], now=now, connection=conn)
            await conn.commit()
        again = new_job(now, "other", idempotency_key=positional, **fields)
        assert await queue.enqueue([again], now=now) == [Enqueued(positional, False)]
    stored = {j.id: j for j in await _jobs(queue)}
    assert sorted(stored) == ["named", "named-flag", "pos", "pos-flag"]
    skip = {"id", "idempotency_key", "payload", "ordering_seq"}
    for positional, named, _ in pairs:
        a, b = stored[positional], stored[named]
        for name in _JOB_FIELDS:
            if name not in skip:
                assert getattr(a, name) == getattr(b, name), name
        assert (a.payload, b.payload) == ({"id": positional}, {"id": named})
        assert a.ordering_seq is not None
        assert a.state_data == {"step": 1}
    assert stored["pos-flag"].status_flag is not None


# -- the connection kept for single enqueues ---------------------------------------------------


def _kept_pid(queue: PostgresJobQueue) -> int:
    """The server process of the first connection the store keeps for single enqueues."""
    kept = queue._db.kept_slots[0].conn
    assert kept is not None
    return kept.pgconn.backend_pid


def _checkouts(queue: PostgresJobQueue) -> int:
    """How many connections the store's pool has handed out so far."""
    pool = queue._db.pool
    assert pool is not None
    return pool.get_stats().get("requests_num", 0)


async def _keep_a_connection(queue: PostgresJobQueue, now: float, id: str = "before") -> int:
    """Enqueue one job alone, which keeps a connection out of the pool; that connection's
    server process."""
    await queue.enqueue([new_job(now, id)], now=now)
    return _kept_pid(queue)


def _with_application(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


async def test_single_enqueues_one_after_another_share_one_kept_connection(
    queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """Awaited one at a time, single enqueues all run on the connection kept out of the pool:
    none takes a connection from the pool."""
    now = clock.time()
    assert await queue.enqueue([new_job(now, "first")], now=now) == [Enqueued("first", True)]
    pid, checkouts = _kept_pid(queue), _checkouts(queue)
    for n in range(20):
        flag = FLAG if n % 2 else None
        made = await queue.enqueue([new_job(now, f"j{n}", status_flag=flag)], now=now)
        assert made == [Enqueued(f"j{n}", True)]
    assert (_kept_pid(queue), _checkouts(queue)) == (pid, checkouts)
    assert len(await _jobs(queue)) == 21


async def test_enqueues_meanwhile_go_to_the_pool(queue: PostgresJobQueue, clock: FakeClock) -> None:
    """While a single enqueue runs on the kept connection, the others started meanwhile keep
    a few more connections and take pooled ones beyond those; every job is stored once, and
    repeats are found."""
    now = clock.time()
    pid, checkouts = await _keep_a_connection(queue, now, "first"), _checkouts(queue)
    jobs = [
        new_job(now, f"j{n}", idempotency_key=f"k{n}", status_flag=FLAG if n % 2 else None)
        for n in range(10)
    ]
    made = await asyncio.gather(*(queue.enqueue([job], now=now) for job in jobs))
    assert made == [[Enqueued(f"j{n}", True)] for n in range(10)]
    assert _checkouts(queue) >= checkouts + 9  # all but the first took a pooled connection
    kept = [slot.conn.pgconn.backend_pid for slot in queue._db.kept_slots if slot.conn]
    assert len(kept) == len(set(kept)) == LONE_CONNECTIONS
    repeats = [new_job(now, f"again{n}", idempotency_key=f"k{n}") for n in range(10)]
    again = await asyncio.gather(*(queue.enqueue([job], now=now) for job in repeats))
    assert again == [[Enqueued(f"j{n}", False)] for n in range(10)]
    assert _kept_pid(queue) == pid
    assert len(await _jobs(queue)) == 11


async def test_a_kept_connection_the_server_ended_is_replaced_before_use(
    postgres_url: str, queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """A kept connection the server ended while it was idle is noticed before the next
    statement: that enqueue succeeds on a new connection, and the store is not marked down."""
    now = clock.time()
    pid = await _keep_a_connection(queue, now)
    # ended, and gone (the server waits up to 30 s for its process to exit)
    assert admin(postgres_url, "SELECT pg_terminate_backend(%s, 30000)", (pid,)) == [(True,)]
    assert await queue.enqueue([new_job(now, "after")], now=now) == [Enqueued("after", True)]
    assert _kept_pid(queue) != pid
    assert queue._db.down_since is None
    assert sorted(j.id for j in await _jobs(queue)) == ["after", "before"]


async def _blocked_on_a_lock(url: str, pid: int) -> bool:
    rows = admin(url, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
    return rows == [("Lock",)]


@contextlib.asynccontextmanager
async def _enqueue_behind_a_lock(
    url: str, schema: str, queue: PostgresJobQueue, job: NewJob
) -> AsyncIterator[tuple[int, asyncio.Task[list[Enqueued]]]]:
    """After a job "before" has kept a connection, *job* enqueued alone on that connection while
    another one holds the jobs table locked: (the kept connection's server process, the enqueue's
    task), once the statement waits on the lock. The lock is let go on leaving."""
    now = job.run_at
    pid = await _keep_a_connection(queue, now)
    with psycopg.connect(url) as locker:
        locker.execute(f'LOCK TABLE "{schema}".antifragile_jobs IN ACCESS EXCLUSIVE MODE'.encode())
        task = asyncio.create_task(queue.enqueue([job], now=now))
        await eventually(lambda: _blocked_on_a_lock(url, pid))
        yield pid, task
        locker.rollback()


async def test_a_kept_connection_ended_during_a_statement_is_replaced(
    postgres_url: str, schema: str, queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """When the server ends the kept connection while a statement waits on it, that enqueue
    raises StoreUnavailableError (retryable) and the store counts the server as down; the
    connection is given back, enqueues succeed on the pool, then on another kept one."""
    now = clock.time()
    lost = new_job(now, "lost")
    async with _enqueue_behind_a_lock(postgres_url, schema, queue, lost) as (pid, task):
        admin(postgres_url, "SELECT pg_terminate_backend(%s, 30000)", (pid,))
        with pytest.raises(StoreUnavailableError) as raised:
            await task
        assert raised.value.retryable
    assert queue._db.kept_slots[0].conn is None

    async def enqueued() -> bool:
        try:
            return await queue.enqueue([new_job(now, "after")], now=now) == [
                Enqueued("after", True)
            ]
        except StoreUnavailableError:  # the pool is still replacing its connections
            return False

    await eventually(enqueued, interval=0.1)  # on the pool while the server counts as down
    await eventually(lambda: queue._db.down_since is None, interval=0.1)
    assert await queue.enqueue([new_job(now, "later")], now=now) == [Enqueued("later", True)]
    assert _kept_pid(queue) != pid
    assert sorted(j.id for j in await _jobs(queue)) == ["after", "before", "later"]


async def test_a_cancelled_single_enqueue_gives_its_connection_back(
    postgres_url: str, schema: str, queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """A single enqueue cancelled while its statement runs leaves no half-used connection
    behind: the kept one is closed and given back to the pool, the next enqueue takes
    another one."""
    now = clock.time()
    cancelled = new_job(now, "cancelled")
    async with _enqueue_behind_a_lock(postgres_url, schema, queue, cancelled) as (pid, task):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert queue._db.kept_slots[0].conn is None
    assert await queue.enqueue([new_job(now, "after")], now=now) == [Enqueued("after", True)]
    assert _kept_pid(queue) != pid


async def test_closing_the_store_during_a_single_enqueue_lets_it_finish(
    postgres_url: str, schema: str, clock: FakeClock
) -> None:
    """Closing the store while a single enqueue runs on the kept connection: the enqueue
    finishes (its job committed), then that connection is closed too -- none is left open."""
    application = f"af_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(_with_application(postgres_url, application), schema=schema)
    await store.open()
    queue = PostgresJobQueue(store)
    now = clock.time()
    try:
        await queue.enqueue([new_job(now, "before")], now=now)
        task = asyncio.create_task(queue.enqueue([new_job(now, "during")], now=now))
        await asyncio.sleep(0)  # the task runs until it waits for the server's answer
        assert store._db.kept_slots[0].busy
    finally:
        await store.close()
    assert await task == [Enqueued("during", True)]
    count = f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application}'"
    await eventually(lambda: admin(postgres_url, count) == [(0,)])
    rows = admin(postgres_url, f'SELECT id FROM "{schema}".antifragile_jobs ORDER BY id')
    assert rows == [("before",), ("during",)]


async def test_while_the_server_is_known_down_single_enqueues_use_the_pool(
    queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """Once an operation found the server unreachable, single enqueues take pooled connections
    (which wait only briefly while it is down) and the kept connection goes back to the pool,
    which replaces it; once a connection succeeds again, one is kept anew."""
    now = clock.time()
    pid = await _keep_a_connection(queue, now)
    queue._db.mark_down()  # as an operation that met a dropped connection does
    made: list[Enqueued] = []

    async def enqueued() -> bool:
        try:
            made.extend(await queue.enqueue([new_job(now, "during")], now=now))
        except StoreUnavailableError:  # the pool is still replacing its connections
            return False
        return True

    await eventually(enqueued, interval=0.1)
    assert made[0].id == "during"  # created, or found when a failed try had written it
    await eventually(lambda: queue._db.down_since is None, interval=0.1)
    assert await queue.enqueue([new_job(now, "after")], now=now) == [Enqueued("after", True)]
    assert _kept_pid(queue) != pid


_TYPED = LoneStatement(
    "SELECT %(t)s::text, %(i)s::int8, %(f)s::float8, %(b)s::bool, NULL::text, 2::int4, "
    "1.5::float4, 'Infinity'::float8, (-%(i)s)::int2, %(b)s::bool AND false, 'x'::varchar "
    "FROM generate_series(1, %(n)s::int4)",
    ("t", "i", "f", "b", "n"),
)


async def test_lone_rows_read_as_on_a_pooled_connection(queue: PostgresJobQueue) -> None:
    """A lone statement's rows have the same values and types on a kept connection as on a
    pooled one (the path taken while every kept connection is busy)."""
    db = queue._db
    params = ("naïve 'text'", 7, 0.1, True, 2)
    kept = await db.lone_rows(_TYPED, params)
    assert db.kept_slots[0].conn is not None  # it ran there
    for slot in db.kept_slots:
        slot.busy = True
    try:
        checkouts = _checkouts(queue)
        pooled = await db.lone_rows(_TYPED, params)
        assert _checkouts(queue) == checkouts + 1
    finally:
        for slot in db.kept_slots:
            slot.busy = False
    row = ("naïve 'text'", 7, 0.1, True, None, 2, 1.5, math.inf, -7, False, "x")
    assert kept == pooled == [row, row]
    assert [[type(v) for v in r] for r in kept] == [[type(v) for v in r] for r in pooled]
    assert await db.lone(_TYPED, params) == ["naïve 'text'"] * 2
    assert await db.lone_rows(_TYPED, ("", 0, 0.0, False, 0)) == []


async def test_a_record_with_one_job_is_saved_on_the_kept_connection(
    queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """A record written with one job and entries alongside (a session's turn with its reply)
    runs on a kept connection, without a pooled one -- or on a pooled one while every kept
    connection is busy -- with the same outcome either way: the record at its new version,
    the job created (or, for a known idempotency key, the existing one named), the entries
    alongside created when absent; a stale version writes nothing."""
    now = clock.time()
    await queue.enqueue([new_job(now, "first")], now=now)  # keeps a connection
    db = queue._db
    checkouts = _checkouts(queue)
    for kept in (True, False):
        if not kept:
            for slot in db.kept_slots:
                slot.busy = True
        try:
            key = f"session:{kept}"
            reply = new_job(now, f"reply-{kept}", idempotency_key=f"reply:{kept}")
            created = await queue.save_and_enqueue(
                key,
                {"step": 1},
                expected_version=None,
                jobs=[reply],
                now=now,
                ttl=60.0,
                alongside={f"out:{kept}": {"to": "x"}},
            )
            assert created is not None
            assert (created[0].version, created[1]) == (1, [Enqueued(reply.id, True)])
            if kept:
                assert _checkouts(queue) == checkouts  # no pooled connection was taken
            else:
                assert _checkouts(queue) == checkouts + 1
            again = new_job(now, f"again-{kept}", idempotency_key=f"reply:{kept}")
            updated = await queue.save_and_enqueue(
                key, {"step": 2}, expected_version=1, jobs=[again], now=now, ttl=60.0
            )
            assert updated is not None
            assert (updated[0].version, updated[1]) == (2, [Enqueued(reply.id, False)])
            stale = await queue.save_and_enqueue(
                key, {"step": 3}, expected_version=1, jobs=[new_job(now, "x")], now=now
            )
            assert stale is None
            entry = await queue.store.kv.get(key, now=now)
            assert entry is not None
            assert (entry.value, entry.version) == ({"step": 2}, 2)
            out = await queue.store.kv.get(f"out:{kept}", now=now)
            assert out is not None
            assert out.value == {"to": "x"}
        finally:
            for slot in db.kept_slots:
                slot.busy = False
        checkouts = _checkouts(queue)
    assert sorted(j.id for j in await _jobs(queue)) == ["first", "reply-False", "reply-True"]


async def test_a_failed_lone_statement_leaves_the_kept_connection_usable(
    queue: PostgresJobQueue,
) -> None:
    """A statement the server refuses raises psycopg's error as a StoreError, and the same
    kept connection runs the next one."""
    db = queue._db
    await db.lone_rows(_TYPED, ("a", 1, 1.0, True, 1))
    pid = _kept_pid(queue)
    failing = LoneStatement("SELECT 1 / %(n)s::int4", ("n",))
    with pytest.raises(StoreError, match="division by zero"):
        await db.lone_rows(failing, (0,))
    assert await db.lone_rows(failing, (1,)) == [(1,)]
    assert _kept_pid(queue) == pid


@pytest.mark.parametrize("max_size", [1, 2])
async def test_a_pool_of_two_connections_or_fewer_keeps_none(
    postgres_url: str, schema: str, clock: FakeClock, max_size: int
) -> None:
    """With ``max_size`` of 2 or less no connection is kept out of the pool: single enqueues
    take the pool's connections, which the store's other operations need too."""
    async with open_queue(postgres_url, schema, max_size=max_size) as queue:
        now = clock.time()
        for n in range(3):
            assert await queue.enqueue([new_job(now, f"j{n}")], now=now) == [
                Enqueued(f"j{n}", True)
            ]
            assert len(await _jobs(queue)) == n + 1
        assert queue._db.kept_slots == []


async def test_the_pool_keeps_its_reserve_for_other_operations(
    postgres_url: str, schema: str, clock: FakeClock
) -> None:
    """A small pool keeps no more connections than ``max_size`` less POOL_RESERVE: with many
    single enqueues at once, those beyond the kept connections run on the pool, and every job
    is stored."""
    async with open_queue(postgres_url, schema, max_size=5) as queue:
        now = clock.time()
        jobs = [new_job(now, f"j{n}") for n in range(12)]
        made = await asyncio.gather(*(queue.enqueue([job], now=now) for job in jobs))
        assert made == [[Enqueued(f"j{n}", True)] for n in range(12)]
        kept = [slot for slot in queue._db.kept_slots if slot.conn is not None]
        assert len(queue._db.kept_slots) == 5 - POOL_RESERVE
        assert 1 <= len(kept) <= 5 - POOL_RESERVE
        assert len(await _jobs(queue)) == 12


def _async_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


async def test_outbox_on_an_sqlalchemy_async_session(
    postgres_url: str, queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """Jobs enqueued through an SQLAlchemy AsyncSession are written in the session's
    transaction: committed with it, or gone with its rollback."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    now = clock.time()
    engine = create_async_engine(_async_url(postgres_url))
    try:
        async with AsyncSession(engine) as session:
            await session.execute(text("SELECT 1"))
            await queue.enqueue([new_job(now, "committed")], now=now, connection=session)
            assert await _jobs(queue) == []
            await session.commit()
            await queue.enqueue([new_job(now, "rolled-back")], now=now, connection=session)
            await session.rollback()
    finally:
        await engine.dispose()
    assert [j.id for j in await _jobs(queue)] == ["committed"]


async def test_outbox_on_an_sqlalchemy_async_connection(
    postgres_url: str, queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """An SQLAlchemy AsyncConnection joins the outbox too; a known idempotency key there names
    the existing job."""
    from sqlalchemy.ext.asyncio import create_async_engine

    now = clock.time()
    engine = create_async_engine(_async_url(postgres_url))
    try:
        async with engine.connect() as conn:
            first = new_job(now, "first", idempotency_key="order-1")
            [made] = await queue.enqueue([first], now=now, connection=conn)
            [again] = await queue.enqueue(
                [new_job(now, "second", idempotency_key="order-1")], now=now, connection=conn
            )
            assert made.created
            assert (again.id, again.created) == ("first", False)
            assert await _jobs(queue) == []
            await conn.commit()
    finally:
        await engine.dispose()
    assert [j.id for j in await _jobs(queue)] == ["first"]


async def test_outbox_refuses_an_object_that_is_no_connection(
    queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """A connection= that is neither psycopg nor SQLAlchemy is a ConfigurationError, and nothing
    is written."""
    now = clock.time()
    with pytest.raises(ConfigurationError, match="psycopg"):
        await queue.enqueue([new_job(now, "j")], now=now, connection=object())
    assert await _jobs(queue) == []


# -- what jsonb cannot hold, and flags folded in one batch ---------------------------------------


async def test_a_nul_character_is_refused_and_nothing_is_written(
    queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """jsonb cannot hold U+0000: a payload with it is a ConfigurationError, and no job of its
    batch is written."""
    now = clock.time()
    bad = NewJob(name="noop", queue="default", payload={"x": "a\x00b"}, run_at=now, max_attempts=1)
    with pytest.raises(ConfigurationError, match="NUL"):
        await queue.enqueue([new_job(now, "good"), bad], now=now)
    assert await _jobs(queue) == []


async def test_outcomes_flagging_one_field_in_one_batch_end_with_the_last(
    queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """Two jobs of one batch flag the same field of one entry: the entry is written once
    (version + 1) and the field ends with the value of the later outcome in the batch."""
    now = clock.time()
    await queue.enqueue(
        [new_job(now, "a", status_flag=FLAG), new_job(now, "b", status_flag=FLAG)], now=now
    )
    await queue.claim(worker="w1", limit=2, lease=LEASE, now=now)
    await queue.complete([Outcome("a", "succeeded"), Outcome("b", "dead")], worker="w1", now=now)
    entry = await queue.store.kv.get(FLAG.key, now=now)
    assert entry is not None
    assert (entry.value, entry.version) == ({"email_status": "failed"}, 2)


# -- the row layout and the claim's plan -----------------------------------------------------------


def test_rows_are_read_in_the_order_of_jobs_fields() -> None:
    """The columns the queue selects are Job's fields in their order (rows become Jobs by
    position)."""
    assert tuple(f.name for f in fields(Job)) == _JOB_FIELDS


async def test_a_claim_walks_the_claim_index_instead_of_sorting_the_backlog(
    queue: PostgresJobQueue, clock: FakeClock
) -> None:
    """On a backlog of 5,000 ready jobs in a table never analyzed (statistics claim it is
    nearly empty), a claim of 10 reads them in index order and stops: the ready rows come from
    an ordered scan of the claim index, and no more than the claim's limit are read; the
    ordering-key check is not run for jobs without a key."""
    now = clock.time()
    for first in range(0, 5000, 1000):
        await queue.enqueue(
            [new_job(now, f"j-{i:05d}", priority=i % 5) for i in range(first, first + 1000)],
            now=now,
        )
    store = queue.store
    assert store._db.pool is not None
    query = queue._sql.text(CLAIM_ANY)
    params = {"now": now, "until": now + LEASE, "limit": 10, "worker": "w"}
    # as the queue runs it (settings of its transaction), then rolled back: nothing is claimed
    async with store._db.pool.connection() as conn, conn.transaction(force_rollback=True):
        await conn.execute(_NO_SORT)
        cursor = await conn.execute(("EXPLAIN (ANALYZE, FORMAT JSON) " + query).encode(), params)
        row = await cursor.fetchone()
        assert row is not None

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    ready = next(n for n in nodes(row[0][0]["Plan"]) if n.get("Subplan Name") == "CTE ready")
    checks = [n for n in nodes(ready) if n.get("Parent Relationship") == "SubPlan"]
    scans = [
        n
        for n in nodes(ready)
        if "Scan" in n["Node Type"] and not any(n in list(nodes(c)) for c in checks)
    ]
    assert [(n["Node Type"], n.get("Index Name")) for n in scans] == [
        ("Index Scan", "antifragile_jobs_claim_any")
    ]
    # the ordering-key check is never run for jobs without a key
    assert [(n.get("Index Name"), n["Actual Loops"]) for n in checks] == [
        ("antifragile_jobs_ordering_open", 0)
    ]
    assert scans[0]["Actual Rows"] <= 10
    assert not [n for n in nodes(ready) if n["Node Type"] == "Sort"]


async def test_looking_up_existing_jobs_reads_only_theirs_whatever_the_plan(
    queue: PostgresJobQueue, postgres_url: str, schema: str, clock: FakeClock
) -> None:
    """The look-up of the jobs an enqueue found already there (a repeated idempotency key) is
    planned once, maybe while the table was small: even that plan reads only the jobs it
    looks for once the table is large."""
    now = clock.time()
    await queue.enqueue(
        [new_job(now, f"k{n}", idempotency_key=f"key-{n}") for n in range(5)], now=now
    )
    kept = KeptPlan(
        postgres_url, schema, queue._sql.enqueue_existing, {"keys": "text[]", "ids": "text[]"}
    )
    try:
        kept.execute({"keys": ["key-1"], "ids": ["k2"]})
        for batch in range(10):  # the table grows to 1,005 jobs
            await queue.enqueue(
                [
                    new_job(now, f"b{batch}.{n}", idempotency_key=f"b{batch}.{n}")
                    for n in range(100)
                ],
                now=now,
            )
        read = kept.rows_read("antifragile_jobs", {"keys": ["b3.7", "key-4"], "ids": ["b9.9"]})
    finally:
        kept.close()
    assert read, "the plan reads the jobs"
    assert all(rows <= 10 for rows in read), read
    again = await queue.enqueue([new_job(now, "other", idempotency_key="b3.7")], now=now)
    assert again == [Enqueued("b3.7", False)]
