"""WhatsAppConnector against the sandbox's WhatsApp Cloud simulator, over real HTTP.

Policies run on a FakeClock: back-offs are recorded in ``clock.sleeps`` instead of being
waited out. The sandbox's effect record is the ground truth for "how many messages went out".
"""

from __future__ import annotations

import collections
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from antifragile import (
    AuthenticationError,
    CircuitOpenError,
    ConfigurationError,
    FakeClock,
    InvalidRequestError,
    NetworkError,
    Policy,
    RateLimitedError,
    Retry,
    UpstreamUnavailableError,
)
from antifragile.connectors import (
    DeliveryUnknownError,
    OutcomeUnknownError,
    WhatsAppConnector,
    correlation_for,
    is_correlation,
)
from antifragile.connectors._whatsapp import (
    ACCESS_TOKEN_ENV,
    BASE_URL_ENV,
    PHONE_NUMBER_ID_ENV,
)
from antifragile.policies import Constant
from antifragile.sandbox import (
    Fault,
    FlakyServer,
    ProviderFault,
    ProviderSandbox,
    WhatsAppSimulator,
)
from tests.integration._faults import (
    FAULT_KINDS,
    GATEWAY_FAULTS,
    attempt_timeout,
    sent_once_or_flagged,
)

TOKEN = "EAAG-test-token"
PHONE = "106540352242922"
SEND = "POST /{version}/{phone_number_id}/messages"
TO = "15551234567"


Connect = Callable[..., WhatsAppConnector]


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    simulator = WhatsAppSimulator(
        access_tokens=[TOKEN], phone_number_ids=[PHONE], throughput=10_000
    )
    with ProviderSandbox([simulator]) as running:
        yield running


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    made: list[WhatsAppConnector] = []

    def factory(access_token: str = TOKEN, **options: Any) -> WhatsAppConnector:
        options.setdefault("timeout", attempt_timeout(sandbox))
        options.setdefault("phone_number_id", PHONE)
        options.setdefault("base_url", sandbox.base_url("whatsapp"))
        connector = WhatsAppConnector(access_token, clock=clock, **options)
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        await connector.aclose()


def graph_body(code: int, message: str = "Rate limit hit") -> dict[str, Any]:
    return {
        "error": {
            "message": f"(#{code}) {message}",
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": message},
            "fbtrace_id": "Atrace",
        }
    }


async def test_send_text_succeeds_with_bearer_auth_and_one_effect(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A text send is 200 with a ``wamid`` and the recipient's ``wa_id``; the request carries
    the bearer token and Cloud API's body; exactly one message is recorded."""
    sent = await connect().send_text(TO, "Your order has shipped.")
    (effect,) = sandbox.effects("whatsapp")
    assert sent.id == effect.id
    assert sent.id.startswith("wamid.")
    assert sent.wa_id == TO
    assert effect.data == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": TO,
        "type": "text",
        "text": {"body": "Your order has shipped.", "preview_url": False},
        "biz_opaque_callback_data": sent.correlation,
    }
    (request,) = sandbox.requests
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.path == f"/whatsapp/v21.0/{PHONE}/messages"


async def test_send_template_succeeds(sandbox: ProviderSandbox, connect: Connect) -> None:
    """A template send carries the template name and language code and is accepted."""
    sent = await connect().send_template(TO, "order_update", language="en_US")
    (effect,) = sandbox.effects("whatsapp")
    assert sent.id == effect.id
    assert effect.data["template"] == {"name": "order_update", "language": {"code": "en_US"}}


