"""Concurrent inbox records on PostgreSQL share one statement (group commit), and stay durable
and separate.

While one ``record_inbound`` statement is in flight, the calls that arrive meanwhile go
together into the next one. Transactions are counted by the server itself: each inbox row's
``xmin`` is the id of the transaction that inserted it, so the number of distinct ``xmin`` in
a fresh schema is the number of transactions that recorded entries. A caller whose entries
cannot be recorded gets its error; the callers that shared its statement keep theirs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from antifragile import FakeClock
from antifragile.errors import StoreError
from antifragile.jobs import JobFilter, NewInboxEntry, NewJob, Recorded, new_job_id
from antifragile.jobs._postgres import PostgresJobQueue, _record_params
from antifragile.stores._codec import encode
from tests.integration._postgres import KeptPlan, admin, open_queue

# The clock, schema and queue fixtures are tests/integration/conftest.py's.
TTL = 7 * 24 * 3600.0


def entry(
    event_id: str, *, now: float, name: str = "inbound.process", payload: Any = None
) -> NewInboxEntry:
    inbox_id = new_job_id()
    job = NewJob(
        name=name,
        queue="inbound",
        payload={"inbox_id": inbox_id},
        run_at=now,
        max_attempts=5,
        idempotency_key=f"inbound:{inbox_id}",
    )
    return NewInboxEntry(
        channel="whatsapp",
        event_id=event_id,
        kind="message",
        tenant_key="acme",
        payload={"text": "Do you deliver to Leeds?"} if payload is None else payload,
        ttl=TTL,
        job=job,
        id=inbox_id,
    )


def transactions(url: str, schema: str) -> int:
    """How many transactions inserted the schema's inbox rows."""
    rows = admin(url, f'SELECT count(DISTINCT xmin::text) FROM "{schema}".antifragile_inbox')
    return int(rows[0][0])


def _refuse_jobs_named_explode(url: str, schema: str) -> None:
    quoted = f'"{schema}"'
    admin(
        url,
        f"CREATE FUNCTION {quoted}.explode() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN IF NEW.name = 'explode' THEN RAISE EXCEPTION 'refused'; END IF; "
        "RETURN NEW; END $$",
    )
    admin(
        url,
        f"CREATE TRIGGER explode BEFORE INSERT ON {quoted}.antifragile_jobs "
        f"FOR EACH ROW EXECUTE FUNCTION {quoted}.explode()",
    )


async def test_concurrent_records_share_transactions(
    queue: PostgresJobQueue, postgres_url: str, schema: str, clock: FakeClock
) -> None:
    """40 concurrent calls of one entry each: every entry and its job recorded, in far fewer
    transactions than calls (the first call runs alone, the others wait for it together)."""
    now = clock.time()
    results = await asyncio.wait_for(
        asyncio.gather(
            *(queue.record_inbound([entry(f"wamid.{i}", now=now)], now=now) for i in range(40))
        ),
        60,
    )
    assert all(batch[0].created for batch in results)
    assert len({batch[0].id for batch in results}) == 40
    assert transactions(postgres_url, schema) < 40
    assert len(await queue.find_inbound(limit=100)) == 40
    assert len(await queue.find(JobFilter(queue="inbound"), limit=100)) == 40
    for (recorded,) in results:
        stored = await queue.get_inbound(recorded.id)
        assert stored is not None
        assert stored.job_id == recorded.job_id


async def test_a_duplicate_within_a_group_names_the_first(
    queue: PostgresJobQueue, postgres_url: str, schema: str, clock: FakeClock
) -> None:
    """Calls of one group delivering the same event: the first call creates it, the later ones
    are duplicates naming its entry and job; nothing is enqueued twice."""
    now = clock.time()
    calls = [queue.record_inbound([entry("wamid.lead", now=now)], now=now)]
    calls += [
        queue.record_inbound([entry("wamid.same", now=now), entry(f"wamid.{i}", now=now)], now=now)
        for i in range(5)
    ]
    lead, *group = await asyncio.wait_for(asyncio.gather(*calls), 60)
    assert lead[0].created
    firsts = [batch[0] for batch in group]
    assert firsts[0].created
    assert all(not r.created for r in firsts[1:])
    assert {(r.id, r.job_id) for r in firsts} == {(firsts[0].id, firsts[0].job_id)}
    assert all(batch[1].created for batch in group)
    assert transactions(postgres_url, schema) == 2
    assert len(await queue.find(JobFilter(queue="inbound"), limit=100)) == 1 + 1 + 5


