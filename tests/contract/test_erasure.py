"""Contract: erasure finds every record about one person -- inbox entries, finished and dead
jobs, waiting jobs (cancelled), key-value records (sessions, outbound messages, tasks),
idempotency records -- by phone number or email address, in any spelling or as its
reference, deletes them and nothing else, leaves a running job to its worker, and is
idempotent; ``delete_inbound`` deletes entries by id, ``cancel`` waiting jobs only.

Every test runs on each job-queue backend (memory, SQLite, PostgreSQL in its own schema).
"""

from __future__ import annotations

from typing import Any

import pytest

from antifragile import ConfigurationError, FakeClock, InvalidRequestError
from antifragile.inbound import Sessions
from antifragile.inbound._erasure import erase
from antifragile.jobs import JobContext, JobFilter, JobQueue, Jobs, JobState, NewInboxEntry, Worker
from antifragile.observability import reference
from antifragile.stores import IdempotencyStatus, Store

PHONE, OTHER_PHONE = "+447700900123", "+447700900999"
EMAIL, OTHER_EMAIL = "Ada@Example.com", "grace@example.com"


def inbox_entry(event_id: str, sender: str, text: str) -> NewInboxEntry:
    return NewInboxEntry(
        channel="whatsapp",
        event_id=event_id,
        kind="message",
        tenant_key="1234",
        payload={"sender": sender.lstrip("+"), "text": text},
        ttl=7 * 86400.0,
        job=None,
    )


async def populate(jobs: Jobs, store: Store, clock: FakeClock) -> None:
    """Two customers' records everywhere a person can be found."""

    @jobs.job(queue="crm")
    async def greet(ctx: JobContext, customer_email: str) -> dict[str, Any]:
        return {"greeted": EMAIL if customer_email == reference(EMAIL) else OTHER_EMAIL}

    @jobs.job(queue="crm")
    async def refuse(ctx: JobContext, order: str) -> None:
        phone = PHONE if order == "o-1" else OTHER_PHONE
        raise InvalidRequestError(f"the CRM refused {phone}", provider="crm", status=400)

    @jobs.job(queue="later")
    async def remind(ctx: JobContext, phone_number: str) -> None:
        raise AssertionError("never runs in this test")

    await greet.enqueue(EMAIL)
    await greet.enqueue(OTHER_EMAIL)
    await refuse.enqueue("o-1")
    await refuse.enqueue("o-2")
    await remind.configure(delay=86400).enqueue(PHONE)
    await Worker(jobs).run_until_idle()
    now = clock.time()
    await jobs.queue.record_inbound(
        [
            inbox_entry("wamid.1", PHONE, "hello"),
            inbox_entry("wamid.2", PHONE, f"mail me at {EMAIL.lower()}"),
            inbox_entry("wamid.3", OTHER_PHONE, f"mail me at {OTHER_EMAIL}"),
        ],
        now=now,
    )
    kv = store.kv
    for phone, email in ((PHONE, EMAIL), (OTHER_PHONE, OTHER_EMAIL)):
        key = Sessions.key_for("shop", phone)
        await kv.set(key, {"phone": phone.lstrip("+"), "fields": {"email": email}}, now=now)
        await kv.set(f"outmsg:{phone[-3:]}", {"to": f"whatsapp:{phone}", "text": "hi"}, now=now)
    await kv.set("task:t1", {"title": f"Call {PHONE[:3]} {PHONE[3:7]} {PHONE[7:]}"}, now=now)
    await kv.set("template:x", {"subject": "not about anyone", "text": "1447700900123"}, now=now)
    idempotency = store.idempotency
    for key, result in (
        (f"welcome:{reference(PHONE)}", {"sent": True}),
        ("receipt:o-1", {"sent_to": f"whatsapp:{PHONE}"}),
        (f"welcome:{reference(OTHER_PHONE)}", {"sent": True}),
    ):
        await idempotency.claim(key, owner="w1", now=now, ttl=3600)
        await idempotency.complete(
            key, owner="w1", status=IdempotencyStatus.SUCCEEDED, result=result, now=now, ttl=3600
        )


@pytest.fixture
async def jobs(job_queue: JobQueue, clock: FakeClock) -> Jobs:
    return Jobs(job_queue, clock=clock)


