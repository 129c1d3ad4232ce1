"""The edge holds before a body is read: per-IP limit and credentials first, then a size limit
counted while the body arrives, and a bound on how long a body may stall.

Attacks as they were made against the service: a huge body to ``/v1/ai-results`` without
credentials, oversized admin and dashboard bodies (declared, and streamed without a length),
and a client that stops sending -- through the real app (``httpx.ASGITransport``, whose
request stream is pulled chunk by chunk, so the test counts what the service read) and a real
uvicorn server over a socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from antifragile.inbound import hubspot_signature, twilio_signature, whatsapp_signature
from antifragile.observability import Metrics
from antifragile.sandbox import twilio_inbound_message, whatsapp_text_message
from antifragile.service import Settings, create_app
from antifragile.service._checks import log_startup_warnings
from antifragile.service._server import guarded_h11
from tests._service_standin import StandInAssistant, free_port
from tests.integration.test_metrics_endpoint import QuietServer

BOOTSTRAP = "Edge-Guard-bootstrap-K3y-0123456789"
CHUNK = 64 * 1024


class Counted:
    """A request body of *chunks* chunks of 64 KiB that counts how many were pulled."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield b"{" + b" " * (CHUNK - 1)


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'edge.db'}",
            "ANTIFRAGILE_ADMIN_API_KEYS": BOOTSTRAP,
            **env,
        }
    )


class Apps:
    """Builds apps over opened stand-in assistants (closed at the end of the test)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.opened: list[StandInAssistant] = []

    async def __call__(self, **env: str) -> FastAPI:
        settings = _settings(self.tmp_path, **env)
        assistant = StandInAssistant(settings)
        await assistant.open()
        self.opened.append(assistant)
        return create_app(settings, assistant=assistant)


@pytest.fixture
async def make_app(tmp_path: Path) -> AsyncIterator[Apps]:
    apps = Apps(tmp_path)
    yield apps
    for assistant in apps.opened:
        await assistant.close()


def _client(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://edge.test", headers=headers
    )


def _https_client(app: FastAPI, host: str) -> httpx.AsyncClient:
    """A client whose requests name *host* (as a provider calling that deployment would)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=f"https://{host}")


def _code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    code: str = body["error"]["code"]
    return code


async def test_a_huge_body_without_credentials_is_refused_before_it_is_read(make_app: Apps) -> None:
    """200 MiB streamed to /v1/ai-results with no (or a wrong) credential: 401 with not one
    chunk of the body pulled -- credentials are checked on the headers alone."""
    app = await make_app()
    for headers in ({}, {"x-api-key": "af_0123456789abcdef_wrong"}):
        body = Counted(3200)
        async with _client(app, **headers) as client:
            response = await client.post(
                "/v1/ai-results", content=body, headers={"content-type": "application/json"}
            )
        assert _code(response, 401) == "AUTH"
        assert body.pulled == 0


async def test_an_admin_body_is_cut_off_at_its_limit_while_read(make_app: Apps) -> None:
    """An authenticated body with no length is read until it passes the API limit (256 KiB),
    then refused 413; a declared length above it is refused before any of it is read."""
    app = await make_app()
    async with _client(app, authorization=f"Bearer {BOOTSTRAP}") as client:
        streamed = Counted(3200)
        response = await client.post(
            "/v1/admin/dlq/retry", content=streamed, headers={"content-type": "application/json"}
        )
        assert _code(response, 413) == "PAYLOAD_TOO_LARGE"
        assert streamed.pulled == 256 * 1024 // CHUNK + 1

        declared = Counted(3200)
        response = await client.post(
            "/v1/ai-results",
            content=declared,
            headers={"content-type": "application/json", "content-length": str(3200 * CHUNK)},
        )
        assert _code(response, 413) == "PAYLOAD_TOO_LARGE"
        assert declared.pulled == 0

        response = await client.post(
            "/v1/admin/dlq/retry", content=b"{}", headers={"content-length": "12x"}
        )
        assert _code(response, 400) == "BAD_REQUEST"


