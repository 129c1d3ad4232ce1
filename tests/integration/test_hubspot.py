"""HubSpotConnector against the sandbox's HubSpot simulator, over real HTTP.

Policies run on a FakeClock: back-offs and limiter pauses are recorded in ``clock.sleeps``
instead of being waited out. The sandbox's effect record is the ground truth for "how many
contacts were created".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from antifragile import (
    AuthenticationError,
    ConfigurationError,
    FakeClock,
    NotFoundError,
    Policy,
    RateLimitedError,
    Retry,
    TokenBucket,
    UpstreamUnavailableError,
)
from antifragile.connectors import Contact, HubSpotConnector
from antifragile.connectors._hubspot import ACCESS_TOKEN_ENV, BASE_URL_ENV
from antifragile.sandbox import HubSpotSimulator, ProviderFault, ProviderSandbox
from tests.integration._faults import FAULT_KINDS, attempt_timeout

TOKEN = "pat-na1-test-token"
CREATE = "POST /crm/v3/objects/contacts"


Connect = Callable[..., HubSpotConnector]


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    with ProviderSandbox([HubSpotSimulator(tokens=[TOKEN], burst=100_000)]) as running:
        yield running


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    made: list[HubSpotConnector] = []

    def factory(token: str = TOKEN, **options: Any) -> HubSpotConnector:
        options.setdefault("timeout", attempt_timeout(sandbox))
        connector = HubSpotConnector(
            token, base_url=sandbox.base_url("hubspot"), clock=clock, **options
        )
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        await connector.aclose()


def created(sandbox: ProviderSandbox) -> list[str]:
    return [e.id for e in sandbox.effects("hubspot", CREATE)]


async def test_create_contact_returns_the_new_id_with_bearer_auth(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A create is 201: the connector returns HubSpot's id, sent with the bearer token."""
    contact = await connect().create_contact("Ada@Example.com", {"firstname": "Ada"})
    assert contact.created
    assert created(sandbox) == [contact.id]
    assert contact.properties["email"] == "ada@example.com"
    assert contact.properties["firstname"] == "Ada"
    (request,) = sandbox.requests
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


