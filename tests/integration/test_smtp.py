"""SMTPConnector against the sandbox's SMTP server (aiosmtpd), over real TCP.

Policies run on a FakeClock. SMTP has no idempotency: the behaviour under test is *retry what
certainly was not handed over, never what may have been*, with a Message-ID derived from the
caller's key; the server's record of accepted messages counts what went out, and the duplicate
rate is measured.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from email import message_from_string
from email.policy import default
from typing import Any

import pytest

from antifragile import (
    AuthenticationError,
    ConfigurationError,
    FakeClock,
    IntegrationError,
    InvalidRequestError,
    NetworkError,
    Policy,
    RateLimitedError,
    Retry,
)
from antifragile.connectors import OutcomeUnknownError, SMTPConnector, SMTPSent, message_id_for
from antifragile.connectors._smtp import (
    HOST_ENV,
    PASSWORD_ENV,
    PORT_ENV,
    STARTTLS_ENV,
    USERNAME_ENV,
)
from antifragile.sandbox import SMTPSandbox
from antifragile.sandbox._smtp import SMTPFault

USERS = {"app": "s3cret"}

Connect = Callable[..., SMTPConnector]


@pytest.fixture
def smtp() -> Iterator[SMTPSandbox]:
    with SMTPSandbox(users=USERS) as running:
        yield running


@pytest.fixture
def connect(smtp: SMTPSandbox, clock: FakeClock) -> Connect:
    def factory(**options: Any) -> SMTPConnector:
        options.setdefault("username", "app")
        options.setdefault("password", USERS["app"])
        options.setdefault("timeout", 30.0)  # the sandbox answers: never a timeout when busy
        return SMTPConnector(smtp.host, smtp.port, clock=clock, **options)

    return factory


async def send(connector: SMTPConnector, key: str = "order/1", **overrides: Any) -> SMTPSent:
    fields: dict[str, Any] = {
        "sender": "Shop <shop@example.com>",
        "to": "owner@example.com",
        "subject": "New order",
        "text": "Order 1 is in.",
        "idempotency_key": key,
    }
    fields.update(overrides)
    return await connector.send_email(**fields)


async def test_send_email_records_one_message_with_a_derived_message_id(
    smtp: SMTPSandbox, connect: Connect
) -> None:
    """A send logs in, hands the message over and returns the server's 250; the message's
    Message-ID is derived from the caller's key; Bcc recipients get it but see no header."""
    sent = await send(connect(), html="<p>Order 1</p>", bcc="audit@example.com")
    (effect,) = smtp.effects()
    assert sent.message_id == message_id_for("order/1", "example.com") == effect.idempotency_key
    assert sent.reply.startswith("250")
    assert effect.data["rcpt_tos"] == ["owner@example.com", "audit@example.com"]
    message = message_from_string(effect.data["content"], policy=default)
    assert message["Subject"] == "New order"
    assert message["Bcc"] is None
    assert message.get_content_type() == "multipart/alternative"


async def test_wrong_password_is_an_authentication_error_without_retry(
    smtp: SMTPSandbox, connect: Connect
) -> None:
    """A refused login (535) is a permanent AuthenticationError, tried once; nothing sent."""
    with pytest.raises(AuthenticationError) as caught:
        await send(connect(password="wrong"))
    assert caught.value.status == 535
    assert "wrong" not in str(caught.value)
    assert smtp.effects() == []


async def test_permanent_rejection_is_invalid_request(smtp: SMTPSandbox, connect: Connect) -> None:
    """A 554 on DATA is a permanent InvalidRequestError, not retried; nothing accepted."""
    smtp.faults(["reject"])
    with pytest.raises(InvalidRequestError) as caught:
        await send(connect())
    assert caught.value.status == 554
    assert smtp.effects() == []
    assert smtp.pending == 0


@pytest.mark.parametrize("fault", ["tempfail", "throttle"])
async def test_4xx_refusals_are_retried_and_the_message_goes_out_once(
    smtp: SMTPSandbox, connect: Connect, clock: FakeClock, fault: SMTPFault
) -> None:
    """A ``451`` or a ``421`` throttle on DATA says the server took nothing: retried after a
    back-off, with the same Message-ID, and the message is accepted once."""
    smtp.faults([fault])
    sent = await send(connect())
    assert [e.id for e in smtp.effects()] == [sent.message_id]
    assert any(s > 0 for s in clock.sleeps)


async def test_drop_during_data_is_treated_as_ambiguous(
    smtp: SMTPSandbox, connect: Connect
) -> None:
    """A connection dropped during DATA, before any reply, cannot be told from a drop after
    the server took the message: the connector conservatively raises OutcomeUnknownError
    without resending (here the server took nothing: reconciliation would send it again)."""
    smtp.faults(["disconnect"])
    with pytest.raises(OutcomeUnknownError):
        await send(connect())
    assert smtp.effects() == []


