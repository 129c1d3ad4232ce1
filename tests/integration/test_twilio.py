"""TwilioConnector against the sandbox's Twilio Messaging simulator, over real HTTP.

Policies run on a FakeClock: back-offs are recorded in ``clock.sleeps`` instead of being
waited out. The sandbox's effect record is the ground truth for "how many messages exist".
"""

from __future__ import annotations

import base64
import collections
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from antifragile import (
    AuthenticationError,
    CircuitOpenError,
    ConfigurationError,
    FakeClock,
    InvalidRequestError,
    Policy,
    RateLimitedError,
    Retry,
)
from antifragile.connectors import DeliveryUnknownError, OutcomeUnknownError, TwilioConnector
from antifragile.connectors._twilio import ACCOUNT_SID_ENV, AUTH_TOKEN_ENV, BASE_URL_ENV
from antifragile.sandbox import ProviderFault, ProviderSandbox, TwilioSimulator

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "test-auth-token"
SEND = "POST /2010-04-01/Accounts/{AccountSid}/Messages.json"
FROM = "+15551234567"
TO = "+15557654321"

Connect = Callable[..., TwilioConnector]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    simulator = TwilioSimulator(credentials={SID: TOKEN}, concurrency=10_000)
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    made: list[TwilioConnector] = []

    def factory(account_sid: str = SID, auth_token: str = TOKEN, **options: Any) -> TwilioConnector:
        options.setdefault("timeout", 0.3)
        options.setdefault("base_url", sandbox.base_url("twilio"))
        connector = TwilioConnector(account_sid, auth_token, clock=clock, **options)
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        await connector.aclose()


