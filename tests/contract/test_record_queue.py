"""Contract: ``save_and_enqueue`` writes a key-value record and enqueues the jobs it causes in one
transaction (a conversation completed together with its action jobs), on each job-queue backend
(SQLite, PostgreSQL and memory). Time is a FakeClock.
"""

from __future__ import annotations

import pytest

from antifragile import FakeClock
from antifragile.errors import StoreError
from antifragile.jobs import JobFilter, JobQueue, NewJob, RecordQueue, StatusFlag
from tests.contract.conftest import JobBackend
from tests.contract.test_inbox import _make_job_inserts_fail

KEY = "session:acme:0123abcd"


def job(name: str, key: str, field: str = "") -> NewJob:
    flag = StatusFlag(KEY, field) if field else None
    return NewJob(
        name=name,
        queue="integrations",
        run_at=0.0,
        max_attempts=3,
        payload={"session_key": KEY},
        idempotency_key=key,
        status_flag=flag,
    )


def record(step: int) -> dict[str, object]:
    return {"key": KEY, "step": step, "email_status": "none"}


async def test_the_record_and_its_jobs_are_written_together(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """Created, then replaced at its version: each time the entry and the new jobs are there
    together, the jobs' status flags pending in the entry returned; a known idempotency key
    names the existing job (created False)."""
    assert isinstance(job_queue, RecordQueue)
    now = clock.time()
    created = await job_queue.save_and_enqueue(
        KEY, record(1), expected_version=None, jobs=[], now=now, ttl=3600.0
    )
    assert created is not None
    saved, enqueued = created
    assert (saved.value, saved.version, enqueued) == (record(1), 1, [])

    first = job("sessions.summary_email", "email:1", "email_status")
    done = await job_queue.save_and_enqueue(
        KEY,
        record(2),
        expected_version=saved.version,
        jobs=[first, job("sessions.slack", "slack:1")],
        now=now,
        ttl=3600.0,
    )
    assert done is not None
    saved, enqueued = done
    assert [e.created for e in enqueued] == [True, True]
    assert enqueued[0].id == first.id
    assert saved.value == {**record(2), "email_status": "pending"}
    assert saved.expires_at == pytest.approx(now + 3600.0)
    stored = await job_queue.store.kv.get(KEY, now=now)
    assert stored is not None
    assert (stored.value, stored.version) == (saved.value, saved.version)
    assert len(await job_queue.find(JobFilter())) == 2

    again = await job_queue.save_and_enqueue(
        KEY, record(3), expected_version=saved.version, jobs=[job("x", "email:1")], now=now
    )
    assert again is not None
    assert again[1][0].id == first.id
    assert not again[1][0].created


async def test_a_stale_version_writes_nothing_and_enqueues_nothing(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """A compare-and-set that loses (another writer changed the entry) keeps neither the
    record nor the jobs: ``None``, and the queue is as it was."""
    assert isinstance(job_queue, RecordQueue)
    now = clock.time()
    await job_queue.store.kv.set(KEY, record(1), now=now)
    assert (
        await job_queue.save_and_enqueue(
            KEY, record(9), expected_version=None, jobs=[job("a", "a:1")], now=now
        )
        is None
    )
    assert (
        await job_queue.save_and_enqueue(
            KEY, record(9), expected_version=7, jobs=[job("a", "a:1")], now=now
        )
        is None
    )
    stored = await job_queue.store.kv.get(KEY, now=now)
    assert stored is not None
    assert stored.value == record(1)
    assert await job_queue.find(JobFilter()) == []


async def test_a_failing_job_insert_keeps_the_record_unchanged(
    job_queue: JobQueue, job_backend: JobBackend, clock: FakeClock
) -> None:
    """When a job cannot be inserted (a trigger refuses it mid-transaction), the record's
    change is rolled back with it: the entry keeps its old value and version, no job and no
    status flag is left -- a completed record never exists without its jobs."""
    assert isinstance(job_queue, RecordQueue)
    await _make_job_inserts_fail(job_backend)
    now = clock.time()
    before = await job_queue.store.kv.set(KEY, record(1), now=now)
    with pytest.raises(StoreError):
        await job_queue.save_and_enqueue(
            KEY,
            record(2),
            expected_version=before.version,
            jobs=[job("ok", "ok:1", "email_status"), job("explode", "boom:1")],
            now=now,
        )
    stored = await job_queue.store.kv.get(KEY, now=now)
    assert stored is not None
    assert (stored.value, stored.version) == (record(1), before.version)
    assert await job_queue.find(JobFilter()) == []


async def test_entries_alongside_are_created_with_the_record_or_not_at_all(
    job_queue: JobQueue, job_backend: JobBackend, clock: FakeClock
) -> None:
    """Entries *alongside* the record are created in its transaction when absent (with its
    ttl), a live one is kept as it is, a job's status flag may name one of them; a stale
    version writes none of them, and a job that cannot be inserted takes them back with the
    record."""
    assert isinstance(job_queue, RecordQueue)
    kv = job_queue.store.kv
    now = clock.time()
    await kv.set("kept", {"first": True}, now=now)
    message = NewJob(
        name="replies.send",
        queue="replies",
        run_at=0.0,
        max_attempts=3,
        payload={"message_id": "m1"},
        idempotency_key="reply:1",
        status_flag=StatusFlag("outmsg:m1", "status"),
    )
    saved = await job_queue.save_and_enqueue(
        KEY,
        record(1),
        expected_version=None,
        jobs=[message],
        now=now,
        ttl=600.0,
        alongside={"outmsg:m1": {"text": "hi"}, "kept": {"first": False}},
    )
    assert saved is not None
    assert saved[0].value == record(1)
    outmsg = await kv.get("outmsg:m1", now=now)
    assert outmsg is not None
    assert outmsg.value == {"text": "hi", "status": "pending"}
    assert outmsg.expires_at == pytest.approx(now + 600.0)
    kept = await kv.get("kept", now=now)
    assert kept is not None
    assert kept.value == {"first": True}

    stale = await job_queue.save_and_enqueue(
        KEY, record(2), expected_version=None, jobs=[], now=now, alongside={"other": 1}
    )
    assert stale is None
    assert await kv.get("other", now=now) is None

    await _make_job_inserts_fail(job_backend)
    with pytest.raises(StoreError):
        await job_queue.save_and_enqueue(
            KEY,
            record(2),
            expected_version=saved[0].version,
            jobs=[job("explode", "boom:1")],
            now=now,
            alongside={"other": 1},
        )
    assert await kv.get("other", now=now) is None
    stored = await kv.get(KEY, now=now)
    assert stored is not None
    assert stored.value == record(1)


#: a text that JSON escapes (quotes, a backslash, a newline, a control character) and that is
#: not ASCII
TEXT = 'Olá "Zoë" \\ \n\x01 ✓'


def _reply_job(message: str, key: str) -> NewJob:
    return NewJob(
        name="replies.send",
        queue="replies",
        run_at=0.0,
        max_attempts=3,
        payload={"message_id": message},
        idempotency_key=key,
        status_flag=StatusFlag(f"outmsg:{message}", "status"),
    )


async def test_status_flags_land_only_with_the_jobs_that_were_inserted(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    """A job's status flag is set pending in the entry it names -- created alongside, kept
    alongside or elsewhere -- exactly when the job is inserted: a job whose idempotency key
    is known already (the existing job is named) leaves a newly created entry as given."""
    assert isinstance(job_queue, RecordQueue)
    kv = job_queue.store.kv
    now = clock.time()
    await kv.set("outmsg:m2", {"text": "first"}, now=now)
    await kv.set("outmsg:m4", {"text": "elsewhere"}, now=now)
    [existing] = await job_queue.enqueue([job("replies.send", "reply:3")], now=now)
    saved = await job_queue.save_and_enqueue(
        KEY,
        record(1),
        expected_version=None,
        jobs=[_reply_job("m2", "reply:2"), _reply_job("m3", "reply:3"), _reply_job("m4", "r4")],
        now=now,
        ttl=600.0,
        alongside={"outmsg:m2": {"text": "second"}, "outmsg:m3": {"text": TEXT}},
    )
    assert saved is not None
    kept, named, elsewhere = saved[1]
    assert (kept.created, named.created, elsewhere.created) == (True, False, True)
    assert named.id == existing.id
    values = {k: await kv.get(f"outmsg:{k}", now=now) for k in ("m2", "m3", "m4")}
    assert {k: v.value if v else None for k, v in values.items()} == {
        "m2": {"text": "first", "status": "pending"},
        "m3": {"text": TEXT},
        "m4": {"text": "elsewhere", "status": "pending"},
    }
    assert len(await job_queue.find(JobFilter())) == 3
