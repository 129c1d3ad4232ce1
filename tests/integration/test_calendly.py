"""CalendlyConnector against the sandbox's Calendly simulator, over real HTTP.

Policies run on a FakeClock. A single-use scheduling link does nothing until a customer books
through it, so creating one is safe to repeat: the behaviour under test is *every fault ends in
one link returned*, orphans at most beside it, and a booking made through the returned link is
reported by ``invitee.created`` carrying the link's correlation.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from antifragile import (
    AuthenticationError,
    ConfigurationError,
    FakeClock,
    InvalidRequestError,
    Policy,
    RateLimitedError,
    Retry,
)
from antifragile.connectors import CalendlyConnector, SchedulingLink, correlation_for
from antifragile.connectors._calendly import BASE_URL_ENV, TOKEN_ENV
from antifragile.sandbox import CalendlySimulator, FlakyServer, ProviderSandbox
from tests.integration._faults import FAULT_KINDS, GATEWAY_FAULTS
from tests.integration.test_sandbox_status_webhooks import Receiver

TOKEN = "calendly-test-token"
LINKS = "POST /scheduling_links"

Connect = Callable[..., CalendlyConnector]


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    with ProviderSandbox([CalendlySimulator(tokens=[TOKEN], rate_limit=100_000)]) as running:
        yield running


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    made: list[CalendlyConnector] = []

    def factory(token: str = TOKEN, **options: Any) -> CalendlyConnector:
        options.setdefault("timeout", 0.3)
        options.setdefault("base_url", sandbox.base_url("calendly"))
        connector = CalendlyConnector(token, clock=clock, **options)
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        await connector.aclose()


async def link_for(connector: CalendlyConnector, key: str = "lead/1") -> SchedulingLink:
    (event_type,) = await connector.event_types()
    return await connector.create_scheduling_link(
        event_type=event_type.uri, idempotency_key=key, name="Ada", email="ada@example.com"
    )


def _posts(sandbox: ProviderSandbox) -> int:
    return sum(1 for r in sandbox.requests if r.method == "POST")


async def test_event_types_and_a_single_use_link_with_correlation(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """The token's user's event types are listed; a link is ``POST /scheduling_links`` with
    ``max_event_count`` 1 and the event type URI, and its booking URL carries the key's
    correlation as ``utm_content`` and the prefill."""
    link = await link_for(connect())
    (effect,) = sandbox.effects("calendly", LINKS)
    assert effect.data == {
        "max_event_count": 1,
        "owner": link.owner,
        "owner_type": "EventType",
    }
    assert link.booking_url.startswith(link.raw_url + "?")
    assert f"utm_content={correlation_for('scheduling-link/lead/1')}" in link.booking_url
    assert "name=Ada" in link.booking_url
    assert "email=ada%40example.com" in link.booking_url
    assert link.correlation == correlation_for(link.idempotency_key)
    request = next(r for r in sandbox.requests if r.method == "POST")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


async def test_a_booking_through_the_link_is_found_and_the_link_is_used_up(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A customer books through the link once (a second use is 404); the scheduled event and
    its invitee, with the link's UTM tracking, are found through the API."""
    connector = connect()
    link = await link_for(connector)
    async with httpx.AsyncClient(timeout=10.0) as customer:
        booked = await customer.post(link.booking_url, json={"start_time": "2026-12-01T10:00:00Z"})
        again = await customer.post(link.booking_url, json={"start_time": "2026-12-01T11:00:00Z"})
    assert booked.status_code == 200
    assert again.status_code == 404
    user = str((await connector.current_user())["uri"])
    (event,) = await connector.scheduled_events(user=user, invitee_email="ada@example.com")
    (invitee,) = await connector.invitees(str(event["uri"]).rsplit("/", 1)[-1])
    assert invitee["tracking"]["utm_content"] == link.correlation
    assert invitee["name"] == "Ada"