async def test_throttle_beyond_the_attempts_is_rate_limited(
    smtp: SMTPSandbox, connect: Connect
) -> None:
    """When every attempt gets ``421 4.7.0``, the caller gets a RateLimitedError; nothing sent."""
    smtp.faults(["throttle"] * 5)
    with pytest.raises(RateLimitedError):
        await send(connect())
    assert smtp.effects() == []


async def test_ambiguous_drop_after_data_is_outcome_unknown_and_never_resent(
    smtp: SMTPSandbox, connect: Connect
) -> None:
    """The server accepts the message and the connection drops before its 250 arrives: the
    connector does not send again and raises OutcomeUnknownError with the Message-ID."""
    smtp.faults(["ambiguous"])
    with pytest.raises(OutcomeUnknownError) as caught:
        await send(connect())
    (effect,) = smtp.effects()
    assert caught.value.reconcile_key == effect.idempotency_key
    assert not caught.value.retryable


async def test_unreachable_server_is_a_retried_network_error(clock: FakeClock) -> None:
    """No server listening: a failure before anything was sent, retried, then a
    NetworkError that is safe to replay (not an unknown outcome)."""
    with SMTPSandbox() as closed:
        host, port = closed.host, closed.port
    connector = SMTPConnector(host, port, clock=clock, timeout=1.0)
    with pytest.raises(NetworkError) as caught:
        await send(connector)
    assert not isinstance(caught.value, OutcomeUnknownError)
    assert caught.value.replay_safe
    assert len(caught.value.attempts) == 5


async def test_duplicate_rate_with_reconciliation_vs_blind_resend(
    smtp: SMTPSandbox, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Measured duplicate rate over 50 messages under 30% ambiguous drops and 10% 451s (each
    message a real SMTP session; the benchmark runs more): the connector plus reconciliation by
    Message-ID sends each message exactly once; resending blindly after any failure duplicates
    every ambiguous one (same Message-ID, two deliveries)."""
    messages = 50
    rng = random.Random(9)
    draws: list[SMTPFault | None] = []
    for _ in range(messages * 4):
        u = rng.random()
        draws.append("ambiguous" if u < 0.3 else "tempfail" if u < 0.4 else None)
    policy = Policy("smtp", timeout=None, clock=clock, retry=Retry(attempts=5), breaker=None)
    connector = SMTPConnector(
        smtp.host, smtp.port, username="app", password="s3cret", policy=policy, timeout=30.0
    )
    smtp.faults(draws)
    for i in range(messages):
        for _ in range(20):
            try:
                await send(connector, key=f"ours/{i}")
                break
            except OutcomeUnknownError as unknown:
                if unknown.reconcile_key in {e.idempotency_key for e in smtp.effects()}:
                    break
    ours = Counter(e.idempotency_key for e in smtp.effects())
    assert len(ours) == messages
    duplicates = sum(n - 1 for n in ours.values())

    smtp.reset()
    smtp.faults(draws)
    for i in range(messages):
        for _ in range(20):
            try:
                await send(connector, key=f"blind/{i}")
                break
            except IntegrationError:
                continue
    blind = Counter(e.idempotency_key for e in smtp.effects())
    blind_duplicates = sum(n - 1 for n in blind.values())
    with capsys.disabled():
        print(
            f"\nsmtp duplicate rate over {messages} messages: reconciled "
            f"{duplicates / messages:.1%}, blind resend {blind_duplicates / messages:.1%}"
        )
    assert duplicates == 0
    assert blind_duplicates > messages // 10


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ANTIFRAGILE_SMTP_HOST``/``_PORT``/``_USERNAME``/``_PASSWORD`` configure the connector;
    STARTTLS is off unless ``ANTIFRAGILE_SMTP_STARTTLS`` says so; a username without a password
    or a bad port is a ConfigurationError."""
    monkeypatch.setenv(HOST_ENV, "mail.example")
    monkeypatch.setenv(PORT_ENV, "2525")
    monkeypatch.setenv(USERNAME_ENV, "app")
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    connector = SMTPConnector()
    assert (connector.host, connector.port, connector.username) == ("mail.example", 2525, "app")
    assert connector.start_tls is False
    monkeypatch.setenv(STARTTLS_ENV, "true")
    assert SMTPConnector().start_tls is True
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(ConfigurationError):
        SMTPConnector()
    monkeypatch.delenv(USERNAME_ENV)
    monkeypatch.setenv(PORT_ENV, "smtp")
    with pytest.raises(ConfigurationError):
        SMTPConnector()
