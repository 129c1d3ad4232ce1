"""The sandbox's status webhooks over real HTTP, received by a real local HTTP server.

Connectors send through the sandbox; the sandbox then POSTs the provider's status webhooks to a
plain threaded HTTP server started here. Every signature is checked with code written in this
file from the providers' published schemes (hmac, cryptography), not with the project's own
verifiers; retry delays run at ``time_scale=0.001`` (Resend's 5-minute retry takes 0.3 s).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from antifragile import ConfigurationError
from antifragile.connectors import (
    CalComConnector,
    ResendConnector,
    SendGridConnector,
    TwilioConnector,
    WhatsAppConnector,
    correlation_for,
)
from antifragile.sandbox import (
    CalComSimulator,
    HubSpotSimulator,
    ProviderFault,
    ProviderSandbox,
    ResendSimulator,
    SendGridSimulator,
    TwilioSimulator,
    WhatsAppSimulator,
)

APP_SECRET = "test-app-secret"
CAL_SECRET = "test-cal-secret"
HUBSPOT_SECRET = "test-client-secret"
SID = "AC" + "0123456789abcdef" * 2
TOKEN = "test-auth-token"
TO = "15557654321"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode()).items()}


class Receiver:
    """A local HTTP server that records every POST and answers the scripted statuses (then
    200)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.answers: list[int] = []
        #: (predicate, times, status): answer *status* to the next *times* matching requests
        self.refusals: list[list[Any]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                received = Received(self.path, headers, body)
                with lock:
                    outer.received.append(received)
                    status = outer.answers.pop(0) if outer.answers else 200
                    for rule in outer.refusals:
                        if rule[1] > 0 and rule[0](received):
                            rule[1] -= 1
                            status = rule[2]
                            break
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def sandbox(receiver: Receiver) -> Iterator[ProviderSandbox]:
    simulators = [
        WhatsAppSimulator(app_secret=APP_SECRET),
        TwilioSimulator(credentials={SID: TOKEN}),
        SendGridSimulator(),
        ResendSimulator(rate_limit=1000),
        CalComSimulator(webhook_secret=CAL_SECRET),
        HubSpotSimulator(client_secret=HUBSPOT_SECRET),
    ]
    urls = {
        "whatsapp": f"{receiver.url}/v1/webhooks/whatsapp",
        "sendgrid": f"{receiver.url}/v1/webhooks/sendgrid",
        "resend": f"{receiver.url}/v1/webhooks/resend",
        "calcom": f"{receiver.url}/v1/webhooks/calcom",
        "hubspot": f"{receiver.url}/v1/webhooks/hubspot",
    }
    with ProviderSandbox(
        simulators, webhook_urls=urls, time_scale=0.001, webhook_interval=0.005
    ) as running:
        yield running


def settle(sandbox: ProviderSandbox) -> None:
    """Wait until every status webhook scheduled so far has been delivered or given up."""
    assert sandbox.webhooks.wait_idle(timeout=60)


async def asettle(sandbox: ProviderSandbox) -> None:
    import asyncio

    assert await asyncio.to_thread(sandbox.webhooks.wait_idle, 60)


def whatsapp(sandbox: ProviderSandbox) -> WhatsAppConnector:
    return WhatsAppConnector(
        "token", phone_number_id="106540352242922", base_url=sandbox.base_url("whatsapp")
    )


def hub_signature_ok(body: bytes, header: str) -> bool:
    expected = hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header, "sha256=" + expected)


def statuses_of(received: list[Received]) -> list[str]:
    out: list[str] = []
    for r in received:
        value = r.json()["entry"][0]["changes"][0]["value"]
        out.extend(s["status"] for s in value["statuses"])
    return out


# -- each provider's webhooks ---------------------------------------------------------------------


