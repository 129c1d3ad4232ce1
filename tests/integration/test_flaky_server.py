"""The FlakyServer over real sockets: every fault, as an httpx client sees it."""

from __future__ import annotations

import concurrent.futures
import email.utils
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

import antifragile.sandbox
from antifragile import ConfigurationError
from antifragile.sandbox import Chaos, Fault, FlakyServer, Phase, Quota
from tests._waiting import wait_until


@pytest.fixture
def server() -> Iterator[FlakyServer]:
    with FlakyServer(default=Fault.ok(json={"ok": True})) as running:
        yield running


@pytest.fixture
def client(server: FlakyServer) -> Iterator[httpx.Client]:
    # requests meant to be answered wait generously; a test of a slow answer passes its own
    with httpx.Client(base_url=server.url, timeout=30.0) as http:
        yield http


def test_public_names() -> None:
    """The sandbox package exports exactly these names (their order is checked by the linter)."""
    assert set(antifragile.sandbox.__all__) == {
        "AcuitySimulator",
        "CalComSimulator",
        "CalendlySimulator",
        "Call",
        "Chaos",
        "Delivery",
        "DeliveryStatus",
        "ChatRule",
        "DEFAULT_CHAT_RULES",
        "Effect",
        "EventWebhookKey",
        "Fault",
        "FaultKind",
        "FaultPlan",
        "FlakyServer",
        "HubSpotSimulator",
        "IncomingRequest",
        "MailchimpSimulator",
        "MandrillSimulator",
        "OpenAISimulator",
        "Phase",
        "ProviderFault",
        "ProviderFaultKind",
        "ProviderSandbox",
        "Quota",
        "RETRY_DELAYS",
        "RecordedRequest",
        "Reply",
        "RequestHandler",
        "ResendSimulator",
        "Route",
        "SMTPSandbox",
        "SendGridSimulator",
        "ShopifySimulator",
        "Simulator",
        "SlackSimulator",
        "StatusWebhooks",
        "TwilioSimulator",
        "WEBHOOKS",
        "WebhookAttempt",
        "WebhookSender",
        "WhatsAppSimulator",
        "acuity_signature",
        "calcom_signature",
        "calendly_signature",
        "hubspot_signature",
        "mandrill_signature",
        "shopify_signature",
        "svix_signature",
        "twilio_inbound_message",
        "twilio_signature",
        "whatsapp_interactive_reply",
        "whatsapp_media_message",
        "whatsapp_signature",
        "whatsapp_status",
        "whatsapp_text_message",
    }


def test_default_answers_and_requests_are_recorded(
    server: FlakyServer, client: httpx.Client
) -> None:
    """Unscripted requests get the default answer; each is recorded with its details."""
    before = time.time()
    response = client.post("/orders?page=2", json={"sku": "A-1"}, headers={"X-Request-Id": "rid-1"})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert response.headers["x-request-id"] == "rid-1"
    [record] = server.requests
    assert (record.method, record.path, record.query) == ("POST", "/orders", "page=2")
    assert record.headers["x-request-id"] == "rid-1"
    assert all(name == name.lower() for name in record.headers)
    assert record.json() == {"sku": "A-1"}
    assert record.fault == "ok"
    assert record.status == 200
    assert record.phase is None
    assert before <= record.at <= time.time()


def test_script_is_consumed_in_order_then_default(
    server: FlakyServer, client: httpx.Client
) -> None:
    """A path's faults answer one request each, first in first out; then the default answers."""
    server.script("/orders", [Fault.status(503), Fault.status(502), Fault.ok(201)])
    statuses = [client.get("/orders").status_code for _ in range(4)]
    assert statuses == [503, 502, 201, 200]
    assert client.get("/other").status_code == 200
    assert [r.fault for r in server.requests] == ["status", "status", "ok", "ok", "ok"]


def test_initial_script_and_keep_alive() -> None:
    """The constructor's script applies, and consecutive requests reuse one connection."""
    script = {"/orders": [*Fault.repeat(Fault.status(503), 2), Fault.ok()]}
    with FlakyServer(script=script) as server, httpx.Client(base_url=server.url) as client:
        assert [client.get("/orders").status_code for _ in range(3)] == [503, 503, 200]
        assert len({r.connection for r in server.requests}) == 1


