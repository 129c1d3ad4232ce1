"""Contract: a job's context (``NewJob.context`` -> ``Job.context``) round-trips through every
path that writes or reads jobs -- enqueue, the inbox's ``record_inbound``, the caller's
connection (transactional outbox), claim, get and find.

Every test runs on each job-queue backend (SQLite and PostgreSQL); time is a FakeClock.
"""

from __future__ import annotations

from typing import Any

from antifragile import FakeClock
from antifragile.jobs import JobFilter, JobQueue, NewInboxEntry, NewJob, new_job_id
from tests.contract.conftest import JobBackend

CONTEXT = {
    "request_id": "rid-0123456789abcdef",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=a:1,other=é✓",
}


def new_job(now: float, context: dict[str, str] | None, **fields: Any) -> NewJob:
    return NewJob(
        name="notify", queue="default", payload={"n": 1}, run_at=now, max_attempts=3,
        context=context, **fields,
    )  # fmt: skip


async def test_the_context_round_trips_through_enqueue_claim_get_and_find(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """A job enqueued with a context reads back with it from get, find and claim; a job
    enqueued without one (None or empty) reads back with an empty context."""
    now = clock.time()
    with_context = new_job(now, CONTEXT, priority=1)
    without = new_job(now, None)
    empty = new_job(now, {})
    await job_queue.enqueue([with_context, without, empty], now=now)
    for job_id, expected in ((with_context.id, CONTEXT), (without.id, {}), (empty.id, {})):
        stored = await job_queue.get(job_id)
        assert stored is not None
        assert stored.context == expected
    found = {job.id: job.context for job in await job_queue.find(JobFilter())}
    assert found == {with_context.id: CONTEXT, without.id: {}, empty.id: {}}
    claimed = await job_queue.claim(worker="w1", limit=3, lease=30.0, now=now)
    assert (claimed[0].id, claimed[0].context) == (with_context.id, CONTEXT)
    assert sorted(job.context == {} for job in claimed) == [False, True, True]


async def test_a_context_holds_any_string(job_queue: JobQueue, clock: FakeClock) -> None:
    """Values are stored as given -- quotes, backslashes, non-ASCII and a NUL character (a
    request id comes from a caller's header) -- and read back unchanged."""
    now = clock.time()
    odd = {"request_id": 'a"b\\c\x00d', "note": "Grüße ✓ \u2028"}
    new = new_job(now, odd)
    await job_queue.enqueue([new], now=now)
    [claimed] = await job_queue.claim(worker="w1", limit=1, lease=30.0, now=now)
    assert claimed.context == odd


async def test_the_job_of_an_inbox_entry_keeps_its_context(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """``record_inbound`` inserts the entry's job with its context."""
    now = clock.time()
    inbox_id = new_job_id()
    job = new_job(now, {"request_id": "rid-inbound"}, idempotency_key=f"inbound:{inbox_id}")
    entry = NewInboxEntry(
        channel="whatsapp",
        event_id="wamid.1",
        kind="message",
        tenant_key="acme",
        payload={"text": "hi"},
        ttl=3600.0,
        job=job,
        id=inbox_id,
        request_id="rid-inbound",
    )
    [recorded] = await job_queue.record_inbound([entry], now=now)
    assert recorded.created
    assert recorded.job_id == job.id
    stored = await job_queue.get(job.id)
    assert stored is not None
    assert stored.context == {"request_id": "rid-inbound"}


async def test_a_job_enqueued_on_the_callers_connection_keeps_its_context(
    job_queue: JobQueue, job_backend: JobBackend, clock: FakeClock
) -> None:
    """The transactional outbox (an SQLAlchemy connection on the same database) writes the
    context too."""
    from sqlalchemy import create_engine

    if job_backend.name == "sqlite":
        engine = create_engine(job_backend.url)
    else:
        engine = create_engine(
            job_backend.url.replace("postgresql://", "postgresql+psycopg://", 1),
            connect_args={"options": f"-c search_path={job_backend.options['schema']}"},
        )
    now = clock.time()
    new = new_job(now, {"request_id": "rid-outbox"})
    try:
        with engine.connect() as connection:
            await job_queue.enqueue([new], now=now, connection=connection)
            connection.commit()
    finally:
        engine.dispose()
    stored = await job_queue.get(new.id)
    assert stored is not None
    assert stored.context == {"request_id": "rid-outbox"}