async def test_bad_token_is_an_authentication_error_tried_once(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """An unknown token is 401 ``Unauthenticated``: permanent, one request, never shown."""
    with pytest.raises(AuthenticationError) as caught:
        await connect("wrong-token").event_types(user="https://api.calendly.com/users/X")
    assert "Unauthenticated" in str(caught.value)
    assert "wrong-token" not in str(caught.value)
    assert len(sandbox.requests) == 1


async def test_unknown_event_type_is_invalid_argument(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A link for an owner that is not an event type is 400 ``Invalid Argument``, not retried;
    no link exists."""
    with pytest.raises(InvalidRequestError) as caught:
        await connect().create_scheduling_link(
            event_type="https://api.calendly.com/event_types/NOPE", idempotency_key="k"
        )
    assert "Invalid Argument" in str(caught.value)
    assert sandbox.effects("calendly") == []
    assert _posts(sandbox) == 1


@pytest.mark.parametrize("kind", list(FAULT_KINDS))
async def test_every_fault_kind_ends_in_one_link(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock, kind: str
) -> None:
    """Each fault on the first link request: the link request is repeated (safe: an unsent
    single-use link books nothing) and one link is returned; after an ambiguous failure an
    orphan link exists beside it, never used."""
    connector = connect()
    (event_type,) = await connector.event_types()
    sandbox.faults("calendly", LINKS, script=[FAULT_KINDS[kind]])
    link = await connector.create_scheduling_link(event_type=event_type.uri, idempotency_key="k")
    made = sandbox.effects("calendly", LINKS)
    assert made[-1].id == link.raw_url.rsplit("/", 1)[-1]
    orphans = 1 if kind in ("ambiguous", "ambiguous_hang") else 0
    assert len(made) == 1 + orphans
    assert _posts(sandbox) == (1 if kind == "latency" else 2)
    if kind == "429":
        assert 1.0 in clock.sleeps


async def test_calendly_rate_limit_headers_and_429(clock: FakeClock) -> None:
    """Past the simulator's window Calendly answers 429 with ``X-RateLimit-Reset`` (seconds):
    a RateLimitedError once retries are spent; every answer carries the three headers."""
    simulator = CalendlySimulator(rate_limit=2, per=60)
    assert CalendlySimulator().rate_limit == 500
    with ProviderSandbox([simulator]) as small:
        policy = Policy("calendly", clock=clock, retry=Retry(attempts=1))
        async with CalendlyConnector(
            TOKEN, base_url=small.base_url("calendly"), policy=policy, timeout=1.0
        ) as connector:
            await connector.current_user()
            await connector.current_user()
            with pytest.raises(RateLimitedError) as caught:
                await connector.current_user()
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > 0
        first, _, last = small.requests
        assert first.headers.get("authorization") == f"Bearer {TOKEN}"
        assert last.status == 429


@pytest.mark.parametrize("gateway", list(GATEWAY_FAULTS))
async def test_gateway_5xx_is_retried_for_links(clock: FakeClock, gateway: str) -> None:
    """A gateway's 502/504 without Calendly's body would leave a booking unknown; a link is safe
    to ask again, so every attempt is made and the last error raised."""
    with FlakyServer(default=GATEWAY_FAULTS[gateway]) as server:
        async with CalendlyConnector(TOKEN, base_url=server.url, clock=clock) as connector:
            with pytest.raises(Exception) as caught:
                await connector.create_scheduling_link(
                    event_type="https://api.calendly.com/event_types/X", idempotency_key="k"
                )
        assert getattr(caught.value, "retryable", False)
        assert len(server.requests) == 5


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ANTIFRAGILE_CALENDLY_TOKEN`` and ``ANTIFRAGILE_CALENDLY_BASE_URL`` configure the
    connector; without a token it refuses to start."""
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/calendly/")
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert CalendlyConnector().base_url == "http://127.0.0.1:9/calendly"
    monkeypatch.delenv(TOKEN_ENV)
    monkeypatch.delenv(BASE_URL_ENV)
    with pytest.raises(ConfigurationError):
        CalendlyConnector()
    assert CalendlyConnector("t").base_url == "https://api.calendly.com"


async def test_invitee_webhook_signed_and_410_is_final() -> None:
    """A booking through the link makes the simulator post ``invitee.created`` with the link's
    ``utm_content`` in ``tracking``, signed ``t=<unix>,v1=<hex HMAC-SHA256(key, "t." +
    body)>`` -- checked here with hmac; a 410 answer is final (Calendly drops the
    subscription): no retry."""
    receiver = Receiver()
    try:
        simulator = CalendlySimulator(tokens=[TOKEN], signing_key="k3y")
        with ProviderSandbox(
            [simulator], webhook_urls={"calendly": receiver.url + "/hook"}, time_scale=0.0001
        ) as sandbox:
            receiver.answers = [410]
            async with CalendlyConnector(
                TOKEN, base_url=sandbox.base_url("calendly"), timeout=5.0
            ) as connector:
                link = await link_for(connector)
            async with httpx.AsyncClient(timeout=10.0) as customer:
                booked = await customer.post(
                    link.booking_url, json={"start_time": "2026-12-01T10:00:00Z"}
                )
            assert booked.status_code == 200
            assert await asyncio.to_thread(sandbox.webhooks.wait_idle, 30.0)
        (delivery,) = receiver.received
        body = delivery.json()
        assert body["event"] == "invitee.created"
        assert body["payload"]["tracking"]["utm_content"] == link.correlation
        parts = dict(
            p.split("=", 1) for p in delivery.headers["calendly-webhook-signature"].split(",")
        )
        signed = parts["t"].encode() + b"." + delivery.body
        assert parts["v1"] == hmac.new(b"k3y", signed, hashlib.sha256).hexdigest()
    finally:
        receiver.close()