def test_status_fault_has_a_json_error_body(server: FlakyServer, client: httpx.Client) -> None:
    """``Fault.status`` answers with the status, a JSON error body and extra headers."""
    server.script("/x", [Fault.status(500, headers={"X-Trace": "t1"}), Fault.status(422, json=[])])
    first = client.get("/x")
    assert first.status_code == 500
    assert first.json() == {"error": {"status": 500, "message": "Internal Server Error"}}
    assert first.headers["x-trace"] == "t1"
    assert client.get("/x").json() == []


def test_rate_limited_with_delta_seconds(server: FlakyServer, client: httpx.Client) -> None:
    """``Fault.rate_limited`` answers 429 with ``Retry-After`` in delta-seconds, or none."""
    server.script("/x", [Fault.rate_limited(1.5), Fault.rate_limited(), Fault.rate_limited(None)])
    responses = [client.get("/x") for _ in range(3)]
    assert [r.status_code for r in responses] == [429, 429, 429]
    assert responses[0].headers["retry-after"] == "1.5"
    assert responses[1].headers["retry-after"] == "1"
    assert "retry-after" not in responses[2].headers


def test_rate_limited_with_http_date(server: FlakyServer, client: httpx.Client) -> None:
    """With ``http_date=True`` the ``Retry-After`` header is an HTTP-date that far ahead of
    the moment the server answered (rounded up to the whole second)."""
    server.script("/x", [Fault.rate_limited(30, http_date=True)])
    before = time.time()
    response = client.get("/x")
    after = time.time()
    assert response.status_code == 429
    when = email.utils.parsedate_to_datetime(response.headers["retry-after"])
    assert before + 30.0 <= when.timestamp() < after + 31.0


def test_slow_answers_late(server: FlakyServer, client: httpx.Client) -> None:
    """``Fault.slow`` waits before answering, as ok or as the fault given as ``then``."""
    server.script("/x", [Fault.slow(0.15), Fault.slow(0.05, then=Fault.status(504))])
    started = time.perf_counter()
    assert client.get("/x").status_code == 200
    assert time.perf_counter() - started >= 0.15
    assert client.get("/x").status_code == 504
    assert [(r.fault, r.status) for r in server.requests] == [("slow", 200), ("slow", 504)]


def test_slow_past_the_client_timeout(server: FlakyServer, client: httpx.Client) -> None:
    """A client that stops waiting for a slow answer sees a read timeout."""
    server.script("/x", [Fault.slow(0.5)])
    with pytest.raises(httpx.ReadTimeout):
        client.get("/x", timeout=0.05)
    assert client.get("/x").status_code == 200


def test_reset_drops_the_connection(server: FlakyServer, client: httpx.Client) -> None:
    """``Fault.reset`` sends a TCP reset instead of a response, and the request is recorded."""
    server.script("/x", [Fault.reset()])
    with pytest.raises(httpx.ReadError) as caught:
        client.post("/x", content=b"payload")
    assert "reset" in str(caught.value).lower()
    assert client.get("/x").status_code == 200  # on a new connection
    first, second = server.requests
    assert (first.fault, first.status, first.body) == ("reset", None, b"payload")
    assert first.connection != second.connection


def test_hang_never_answers_and_blocks_nobody(server: FlakyServer) -> None:
    """``Fault.hang`` holds its request without answering while other connections are served:
    another request is answered while the held one is still waiting, and the held one never
    gets an answer (here it ends when the server stops)."""
    server.script("/stuck", [Fault.hang()])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(httpx.get, server.url + "/stuck", timeout=60)
        wait_until(lambda: server.count("/stuck") == 1)
        assert httpx.get(server.url + "/fine", timeout=60).status_code == 200
        assert not stuck.done()  # answered while the hanging request still waits
        server.stop()
        with pytest.raises(httpx.HTTPError) as caught:
            stuck.result()
    assert not isinstance(caught.value, httpx.TimeoutException)
    assert [r.fault for r in server.requests] == ["hang", "ok"]


