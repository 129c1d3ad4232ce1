"""TwilioConnector against the sandbox's Twilio Messaging simulator, over real HTTP.

Policies run on a FakeClock: back-offs are recorded in ``clock.sleeps`` instead of being
waited out. The sandbox's effect record is the ground truth for "how many messages exist".
"""

from __future__ import annotations

import base64
import collections
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
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
    UpstreamUnavailableError,
)
from antifragile.connectors import (
    DeliveryUnknownError,
    OutcomeUnknownError,
    TwilioConnector,
    correlation_for,
)
from antifragile.connectors._twilio import ACCOUNT_SID_ENV, AUTH_TOKEN_ENV, BASE_URL_ENV
from antifragile.sandbox import FlakyServer, ProviderFault, ProviderSandbox, TwilioSimulator
from tests.integration._faults import FAULT_KINDS, GATEWAY_FAULTS, attempt_timeout

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "test-auth-token"
SEND = "POST /2010-04-01/Accounts/{AccountSid}/Messages.json"
LIST = "GET /2010-04-01/Accounts/{AccountSid}/Messages.json"
FROM = "+15551234567"
TO = "+15557654321"


Connect = Callable[..., TwilioConnector]


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    simulator = TwilioSimulator(credentials={SID: TOKEN}, concurrency=10_000)
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    made: list[TwilioConnector] = []

    def factory(account_sid: str = SID, auth_token: str = TOKEN, **options: Any) -> TwilioConnector:
        options.setdefault("timeout", attempt_timeout(sandbox))
        options.setdefault("base_url", sandbox.base_url("twilio"))
        options.setdefault("clock", clock)
        connector = TwilioConnector(account_sid, auth_token, **options)
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
async def test_ambiguous_send_is_reconciled_from_the_message_log(
    sandbox: ProviderSandbox, connect: Connect, lost: Any
) -> None:
    """The message is created but the answer is lost (reset, or a hang past the attempt
    timeout): the connector finds it in the account's message log (``GET Messages.json`` by
    To/From, matched on the body) instead of sending again -- one POST, one message, returned
    as ``reconciled``."""
    sandbox.faults("twilio", SEND, script=[ProviderFault.ambiguous(lost=lost)])
    sent = await connect().send_message(TO, "hi", FROM)
    (effect,) = sandbox.effects("twilio")
    assert sent.sid == effect.id
    assert sent.reconciled
    assert [r.method for r in sandbox.requests] == ["POST", "GET"]
    lookup = sandbox.requests[1]
    assert "To=%2B15557654321" in lookup.query
    assert "From=%2B15551234567" in lookup.query


async def test_failure_without_a_message_is_looked_up_then_sent_again(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock
) -> None:
    """An unparsable answer may follow a create, so the log is read -- twice, a grace period
    apart -- before sending again; as no message was created, the second send makes the one
    message."""
    sandbox.faults("twilio", SEND, script=[ProviderFault.malformed()])
    sent = await connect().send_message(TO, "hi", FROM)
    assert not sent.reconciled
    assert [e.id for e in sandbox.effects("twilio")] == [sent.sid]
    assert [r.method for r in sandbox.requests] == ["POST", "GET", "GET", "POST"]
    assert 2.0 in clock.sleeps


