"""Mandrill webhooks end to end: the service's own assistant on a SQLite file, served by uvicorn,
deliveries signed in the test with ``hmac`` from Mandrill's published scheme (and by the
sandbox's simulator after a real send), a worker running ``inbound.process``.

What they prove: a good delivery is recorded before the 2xx and deduplicated; a forged or
unsigned one is 401 and records nothing; a rotated key still verifies; a body that is not a
form is 415 and garbage 400; Mandrill's check of a new webhook (``HEAD``, an empty batch) is
answered 200; a send through the sandbox comes back as a status carrying its correlation.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from antifragile.connectors import MandrillConnector, correlation_for
from antifragile.jobs import InboxEntry
from antifragile.sandbox import MandrillSimulator, ProviderSandbox
from antifragile.service import Settings, create_app
from antifragile.service._assistant import Assistant
from tests.integration.test_metrics_endpoint import serving

KEY, OLD_KEY = "mandrill-webhook-key", "mandrill-webhook-key-old"
API_KEY = "md-webhooks"
HOOK = "/v1/webhooks/mandrill"


@dataclass
class World:
    client: httpx.AsyncClient
    url: str
    assistant: Assistant
    sandbox: ProviderSandbox

    async def inbox(self) -> list[InboxEntry]:
        return await self.assistant.jobs.queue.find_inbound(channel="mandrill", limit=1000)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
            "ANTIFRAGILE_MANDRILL_WEBHOOK_KEY": f"{KEY},{OLD_KEY}",
            # the signature covers the URL called: its host is pinned (the port is not known
            # before the server starts, so no public URL)
            "ANTIFRAGILE_ALLOWED_HOSTS": "127.0.0.1",
        }
    )
    assistant = Assistant(settings)
    app = create_app(settings, assistant=assistant)
    simulator = MandrillSimulator(api_keys=[API_KEY], webhook_key=KEY)
    with ProviderSandbox([simulator], webhook_interval=0.0) as sandbox:
        async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10.0) as client:
            yield World(client, url, assistant, sandbox)


def signed(url: str, events: list[dict[str, Any]], key: str = KEY) -> tuple[bytes, dict[str, str]]:
    """A form body of *events* and its headers, signed as Mandrill documents it."""
    value = json.dumps(events)
    text = f"{url}mandrill_events{value}"
    digest = hmac.new(key.encode(), text.encode(), hashlib.sha1).digest()
    return urlencode({"mandrill_events": value}).encode(), {
        "content-type": "application/x-www-form-urlencoded",
        "x-mandrill-signature": base64.b64encode(digest).decode(),
    }


def event(kind: str, message_id: str, ts: int, ref: str | None = None) -> dict[str, Any]:
    metadata = {"antifragile_ref": ref} if ref else {}
    msg = {"_id": message_id, "email": "owner@example.com", "subject": "Hi", "state": "sent",
           "metadata": metadata, "ts": ts}  # fmt: skip
    return {"event": kind, "ts": ts, "_id": message_id, "msg": msg}


def data(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()["data"]
    return answer


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


async def test_signed_batches_are_recorded_once_and_forgeries_refused(world: World) -> None:
    """A batch signed with the current key is recorded (one status per event, a sync event
    skipped); the same batch signed with the rotated key is all duplicates; a forged, unsigned,
    JSON or garbage delivery records nothing; no address is kept."""
    url = world.url + HOOK
    events = [
        event("send", "m-1", 1_760_000_000, ref="af_ref_1"),
        event("open", "m-1", 1_760_000_060, ref="af_ref_1"),
        {"type": "blacklist", "action": "add", "reject": {"email": "x@example.com"}},
    ]
    body, headers = signed(url, events)
    first = data(await world.client.post(HOOK, content=body, headers=headers))
    assert (first["received"], len(first["recorded"])) == (2, 2)
    body_old, headers_old = signed(url, events, key=OLD_KEY)
    assert (
        len(
            data(await world.client.post(HOOK, content=body_old, headers=headers_old))["duplicates"]
        )
        == 2
    )

    other, good = signed(url, [event("hard_bounce", "m-2", 1_760_000_100)])
    forged = {
        **good,
        "x-mandrill-signature": signed(url, [], key="nope")[1]["x-mandrill-signature"],
    }
    unsigned = {"content-type": "application/x-www-form-urlencoded"}
    for bad in (forged, unsigned):
        refused(await world.client.post(HOOK, content=other, headers=bad), 401, "SIGNATURE_INVALID")
    as_json = {**good, "content-type": "application/json"}
    refused(
        await world.client.post(HOOK, content=other, headers=as_json), 415, "UNSUPPORTED_MEDIA_TYPE"
    )
    garbage = urlencode({"mandrill_events": "{not json"}).encode()
    digest = hmac.new(KEY.encode(), f"{url}mandrill_events{{not json".encode(), hashlib.sha1)
    garbage_headers = {
        **unsigned,
        "x-mandrill-signature": base64.b64encode(digest.digest()).decode(),
    }
    refused(
        await world.client.post(HOOK, content=garbage, headers=garbage_headers),
        400,
        "MALFORMED_PAYLOAD",
    )

    entries = await world.inbox()
    assert sorted(e.event_id for e in entries) == ["m-1:open:1760000060", "m-1:send:1760000000"]
    assert {e.payload["data"]["correlation"] for e in entries} == {"af_ref_1"}
    assert "example.com" not in json.dumps([e.payload for e in entries])


async def test_mandrills_check_of_a_new_webhook_is_answered(world: World) -> None:
    """Mandrill checks a webhook it is given: ``HEAD`` answers 200, and a signed empty batch
    is accepted with nothing recorded."""
    assert (await world.client.head(HOOK)).status_code == 200
    body, headers = signed(world.url + HOOK, [])
    assert data(await world.client.post(HOOK, content=body, headers=headers))["received"] == 0


async def test_a_send_through_the_sandbox_comes_back_as_its_status(world: World) -> None:
    """A real send through the Mandrill simulator, whose webhook points at the service: the
    ``send`` event arrives signed over the service's URL, is recorded with the correlation the
    send carried, and the worker records the status."""
    world.sandbox.webhooks.configure("mandrill", world.url + HOOK)
    async with MandrillConnector(API_KEY, base_url=world.sandbox.base_url("mandrill")) as mandrill:
        sent = await mandrill.send_email(
            sender="Shop <shop@example.com>",
            to="owner@example.com",
            subject="New order",
            text="Order 1",
            idempotency_key="order/1",
        )
    for _ in range(500):
        if await world.inbox():
            break
        await asyncio.sleep(0.02)
    (entry,) = await world.inbox()
    assert entry.payload["data"]["correlation"] == correlation_for("send-email/order/1")
    assert entry.payload["data"]["message_id"] == sent.id
    attempts = world.sandbox.webhooks.attempts
    assert [a.answered for a in attempts] == [200]
    await world.assistant.worker(poll_interval=0.01).run_until_idle()
