"""A backlog of HubSpot contact jobs drains in batch upserts (SQLite file and memory queues,
the HubSpot simulator over real HTTP): while HubSpot's breaker is open the jobs wait; when it
closes, a worker running 100 jobs at once sends one ``batch/upsert`` per 100 contacts, each job
completes with its own contact, and an invalid email fails only its own job.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from antifragile import CircuitBreaker, FakeClock, Policy, Retry, TokenBucket
from antifragile.connectors import HubSpotConnector
from antifragile.jobs import Coalescer, JobContext, Jobs, MemoryJobQueue
from antifragile.sandbox import HubSpotSimulator, ProviderFault, ProviderSandbox

TOKEN = "pat-na1-test-token"
UPSERT = "POST /crm/v3/objects/contacts/batch/upsert"
#: the contact whose email HubSpot cannot take
INVALID = 17


def email_of(number: int) -> str:
    # payloads carry a number, never the email (no personal data in job payloads)
    return "no-at-sign.example.com" if number == INVALID else f"c{number}@example.com"


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[ProviderSandbox]:
    simulator = HubSpotSimulator(tokens=[TOKEN], burst=10_000, clock=clock.monotonic)
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture(params=["sqlite", "memory"])
async def jobs(request: Any, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Jobs]:
    if request.param == "sqlite":
        opened = Jobs(database_url=f"sqlite:///{tmp_path / 'backlog.db'}", clock=clock)
    else:
        opened = Jobs(MemoryJobQueue(), clock=clock)
    async with opened:
        yield opened


@pytest.fixture
async def hubspot(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[HubSpotConnector]:
    policy = Policy(
        "hubspot", rate=TokenBucket(1000, burst=1000), clock=clock, retry=Retry(attempts=2)
    )
    async with HubSpotConnector(
        TOKEN, base_url=sandbox.base_url("hubspot"), policy=policy, clock=clock
    ) as connector:
        yield connector


def upserts(sandbox: ProviderSandbox) -> list[int]:
    """The number of contacts in each batch upsert the simulator answered."""
    return [len(r.json()["inputs"]) for r in sandbox.requests if r.path.endswith("batch/upsert")]


async def test_a_backlog_after_an_outage_drains_in_batches(
    jobs: Jobs, hubspot: HubSpotConnector, sandbox: ProviderSandbox, clock: FakeClock
) -> None:
    """250 contact jobs held back by an open breaker: 3 batch requests once it closes (100,
    100, 50), every contact upserted once, the invalid email's job dead and no other."""
    from antifragile.inbound._hubspot_contacts import contact_coalescer, upsert_contact

    @jobs.job("contacts.upsert", queue="integrations", provider="hubspot", retry=Retry(attempts=3))
    async def upsert(ctx: JobContext, number: int) -> str:
        return (await upsert_contact(hubspot, email_of(number), {"firstname": f"N{number}"})).id

    breaker = CircuitBreaker("hubspot", clock=clock)
    jobs.breakers = {"hubspot": breaker}
    breaker.force_open()  # HubSpot is down: the contact jobs pile up
    await jobs.enqueue_many(upsert.prepare(n) for n in range(250))
    worker = jobs.worker(concurrency=100, batch=100, prefetch=0)
    await worker.run_until_idle()
    assert worker.counts["defer"] == 250
    assert upserts(sandbox) == []

    breaker.reset()  # HubSpot is back: every deferred job is due at once
    await worker.run_until_idle()

    # three requests of at most 100 jobs each; the invalid email never leaves
    assert sorted(upserts(sandbox)) == [50, 99, 100]
    contacts = sandbox.simulator("hubspot").contacts  # type: ignore[attr-defined]
    emails = sorted(c["properties"]["email"] for c in contacts.values())
    assert emails == sorted(email_of(n) for n in range(250) if n != INVALID)
    assert worker.counts["succeeded"] == 249
    assert worker.counts["dead"] == 1
    dead = await jobs.dlq.list()
    assert [upsert.decode(d)[1] for d in dead] == [{"number": INVALID}]
    assert dead[0].last_error_code == "VALIDATION"
    assert contact_coalescer(hubspot).batches == 3


async def test_a_transient_batch_failure_retries_every_job_of_it(
    jobs: Jobs, hubspot: HubSpotConnector, sandbox: ProviderSandbox, clock: FakeClock
) -> None:
    """A 503 on the batch (past the connector's retries) fails all of its jobs alike: each
    is retried, and the next round upserts them in one batch, once each."""
    from antifragile.inbound._hubspot_contacts import upsert_contact

    @jobs.job("contacts.upsert", queue="integrations", provider="hubspot")
    async def upsert(ctx: JobContext, number: int) -> str:
        return (await upsert_contact(hubspot, email_of(number), {})).id

    sandbox.faults("hubspot", UPSERT, script=[ProviderFault.error(503)] * 2)
    await jobs.enqueue_many(upsert.prepare(n) for n in range(40, 60))
    worker = jobs.worker(concurrency=100, batch=100, prefetch=0)
    await worker.run_until_idle()
    assert worker.counts["retry"] == 20
    clock.advance(600)
    await worker.run_until_idle()
    assert worker.counts["succeeded"] == 20
    assert upserts(sandbox) == [20, 20, 20]  # two refused attempts, then the one that took
    contacts = sandbox.simulator("hubspot").contacts  # type: ignore[attr-defined]
    assert len(contacts) == 20


async def test_the_coalescer_answers_each_item_and_fails_a_batch_alike() -> None:
    """Pure logic: items submitted at once share one call; an exception in an item's place
    goes to that caller; an exception of the call goes to every caller of the batch."""
    calls: list[list[int]] = []

    async def send(items: list[int]) -> list[int | Exception]:
        calls.append(items)
        if 99 in items:
            raise ConnectionError("down")
        return [ValueError(n) if n < 0 else n * 2 for n in items]

    coalescer: Coalescer[int, int] = Coalescer(send, max_size=3, linger=0)
    answers = await asyncio.gather(
        *(coalescer.submit(n) for n in [1, -2, 3, 4]), return_exceptions=True
    )
    assert calls == [[1, -2, 3], [4]]
    assert [answers[0], answers[2], answers[3]] == [2, 6, 8]
    assert isinstance(answers[1], ValueError)
    failed = await asyncio.gather(coalescer.submit(99), coalescer.submit(5), return_exceptions=True)
    assert all(isinstance(a, ConnectionError) for a in failed)
    await coalescer.drain()
    assert (coalescer.batches, coalescer.items) == (3, 6)


async def test_a_batch_refused_for_its_content_is_sent_one_by_one(
    hubspot: HubSpotConnector, sandbox: ProviderSandbox
) -> None:
    """A 400 on a batch: each contact is sent alone, so only those HubSpot refuses get an
    error; a repeated email is sent once and answered alike; a malformed one is not sent."""
    sandbox.faults("hubspot", UPSERT, script=[ProviderFault.error(400), ProviderFault.error(400)])
    answers = await hubspot.upsert_contacts_each(
        [("a@example.com", {}), ("b@example.com", {}), ("A@example.com", {}), ("nope", {})]
    )
    assert upserts(sandbox) == [2, 1, 1]  # the batch, then a (refused) and b alone
    assert [type(a).__name__ for a in answers] == [
        "InvalidRequestError",
        "Contact",
        "InvalidRequestError",
        "InvalidRequestError",
    ]
    assert answers[0] is answers[2]
