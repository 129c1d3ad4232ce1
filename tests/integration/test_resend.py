"""ResendConnector against the sandbox's Resend simulator, over real HTTP.

Policies run on a FakeClock: back-offs, ``retry-after`` waits and limiter pauses are recorded
in ``clock.sleeps`` instead of being waited out; only attempt timeouts (a hang) take a few
tenths of a second of real time. The sandbox's effect record is the ground truth for "how many
emails went out".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from antifragile import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    FakeClock,
    InvalidRequestError,
    Policy,
    Retry,
    TokenBucket,
    TransientError,
    UpstreamUnavailableError,
)
from antifragile.connectors import (
    ResendConnector,
    SentEmail,
    correlation_for,
    idempotency_key_for,
)
from antifragile.connectors._resend import API_KEY_ENV, BASE_URL_ENV
from antifragile.sandbox import Fault, FlakyServer, ProviderFault, ProviderSandbox, ResendSimulator
from tests.integration._faults import FAULT_KINDS, attempt_timeout

KEY = "re_test_key"
SEND = "POST /emails"


Connect = Callable[..., ResendConnector]


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    with ProviderSandbox([ResendSimulator(api_keys=[KEY], rate_limit=10_000)]) as running:
        yield running


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    """Build connectors for the sandbox on the fake clock; they are closed afterwards."""
    made: list[ResendConnector] = []

    def factory(api_key: str = KEY, **options: Any) -> ResendConnector:
        options.setdefault("timeout", attempt_timeout(sandbox))
        connector = ResendConnector(
            api_key, base_url=sandbox.base_url("resend"), clock=clock, **options
        )
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        await connector.aclose()


async def send(connector: ResendConnector, key: str = "order/1", **overrides: Any) -> SentEmail:
    fields: dict[str, Any] = {
        "sender": "Shop <shop@example.com>",
        "to": "owner@example.com",
        "subject": "New order",
        "text": "Order 1 is in.",
        "idempotency_key": key,
    }
    fields.update(overrides)
    return await connector.send_email(**fields)


def sent_keys(sandbox: ProviderSandbox) -> list[str | None]:
    return [r.headers.get("idempotency-key") for r in sandbox.requests]


async def test_send_email_succeeds_with_key_auth_and_one_effect(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A send returns Resend's email id; the request carries the bearer key and an
    ``Idempotency-Key`` derived from the caller's key; the sandbox records one email."""
    sent = await send(connect(), tags={"kind": "order"}, cc=["a@example.com"])
    (effect,) = sandbox.effects("resend")
    assert sent == SentEmail(effect.id, "send-email/order/1")
    assert effect.data["to"] == ["owner@example.com"]
    assert effect.data["tags"] == [
        {"name": "kind", "value": "order"},
        {"name": "antifragile_ref", "value": correlation_for("send-email/order/1")},
    ]
    (request,) = sandbox.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["idempotency-key"] == "send-email/order/1"