async def test_wrong_token_is_an_authentication_error_without_retry(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A token the provider does not know is 401 Graph code 190: AuthenticationError after one
    request, nothing sent."""
    with pytest.raises(AuthenticationError) as caught:
        await connect("EAAG-wrong").send_text(TO, "hi")
    assert "code 190" in str(caught.value)
    assert len(sandbox.requests) == 1
    assert sandbox.effects("whatsapp") == []


async def test_invalid_recipient_is_an_invalid_request_with_graph_code(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A malformed ``to`` is 400 Graph code 100: InvalidRequestError (not a rate limit), not
    retried, nothing sent."""
    with pytest.raises(InvalidRequestError) as caught:
        await connect().send_text("not-a-number", "hi")
    assert not isinstance(caught.value, RateLimitedError)
    assert "code 100" in str(caught.value)
    assert len(sandbox.requests) == 1
    assert sandbox.effects("whatsapp") == []


async def test_text_over_4096_characters_is_refused_by_simulator_and_connector(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """The simulator refuses a 4097-character body with 400 code 100; the connector refuses it
    before sending (ConfigurationError) and accepts exactly 4096."""
    body = {
        "messaging_product": "whatsapp",
        "to": TO,
        "type": "text",
        "text": {"body": "x" * 4097},
    }
    url = f"{sandbox.base_url('whatsapp')}/v21.0/{PHONE}/messages"
    async with httpx.AsyncClient() as client:
        answer = await client.post(url, json=body, headers={"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 100
    assert set(answer.json()["error"]) >= {"message", "type", "code", "error_data", "fbtrace_id"}
    connector = connect()
    with pytest.raises(ConfigurationError):
        await connector.send_text(TO, "x" * 4097)
    await connector.send_text(TO, "x" * 4096)
    assert len(sandbox.effects("whatsapp")) == 1


async def test_throughput_refusal_130429_is_rate_limited_and_retried(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock
) -> None:
    """The simulator's throttling answer is HTTP 400 with Graph code 130429 and no
    Retry-After; the connector treats it as a RateLimitedError (a refusal, safe to resend),
    backs off and sends once."""
    sandbox.faults("whatsapp", SEND, script=[ProviderFault.rate_limited()] * 2)
    sent = await connect().send_text(TO, "hi")
    statuses = [r.status for r in sandbox.requests]
    assert statuses == [400, 400, 200]
    assert [e.id for e in sandbox.effects("whatsapp")] == [sent.id]
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize("code", [130429, 131056, 80007, 4])
async def test_throttling_codes_in_a_400_are_rate_limited_errors(
    clock: FakeClock, code: int
) -> None:
    """A 400 whose Graph code is a throttling code (130429 throughput, 131056 pair rate,
    80007 account, 4 app) is RateLimitedError, retried; other 400s are not."""
    with FlakyServer(default=Fault.status(400, json=graph_body(code))) as server:
        policy = Policy("whatsapp", retry=Retry(attempts=3, backoff=Constant(1.0)), clock=clock)
        async with WhatsAppConnector(
            TOKEN, phone_number_id=PHONE, base_url=server.url, policy=policy, clock=clock
        ) as connector:
            with pytest.raises(RateLimitedError) as caught:
                await connector.send_text(TO, "hi")
        assert str(code) in str(caught.value)
        assert caught.value.replay_safe
        assert len(server.requests) == 3
        if code == 131056:
            assert caught.value.retry_after == 6.0


@pytest.mark.parametrize("status", [400, 429])
async def test_pair_rate_limit_131056_with_configurable_status(
    clock: FakeClock, status: int
) -> None:
    """Two messages to the same recipient within the pair interval: the second is refused with
    Graph code 131056 under the configured HTTP status, raised as RateLimitedError."""
    simulator = WhatsAppSimulator(pair_interval=60.0, throttle_status=status)
    with ProviderSandbox([simulator]) as sandbox:
        policy = Policy("whatsapp", retry=Retry(attempts=1), clock=clock)
        async with WhatsAppConnector(
            TOKEN,
            phone_number_id=PHONE,
            base_url=sandbox.base_url("whatsapp"),
            policy=policy,
            clock=clock,
        ) as connector:
            await connector.send_text(TO, "one")
            with pytest.raises(RateLimitedError) as caught:
                await connector.send_text(TO, "two")
            await connector.send_text("15550000000", "another recipient")
        assert "131056" in str(caught.value)
        assert sandbox.requests[1].status == status
        assert len(sandbox.effects("whatsapp")) == 2


@pytest.mark.parametrize("lost", ["reset", "hang"])
async def test_ambiguous_failure_is_not_resent_and_raises_delivery_unknown(
    sandbox: ProviderSandbox, connect: Connect, lost: Any
) -> None:
    """The message is sent but the answer is lost (reset, or a hang past the attempt
    timeout): the connector does not send again -- one request, one effect -- and raises
    DeliveryUnknownError (an OutcomeUnknownError, not retryable)."""
    sandbox.faults("whatsapp", SEND, script=[ProviderFault.ambiguous(lost=lost)])
    with pytest.raises(DeliveryUnknownError) as caught:
        await connect().send_text(TO, "hi")
    assert isinstance(caught.value, OutcomeUnknownError)
    assert not caught.value.retryable
    assert caught.value.to == TO
    assert len(sandbox.requests) == 1
    assert len(sandbox.effects("whatsapp")) == 1


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_with_a_graph_error_body_is_retried_and_sent_once(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock, status: int
) -> None:
    """A 5xx carrying Graph's own error body (``code 2``, "service temporarily unavailable")
    says Cloud API did not process the request: it is retried after a back-off, not flagged
    as unknown, and the message goes out once."""
    sandbox.faults("whatsapp", SEND, script=[ProviderFault.error(status)])
    sent = await connect().send_text(TO, "hi")
    assert [r.status for r in sandbox.requests] == [status, 200]
    assert [e.id for e in sandbox.effects("whatsapp")] == [sent.id]
    assert len(clock.sleeps) == 1


async def test_5xx_with_a_graph_body_every_time_ends_retryable_not_unknown(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Graph answering 503 with its error body on every attempt: the caller gets the
    retryable UpstreamUnavailableError after 5 attempts (a durable job tries again later),
    never a DeliveryUnknownError; nothing was sent."""
    sandbox.faults("whatsapp", SEND, script=[ProviderFault.error(503)] * 5)
    with pytest.raises(UpstreamUnavailableError) as caught:
        await connect().send_text(TO, "hi")
    assert caught.value.retryable
    assert not isinstance(caught.value, OutcomeUnknownError)
    assert len(sandbox.requests) == 5
    assert sandbox.effects("whatsapp") == []


@pytest.mark.parametrize("gateway", list(GATEWAY_FAULTS))
async def test_gateway_5xx_without_a_graph_body_is_delivery_unknown(
    clock: FakeClock, gateway: str
) -> None:
    """A bodiless 502 or an HTML 504 is a gateway that may have lost Cloud API's answer: the
    message may have gone out, so it is DeliveryUnknownError after one request."""
    with FlakyServer(default=GATEWAY_FAULTS[gateway]) as server:
        async with WhatsAppConnector(
            TOKEN, phone_number_id=PHONE, base_url=server.url, clock=clock
        ) as wa:
            with pytest.raises(DeliveryUnknownError):
                await wa.send_text(TO, "hi")
        assert len(server.requests) == 1


async def test_malformed_success_is_delivery_unknown(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A 200 whose body does not parse: the message may exist, DeliveryUnknownError."""
    sandbox.faults("whatsapp", SEND, script=[ProviderFault.malformed()])
    with pytest.raises(DeliveryUnknownError):
        await connect().send_text(TO, "hi")
    assert len(sandbox.requests) == 1


async def test_connection_refused_is_retried_because_nothing_was_sent(clock: FakeClock) -> None:
    """Nothing listens: every attempt fails before sending, so all 5 are made, then a
    NetworkError (not DeliveryUnknownError) is raised."""
    with FlakyServer() as server:
        url = server.url
    async with WhatsAppConnector(TOKEN, phone_number_id=PHONE, base_url=url, clock=clock) as wa:
        with pytest.raises(NetworkError) as caught:
            await wa.send_text(TO, "hi")
    assert not isinstance(caught.value, DeliveryUnknownError)
    assert len(caught.value.attempts) == 5


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Base URL, access token and phone number id come from ANTIFRAGILE_WHATSAPP_*; a missing
    token or phone number id is a ConfigurationError."""
    monkeypatch.delenv(ACCESS_TOKEN_ENV, raising=False)
    monkeypatch.delenv(PHONE_NUMBER_ID_ENV, raising=False)
    with pytest.raises(ConfigurationError):
        WhatsAppConnector()
    monkeypatch.setenv(ACCESS_TOKEN_ENV, TOKEN)
    with pytest.raises(ConfigurationError):
        WhatsAppConnector()
    monkeypatch.setenv(PHONE_NUMBER_ID_ENV, PHONE)
    monkeypatch.setenv(BASE_URL_ENV, "http://127.0.0.1:9/whatsapp/")
    connector = WhatsAppConnector()
    assert connector.base_url == "http://127.0.0.1:9/whatsapp"
    assert connector.phone_number_id == PHONE


async def test_duplicate_rate_over_200_sends_with_30_percent_ambiguous_failures(
    clock: FakeClock,
) -> None:
    """200 logical sends while 30% of requests fail ambiguously (sent, answer lost): with the
    default policy no message is sent twice (duplicate rate 0) and every ambiguous send is
    reported as DeliveryUnknownError; a caller that blindly resends on it duplicates every
    one of them. (An open circuit breaker refuses locally, sending nothing: the loop waits.)"""
    results: dict[str, tuple[int, int, int]] = {}
    for strategy in ("default", "blind_resend"):
        simulator = WhatsAppSimulator(access_tokens=[TOKEN], throughput=10_000)
        with ProviderSandbox([simulator]) as sandbox:
            sandbox.faults(
                "whatsapp", SEND, chaos=[(0.3, ProviderFault.ambiguous())], seed=20261122
            )
            unknown = 0
            async with WhatsAppConnector(
                TOKEN,
                phone_number_id=PHONE,
                base_url=sandbox.base_url("whatsapp"),
                clock=clock,
                timeout=2.0,
            ) as connector:
                for n in range(200):
                    for _ in range(20):
                        try:
                            await connector.send_text(TO, f"message {n}")
                            break
                        except CircuitOpenError:
                            clock.advance(60.0)  # refused locally, nothing sent: wait it out
                        except DeliveryUnknownError:
                            unknown += 1
                            if strategy == "default":
                                break
            copies = collections.Counter(
                e.data["text"]["body"] for e in sandbox.effects("whatsapp")
            )
        duplicates = sum(c - 1 for c in copies.values())
        results[strategy] = (len(copies), duplicates, unknown)
    delivered, duplicates, unknown = results["default"]
    print(f"\nwhatsapp duplicate rates over 200 sends (30% ambiguous): {json.dumps(results)}")
    assert delivered == 200  # an ambiguous failure here always sent the message
    assert duplicates == 0
    assert 30 <= unknown <= 90
    blind_delivered, blind_duplicates, _ = results["blind_resend"]
    assert blind_delivered == 200
    assert blind_duplicates > 30


async def test_simulator_throughput_limit_answers_130429(clock: FakeClock) -> None:
    """Beyond ``throughput`` messages per second the simulator answers HTTP 400 with Graph
    code 130429 and ``error_data.details``: RateLimitedError, the refused message not sent."""
    simulator = WhatsAppSimulator(throughput=1, clock=lambda: 0.0)  # one window, never reset
    with ProviderSandbox([simulator]) as sandbox:
        policy = Policy("whatsapp", retry=Retry(attempts=1), clock=clock)
        async with WhatsAppConnector(
            TOKEN,
            phone_number_id=PHONE,
            base_url=sandbox.base_url("whatsapp"),
            policy=policy,
            clock=clock,
        ) as connector:
            await connector.send_text(TO, "one")
            with pytest.raises(RateLimitedError) as caught:
                await connector.send_text("15550000000", "two")
        assert "130429" in str(caught.value)
        assert "throughput" in str(caught.value)
        assert sandbox.requests[1].status == 400
        assert len(sandbox.effects("whatsapp")) == 1


@pytest.mark.parametrize("kind", list(FAULT_KINDS))
async def test_every_fault_kind_is_sent_once_or_flagged(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """Each fault the sandbox plays on the first request: latency, a 429 (a refusal) and a 5xx
    in Graph's error format (not processed) end with the message made once; after a reset, a
    hang, a malformed answer or an ambiguous failure the message may exist, so it is not sent
    again -- a non-retryable DeliveryUnknownError -- and at most one exists."""
    await sent_once_or_flagged(
        sandbox,
        "whatsapp",
        SEND,
        kind,
        lambda: connect().send_text(TO, "hi"),
        unknown=DeliveryUnknownError,
    )


async def test_every_message_carries_the_correlation_of_its_reference(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """Texts and templates carry ``biz_opaque_callback_data`` = the correlation of the
    caller's reference (a digest: no personal data); without a reference a random one is
    used and returned; the result names both."""
    connector = connect()
    text = await connector.send_text(TO, "hi", reference="reply/1")
    template = await connector.send_template(TO, "order_update", reference="reply/2")
    anonymous = await connector.send_text(TO, "hello")
    effects = sandbox.effects("whatsapp")
    assert [e.data["biz_opaque_callback_data"] for e in effects] == [
        correlation_for("reply/1"),
        correlation_for("reply/2"),
        anonymous.correlation,
    ]
    assert (text.reference, text.correlation) == ("reply/1", correlation_for("reply/1"))
    assert template.correlation == correlation_for("reply/2")
    assert anonymous.reference is not None
    assert anonymous.correlation == correlation_for(anonymous.reference)
    assert is_correlation(anonymous.correlation)
    assert TO not in str(effects[0].data["biz_opaque_callback_data"])


async def test_an_ambiguous_send_names_its_reference_for_reconciliation(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A DeliveryUnknownError carries the reference as its reconcile key, so whoever waits
    for the status webhook knows which correlation to expect."""
    sandbox.faults("whatsapp", SEND, script=[ProviderFault.ambiguous()])
    with pytest.raises(DeliveryUnknownError) as caught:
        await connect().send_text(TO, "hi", reference="reply/9")
    assert caught.value.reconcile_key == "reply/9"
    (effect,) = sandbox.effects("whatsapp")
    assert effect.data["biz_opaque_callback_data"] == correlation_for("reply/9")
