"""SlackConnector against the sandbox's Slack webhook simulator, over real HTTP.

Policies run on a FakeClock. Slack has no idempotency: the tests check that the connector never
sends a post again once it may have reached Slack (unless told to), and measure how many
duplicates each choice produces under ambiguous failures.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from antifragile import (
    AuthenticationError,
    ConfigurationError,
    FakeClock,
    InvalidRequestError,
    NotFoundError,
    Policy,
    Retry,
    UpstreamUnavailableError,
)
from antifragile.connectors import OutcomeUnknownError, SlackConnector
from antifragile.connectors._slack import WEBHOOK_URL_ENV
from antifragile.sandbox import Fault, FlakyServer, ProviderFault, ProviderSandbox, SlackSimulator
from tests.integration._faults import (
    FAULT_KINDS,
    GATEWAY_FAULTS,
    attempt_timeout,
    sent_once_or_flagged,
)

HOOK = "T0001/B0001/sEcReTtOkEn1234"
SECRET = "sEcReTtOkEn1234"
POST = "POST /services/{team}/{bot}/{secret}"


Connect = Callable[..., SlackConnector]


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    simulator = SlackSimulator(hooks=[HOOK], gone=["T0001/B0002/gOnE"], rate=1e6, burst=1e6)
    with ProviderSandbox([simulator]) as running:
        yield running


def hook_url(sandbox: ProviderSandbox, hook: str = HOOK) -> str:
    return f"{sandbox.base_url('slack')}/services/{hook}"


@pytest.fixture
async def connect(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connect]:
    made: list[SlackConnector] = []

    def factory(hook: str = HOOK, **options: Any) -> SlackConnector:
        options.setdefault("timeout", attempt_timeout(sandbox))
        connector = SlackConnector(hook_url(sandbox, hook), clock=clock, **options)
        made.append(connector)
        return connector

    yield factory
    for connector in made:
        await connector.aclose()


def posted(sandbox: ProviderSandbox) -> list[str]:
    return [e.data["text"] for e in sandbox.effects("slack")]


async def test_post_message_is_ok(sandbox: ProviderSandbox, connect: Connect) -> None:
    """A post is 200 ``ok`` (text/plain); the connector returns the caller's reference."""
    assert await connect().post_message("Order 1 is in.", reference="order/1") == "order/1"
    assert posted(sandbox) == ["Order 1 is in."]
    (request,) = sandbox.requests
    assert request.status == 200
    assert request.path == f"/slack/services/{HOOK}"