async def test_an_older_identical_message_is_not_taken_for_this_one(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """The log match only counts messages created since the call began (less the skew
    window): the same body sent to the same number an hour earlier does not hide a send that
    failed, which is sent again."""
    later = FakeClock(wall_offset=time.time() + 3600.0 - 1_000.0)  # an hour from now
    earlier = await connect().send_message(TO, "hi", FROM)
    sandbox.faults("twilio", SEND, script=[ProviderFault.error(503)])
    sent = await connect(clock=later).send_message(TO, "hi", FROM)
    assert not sent.reconciled
    assert sent.sid != earlier.sid
    assert len(sandbox.effects("twilio")) == 2


async def test_failed_lookup_leaves_the_outcome_unknown(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """When the message log cannot be read, the message may exist and is not sent again: a
    DeliveryUnknownError (OutcomeUnknownError, not retryable) with the form fields."""
    sandbox.faults("twilio", SEND, script=[ProviderFault.ambiguous()])
    sandbox.faults("twilio", LIST, chaos=[(1.0, ProviderFault.error(503))])
    with pytest.raises(DeliveryUnknownError) as caught:
        await connect().send_message(TO, "hi", FROM)
    assert isinstance(caught.value, OutcomeUnknownError)
    assert not caught.value.retryable
    assert caught.value.fields == {"To": TO, "Body": "hi", "From": FROM}
    assert [r.method for r in sandbox.requests].count("POST") == 1
    assert len(sandbox.effects("twilio")) == 1


@pytest.mark.parametrize("lost", ["reset", "hang"])
async def test_without_reconciliation_an_ambiguous_send_raises_delivery_unknown(
    sandbox: ProviderSandbox, connect: Connect, lost: Any
) -> None:
    """``reconcile=False``: the message is created but the answer is lost -- no second
    request, one message, and a DeliveryUnknownError (not retryable) carrying the fields."""
    sandbox.faults("twilio", SEND, script=[ProviderFault.ambiguous(lost=lost)])
    with pytest.raises(DeliveryUnknownError) as caught:
        await connect(reconcile=False).send_message(TO, "hi", FROM)
    assert not caught.value.retryable
    assert caught.value.fields == {"To": TO, "Body": "hi", "From": FROM}
    assert len(sandbox.requests) == 1
    assert len(sandbox.effects("twilio")) == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_in_twilio_error_format_is_sent_again_without_lookup(
    sandbox: ProviderSandbox, connect: Connect, status: int
) -> None:
    """A 5xx carrying Twilio's JSON error body (``code``, ``message``, ``more_info``) says the
    message was not created: it is sent again after a back-off, with no log lookup, and
    exactly one message exists."""
    sandbox.faults("twilio", SEND, script=[ProviderFault.error(status)])
    sent = await connect().send_message(TO, "hi", FROM)
    assert [e.id for e in sandbox.effects("twilio")] == [sent.sid]
    assert [(r.method, r.status) for r in sandbox.requests] == [("POST", status), ("POST", 201)]


@pytest.mark.parametrize("gateway", list(GATEWAY_FAULTS))
async def test_gateway_5xx_without_reconciliation_is_delivery_unknown(
    clock: FakeClock, gateway: str
) -> None:
    """A bodiless 502 or an HTML 504 from a gateway may follow the message's creation: with
    ``reconcile=False`` it is a DeliveryUnknownError after one request."""
    with FlakyServer(default=GATEWAY_FAULTS[gateway]) as server:
        async with TwilioConnector(
            SID, TOKEN, base_url=server.url, clock=clock, reconcile=False
        ) as twilio:
            with pytest.raises(DeliveryUnknownError):
                await twilio.send_message(TO, "hi", FROM)
        assert len(server.requests) == 1


async def test_list_messages_filters_by_number_and_day(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """``list_messages`` reads the log newest first, filtered by To and From (and DateSent>):
    the simulator logs a created message as sent."""
    connector = connect()
    first = await connector.send_message(TO, "one", FROM)
    second = await connector.send_message(TO, "two", FROM)
    await connector.send_message("+15550000000", "other", FROM)
    listed = await connector.list_messages(to=TO, from_=FROM)
    assert [m["sid"] for m in listed] == [second.sid, first.sid]
    assert {m["status"] for m in listed} == {"sent"}
    today = await connector.list_messages(
        to=TO, date_sent_after=datetime.now(UTC) - timedelta(days=1)
    )
    assert len(today) == 2
    assert (
        await connector.list_messages(to=TO, date_sent_after=datetime(2999, 1, 1, tzinfo=UTC)) == []
    )


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


async def test_a_rotating_token_list_calls_the_api_with_the_current_token(
    sandbox: ProviderSandbox, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the auth token is rotated ANTIFRAGILE_TWILIO_AUTH_TOKEN is ``"new,old"`` (the
    webhook secrets): the connector sends with the first token alone, and the simulator,
    which knows only the new one, accepts it; neither token shows in the connector's repr."""
    monkeypatch.setenv(ACCOUNT_SID_ENV, SID)
    monkeypatch.setenv(AUTH_TOKEN_ENV, f" {TOKEN} , old-auth-token")
    monkeypatch.setenv(BASE_URL_ENV, sandbox.base_url("twilio"))
    async with TwilioConnector(clock=clock, timeout=10.0) as connector:
        sent = await connector.send_message(TO, "hi", FROM)
        assert TOKEN not in repr(connector)
        assert "old-auth-token" not in repr(connector)
    assert [e.id for e in sandbox.effects("twilio")] == [sent.sid]
    (request,) = sandbox.requests
    expected = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    monkeypatch.setenv(AUTH_TOKEN_ENV, " , ")
    with pytest.raises(ConfigurationError):
        TwilioConnector()


async def test_duplicate_rate_over_200_sends_with_30_percent_ambiguous_failures(
    clock: FakeClock,
) -> None:
    """200 logical sends while 30% of requests fail ambiguously (created, answer lost): with
    the default policy every message is created exactly once (reconciled from the log, none
    flagged); without reconciliation the ambiguous sends are flagged DeliveryUnknownError, and
    a caller blindly resending on it duplicates them. (An open circuit breaker refuses
    locally, sending nothing: the loop waits.)"""
    results: dict[str, tuple[int, int, int]] = {}
    for strategy in ("default", "flag_only", "blind_resend"):
        simulator = TwilioSimulator(credentials={SID: TOKEN}, concurrency=10_000)
        with ProviderSandbox([simulator]) as sandbox:
            sandbox.faults("twilio", SEND, chaos=[(0.3, ProviderFault.ambiguous())], seed=7)
            unknown = 0
            async with TwilioConnector(
                SID,
                TOKEN,
                base_url=sandbox.base_url("twilio"),
                clock=clock,
                timeout=2.0,
                reconcile=strategy == "default",
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
                            if strategy != "blind_resend":
                                break
            copies = collections.Counter(e.data["Body"] for e in sandbox.effects("twilio"))
        results[strategy] = (len(copies), sum(c - 1 for c in copies.values()), unknown)
    print(f"\ntwilio duplicate rates over 200 sends (30% ambiguous): {json.dumps(results)}")
    assert results["default"] == (200, 0, 0)
    delivered, duplicates, unknown = results["flag_only"]
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


@pytest.mark.parametrize("kind", list(FAULT_KINDS))
async def test_every_fault_kind_ends_with_exactly_one_message(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """Each fault the sandbox plays on the first request -- latency, a 5xx, a 429 with Retry-After,
    a reset, a hang, a malformed answer, an ambiguous failure (acted, answer lost by reset or
    hang) -- ends with the call succeeding and exactly one message (an ambiguous send is
    reconciled from the message log)."""
    sandbox.faults("twilio", SEND, script=[FAULT_KINDS[kind]])
    await connect().send_message(TO, "hi", FROM)
    assert len(sandbox.effects("twilio", SEND)) == 1


async def test_failures_that_never_created_a_message_end_retryable(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Twilio answering 503 in its error format on every attempt: no message exists, so the
    caller gets the retryable 5xx after the policy's 5 attempts (a durable job tries again
    later), never a lookup nor a DeliveryUnknownError for review."""
    sandbox.faults("twilio", SEND, script=[ProviderFault.error(503)] * 5)
    with pytest.raises(UpstreamUnavailableError) as caught:
        await connect().send_message(TO, "hi", FROM)
    assert caught.value.retryable
    assert not isinstance(caught.value, DeliveryUnknownError)
    assert [r.method for r in sandbox.requests] == ["POST"] * 5
    assert sandbox.effects("twilio") == []


async def test_status_callback_carries_the_correlation_of_the_reference(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """With a public URL, each message asks Twilio to call the service's Twilio webhook with
    ``ref=<correlation of the reference>`` in the query; an explicit StatusCallback gets the
    ref added to its own query; the result names the reference and its correlation."""
    connector = connect(public_url="https://hooks.example/base/")
    sent = await connector.send_message(TO, "Your code is 1234", FROM, reference="reply/42")
    assert sent.reference == "reply/42"
    assert sent.correlation == correlation_for("reply/42")
    other = await connector.send_message(
        TO, "Second", FROM, status_callback="https://cb.example/s?x=1", reference="reply/43"
    )
    first, second = sandbox.effects("twilio")
    assert first.data["StatusCallback"] == (
        f"https://hooks.example/base/v1/webhooks/twilio?ref={sent.correlation}"
    )
    assert second.data["StatusCallback"] == f"https://cb.example/s?x=1&ref={other.correlation}"
    assert "reply" not in first.data["StatusCallback"]


async def test_an_ambiguous_send_names_its_reference_for_reconciliation(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """When the message may exist and reconciliation is off, the DeliveryUnknownError carries
    the reference as its reconcile key: the status callbacks' correlation is derived from it."""
    sandbox.faults("twilio", SEND, script=[ProviderFault.ambiguous()])
    with pytest.raises(DeliveryUnknownError) as caught:
        await connect(reconcile=False).send_message(TO, "Hi", FROM, reference="reply/7")
    assert caught.value.reconcile_key == "reply/7"