async def test_a_failing_caller_does_not_take_the_others_down(
    queue: PostgresJobQueue, postgres_url: str, schema: str, clock: FakeClock
) -> None:
    """A caller whose job cannot be inserted, in a group: it gets the error and nothing of its
    batch is kept; the callers that shared its statement have their entries and jobs."""
    _refuse_jobs_named_explode(postgres_url, schema)
    now = clock.time()
    lead = queue.record_inbound([entry("wamid.lead", now=now)], now=now)
    first = queue.record_inbound([entry("wamid.first", now=now)], now=now)
    boom = queue.record_inbound(
        [entry("wamid.boom-ok", now=now), entry("wamid.boom", now=now, name="explode")], now=now
    )
    last = queue.record_inbound([entry("wamid.last", now=now)], now=now)
    results = await asyncio.wait_for(
        asyncio.gather(lead, first, boom, last, return_exceptions=True), 60
    )
    assert isinstance(results[2], StoreError)
    kept: list[list[Recorded]] = []
    for result in (results[0], results[1], results[3]):
        assert not isinstance(result, BaseException)
        kept.append(result)
    assert all(batch[0].created for batch in kept)
    recorded = {e.event_id for e in await queue.find_inbound(limit=100)}
    assert recorded == {"wamid.lead", "wamid.first", "wamid.last"}
    assert len(await queue.find(JobFilter(queue="inbound"), limit=100)) == 3


async def test_callers_are_answered_after_their_commit(
    queue: PostgresJobQueue, postgres_url: str, schema: str, clock: FakeClock
) -> None:
    """Each caller's entries are visible to another connection as soon as its call returns."""
    now = clock.time()

    async def record_and_look(i: int) -> bool:
        (recorded,) = await queue.record_inbound([entry(f"wamid.{i}", now=now)], now=now)
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            cursor = await conn.execute(
                f'SELECT 1 FROM "{schema}".antifragile_inbox WHERE id = %s'.encode(),
                (recorded.id,),
            )
            return await cursor.fetchone() is not None

    seen = await asyncio.wait_for(asyncio.gather(*(record_and_look(i) for i in range(10))), 60)
    assert all(seen)


async def test_the_record_looks_entries_up_by_index_on_an_unanalysed_inbox(
    queue: PostgresJobQueue, postgres_url: str, schema: str, clock: FakeClock
) -> None:
    """A fresh inbox that has grown since it was created (no statistics yet, as in a new
    schema under load): the record statement's generic plan still finds an event's entry
    through the unique index, never by reading the whole inbox."""
    now = clock.time()
    for start in range(0, 2000, 200):
        await queue.record_inbound(
            [entry(f"wamid.{i}", now=now) for i in range(start, start + 200)], now=now
        )
    batch = [entry(f"wamid.new-{i}", now=now) for i in range(16)]
    params = _record_params(batch, [now] * len(batch))
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        cursor = await conn.execute(
            b"EXPLAIN (COSTS OFF) " + queue._sql.record_inbound.encode(), params
        )
        plan = "\n".join(row[0] for row in await cursor.fetchall())
        await conn.rollback()
    assert "Seq Scan on antifragile_inbox" not in plan, plan
    assert "Index Scan using antifragile_inbox_event" in plan, plan


async def test_an_inbox_record_does_not_scan_the_inbox_whatever_its_plan(
    queue: PostgresJobQueue, postgres_url: str, schema: str, clock: FakeClock
) -> None:
    """A prepared statement's plan is made once, while the inbox is small, and kept as it
    grows (no statistics until autovacuum comes by): even a plan made for a small inbox reads
    no inbox row beyond those of the events it records -- a scan of the whole inbox per
    webhook would make every record slower than the last."""
    now = clock.time()
    for batch in range(5):  # the inbox the server sees when it makes the plan
        await queue.record_inbound(
            [entry(f"wamid.a{batch}.{i}", now=now) for i in range(10)], now=now
        )
    kept = KeptPlan(
        postgres_url,
        schema,
        queue._sql.record_inbound,
        {"entries": "text", "payloads": "text", "jobs": "text", "now": "float8"},
    )
    try:
        kept.execute(_record_params([entry(f"wamid.p{i}", now=now) for i in range(10)], [now] * 10))
        for batch in range(20):  # the inbox grows to 1,060 entries
            await queue.record_inbound(
                [entry(f"wamid.b{batch}.{i}", now=now) for i in range(50)], now=now
            )
        params = _record_params([entry(f"wamid.c{i}", now=now) for i in range(10)], [now] * 10)
        read = kept.rows_read("antifragile_inbox", params)
    finally:
        kept.close()
    assert read, "the plan reads the inbox"
    assert all(rows <= 20 for rows in read), read
    recorded = await queue.find_inbound()
    assert len(recorded) >= 100


async def test_payloads_are_stored_as_their_json_text_byte_for_byte(
    queue: PostgresJobQueue, postgres_url: str, schema: str, clock: FakeClock
) -> None:
    """Each entry's payload column holds exactly its compact JSON text (the text readers of
    the inbox get back), whatever it holds -- quotes, backslashes, escapes, non-ASCII, line
    separators, NUL -- and whichever entries of a shared statement it sits among."""
    now = clock.time()
    odd = [
        {"text": 'a"b\\c\x00d\n\t', "emoji": "caf\u00e9 \U0001f600 \u2028\u2029"},
        {"n": [1, 2.5, -0.0, 1e300, None, True, False], "o": {"": {}, "k": []}},
        {"text": ']}, {"payload": 1}, ['},
        {"deep": [[[{"x": "\\u0000"}]]]},
    ]
    batch = [entry(f"wamid.odd{i}", now=now, payload=p) for i, p in enumerate(odd)]
    recorded = await queue.record_inbound(batch, now=now)
    assert all(r.created for r in recorded)
    rows = admin(
        postgres_url,
        f'SELECT id, payload::text FROM "{schema}".antifragile_inbox',
    )
    stored = {row[0]: row[1] for row in rows}
    for item, payload in zip(batch, odd, strict=True):
        assert stored[item.id] == encode(payload)
        got = await queue.get_inbound(item.id)
        assert got is not None
        assert got.payload == payload


