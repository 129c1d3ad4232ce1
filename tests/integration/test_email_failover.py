"""An email chain (Resend -> SendGrid -> SMTP) against the sandbox's simulators, over real HTTP.

The sandbox's effect records are the ground truth for how many emails went out, and where.
Policies run on a FakeClock: back-offs are recorded, not waited out; a breaker's open time is
passed by advancing the clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest

from antifragile import (
    CircuitBreaker,
    Exponential,
    FakeClock,
    InvalidRequestError,
    Policy,
    Retry,
)
from antifragile.connectors import Connectors, EmailChain, EmailUnsettledError, SMTPConnector
from antifragile.connectors._failover import CHAIN_ENV, SETTLE_WINDOW_ENV, email_serving
from antifragile.sandbox import (
    ProviderFault,
    ProviderSandbox,
    ResendSimulator,
    SendGridSimulator,
    SMTPSandbox,
)

RESEND_KEY = "re_test_key"
SENDGRID_KEY = "SG.test-key"
SEND = "POST /emails"
OPEN_FOR = 30.0


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    simulators = [
        ResendSimulator(api_keys=[RESEND_KEY], rate_limit=100_000, daily_quota=None),
        SendGridSimulator(api_keys=[SENDGRID_KEY], rate_limit=100_000),
    ]
    with ProviderSandbox(simulators) as running:
        yield running


@pytest.fixture
def timeouts() -> dict[str, float]:
    """Each provider's attempt timeout: generous, so a loaded machine never turns an answered
    send into an unknown outcome; a test of a hanging provider shortens that provider's."""
    return {"resend": 30.0, "sendgrid": 30.0}


def _policy(name: str, clock: FakeClock, timeout: float) -> Policy:
    return Policy(
        name,
        timeout=timeout,
        total_timeout=None,
        retry=Retry(attempts=2, backoff=Exponential(0.01, cap=0.05)),
        rate=None,
        breaker=CircuitBreaker(name, minimum_calls=3, window=5, open_duration=OPEN_FOR),
        clock=clock,
    )


@pytest.fixture
async def connectors(
    sandbox: ProviderSandbox,
    clock: FakeClock,
    timeouts: dict[str, float],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Connectors]:
    monkeypatch.setenv(CHAIN_ENV, "resend,sendgrid")
    monkeypatch.setenv(SETTLE_WINDOW_ENV, "600")
    registry = Connectors(
        base_urls={p: sandbox.base_url(p) for p in ("resend", "sendgrid")},
        options={"resend": {"api_key": RESEND_KEY}, "sendgrid": {"api_key": SENDGRID_KEY}},
        policies={p: _policy(p, clock, timeouts[p]) for p in ("resend", "sendgrid")},
        clock=clock,
    )
    yield registry
    await registry.aclose()


async def send(chain: EmailChain, key: str) -> str:
    sent = await chain.send_email(
        sender="shop@example.com",
        to="owner@example.com",
        subject="New intake",
        text=f"Summary {key}",
        idempotency_key=key,
    )
    return sent.provider


def sent_by(sandbox: ProviderSandbox) -> Counter[str]:
    """How many times each email went out, across both providers (by its caller key)."""
    keys: Counter[str] = Counter()
    for effect in sandbox.effects("resend"):
        keys[str(effect.idempotency_key).removeprefix("send-email/")] += 1
    for effect in sandbox.effects("sendgrid"):
        keys[effect.data["custom_args"]["antifragile_key"].removeprefix("send-email/")] += 1
    return keys


