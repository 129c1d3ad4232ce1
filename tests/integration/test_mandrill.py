"""MandrillConnector against the sandbox's Mailchimp Transactional simulator, over real HTTP.

Policies run on a FakeClock. Mandrill has no idempotency key, so the behaviour under test is
*never send again once Mandrill may have received the request*, with reconciliation by the
``antifragile_ref`` metadata; the sandbox's effect record is the ground truth for how many
emails went out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from antifragile import (
    AuthenticationError,
    ConfigurationError,
    FakeClock,
    InvalidRequestError,
    RateLimitedError,
)
from antifragile.connectors import (
    EmailChain,
    EmailUnsettledError,
    MandrillConnector,
    MandrillSent,
    OutcomeUnknownError,
    ProviderRefusedError,
    ResendConnector,
    correlation_for,
)
from antifragile.connectors._mandrill import API_KEY_ENV, BASE_URL_ENV
from antifragile.sandbox import (
    FlakyServer,
    MandrillSimulator,
    ProviderFault,
    ProviderSandbox,
    ResendSimulator,
)
from tests.integration._faults import FAULT_KINDS, GATEWAY_FAULTS, sent_once_or_flagged

KEY = "md-test-key"
SEND = "POST /messages/send"

Connect = Callable[..., MandrillConnector]


@pytest.fixture
def simulator() -> MandrillSimulator:
    return MandrillSimulator(api_keys=[KEY])


@pytest.fixture
def sandbox(simulator: MandrillSimulator) -> Iterator[ProviderSandbox]:
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    made: list[MandrillConnector] = []

    def factory(api_key: str = KEY, **options: Any) -> MandrillConnector:
        options.setdefault("timeout", 0.3)
        options.setdefault("base_url", sandbox.base_url("mandrill"))
        connector = MandrillConnector(api_key, clock=clock, **options)
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        await connector.aclose()


async def send(connector: Any, key: str = "order/1", **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "sender": "Shop <shop@example.com>",
        "to": "owner@example.com",
        "subject": "New order",
        "text": "Order 1 is in.",
        "idempotency_key": key,
    }
    fields.update(overrides)
    return await connector.send_email(**fields)


async def test_send_is_200_per_recipient_with_key_in_body_and_metadata(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A send returns Mandrill's ``_id`` and ``sent``; the key travels in the body (no
    authorization header), the correlation in ``metadata`` and the sender's name apart."""
    sent = await send(connect(), html="<p>Order 1</p>")
    (effect,) = sandbox.effects("mandrill")
    assert sent == MandrillSent(effect.id, "send-email/order/1", "sent")
    assert effect.idempotency_key == correlation_for("send-email/order/1")
    assert effect.data["from_email"] == "shop@example.com"
    assert effect.data["from_name"] == "Shop"
    assert effect.data["to"] == [{"email": "owner@example.com", "type": "to"}]
    (request,) = sandbox.requests
    assert "authorization" not in request.headers
    assert b'"key":"md-test-key"' in request.body