async def test_sms_send_is_201_queued_with_basic_auth_and_form_body(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """An SMS is created: 201 with an ``SM`` sid and status ``queued``; the request is
    form-encoded with HTTP Basic AccountSid:AuthToken; one message is recorded."""
    sent = await connect().send_message(TO, "Your code is 1234", FROM)
    (effect,) = sandbox.effects("twilio")
    assert sent.sid == effect.id
    assert sent.sid.startswith("SM")
    assert len(sent.sid) == 34
    assert sent.status == "queued"
    assert effect.data == {"To": TO, "Body": "Your code is 1234", "From": FROM}
    (request,) = sandbox.requests
    assert request.status == 201
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    expected = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.path == f"/twilio/2010-04-01/Accounts/{SID}/Messages.json"


async def test_whatsapp_numbers_go_through_the_same_endpoint(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """``whatsapp:+E164`` To/From are accepted; mixing a WhatsApp From with an SMS To is a 400
    InvalidRequestError with Twilio code 21910."""
    connector = connect()
    sent = await connector.send_message(f"whatsapp:{TO}", "Hi", f"whatsapp:{FROM}")
    assert sent.status == "queued"
    with pytest.raises(InvalidRequestError) as caught:
        await connector.send_message(TO, "Hi", f"whatsapp:{FROM}")
    assert "code 21910" in str(caught.value)
    assert [e.id for e in sandbox.effects("twilio")] == [sent.sid]


async def test_wrong_auth_token_is_an_authentication_error_without_retry(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A wrong auth token is 401 Twilio code 20003: AuthenticationError after one request."""
    with pytest.raises(AuthenticationError) as caught:
        await connect(auth_token="wrong").send_message(TO, "hi", FROM)
    assert "code 20003" in str(caught.value)
    assert len(sandbox.requests) == 1
    assert sandbox.effects("twilio") == []


async def test_invalid_to_number_is_an_invalid_request_with_code_21211(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A ``To`` that is not E.164 is 400 with the legacy body {code, message, more_info,
    status}: InvalidRequestError naming code 21211, not retried, nothing created."""
    with pytest.raises(InvalidRequestError) as caught:
        await connect().send_message("12345", "hi", FROM)
    assert "code 21211" in str(caught.value)
    body = json.loads(caught.value.detail or "{}")
    assert body["more_info"] == "https://www.twilio.com/docs/errors/21211"
    assert body["status"] == 400
    assert len(sandbox.requests) == 1
    assert sandbox.effects("twilio") == []


async def test_body_limit_is_checked_before_sending(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A body over 1600 characters, or no From/MessagingServiceSid, is a ConfigurationError
    raised before any request."""
    connector = connect()
    with pytest.raises(ConfigurationError):
        await connector.send_message(TO, "x" * 1601, FROM)
    with pytest.raises(ConfigurationError):
        await connector.send_message(TO, "hi")
    assert sandbox.requests == []


async def test_429_with_code_20429_is_rate_limited_and_retried(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock
) -> None:
    """429 with Twilio code 20429 (not processed) is a RateLimitedError, safe to resend: the
    connector backs off and creates the message once."""
    sandbox.faults("twilio", SEND, script=[ProviderFault.rate_limited()] * 2)
    sent = await connect().send_message(TO, "hi", FROM)
    assert [r.status for r in sandbox.requests] == [429, 429, 201]
    assert [e.id for e in sandbox.effects("twilio")] == [sent.sid]
    assert len(clock.sleeps) == 2


async def test_429_past_the_attempts_is_a_rate_limited_error(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Five 429s in a row: RateLimitedError (replay-safe), nothing created."""
    sandbox.faults("twilio", SEND, script=[ProviderFault.rate_limited()] * 5)
    with pytest.raises(RateLimitedError) as caught:
        await connect().send_message(TO, "hi", FROM)
    assert caught.value.replay_safe
    assert "code 20429" in str(caught.value)
    assert sandbox.effects("twilio") == []


@pytest.mark.parametrize("lost", ["reset", "hang"])
async def test_ambiguous_failure_is_not_resent_and_raises_delivery_unknown(
    sandbox: ProviderSandbox, connect: Connect, lost: Any
) -> None:
    """The message is created but the answer is lost: no second request, one message, and a
    DeliveryUnknownError (OutcomeUnknownError, not retryable) carrying the form fields."""
    sandbox.faults("twilio", SEND, script=[ProviderFault.ambiguous(lost=lost)])
    with pytest.raises(DeliveryUnknownError) as caught:
        await connect().send_message(TO, "hi", FROM)
    assert isinstance(caught.value, OutcomeUnknownError)
    assert not caught.value.retryable
    assert caught.value.fields == {"To": TO, "Body": "hi", "From": FROM}
    assert len(sandbox.requests) == 1
    assert len(sandbox.effects("twilio")) == 1


async def test_5xx_is_delivery_unknown_without_resend(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A 500 may follow the message's creation: DeliveryUnknownError after one request."""
    sandbox.faults("twilio", SEND, script=[ProviderFault.error(500)])
    with pytest.raises(DeliveryUnknownError):
        await connect().send_message(TO, "hi", FROM)
    assert len(sandbox.requests) == 1


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Account SID, auth token and base URL come from ANTIFRAGILE_TWILIO_*; missing
    credentials are a ConfigurationError."""
    monkeypatch.delenv(ACCOUNT_SID_ENV, raising=False)
    monkeypatch.delenv(AUTH_TOKEN_ENV, raising=False)
    with pytest.raises(ConfigurationError):
        TwilioConnector()
    monkeypatch.setenv(ACCOUNT_SID_ENV, SID)
    monkeypatch.setenv(AUTH_TOKEN_ENV, TOKEN)
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/twilio/")
    connector = TwilioConnector()
    assert connector.base_url == "http://127.0.0.1:9/twilio"
    assert connector.account_sid == SID
    assert TOKEN not in repr(connector)


async def test_duplicate_rate_over_200_sends_with_30_percent_ambiguous_failures(
    clock: FakeClock,
) -> None:
    """200 logical sends while 30% of requests fail ambiguously (created, answer lost): with
    the default policy no message is created twice (duplicate rate 0), every ambiguous send
    is a DeliveryUnknownError; a caller blindly resending on it duplicates them. (An open
    circuit breaker refuses locally, sending nothing: the loop waits.)"""
    results: dict[str, tuple[int, int, int]] = {}
    for strategy in ("default", "blind_resend"):
        simulator = TwilioSimulator(credentials={SID: TOKEN}, concurrency=10_000)
        with ProviderSandbox([simulator]) as sandbox:
            sandbox.faults("twilio", SEND, chaos=[(0.3, ProviderFault.ambiguous())], seed=7)
            unknown = 0
            async with TwilioConnector(
                SID, TOKEN, base_url=sandbox.base_url("twilio"), clock=clock, timeout=2.0
            ) as connector:
                for n in range(200):
                    for _ in range(20):
                        try:
                            await connector.send_message(TO, f"message {n}", FROM)
                            break
                        except CircuitOpenError:
                            clock.advance(60.0)
                        except DeliveryUnknownError:
                            unknown += 1
                            if strategy == "default":
                                break
            copies = collections.Counter(e.data["Body"] for e in sandbox.effects("twilio"))
        results[strategy] = (len(copies), sum(c - 1 for c in copies.values()), unknown)
    print(f"\ntwilio duplicate rates over 200 sends (30% ambiguous): {json.dumps(results)}")
    delivered, duplicates, unknown = results["default"]
    assert delivered == 200
    assert duplicates == 0
    assert 30 <= unknown <= 90
    assert results["blind_resend"][1] > 30


async def test_simulator_concurrency_limit_answers_429_code_20429(clock: FakeClock) -> None:
    """Beyond its per-second request limit the simulator itself refuses with 429 and the
    legacy body carrying code 20429 (no Retry-After by default): RateLimitedError, nothing
    created by the refused request."""
    simulator = TwilioSimulator(concurrency=1, clock=lambda: 0.0)  # one window, never reset
    with ProviderSandbox([simulator]) as sandbox:
        policy = Policy("twilio", retry=Retry(attempts=1), clock=clock)
        async with TwilioConnector(
            SID, TOKEN, base_url=sandbox.base_url("twilio"), policy=policy, clock=clock
        ) as connector:
            await connector.send_message(TO, "one", FROM)
            with pytest.raises(RateLimitedError) as caught:
                await connector.send_message(TO, "two", FROM)
        assert "code 20429" in str(caught.value)
        assert caught.value.retry_after is None
        assert len(sandbox.effects("twilio")) == 1
