"""Replies whose outcome is unknown wait for the provider's echo, end to end.

The service's own assistant on a SQLite file, served by uvicorn, with a :class:`FakeClock` for
the windows; WhatsApp is the sandbox over real HTTP, which loses answers (the message is sent,
the connection reset) and posts its signed status webhooks back to the service. A worker runs the
reply jobs and the ``inbound.process`` jobs that record the statuses.

What they prove: an ambiguous send is deferred without spending an attempt and settled by the
status that echoes its correlation -- sent once, never again, nothing in the dead-letter queue;
a send whose statuses are lost goes to review once the window passes; a ``failed`` status with
a permanent code fails it for good; one with another code sends it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from antifragile import FakeClock
from antifragile.connectors import correlation_for
from antifragile.inbound import Channel, Echo, Echoes
from antifragile.jobs import JobContext, JobFilter, JobState
from antifragile.sandbox import ProviderFault, ProviderSandbox, WhatsAppSimulator
from antifragile.service import Settings, create_app
from antifragile.service._assistant import Assistant
from tests.integration.test_metrics_endpoint import serving

WA_SECRET = "wa-echo-secret"
WA_TOKEN = "EAAG-echo-token"
PHONE_ID = "106540352242922"
SEND = "POST /{version}/{phone_number_id}/messages"


@dataclass
class World:
    clock: FakeClock
    assistant: Assistant
    sandbox: ProviderSandbox

    async def work(self) -> None:
        await self.assistant.worker(poll_interval=0.01).run_until_idle()

    async def round(self, seconds: float = 0.0) -> None:
        """Run what is due, let the sandbox post its statuses, record them; then let
        *seconds* pass."""
        await self.work()
        # the service answers in this loop: wait for the sender's thread from another thread
        assert await asyncio.to_thread(self.sandbox.webhooks.wait_idle, 60)
        await self.work()
        self.clock.advance(seconds)

    async def reply(self, n: int, text: str = "Thanks!") -> str:
        return await self.assistant.replies.send(
            tenant=self.assistant.tenants[0],
            channel=Channel.WHATSAPP,
            to=f"4477009{n:05d}",
            text=f"{text} #{n}",
            key=f"reply-{n}",
        )

    async def record(self, message_id: str) -> dict[str, Any]:
        found = await self.assistant.replies.get(message_id)
        assert found is not None
        return found

    def sends_of(self, message_id: str) -> int:
        ref = correlation_for(message_id)
        return sum(
            1
            for effect in self.sandbox.effects("whatsapp")
            if effect.data.get("biz_opaque_callback_data") == ref
        )


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    simulator = WhatsAppSimulator(
        access_tokens=[WA_TOKEN],
        phone_number_ids=[PHONE_ID],
        throughput=10**6,
        app_secret=WA_SECRET,
    )
    clock = FakeClock()
    with ProviderSandbox([simulator], time_scale=0.001, webhook_interval=0.005) as sandbox:
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_BASE_URL", sandbox.base_url("whatsapp"))
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN", WA_TOKEN)
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID", PHONE_ID)
        settings = Settings.from_env(
            {
                "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
                "ANTIFRAGILE_WHATSAPP_APP_SECRET": WA_SECRET,
            }
        )
        assistant = Assistant(settings, clock=clock)
        app = create_app(settings, assistant=assistant)
        async with serving(app) as url, httpx.AsyncClient(base_url=url):
            sandbox.webhooks.configure("whatsapp", f"{url}/v1/webhooks/whatsapp")
            yield World(clock, assistant, sandbox)


async def test_ambiguous_sends_are_settled_by_their_echo_exactly_once(world: World) -> None:
    """30% of WhatsApp sends lose their answer after the message went out. Each such job is
    deferred (no attempt spent) awaiting the echo of its correlation; the sandbox's ``sent``
    status settles it: every reply reaches its contact exactly once, every record says ``sent``
    with the provider's message id, and the dead-letter queue stays empty."""
    world.sandbox.faults("whatsapp", SEND, chaos=[(0.3, ProviderFault.ambiguous())], seed=7)
    ids = [await world.reply(n) for n in range(40)]
    unfinished = (JobState.QUEUED, JobState.RETRYING, JobState.SCHEDULED, JobState.RUNNING)
    for _ in range(40):  # the breaker may open under the failures: rounds until all are done
        await world.round(15.0)
        if not await world.assistant.jobs.find(JobFilter(states=unfinished), limit=1):
            break
    assert await world.assistant.jobs.dlq.list() == []
    jobs = await world.assistant.jobs.find(JobFilter(name="replies.send"), limit=100)
    assert {job.state for job in jobs} == {JobState.SUCCEEDED}
    echoed = [job for job in jobs if isinstance(job.result, dict) and job.result["how"] == "echoed"]
    assert echoed, "the chaos made some sends ambiguous"
    assert all(job.attempts == 1 for job in jobs)  # waiting spent no attempt
    for message_id in ids:
        assert world.sends_of(message_id) == 1
        record = await world.record(message_id)
        assert record["status"] == "sent"
        assert record["provider_message_id"]
        assert (record["sending_since"], record["awaiting_since"]) == (None, None)