async def test_whatsapp_sends_signed_statuses_in_order_with_the_correlation(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """A WhatsApp text is followed by ``sent``, ``delivered``, ``read`` statuses for its
    wamid, each echoing ``biz_opaque_callback_data`` and signed X-Hub-Signature-256 with the
    app secret; the sandbox records the send as read, its webhooks sent."""
    async with whatsapp(sandbox) as connector:
        sent = await connector.send_text(TO, "Your order has shipped.", reference="reply/1")
    await asettle(sandbox)
    assert statuses_of(receiver.received) == ["sent", "delivered", "read"]
    for r in receiver.received:
        assert r.path == "/v1/webhooks/whatsapp"
        assert hub_signature_ok(r.body, r.headers["x-hub-signature-256"])
        status = r.json()["entry"][0]["changes"][0]["value"]["statuses"][0]
        assert status["id"] == sent.id
        assert status["recipient_id"] == TO
        assert status["biz_opaque_callback_data"] == correlation_for("reply/1")
    (decided,) = sandbox.deliveries("whatsapp")
    assert (decided.message_id, decided.final, decided.fate) == (sent.id, "read", "sent")
    assert decided.correlation == correlation_for("reply/1")


async def test_twilio_calls_the_status_callback_it_was_given_signed_over_that_url(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """A Twilio message sent with a public URL gets form-encoded status callbacks at
    ``/v1/webhooks/twilio?ref=<correlation>``: ``sent`` then ``delivered`` (no callback for
    ``queued``), signed X-Twilio-Signature (HMAC-SHA1 of the URL and the sorted parameters,
    with the account's auth token)."""
    async with TwilioConnector(
        SID, TOKEN, base_url=sandbox.base_url("twilio"), public_url=receiver.url
    ) as connector:
        sent = await connector.send_message("+15557654321", "Hi", "+15551234567", reference="r/2")
    await asettle(sandbox)
    assert [r.form()["MessageStatus"] for r in receiver.received] == ["sent", "delivered"]
    for r in receiver.received:
        assert r.path == f"/v1/webhooks/twilio?ref={correlation_for('r/2')}"
        params = r.form()
        assert params["MessageSid"] == sent.sid
        assert params["AccountSid"] == SID
        signed = receiver.url + r.path + "".join(k + params[k] for k in sorted(params))
        digest = hmac.new(TOKEN.encode(), signed.encode(), hashlib.sha1).digest()
        assert r.headers["x-twilio-signature"] == base64.b64encode(digest).decode()
    assert sandbox.deliveries("twilio")[0].correlation == correlation_for("r/2")


async def test_sendgrid_event_webhook_is_ecdsa_signed_with_custom_args_merged(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """SendGrid posts JSON arrays of ``processed`` then ``delivered`` events carrying
    ``sg_event_id``, ``sg_message_id`` (the X-Message-Id plus a suffix) and every
    ``custom_args`` field at the top level; each POST verifies with ECDSA P-256 over timestamp
    + body against the public key the sandbox exposes."""
    async with SendGridConnector("SG.test", base_url=sandbox.base_url("sendgrid")) as connector:
        sent = await connector.send_email(
            sender="shop@example.com",
            to="owner@example.com",
            subject="New order",
            text="...",
            idempotency_key="order/1",
        )
    await asettle(sandbox)
    async with httpx.AsyncClient() as client:
        admin = (await client.get(f"{sandbox.url}/_sandbox/webhooks")).json()
    public_key = load_der_public_key(base64.b64decode(admin["providers"]["sendgrid"]["public_key"]))
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    events = []
    for r in receiver.received:
        timestamp = r.headers["x-twilio-email-event-webhook-timestamp"]
        signature = base64.b64decode(r.headers["x-twilio-email-event-webhook-signature"])
        public_key.verify(signature, timestamp.encode() + r.body, ec.ECDSA(hashes.SHA256()))
        events.extend(r.json())
    assert [e["event"] for e in events] == ["processed", "delivered"]
    for event in events:
        assert event["sg_message_id"].split(".")[0] == sent.message_id
        assert event["antifragile_ref"] == correlation_for("send-email/order/1")
        assert event["antifragile_key"] == "send-email/order/1"
        assert event["email"] == "owner@example.com"
    assert len({e["sg_event_id"] for e in events}) == 2


def svix_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['svix-id']}.{headers['svix-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(part.partition(",")[2], expected)
        for part in headers["svix-signature"].split()
        if part.startswith("v1,")
    )


async def test_resend_events_are_svix_signed_and_carry_the_tags(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """Resend posts ``email.sent`` then ``email.delivered`` for the email id, with its tags
    (the correlation among them), each signed the Svix way with the ``whsec_`` secret."""
    simulator = sandbox.simulator("resend")
    assert isinstance(simulator, ResendSimulator)
    assert simulator.webhook_secret.startswith("whsec_")
    async with ResendConnector("re_test", base_url=sandbox.base_url("resend")) as connector:
        sent = await connector.send_email(
            sender="shop@example.com",
            to="owner@example.com",
            subject="Hi",
            text="x",
            idempotency_key="order/1",
        )
    await asettle(sandbox)
    assert [r.json()["type"] for r in receiver.received] == ["email.sent", "email.delivered"]
    for r in receiver.received:
        assert svix_ok(simulator.webhook_secret, r.headers, r.body)
        assert r.headers["svix-id"].startswith("msg_")
        data = r.json()["data"]
        assert data["email_id"] == sent.id
        assert data["tags"] == {"antifragile_ref": correlation_for(sent.idempotency_key)}
    assert not svix_ok("whsec_" + base64.b64encode(b"x" * 24).decode(), *_first(receiver))


def _first(receiver: Receiver) -> tuple[dict[str, str], bytes]:
    return receiver.received[0].headers, receiver.received[0].body


async def test_calcom_booking_created_carries_the_metadata_signed_hex_hmac(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """A booking is followed by ``BOOKING_CREATED`` with the booking's uid and metadata (the
    correlation included), signed X-Cal-Signature-256 = hex HMAC-SHA256 of the body."""
    async with CalComConnector("cal_test", base_url=sandbox.base_url("calcom")) as connector:
        booking = await connector.create_booking(
            start="2026-12-01T09:00:00Z",
            event_type_id=1,
            attendee_name="Ada",
            attendee_email="ada@example.com",
            attendee_time_zone="Europe/London",
            idempotency_key="lead/1",
        )
    await asettle(sandbox)
    (r,) = receiver.received
    expected = hmac.new(CAL_SECRET.encode(), r.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(r.headers["x-cal-signature-256"], expected)
    body = r.json()
    assert body["triggerEvent"] == "BOOKING_CREATED"
    assert body["payload"]["uid"] == booking.uid
    assert body["payload"]["metadata"]["antifragile_ref"] == correlation_for(
        "create-booking/lead/1"
    )


# -- retries ---------------------------------------------------------------------------------------


async def test_a_failed_delivery_is_retried_on_the_providers_schedule(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """Resend's first webhook answered 500 twice is sent again (Svix: 5 s, then 5 min, scaled)
    with the same ``svix-id`` and body, and a fresh valid signature; the attempts are
    recorded with their answers."""
    receiver.refusals = [[lambda r: r.json()["type"] == "email.sent", 2, 500]]
    async with ResendConnector("re_test", base_url=sandbox.base_url("resend")) as connector:
        await connector.send_email(
            sender="shop@example.com", to="o@example.com", subject="s", text="t",
            idempotency_key="k/1",
        )  # fmt: skip
    await asettle(sandbox)
    sent = [r for r in receiver.received if r.json()["type"] == "email.sent"]
    assert len(sent) == 3
    assert len({r.headers["svix-id"] for r in sent}) == 1
    assert len({r.body for r in sent}) == 1
    simulator = sandbox.simulator("resend")
    assert isinstance(simulator, ResendSimulator)
    assert all(svix_ok(simulator.webhook_secret, r.headers, r.body) for r in sent)
    tries = [(a.attempt, a.answered) for a in sandbox.webhooks.attempts if a.status == "email.sent"]
    assert tries == [(1, 500), (2, 500), (3, 200)]


async def test_twilio_retries_only_what_its_connection_overrides_ask(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """By default (``rc=1``, ``rp=ct``) Twilio does not retry a 500 answer; a StatusCallback
    with ``#rc=2&rp=all`` is retried twice; the fragment is neither sent nor signed."""
    receiver.refusals = [[lambda r: r.form()["MessageStatus"] == "sent", 1, 500]]
    async with TwilioConnector(SID, TOKEN, base_url=sandbox.base_url("twilio")) as connector:
        await connector.send_message(
            "+15557654321", "a", "+15551234567", status_callback=f"{receiver.url}/plain"
        )
        await asettle(sandbox)
        assert [r.form()["MessageStatus"] for r in receiver.received] == ["sent", "delivered"]
        receiver.received.clear()
        receiver.refusals = [[lambda r: r.form()["MessageStatus"] == "sent", 2, 500]]
        await connector.send_message(
            "+15557654321", "b", "+15551234567", status_callback=f"{receiver.url}/r#rc=2&rp=all"
        )
        await asettle(sandbox)
    statuses = sorted(r.form()["MessageStatus"] for r in receiver.received)
    assert statuses == ["delivered", "sent", "sent", "sent"]
    assert all(r.path.startswith("/r?ref=") for r in receiver.received)


def test_a_receiver_that_never_accepts_gets_the_whole_schedule_then_nothing(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """Cal.com's webhook answered 503 every time is tried once plus once per retry delay of
    its schedule, then given up."""
    receiver.answers = [503] * 100
    response = httpx.post(
        f"{sandbox.base_url('calcom')}/v2/bookings",
        headers={"authorization": "Bearer cal_x", "cal-api-version": "2024-08-13"},
        json={
            "start": "2026-12-01T10:00:00Z",
            "eventTypeId": 1,
            "attendee": {"name": "Ada", "email": "a@example.com", "timeZone": "UTC"},
        },
    )
    assert response.status_code == 201
    settle(sandbox)
    from antifragile.sandbox import RETRY_DELAYS

    assert len(receiver.received) == 1 + len(RETRY_DELAYS["calcom"])


# -- scripted faults -------------------------------------------------------------------------------


async def test_scripted_lost_duplicated_and_out_of_order_statuses(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """Scripted per send: the first send's statuses are lost (decided, not sent), the
    second's each arrive twice byte for byte, the third's arrive read first; the fourth's
    normally."""
    sandbox.faults(
        "whatsapp",
        "webhooks",
        script=[
            ProviderFault.lost_webhooks(),
            ProviderFault.duplicated(),
            ProviderFault.out_of_order(),
        ],
    )
    async with whatsapp(sandbox) as connector:
        ids = []
        for n in range(4):
            ids.append((await connector.send_text(TO, f"m{n}", reference=f"r/{n}")).id)
            await asettle(sandbox)
    by_message: dict[str, list[Received]] = {}
    for r in receiver.received:
        status = r.json()["entry"][0]["changes"][0]["value"]["statuses"][0]
        by_message.setdefault(status["id"], []).append(r)
    assert ids[0] not in by_message
    assert statuses_of(by_message[ids[1]]) == [
        "sent", "sent", "delivered", "delivered", "read", "read"
    ]  # fmt: skip
    twice = by_message[ids[1]]
    assert twice[0].body == twice[1].body
    assert statuses_of(by_message[ids[2]]) == ["read", "delivered", "sent"]
    assert statuses_of(by_message[ids[3]]) == ["sent", "delivered", "read"]
    fates = [(d.fate, d.final) for d in sandbox.deliveries("whatsapp")]
    assert fates == [
        ("lost", "read"),
        ("duplicated", "read"),
        ("out_of_order", "read"),
        ("sent", "read"),
    ]


async def test_delayed_statuses_arrive_after_those_of_a_later_send(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """A send whose webhooks are delayed has its statuses arrive after those of the send
    that followed it."""
    sandbox.faults("whatsapp", "webhooks", script=[ProviderFault.delayed(0.5)])
    async with whatsapp(sandbox) as connector:
        first = await connector.send_text(TO, "first", reference="r/a")
        second = await connector.send_text(TO, "second", reference="r/b")
    await asettle(sandbox)
    order = [
        r.json()["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] for r in receiver.received
    ]
    assert order == [second.id] * 3 + [first.id] * 3
    assert [d.fate for d in sandbox.deliveries("whatsapp")] == ["delayed", "sent"]


async def test_an_undeliverable_whatsapp_message_gets_a_failed_status_131026(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """Scripted undeliverable: the message is accepted (200, a wamid) but its only status is
    ``failed`` with ``errors[{code: 131026}]`` and the correlation; the sandbox records it
    failed with that code."""
    sandbox.faults("whatsapp", "webhooks", script=[ProviderFault.undeliverable()])
    async with whatsapp(sandbox) as connector:
        sent = await connector.send_text(TO, "hi", reference="r/x")
    await asettle(sandbox)
    (r,) = receiver.received
    status = r.json()["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert (status["id"], status["status"]) == (sent.id, "failed")
    assert status["errors"][0]["code"] == 131026
    assert status["biz_opaque_callback_data"] == correlation_for("r/x")
    (decided,) = sandbox.deliveries("whatsapp")
    assert (decided.final, decided.error_code) == ("failed", 131026)


async def test_an_undeliverable_twilio_message_is_undelivered_with_an_error_code(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """Twilio's undeliverable message reports ``sent`` then ``undelivered`` with
    ``ErrorCode`` (the scripted one)."""
    sandbox.faults("twilio", "webhooks", script=[ProviderFault.undeliverable(30005)])
    async with TwilioConnector(
        SID, TOKEN, base_url=sandbox.base_url("twilio"), public_url=receiver.url
    ) as connector:
        await connector.send_message("+15557654321", "Hi", "+15551234567")
    await asettle(sandbox)
    forms = [r.form() for r in receiver.received]
    assert [f["MessageStatus"] for f in forms] == ["sent", "undelivered"]
    assert forms[1]["ErrorCode"] == "30005"
    assert "ErrorCode" not in forms[0]


def test_webhook_faults_are_set_over_http_and_checked(sandbox: ProviderSandbox) -> None:
    """``PUT /_sandbox/faults`` accepts webhook faults under ``"webhooks"`` (JSON shape
    round-trips); a webhook fault on a request endpoint, or a request fault on
    ``"webhooks"``, is refused."""
    document = {
        "whatsapp": {
            "webhooks": {
                "script": [{"kind": "delayed", "seconds": 2.0}, {"kind": "undeliverable"}],
                "chaos": [{"p": 0.1, "kind": "lost"}],
            }
        }
    }
    response = httpx.put(f"{sandbox.url}/_sandbox/faults", json=document)
    assert response.status_code == 200
    plan = response.json()["whatsapp"]["webhooks"]
    assert plan["script"] == document["whatsapp"]["webhooks"]["script"]
    bad = {
        "whatsapp": {"POST /{version}/{phone_number_id}/messages": {"script": [{"kind": "lost"}]}}
    }
    assert httpx.put(f"{sandbox.url}/_sandbox/faults", json=bad).status_code == 400
    with pytest.raises(ConfigurationError):
        sandbox.faults("whatsapp", "webhooks", script=[ProviderFault.error(503)])
    with pytest.raises(ConfigurationError):
        sandbox.faults("whatsapp", "*", script=[ProviderFault.duplicated()])


# -- configuration and counting --------------------------------------------------------------------


def test_callback_urls_are_set_at_run_time_and_deliveries_counted(receiver: Receiver) -> None:
    """Without a callback URL nothing is sent but the fate is still decided (``no_callback``);
    ``PUT /_sandbox/webhooks`` sets one; ``GET /_sandbox/deliveries`` counts the sends by final
    status and fate."""
    with ProviderSandbox([WhatsAppSimulator()], time_scale=0.001) as sandbox:
        url = f"{sandbox.base_url('whatsapp')}/v21.0/1/messages"
        message = {"messaging_product": "whatsapp", "to": TO, "text": {"body": "hi"}}
        auth = {"authorization": "Bearer t"}
        assert httpx.post(url, json=message, headers=auth).status_code == 200
        answer = httpx.put(
            f"{sandbox.url}/_sandbox/webhooks", json={"whatsapp": f"{receiver.url}/hook"}
        )
        assert answer.json()["providers"]["whatsapp"]["url"] == f"{receiver.url}/hook"
        assert httpx.post(url, json=message, headers=auth).status_code == 200
        settle(sandbox)
        counted = httpx.get(f"{sandbox.url}/_sandbox/deliveries?provider=whatsapp").json()
        attempts = httpx.get(f"{sandbox.url}/_sandbox/webhooks/attempts").json()
        refused = httpx.put(f"{sandbox.url}/_sandbox/webhooks", json={"whatsapp": 3})
    assert counted["count"] == 2
    assert counted["by_final"] == {"read": 2}
    assert counted["by_fate"] == {"no_callback": 1, "sent": 1}
    assert attempts["count"] == 3
    assert len(receiver.received) == 3
    assert refused.status_code == 400


def test_an_unknown_webhook_provider_is_a_configuration_error() -> None:
    """Callback URLs are only for simulators that send status webhooks."""
    with pytest.raises(ConfigurationError):
        ProviderSandbox([WhatsAppSimulator()], webhook_urls={"resend": "http://x"})


def create_contact(sandbox: ProviderSandbox, email: str) -> str:
    response = httpx.post(
        f"{sandbox.base_url('hubspot')}/crm/v3/objects/contacts",
        headers={"authorization": "Bearer pat-test"},
        json={"properties": {"email": email}},
    )
    assert response.status_code == 201
    return str(response.json()["id"])


def test_hubspot_contact_creation_is_v3_signed_and_counts_its_attempts(
    sandbox: ProviderSandbox, receiver: Receiver
) -> None:
    """A created contact is followed by a ``contact.creation`` event for its id, signed
    X-HubSpot-Signature-v3 (base64 HMAC-SHA256 of method + URL + body + millisecond
    timestamp); answered 500 it is retried with ``attemptNumber`` 1, 2...; answered 404 it is
    not retried."""
    receiver.refusals = [[lambda r: True, 2, 500]]
    contact_id = create_contact(sandbox, "ada@example.com")
    settle(sandbox)
    assert len(receiver.received) == 3
    for n, r in enumerate(receiver.received):
        timestamp = r.headers["x-hubspot-request-timestamp"]
        source = b"POST" + (receiver.url + r.path).encode() + r.body + timestamp.encode()
        digest = hmac.new(HUBSPOT_SECRET.encode(), source, hashlib.sha256).digest()
        assert r.headers["x-hubspot-signature-v3"] == base64.b64encode(digest).decode()
        (event,) = r.json()
        assert event["subscriptionType"] == "contact.creation"
        assert event["objectId"] == int(contact_id)
        assert event["attemptNumber"] == n
    assert len({r.json()[0]["eventId"] for r in receiver.received}) == 1
    receiver.received.clear()
    receiver.refusals = [[lambda r: True, 1, 404]]
    create_contact(sandbox, "grace@example.com")
    settle(sandbox)
    assert len(receiver.received) == 1
