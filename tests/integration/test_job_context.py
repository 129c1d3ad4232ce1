"""A job runs in the context of the request that enqueued it, end to end over real HTTP and a
real SQLite file: the worker makes the enqueuing request's id current, so the job's outbound
calls send it as ``x-request-id`` (recorded by a FlakyServer), its errors carry it, and a job
it enqueues inherits it. The service's ingest path stores the webhook request's id with the
``inbound.process`` job it creates.

Time is a FakeClock; ``run_until_idle`` runs every due job without waiting.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from antifragile import (
    FakeClock,
    InvalidRequestError,
    Policy,
    ResilientClient,
    Retry,
    UpstreamUnavailableError,
    request_context,
)
from antifragile.cli import app
from antifragile.inbound import Channel, EventKind, InboundEvent
from antifragile.inbound._pipeline import PROCESS_JOB
from antifragile.jobs import Job, JobContext, Jobs, JobState, Worker
from antifragile.sandbox import Fault, FlakyServer
from antifragile.service._admin import job_view
from antifragile.service._assistant import Assistant
from antifragile.service._settings import Settings


@pytest.fixture
async def jobs(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Jobs]:
    app = Jobs(database_url=f"sqlite:///{tmp_path / 'jobs.db'}", clock=clock)
    async with app:
        yield app


@pytest.fixture
async def server() -> AsyncIterator[FlakyServer]:
    async with FlakyServer() as running:
        yield running


@pytest.fixture
async def client(server: FlakyServer) -> AsyncIterator[ResilientClient]:
    policy = Policy("provider", timeout=5.0, retry=Retry(attempts=1), breaker=None)
    async with ResilientClient("provider", base_url=server.url, policy=policy) as opened:
        yield opened


async def test_an_outbound_call_from_a_job_sends_the_enqueuing_requests_id(
    jobs: Jobs, server: FlakyServer, client: ResilientClient
) -> None:
    """A job enqueued inside request "rid-42" calls a provider from a worker (another task,
    no request of its own): the provider receives ``x-request-id: rid-42``, and the job sees
    the same id as ``ctx.request_id``."""
    seen: list[str | None] = []

    @jobs.job(name="sync_contact")
    async def sync_contact(ctx: JobContext, contact: str) -> None:
        seen.append(ctx.request_id)
        await client.request("POST", "/contacts", json={"id": contact})

    with request_context("rid-42"):
        await sync_contact.enqueue("c-1")
    assert await Worker(jobs).run_until_idle() == 1
    [request] = server.requests
    assert request.headers["x-request-id"] == "rid-42"
    assert seen == ["rid-42"]


async def test_a_job_enqueued_by_a_job_inherits_the_request_id(
    jobs: Jobs, server: FlakyServer, client: ResilientClient
) -> None:
    """A job enqueues another while it runs: the second job carries the first one's request
    id, and its outbound call sends it."""

    @jobs.job(name="notify")
    async def notify(ctx: JobContext) -> None:
        await client.request("POST", "/notify")

    @jobs.job(name="handle")
    async def handle(ctx: JobContext) -> str:
        return (await notify.enqueue()).id

    with request_context("rid-7"):
        first = await handle.enqueue()
    worker = Worker(jobs)
    assert await worker.run_until_idle() == 2
    done = await jobs.get(first.id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    child = await jobs.get(done.result)
    assert child is not None
    assert child.context == {"request_id": "rid-7"}
    assert [r.headers["x-request-id"] for r in server.requests] == ["rid-7"]


async def test_jobs_without_a_request_get_an_id_of_their_own_per_run(
    jobs: Jobs, server: FlakyServer, client: ResilientClient
) -> None:
    """A job enqueued outside any request runs with a fresh request id: the one its call sends
    and its ``ctx.request_id`` agree, and two jobs do not share one."""
    seen: list[str | None] = []

    @jobs.job(name="ping")
    async def ping(ctx: JobContext) -> None:
        seen.append(ctx.request_id)
        await client.request("GET", "/ping")

    await ping.enqueue()
    await ping.enqueue()
    assert await Worker(jobs).run_until_idle() == 2
    sent = [r.headers["x-request-id"] for r in server.requests]
    assert sorted(sent) == sorted(s for s in seen if s is not None)
    assert len(set(sent)) == 2


async def test_the_error_of_a_failed_call_carries_the_request_id(
    jobs: Jobs, server: FlakyServer, client: ResilientClient
) -> None:
    """A provider failure raised inside the job names the enqueuing request's id, and so does
    the attempt's record in the job's history (the message of the error)."""
    server.script("/orders", [Fault.status(503)])
    caught: list[str | None] = []

    @jobs.job(name="create_order", retry=Retry(attempts=1))
    async def create_order(ctx: JobContext) -> None:
        try:
            await client.request("POST", "/orders")
        except UpstreamUnavailableError as exc:
            caught.append(exc.request_id)
            raise

    with request_context("rid-err"):
        enqueued = await create_order.enqueue()
    assert await Worker(jobs).run_until_idle() == 1
    assert caught == ["rid-err"]
    dead = await jobs.get(enqueued.id)
    assert dead is not None
    assert dead.state is JobState.DEAD
    assert dead.context == {"request_id": "rid-err"}
    assert "request_id=rid-err" in dead.history[-1]["message"]
    assert server.requests[0].headers["x-request-id"] == "rid-err"


async def test_ingest_stores_the_webhook_requests_id_with_the_process_job(
    tmp_path: Path,
) -> None:
    """``Assistant.ingest(events, request_id="rid-1")`` creates an ``inbound.process`` job
    whose context holds ``request_id: "rid-1"``; without a request id, the current request's
    is used, and a given one wins over the current one."""
    assistant = Assistant(Settings(database_url=f"sqlite:///{tmp_path / 'service.db'}"))
    await assistant.open()
    try:
        first = InboundEvent(Channel.WHATSAPP, "wamid.1", EventKind.MESSAGE, "acme", text="hi")
        second = InboundEvent(Channel.WHATSAPP, "wamid.2", EventKind.MESSAGE, "acme", text="yo")
        third = InboundEvent(Channel.WHATSAPP, "wamid.3", EventKind.MESSAGE, "acme", text="ok")
        fourth = InboundEvent(Channel.WHATSAPP, "wamid.4", EventKind.MESSAGE, "acme", text="no")
        [recorded] = await assistant.ingest([first], request_id="rid-1")
        with request_context("rid-outer"):
            [other] = await assistant.ingest([second], request_id=None)
            [same] = await assistant.ingest([third], request_id="rid-outer")
            [given] = await assistant.ingest([fourth], request_id="rid-given")
        expectations = (
            (recorded, "rid-1"),
            (other, "rid-outer"),
            (same, "rid-outer"),
            (given, "rid-given"),
        )
        for entry, expected in expectations:
            assert entry.created
            assert entry.job_id is not None
            job = await assistant.jobs.get(entry.job_id)
            assert job is not None
            assert job.name == PROCESS_JOB
            assert job.context == {"request_id": expected}
    finally:
        await assistant.close()


def test_dlq_show_and_the_admin_job_view_name_the_request_id(tmp_path: Path) -> None:
    """A dead job's request id -- the enqueuing request's -- is in the admin API's job view and
    in ``antifragile dlq show`` (table and JSON), so an operator can find that request's logs."""
    url = f"sqlite:///{tmp_path / 'dlq.db'}"

    async def dead_job() -> Job:
        jobs = Jobs(database_url=url, clock=FakeClock())

        @jobs.job(name="charge", retry=Retry(attempts=1))
        async def charge(ctx: JobContext) -> None:
            raise InvalidRequestError("card declined", status=402)

        async with jobs:
            with request_context("rid-dead"):
                enqueued = await charge.enqueue()
            await Worker(jobs).run_until_idle()
            job = await jobs.get(enqueued.id)
        assert job is not None
        assert job.state is JobState.DEAD
        return job

    dead = asyncio.run(dead_job())
    assert job_view(dead)["request_id"] == "rid-dead"
    runner = CliRunner()
    shown = runner.invoke(app, ["dlq", "show", dead.id, "--database-url", url, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["request_id"] == "rid-dead"
    table = runner.invoke(app, ["dlq", "show", dead.id, "--database-url", url])
    assert table.exit_code == 0, table.output
    assert "request id" in table.output
    assert "rid-dead" in table.output