async def test_erasure_by_phone_deletes_that_persons_records_and_nothing_else(
    jobs: Jobs, job_store: Store, clock: FakeClock
) -> None:
    await populate(jobs, job_store, clock)

    # a dead job's error names the person by reference only
    (refused,) = [
        job
        for job in await jobs.queue.find(JobFilter(states=(JobState.DEAD,)))
        if job.payload == {"order": "o-1"}
    ]
    assert refused.last_error == f"crm: the CRM refused {reference(PHONE)} (HTTP 400)"
    assert PHONE[1:] not in str(refused.history)
    dry = await erase(jobs, phone="0044 7700 900123".replace("0044", "+44"), dry_run=True)
    report = await erase(jobs, phone=PHONE)

    expected = {
        "inbox": 2,
        "jobs": 0,
        "dlq": 1,
        "sessions": 1,
        "outbound_messages": 1,
        "tasks": 1,
        "jobs_cancelled": 1,  # the reminder waited: it is not run for an erased person
        "idempotency": 2,  # by its reference in the key, by the number in the result
    }
    assert dry.counts == expected
    assert dry.dry_run is True
    assert report.counts == expected
    assert report.jobs_pending == 0
    assert await jobs.queue.find(JobFilter(name="remind")) == []
    left = await job_store.idempotency.scan("", now=clock.time())
    assert [r.key for r in left] == [f"welcome:{reference(OTHER_PHONE)}"]
    inbox = await jobs.queue.find_inbound()
    assert [e.payload["sender"] for e in inbox] == [OTHER_PHONE.lstrip("+")]
    dead = await jobs.queue.find(JobFilter(states=(JobState.DEAD,)))
    assert [job.payload for job in dead] == [{"order": "o-2"}]
    assert await job_store.kv.get(Sessions.key_for("shop", PHONE), now=clock.time()) is None
    assert await job_store.kv.get(Sessions.key_for("shop", OTHER_PHONE), now=clock.time())
    assert await job_store.kv.get("template:x", now=clock.time()) is not None  # longer number

    again = await erase(jobs, phone=PHONE)
    assert again.total == 0


async def test_erasure_by_email_finds_it_in_any_case_and_as_its_reference(
    jobs: Jobs, job_store: Store, clock: FakeClock
) -> None:
    await populate(jobs, job_store, clock)

    report = await erase(jobs, email=EMAIL.upper())

    assert report.counts["inbox"] == 1
    assert report.counts["jobs"] == 1  # greet: reference in its payload, address in its result
    assert report.counts["sessions"] == 1
    succeeded = await jobs.queue.find(JobFilter(states=(JobState.SUCCEEDED,)))
    assert [job.result for job in succeeded] == [{"greeted": OTHER_EMAIL}]
    assert (await erase(jobs, email=EMAIL)).total == 0


async def test_a_running_job_is_left_to_its_worker_and_a_waiting_one_is_cancelled(
    jobs: Jobs, clock: FakeClock
) -> None:
    """A job a worker holds is not deleted under it (``jobs_pending``); one waiting is
    cancelled; once the running one has finished, erasing again deletes it and finds
    nothing else."""

    @jobs.job(queue="crm")
    async def notify(ctx: JobContext, phone_number: str) -> None:
        return None

    await notify.enqueue(PHONE)
    await jobs.open()
    (held,) = await jobs.queue.claim(worker="w1", limit=1, lease=600, now=clock.time())
    assert held.payload == {"phone_number": reference(PHONE)}
    other = await notify.enqueue(OTHER_PHONE)
    await notify.configure(delay=60).enqueue(PHONE)

    report = await erase(jobs, phone=PHONE)

    assert report.counts["jobs_cancelled"] == 1
    assert report.jobs_pending == 1
    assert report.to_json()["jobs_pending"] == 1
    remaining = await jobs.queue.find(JobFilter())
    assert sorted(job.id for job in remaining) == sorted([held.id, other.id])
    await Worker(jobs).run_until_idle()  # the held job's lease is its worker's: not taken
    clock.advance(601)
    await Worker(jobs).run_until_idle()  # taken over and finished
    after = await erase(jobs, phone=PHONE)
    assert after.counts["jobs"] == 1
    assert after.jobs_pending == 0
    assert (await erase(jobs, phone=PHONE)).total == 0


async def test_cancel_deletes_only_waiting_jobs(jobs: Jobs, clock: FakeClock) -> None:
    @jobs.job(queue="q")
    async def step(ctx: JobContext, n: int) -> int:
        return n

    first = await step.enqueue(1)
    await jobs.open()
    (held,) = await jobs.queue.claim(worker="w1", limit=1, lease=600, now=clock.time())
    assert held.id == first.id
    second = await step.enqueue(2)
    third = await step.configure(delay=60).enqueue(3)
    assert await jobs.queue.cancel([first.id, second.id, third.id, "nope", second.id]) == 2
    assert [job.id for job in await jobs.queue.find(JobFilter())] == [first.id]
    assert await jobs.queue.cancel([]) == 0


async def test_erasure_needs_someone_well_formed(jobs: Jobs) -> None:
    with pytest.raises(ConfigurationError, match="phone number or an email"):
        await erase(jobs)
    with pytest.raises(ConfigurationError, match="7 to 15 digits"):
        await erase(jobs, phone="+12")
    with pytest.raises(ConfigurationError, match="not an email"):
        await erase(jobs, email="nobody")


async def test_delete_inbound_deletes_the_entries_named(
    job_queue: JobQueue, clock: FakeClock
) -> None:
    recorded = await job_queue.record_inbound(
        [inbox_entry(f"wamid.{i}", PHONE, "hi") for i in range(3)], now=clock.time()
    )
    ids = [r.id for r in recorded]
    assert await job_queue.delete_inbound([ids[0], ids[2], ids[0], "nope"]) == 2
    assert [e.id for e in await job_queue.find_inbound()] == [ids[1]]
    assert await job_queue.delete_inbound([]) == 0
    assert await job_queue.get_inbound(ids[0]) is None
    # the event may be recorded again: its dedup record went with it
    (again,) = await job_queue.record_inbound([inbox_entry("wamid.0", PHONE, "hi")], now=0)
    assert again.created
