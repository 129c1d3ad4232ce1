"""The webhook routes over real HTTP: a uvicorn server, signed deliveries from the sandbox's
WebhookSender, and the inbox read back from the SQLite file.

What they prove: a verified delivery is recorded (with its job, and the request id) before the
200; a provider's redeliveries are recorded once; a delivery without a valid signature, too
large, of the wrong type or malformed records nothing and answers the envelope's stable code.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from antifragile.inbound import twilio_signature, whatsapp_signature
from antifragile.jobs import InboxEntry, JobFilter, Jobs
from antifragile.sandbox import (
    WebhookSender,
    twilio_inbound_message,
    whatsapp_status,
    whatsapp_text_message,
)
from antifragile.service import Settings, create_app
from antifragile.service._limits import InboundLimits
from tests._service_standin import StandInAssistant, running_server

WA_SECRET = "wa-app-secret-new"
WA_OLD_SECRET = "wa-app-secret-old"
VERIFY_TOKEN = "verify-token-1"
TWILIO_TOKEN = "twilio-auth-token-1"
SHOPIFY_SECRET = "shopify-secret-1"
MAX_BYTES = 8192


def make_settings(database: Path, **overrides: Any) -> Settings:
    return Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{database}",
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": f"{WA_SECRET},{WA_OLD_SECRET}",
            "ANTIFRAGILE_WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "ANTIFRAGILE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            # Twilio and HubSpot sign the URL they call: the hosts it may name
            "ANTIFRAGILE_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver,test",
            "ANTIFRAGILE_SHOPIFY_WEBHOOK_SECRET": SHOPIFY_SECRET,
            "ANTIFRAGILE_WEBHOOK_MAX_BYTES": str(MAX_BYTES),
            **overrides,
        }
    )


class Service:
    def __init__(self, url: str, database: Path, assistant: StandInAssistant) -> None:
        self.url = url
        self.database = database
        self.assistant = assistant

    def hook(self, provider: str) -> str:
        return f"{self.url}/v1/webhooks/{provider}"

    def inbox(self, channel: str | None = None) -> list[InboxEntry]:
        """The inbox as stored in the database file (read through a separate connection)."""

        async def read() -> list[InboxEntry]:
            async with Jobs(database_url=f"sqlite:///{self.database}") as jobs:
                return await jobs.queue.find_inbound(channel=channel, limit=1000)

        return asyncio.run(read())

    def jobs_count(self) -> int:
        async def read() -> int:
            async with Jobs(database_url=f"sqlite:///{self.database}") as jobs:
                return len(await jobs.find(JobFilter(queue="inbound"), limit=1000))

        return asyncio.run(read())

    def by_event(self, event_id: str) -> list[InboxEntry]:
        return [entry for entry in self.inbox() if entry.event_id == event_id]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    database = tmp_path_factory.mktemp("webhooks") / "service.db"
    settings = make_settings(database)
    assistant = StandInAssistant(settings)
    with running_server(create_app(settings, assistant=assistant)) as url:
        yield Service(url, database, assistant)


@pytest.fixture
def sender() -> Iterator[WebhookSender]:
    with WebhookSender(timeout=30.0) as sender:
        yield sender


def wamid() -> str:
    return f"wamid.{uuid.uuid4().hex}"


async def post_whatsapp(client: httpx.AsyncClient) -> httpx.Response:
    """POST a new signed WhatsApp text message to the app behind *client*."""
    payload = whatsapp_text_message(from_="447700900123", body="hi", message_id=wamid())
    body = json.dumps(payload).encode()
    return await client.post(
        "/v1/webhooks/whatsapp",
        content=body,
        headers={
            "content-type": "application/json",
            "x-hub-signature-256": whatsapp_signature(WA_SECRET, body),
        },
    )


def body_of(response: bytes) -> dict[str, Any]:
    return dict(httpx.Response(200, content=response).json())


# -- WhatsApp -------------------------------------------------------------------------------------


def test_whatsapp_message_is_recorded_with_its_job_and_request_id(
    service: Service, sender: WebhookSender
) -> None:
    """A signed WhatsApp message answers 200 with its inbox id, after the entry and its job are
    in the database; the entry carries the request id echoed in x-request-id."""
    message_id = wamid()
    payload = whatsapp_text_message(from_="447700900123", body="hello", message_id=message_id)
    delivery = sender.send_whatsapp(service.hook("whatsapp"), payload, app_secret=WA_SECRET)
    assert delivery.status == 200
    body = body_of(delivery.response)
    assert body["success"] is True
    assert body["data"]["received"] == 1
    assert body["data"]["duplicates"] == []
    [inbox_id] = body["data"]["recorded"]
    [entry] = service.by_event(message_id)
    assert entry.id == inbox_id
    assert entry.channel == "whatsapp"
    assert entry.job_id is not None
    assert entry.request_id == body["meta"]["request_id"]
    assert entry.payload["text"] == "hello"


def test_the_callers_request_id_is_kept(service: Service) -> None:
    """An x-request-id sent with the delivery is the one recorded and echoed."""
    message_id = wamid()
    payload = whatsapp_text_message(from_="447700900123", body="hi", message_id=message_id)
    with WebhookSender(client=httpx.Client(headers={"x-request-id": "req-from-proxy"})) as sender:
        delivery = sender.send_whatsapp(service.hook("whatsapp"), payload, app_secret=WA_SECRET)
        sender.client.close()
    assert delivery.status == 200
    assert service.by_event(message_id)[0].request_id == "req-from-proxy"


def test_whatsapp_delivered_three_times_is_recorded_once(
    service: Service, sender: WebhookSender
) -> None:
    """WhatsApp retries; the same delivery three times is one inbox entry and one job, the
    redeliveries answered 200 as duplicates of the first."""
    message_id = wamid()
    payload = whatsapp_text_message(from_="447700900123", body="order", message_id=message_id)
    jobs_before = service.jobs_count()
    first = sender.send_whatsapp(service.hook("whatsapp"), payload, app_secret=WA_SECRET)
    again = [sender.redeliver(first), sender.redeliver(first)]
    inbox_id = body_of(first.response)["data"]["recorded"][0]
    for delivery in again:
        assert delivery.status == 200
        data = body_of(delivery.response)["data"]
        assert data["recorded"] == []
        assert data["duplicates"] == [inbox_id]
    assert len(service.by_event(message_id)) == 1
    assert service.jobs_count() == jobs_before + 1


def test_whatsapp_statuses_are_recorded(service: Service, sender: WebhookSender) -> None:
    """A delivery status is an event of its own (id wamid:status)."""
    message_id = wamid()
    payload = whatsapp_status(message_id=message_id, recipient_id="447700900123", status="read")
    delivery = sender.send_whatsapp(service.hook("whatsapp"), payload, app_secret=WA_SECRET)
    assert delivery.status == 200
    assert len(service.by_event(f"{message_id}:read")) == 1


def test_whatsapp_value_errors_become_failed_status_events(
    service: Service, sender: WebhookSender
) -> None:
    """A ``value.errors`` notification (an error of the account or the webhook, about no one
    message: here the throughput limit's kind) is recorded as an event of its own -- a
    ``failed`` status with the error's code -- and a redelivery of the same body is a
    duplicate."""
    code = 130000 + uuid.uuid4().int % 999  # a body of its own in the module's shared inbox
    payload = whatsapp_status(message_id=wamid(), recipient_id="447700900123")
    value = payload["entry"][0]["changes"][0]["value"]
    del value["statuses"]  # the same envelope, an error instead of a status
    value["errors"] = [
        {
            "code": code,
            "title": "Rate limit hit",
            "message": "Rate limit hit",
            "error_data": {"details": "Message failed to send"},
        }
    ]
    first = sender.send_whatsapp(service.hook("whatsapp"), payload, app_secret=WA_SECRET)
    again = sender.send_whatsapp(service.hook("whatsapp"), payload, app_secret=WA_SECRET)
    assert (first.status, again.status) == (200, 200)
    (entry,) = [
        e
        for e in service.inbox("whatsapp")
        if e.event_id.startswith("error:") and str(code) in json.dumps(e.payload)
    ]
    assert entry.payload["kind"] == "status"
    assert entry.payload["data"]["status"] == "failed"
    assert entry.payload["data"]["error_code"] == str(code)


def test_a_rotated_secret_still_verifies(service: Service, sender: WebhookSender) -> None:
    """Both secrets of a rotation (comma-separated) are accepted."""
    message_id = wamid()
    payload = whatsapp_text_message(from_="447700900123", body="x", message_id=message_id)
    delivery = sender.send_whatsapp(service.hook("whatsapp"), payload, app_secret=WA_OLD_SECRET)
    assert delivery.status == 200
    assert len(service.by_event(message_id)) == 1


def assert_refused(response: httpx.Response | Any, status: int, code: str) -> None:
    raw = response.response if hasattr(response, "response") else response.content
    got = response.status if hasattr(response, "status") else response.status_code
    assert got == status, raw
    body = body_of(raw)
    assert body["success"] is False
    assert body["error"]["code"] == code


def test_a_wrong_signature_is_401_and_records_nothing(
    service: Service, sender: WebhookSender
) -> None:
    """A delivery signed with another secret is refused 401 SIGNATURE_INVALID: no entry."""
    message_id = wamid()
    payload = whatsapp_text_message(from_="447700900123", body="x", message_id=message_id)
    delivery = sender.send_whatsapp(service.hook("whatsapp"), payload, app_secret="not-the-secret")
    assert_refused(delivery, 401, "SIGNATURE_INVALID")
    assert "not-the-secret" not in delivery.response.decode()
    assert service.by_event(message_id) == []


def test_a_missing_signature_is_401_and_records_nothing(service: Service) -> None:
    """A delivery without X-Hub-Signature-256 is refused: no entry."""
    message_id = wamid()
    payload = whatsapp_text_message(from_="447700900123", body="x", message_id=message_id)
    response = httpx.post(service.hook("whatsapp"), json=payload)
    assert_refused(response, 401, "SIGNATURE_INVALID")
    assert service.by_event(message_id) == []


def test_a_tampered_body_is_401(service: Service, sender: WebhookSender) -> None:
    """The signature of another body does not verify this one."""
    message_id = wamid()
    payload = whatsapp_text_message(from_="447700900123", body="x", message_id=message_id)
    delivery = sender.send_whatsapp(service.hook("whatsapp"), payload, app_secret=WA_SECRET)
    tampered = delivery.body.replace(b'"x"', b'"y"')
    response = httpx.post(service.hook("whatsapp"), content=tampered, headers=delivery.headers)
    assert_refused(response, 401, "SIGNATURE_INVALID")


def test_malformed_json_with_a_valid_signature_is_400(service: Service) -> None:
    """A correctly signed body that is not the provider's JSON is 400 MALFORMED_PAYLOAD."""
    for body in (b"{not json", b"[1, 2]", b'{"object": "whatsapp_business_account", "entry": 5}'):
        response = httpx.post(
            service.hook("whatsapp"),
            content=body,
            headers={
                "content-type": "application/json",
                "x-hub-signature-256": whatsapp_signature(WA_SECRET, body),
            },
        )
        assert_refused(response, 400, "MALFORMED_PAYLOAD")


def test_too_large_is_413_before_verification(service: Service) -> None:
    """A body over ANTIFRAGILE_WEBHOOK_MAX_BYTES is 413 PAYLOAD_TOO_LARGE -- announced by
    Content-Length or streamed without one -- and nothing is recorded."""
    message_id = wamid()
    payload = whatsapp_text_message(
        from_="447700900123", body="x" * MAX_BYTES, message_id=message_id
    )
    with WebhookSender(timeout=30.0) as sender:
        delivery = sender.send_whatsapp(service.hook("whatsapp"), payload, app_secret=WA_SECRET)
    assert_refused(delivery, 413, "PAYLOAD_TOO_LARGE")

    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield delivery.body[: MAX_BYTES // 2]

    response = httpx.post(
        service.hook("whatsapp"), content=chunks(), headers=dict(delivery.headers)
    )
    assert "content-length" not in response.request.headers
    assert_refused(response, 413, "PAYLOAD_TOO_LARGE")
    assert service.by_event(message_id) == []


def test_wrong_content_type_is_415(service: Service) -> None:
    """WhatsApp and Shopify deliveries are JSON; anything else is 415."""
    body = b"hello"
    response = httpx.post(
        service.hook("whatsapp"),
        content=body,
        headers={
            "content-type": "text/plain",
            "x-hub-signature-256": whatsapp_signature(WA_SECRET, body),
        },
    )
    assert_refused(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_handshake(service: Service) -> None:
    """The subscription GET echoes hub.challenge as text/plain for the right verify token,
    403 FORBIDDEN for a wrong one, 400 when parameters are missing."""
    params = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    response = httpx.get(service.hook("whatsapp"), params=params)
    assert response.status_code == 200
    assert response.text == "1158201444"
    assert response.headers["content-type"].startswith("text/plain")
    assert response.headers["x-request-id"]

    wrong = httpx.get(service.hook("whatsapp"), params={**params, "hub.verify_token": "nope"})
    assert_refused(wrong, 403, "FORBIDDEN")
    assert "nope" not in wrong.text
    assert VERIFY_TOKEN not in wrong.text

    missing = httpx.get(service.hook("whatsapp"), params={"hub.mode": "subscribe"})
    assert_refused(missing, 400, "MALFORMED_PAYLOAD")


# -- Twilio ---------------------------------------------------------------------------------------


def test_twilio_message_is_recorded_and_answered_with_empty_twiml(
    service: Service, sender: WebhookSender
) -> None:
    """A signed Twilio form delivery is recorded and answered 200 with an empty TwiML
    <Response/> (text/xml), so Twilio sends no reply of its own; redeliveries are duplicates."""
    sid = "SM" + uuid.uuid4().hex
    params = twilio_inbound_message(
        from_="whatsapp:+447700900123", to="whatsapp:+15550001111", body="hi", message_sid=sid
    )
    delivery = sender.send_twilio(service.hook("twilio"), params, auth_token=TWILIO_TOKEN)
    assert delivery.status == 200
    assert b"<Response/>" in delivery.response
    sender.redeliver(delivery)
    [entry] = service.by_event(sid)
    assert entry.channel == "twilio"
    assert entry.tenant_key == "+15550001111"


def test_twilio_hmac_sha256_signatures_are_accepted_alongside_sha1(
    service: Service, sender: WebhookSender
) -> None:
    """A delivery signed with HMAC-SHA256 over the same text verifies too; a SHA-256 signature
    made with another token does not."""
    sid = "SM" + uuid.uuid4().hex
    params = twilio_inbound_message(
        from_="+447700900123", to="+15550001111", body="hi", message_sid=sid
    )
    url = service.hook("twilio")
    wrong = sender.send_twilio(url, params, auth_token="not-the-token", algorithm="sha256")
    assert wrong.status == 401
    delivery = sender.send_twilio(url, params, auth_token=TWILIO_TOKEN, algorithm="sha256")
    assert delivery.status == 200, delivery.response
    assert len(service.by_event(sid)) == 1


def test_twilio_json_delivery_with_body_hash(service: Service, sender: WebhookSender) -> None:
    """A JSON delivery signed over the URL with bodySHA256 is verified and recorded."""
    sid = "SM" + uuid.uuid4().hex
    params = twilio_inbound_message(
        from_="+447700900123", to="+15550001111", body="hi", message_sid=sid
    )
    delivery = sender.send_twilio_json(service.hook("twilio"), params, auth_token=TWILIO_TOKEN)
    assert delivery.status == 200, delivery.response
    assert len(service.by_event(sid)) == 1


def test_twilio_wrong_signature_is_401(service: Service, sender: WebhookSender) -> None:
    """A Twilio delivery signed with another token, or for another URL, is refused."""
    sid = "SM" + uuid.uuid4().hex
    params = twilio_inbound_message(
        from_="+447700900123", to="+15550001111", body="hi", message_sid=sid
    )
    delivery = sender.send_twilio(service.hook("twilio"), params, auth_token="other-token")
    assert_refused(delivery, 401, "SIGNATURE_INVALID")
    signed_elsewhere = twilio_signature(TWILIO_TOKEN, "https://elsewhere.example.com/hook", params)
    response = httpx.post(
        service.hook("twilio"), data=params, headers={"x-twilio-signature": signed_elsewhere}
    )
    assert_refused(response, 401, "SIGNATURE_INVALID")
    assert service.by_event(sid) == []


def test_twilio_signature_over_the_public_url(tmp_path: Path) -> None:
    """Behind a proxy Twilio signs the public URL: with ANTIFRAGILE_PUBLIC_URL set, the
    signature is checked over it plus the path and query, not over the local address."""
    database = tmp_path / "public.db"
    settings = make_settings(database, ANTIFRAGILE_PUBLIC_URL="https://assistant.example.com/")
    assistant = StandInAssistant(settings)
    with running_server(create_app(settings, assistant=assistant)) as url:
        sid = "SM" + uuid.uuid4().hex
        params = twilio_inbound_message(
            from_="+447700900123", to="+15550001111", body="hi", message_sid=sid
        )
        public = "https://assistant.example.com/v1/webhooks/twilio?tenant=acme"
        good = httpx.post(
            f"{url}/v1/webhooks/twilio?tenant=acme",
            data=params,
            headers={"x-twilio-signature": twilio_signature(TWILIO_TOKEN, public, params)},
        )
        assert good.status_code == 200, good.text
        local = f"{url}/v1/webhooks/twilio?tenant=acme"
        bad = httpx.post(
            local,
            data=params,
            headers={"x-twilio-signature": twilio_signature(TWILIO_TOKEN, local, params)},
        )
        assert bad.status_code == 401


# -- Shopify --------------------------------------------------------------------------------------


def test_shopify_event_is_recorded_once(service: Service, sender: WebhookSender) -> None:
    """A Shopify delivery is recorded under its X-Shopify-Webhook-Id; its retries are
    duplicates."""
    webhook_id = str(uuid.uuid4())
    order = {"id": 820982911946154508, "name": "#1001", "total_price": "10.00"}
    delivery = sender.send_shopify(
        service.hook("shopify"),
        order,
        secret=SHOPIFY_SECRET,
        webhook_id=webhook_id,
        shop_domain="acme.myshopify.com",
    )
    assert delivery.status == 200, delivery.response
    sender.redeliver(delivery)
    sender.redeliver(delivery)
    [entry] = service.by_event(webhook_id)
    assert entry.channel == "shopify"
    assert entry.tenant_key == "acme.myshopify.com"


def test_shopify_wrong_signature_is_401(service: Service, sender: WebhookSender) -> None:
    """A Shopify delivery signed with another secret records nothing."""
    webhook_id = str(uuid.uuid4())
    delivery = sender.send_shopify(
        service.hook("shopify"), {"id": 1}, secret="other", webhook_id=webhook_id
    )
    assert_refused(delivery, 401, "SIGNATURE_INVALID")
    assert service.by_event(webhook_id) == []


# -- the worker in the same process ---------------------------------------------------------------


def test_the_apps_worker_processes_recorded_events(tmp_path: Path) -> None:
    """With run_worker the app runs a worker in its event loop: a recorded event's job runs
    without another process, and shutdown stops the worker and closes the assistant."""
    database = tmp_path / "worker.db"
    settings = make_settings(database)
    assistant = StandInAssistant(settings)
    app = create_app(settings, assistant=assistant, run_worker=True, run_scheduler=True)
    with running_server(app) as url, WebhookSender(timeout=30.0) as sender:
        payload = whatsapp_text_message(from_="447700900123", body="hi", message_id=wamid())
        delivery = sender.send_whatsapp(
            f"{url}/v1/webhooks/whatsapp", payload, app_secret=WA_SECRET
        )
        [inbox_id] = body_of(delivery.response)["data"]["recorded"]
        deadline = time.monotonic() + 60
        while inbox_id not in assistant.processed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert assistant.processed == [inbox_id]
    assert len(assistant.workers) == 1
    assert len(assistant.schedulers) == 1
    assert assistant.workers[0].running == 0
    assert assistant.opened == 1
    assert assistant.closed == 0  # an assistant passed in stays the caller's to close


# -- the documented routes and the fast path ------------------------------------------------------


async def test_the_routes_behind_a_root_path_do_the_same_work(tmp_path: Path) -> None:
    """Under a root path the fast path steps aside and the FastAPI routes answer: the same
    verification, the same envelope, the same inbox."""
    settings = make_settings(tmp_path / "root.db")
    assistant = StandInAssistant(settings)
    app = create_app(settings, assistant=assistant)
    message_id = wamid()
    payload = whatsapp_text_message(from_="447700900123", body="hi", message_id=message_id)
    body = json.dumps(payload).encode()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, root_path="/assistant")
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            url = "/assistant/v1/webhooks/whatsapp"
            headers = {"content-type": "application/json"}
            refused = await client.post(url, content=body, headers=headers)
            assert_refused(refused, 401, "SIGNATURE_INVALID")
            headers["x-hub-signature-256"] = whatsapp_signature(WA_SECRET, body)
            accepted = await client.post(url, content=body, headers=headers)
            assert accepted.status_code == 200, accepted.text
            assert accepted.json()["data"]["received"] == 1
            assert accepted.headers["x-request-id"] == accepted.json()["meta"]["request_id"]
            entries = await assistant.jobs.queue.find_inbound(channel="whatsapp")
    assert [entry.event_id for entry in entries] == [message_id]


async def test_the_ip_limit_applies_to_webhooks(tmp_path: Path) -> None:
    """With inbound limits on the app, a client address past its rate is refused 429
    RATE_LIMITED with Retry-After, before anything is read or recorded."""
    settings = make_settings(tmp_path / "limits.db")
    assistant = StandInAssistant(settings)
    app = create_app(settings, assistant=assistant)
    app.state.limits = InboundLimits(ip_rate=(2, 60), sender_rate=None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            statuses = []
            for _ in range(3):
                response = await post_whatsapp(client)
                statuses.append(response.status_code)
            assert statuses == [200, 200, 429]
            assert_refused(response, 429, "RATE_LIMITED")
            assert int(response.headers["retry-after"]) >= 1
            assert len(await assistant.jobs.queue.find_inbound()) == 2


async def test_middleware_added_after_create_app_sees_every_webhook(tmp_path: Path) -> None:
    """Middleware added to the app after ``create_app`` sees every webhook delivery (the first
    and the later ones, and a refused one), and the answers carry the request id."""
    settings = make_settings(tmp_path / "outer.db")
    assistant = StandInAssistant(settings)
    app = create_app(settings, assistant=assistant)
    seen: list[str] = []

    class Outer:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                seen.append(f"{scope['method']} {scope['path']}")
            await self.inner(scope, receive, send)

    app.add_middleware(Outer)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            for _ in range(3):
                response = await post_whatsapp(client)
                assert response.status_code == 200, response.text
                assert response.headers["x-request-id"] == response.json()["meta"]["request_id"]
            refused = await client.post(
                "/v1/webhooks/whatsapp", content=b"{}", headers={"content-type": "text/plain"}
            )
            assert_refused(refused, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert seen == ["POST /v1/webhooks/whatsapp"] * 4
    assert len(await assistant.jobs.queue.find_inbound()) == 3
