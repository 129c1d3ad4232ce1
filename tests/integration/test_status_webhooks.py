"""Status webhooks end to end: the service's own assistant on a SQLite file, served by uvicorn,
deliveries signed in the test with real crypto (HMAC, an ECDSA P-256 key made with
``cryptography``), a worker running ``inbound.process``, and the outbound message records and
``/metrics`` read back.

What they prove, for every provider that reports statuses: a good delivery is recorded before
the 2xx and deduplicated on the provider's event id; a forged, stale or unsigned one is 401 and
records nothing; a rotated secret (or key) still verifies; garbage is 400; a status moves its
message forward only, in whatever order statuses arrive; a status for an unknown correlation
is recorded and counted, not an error.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from antifragile.connectors import correlation_for
from antifragile.inbound import (
    Channel,
    DeliveryMatch,
    DeliveryStatus,
    InboundEvent,
    calcom_signature,
    hubspot_signature,
    svix_signature,
    twilio_signature,
    whatsapp_signature,
)
from antifragile.jobs import InboxEntry, JobFilter
from antifragile.sandbox import ProviderSandbox, WhatsAppSimulator
from antifragile.service import Settings, create_app
from antifragile.service._assistant import Assistant
from tests.integration.test_metrics_endpoint import sample, serving

WA_SECRET, WA_OLD_SECRET = "wa-status-secret", "wa-status-secret-old"
WA_TOKEN = "EAAG-status-token"
PHONE_ID = "106540352242922"
TWILIO_TOKEN = "twilio-status-token"
RESEND_SECRET = "whsec_" + base64.b64encode(b"resend-secret-current-24").decode()
RESEND_OLD_SECRET = "whsec_" + base64.b64encode(b"resend-secret-previous-2").decode()
CALCOM_SECRET, CALCOM_OLD_SECRET = "cal-secret", "cal-secret-old"
HUBSPOT_SECRET, HUBSPOT_OLD_SECRET = "hubspot-client-secret", "hubspot-client-secret-old"
MAX_BYTES = 16384
CONTACT = "447700900123"


def _der_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@dataclass
class World:
    client: httpx.AsyncClient
    url: str
    assistant: Assistant
    sandbox: ProviderSandbox
    sendgrid_key: ec.EllipticCurvePrivateKey
    sendgrid_old_key: ec.EllipticCurvePrivateKey

    async def work(self) -> None:
        await self.assistant.worker(poll_interval=0.01).run_until_idle()

    async def inbox(self, channel: str) -> list[InboxEntry]:
        return await self.assistant.jobs.queue.find_inbound(channel=channel, limit=1000)

    async def record(self, message_id: str) -> dict[str, Any]:
        found = await self.assistant.replies.get(message_id)
        assert found is not None
        return found

    async def results(self) -> list[dict[str, Any]]:
        jobs = await self.assistant.jobs.find(JobFilter(name="inbound.process"), limit=1000)
        return [job.result for job in jobs if isinstance(job.result, dict)]


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    sendgrid_key = ec.generate_private_key(ec.SECP256R1())
    sendgrid_old_key = ec.generate_private_key(ec.SECP256R1())
    simulator = WhatsAppSimulator(
        access_tokens=[WA_TOKEN],
        phone_number_ids=[PHONE_ID],
        throughput=10**6,
        app_secret=WA_SECRET,
    )
    with ProviderSandbox([simulator]) as sandbox:
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_BASE_URL", sandbox.base_url("whatsapp"))
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN", WA_TOKEN)
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID", PHONE_ID)
        settings = Settings.from_env(
            {
                "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
                "ANTIFRAGILE_WHATSAPP_APP_SECRET": f"{WA_SECRET},{WA_OLD_SECRET}",
                "ANTIFRAGILE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
                # Twilio and HubSpot sign the URL they call: the hosts it may name
                "ANTIFRAGILE_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver,test",
                "ANTIFRAGILE_SENDGRID_WEBHOOK_PUBLIC_KEY": (
                    f"{_der_b64(sendgrid_key)},{_der_b64(sendgrid_old_key)}"
                ),
                "ANTIFRAGILE_RESEND_WEBHOOK_SECRET": f"{RESEND_SECRET},{RESEND_OLD_SECRET}",
                "ANTIFRAGILE_CALCOM_WEBHOOK_SECRET": f"{CALCOM_SECRET},{CALCOM_OLD_SECRET}",
                "ANTIFRAGILE_HUBSPOT_WEBHOOK_SECRET": f"{HUBSPOT_SECRET},{HUBSPOT_OLD_SECRET}",
                "ANTIFRAGILE_WEBHOOK_MAX_BYTES": str(MAX_BYTES),
            }
        )
        assistant = Assistant(settings)
        assistant.metrics.queue_ttl = 0.0
        app = create_app(settings, assistant=assistant)
        async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
            yield World(client, url, assistant, sandbox, sendgrid_key, sendgrid_old_key)


# -- signing, as each provider does ---------------------------------------------------------------


def whatsapp_statuses(*statuses: dict[str, Any]) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_ID},
        "statuses": list(statuses),
    }
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(body).encode()


def wa_status(wamid: str, status: str, at: int, **extra: Any) -> dict[str, Any]:
    return {"id": wamid, "status": status, "timestamp": str(at), "recipient_id": CONTACT, **extra}


async def post_whatsapp(world: World, body: bytes, secret: str = WA_SECRET) -> httpx.Response:
    headers = {
        "content-type": "application/json",
        "x-hub-signature-256": whatsapp_signature(secret, body),
    }
    return await world.client.post("/v1/webhooks/whatsapp", content=body, headers=headers)


def sendgrid_headers(
    key: ec.EllipticCurvePrivateKey, body: bytes, at: float | None = None
) -> dict[str, str]:
    stamp = str(int(time.time() if at is None else at))
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "content-type": "application/json",
        "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
        "x-twilio-email-event-webhook-timestamp": stamp,
    }


def svix_headers(
    body: bytes, msg_id: str, secret: str = RESEND_SECRET, at: float | None = None
) -> dict[str, str]:
    stamp = str(int(time.time() if at is None else at))
    return {
        "content-type": "application/json",
        "svix-id": msg_id,
        "svix-timestamp": stamp,
        # Svix sends one entry per active secret; an unknown one first, ours second
        "svix-signature": "v1,"
        + base64.b64encode(b"x" * 32).decode()
        + " "
        + svix_signature(secret, msg_id, stamp, body),
    }


def hubspot_headers(
    world: World, body: bytes, secret: str = HUBSPOT_SECRET, at: float | None = None
) -> dict[str, str]:
    stamp = str(int((time.time() if at is None else at) * 1000))
    uri = f"{world.url}/v1/webhooks/hubspot"
    return {
        "content-type": "application/json",
        "x-hubspot-signature-v3": hubspot_signature(secret, "POST", uri, body, stamp),
        "x-hubspot-request-timestamp": stamp,
    }


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code


def data(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()["data"]
    return answer


# -- WhatsApp and Twilio: the reply's record moves forward only -----------------------------------


async def test_whatsapp_statuses_move_the_reply_forward_only(world: World) -> None:
    """A reply goes out through the sandbox; its statuses arrive out of order (read, then
    delivered, then sent) and read twice: each distinct one is recorded once, the duplicate is
    answered 200 as such, and the reply's record ends ``read`` with each status's time -- never
    moved back to ``delivered``."""
    seen: list[tuple[str, str | None]] = []

    @world.assistant.on_delivery_status
    async def hook(status: DeliveryStatus, match: DeliveryMatch) -> None:
        seen.append((status.status, match.delivery_status))

    tenant = world.assistant.tenants[0]
    message_id = await world.assistant.replies.send(
        tenant=tenant, channel=Channel.WHATSAPP, to=CONTACT, text="Thanks!", key="reply-1"
    )
    await world.work()
    wamid = (await world.record(message_id))["provider_message_id"]
    assert wamid == world.sandbox.effects("whatsapp")[0].id
    for status, at in (("read", 300), ("delivered", 200), ("sent", 100)):
        answer = data(await post_whatsapp(world, whatsapp_statuses(wa_status(wamid, status, at))))
        assert (answer["received"], len(answer["recorded"])) == (1, 1)
    again = data(await post_whatsapp(world, whatsapp_statuses(wa_status(wamid, "read", 300))))
    assert (again["recorded"], len(again["duplicates"])) == ([], 1)
    await world.work()
    record = await world.record(message_id)
    assert record["delivery_status"] == "read"
    assert record["delivery_times"] == {"read": 300.0, "delivered": 200.0, "sent": 100.0}
    assert record["status"] == "sent"  # the job's own flag is untouched
    assert len([e for e in await world.inbox("whatsapp") if e.event_id.startswith(wamid)]) == 3
    matched = [r["delivery"] for r in await world.results() if r.get("delivery")]
    assert [m["message_id"] for m in matched] == [message_id] * 3
    assert sorted(m["applied"] for m in matched) == [False, False, True]  # only read moved it
    # the hook saw every status, each with the message's status after it: read throughout
    assert sorted(seen) == [("delivered", "read"), ("read", "read"), ("sent", "read")]


async def test_the_sandbox_statuses_settle_the_reply_through_its_correlation(world: World) -> None:
    """The loop closed end to end: a reply goes out through the sandbox carrying
    ``biz_opaque_callback_data`` = the correlation of its message id; the sandbox then posts
    its signed ``sent``, ``delivered`` and ``read`` webhooks to the service, which finds the
    reply through the correlation and moves its record to ``read``."""
    world.sandbox.webhooks.configure("whatsapp", f"{world.url}/v1/webhooks/whatsapp")
    tenant = world.assistant.tenants[0]
    message_id = await world.assistant.replies.send(
        tenant=tenant, channel=Channel.WHATSAPP, to=CONTACT, text="Thanks!", key="reply-loop"
    )
    await world.work()
    (effect,) = world.sandbox.effects("whatsapp")
    assert effect.data["biz_opaque_callback_data"] == correlation_for(message_id)
    # the service answers in this loop: wait for the sender's thread from another thread
    assert await asyncio.to_thread(world.sandbox.webhooks.wait_idle, 60)
    attempts = world.sandbox.webhooks.attempts
    assert [a.ok for a in attempts] == [True, True, True]
    await world.work()
    record = await world.record(message_id)
    assert record["delivery_status"] == "read"
    assert set(record["delivery_times"]) == {"sent", "delivered", "read"}
    matched = [r["delivery"] for r in await world.results() if r.get("delivery")]
    assert {m["message_id"] for m in matched} == {message_id}


async def test_a_failed_status_with_the_correlation_and_a_rotated_secret(world: World) -> None:
    """A ``failed`` status signed with the previous app secret, carrying the reply's id in
    ``biz_opaque_callback_data``, finds the reply by that correlation -- before any send
    returned a ``wamid`` -- and keeps the error code and pricing."""
    tenant = world.assistant.tenants[0]
    message_id = await world.assistant.replies.send(
        tenant=tenant, channel=Channel.WHATSAPP, to=CONTACT, text="Hi", key="reply-2"
    )
    failed = wa_status(
        "wamid.not-yet-known",
        "failed",
        50,
        biz_opaque_callback_data=message_id,
        errors=[{"code": 131026, "title": "Message undeliverable"}],
    )
    answer = data(await post_whatsapp(world, whatsapp_statuses(failed), secret=WA_OLD_SECRET))
    [entry] = [e for e in await world.inbox("whatsapp") if e.id == answer["recorded"][0]]
    status = DeliveryStatus.from_event(InboundEvent.from_json(entry.payload))
    assert (status.correlation, status.error_code) == (message_id, "131026")
    assert status.details["errors"] == [{"code": 131026, "title": "Message undeliverable"}]
    await world.assistant.deliveries.record(status)  # what the inbound.process job does
    record = await world.record(message_id)
    assert (record["delivery_status"], record["delivery_error_code"]) == ("failed", "131026")


async def test_twilio_status_callback_carries_the_correlation_in_its_url(world: World) -> None:
    """Twilio calls the ``StatusCallback`` URL the send gave, ``?ref=<correlation>``: the
    signature covers that URL; ``undelivered`` with ``ErrorCode`` is recorded (deduplicated on
    MessageSid + MessageStatus) and marks the message ``failed`` with the code."""
    message_id = await world.assistant.replies.send(
        tenant=world.assistant.tenants[0],
        channel=Channel.WHATSAPP,
        to=CONTACT,
        text="Your booking",
        key="reply-3",
    )
    url = f"{world.url}/v1/webhooks/twilio?{urlencode({'ref': message_id})}"
    params = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "MessageStatus": "undelivered",
        "ErrorCode": "30008",
        "From": "+15550001111",
        "To": "+" + CONTACT,
        "AccountSid": "AC" + "0" * 32,
    }
    headers = {"x-twilio-signature": twilio_signature(TWILIO_TOKEN, url, params)}
    first = await world.client.post(url, data=params, headers=headers)
    assert first.status_code == 200
    assert (await world.client.post(url, data=params, headers=headers)).status_code == 200
    forged = await world.client.post(
        url, data={**params, "MessageStatus": "delivered"}, headers=headers
    )
    assert_refused(forged, 401, "SIGNATURE_INVALID")
    assert len(await world.inbox("twilio")) == 1
    await world.work()
    record = await world.record(message_id)
    assert (record["delivery_status"], record["delivery_error_code"]) == ("failed", "30008")


async def test_a_status_that_comes_before_the_send_returns_settles_it(world: World) -> None:
    """A status for a provider id nobody knows yet is kept; when the send returns that id, the
    record takes it at once (forward only, like any other)."""
    message_id = await world.assistant.replies.send(
        tenant=world.assistant.tenants[0],
        channel=Channel.WHATSAPP,
        to=CONTACT,
        text="Early",
        key="reply-4",
    )
    early = DeliveryStatus(
        "whatsapp", "wamid.early:delivered", "delivered", "delivered", "wamid.early"
    )
    match = await world.assistant.deliveries.record(early)
    assert match.message_id is None
    await world.assistant.deliveries.settle(message_id, "whatsapp", "wamid.early")
    assert (await world.record(message_id))["delivery_status"] == "delivered"
    later = DeliveryStatus("whatsapp", "wamid.early:read", "read", "read", "wamid.early")
    assert (await world.assistant.deliveries.record(later)).message_id == message_id
    assert (await world.record(message_id))["delivery_status"] == "read"


# -- SendGrid --------------------------------------------------------------------------------------


def sendgrid_body(key: str, *events: str) -> bytes:
    return json.dumps(
        [
            {
                "email": "owner@example.com",
                "event": event,
                "sg_event_id": f"{key}-{event}",
                "sg_message_id": f"{key}.filter0001",
                "timestamp": 1700000000 + i,
                "antifragile_ref": key,
            }
            for i, event in enumerate(events)
        ]
    ).encode()


async def test_sendgrid_event_webhook(world: World) -> None:
    """ECDSA-signed batches: good with the current key and with the rotated one; forged (another
    key), stale (timestamp 10 minutes old), unsigned: 401 and nothing recorded; a redelivery is
    a duplicate; signed garbage is 400; too large is 413. The unknown correlation is recorded
    and counted (``matched="false"``), and the job does not fail."""
    hook = "/v1/webhooks/sendgrid"
    body = sendgrid_body("k-sg-1", "processed", "delivered")
    first = data(
        await world.client.post(
            hook, content=body, headers=sendgrid_headers(world.sendgrid_key, body)
        )
    )
    assert (first["received"], len(first["recorded"])) == (2, 2)
    again = await world.client.post(
        hook, content=body, headers=sendgrid_headers(world.sendgrid_old_key, body)
    )
    assert len(data(again)["duplicates"]) == 2

    other = sendgrid_body("k-sg-2", "open")
    intruder = ec.generate_private_key(ec.SECP256R1())
    for headers in (
        sendgrid_headers(intruder, other),
        sendgrid_headers(world.sendgrid_key, other, at=time.time() - 600),
        {"content-type": "application/json"},
    ):
        refused = await world.client.post(hook, content=other, headers=headers)
        assert_refused(refused, 401, "SIGNATURE_INVALID")
    garbage = b'{"event": "delivered"}'
    assert_refused(
        await world.client.post(
            hook, content=garbage, headers=sendgrid_headers(world.sendgrid_key, garbage)
        ),
        400,
        "MALFORMED_PAYLOAD",
    )
    huge = sendgrid_body("k" * MAX_BYTES, "delivered")
    assert_refused(
        await world.client.post(
            hook, content=huge, headers=sendgrid_headers(world.sendgrid_key, huge)
        ),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    assert sorted(e.event_id for e in await world.inbox("sendgrid")) == [
        "k-sg-1-delivered",
        "k-sg-1-processed",
    ]

    await world.work()
    results = [r for r in await world.results() if r.get("channel") == "sendgrid"]
    assert [r["status"] for r in results] == ["status_recorded"] * 2
    assert all(r["delivery"]["message_id"] is None for r in results)
    text = (await world.client.get("/metrics")).text
    counted = {"provider": "sendgrid", "status": "delivered", "matched": "false"}
    assert sample(text, "antifragile_delivery_statuses_total", **counted) == 1
    process = {"job": "inbound.process", "queue": "inbound"}
    assert sample(text, "antifragile_jobs_succeeded_total", **process) == 2


# -- Resend (Svix) ---------------------------------------------------------------------------------


async def test_resend_webhook(world: World) -> None:
    """Svix-signed events: one of several ``v1,`` signatures matching is enough, the previous
    secret still verifies; a stale timestamp, a forged signature or a missing ``svix-id`` is
    401; a redelivery (same ``svix-id``) is a duplicate; signed garbage is 400; a non-email
    event is answered 200 with nothing recorded."""
    hook = "/v1/webhooks/resend"
    body = json.dumps(
        {"type": "email.delivered", "created_at": "2026-01-01T00:00:00.000Z",
         "data": {"email_id": "em-1", "to": ["a@example.com"],
                  "tags": [{"name": "antifragile_ref", "value": "k-re-1"}]}}
    ).encode()  # fmt: skip
    msg_id = "msg_" + uuid.uuid4().hex
    assert (
        len(
            data(await world.client.post(hook, content=body, headers=svix_headers(body, msg_id)))[
                "recorded"
            ]
        )
        == 1
    )
    rotated = svix_headers(body, msg_id, secret=RESEND_OLD_SECRET)
    assert (
        len(data(await world.client.post(hook, content=body, headers=rotated))["duplicates"]) == 1
    )

    other_id = "msg_" + uuid.uuid4().hex
    stale = svix_headers(body, other_id, at=time.time() - 301)
    forged = svix_headers(body, other_id, secret="whsec_" + base64.b64encode(b"n" * 24).decode())
    no_id = {k: v for k, v in svix_headers(body, other_id).items() if k != "svix-id"}
    for headers in (stale, forged, no_id):
        assert_refused(
            await world.client.post(hook, content=body, headers=headers), 401, "SIGNATURE_INVALID"
        )
    garbage = b'{"type": "email.sent", "data": []}'
    assert_refused(
        await world.client.post(hook, content=garbage, headers=svix_headers(garbage, "msg_g")),
        400,
        "MALFORMED_PAYLOAD",
    )
    contact = b'{"type": "contact.created", "data": {"id": "c1"}}'
    answer = data(
        await world.client.post(hook, content=contact, headers=svix_headers(contact, "msg_c"))
    )
    assert (answer["received"], answer["recorded"]) == (0, [])
    [entry] = await world.inbox("resend")
    assert entry.event_id == msg_id
    assert entry.payload["data"]["correlation"] == "k-re-1"
    assert "example.com" not in json.dumps(entry.payload)


# -- Cal.com ---------------------------------------------------------------------------------------


async def test_calcom_webhook(world: World) -> None:
    """Signed booking triggers: good, rotated secret, duplicate (uid + trigger); another
    trigger of the same booking is a new event; ``no-secret-provided``, forged and missing
    signatures are 401; signed garbage is 400."""
    hook = "/v1/webhooks/calcom"

    def booking(trigger: str) -> bytes:
        return json.dumps(
            {"triggerEvent": trigger, "createdAt": "2026-01-01T00:00:00Z",
             "payload": {"uid": "bk-1", "bookingId": 9,
                         "metadata": {"antifragile_ref": "create-booking/lead/1"},
                         "attendees": [{"email": "ada@example.com", "name": "Ada"}]}}
        ).encode()  # fmt: skip

    def headers(body: bytes, secret: str = CALCOM_SECRET) -> dict[str, str]:
        return {
            "content-type": "application/json",
            "x-cal-signature-256": calcom_signature(secret, body),
        }

    created = booking("BOOKING_CREATED")
    assert (
        len(
            data(await world.client.post(hook, content=created, headers=headers(created)))[
                "recorded"
            ]
        )
        == 1
    )
    dup = await world.client.post(
        hook, content=created, headers=headers(created, CALCOM_OLD_SECRET)
    )
    assert len(data(dup)["duplicates"]) == 1
    cancelled = booking("BOOKING_CANCELLED")
    assert (
        len(
            data(await world.client.post(hook, content=cancelled, headers=headers(cancelled)))[
                "recorded"
            ]
        )
        == 1
    )
    for bad in (
        {"content-type": "application/json", "x-cal-signature-256": "no-secret-provided"},
        headers(created, "not-the-secret"),
        {"content-type": "application/json"},
    ):
        assert_refused(
            await world.client.post(hook, content=booking("BOOKING_PAID"), headers=bad),
            401,
            "SIGNATURE_INVALID",
        )
    garbage = b"[1, 2]"
    assert_refused(
        await world.client.post(hook, content=garbage, headers=headers(garbage)),
        400,
        "MALFORMED_PAYLOAD",
    )
    ids = sorted(e.event_id for e in await world.inbox("calcom"))
    assert ids == ["bk-1:BOOKING_CANCELLED", "bk-1:BOOKING_CREATED"]


# -- HubSpot ---------------------------------------------------------------------------------------


async def test_hubspot_webhook(world: World) -> None:
    """v3 signatures over method + the URL HubSpot called + body + timestamp (ms): good, and
    with the previous client secret; a timestamp over 5 minutes old, a forged or a missing
    signature is 401; events already recorded (same ``eventId``) are duplicates; signed
    garbage is 400."""
    hook = "/v1/webhooks/hubspot"

    def events(*ids: int) -> bytes:
        return json.dumps(
            [{"eventId": i, "subscriptionType": "contact.creation", "objectId": 500 + i,
              "portalId": 62515, "occurredAt": 1700000000000, "attemptNumber": 0} for i in ids]
        ).encode()  # fmt: skip

    first = events(1, 2)
    assert (
        len(
            data(
                await world.client.post(hook, content=first, headers=hubspot_headers(world, first))
            )["recorded"]
        )
        == 2
    )
    overlap = events(2, 3)
    answer = data(
        await world.client.post(
            hook, content=overlap, headers=hubspot_headers(world, overlap, HUBSPOT_OLD_SECRET)
        )
    )
    assert (len(answer["recorded"]), len(answer["duplicates"])) == (1, 1)
    late = events(4)
    for bad in (
        hubspot_headers(world, late, at=time.time() - 301),
        hubspot_headers(world, late, secret="not-the-secret"),
        {
            "content-type": "application/json",
            "x-hubspot-request-timestamp": str(int(time.time() * 1000)),
        },
    ):
        assert_refused(
            await world.client.post(hook, content=late, headers=bad), 401, "SIGNATURE_INVALID"
        )
    garbage = b'[{"eventId": 5}]'
    assert_refused(
        await world.client.post(hook, content=garbage, headers=hubspot_headers(world, garbage)),
        400,
        "MALFORMED_PAYLOAD",
    )
    assert sorted(e.event_id for e in await world.inbox("hubspot")) == ["1", "2", "3"]
    await world.work()
    statuses = [r for r in await world.results() if r.get("channel") == "hubspot"]
    assert [r["status"] for r in statuses] == ["status_recorded"] * 3
    kept = await world.assistant.jobs.queue.store.kv.get("delivery:hubspot:501", now=time.time())
    assert kept is not None