async def test_lost_statuses_send_the_reply_to_review_after_the_window(world: World) -> None:
    """An ambiguous send whose status webhooks are all lost waits out WhatsApp's 10-minute
    window, then goes to the dead-letter queue for review: unknowable, with the message id as
    its reconcile key and neither the number nor the text; it was never sent twice."""
    world.sandbox.faults("whatsapp", SEND, script=[ProviderFault.ambiguous()])
    world.sandbox.faults("whatsapp", "webhooks", script=[ProviderFault.lost_webhooks()])
    message_id = await world.reply(1, "Your order")
    await world.round(300.0)
    assert await world.assistant.jobs.dlq.list() == []
    assert (await world.record(message_id))["awaiting_since"] is not None
    await world.round(301.0)
    await world.round()
    (dead,) = await world.assistant.jobs.dlq.list()
    assert dead.last_error_code == "UPSTREAM_ERROR"
    assert message_id in (dead.last_error or "")
    assert "447700900001" not in (dead.last_error or "")
    assert "Your order" not in (dead.last_error or "")
    assert world.sends_of(message_id) == 1
    assert (await world.record(message_id))["status"] == "failed"


async def test_a_permanent_failure_code_fails_the_reply_for_good(world: World) -> None:
    """An ambiguous send answered by a ``failed`` status with WhatsApp's 131026 (undeliverable)
    is not sent again: the job is dead as a delivery failure with the code, not as unknown."""
    world.sandbox.faults("whatsapp", SEND, script=[ProviderFault.ambiguous()])
    world.sandbox.faults("whatsapp", "webhooks", script=[ProviderFault.undeliverable(131026)])
    message_id = await world.reply(2)
    await world.round(15.0)
    await world.round()
    (dead,) = await world.assistant.jobs.dlq.list()
    assert dead.last_error_code == "DELIVERY_FAILED"
    assert "131026" in (dead.last_error or "")
    assert world.sends_of(message_id) == 1
    record = await world.record(message_id)
    assert (record["status"], record["error_code"]) == ("failed", "131026")


async def test_a_failure_worth_retrying_sends_the_reply_again(world: World) -> None:
    """A ``failed`` status whose code is not permanent (131000, something went wrong) sends the
    reply again; the second send is answered and delivered, and the job succeeds."""
    world.sandbox.faults("whatsapp", SEND, script=[ProviderFault.ambiguous()])
    world.sandbox.faults("whatsapp", "webhooks", script=[ProviderFault.undeliverable(131000)])
    message_id = await world.reply(3)
    for _ in range(3):
        await world.round(15.0)
    assert await world.assistant.jobs.dlq.list() == []
    assert world.sends_of(message_id) == 2
    record = await world.record(message_id)
    assert record["status"] == "sent"
    assert record["delivery_status"] == "read"


async def test_any_job_sends_once_through_echoes(world: World) -> None:
    """A job of its own sends through :meth:`Echoes.send_once`: its ambiguous send is deferred
    (no attempt spent) and confirmed by the echo -- one message; a second one whose statuses
    are all lost goes to review once WhatsApp's window has passed, with its key to reconcile,
    and is never sent again."""
    echoes = Echoes(world.assistant.deliveries)
    connector = world.assistant.connectors.whatsapp

    @world.assistant.jobs.job("notices.send")
    async def send_notice(ctx: JobContext, n: int) -> dict[str, Any]:
        assert ctx.idempotency_key is not None
        outcome = await echoes.send_once(
            ctx.idempotency_key,
            "whatsapp",
            lambda: connector.send_text(
                f"4477008{n:05d}", f"Notice {n}", reference=ctx.idempotency_key
            ),
        )
        return {"echoed": isinstance(outcome, Echo)}

    world.sandbox.faults("whatsapp", SEND, script=[ProviderFault.ambiguous()])
    await send_notice.configure(idempotency_key="notice-1").enqueue(1)
    await world.round(15.0)
    world.sandbox.faults("whatsapp", SEND, script=[ProviderFault.ambiguous()])
    world.sandbox.faults("whatsapp", "webhooks", script=[ProviderFault.lost_webhooks()])
    await send_notice.configure(idempotency_key="notice-2").enqueue(2)
    await world.round(15.0)
    await world.round(15.0)
    jobs = {
        job.idempotency_key: job
        for job in await world.assistant.jobs.find(JobFilter(name="notices.send"))
    }
    assert jobs["notice-1"].state is JobState.SUCCEEDED
    assert jobs["notice-1"].result == {"echoed": True}
    assert jobs["notice-1"].attempts == 1
    assert jobs["notice-2"].state is JobState.QUEUED  # still waiting, no attempt spent
    assert jobs["notice-2"].attempts == 0
    for _ in range(41):
        await world.round(15.0)
    (dead,) = await world.assistant.jobs.dlq.list()
    assert dead.idempotency_key == "notice-2"
    assert dead.last_error_code == "UPSTREAM_ERROR"
    refs = [e.data.get("biz_opaque_callback_data") for e in world.sandbox.effects("whatsapp")]
    assert sorted(refs) == sorted([correlation_for("notice-1"), correlation_for("notice-2")])