async def test_missing_or_invalid_key_is_an_authentication_error_without_retry(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A key that is not a Resend key is 401, an unknown one 403: both are permanent
    AuthenticationErrors, tried once, and the key never shows in the error."""
    with pytest.raises(AuthenticationError) as caught:
        await send(connect("not-a-resend-key"))
    assert caught.value.status == 401
    assert "missing_api_key" in str(caught.value)
    assert "not-a-resend-key" not in str(caught.value)
    with pytest.raises(AuthenticationError) as forbidden:
        await send(connect("re_unknown"))
    assert forbidden.value.status == 403
    assert len(sandbox.requests) == 2
    assert sandbox.effects("resend") == []


async def test_validation_error_is_invalid_request_with_resends_name(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Resend's 422 becomes an InvalidRequestError naming Resend's error; not retried."""
    with pytest.raises(InvalidRequestError) as caught:
        await send(connect(), sender="not an address")
    assert caught.value.status == 422
    assert "invalid_from_address" in str(caught.value)
    with pytest.raises(InvalidRequestError):
        await send(connect(), to=[f"r{i}@example.com" for i in range(51)])
    assert len(sandbox.requests) == 2
    assert sandbox.effects("resend") == []


async def test_429_with_retry_after_is_honoured_then_succeeds(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock
) -> None:
    """A 429 with ``retry-after: 2`` is waited out (on the fake clock) and retried with the
    same key; the email is sent once."""
    sandbox.faults("resend", SEND, script=[ProviderFault.rate_limited(2)])
    sent = await send(connect())
    assert 2.0 in clock.sleeps
    assert [e.id for e in sandbox.effects("resend")] == [sent.id]
    assert sent_keys(sandbox) == ["send-email/order/1"] * 2


async def test_5xx_burst_is_retried_until_it_passes(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock
) -> None:
    """Three 5xx in a row are retried with back-off; the fourth attempt sends the email."""
    burst = [ProviderFault.error(500), ProviderFault.error(503), ProviderFault.error(502)]
    sandbox.faults("resend", SEND, script=burst)
    sent = await send(connect())
    assert len(sandbox.requests) == 4
    assert len([s for s in clock.sleeps if s > 0]) >= 1
    assert [e.id for e in sandbox.effects("resend")] == [sent.id]


async def test_5xx_beyond_the_attempts_is_an_upstream_error_without_effect(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """When every attempt gets a 5xx, the caller gets a retryable UpstreamUnavailableError
    with the attempt history, and nothing was sent."""
    sandbox.faults("resend", SEND, chaos=[(1.0, ProviderFault.error(503))])
    with pytest.raises(UpstreamUnavailableError) as caught:
        await send(connect())
    assert caught.value.retryable
    assert len(caught.value.attempts) == 5
    assert "service_unavailable" in str(caught.value)
    assert sandbox.effects("resend") == []


@pytest.mark.parametrize("lost", ["reset", "hang"])
async def test_ambiguous_failure_is_retried_with_the_same_key_exactly_one_effect(
    sandbox: ProviderSandbox, connect: Connect, lost: Any
) -> None:
    """The email is sent but the answer is lost (reset, or a hang past the attempt timeout):
    the connector retries with the same ``Idempotency-Key``, Resend answers with the first
    email's id, and exactly one email went out."""
    sandbox.faults("resend", SEND, script=[ProviderFault.ambiguous(lost=lost)])
    sent = await send(connect())
    (effect,) = sandbox.effects("resend")
    assert sent.id == effect.id
    assert sent_keys(sandbox) == ["send-email/order/1"] * 2


async def test_malformed_answer_is_transient_and_a_retry_sends_once(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A 200 whose body does not parse is a transient UpstreamUnavailableError (safe to
    replay); trying again with the same key sends the email once."""
    sandbox.faults("resend", SEND, script=[ProviderFault.malformed()])
    connector = connect()
    with pytest.raises(UpstreamUnavailableError) as caught:
        await send(connector)
    assert caught.value.retryable
    assert caught.value.replay_safe
    sent = await send(connector)
    assert [e.id for e in sandbox.effects("resend")] == [sent.id]


async def test_same_key_different_body_is_a_conflict(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Reusing a key for another email is 409 ``invalid_idempotent_request``: a permanent
    ConflictError, and the second email is never sent; the same email again is a replay."""
    connector = connect()
    first = await send(connector)
    with pytest.raises(ConflictError) as caught:
        await send(connector, subject="Another subject")
    assert "invalid_idempotent_request" in str(caught.value)
    assert not caught.value.retryable
    assert await send(connector) == first
    assert len(sandbox.effects("resend")) == 1


async def test_concurrent_idempotent_request_is_transient(clock: FakeClock) -> None:
    """Resend's 409 ``concurrent_idempotent_requests`` (the first request with the key is
    still in flight) is raised as a retryable TransientError, not a permanent conflict."""
    body = {
        "statusCode": 409,
        "name": "concurrent_idempotent_requests",
        "message": "Same idempotency key used while original request is still in progress.",
    }
    with FlakyServer(default=Fault.status(409, json=body)) as server:
        async with ResendConnector(KEY, base_url=server.url, clock=clock) as connector:
            with pytest.raises(TransientError) as caught:
                await send(connector)
    assert not isinstance(caught.value, ConflictError)
    assert caught.value.retryable
    assert caught.value.status == 409
    assert "concurrent_idempotent_requests" in str(caught.value)


async def test_rate_limit_headers_feed_the_limiter(
    clock: FakeClock, connect: Connect, tmp_path: Path
) -> None:
    """``ratelimit-remaining`` from Resend clamps the local token bucket, so the client slows
    down before Resend refuses it."""
    with ProviderSandbox([ResendSimulator(rate_limit=3, per=60)]) as small:
        bucket = TokenBucket(100, burst=100)
        policy = Policy("resend", rate=bucket, clock=clock, retry=Retry(attempts=1))
        async with ResendConnector(
            KEY, base_url=small.base_url("resend"), policy=policy, timeout=1.0
        ) as connector:
            await send(connector)
            assert bucket.available <= 2


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ANTIFRAGILE_RESEND_API_KEY`` and ``ANTIFRAGILE_RESEND_BASE_URL`` configure the
    connector; without a key it refuses to start."""
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/resend/")
    monkeypatch.setenv(API_KEY_ENV, "re_from_env")
    connector = ResendConnector()
    assert connector.base_url == "http://127.0.0.1:9/resend"
    monkeypatch.delenv(API_KEY_ENV)
    monkeypatch.delenv(BASE_URL_ENV)
    with pytest.raises(ConfigurationError):
        ResendConnector()
    assert ResendConnector("re_x").base_url == "https://api.resend.com"


def test_idempotency_key_derivation_is_stable_and_bounded() -> None:
    """The header is ``send-email/<key>``; a key too long or not ASCII is hashed to a stable,
    valid header of at most 256 characters."""
    assert idempotency_key_for("send-email", "order/1") == "send-email/order/1"
    long_key = "x" * 300
    derived = idempotency_key_for("send-email", long_key)
    assert derived == idempotency_key_for("send-email", long_key)
    assert len(derived) <= 256
    assert derived.startswith("send-email/sha256:")
    assert idempotency_key_for("send-email", "café").isascii()
    with pytest.raises(ConfigurationError):
        idempotency_key_for("send-email", "")


@pytest.mark.parametrize("kind", list(FAULT_KINDS))
async def test_every_fault_kind_ends_with_exactly_one_email(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """Each fault the sandbox plays on the first request -- latency, a 5xx, a 429 with Retry-After,
    a reset, a hang, an ambiguous failure (acted, answer lost by reset or hang) -- ends with the
    call succeeding and exactly one email (Resend replays safely under its Idempotency-Key). A
    malformed 200 is a retryable UpstreamUnavailableError (a durable job tries again); the next
    call makes the one email."""
    sandbox.faults("resend", SEND, script=[FAULT_KINDS[kind]])
    if kind == "malformed":
        with pytest.raises(UpstreamUnavailableError) as caught:
            await send(connect())
        assert caught.value.retryable
    await send(connect())
    assert len(sandbox.effects("resend")) == 1
