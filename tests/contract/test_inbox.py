"""Contract: the inbox in the job queue -- ``record_inbound`` records inbound events and enqueues
their jobs in one transaction, recognises redeliveries (also within a batch and from concurrent
writers), replaces expired entries; ``get_inbound``, ``find_inbound`` and ``purge_inbound``.

Every test runs on each job-queue backend (SQLite and PostgreSQL). Time is a FakeClock: entries
expire because ``now`` moves on, never by waiting.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from typing import Any

import psycopg
import pytest

from antifragile import ConfigurationError, FakeClock
from antifragile.errors import StoreError
from antifragile.jobs import (
    InboxEntry,
    JobFilter,
    JobQueue,
    JobState,
    NewInboxEntry,
    NewJob,
    Recorded,
    StatusFlag,
    new_job_id,
)
from antifragile.jobs._open import open_job_queue
from antifragile.stores import Store, open_store
from antifragile.stores._sqlite import parse_url
from tests.contract.conftest import JobBackend

TTL = 7 * 24 * 3600.0
PAYLOAD = {"from": "+447700900123", "text": "Do you deliver to Leeds?", "type": "text"}


def entry(
    event_id: str,
    *,
    channel: str = "whatsapp",
    now: float = 0.0,
    ttl: float = TTL,
    with_job: bool = True,
    key: str | None = None,
    flag: StatusFlag | None = None,
    delay: float = 0.0,
    name: str = "inbound.handle",
    payload: Any = None,
    request_id: str | None = None,
) -> NewInboxEntry:
    """An inbound event whose job (unless *with_job* is false) names the entry, as the service
    builds them."""
    inbox_id = new_job_id()
    job = None
    if with_job:
        job = NewJob(
            name=name,
            queue="inbound",
            payload={"inbox_id": inbox_id},
            run_at=now + delay,
            max_attempts=5,
            idempotency_key=key,
            status_flag=flag,
        )
    return NewInboxEntry(
        channel=channel,
        event_id=event_id,
        kind="message",
        tenant_key="acme",
        payload=PAYLOAD if payload is None else payload,
        ttl=ttl,
        job=job,
        id=inbox_id,
        request_id=request_id,
    )


async def record_one(queue: JobQueue, new: NewInboxEntry, now: float) -> Recorded:
    [recorded] = await queue.record_inbound([new], now=now)
    return recorded


async def job_count(queue: JobQueue) -> int:
    return len(await queue.find(JobFilter(), limit=1000))


# -- new entries and duplicates ----------------------------------------------------------------


async def test_a_new_entry_is_stored_with_its_job(job_queue: JobQueue, clock: FakeClock) -> None:
    """A new event is created: every field is stored (received now, expiring after its ttl), and
    its job is enqueued with it, named by the entry."""
    now = clock.time()
    new = entry("wamid.1", now=now, request_id="req-1")
    assert new.job is not None
    recorded = await record_one(job_queue, new, now)
    assert recorded == Recorded(new.id, True, new.job.id)

    stored = await job_queue.get_inbound(new.id)
    assert stored == InboxEntry(
        id=new.id,
        channel="whatsapp",
        event_id="wamid.1",
        kind="message",
        tenant_key="acme",
        payload=PAYLOAD,
        received_at=now,
        expires_at=now + TTL,
        job_id=new.job.id,
        request_id="req-1",
    )
    job = await job_queue.get(new.job.id)
    assert job is not None
    assert job.state is JobState.QUEUED
    assert job.payload == {"inbox_id": new.id}
    assert job.created_at == now


async def test_a_redelivered_event_is_a_duplicate_and_enqueues_nothing(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """The same (channel, event_id) again while the first entry lives: created=False with the
    first entry's id and job id; the second entry and its job are not stored."""
    now = clock.time()
    first = entry("wamid.2", now=now)
    original = await record_one(job_queue, first, now)
    again = entry("wamid.2", now=now + 60)
    assert again.job is not None
    duplicate = await record_one(job_queue, again, now + 60)
    assert duplicate == Recorded(original.id, False, original.job_id)
    assert await job_queue.get_inbound(again.id) is None
    assert await job_queue.get(again.job.id) is None
    assert await job_count(job_queue) == 1
    # recording the very same entry again is a duplicate too
    assert await record_one(job_queue, first, now + 61) == Recorded(
        original.id, False, original.job_id
    )