async def test_bad_key_is_an_authentication_error_without_retry(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """An unknown key is Mandrill's 401 ``Invalid_Key``: a permanent AuthenticationError,
    tried once, and the key never shows in the error."""
    with pytest.raises(AuthenticationError) as caught:
        await send(connect("md-unknown"))
    assert "Invalid_Key" in str(caught.value)
    assert "md-unknown" not in str(caught.value)
    assert len(sandbox.requests) == 1
    assert sandbox.effects("mandrill") == []


async def test_a_rejected_recipient_is_refused_not_failed_over(
    sandbox: ProviderSandbox, simulator: MandrillSimulator, connect: Connect
) -> None:
    """A 200 whose only recipient is ``rejected`` for ``unsub`` is no success: an
    InvalidRequestError naming the reason, never the address, and nothing recorded."""
    simulator.reject("owner@example.com", "unsub")
    with pytest.raises(InvalidRequestError) as caught:
        await send(connect())
    assert "unsub" in str(caught.value)
    assert "owner@example.com" not in str(caught.value)
    assert sandbox.effects("mandrill") == []


async def test_an_account_reject_is_a_provider_refusal(
    simulator: MandrillSimulator, connect: Connect
) -> None:
    """A reject for the account (``unsigned``: the sending domain is not set up) is a
    ProviderRefusedError: another provider may send it."""
    simulator.reject("owner@example.com", "unsigned")
    with pytest.raises(ProviderRefusedError):
        await send(connect())


async def test_one_rejected_recipient_among_two_is_counted_not_raised(
    sandbox: ProviderSandbox, simulator: MandrillSimulator, connect: Connect
) -> None:
    """With two recipients, one rejected, the send succeeds and says one was rejected."""
    simulator.reject("b@example.com", "hard-bounce")
    sent = await send(connect(), to=["a@example.com", "b@example.com"])
    assert (sent.status, sent.rejected) == ("sent", 1)
    assert len(sandbox.effects("mandrill")) == 1


async def test_hourly_quota_queues_the_send_and_pauses_the_connector(
    sandbox: ProviderSandbox, simulator: MandrillSimulator, connect: Connect, clock: FakeClock
) -> None:
    """``queued`` with ``hourly-quota-exhausted`` is accepted (Mandrill sends it later) and
    pauses the connector until the next hour: the next send is refused locally."""
    simulator.queued_reason = "hourly-quota-exhausted"
    connector = connect()
    sent = await send(connector)
    assert (sent.status, sent.queued_reason) == ("queued", "hourly-quota-exhausted")
    with pytest.raises(RateLimitedError) as paused:
        await send(connector, key="order/2")
    assert paused.value.retry_after is not None
    assert 0 < paused.value.retry_after <= 3600
    assert len(sandbox.requests) == 1
    clock.advance(3600)
    simulator.queued_reason = None
    assert (await send(connector, key="order/2")).status == "sent"


async def test_validation_error_is_not_retried(sandbox: ProviderSandbox, connect: Connect) -> None:
    """A sender that is not an address is Mandrill's 400 ``ValidationError``: not retried."""
    with pytest.raises(InvalidRequestError) as caught:
        await send(connect(), sender="nobody")
    assert "ValidationError" in str(caught.value)
    assert len(sandbox.requests) == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_in_mandrill_error_format_is_retried_and_sent_once(
    sandbox: ProviderSandbox, connect: Connect, status: int
) -> None:
    """``GeneralError`` / ``ServiceUnavailable`` in Mandrill's body: nothing was sent, so it is
    sent again and exactly one email exists."""
    sandbox.faults("mandrill", SEND, script=[ProviderFault.error(status)])
    await send(connect())
    assert [r.status for r in sandbox.requests] == [status, 200]
    assert len(sandbox.effects("mandrill")) == 1


@pytest.mark.parametrize("gateway", list(GATEWAY_FAULTS))
async def test_gateway_5xx_is_outcome_unknown(clock: FakeClock, gateway: str) -> None:
    """A bodiless 502 or an HTML 504 may hide Mandrill's answer: OutcomeUnknownError after
    one request, with the key to reconcile with."""
    with FlakyServer(default=GATEWAY_FAULTS[gateway]) as server:
        async with MandrillConnector(KEY, base_url=server.url, clock=clock) as connector:
            with pytest.raises(OutcomeUnknownError) as caught:
                await send(connector)
        assert caught.value.reconcile_key == "send-email/order/1"
        assert len(server.requests) == 1


@pytest.mark.parametrize("kind", list(FAULT_KINDS))
async def test_every_fault_kind_is_sent_once_or_flagged(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """Each fault on the first request: latency, a 429 and a 5xx in Mandrill's format end
    with the email sent once; after a reset, a hang, a malformed answer or an ambiguous
    failure it may exist, so it is not sent again (OutcomeUnknownError) and at most one does."""
    await sent_once_or_flagged(sandbox, "mandrill", SEND, kind, lambda: send(connect()))


async def test_lookup_finds_a_send_whose_answer_was_lost(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """After an ambiguous failure, ``lookup_sent`` finds the message by its metadata
    (``messages/search``); a key never sent is not found."""
    connector = connect()
    sandbox.faults("mandrill", SEND, script=[ProviderFault.ambiguous()])
    with pytest.raises(OutcomeUnknownError):
        await send(connector)
    assert await connector.lookup_sent("order/1") is True
    assert await connector.lookup_sent("order/never") is None
    searches = [r for r in sandbox.requests if r.path.endswith("/messages/search")]
    assert len(searches) == 2


async def test_search_limit_answers_429(connect: Connect, simulator: MandrillSimulator) -> None:
    """``messages/search`` allows ``search_limit`` calls a minute; past it the lookup says
    "unknown" (``None``) rather than failing."""
    simulator.configure({"search_limit": 1})
    connector = connect()
    assert await connector.lookup_sent("order/x") is None
    assert await connector.lookup_sent("order/y") is None


async def test_chain_settles_an_unknown_mandrill_send_by_lookup(
    sandbox: ProviderSandbox, clock: FakeClock, connect: Connect
) -> None:
    """In a chain Mandrill -> Resend: a lost answer at Mandrill blocks Resend (unsettled); the
    next attempt looks the message up at Mandrill, finds it and counts it sent -- one email
    overall, Resend never asked."""
    with ProviderSandbox([ResendSimulator(rate_limit=1000)]) as other:
        async with ResendConnector(
            "re_test", base_url=other.base_url("resend"), clock=clock
        ) as resend:
            chain = EmailChain({"mandrill": connect(), "resend": resend}, clock=clock)
            sandbox.faults("mandrill", SEND, script=[ProviderFault.ambiguous()])
            with pytest.raises(EmailUnsettledError):
                await send(chain)
            sent = await send(chain)
        assert sent.provider == "mandrill"
        assert other.effects("resend") == []
    assert len(sandbox.effects("mandrill")) == 1


async def test_chain_moves_on_from_an_account_refusal(
    sandbox: ProviderSandbox, simulator: MandrillSimulator, clock: FakeClock, connect: Connect
) -> None:
    """Mandrill rejecting for the account (``invalid-sender``) passes the email to the next
    provider, which sends it."""
    simulator.reject("owner@example.com", "invalid-sender")
    with ProviderSandbox([ResendSimulator(rate_limit=1000)]) as other:
        async with ResendConnector(
            "re_test", base_url=other.base_url("resend"), clock=clock
        ) as resend:
            chain = EmailChain({"mandrill": connect(), "resend": resend}, clock=clock)
            sent = await send(chain)
        assert (sent.provider, sent.passed_over) == ("resend", ("mandrill",))
        assert len(other.effects("resend")) == 1
    assert sandbox.effects("mandrill") == []


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ANTIFRAGILE_MANDRILL_API_KEY`` and ``ANTIFRAGILE_MANDRILL_BASE_URL`` configure the
    connector; without a key it refuses to start."""
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/mandrill/")
    monkeypatch.setenv(API_KEY_ENV, "md-from-env")
    assert MandrillConnector().base_url == "http://127.0.0.1:9/mandrill"
    monkeypatch.delenv(API_KEY_ENV)
    monkeypatch.delenv(BASE_URL_ENV)
    with pytest.raises(ConfigurationError):
        MandrillConnector()
    assert MandrillConnector("md-x").base_url == "https://mandrillapp.com/api/1.0"
