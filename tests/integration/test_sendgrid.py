"""SendGridConnector against the sandbox's SendGrid simulator, over real HTTP.

Policies run on a FakeClock (back-offs and rate-limit waits land in ``clock.sleeps``). SendGrid
has no idempotency key, so the behaviour under test is *never send again once SendGrid may have
received the request*, with reconciliation by the ``custom_args`` key; the sandbox's effect
record is the ground truth for how many emails went out, and the duplicate rates are measured.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from antifragile import (
    AuthenticationError,
    ConfigurationError,
    FakeClock,
    IntegrationError,
    InvalidRequestError,
    Policy,
    RateLimitedError,
    Retry,
)
from antifragile.connectors import (
    OutcomeUnknownError,
    SendGridConnector,
    SendGridSent,
    correlation_for,
)
from antifragile.connectors._sendgrid import API_KEY_ENV, BASE_URL_ENV
from antifragile.sandbox import FlakyServer, ProviderFault, ProviderSandbox, SendGridSimulator
from tests.integration._faults import (
    FAULT_KINDS,
    GATEWAY_FAULTS,
    attempt_timeout,
    sent_once_or_flagged,
)

KEY = "SG.test-key"
SEND = "POST /v3/mail/send"


Connect = Callable[..., SendGridConnector]


@pytest.fixture
def sandbox(clock: FakeClock) -> Iterator[ProviderSandbox]:
    """SendGrid on the policies' clock: its epoch ``X-RateLimit-Reset`` is read on that clock."""
    simulator = SendGridSimulator(api_keys=[KEY], rate_limit=100_000, clock=clock.time)
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    made: list[SendGridConnector] = []

    def factory(api_key: str = KEY, **options: Any) -> SendGridConnector:
        options.setdefault("timeout", attempt_timeout(sandbox))
        options.setdefault("base_url", sandbox.base_url("sendgrid"))
        connector = SendGridConnector(api_key, clock=clock, **options)
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        await connector.aclose()


async def send(
    connector: SendGridConnector, key: str = "order/1", **overrides: Any
) -> SendGridSent:
    fields: dict[str, Any] = {
        "sender": {"email": "shop@example.com", "name": "Shop"},
        "to": "owner@example.com",
        "subject": "New order",
        "text": "Order 1 is in.",
        "idempotency_key": key,
    }
    fields.update(overrides)
    return await connector.send_email(**fields)