def test_stop_releases_hanging_connections() -> None:
    """Stopping the server closes a connection it was holding: the client sees the connection
    end, not its own (minute-long) timeout."""
    server = FlakyServer(default=Fault.hang()).start()
    errors: list[BaseException] = []

    def call() -> None:
        try:  # a timeout far longer than the test: only the server can end this request
            httpx.get(server.url + "/", timeout=60)
        except httpx.HTTPError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    wait_until(lambda: server.count() == 1)
    server.stop()
    thread.join(60)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert not isinstance(errors[0], httpx.TimeoutException)
    assert not server.running


def test_malformed_body_is_not_json(server: FlakyServer, client: httpx.Client) -> None:
    """``Fault.malformed`` answers 200 ``application/json`` with a body that does not parse."""
    server.script("/x", [Fault.malformed()])
    response = client.get("/x")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_head_gets_headers_only(server: FlakyServer, client: httpx.Client) -> None:
    """A HEAD request gets the status and headers of the answer, no body."""
    response = client.head("/x")
    assert response.status_code == 200
    assert response.content == b""
    assert client.get("/x").json() == {"ok": True}  # the connection is still in step


def test_requests_are_served_concurrently(server: FlakyServer) -> None:
    """Twenty requests on twenty connections are all in the server at once: each is held
    without an answer, and all twenty arrive (a server that served one connection at a time
    would never read the second). How long twenty slow requests take is measured by
    ``benchmarks/failure_latency.py``."""
    server.script("/x", Fault.repeat(Fault.hang(), 20))

    def call(_: int) -> type[BaseException] | int:
        try:
            return httpx.get(server.url + "/x", timeout=60).status_code
        except httpx.HTTPError as exc:
            return type(exc)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        calls = [pool.submit(call, n) for n in range(20)]
        wait_until(lambda: server.count("/x") == 20)
        assert not any(c.done() for c in calls)
        server.stop()  # ends the twenty held requests
        outcomes = [c.result() for c in calls]
    assert len({r.connection for r in server.requests}) == 20
    for outcome in outcomes:
        assert isinstance(outcome, type), outcome  # no status: an error ended it
        assert issubclass(outcome, httpx.HTTPError)
        assert not issubclass(outcome, httpx.TimeoutException)


def test_count_filters_by_path_and_method(server: FlakyServer, client: httpx.Client) -> None:
    """``count`` counts all requests, or those of one path and/or method."""
    client.get("/a")
    client.post("/a")
    client.get("/b")
    assert server.count() == 3
    assert server.count("/a") == 2
    assert server.count(method="get") == 2
    assert server.count("/a", "POST") == 1


def test_script_replaces_and_reset_clears(server: FlakyServer, client: httpx.Client) -> None:
    """``script`` replaces a path's queue; ``reset`` forgets the records and the scripts."""
    server.script("/x", [Fault.status(500), Fault.status(500)])
    server.script("/x", [Fault.status(418)])
    assert client.get("/x").status_code == 418
    server.script("/x", [Fault.status(503)])
    server.reset()
    assert server.requests == []
    assert client.get("/x").status_code == 200


def test_script_from_another_thread_while_serving(server: FlakyServer) -> None:
    """Scripts can change from any thread while requests are in flight."""

    def hammer() -> list[int]:
        with httpx.Client(base_url=server.url) as http:
            return [http.get("/x").status_code for _ in range(30)]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(hammer)
        for _ in range(30):
            server.script("/x", [Fault.status(503)])
        codes = running.result()
    assert set(codes) <= {200, 503}
    assert server.count("/x") == 30


def test_chaos_is_reproducible_with_a_seed() -> None:
    """A seeded chaos mix draws the same faults in the same order, in about its proportions."""

    def statuses() -> list[int]:
        chaos = Chaos(p_503=0.3, p_429=0.2, retry_after=0.5, seed=42)
        with FlakyServer(chaos=chaos) as server, httpx.Client(base_url=server.url) as http:
            return [http.get("/x").status_code for _ in range(60)]

    first = statuses()
    assert first == statuses()
    assert 5 <= first.count(503) <= 30
    assert 3 <= first.count(429) <= 24
    assert first.count(200) >= 15