async def test_the_same_event_id_on_another_channel_is_another_event(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """Uniqueness is per channel: an equal event id on another channel is new."""
    now = clock.time()
    [a, b] = await job_queue.record_inbound(
        [entry("SM123", channel="twilio"), entry("SM123", channel="whatsapp")], now=now
    )
    assert a.created
    assert b.created
    assert a.id != b.id
    assert await job_count(job_queue) == 2


async def test_repeats_within_a_batch_name_the_first(job_queue: JobQueue, clock: FakeClock) -> None:
    """A batch holding one event twice creates it once: the repeat names the first entry and
    its job, and its own job is not enqueued; results keep the batch's order."""
    now = clock.time()
    batch = [entry("e-1"), entry("e-2"), entry("e-1"), entry("e-3", with_job=False)]
    results = await job_queue.record_inbound(batch, now=now)
    assert [r.created for r in results] == [True, True, False, True]
    assert results[2] == Recorded(results[0].id, False, results[0].job_id)
    assert results[0].id == batch[0].id
    assert results[3] == Recorded(batch[3].id, True, None)
    assert await job_count(job_queue) == 2
    repeat_job = batch[2].job
    assert repeat_job is not None
    assert await job_queue.get(repeat_job.id) is None
    assert len(await job_queue.find_inbound()) == 3


async def test_an_entry_without_a_job_is_recorded_alone(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """An entry may carry no job (a delivery status, say): it is recorded, its duplicates too
    name no job, and nothing is enqueued."""
    now = clock.time()
    new = entry("wamid.3:delivered", with_job=False)
    assert await record_one(job_queue, new, now) == Recorded(new.id, True, None)
    again = entry("wamid.3:delivered", with_job=False)
    assert await record_one(job_queue, again, now) == Recorded(new.id, False, None)
    assert await job_count(job_queue) == 0


async def test_an_empty_batch_records_nothing(job_queue: JobQueue, clock: FakeClock) -> None:
    """No entries, no results."""
    assert await job_queue.record_inbound([], now=clock.time()) == []


# -- expiry --------------------------------------------------------------------------------------


async def test_an_expired_entry_is_replaced_by_the_next_delivery(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """Until its expiry an entry makes redeliveries duplicates; from ``expires_at`` on, the next
    delivery is new: it replaces the old entry (new id, new job)."""
    now = clock.time()
    old = await record_one(job_queue, entry("order-9", ttl=100.0), now)
    before = await record_one(job_queue, entry("order-9"), now + 99.9)
    assert before == Recorded(old.id, False, old.job_id)

    fresh = entry("order-9", now=now + 100.0, ttl=50.0)
    assert fresh.job is not None
    replaced = await record_one(job_queue, fresh, now + 100.0)
    assert replaced == Recorded(fresh.id, True, fresh.job.id)
    assert await job_queue.get_inbound(old.id) is None
    stored = await job_queue.get_inbound(fresh.id)
    assert stored is not None
    assert (stored.received_at, stored.expires_at) == (now + 100.0, now + 150.0)
    assert await job_count(job_queue) == 2  # the old entry's job is left as it is
    assert [e.id for e in await job_queue.find_inbound()] == [fresh.id]


async def test_purge_deletes_only_expired_entries(job_queue: JobQueue, clock: FakeClock) -> None:
    """purge_inbound(now) deletes the entries with expires_at <= now and counts them; their
    events are new again afterwards. Jobs are not touched."""
    now = clock.time()
    short = entry("a", ttl=10.0)
    await job_queue.record_inbound([short, entry("b", ttl=20.0), entry("c", ttl=30.0)], now=now)
    assert await job_queue.purge_inbound(now=now + 5) == 0
    assert await job_queue.purge_inbound(now=now + 20) == 2
    assert [e.event_id for e in await job_queue.find_inbound()] == ["c"]
    assert await job_queue.get_inbound(short.id) is None
    assert await job_queue.purge_inbound(now=now + 20) == 0
    assert (await record_one(job_queue, entry("a"), now + 21)).created
    assert await job_count(job_queue) == 4


# -- jobs follow the enqueue rules ---------------------------------------------------------------


async def test_a_new_entry_whose_job_key_exists_names_the_existing_job(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """The job of a new entry is enqueued as enqueue() would: a known idempotency key enqueues
    nothing, and the entry names the job that has the key."""
    now = clock.time()
    existing = NewJob("inbound.handle", "inbound", {"inbox_id": "x"}, now, 3, idempotency_key="k")
    [enqueued] = await job_queue.enqueue([existing], now=now)
    new = entry("wamid.4", key="k")
    recorded = await record_one(job_queue, new, now)
    assert recorded == Recorded(new.id, True, enqueued.id)
    stored = await job_queue.get_inbound(new.id)
    assert stored is not None
    assert stored.job_id == enqueued.id
    assert await job_count(job_queue) == 1


async def test_new_entries_whose_jobs_share_a_key_share_one_job(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """Two new events in one batch whose jobs have the same idempotency key: both are created,
    one job is enqueued, and both entries name it."""
    now = clock.time()
    first, second = entry("m-1", key="same"), entry("m-2", key="same")
    assert first.job is not None
    results = await job_queue.record_inbound([first, second], now=now)
    assert results == [
        Recorded(first.id, True, first.job.id),
        Recorded(second.id, True, first.job.id),
    ]
    stored = await job_queue.get_inbound(second.id)
    assert stored is not None
    assert stored.job_id == first.job.id
    assert await job_count(job_queue) == 1


async def test_the_job_gets_its_state_and_status_flag(
    job_queue: JobQueue, job_store: Store, clock: FakeClock
) -> None:
    """A job due later is scheduled; its status flag is set pending in the same transaction; a
    duplicate's job touches no flag."""
    now = clock.time()
    flag = StatusFlag("session:9", "reply_status")
    new = entry("wamid.5", now=now, delay=30.0, flag=flag)
    assert new.job is not None
    await record_one(job_queue, new, now)
    job = await job_queue.get(new.job.id)
    assert job is not None
    assert job.state is JobState.SCHEDULED
    stored_flag = await job_store.kv.get(flag.key, now=now)
    assert stored_flag is not None
    assert stored_flag.value == {"reply_status": "pending"}

    other_flag = StatusFlag("session:10", "reply_status")
    await record_one(job_queue, entry("wamid.5", flag=other_flag), now)
    assert await job_store.kv.get(other_flag.key, now=now) is None


# -- atomicity -----------------------------------------------------------------------------------


async def _make_job_inserts_fail(job_backend: JobBackend) -> None:
    """A trigger that refuses any job named ``explode`` (a job insert failing mid-transaction)."""
    if job_backend.name == "sqlite":
        path, _, _ = parse_url(job_backend.url)
        with closing(sqlite3.connect(path)) as raw:
            raw.execute(
                "CREATE TRIGGER explode BEFORE INSERT ON antifragile_jobs "
                "WHEN NEW.name = 'explode' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
            raw.commit()
        return
    schema = '"' + job_backend.options["schema"] + '"'
    async with await psycopg.AsyncConnection.connect(job_backend.url, autocommit=True) as conn:
        await conn.execute(
            f"CREATE FUNCTION {schema}.explode() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF NEW.name = 'explode' THEN RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$"
        )
        await conn.execute(
            f"CREATE TRIGGER explode BEFORE INSERT ON {schema}.antifragile_jobs "
            f"FOR EACH ROW EXECUTE FUNCTION {schema}.explode()"
        )


async def test_a_failing_job_insert_leaves_no_inbox_entry(
    job_queue: JobQueue, job_backend: JobBackend, clock: FakeClock
) -> None:
    """When a job of the batch cannot be inserted, nothing of the batch is kept: no entry (so
    the provider's retry is not taken for a duplicate), no job, no status flag."""
    await _make_job_inserts_fail(job_backend)
    now = clock.time()
    flag = StatusFlag("session:11", "reply_status")
    batch = [entry("ok-1", flag=flag), entry("boom-1", name="explode")]
    with pytest.raises(StoreError):
        await job_queue.record_inbound(batch, now=now)
    assert await job_queue.find_inbound() == []
    assert await job_count(job_queue) == 0
    assert await job_queue.store.kv.get(flag.key, now=now) is None

    retried = await job_queue.record_inbound([entry("ok-1"), entry("boom-1")], now=now)
    assert [r.created for r in retried] == [True, True]
    assert await job_count(job_queue) == 2


# -- concurrency ---------------------------------------------------------------------------------


async def test_concurrent_deliveries_of_one_event_create_it_once(
    job_queue: JobQueue, job_backend: JobBackend, clock: FakeClock
) -> None:
    """Several connections (and several tasks on each) recording the same event at once:
    exactly one creates it and enqueues its job; every other call names that entry and job."""
    now = clock.time()
    others = [
        await open_store(job_backend.url, clock=clock, **job_backend.options) for _ in range(3)
    ]
    try:
        queues = [job_queue, *[await open_job_queue(store) for store in others]]
        for round_ in range(5):
            event = f"race-{round_}"
            calls = [
                queue.record_inbound([entry(event), entry(f"{event}-{i}")], now=now)
                for i, queue in enumerate(queues * 2)
            ]
            results = await asyncio.gather(*calls)
            firsts = [batch[0] for batch in results]
            created = [r for r in firsts if r.created]
            assert len(created) == 1, firsts
            assert {(r.id, r.job_id) for r in firsts} == {(created[0].id, created[0].job_id)}
            assert all(batch[1].created for batch in results)
        assert await job_count(job_queue) == 5 * (1 + len(queues) * 2)
    finally:
        for store in others:
            await store.close()


async def test_concurrent_deliveries_of_an_expired_event_replace_it_once(
    job_queue: JobQueue, job_backend: JobBackend, clock: FakeClock
) -> None:
    """Several connections redelivering an event whose entry expired, at once: exactly one
    replaces it, and every call names the new entry and its job, never the expired one."""
    now = clock.time()
    others = [
        await open_store(job_backend.url, clock=clock, **job_backend.options) for _ in range(3)
    ]
    try:
        queues = [job_queue, *[await open_job_queue(store) for store in others]]
        for round_ in range(5):
            event = f"stale-{round_}"
            old = await record_one(job_queue, entry(event, ttl=10.0), now)
            later = now + 10.0 + round_
            calls = [queue.record_inbound([entry(event)], now=later) for queue in queues * 2]
            results = [batch[0] for batch in await asyncio.gather(*calls)]
            created = [r for r in results if r.created]
            assert len(created) == 1, results
            assert {(r.id, r.job_id) for r in results} == {(created[0].id, created[0].job_id)}
            assert created[0].id != old.id
            assert await job_queue.get_inbound(old.id) is None
    finally:
        for store in others:
            await store.close()


# -- reading -------------------------------------------------------------------------------------


async def test_find_lists_newest_first_by_channel_with_paging(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """find_inbound: newest received first, optionally one channel's, limit and offset."""
    now = clock.time()
    for i, channel in enumerate(["whatsapp", "twilio", "whatsapp", "shopify", "whatsapp"]):
        await record_one(job_queue, entry(f"ev-{i}", channel=channel), now + i)
    everything = await job_queue.find_inbound()
    assert [e.event_id for e in everything] == ["ev-4", "ev-3", "ev-2", "ev-1", "ev-0"]
    whatsapp = await job_queue.find_inbound(channel="whatsapp")
    assert [e.event_id for e in whatsapp] == ["ev-4", "ev-2", "ev-0"]
    page = await job_queue.find_inbound(channel="whatsapp", limit=1, offset=1)
    assert [e.event_id for e in page] == ["ev-2"]
    assert await job_queue.find_inbound(channel="email") == []
    assert await job_queue.find_inbound(limit=0) == []


async def test_get_of_an_unknown_entry_is_none(job_queue: JobQueue) -> None:
    """An id never recorded is None."""
    assert await job_queue.get_inbound("no-such-entry") is None


async def test_any_json_payload_comes_back_unchanged(job_queue: JobQueue, clock: FakeClock) -> None:
    """The payload is stored as given: nested values, non-ASCII text and even the NUL character
    (which a sender may type) are recorded, not refused."""
    now = clock.time()
    payload = {"text": "caf\u00e9 \U0001f600 a\u0000b", "n": [1, 2.5, None, True], "o": {"k": ""}}
    new = entry("odd-1", payload=payload)
    assert (await record_one(job_queue, new, now)).created
    stored = await job_queue.get_inbound(new.id)
    assert stored is not None
    assert stored.payload == payload


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [0.0, -1.0, float("nan"), float("inf")])
def test_an_entry_needs_a_positive_ttl(ttl: float) -> None:
    """A ttl that is not a positive, finite number of seconds is refused when the entry is
    built."""
    with pytest.raises(ConfigurationError, match="ttl"):
        entry("e", ttl=ttl)


@pytest.mark.parametrize(("channel", "event_id"), [("", "e"), ("whatsapp", "")])
def test_an_entry_needs_a_channel_and_an_event_id(channel: str, event_id: str) -> None:
    """An entry without a channel or an event id could never be told from others: refused."""
    with pytest.raises(ConfigurationError, match="event id"):
        entry(event_id, channel=channel)


def test_an_event_id_with_a_nul_character_is_refused() -> None:
    """Identifiers with NUL (which no database text column holds) are refused when the entry is
    built, not by the database later."""
    with pytest.raises(ConfigurationError, match="event_id holds a NUL"):
        entry("wamid\x00x")


async def test_an_unencodable_payload_is_refused_before_anything_is_written(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """A payload that is not JSON is a ConfigurationError, and nothing of the batch is kept."""
    with pytest.raises(ConfigurationError):
        await job_queue.record_inbound([entry("a"), entry("b", payload={"x": object()})], now=0)
    assert await job_queue.find_inbound() == []