async def test_resend_down_mid_run_every_email_once_and_traffic_returns(
    sandbox: ProviderSandbox, connectors: Connectors, clock: FakeClock
) -> None:
    """200 summary emails; Resend answers 503 from the 60th to the 140th: each goes out once
    across the providers, SendGrid serves while Resend's breaker is open, Resend again after
    it closes."""
    chain = connectors.email_chain()
    assert email_serving(connectors) == "resend"
    providers: list[str] = []
    serving: list[str | None] = []
    for i in range(200):
        if i == 60:
            sandbox.faults("resend", SEND, chaos=[(1.0, ProviderFault.error(503))])
        if i == 140:
            sandbox.clear_faults("resend")
            clock.advance(OPEN_FOR + 1)  # the breaker's open time passes: a probe goes through
        providers.append(await send(chain, f"intake/{i}"))
        serving.append(chain.serving())
    counts = sent_by(sandbox)
    assert len(counts) == 200
    assert set(counts.values()) == {1}
    assert providers[:60] == ["resend"] * 60
    assert set(providers[60:140]) == {"sendgrid"}
    assert providers[140:] == ["resend"] * 60
    # the breaker opened after 3 failed sends: SendGrid served without Resend being asked
    assert serving[62:140] == ["sendgrid"] * 78
    resend_asked = [r for r in sandbox.requests if r.path.startswith("/resend")]
    # before, the detection (the breaker counts attempts: 3 failed ones open it), after
    assert len(resend_asked) == 60 + 3 + 60
    assert email_serving(connectors) == "resend"


async def test_spent_daily_quota_moves_to_the_next_provider(
    sandbox: ProviderSandbox, connectors: Connectors
) -> None:
    """Resend's ``daily_quota_exceeded`` pauses its sends: the chain serves from SendGrid,
    and Resend is not asked again until the reset."""
    resend = sandbox.simulator("resend")
    assert isinstance(resend, ResendSimulator)
    resend.daily_quota = 2
    chain = connectors.email_chain()
    providers = [await send(chain, f"q/{i}") for i in range(3)]
    asked = len([r for r in sandbox.requests if r.path.startswith("/resend")])
    assert chain.serving() == "sendgrid"
    providers += [await send(chain, f"q/{i}") for i in range(3, 5)]
    assert providers == ["resend", "resend", "sendgrid", "sendgrid", "sendgrid"]
    assert len([r for r in sandbox.requests if r.path.startswith("/resend")]) == asked
    assert set(sent_by(sandbox).values()) == {1}


async def test_unknown_outcome_at_resend_blocks_failover_until_reconciled(
    sandbox: ProviderSandbox, connectors: Connectors, clock: FakeClock
) -> None:
    """Resend takes the email and the answer is lost on every attempt: the outcome is
    unknown, so SendGrid may not send it -- not even while Resend then answers 503. Once
    Resend answers, the same key settles it: the first send's id, one email in all."""
    chain = connectors.email_chain()
    sandbox.faults("resend", SEND, chaos=[(1.0, ProviderFault.ambiguous("reset"))])
    with pytest.raises(EmailUnsettledError) as unsettled:
        await send(chain, "intake/x")
    assert unsettled.value.provider == "resend"
    assert unsettled.value.retry_after == pytest.approx(600.0)
    sandbox.faults("resend", SEND, script=[ProviderFault.error(503)] * 2)
    with pytest.raises(EmailUnsettledError):
        await send(chain, "intake/x")
    assert sandbox.effects("sendgrid") == []
    assert chain.serving() == "sendgrid"  # the failures opened Resend's breaker
    with pytest.raises(EmailUnsettledError):  # ... and an open breaker settles nothing
        await send(chain, "intake/x")
    sandbox.clear_faults("resend")
    clock.advance(OPEN_FOR + 1)
    assert await send(chain, "intake/x") == "resend"
    assert sent_by(sandbox) == Counter({"intake/x": 1})
    assert await send(chain, "intake/y") == "resend"  # the record is gone: a normal send


@pytest.mark.parametrize("timeouts", [{"resend": 0.3, "sendgrid": 30.0}])
async def test_unknown_outcome_times_out_after_the_window_then_the_next_provider_sends(
    sandbox: ProviderSandbox, connectors: Connectors, clock: FakeClock
) -> None:
    """Resend never answers (and never handles the request): the send stays unsettled for the
    window, then the chain goes on -- Resend still down, SendGrid sends it, once."""
    chain = connectors.email_chain()
    sandbox.faults("resend", SEND, chaos=[(1.0, ProviderFault.hang())])
    with pytest.raises(EmailUnsettledError):
        await send(chain, "intake/h")
    clock.advance(599)
    with pytest.raises(EmailUnsettledError) as still:
        await send(chain, "intake/h")
    assert sandbox.effects("sendgrid") == []
    assert still.value.retry_after == pytest.approx(1.0, abs=0.05)
    clock.advance(2)
    assert await send(chain, "intake/h") == "sendgrid"
    assert sent_by(sandbox) == Counter({"intake/h": 1})