async def test_limits_are_configurable_per_route_class(make_app: Apps) -> None:
    """ANTIFRAGILE_API_MAX_BYTES and ANTIFRAGILE_DASHBOARD_MAX_BYTES move the limits; the
    dashboard's login form is refused past its own (16 KiB by default) without credentials."""
    app = await make_app(ANTIFRAGILE_API_MAX_BYTES="100", ANTIFRAGILE_DASHBOARD_MAX_BYTES="50")
    async with _client(app, authorization=f"Bearer {BOOTSTRAP}") as client:
        response = await client.post("/v1/admin/dlq/retry", json={"ids": ["x" * 200]})
        assert _code(response, 413) == "PAYLOAD_TOO_LARGE"
        response = await client.post("/dashboard/login", data={"api_key": "k" * 60})
        assert _code(response, 413) == "PAYLOAD_TOO_LARGE"
    default = await make_app()
    async with _client(default) as client:
        login = Counted(100)
        response = await client.post(
            "/dashboard/login",
            content=login,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert _code(response, 413) == "PAYLOAD_TOO_LARGE"
        assert login.pulled == 1


async def test_the_ip_limit_is_taken_before_the_body_and_only_once(make_app: Apps) -> None:
    """With 3 requests a minute per address, three authenticated admin requests pass (the
    edge's token is the route's: not two per request), the fourth answers 429 with its body
    unread."""
    app = await make_app(ANTIFRAGILE_INBOUND_IP_RATE="3/60")
    async with _client(app, authorization=f"Bearer {BOOTSTRAP}") as client:
        for _ in range(3):
            response = await client.get("/v1/admin/whoami")
            assert response.status_code == 200, response.text
        body = Counted(10)
        response = await client.post("/v1/ai-results", content=body)
        assert _code(response, 429) == "RATE_LIMITED"
        assert "retry-after" in response.headers
        assert body.pulled == 0


async def test_api_docs_can_require_credentials(make_app: Apps) -> None:
    """ANTIFRAGILE_DOCS_REQUIRE_AUTH=on: /openapi.json and /docs answer 401 without a
    credential and the schema with one; off (the default), they are open."""
    app = await make_app(ANTIFRAGILE_DOCS_REQUIRE_AUTH="on")
    async with _client(app) as anonymous:
        for path in ("/openapi.json", "/docs"):
            assert _code(await anonymous.get(path), 401) == "AUTH"
    async with _client(app, authorization=f"Bearer {BOOTSTRAP}") as client:
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "antifragile"
    async with _client(await make_app()) as anonymous:
        assert (await anonymous.get("/openapi.json")).status_code == 200


async def test_whatsapp_verify_token_guesses_are_rate_limited(make_app: Apps) -> None:
    """The subscription handshake (GET) counts against the per-IP limit: with 3 requests a
    minute, three wrong verify tokens are 403, the fourth guess is 429 -- even the right one."""
    app = await make_app(
        ANTIFRAGILE_INBOUND_IP_RATE="3/60", ANTIFRAGILE_WHATSAPP_VERIFY_TOKEN="verify-tok-1"
    )
    params = {"hub.mode": "subscribe", "hub.challenge": "42"}
    async with _client(app) as client:
        for guess in range(3):
            response = await client.get(
                "/v1/webhooks/whatsapp", params={**params, "hub.verify_token": f"guess-{guess}"}
            )
            assert _code(response, 403) == "FORBIDDEN"
        response = await client.get(
            "/v1/webhooks/whatsapp", params={**params, "hub.verify_token": "verify-tok-1"}
        )
        assert _code(response, 429) == "RATE_LIMITED"


async def test_url_signed_webhooks_without_a_known_url_are_refused_whatever_the_host(
    make_app: Apps, caplog: pytest.LogCaptureFixture
) -> None:
    """Twilio and HubSpot sign the URL they called. Without ANTIFRAGILE_PUBLIC_URL or
    ANTIFRAGILE_ALLOWED_HOSTS the client's Host would decide that URL, so a delivery signed for
    another deployment could be replayed here by naming its host: such deliveries -- signed
    correctly over the URL they name -- are refused 403 PUBLIC_URL_REQUIRED, before their body
    is read and with nothing recorded; the start-up check names the cause in one line and
    /health says ``public_url: missing`` (degraded)."""
    token, secret = "twilio-token-edge-1", "hubspot-secret-edge-1"
    caplog.set_level("WARNING", logger="antifragile.config")
    app = await make_app(
        ANTIFRAGILE_TWILIO_AUTH_TOKEN=token, ANTIFRAGILE_HUBSPOT_WEBHOOK_SECRET=secret
    )
    assistant = make_app.opened[-1]
    settings = _settings(
        make_app.tmp_path,
        ANTIFRAGILE_TWILIO_AUTH_TOKEN=token,
        ANTIFRAGILE_HUBSPOT_WEBHOOK_SECRET=secret,
    )
    log_startup_warnings({}, settings, [], None)
    lines = [r.getMessage() for r in caplog.records if "PUBLIC_URL" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "Twilio and HubSpot webhooks" in lines[0]
    assert "\n" not in lines[0]

    params = twilio_inbound_message(
        from_="+447700900123", to="+15550001111", body="hi", message_sid="SM" + "2" * 32
    )
    host = "other-deployment.example"
    body = json.dumps([{"eventId": 1, "subscriptionType": "contact.creation"}]).encode()
    timestamp = str(int(assistant.clock.time() * 1000))
    hubspot_url = f"https://{host}/v1/webhooks/hubspot"
    async with _https_client(app, host) as client:
        twilio = await client.post(
            "/v1/webhooks/twilio",
            data=params,
            headers={
                "x-twilio-signature": twilio_signature(
                    token, f"https://{host}/v1/webhooks/twilio", params
                )
            },
        )
        hubspot = await client.post(
            "/v1/webhooks/hubspot",
            content=body,
            headers={
                "content-type": "application/json",
                "x-hubspot-request-timestamp": timestamp,
                "x-hubspot-signature-v3": hubspot_signature(
                    secret, "POST", hubspot_url, body, timestamp
                ),
            },
        )
        health = await client.get("/health")
    for response in (twilio, hubspot):
        assert _code(response, 403) == "PUBLIC_URL_REQUIRED"
        assert "ANTIFRAGILE_PUBLIC_URL" in response.json()["error"]["message"]
    assert await assistant.jobs.queue.find_inbound(limit=10) == []
    report = health.json()["data"]
    assert report["dependencies"]["public_url"] == "missing"
    assert report["status"] == "degraded"


async def test_twilio_signatures_only_over_an_allowed_host(make_app: Apps) -> None:
    """With ANTIFRAGILE_ALLOWED_HOSTS (and no public URL) the received URL is checked only
    when its Host is allowed: a correctly signed delivery naming another host is 401
    SIGNATURE_INVALID; one naming an allowed host is accepted; /health has no complaint."""
    token = "twilio-token-edge-1"
    app = await make_app(
        ANTIFRAGILE_TWILIO_AUTH_TOKEN=token, ANTIFRAGILE_ALLOWED_HOSTS="assistant.example.com"
    )
    params = twilio_inbound_message(
        from_="+447700900123", to="+15550001111", body="hi", message_sid="SM" + "1" * 32
    )
    for host, status in (("other-deployment.example", 401), ("assistant.example.com", 200)):
        url = f"https://{host}/v1/webhooks/twilio"
        async with _https_client(app, host) as client:
            response = await client.post(
                "/v1/webhooks/twilio",
                data=params,
                headers={"x-twilio-signature": twilio_signature(token, url, params)},
            )
            health = await client.get("/health")
        assert response.status_code == status, response.text
        assert "public_url" not in health.json()["data"]["dependencies"]
        if status == 401:
            assert _code(response, 401) == "SIGNATURE_INVALID"


async def test_a_delivery_older_than_the_dedup_ttl_is_ignored_and_counted(
    make_app: Apps,
) -> None:
    """A correctly signed WhatsApp message timestamped 400 days ago (older than the inbox
    TTL, after which its dedup record is gone and the same bytes would be processed again)
    is answered 200 with ``stale: 1`` and nothing recorded, and counted as
    ``antifragile_inbound_rejected_total{code="STALE_EVENT"}``; a fresh one is recorded."""
    secret = "wa-edge-secret-1"
    app = await make_app(ANTIFRAGILE_WHATSAPP_APP_SECRET=secret, ANTIFRAGILE_INBOX_TTL="7d")
    assistant = make_app.opened[-1]
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assistant.metrics = metrics  # type: ignore[attr-defined]
    now = int(assistant.clock.time())
    answers = []
    for age, mid in ((400 * 86400, "wamid.old"), (60, "wamid.new")):
        payload = json.dumps(
            whatsapp_text_message(
                from_="447700900123", body="hi", message_id=mid, timestamp=now - age
            )
        ).encode()
        async with _client(app) as client:
            response = await client.post(
                "/v1/webhooks/whatsapp",
                content=payload,
                headers={
                    "content-type": "application/json",
                    "x-hub-signature-256": whatsapp_signature(secret, payload),
                },
            )
        assert response.status_code == 200, response.text
        answers.append(response.json()["data"])
    assert answers[0] == {"received": 1, "recorded": [], "duplicates": [], "stale": 1}
    assert answers[1]["stale"] == 0
    assert len(answers[1]["recorded"]) == 1
    labels = {"channel": "whatsapp", "code": "STALE_EVENT"}
    assert registry.get_sample_value("antifragile_inbound_rejected_total", labels) == 1


# -- a real server ----------------------------------------------------------------------------


async def _exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send *head* and *body* on a fresh connection, then read until the server closes or
    sends a complete small answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        writer.close()
        await writer.wait_closed()


async def _serve(app: FastAPI, **options: Any) -> tuple[QuietServer, asyncio.Task[Any], int]:
    port = free_port()
    server = QuietServer(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            log_config=None,
            **options,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            raise RuntimeError("the test server did not start")
        await asyncio.sleep(0.01)
    return server, task, port


@pytest.mark.parametrize("authorized", [False, True])
async def test_a_real_server_answers_before_a_declared_huge_body_is_sent(
    make_app: Apps, authorized: bool
) -> None:
    """Over a socket, headers declaring 200 MiB and no body: 401 without a credential, 413
    with one -- the server answers without waiting for (or buffering) any of the body."""
    app = await make_app()
    server, task, port = await _serve(app)
    try:
        auth = f"Authorization: Bearer {BOOTSTRAP}\r\n" if authorized else ""
        head = (
            "POST /v1/ai-results HTTP/1.1\r\nHost: edge.test\r\n"
            f"Content-Type: application/json\r\n{auth}Content-Length: {200 * 1024 * 1024}\r\n\r\n"
        ).encode()
        answer = await _exchange(port, head)
        expected = b"413" if authorized else b"401"
        assert answer.startswith(b"HTTP/1.1 " + expected), answer[:200]
        assert b"connection: close" in answer.lower()  # closed, not drained
    finally:
        server.should_exit = True
        await task


async def test_a_stalled_body_is_answered_408_and_closed(make_app: Apps) -> None:
    """A client that declares 100 bytes, sends 10 and stops: 408 REQUEST_TIMEOUT once the
    body read timeout passes, and the connection is closed."""
    app = await make_app(ANTIFRAGILE_BODY_READ_TIMEOUT="0.2")
    server, task, port = await _serve(app)
    try:
        head = (
            "POST /v1/admin/dlq/retry HTTP/1.1\r\nHost: edge.test\r\n"
            f"Authorization: Bearer {BOOTSTRAP}\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n"
        ).encode()
        answer = await _exchange(port, head, b'{"ids": [')
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"REQUEST_TIMEOUT" in answer
        assert b"connection: close" in answer.lower()
    finally:
        server.should_exit = True
        await task


async def test_slow_headers_are_cut_off_by_the_server(make_app: Apps) -> None:
    """A client that opens a connection and sends half its headers is disconnected once the
    header deadline passes (``antifragile serve``'s protocol, here with 0.2 s); a client that
    sends its request whole on the same server is answered."""
    app = await make_app()
    server, task, port = await _serve(app, http=guarded_h11(0.2))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: edge.test\r\nX-Slow: ")
        await writer.drain()
        assert await reader.read() == b""  # closed by the server, nothing answered
        writer.close()
        await writer.wait_closed()
        answer = await _exchange(port, b"GET /ready HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    finally:
        server.should_exit = True
        await task
