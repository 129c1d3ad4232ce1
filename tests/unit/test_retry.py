"""Retry: what is retried, how long to wait, and every reason to give up."""

from __future__ import annotations

import random
from collections.abc import Callable

import httpx
import pytest

from antifragile import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigurationError,
    Constant,
    FakeClock,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    Policy,
    RateLimitedError,
    Retry,
    RetryBudget,
    RetryBudgetExhaustedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from antifragile.observability import GaveUp, RecordingObserver, RetryScheduled
from antifragile.policies import RetryDecision, default_retry_on

RNG = random.Random(0)


def _decide(
    retry: Retry,
    exc: BaseException,
    *,
    attempt: int = 1,
    remaining: float | None = None,
    replay_safe: bool = True,
) -> RetryDecision:
    return retry.decide(
        exc,
        attempt=attempt,
        previous_delay=0.0,
        remaining=remaining,
        rng=RNG,
        replay_safe=replay_safe,
    )


# -- what is retried --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        UpstreamUnavailableError("503"),
        UpstreamTimeoutError("read"),
        NetworkError("reset"),
        RateLimitedError("429"),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        TimeoutError(),
        ConnectionResetError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_default_retry_on_accepts_transient_failures(exc: BaseException) -> None:
    """5xx, timeouts, network errors and 429s (ours or httpx's or builtin) are retried."""
    assert default_retry_on(exc)