async def test_a_refused_email_is_raised_not_failed_over(
    sandbox: ProviderSandbox, connectors: Connectors
) -> None:
    """Resend's 422 (a bad sender address) would be refused anywhere: raised, SendGrid not
    asked."""
    chain = connectors.email_chain()
    with pytest.raises(InvalidRequestError):
        await chain.send_email(
            sender="not an address",
            to="owner@example.com",
            subject="s",
            text="t",
            idempotency_key="bad/1",
        )
    assert not [r for r in sandbox.requests if r.path.startswith("/sendgrid")]


async def test_three_providers_the_last_one_sends_when_both_before_it_are_down(
    sandbox: ProviderSandbox, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``resend,sendgrid,smtp``: Resend and SendGrid answer 503 in their own formats (nothing
    sent), so the SMTP server takes the email, once; the chain names both it passed over."""
    monkeypatch.setenv(CHAIN_ENV, "resend,sendgrid,smtp")
    sandbox.faults("resend", SEND, chaos=[(1.0, ProviderFault.error(503))])
    sandbox.faults("sendgrid", "POST /v3/mail/send", chaos=[(1.0, ProviderFault.error(503))])
    with SMTPSandbox() as smtp:
        registry = Connectors(
            base_urls={
                "resend": sandbox.base_url("resend"),
                "sendgrid": sandbox.base_url("sendgrid"),
                "smtp": f"{smtp.host}:{smtp.port}",
            },
            options={"resend": {"api_key": RESEND_KEY}, "sendgrid": {"api_key": SENDGRID_KEY}},
            policies={p: _policy(p, clock, 30.0) for p in ("resend", "sendgrid", "smtp")},
            clock=clock,
        )
        async with registry:
            sent = await registry.email_chain().send_email(
                sender="Shop <shop@example.com>",
                to="owner@example.com",
                subject="New intake",
                text="Summary",
                idempotency_key="intake/3",
            )
        assert (sent.provider, sent.passed_over) == ("smtp", ("resend", "sendgrid"))
        assert len(smtp.effects()) == 1
    assert sandbox.effects() == []


async def test_two_mailboxes_an_unknown_outcome_is_not_sent_again_at_that_mailbox(
    clock: FakeClock,
) -> None:
    """Two SMTP mailboxes: a 451 at the first passes the email to the second. A drop after
    ``DATA`` at the first (the server kept the message) blocks the second for the window;
    after it the second sends and the first is not asked again."""
    with SMTPSandbox() as first, SMTPSandbox() as second:
        chain = EmailChain(
            {
                "smtp-a": SMTPConnector(
                    first.host, first.port, policy=_policy("smtp-a", clock, 30.0), clock=clock
                ),
                "smtp-b": SMTPConnector(
                    second.host, second.port, policy=_policy("smtp-b", clock, 30.0), clock=clock
                ),
            },
            settle_window=60.0,
            clock=clock,
        )
        first.faults(["tempfail", "tempfail"])
        sent = await send(chain, "m/1")
        assert sent == "smtp-b"
        first.faults(["ambiguous"])
        with pytest.raises(EmailUnsettledError):
            await send(chain, "m/2")
        with pytest.raises(EmailUnsettledError):
            await send(chain, "m/2")
        assert len(second.effects()) == 1
        clock.advance(61)
        assert await send(chain, "m/2") == "smtp-b"
        assert len(first.effects()) == 1  # the message the drop hid: kept once, not sent again
        assert len(second.effects()) == 2
        for connector in chain.senders.values():
            await connector.aclose()