async def test_send_email_is_202_with_message_id_and_reconciliation_key(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A send returns SendGrid's ``X-Message-Id``; the request carries the bearer key, no
    ``Idempotency-Key`` (SendGrid has none) and the caller's key in ``custom_args``."""
    sent = await send(connect(), html="<p>Order 1</p>", cc=["a@example.com"])
    (effect,) = sandbox.effects("sendgrid")
    assert sent == SendGridSent(effect.id, "send-email/order/1")
    assert effect.idempotency_key == "send-email/order/1"
    assert effect.data["custom_args"] == {
        "antifragile_key": "send-email/order/1",
        "antifragile_ref": correlation_for("send-email/order/1"),
    }
    assert [c["type"] for c in effect.data["content"]] == ["text/plain", "text/html"]
    (request,) = sandbox.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert "idempotency-key" not in request.headers


async def test_bad_or_unknown_key_is_an_authentication_error_without_retry(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A key that is not a SendGrid key, or an unknown one, is 401: a permanent
    AuthenticationError, tried once, and the key never shows in the error."""
    for bad in ("not-a-key", "SG.unknown"):
        with pytest.raises(AuthenticationError) as caught:
            await send(connect(bad))
        assert caught.value.status == 401
        assert bad not in str(caught.value)
    assert len(sandbox.requests) == 2
    assert sandbox.effects("sendgrid") == []


async def test_validation_error_names_sendgrids_field(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """SendGrid's 400 ``errors[]`` become an InvalidRequestError naming the message and field;
    not retried, nothing sent."""
    with pytest.raises(InvalidRequestError) as caught:
        await send(connect(), to="not an address")
    assert caught.value.status == 400
    assert "personalizations.0.to.0.email" in str(caught.value)
    with pytest.raises(InvalidRequestError):
        await send(connect(), to=["a@example.com", "a@example.com"])
    assert len(sandbox.requests) == 2
    assert sandbox.effects("sendgrid") == []


def test_simulator_requires_plain_text_before_html() -> None:
    """The simulator refuses ``text/html`` content placed before ``text/plain``."""
    simulator = SendGridSimulator()
    body = {
        "personalizations": [{"to": [{"email": "a@example.com"}]}],
        "from": {"email": "b@example.com"},
        "subject": "s",
        "content": [{"type": "text/html", "value": "<p/>"}, {"type": "text/plain", "value": "x"}],
    }
    (problem,) = simulator._validate(body)
    assert problem["field"] == "content"


async def test_429_is_waited_out_until_reset_then_sent_once(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock
) -> None:
    """A 429 (SendGrid refused the request, so resending is safe) is retried after a wait taken
    from ``X-RateLimit-Reset`` (epoch); the email is sent once."""
    sandbox.faults("sendgrid", SEND, script=[ProviderFault.rate_limited(2)])
    sent = await send(connect())
    assert any(s > 0 for s in clock.sleeps)
    assert [e.id for e in sandbox.effects("sendgrid")] == [sent.message_id]
    assert len(sandbox.requests) == 2


async def test_quota_exhaustion_is_rate_limited_with_epoch_reset_headers(clock: FakeClock) -> None:
    """Past the simulator's quota the answer is 429 ``too many requests`` with
    ``X-RateLimit-Remaining: 0`` and an epoch ``X-RateLimit-Reset``: a RateLimitedError."""
    with ProviderSandbox([SendGridSimulator(rate_limit=2, per=60)]) as small:
        policy = Policy("sendgrid", clock=clock, retry=Retry(attempts=1))
        async with SendGridConnector(
            KEY, base_url=small.base_url("sendgrid"), policy=policy, timeout=1.0
        ) as connector:
            await send(connector, key="a")
            await send(connector, key="b")
            with pytest.raises(RateLimitedError) as caught:
                await send(connector, key="c")
        assert caught.value.status == 429
        assert "too many requests" in str(caught.value)
        last = small.requests[-1]
        assert last.status == 429
        assert len(small.effects("sendgrid")) == 2


@pytest.mark.parametrize(
    "fault",
    [
        ProviderFault.ambiguous("reset"),
        ProviderFault.ambiguous("hang"),
        ProviderFault.malformed(),
    ],
    ids=["reset", "hang", "malformed"],
)
async def test_ambiguous_failure_is_outcome_unknown_and_never_resent(
    sandbox: ProviderSandbox, connect: Connect, fault: ProviderFault
) -> None:
    """After a failure SendGrid may have acted on (answer lost, timeout, an answer without
    ``X-Message-Id``), the connector does not send again: one request, and an
    OutcomeUnknownError carrying the key to reconcile with, not retryable."""
    sandbox.faults("sendgrid", SEND, script=[fault])
    with pytest.raises(OutcomeUnknownError) as caught:
        await send(connect())
    assert caught.value.reconcile_key == "send-email/order/1"
    assert not caught.value.retryable
    assert len(sandbox.requests) == 1
    assert len(sandbox.effects("sendgrid")) <= 1


async def test_5xx_in_sendgrid_error_format_is_retried_and_sent_once(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A 500 carrying SendGrid's ``{"errors": [{"message"}]}`` body says the mail was not
    accepted: it is sent again after a back-off and exactly one email exists."""
    sandbox.faults("sendgrid", SEND, script=[ProviderFault.error(500)])
    await send(connect())
    assert [r.status for r in sandbox.requests] == [500, 202]
    assert len(sandbox.effects("sendgrid")) == 1


@pytest.mark.parametrize("gateway", list(GATEWAY_FAULTS))
async def test_gateway_5xx_is_outcome_unknown(clock: FakeClock, gateway: str) -> None:
    """A bodiless 502 or an HTML 504 is a gateway that may have lost SendGrid's answer: an
    OutcomeUnknownError with the key to reconcile with, after one request."""
    with FlakyServer(default=GATEWAY_FAULTS[gateway]) as server:
        async with SendGridConnector(KEY, base_url=server.url, clock=clock) as connector:
            with pytest.raises(OutcomeUnknownError) as caught:
                await send(connector)
        assert caught.value.reconcile_key == "send-email/order/1"
        assert len(server.requests) == 1


async def test_duplicate_rate_with_reconciliation_vs_blind_resend(
    sandbox: ProviderSandbox,
    connect: Connect,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Measured duplicate rate under 30% ambiguous failures and 10% 5xx over 200 emails: the
    connector plus reconciliation by the ``custom_args`` key sends each email exactly once
    (0 duplicates), while blindly resending after any failure duplicates about a third."""
    emails = 200
    chaos = [(0.3, ProviderFault.ambiguous()), (0.1, ProviderFault.error(503))]
    # no circuit breaker: 40% failures would open it and hide the behaviour measured here
    connector = connect(
        policy=Policy("sendgrid", clock=clock, retry=Retry(attempts=5), breaker=None, budget=None)
    )

    async def reconciled(key: str) -> None:
        for _ in range(20):
            try:
                await send(connector, key=key)
                return
            except OutcomeUnknownError as unknown:
                delivered = {e.idempotency_key for e in sandbox.effects("sendgrid")}
                if unknown.reconcile_key in delivered:  # the Event Webhook saw it: sent
                    return

    sandbox.faults("sendgrid", SEND, chaos=chaos, seed=5)
    for i in range(emails):
        await reconciled(f"ours/{i}")
    ours = Counter(e.idempotency_key for e in sandbox.effects("sendgrid"))
    assert len(ours) == emails
    our_duplicates = sum(n - 1 for n in ours.values())

    sandbox.reset()
    sandbox.faults("sendgrid", SEND, chaos=chaos, seed=5)
    for i in range(emails):
        for _ in range(20):  # the naive way: any failure, send again
            try:
                await send(connector, key=f"blind/{i}")
                break
            except IntegrationError:
                continue
    blind = Counter(e.idempotency_key for e in sandbox.effects("sendgrid"))
    assert len(blind) == emails
    blind_duplicates = sum(n - 1 for n in blind.values())
    with capsys.disabled():
        print(
            f"\nsendgrid duplicate rate over {emails} emails: reconciled "
            f"{our_duplicates / emails:.1%}, blind resend {blind_duplicates / emails:.1%}"
        )
    assert our_duplicates == 0
    assert blind_duplicates > emails // 10


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ANTIFRAGILE_SENDGRID_API_KEY`` and ``ANTIFRAGILE_SENDGRID_BASE_URL`` configure the
    connector; without a key it refuses to start."""
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/sendgrid/")
    monkeypatch.setenv(API_KEY_ENV, "SG.from-env")
    assert SendGridConnector().base_url == "http://127.0.0.1:9/sendgrid"
    monkeypatch.delenv(API_KEY_ENV)
    monkeypatch.delenv(BASE_URL_ENV)
    with pytest.raises(ConfigurationError):
        SendGridConnector()
    assert SendGridConnector("SG.x").base_url == "https://api.sendgrid.com"


@pytest.mark.parametrize("kind", list(FAULT_KINDS))
async def test_every_fault_kind_is_sent_once_or_flagged(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """Each fault the sandbox plays on the first request: latency and a 429 (a refusal, safe
    to resend) end with the email made once; after a 5xx, a reset, a hang, a malformed
    answer or an ambiguous failure the email may exist, so it is not sent again -- a
    non-retryable OutcomeUnknownError -- and at most one exists."""
    await sent_once_or_flagged(sandbox, "sendgrid", SEND, kind, lambda: send(connect()))


async def test_rate_limit_headers_slow_the_client_before_a_429() -> None:
    """Every answer carries ``X-RateLimit-Remaining`` and an epoch ``X-RateLimit-Reset``: once
    the remaining count reaches 0 the default policy holds the next send until the reset --
    locally, a RateLimitedError with ``retry_after`` and no request (a durable job runs it
    again then) -- so SendGrid never has to refuse one: 8 emails against a quota of 5 per
    minute, no 429, each sent once. (The client reads epoch resets against the wall clock:
    the fake clock starts at the real time, so both agree.)"""
    clock = FakeClock(wall_offset=time.time() - 1_000.0)
    simulator = SendGridSimulator(api_keys=[KEY], rate_limit=5, per=60.0, clock=clock.time)
    with ProviderSandbox([simulator]) as small:
        async with SendGridConnector(
            KEY, base_url=small.base_url("sendgrid"), clock=clock, timeout=1.0
        ) as connector:
            for i in range(5):
                await send(connector, key=f"paced/{i}")
            with pytest.raises(RateLimitedError) as refused:
                await send(connector, key="paced/5")
            assert len(small.requests) == 5  # not sent: held back by the client
            wait = refused.value.retry_after
            assert wait is not None
            assert 55.0 <= wait <= 61.0
            clock.advance(wait)  # the job's retry, a minute later
            for i in range(5, 8):
                await send(connector, key=f"paced/{i}")
        assert [r.status for r in small.requests] == [202] * 8
        assert len(small.effects("sendgrid")) == 8