def test_chaos_resets_and_slow_answers() -> None:
    """Chaos draws resets and slow answers too; a draw of no fault leaves the default."""
    with (
        FlakyServer(chaos=Chaos(p_reset=1.0)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        with pytest.raises(httpx.ReadError):
            http.get("/x")
        assert server.requests[0].fault == "reset"
    with (
        FlakyServer(chaos=Chaos(p_slow=1.0, slow_seconds=0.05)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        assert http.get("/x").status_code == 200
        assert server.requests[0].fault == "slow"


def test_reset_replays_the_chaos_sequence() -> None:
    """After ``reset`` a seeded chaos mix draws the same sequence again."""
    with (
        FlakyServer(chaos=Chaos(p_503=0.5, seed=3)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        first = [http.get("/x").status_code for _ in range(20)]
        server.reset()
        assert [http.get("/x").status_code for _ in range(20)] == first
        assert server.count() == 20


def test_quota_refuses_beyond_its_limit_until_the_window_resets() -> None:
    """A quota answers with rate-limit headers, then 429 + Retry-After until its window ends.
    (The window is a second, so that three requests in a row fit in it even on a busy
    machine.)"""
    phases = [Phase(0.0, None, Quota(2, per=1.0), "quota")]
    with (
        FlakyServer(phases=phases, default=Fault.ok(json={"ok": True})) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        responses = [http.get("/x") for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 429]
        assert responses[0].json() == {"ok": True}
        assert [r.headers["ratelimit-remaining"] for r in responses] == ["1", "0", "0"]
        assert {r.headers["ratelimit-limit"] for r in responses} == {"2"}
        refused = responses[2]
        wait = float(refused.headers["retry-after"])
        assert 0.0 < wait <= 1.0
        assert float(refused.headers["ratelimit-reset"]) == wait
        time.sleep(wait)
        assert http.get("/x").status_code == 200
    assert [r.fault for r in server.requests] == ["ok", "ok", "rate_limited", "ok"]


def test_phases_play_a_timeline() -> None:
    """A phase answers the requests arriving in its window; the script still comes first.
    (The outage lasts a second, so that the first requests fall in it even on a busy
    machine.)"""
    phases = [Phase.outage(0.0, 1.0), Phase(1.0, None, Chaos(p_503=0.0), "healthy")]
    with (
        FlakyServer(phases=phases) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        assert server.current_phase is not None
        assert server.current_phase.name == "outage"
        server.script("/x", [Fault.ok(202)])
        assert http.get("/x").status_code == 202
        assert http.get("/x").status_code == 503
        wait_until(lambda: server.elapsed >= 1.0, interval=0.01)
        assert http.get("/x").status_code == 200
    assert [r.phase for r in server.requests] == [None, "outage", "healthy"]


async def test_async_context_manager() -> None:
    """``async with`` starts and stops the server around an async client."""
    async with (
        FlakyServer(script={"/x": [Fault.status(503)]}) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        assert (await http.get("/x")).status_code == 503
        assert (await http.get("/x")).status_code == 200
    assert not server.running


def test_url_needs_a_running_server_and_faults_validate() -> None:
    """Misuse is a ConfigurationError: no URL before start, bad fault arguments."""
    server = FlakyServer()
    with pytest.raises(ConfigurationError):
        _ = server.url
    with server, pytest.raises(ConfigurationError):
        server.start()
    for bad in (
        lambda: Fault.status(99),
        lambda: Fault.slow(-1),
        lambda: Fault.rate_limited(-1),
        lambda: Fault.repeat(Fault.ok(), -1),
        lambda: Chaos(p_503=0.7, p_429=0.7),
        lambda: Phase(2.0, 1.0, Fault.ok()),
        lambda: Quota(-1),
        lambda: Quota(1, per=0),
    ):
        with pytest.raises(ConfigurationError):
            bad()