def _hold_jobs_named_slow_until_waited_on(url: str, schema: str, *, then_fail: bool) -> int:
    """A job named ``slow`` is inserted only once another transaction waits for the one
    inserting it (as a statement recording the same event waits on the inbox's unique index);
    with *then_fail*, that insert then fails. Meanwhile the transaction holds the advisory lock
    whose key this returns."""
    quoted = f'"{schema}"'
    key = int(schema[-8:], 16) & 0x7FFFFFFF
    outcome = "RAISE EXCEPTION 'refused';" if then_fail else ""
    admin(
        url,
        f"CREATE FUNCTION {quoted}.slow() RETURNS trigger LANGUAGE plpgsql AS $$ "
        f"BEGIN IF NEW.name = 'slow' THEN PERFORM pg_advisory_xact_lock({key}); "
        "WHILE NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' "
        "AND NOT granted AND pid <> pg_backend_pid() "
        "AND transactionid = (txid_current() %% 4294967296)::text::xid) "
        f"LOOP PERFORM pg_sleep(0.01); END LOOP; {outcome} END IF; "
        "RETURN NEW; END $$",
    )
    admin(
        url,
        f"CREATE TRIGGER slow BEFORE INSERT ON {quoted}.antifragile_jobs "
        f"FOR EACH ROW EXECUTE FUNCTION {quoted}.slow()",
    )
    return key


async def _race(
    queue: PostgresJobQueue, url: str, schema: str, clock: FakeClock, *, then_fail: bool
) -> tuple[list[Recorded] | BaseException, list[Recorded] | BaseException, str]:
    """Record ``wamid.same`` (and a ``slow`` job's entry) through *queue*, and -- once that
    transaction holds its uncommitted entries -- ``wamid.same`` again through a queue of another
    store: both results or errors, and the second's inbox id."""
    key = _hold_jobs_named_slow_until_waited_on(url, schema, then_fail=then_fail)
    now = clock.time()
    first = [entry("wamid.same", now=now), entry("wamid.held", now=now, name="slow")]
    second = [entry("wamid.same", now=now)]
    async with open_queue(url, schema, clock=clock) as other:
        held = asyncio.create_task(queue.record_inbound(first, now=now))
        query = "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = %s"
        while True:  # (the lock shows once its statement has inserted the entries)
            if held.done() or admin(url, query, (key,)):
                break
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(other.record_inbound(second, now=now))
        one, two = await asyncio.wait_for(asyncio.gather(held, waiting, return_exceptions=True), 60)
    return one, two, second[0].id


async def test_an_event_in_two_statements_in_flight_is_recorded_once(
    queue: PostgresJobQueue, postgres_url: str, schema: str, clock: FakeClock
) -> None:
    """Two writers (two stores' connections, as two processes) record the same event at once:
    the second waits for the first's uncommitted entry (the first commits only once it does),
    then is a duplicate naming the first's entry and job; the processing job is enqueued once."""
    recorded, again, _ = await _race(queue, postgres_url, schema, clock, then_fail=False)
    assert not isinstance(recorded, BaseException)
    assert not isinstance(again, BaseException)
    assert recorded[0].created
    assert recorded[1].created
    assert not again[0].created
    assert (again[0].id, again[0].job_id) == (recorded[0].id, recorded[0].job_id)
    assert transactions(postgres_url, schema) == 1
    inbox = await queue.find_inbound(limit=100)
    assert sorted(e.event_id for e in inbox) == ["wamid.held", "wamid.same"]
    jobs = await queue.find(JobFilter(queue="inbound"), limit=100)
    assert {job.id for job in jobs} == {recorded[0].job_id, recorded[1].job_id}
    assert len(jobs) == 2


async def test_an_event_whose_first_statement_fails_is_recorded_by_the_other(
    queue: PostgresJobQueue, postgres_url: str, schema: str, clock: FakeClock
) -> None:
    """Two writers record the same event at once and the first fails after the second began
    waiting for its entry: the first's caller gets its error, and the second creates the event
    with its own processing job."""
    failed, recorded, second_id = await _race(queue, postgres_url, schema, clock, then_fail=True)
    assert isinstance(failed, StoreError)
    assert not isinstance(recorded, BaseException)
    assert recorded[0].created
    assert recorded[0].id == second_id
    inbox = await queue.find_inbound(limit=100)
    assert [e.event_id for e in inbox] == ["wamid.same"]
    jobs = await queue.find(JobFilter(queue="inbound"), limit=100)
    assert [job.id for job in jobs] == [recorded[0].job_id]
