"""Booking a call end to end: the service's own assistant on a SQLite file, served by uvicorn,
WhatsApp, Calendly and Acuity behind the sandbox over real HTTP, a worker running the jobs.

A contact goes through a flow that completes with ``book_call``; the tenant's scheduling
provider decides what happens: Calendly -- a single-use link is sent to the contact, who books
through it; Acuity -- the appointment is booked at the time the contact named. The provider's
signed webhook, posted by the sandbox to the service, is verified, recorded once, and settles
the session's ``booking_status``. Signed deliveries made here (forged, stale, replayed) are
refused or deduplicated.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from antifragile.inbound import (
    BOOKING_STATUS,
    Sessions,
    acuity_signature,
    calendly_signature,
    whatsapp_signature,
)
from antifragile.sandbox import (
    AcuitySimulator,
    CalendlySimulator,
    ProviderFault,
    ProviderSandbox,
    WhatsAppSimulator,
    whatsapp_text_message,
)
from antifragile.service import Settings, create_app
from antifragile.service._assistant import Assistant
from tests.integration.test_metrics_endpoint import serving

WA_SECRET = "wa-booking-secret"
WA_TOKEN = "EAAG-booking-token"
PHONE_ID = "106540352242922"
CALENDLY_TOKEN = "calendly-service-token"
SIGNING_KEY = "calendly-signing-key"
ACUITY_USER, ACUITY_KEY = "77", "acuity-service-key"
CONTACT = "447700900123"

FLOW = """
[tenants.acme]
name = "Acme"
whatsapp_phone_number_id = "{phone}"
flow = "call"
booking_provider = "{provider}"