@pytest.mark.parametrize(
    "exc",
    [
        NotFoundError("404"),
        InvalidRequestError("400"),
        CircuitOpenError("open"),
        BulkheadFullError("full"),
        RetryBudgetExhaustedError("budget"),
        ValueError("bug"),
        KeyError("bug"),
        httpx.UnsupportedProtocol("ftp"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_default_retry_on_refuses_the_rest(exc: BaseException) -> None:
    """Permanent 4xx, local rejections and unknown exceptions are not retried."""
    assert not default_retry_on(exc)


def test_retry_on_accepts_types_tuples_and_predicates() -> None:
    """``retry_on`` may be an exception type, a tuple of types or a predicate."""
    assert Retry(retry_on=KeyError).should_retry(KeyError("k"))
    assert not Retry(retry_on=KeyError).should_retry(ValueError())
    assert Retry(retry_on=(KeyError, ValueError)).should_retry(ValueError())
    assert Retry(retry_on=lambda e: "again" in str(e)).should_retry(RuntimeError("again"))
    assert not Retry(retry_on=lambda e: "again" in str(e)).should_retry(RuntimeError("no"))


# -- decide -----------------------------------------------------------------------------------


def test_decide_retries_with_the_backoff_delay() -> None:
    """A retryable failure with attempts left gets the schedule's delay."""
    decision = _decide(Retry(attempts=3, backoff=Constant(1.5)), UpstreamUnavailableError("x"))
    assert decision == RetryDecision(1.5)


def test_decide_gives_up_on_a_failure_that_is_not_retryable() -> None:
    """``not_retryable``: a permanent error ends the loop at once."""
    decision = _decide(Retry(), NotFoundError("x"))
    assert decision == RetryDecision(None, "not_retryable")


def test_decide_gives_up_when_replay_is_unsafe() -> None:
    """``unsafe_to_replay``: a request that may have had its effect is not re-sent."""
    error = UpstreamTimeoutError("read", replay_safe=False)
    assert _decide(Retry(), error).give_up == "unsafe_to_replay"
    # for exceptions outside the tree, the caller says whether replay is safe
    retry = Retry(retry_on=KeyError)
    assert _decide(retry, KeyError(), replay_safe=False).give_up == "unsafe_to_replay"
    assert _decide(retry, KeyError(), replay_safe=True).give_up is None


def test_transport_exceptions_sent_or_not_decide_replay_safety() -> None:
    """A connect error never reached the provider: it is retried even when replay is unsafe."""
    assert _decide(Retry(), httpx.ConnectError("refused"), replay_safe=False).give_up is None
    assert _decide(Retry(), httpx.PoolTimeout("pool"), replay_safe=False).give_up is None
    read = _decide(Retry(), httpx.ReadTimeout("slow"), replay_safe=False)
    assert read.give_up == "unsafe_to_replay"
    assert _decide(Retry(), httpx.ReadTimeout("slow"), replay_safe=True).give_up is None


def test_the_error_replay_safety_wins_over_the_callers() -> None:
    """A failure known to have happened before sending is retried even for a POST."""
    error = NetworkError("connect refused", replay_safe=True)
    assert _decide(Retry(), error, replay_safe=False).give_up is None


def test_decide_gives_up_when_attempts_are_exhausted() -> None:
    """``attempts_exhausted``: ``attempts`` counts the first try too."""
    retry = Retry(attempts=3, backoff=Constant(0.0))
    assert _decide(retry, NetworkError("x"), attempt=2).give_up is None
    assert _decide(retry, NetworkError("x"), attempt=3).give_up == "attempts_exhausted"
    assert _decide(Retry(attempts=1), NetworkError("x")).give_up == "attempts_exhausted"


def test_decide_gives_up_when_the_wait_does_not_fit_the_deadline() -> None:
    """``deadline``: a back-off reaching past the deadline ends the loop."""
    retry = Retry(backoff=Constant(5.0))
    assert _decide(retry, NetworkError("x"), remaining=5.0).give_up == "deadline"
    assert _decide(retry, NetworkError("x"), remaining=5.1) == RetryDecision(5.0)


def test_decide_uses_retry_after_as_the_delay() -> None:
    """The provider's ``Retry-After`` replaces the back-off."""
    retry = Retry(backoff=Constant(0.1))
    decision = _decide(retry, RateLimitedError("429", retry_after=7.0), remaining=60.0)
    assert decision == RetryDecision(7.0, from_retry_after=True)
    decision = _decide(retry, UpstreamUnavailableError("503", retry_after=2.0))
    assert decision == RetryDecision(2.0, from_retry_after=True)
    decision = _decide(retry, RateLimitedError("429", retry_after=0.0))
    assert decision == RetryDecision(0.0, from_retry_after=True)


def test_decide_without_retry_after_uses_the_backoff() -> None:
    """A 429 without ``Retry-After`` waits the schedule's delay."""
    retry = Retry(backoff=Constant(0.3))
    assert _decide(retry, RateLimitedError("429")) == RetryDecision(0.3)


def test_decide_can_ignore_retry_after() -> None:
    """``respect_retry_after=False`` uses the back-off whatever the provider said."""
    retry = Retry(backoff=Constant(0.3), respect_retry_after=False)
    assert _decide(retry, RateLimitedError("429", retry_after=100.0)) == RetryDecision(0.3)


def test_decide_gives_up_when_retry_after_is_beyond_the_deadline() -> None:
    """``retry_after_beyond_deadline``: waiting longer than the deadline is pointless."""
    retry = Retry()
    decision = _decide(retry, RateLimitedError("429", retry_after=30.0), remaining=10.0)
    assert decision == RetryDecision(None, "retry_after_beyond_deadline", from_retry_after=True)


def test_decide_gives_up_when_retry_after_equals_the_time_left() -> None:
    """A wait that ends exactly at the deadline leaves no time for the next attempt: give up
    at once with the rate-limit error rather than sleep the whole deadline."""
    retry = Retry(attempts=5)
    decision = _decide(retry, RateLimitedError("429", retry_after=10.0), remaining=10.0)
    assert decision == RetryDecision(None, "retry_after_beyond_deadline", from_retry_after=True)


def test_decide_gives_up_when_retry_after_exceeds_max_retry_after() -> None:
    """``max_retry_after`` bounds the wait even without a deadline."""
    retry = Retry(max_retry_after=5.0)
    decision = _decide(retry, RateLimitedError("429", retry_after=6.0))
    assert decision.give_up == "retry_after_beyond_deadline"
    assert _decide(retry, RateLimitedError("429", retry_after=5.0)).delay == 5.0


def test_reasons_are_checked_in_order() -> None:
    """Not retryable beats unsafe, which beats attempts, which beats the deadline."""
    retry = Retry(attempts=1, backoff=Constant(10.0))
    unsafe = UpstreamTimeoutError("x", replay_safe=False)
    assert _decide(retry, NotFoundError("x", replay_safe=False)).give_up == "not_retryable"
    assert _decide(retry, unsafe, remaining=1.0).give_up == "unsafe_to_replay"
    assert _decide(retry, NetworkError("x"), remaining=1.0).give_up == "attempts_exhausted"


@pytest.mark.parametrize(
    "make",
    [
        lambda: Retry(attempts=0),
        lambda: Retry(attempts=-1),
        lambda: Retry(attempts=2.5),  # type: ignore[arg-type]
        lambda: Retry(deadline=0),
        lambda: Retry(deadline=-1.0),
        lambda: Retry(max_retry_after=-1.0),
    ],
)
def test_invalid_retry_configuration_is_rejected(make: Callable[[], Retry]) -> None:
    """Fewer than one attempt, non-positive deadlines and negative caps are misuse."""
    with pytest.raises(ConfigurationError):
        make()


# -- Retry-After end to end -------------------------------------------------------------------


def _policy(clock: FakeClock, recorder: RecordingObserver | None = None, **kw: object) -> Policy:
    options: dict[str, object] = {
        "timeout": None,
        "total_timeout": 60.0,
        "retry": Retry(attempts=4, backoff=Constant(0.5)),
        "breaker": None,
        "budget": None,
        "clock": clock,
        "observer": recorder,
    }
    options.update(kw)
    return Policy("crm", **options)  # type: ignore[arg-type]


def test_policy_waits_exactly_retry_after(clock: FakeClock, recorder: RecordingObserver) -> None:
    """A 429 with ``Retry-After: 7`` is retried after exactly 7 seconds, not the back-off."""
    calls: list[float] = []

    def send() -> str:
        calls.append(clock.monotonic())
        if len(calls) == 1:
            raise RateLimitedError("429", retry_after=7.0)
        return "sent"

    assert _policy(clock, recorder).call(send) == "sent"
    assert clock.sleeps == [7.0]
    assert calls[1] - calls[0] == 7.0
    (scheduled,) = recorder.of(RetryScheduled)
    assert scheduled.from_retry_after is True
    assert scheduled.delay == 7.0


def test_retry_after_beyond_the_deadline_gives_up_at_once(clock: FakeClock) -> None:
    """The caller gets the 429 error itself, ``retry_after`` set, with no wait at all."""
    error = RateLimitedError("429", provider="resend", retry_after=600.0)
    calls = 0

    def send() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(RateLimitedError) as caught:
        _policy(clock).call(send)
    assert caught.value is error
    assert caught.value.retry_after == 600.0
    assert caught.value.give_up_reason == "retry_after_beyond_deadline"
    assert len(caught.value.attempts) == 1
    assert calls == 1
    assert clock.sleeps == []


async def test_retry_after_beyond_the_deadline_gives_up_at_once_async(clock: FakeClock) -> None:
    """The async runner, too, hands back the 429 at once so a durable job can reschedule."""
    error = RateLimitedError("429", retry_after=90.0)

    async def send() -> None:
        raise error

    with pytest.raises(RateLimitedError) as caught:
        await _policy(clock).acall(send)
    assert caught.value is error
    assert caught.value.retry_after == 90.0
    assert caught.value.give_up_reason == "retry_after_beyond_deadline"
    assert clock.sleeps == []


def test_retry_after_equal_to_the_time_left_gives_up_at_once(clock: FakeClock) -> None:
    """``Retry-After`` equal to what is left of the total timeout: no sleep, no
    DeadlineExceededError -- the caller gets the 429 itself with its ``retry_after``."""
    error = RateLimitedError("429", provider="resend", retry_after=60.0)

    def send() -> None:
        raise error

    with pytest.raises(RateLimitedError) as caught:
        _policy(clock, total_timeout=60.0).call(send)
    assert caught.value is error
    assert caught.value.retry_after == 60.0
    assert caught.value.give_up_reason == "retry_after_beyond_deadline"
    assert clock.sleeps == []


async def test_retry_after_equal_to_the_time_left_gives_up_at_once_async(
    clock: FakeClock,
) -> None:
    """The same in async code, after time has passed: 20 s into a 60 s budget, a
    ``Retry-After: 40`` ends the loop at once."""
    error = RateLimitedError("429", retry_after=40.0)
    calls = 0

    async def send() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            clock.advance(20.0)
            raise UpstreamUnavailableError("503", retry_after=0.0)
        raise error

    with pytest.raises(RateLimitedError) as caught:
        await _policy(clock, total_timeout=60.0).acall(send)
    assert caught.value is error
    assert caught.value.retry_after == 40.0
    assert clock.sleeps == [0.0]


def test_retry_deadline_bounds_the_loop(clock: FakeClock) -> None:
    """``Retry(deadline=)`` applies even without a total timeout."""

    def send() -> None:
        raise NetworkError("reset")

    policy = _policy(
        clock, total_timeout=None, retry=Retry(attempts=100, backoff=Constant(2.0), deadline=5.0)
    )
    with pytest.raises(NetworkError) as caught:
        policy.call(send)
    assert caught.value.give_up_reason == "deadline"
    assert clock.sleeps == [2.0, 2.0]
    assert len(caught.value.attempts) == 3


GIVE_UPS: list[tuple[str, BaseException, dict[str, object]]] = [
    ("not_retryable", NotFoundError("404"), {}),
    ("unsafe_to_replay", UpstreamTimeoutError("read", replay_safe=False), {}),
    ("attempts_exhausted", NetworkError("reset"), {}),
    ("deadline", NetworkError("reset"), {"retry": Retry(attempts=9, backoff=Constant(40.0))}),
    ("retry_after_beyond_deadline", RateLimitedError("429", retry_after=61.0), {}),
    ("retry_budget_exhausted", NetworkError("reset"), {"budget": "empty"}),
]


@pytest.mark.parametrize(
    ("reason", "error", "options"), GIVE_UPS, ids=[reason for reason, _, _ in GIVE_UPS]
)
def test_every_give_up_reason_reaches_the_caller_and_the_observer(
    clock: FakeClock, reason: str, error: BaseException, options: dict[str, object]
) -> None:
    """Each documented reason ends a real loop: on the raised error and in ``GaveUp``."""
    recorder = RecordingObserver()
    if options.get("budget") == "empty":
        options = {"budget": RetryBudget(0.0, min_retries_per_second=0.0, clock=clock)}

    def send() -> None:
        raise error

    with pytest.raises(type(error)) as caught:
        _policy(clock, recorder, **options).call(send)
    assert caught.value is error
    assert caught.value.give_up_reason == reason  # type: ignore[attr-defined]
    (gave_up,) = recorder.of(GaveUp)
    assert gave_up.reason == reason