async def test_unknown_hook_is_invalid_token_and_the_secret_never_shows(
    sandbox: ProviderSandbox, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown webhook is 403 ``invalid_token``: a permanent AuthenticationError, tried
    once; neither the URL nor its token appear in the error, its detail, or the logs."""
    caplog.set_level(logging.DEBUG)
    connector = connect("T0001/B0001/wRoNgSeCrEt")
    with pytest.raises(AuthenticationError) as caught:
        await connector.post_message("hi")
    assert caught.value.status == 403
    assert "invalid_token" in str(caught.value)
    for text in (str(caught.value), caught.value.detail or "", caplog.text, repr(connector)):
        assert "wRoNgSeCrEt" not in text
        assert "/services/" not in text
    assert len(sandbox.requests) == 1


async def test_channel_not_found_and_plain_text_validation_errors(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A hook whose channel is gone is 404 ``channel_not_found`` (NotFoundError); bodies that
    are not JSON or have no text get Slack's plain-text ``invalid_payload`` / ``no_text``."""
    with pytest.raises(NotFoundError) as caught:
        await connect("T0001/B0002/gOnE").post_message("hi")
    assert "channel_not_found" in str(caught.value)
    async with httpx.AsyncClient() as raw:
        bad = await raw.post(hook_url(sandbox), content=b"not json")
        empty = await raw.post(hook_url(sandbox), json={"text": ""})
        ok = await raw.post(hook_url(sandbox), json={"text": "hi"})
    assert (bad.status_code, bad.text) == (400, "invalid_payload")
    assert (empty.status_code, empty.text) == (400, "no_text")
    assert (ok.status_code, ok.text) == (200, "ok")
    assert ok.headers["content-type"].startswith("text/plain")


async def test_429_with_retry_after_is_honoured(
    sandbox: ProviderSandbox, connect: Connect, clock: FakeClock
) -> None:
    """A 429 is a refusal, safe to send again: ``Retry-After: 2`` is waited out and the post
    goes through once."""
    sandbox.faults("slack", POST, script=[ProviderFault.rate_limited(2)])
    await connect().post_message("hi")
    assert 2.0 in clock.sleeps
    assert [r.status for r in sandbox.requests] == [429, 200]
    assert posted(sandbox) == ["hi"]


async def test_one_message_per_second_limit(clock: FakeClock) -> None:
    """The simulator's own ~1/s limit answers a second immediate post with 429 and
    ``Retry-After: 1``; the connector waits (on the shared fake clock) and posts it."""
    with ProviderSandbox([SlackSimulator(clock=clock.monotonic)]) as small:
        policy = Policy("slack", clock=clock, retry=Retry(attempts=3))
        url = f"{small.base_url('slack')}/services/{HOOK}"
        async with SlackConnector(url, policy=policy, timeout=30.0) as slack:
            await slack.post_message("one")
            await slack.post_message("two")
        assert [r.status for r in small.requests] == [200, 429, 200]
        assert 1.0 in clock.sleeps
        assert len(small.effects("slack")) == 2


async def test_default_limiter_paces_posts_before_slack_refuses(clock: FakeClock) -> None:
    """The default policy's bucket (1/s) spaces posts so Slack's ~1/s limit is never hit."""
    with ProviderSandbox([SlackSimulator(clock=clock.monotonic)]) as small:
        url = f"{small.base_url('slack')}/services/{HOOK}"
        async with SlackConnector(url, clock=clock, timeout=30.0) as slack:
            for n in range(4):
                await slack.post_message(f"m{n}")
        assert [r.status for r in small.requests] == [200] * 4
        assert sum(clock.sleeps) >= 2.9


@pytest.mark.parametrize("lost", ["reset", "hang"])
async def test_ambiguous_failure_is_outcome_unknown_and_not_sent_again(
    sandbox: ProviderSandbox, connect: Connect, lost: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Slack posted, then the answer was lost: the connector does not post again; it raises
    a non-retryable OutcomeUnknownError carrying the caller's reference. One message shows."""
    caplog.set_level(logging.DEBUG)
    sandbox.faults("slack", POST, script=[ProviderFault.ambiguous(lost=lost)])
    with pytest.raises(OutcomeUnknownError) as caught:
        await connect().post_message("Order 1 is in.", reference="order/1")
    assert caught.value.reconcile_key == "order/1"
    assert not caught.value.retryable
    assert len(sandbox.requests) == 1
    assert posted(sandbox) == ["Order 1 is in."]
    assert SECRET not in str(caught.value) + caplog.text


async def test_5xx_with_a_slack_error_string_is_retried_and_posted_once(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """A 500 whose body is Slack's own error string (``internal_error``) says the message was
    not posted: it is posted again after a back-off and shows once."""
    sandbox.faults("slack", POST, script=[ProviderFault.error(500)])
    await connect().post_message("hi")
    assert [r.status for r in sandbox.requests] == [500, 200]
    assert len(sandbox.effects("slack")) == 1


@pytest.mark.parametrize("gateway", list(GATEWAY_FAULTS))
async def test_gateway_5xx_is_outcome_unknown(clock: FakeClock, gateway: str) -> None:
    """A bodiless 502 or an HTML 504 after the post reached a gateway may or may not have
    posted it: outcome unknown, not sent again."""
    with FlakyServer(default=GATEWAY_FAULTS[gateway]) as server:
        url = f"{server.url}/services/T000/B000/XXXX"
        async with SlackConnector(url, clock=clock) as slack:
            with pytest.raises(OutcomeUnknownError):
                await slack.post_message("hi")
        assert len(server.requests) == 1


async def test_retry_ambiguous_resends_and_duplicates(
    sandbox: ProviderSandbox, connect: Connect
) -> None:
    """With ``retry_ambiguous=True`` the lost answer is retried: at least once -- and here
    the message shows twice."""
    sandbox.faults("slack", POST, script=[ProviderFault.ambiguous()])
    await connect(retry_ambiguous=True).post_message("hi")
    assert posted(sandbox) == ["hi", "hi"]


def test_configuration_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ANTIFRAGILE_SLACK_WEBHOOK_URL`` configures the connector; a missing or malformed URL
    is a ConfigurationError that does not echo the URL."""
    monkeypatch.setenv(WEBHOOK_URL_ENV, f"https://hooks.example/services/{HOOK}")
    connector = SlackConnector()
    assert connector.base_url == "https://hooks.example"
    assert SECRET not in repr(connector)
    monkeypatch.setenv(WEBHOOK_URL_ENV, f"ftp://hooks.example/{SECRET}")
    with pytest.raises(ConfigurationError) as caught:
        SlackConnector()
    assert SECRET not in str(caught.value)
    monkeypatch.delenv(WEBHOOK_URL_ENV)
    with pytest.raises(ConfigurationError):
        SlackConnector()


async def _run_posts(sandbox: ProviderSandbox, connector: SlackConnector, n: int) -> int:
    """Post *n* numbered messages; the number that raised OutcomeUnknownError."""
    unknown = 0
    for i in range(n):
        try:
            await connector.post_message(f"post {i}", reference=f"post/{i}")
        except OutcomeUnknownError:
            unknown += 1
    return unknown


@pytest.mark.slow
async def test_duplicate_rate_under_ambiguous_failures(
    clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """150 posts while 30% of requests fail ambiguously (posted, answer lost) and 10% get a
    5xx (not posted). By default the connector sends no duplicate and loses nothing silently:
    every post is either acknowledged or flagged OutcomeUnknown (for review). With
    ``retry_ambiguous`` every post arrives, and about half get a duplicate (a resend can be lost
    again, and a 5xx is resent too). The answered requests have a generous timeout: a busy
    machine must not add unknown outcomes of its own."""
    n = 150
    chaos = [(0.3, ProviderFault.ambiguous()), (0.1, ProviderFault.error(503))]
    results: dict[str, tuple[int, int, int, int]] = {}
    for mode in ("default", "retry_ambiguous"):
        simulator = SlackSimulator(hooks=[HOOK], rate=1e6, burst=1e6)
        with ProviderSandbox([simulator]) as sandbox:
            sandbox.faults("slack", POST, chaos=chaos, seed=5)
            policy = Policy(
                "slack",
                clock=clock,
                retry=Retry(attempts=10),
                budget=None,
                breaker=None,
                timeout=30.0,
            )
            async with SlackConnector(
                hook_url(sandbox),
                policy=policy,
                timeout=30.0,
                retry_ambiguous=mode == "retry_ambiguous",
            ) as slack:
                unknown = await _run_posts(sandbox, slack, n)
            counts = collections.Counter(posted(sandbox))
        delivered = len(counts)
        duplicates = sum(c - 1 for c in counts.values())
        results[mode] = (delivered, duplicates, unknown, len(sandbox.requests))
        with capsys.disabled():
            print(
                f"\nslack {mode}: {n} posts, {delivered} delivered, {duplicates} duplicates "
                f"({duplicates / n:.1%}), {unknown} outcome-unknown ({unknown / n:.1%}), "
                f"{len(sandbox.requests)} requests"
            )
    delivered, duplicates, unknown, _ = results["default"]
    assert duplicates == 0
    assert n - unknown <= delivered <= n  # acknowledged posts all arrived; unknowns may have
    assert 0.25 * n < unknown < 0.55 * n  # ~30% ambiguous + ~10% 5xx, flagged for review
    delivered, duplicates, unknown, _ = results["retry_ambiguous"]
    assert unknown == 0
    assert delivered == n
    assert 0.2 * n < duplicates < 0.8 * n


@pytest.mark.parametrize(
    "kind",
    list(FAULT_KINDS),
)
async def test_every_fault_kind_is_sent_once_or_flagged(
    sandbox: ProviderSandbox, connect: Connect, kind: str
) -> None:
    """Each fault the sandbox plays on the first request: latency and a 429 (a refusal, safe
    to resend) end with the post made once; after a 5xx, a reset, a hang, a malformed
    answer or an ambiguous failure the post may exist, so it is not sent again -- a
    non-retryable OutcomeUnknownError -- and at most one exists."""
    await sent_once_or_flagged(
        sandbox, "slack", POST, kind, lambda: connect().post_message("hi", reference="post/1")
    )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "text/plain"),
        (b"OK then", "text/plain"),
        (b'{"ok": true}', "application/json"),
        (b"<html>captive portal</html>", "text/html"),
    ],
)
async def test_a_200_without_ok_is_never_taken_for_success(
    clock: FakeClock, body: bytes, content_type: str
) -> None:
    """Slack's success is 200 with the body ``ok`` and nothing else: a 200 with any other body
    (empty, JSON, a page from something in between) may or may not have posted, so the post
    is flagged -- a non-retryable OutcomeUnknownError with the reference, sent once -- and the
    webhook's secret stays out of the error."""
    answer = Fault.ok(body=body, headers={"content-type": content_type})
    with FlakyServer(default=answer) as server:
        async with SlackConnector(
            f"{server.url}/services/{HOOK}", clock=clock, timeout=1.0
        ) as slack:
            with pytest.raises(OutcomeUnknownError) as caught:
                await slack.post_message("hi", reference="post/1")
        assert server.count() == 1
    error = caught.value
    assert not error.retryable
    assert error.reconcile_key == "post/1"
    assert error.status == 200
    assert "without 'ok'" in str(error)
    for text in (str(error), error.detail or ""):
        assert SECRET not in text


async def test_a_200_without_ok_is_retryable_when_retrying_ambiguous_posts(
    clock: FakeClock,
) -> None:
    """With ``retry_ambiguous`` (at least once), a 200 without ``ok`` is a transient
    UpstreamUnavailableError a durable job retries, not a success."""
    with FlakyServer(default=Fault.ok(body=b"")) as server:
        async with SlackConnector(
            f"{server.url}/services/{HOOK}", clock=clock, timeout=1.0, retry_ambiguous=True
        ) as slack:
            with pytest.raises(UpstreamUnavailableError) as caught:
                await slack.post_message("hi", reference="post/1")
    assert caught.value.retryable
    assert not isinstance(caught.value, OutcomeUnknownError)


@pytest.mark.parametrize(
    ("answer", "error_type"),
    [
        ("invalid_payload", InvalidRequestError),
        ("no_text", InvalidRequestError),
        ("invalid_token", AuthenticationError),
        ("channel_is_archived", NotFoundError),
    ],
)
async def test_a_200_carrying_a_slack_error_string_is_that_refusal(
    clock: FakeClock, answer: str, error_type: type[Exception]
) -> None:
    """A 200 whose body is one of Slack's webhook error strings is that refusal (nothing was
    posted): the permanent error the string stands for, naming it, sent once."""
    with FlakyServer(default=Fault.ok(body=answer.encode())) as server:
        async with SlackConnector(f"{server.url}/services/{HOOK}", clock=clock) as slack:
            with pytest.raises(error_type) as caught:
                await slack.post_message("hi")
        assert server.count() == 1
    assert answer in str(caught.value)
    assert not isinstance(caught.value, OutcomeUnknownError)