[flows.call]
greeting = "Hi! Let's book a call."
completion = "Thanks!"
on_complete = ["book_call"]
[[flows.call.steps]]
field = "name"
question = "Your name?"
[[flows.call.steps]]
field = "email"
question = "Your email?"
validate = "email"
[[flows.call.steps]]
field = "date"
question = "Which day (YYYY-MM-DD)?"
[[flows.call.steps]]
field = "time"
question = "What time (HH:MM)?"
"""


@dataclass
class World:
    client: httpx.AsyncClient
    url: str
    assistant: Assistant
    sandbox: ProviderSandbox

    async def work(self) -> None:
        await self.assistant.worker(poll_interval=0.01).run_until_idle()

    async def say(self, text: str, n: int) -> None:
        body = json.dumps(
            whatsapp_text_message(
                from_=CONTACT, body=text, phone_number_id=PHONE_ID, message_id=f"wamid.{n}"
            )
        ).encode()
        headers = {
            "content-type": "application/json",
            "x-hub-signature-256": whatsapp_signature(WA_SECRET, body),
        }
        response = await self.client.post("/v1/webhooks/whatsapp", content=body, headers=headers)
        assert response.status_code == 200, response.text
        await self.work()

    async def booking_status(self) -> str | None:
        record = await self.assistant.sessions.get(Sessions.key_for("acme", CONTACT))
        assert record is not None
        return record.flags.get(BOOKING_STATUS)

    def sent_texts(self) -> list[str]:
        return [json.dumps(e.data) for e in self.sandbox.effects("whatsapp")]

    async def settle_webhooks(self) -> None:
        idle = await asyncio.to_thread(self.sandbox.webhooks.wait_idle, 30.0)
        assert idle
        await self.work()


Make = Callable[[str], Any]


@pytest.fixture
async def make_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Make]:
    whatsapp = WhatsAppSimulator(
        access_tokens=[WA_TOKEN], phone_number_ids=[PHONE_ID], throughput=10**6
    )
    calendly = CalendlySimulator(tokens=[CALENDLY_TOKEN], signing_key=SIGNING_KEY)
    acuity = AcuitySimulator(user_id=ACUITY_USER, api_key=ACUITY_KEY)
    stack: list[Any] = []
    with ProviderSandbox([whatsapp, calendly, acuity], time_scale=0.001) as sandbox:
        for name, value in {
            "ANTIFRAGILE_WHATSAPP_BASE_URL": sandbox.base_url("whatsapp"),
            "ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN": WA_TOKEN,
            "ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID": PHONE_ID,
            "ANTIFRAGILE_CALENDLY_BASE_URL": sandbox.base_url("calendly"),
            "ANTIFRAGILE_CALENDLY_TOKEN": CALENDLY_TOKEN,
            "ANTIFRAGILE_ACUITY_BASE_URL": sandbox.base_url("acuity"),
            "ANTIFRAGILE_ACUITY_USER_ID": ACUITY_USER,
            "ANTIFRAGILE_ACUITY_API_KEY": ACUITY_KEY,
            "ANTIFRAGILE_ACUITY_APPOINTMENT_TYPE_ID": "1",
            "ANTIFRAGILE_BOOKING_TIME_ZONE": "America/New_York",
        }.items():
            monkeypatch.setenv(name, value)

        async def make(provider: str) -> World:
            config = tmp_path / f"{provider}.toml"
            config.write_text(FLOW.format(phone=PHONE_ID, provider=provider), encoding="utf-8")
            settings = Settings.from_env(
                {
                    "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
                    "ANTIFRAGILE_WHATSAPP_APP_SECRET": WA_SECRET,
                    "ANTIFRAGILE_CALENDLY_WEBHOOK_SIGNING_KEY": f"{SIGNING_KEY},old-key",
                    "ANTIFRAGILE_ACUITY_WEBHOOK_KEY": ACUITY_KEY,
                },
                config_path=config,
            )
            assistant = Assistant(settings)
            app = create_app(settings, assistant=assistant)
            served = serving(app)
            url = await served.__aenter__()
            client = httpx.AsyncClient(base_url=url, timeout=30.0)
            stack.append((served, client))
            sandbox.webhooks.configure("calendly", f"{url}/v1/webhooks/calendly")
            sandbox.webhooks.configure("acuity", f"{url}/v1/webhooks/acuity")
            return World(client, url, assistant, sandbox)

        yield make
        for served, client in reversed(stack):
            await client.aclose()
            await served.__aexit__(None, None, None)


async def complete_flow(world: World, day: str = "2026-12-15", at: str = "10:00") -> None:
    for n, text in enumerate(["Hello", "Ada Lovelace", "ada@example.com", day, at]):
        await world.say(text, n)


async def test_calendly_link_sent_then_booked_through_it_settles_the_session(
    make_world: Make,
) -> None:
    """A completed flow with Calendly as the tenant's provider: one single-use link is made and
    sent to the contact on WhatsApp (``booking_status`` ``link_sent``); the contact books
    through it; Calendly's signed ``invitee.created`` reaches the service, is recorded once and
    moves the session to ``booked`` (a duplicated delivery is recorded once); the cancellation
    to ``cancelled``."""
    world: World = await make_world("calendly")
    await complete_flow(world)
    links = world.sandbox.effects("calendly", "POST /scheduling_links")
    assert len(links) == 1
    assert await world.booking_status() == "link_sent"
    (url,) = {
        u for t in world.sent_texts() for u in re.findall(r"http://[^\s\"\\]+/d/[^\s\"\\]+", t)
    }
    # Calendly delivers the booking's webhook twice: recorded once
    world.sandbox.faults("calendly", "webhooks", script=[ProviderFault.duplicated()])
    async with httpx.AsyncClient(timeout=30.0) as customer:
        booked = await customer.post(url, json={"start_time": "2026-12-15T15:00:00Z"})
    assert booked.status_code == 200
    await world.settle_webhooks()
    assert await world.booking_status() == "booked"
    copies = [a for a in world.sandbox.webhooks.attempts if a.provider == "calendly"]
    assert sorted(a.copy for a in copies) == [1, 2]
    assert all(a.answered == 200 for a in copies)
    inbox = await world.assistant.jobs.queue.find_inbound(channel="calendly", limit=10)
    assert [e.payload["data"]["status"] for e in inbox] == ["confirmed"]
    assert "ada@example.com" not in json.dumps([e.payload for e in inbox])

    event_uuid = booked.json()["resource"]["event"].rsplit("/", 1)[-1]
    async with httpx.AsyncClient(timeout=30.0) as host:
        cancelled = await host.post(
            f"{world.sandbox.base_url('calendly')}/scheduled_events/{event_uuid}/cancellation",
            json={"reason": "sick"},
            headers={"authorization": f"Bearer {CALENDLY_TOKEN}"},
        )
    assert cancelled.status_code == 201
    await world.settle_webhooks()
    assert await world.booking_status() == "cancelled"


async def test_calendly_webhook_signature_checks(make_world: Make) -> None:
    """``Calendly-Webhook-Signature``: a good one (and one made with the previous key) is
    recorded, a redelivery is a duplicate; a forged, stale (beyond 3 minutes) or missing one is
    401; signed garbage is 400."""
    world: World = await make_world("calendly")
    hook = "/v1/webhooks/calendly"
    body = json.dumps(
        {
            "event": "invitee.created",
            "created_at": "2026-12-01T10:00:00.000000Z",
            "payload": {
                "uri": "https://api.calendly.com/scheduled_events/E1/invitees/I1",
                "email": "ada@example.com",
                "tracking": {"utm_content": "af_" + "0" * 32},
            },
        }
    ).encode()

    def headers(key: str = SIGNING_KEY, at: float | None = None) -> dict[str, str]:
        stamp = str(int(time.time() if at is None else at))
        v1 = calendly_signature(key, stamp, body)
        return {
            "content-type": "application/json",
            "calendly-webhook-signature": f"t={stamp},v1={v1}",
        }

    first = await world.client.post(hook, content=body, headers=headers())
    assert len(first.json()["data"]["recorded"]) == 1
    again = await world.client.post(hook, content=body, headers=headers("old-key"))
    assert len(again.json()["data"]["duplicates"]) == 1
    for bad in (
        headers("not-the-key"),
        headers(at=time.time() - 600),
        {"content-type": "application/json"},
    ):
        refused = await world.client.post(hook, content=body, headers=bad)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "SIGNATURE_INVALID"
    garbage = b"[1]"
    stamp = str(int(time.time()))
    v1 = calendly_signature(SIGNING_KEY, stamp, garbage)
    signed = {
        "content-type": "application/json",
        "calendly-webhook-signature": f"t={stamp},v1={v1}",
    }
    malformed = await world.client.post(hook, content=garbage, headers=signed)
    assert malformed.status_code == 400


async def test_acuity_books_the_named_time_and_its_webhooks_settle_the_session(
    make_world: Make,
) -> None:
    """A completed flow with Acuity: the appointment is booked at the day and time the contact
    named (in the booking time zone), once; the contact gets a confirmation; Acuity's signed
    ``scheduled`` webhook is recorded; a cancellation moves the session to ``cancelled``."""
    world: World = await make_world("acuity")
    await complete_flow(world)
    (effect,) = world.sandbox.effects("acuity", "POST /appointments")
    assert effect.data["datetime"] == "2026-12-15T10:00:00-05:00"
    assert await world.booking_status() == "booked"
    assert any("booked for" in t for t in world.sent_texts())
    async with httpx.AsyncClient(timeout=30.0) as host:
        cancelled = await host.put(
            f"{world.sandbox.base_url('acuity')}/appointments/{effect.id}/cancel",
            json={},
            auth=(ACUITY_USER, ACUITY_KEY),
        )
    assert cancelled.status_code == 200
    await world.settle_webhooks()
    assert await world.booking_status() == "cancelled"
    inbox = await world.assistant.jobs.queue.find_inbound(channel="acuity", limit=10)
    assert sorted(e.event_id for e in inbox) == [f"{effect.id}:canceled", f"{effect.id}:scheduled"]


async def test_acuity_webhook_signature_checks(make_world: Make) -> None:
    """``X-Acuity-Signature``: good is recorded, a redelivery a duplicate; forged or missing is
    401; a JSON body is 415; a form without an action is 400."""
    world: World = await make_world("acuity")
    hook = "/v1/webhooks/acuity"
    body = urlencode({"action": "scheduled", "id": "5", "calendarID": "1"}).encode()
    form = "application/x-www-form-urlencoded"

    def headers(key: str = ACUITY_KEY, content: bytes = body) -> dict[str, str]:
        return {"content-type": form, "x-acuity-signature": acuity_signature(key, content)}

    assert (
        len(
            (await world.client.post(hook, content=body, headers=headers())).json()["data"][
                "recorded"
            ]
        )
        == 1
    )
    dup = await world.client.post(hook, content=body, headers=headers())
    assert len(dup.json()["data"]["duplicates"]) == 1
    for bad in (headers("wrong-key"), {"content-type": form}):
        refused = await world.client.post(hook, content=body, headers=bad)
        assert refused.status_code == 401
    wrong_type = await world.client.post(
        hook, content=b"{}", headers={"content-type": "application/json", "x-acuity-signature": "x"}
    )
    assert wrong_type.status_code == 415
    empty = b"id=5"
    assert (
        await world.client.post(hook, content=empty, headers=headers(content=empty))
    ).status_code == 400