async def test_unknown_token_is_an_authentication_error_without_retry(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A token HubSpot does not know is 401: a permanent AuthenticationError, tried once, with
    HubSpot's category and without the token."""
    with pytest.raises(AuthenticationError) as caught:
        await connect("pat-na1-wrong").create_contact("ada@example.com")
    assert caught.value.status == 401
    assert "INVALID_AUTHENTICATION" in str(caught.value)
    assert "pat-na1-wrong" not in str(caught.value)
    assert len(sandbox.requests) == 1
    assert created(sandbox) == []


async def test_duplicate_email_409_returns_the_existing_id(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A second create with the same email is HubSpot's 409 ``Existing ID: N``: the connector
    returns that id with ``created=False``, and there is still one contact."""
    connector = connect()
    first = await connector.create_contact("ada@example.com")
    again = await connector.create_contact("ADA@example.com", {"firstname": "Ada"})
    assert again == Contact(first.id, created=False)
    assert created(sandbox) == [first.id]
    assert sandbox.requests[-1].status == 409


async def test_update_contact_and_unknown_id(sandbox: ProviderSandbox, connect: Connect) -> None:
    """``update_contact`` patches properties; an unknown id is a NotFoundError."""
    connector = connect()
    contact = await connector.create_contact("ada@example.com")
    updated = await connector.update_contact(contact.id, {"lastname": "Lovelace"})
    assert updated.id == contact.id
    assert updated.properties["lastname"] == "Lovelace"
    with pytest.raises(NotFoundError) as caught:
        await connector.update_contact("999", {"lastname": "X"})
    assert "OBJECT_NOT_FOUND" in str(caught.value)


async def test_429_then_success(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock
) -> None:
    """A 429 (``RATE_LIMIT``, ``TEN_SECONDLY_ROLLING``, no Retry-After) is retried after a
    pause; the contact is created once."""
    sandbox.faults("hubspot", CREATE, script=[ProviderFault.rate_limited(2)])
    contact = await connect().create_contact("ada@example.com")
    assert created(sandbox) == [contact.id]
    assert [r.status for r in sandbox.requests] == [429, 201]
    assert any(s > 0 for s in clock.sleeps)


async def test_429_retry_after_is_configurable_and_honoured(clock: FakeClock) -> None:
    """With ``retry_after_header=True`` the simulator's own rolling limit answers 429 with
    ``Retry-After``; the connector waits it out (on the simulator's clock too) and succeeds."""
    simulator = HubSpotSimulator(
        burst=1, interval=10, retry_after_header=True, clock=clock.monotonic
    )
    with ProviderSandbox([simulator]) as small:
        policy = Policy("hubspot", clock=clock, retry=Retry(attempts=3))
        async with HubSpotConnector(
            TOKEN, base_url=small.base_url("hubspot"), policy=policy, timeout=1.0
        ) as connector:
            await connector.create_contact("a@example.com")
            await connector.create_contact("b@example.com")
        assert [r.status for r in small.requests] == [201, 429, 201]
        assert 10.0 in clock.sleeps


async def test_rate_limit_headers_slow_the_client(clock: FakeClock) -> None:
    """The ``X-HubSpot-RateLimit-*`` headers make the local bucket count HubSpot's rolling
    window (the first answer's count included): once the window is full the client waits for
    its first request to leave it, *before* HubSpot would answer 429."""
    simulator = HubSpotSimulator(burst=3, interval=10, clock=clock.monotonic)
    with ProviderSandbox([simulator]) as small:
        bucket = TokenBucket(100, burst=100, max_wait=60)
        policy = Policy("hubspot", rate=bucket, clock=clock, retry=Retry(attempts=1))
        async with HubSpotConnector(
            TOKEN, base_url=small.base_url("hubspot"), policy=policy, timeout=1.0
        ) as connector:
            await connector.create_contact("a@example.com")
            for n in range(5):
                await connector.create_contact(f"c{n}@example.com")
        assert all(r.status == 201 for r in small.requests)
        assert sum(clock.sleeps) >= 10


async def test_rate_limited_beyond_attempts_is_a_rate_limited_error(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A 429 on every attempt ends as a retryable RateLimitedError naming HubSpot's policy."""
    sandbox.faults("hubspot", CREATE, chaos=[(1.0, ProviderFault.rate_limited(1))])
    with pytest.raises(RateLimitedError) as caught:
        await connect().create_contact("ada@example.com")
    assert caught.value.retryable
    assert "TEN_SECONDLY_ROLLING" in str(caught.value)
    assert created(sandbox) == []


@pytest.mark.parametrize("lost", ["reset", "hang"])
async def test_ambiguous_failure_leaves_one_contact(
    sandbox: ProviderSandbox, connect: Connect, lost: Any
) -> None:
    """The contact is created but the answer is lost: the retry gets 409 ``Existing ID`` and
    the connector returns that id -- one contact."""
    sandbox.faults("hubspot", CREATE, script=[ProviderFault.ambiguous(lost=lost)])
    contact = await connect().create_contact("ada@example.com")
    assert created(sandbox) == [contact.id]
    assert not contact.created


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ANTIFRAGILE_HUBSPOT_ACCESS_TOKEN`` and ``_BASE_URL`` configure the connector."""
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/hubspot/")
    monkeypatch.setenv(ACCESS_TOKEN_ENV, "pat-from-env")
    assert HubSpotConnector().base_url == "http://127.0.0.1:9/hubspot"
    monkeypatch.delenv(ACCESS_TOKEN_ENV)
    monkeypatch.delenv(BASE_URL_ENV)
    with pytest.raises(ConfigurationError):
        HubSpotConnector()
    assert HubSpotConnector("pat-x").base_url == "https://api.hubapi.com"


@pytest.mark.parametrize("kind", list(FAULT_KINDS))
async def test_every_fault_kind_ends_with_exactly_one_contact(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """Each fault the sandbox plays on the first request -- latency, a 5xx, a 429 with Retry-After,
    a reset, a hang, an ambiguous failure (acted, answer lost by reset or hang) -- ends with the
    call succeeding and exactly one contact (the email is the contact's natural key). A
    malformed 200 is a retryable UpstreamUnavailableError (a durable job tries again); the next
    call makes the one contact."""
    sandbox.faults("hubspot", CREATE, script=[FAULT_KINDS[kind]])
    if kind == "malformed":
        with pytest.raises(UpstreamUnavailableError) as caught:
            await connect().create_contact("ada@example.com", {"firstname": "Ada"})
        assert caught.value.retryable
    await connect().create_contact("ada@example.com", {"firstname": "Ada"})
    assert len(created(sandbox)) == 1
