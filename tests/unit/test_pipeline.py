"""Policy end to end: plain functions failing in scripted ways, through every strategy."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from antifragile import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    Constant,
    DeadlineExceededError,
    Exponential,
    FakeClock,
    Fallback,
    Hedge,
    NetworkError,
    NotFoundError,
    Policy,
    RateLimitedError,
    Retry,
    RetryBudget,
    StaleCache,
    TokenBucket,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    request_context,
    resilient,
)
from antifragile.errors import ErrorEnvelope, SuccessEnvelope
from antifragile.observability import (
    AttemptFinished,
    BreakerTransition,
    CallRejected,
    Event,
    GaveUp,
    HedgeStarted,
    RecordingObserver,
    RetryScheduled,
)
from antifragile.policies import DEFAULT_ORDER, CircuitState, time_remaining


def _policy(clock: FakeClock, recorder: RecordingObserver | None = None, **kw: Any) -> Policy:
    """A policy with only what a test asks for, on the fake clock."""
    options: dict[str, Any] = {
        "timeout": None,
        "total_timeout": 60.0,
        "retry": Retry(attempts=3, backoff=Constant(1.0)),
        "budget": None,
        "breaker": None,
        "clock": clock,
        "observer": recorder,
    }
    options.update(kw)
    return Policy("crm", **options)


class Script:
    """A plain function whose successive calls raise or return what the test scripted.

    The last outcome repeats once the script runs out.
    """

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def _next(self) -> Any:
        self.calls += 1
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def __call__(self) -> Any:
        return self._next()

    async def acall(self) -> Any:
        await asyncio.sleep(0)
        return self._next()


def _kinds(recorder: RecordingObserver) -> list[str]:
    return [event.kind for event in recorder.events]


# -- retrying ---------------------------------------------------------------------------------


def test_retries_then_succeeds(clock: FakeClock) -> None:
    """Two transient failures, then success: the caller gets the result after two waits."""
    script = Script(UpstreamUnavailableError("503"), NetworkError("reset"), "created")
    assert _policy(clock).call(script) == "created"
    assert script.calls == 3
    assert clock.sleeps == [1.0, 1.0]


async def test_retries_then_succeeds_async(clock: FakeClock) -> None:
    """The async runner retries the same way, sleeping on the injected clock."""
    script = Script(UpstreamUnavailableError("503"), NetworkError("reset"), "created")
    assert await _policy(clock).acall(script.acall) == "created"
    assert script.calls == 3
    assert clock.sleeps == [1.0, 1.0]


def _check_history(error: BaseException, clock: FakeClock) -> None:
    attempts = error.attempts  # type: ignore[attr-defined]
    assert [a.number for a in attempts] == [1, 2, 3]
    assert [a.code for a in attempts] == ["UPSTREAM_UNAVAILABLE", "TIMEOUT", "NETWORK"]
    assert [a.status for a in attempts] == [503, None, None]
    assert [a.delay for a in attempts] == [1.0, 1.0, None]
    start = clock.time() - 2.0
    assert [a.started_at for a in attempts] == [start, start + 1.0, start + 2.0]
    assert error.give_up_reason == "attempts_exhausted"  # type: ignore[attr-defined]
    assert any("gave up after 3 attempt(s)" in note for note in error.__notes__)
    assert error.__cause__ is None  # not wrapped, not chained


def test_caller_receives_the_last_error_itself_with_its_history(clock: FakeClock) -> None:
    """When attempts run out the last exception propagates, with ``.attempts`` and a reason."""
    last = NetworkError("reset", provider="crm")
    script = Script(
        UpstreamUnavailableError("HTTP 503", status=503), UpstreamTimeoutError("t"), last
    )
    with pytest.raises(NetworkError) as caught:
        _policy(clock).call(script)
    assert caught.value is last
    _check_history(caught.value, clock)
    assert "after 3 attempts" in str(caught.value)


async def test_caller_receives_the_last_error_itself_with_its_history_async(
    clock: FakeClock,
) -> None:
    """The async runner hands back the last exception the same way."""
    last = NetworkError("reset")
    script = Script(
        UpstreamUnavailableError("HTTP 503", status=503), UpstreamTimeoutError("t"), last
    )
    with pytest.raises(NetworkError) as caught:
        await _policy(clock).acall(script.acall)
    assert caught.value is last
    _check_history(caught.value, clock)


def test_non_retryable_errors_raise_at_once(clock: FakeClock) -> None:
    """A permanent error is not retried: one call, no wait, reason ``not_retryable``."""
    error = NotFoundError("404")
    script = Script(error)
    with pytest.raises(NotFoundError) as caught:
        _policy(clock).call(script)
    assert caught.value is error
    assert script.calls == 1
    assert clock.sleeps == []
    assert caught.value.give_up_reason == "not_retryable"
    assert len(caught.value.attempts) == 1


def test_unknown_exceptions_are_not_retried(clock: FakeClock) -> None:
    """A bug in the called code propagates untouched after one call."""
    bug = ZeroDivisionError("division by zero")
    script = Script(bug)
    with pytest.raises(ZeroDivisionError) as caught:
        _policy(clock).call(script)
    assert caught.value is bug
    assert script.calls == 1
    assert caught.value.attempts[0].code == "INTERNAL"  # type: ignore[attr-defined]


def test_transport_exceptions_are_retried_as_they_are(clock: FakeClock) -> None:
    """httpx's own exceptions are classified for the decision and re-raised unchanged."""
    error = httpx.ConnectError("refused")
    script = Script(error)
    with pytest.raises(httpx.ConnectError) as caught:
        _policy(clock).call(script)
    assert caught.value is error
    assert script.calls == 3
    assert [a.code for a in caught.value.attempts] == ["NETWORK"] * 3  # type: ignore[attr-defined]


def test_unsafe_calls_retry_only_failures_before_sending(clock: FakeClock) -> None:
    """With ``replay_safe=False`` a connect error is retried, a read timeout is not."""
    policy = _policy(clock)
    connect = Script(httpx.ConnectError("refused"), "ok")
    assert policy.run(connect, replay_safe=False) == "ok"
    assert connect.calls == 2
    read = Script(httpx.ReadTimeout("slow"), "ok")
    with pytest.raises(httpx.ReadTimeout) as caught:
        policy.run(read, replay_safe=False)
    assert read.calls == 1
    assert caught.value.give_up_reason == "unsafe_to_replay"  # type: ignore[attr-defined]


def test_total_timeout_bounds_the_retries(clock: FakeClock) -> None:
    """No wait is started that would end past the total timeout: reason ``deadline``."""
    policy = _policy(clock, total_timeout=15.0, retry=Retry(attempts=10, backoff=Constant(10.0)))
    script = Script(NetworkError("reset"))
    with pytest.raises(NetworkError) as caught:
        policy.call(script)
    assert script.calls == 2
    assert clock.sleeps == [10.0]
    assert caught.value.give_up_reason == "deadline"


def test_retry_budget_ends_a_retry_storm(clock: FakeClock, recorder: RecordingObserver) -> None:
    """When the shared budget is spent, the loop stops with ``retry_budget_exhausted``."""
    budget = RetryBudget(0.0, min_retries_per_second=0.1, window=10.0, clock=clock)
    policy = _policy(clock, recorder, budget=budget)
    script = Script(NetworkError("reset"))
    with pytest.raises(NetworkError) as caught:
        policy.call(script)
    assert script.calls == 2
    assert caught.value.give_up_reason == "retry_budget_exhausted"
    (rejected,) = recorder.of(CallRejected)
    assert rejected.by == "retry_budget"
    assert budget.usage() == (1, 1)


# -- timeouts ---------------------------------------------------------------------------------


async def _forever() -> None:
    await asyncio.sleep(30)


class Endless:
    """An async call that never returns by itself; records that it was cancelled."""

    def __init__(self) -> None:
        self.cancelled = False

    async def __call__(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_total_timeout_raises_deadline_exceeded_async(clock: FakeClock) -> None:
    """A call still running at the total timeout is cancelled: ``DeadlineExceededError`` (the
    call never ends by itself, so the error can only come from the timeout cancelling it)."""
    policy = _policy(clock, total_timeout=0.03, retry=None)
    endless = Endless()
    with pytest.raises(DeadlineExceededError) as caught:
        await policy.acall(endless)
    assert endless.cancelled
    assert caught.value.code == "DEADLINE_EXCEEDED"
    assert caught.value.provider == "crm"
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0  # the timeout left no cancel behind


async def test_total_timeout_shorter_than_the_attempt_timeout(clock: FakeClock) -> None:
    """When the total deadline comes first, the attempt ends with ``DeadlineExceededError``."""
    policy = _policy(clock, timeout=5.0, total_timeout=0.03, retry=None)
    with pytest.raises(DeadlineExceededError):
        await policy.acall(_forever)


async def test_attempt_timeout_raises_upstream_timeout_async(clock: FakeClock) -> None:
    """An attempt running past ``timeout`` is cancelled and becomes ``UpstreamTimeoutError``."""
    policy = _policy(clock, timeout=0.03, total_timeout=None, retry=None)
    with pytest.raises(UpstreamTimeoutError) as caught:
        await policy.acall(_forever)
    assert caught.value.code == "TIMEOUT"
    assert "0.03s" in str(caught.value)
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0


async def test_timed_out_attempt_is_retried(clock: FakeClock) -> None:
    """An attempt timeout is transient: the next attempt may succeed."""
    calls = 0

    async def slow_then_fast() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(30)
        return "fast"

    policy = _policy(clock, timeout=0.03, retry=Retry(attempts=2, backoff=Constant(0.5)))
    assert await policy.acall(slow_then_fast) == "fast"
    assert clock.sleeps == [0.5]


async def test_cancelling_the_caller_is_not_a_timeout(clock: FakeClock) -> None:
    """Cancellation from outside propagates as cancellation, not as a timeout error."""
    policy = _policy(clock, timeout=10.0, total_timeout=20.0)
    task = asyncio.create_task(policy.acall(_forever))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_deadline_without_a_total_timeout_async(clock: FakeClock) -> None:
    """A deadline from ``Retry(deadline=)`` alone still ends the call as deadline exceeded."""
    policy = _policy(clock, timeout=5.0, total_timeout=None, retry=Retry(attempts=1, deadline=0.03))
    with pytest.raises(DeadlineExceededError) as caught:
        await policy.acall(_forever)
    assert caught.value.code == "DEADLINE_EXCEEDED"


def test_sync_attempt_timeout_with_a_thread(clock: FakeClock) -> None:
    """``timeout_strategy="thread"`` abandons a sync call that overruns its attempt timeout:
    the error comes while the call is still blocked (it ends only when released, after)."""
    release = threading.Event()
    finished = threading.Event()

    def blocked() -> None:
        release.wait(60.0)
        finished.set()

    policy = _policy(clock, timeout=0.03, retry=None, timeout_strategy="thread")
    try:
        with pytest.raises(UpstreamTimeoutError):
            policy.call(blocked)
        assert not finished.is_set()
    finally:
        release.set()
        policy.close()


def test_sync_thread_timeout_returns_results_and_sees_the_deadline(clock: FakeClock) -> None:
    """A call that finishes in time returns normally and can read ``time_remaining()``."""
    policy = _policy(clock, timeout=2.0, retry=None, timeout_strategy="thread")
    try:
        assert policy.call(time_remaining) == 2.0
    finally:
        policy.close()


def test_sync_deadline_already_passed_in_a_nested_call(clock: FakeClock) -> None:
    """A nested call started after the outer deadline fails at once as deadline exceeded."""
    outer = _policy(clock, total_timeout=5.0, retry=None)
    inner = _policy(clock, timeout=10.0, total_timeout=None, retry=None)
    never = Script("never")

    def late() -> str:
        clock.advance(6.0)
        return inner.call(never)  # type: ignore[no-any-return]

    with pytest.raises(DeadlineExceededError):
        outer.call(late)
    assert never.calls == 0


# -- time_remaining ---------------------------------------------------------------------------


def test_time_remaining_is_none_outside_a_call() -> None:
    """No call in progress: no deadline."""
    assert time_remaining() is None


def test_time_remaining_inside_a_call(clock: FakeClock) -> None:
    """Inside the call the nearest deadline shows: the attempt's, else the whole call's."""
    assert _policy(clock, timeout=10.0, total_timeout=60.0).call(time_remaining) == 10.0
    assert _policy(clock, timeout=None, total_timeout=60.0).call(time_remaining) == 60.0
    assert _policy(clock, timeout=None, total_timeout=None, retry=None).call(time_remaining) is None
    assert _policy(clock, timeout=30.0, total_timeout=20.0).call(time_remaining) == 20.0


def test_time_remaining_shrinks_across_attempts(clock: FakeClock) -> None:
    """Each attempt sees what is left of the total after the waits before it."""
    seen: list[float | None] = []

    def attempt() -> None:
        seen.append(time_remaining())
        raise NetworkError("reset")

    policy = _policy(clock, total_timeout=60.0, retry=Retry(attempts=3, backoff=Constant(5.0)))
    with pytest.raises(NetworkError):
        policy.call(attempt)
    assert seen == [60.0, 55.0, 50.0]


def test_nested_policy_calls_inherit_the_outer_deadline(clock: FakeClock) -> None:
    """An inner call never outlives the outer one; a tighter inner deadline still applies."""
    outer = _policy(clock, total_timeout=30.0, retry=None)
    loose = _policy(clock, total_timeout=60.0, retry=None)
    tight = _policy(clock, total_timeout=10.0, retry=None)

    def work() -> tuple[float | None, float | None]:
        clock.advance(5.0)
        return loose.call(time_remaining), tight.call(time_remaining)

    assert outer.call(work) == (25.0, 10.0)
    assert time_remaining() is None


def test_nested_calls_inherit_the_outer_attempt_deadline(clock: FakeClock) -> None:
    """The outer attempt's timeout bounds the inner call too."""
    outer = _policy(clock, timeout=8.0, total_timeout=30.0, retry=None)
    inner = _policy(clock, total_timeout=60.0, retry=None)

    def work() -> float | None:
        clock.advance(3.0)
        return inner.call(time_remaining)

    assert outer.call(work) == 5.0


async def test_time_remaining_async_and_nested(clock: FakeClock) -> None:
    """The deadline follows ``await`` and reaches nested async policy calls."""
    outer = _policy(clock, total_timeout=30.0, retry=None)
    inner = _policy(clock, total_timeout=60.0, retry=None)

    async def remaining() -> float | None:
        await asyncio.sleep(0)
        return time_remaining()

    async def work() -> tuple[float | None, float | None]:
        mine = time_remaining()
        clock.advance(4.0)
        return mine, await inner.acall(remaining)

    assert await outer.acall(work) == (30.0, 26.0)


# -- hedging ----------------------------------------------------------------------------------


class HedgeTarget:
    """An async call whose first copy hangs and whose later copies answer at once."""

    def __init__(self, first: str = "hang") -> None:
        self.first = first
        self.calls = 0
        self.cancelled = 0

    async def __call__(self) -> str:
        self.calls += 1
        number = self.calls
        try:
            if number == 1 and self.first == "hang":
                await asyncio.sleep(30)
            if number == 1 and self.first == "fail":
                raise NetworkError("reset")
            if number == 1 and self.first == "slow":
                await asyncio.sleep(0.06)
                return "slow"
            return f"copy {number}"
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_hedge_launches_a_copy_after_the_delay_and_the_first_success_wins(
    clock: FakeClock, recorder: RecordingObserver
) -> None:
    """A slow call gets a copy after ``delay``; the copy's answer wins, the original stops."""
    target = HedgeTarget("hang")
    policy = _policy(clock, recorder, retry=None, hedge=Hedge(delay=0.02))
    assert await policy.acall(target) == "copy 2"
    assert target.calls == 2
    await asyncio.sleep(0)
    assert target.cancelled == 1
    (started,) = recorder.of(HedgeStarted)
    assert (started.number, started.after) == (1, 0.02)


async def test_hedge_starts_a_copy_at_once_when_an_attempt_fails(clock: FakeClock) -> None:
    """A failed attempt does not wait for the delay before its copy starts: with a delay of an
    hour, the copy's answer arrives at all only because it started at once."""
    target = HedgeTarget("fail")
    policy = _policy(clock, retry=None, hedge=Hedge(delay=3600.0))
    assert await asyncio.wait_for(policy.acall(target), 60) == "copy 2"
    assert target.calls == 2


async def test_hedge_raises_the_last_error_when_every_copy_fails(clock: FakeClock) -> None:
    """With all copies failed, the caller gets an error from them, not a wrapper."""
    script = Script(NetworkError("first"), NetworkError("second"))
    policy = _policy(clock, retry=None, hedge=Hedge(delay=10.0, max_hedges=1))
    with pytest.raises(NetworkError) as caught:
        await policy.acall(script.acall)
    assert script.calls == 2
    assert str(caught.value) == "second"


async def test_calls_unsafe_to_replay_are_not_hedged(clock: FakeClock) -> None:
    """A non-idempotent call is never duplicated by hedging."""
    target = HedgeTarget("slow")
    policy = _policy(clock, retry=None, hedge=Hedge(delay=0.01))
    assert await policy.arun(target, replay_safe=False) == "slow"
    assert target.calls == 1


async def test_hedges_spend_the_retry_budget(clock: FakeClock) -> None:
    """No budget left: no hedged copy."""
    budget = RetryBudget(0.0, min_retries_per_second=0.0, clock=clock)
    target = HedgeTarget("slow")
    policy = _policy(clock, retry=None, budget=budget, hedge=Hedge(delay=0.01))
    assert await policy.acall(target) == "slow"
    assert target.calls == 1


def test_sync_runner_does_not_hedge(clock: FakeClock) -> None:
    """Hedging is async only: a sync call through a hedging policy runs once."""
    script = Script("only")
    assert _policy(clock, hedge=Hedge(delay=0.0)).call(script) == "only"
    assert script.calls == 1


# -- events -----------------------------------------------------------------------------------


def test_events_are_emitted_in_order(clock: FakeClock, recorder: RecordingObserver) -> None:
    """Each attempt, each scheduled retry, in the order they happen, with the request id."""
    script = Script(UpstreamUnavailableError("503", status=503), NetworkError("reset"), "ok")
    with request_context("rid-1"):
        _policy(clock, recorder).run(script, operation="create_contact")
    assert _kinds(recorder) == [
        "AttemptFinished",
        "RetryScheduled",
        "AttemptFinished",
        "RetryScheduled",
        "AttemptFinished",
    ]
    attempts: list[AttemptFinished] = recorder.of(AttemptFinished)
    assert [(a.number, a.code, a.status) for a in attempts] == [
        (1, "UPSTREAM_UNAVAILABLE", 503),
        (2, "NETWORK", None),
        (3, None, None),
    ]
    retries: list[RetryScheduled] = recorder.of(RetryScheduled)
    assert [(r.number, r.delay, r.code) for r in retries] == [
        (1, 1.0, "UPSTREAM_UNAVAILABLE"),
        (2, 1.0, "NETWORK"),
    ]
    for event in recorder.events:
        assert (event.policy, event.operation, event.request_id) == (
            "crm",
            "create_contact",
            "rid-1",
        )


def test_giving_up_is_an_event(clock: FakeClock, recorder: RecordingObserver) -> None:
    """The last event of a failed call says why retrying stopped."""
    with pytest.raises(NetworkError):
        _policy(clock, recorder, retry=Retry(attempts=2, backoff=Constant(1.0))).call(
            Script(NetworkError("reset"))
        )
    assert _kinds(recorder) == ["AttemptFinished", "RetryScheduled", "AttemptFinished", "GaveUp"]
    (gave_up,) = recorder.of(GaveUp)
    assert (gave_up.attempts, gave_up.reason, gave_up.code) == (2, "attempts_exhausted", "NETWORK")


def test_breaker_events_interleave_with_attempts(
    clock: FakeClock, recorder: RecordingObserver
) -> None:
    """A failure opens the breaker; the retry is then refused without reaching the provider."""
    breaker = CircuitBreaker(minimum_calls=1, window=1, open_duration=30.0)
    policy = _policy(clock, recorder, breaker=breaker)
    script = Script(UpstreamUnavailableError("503"))
    with pytest.raises(CircuitOpenError) as caught:
        policy.call(script)
    assert script.calls == 1
    assert _kinds(recorder) == [
        "AttemptFinished",
        "BreakerTransition",
        "RetryScheduled",
        "CallRejected",
        "GaveUp",
    ]
    assert caught.value.give_up_reason == "not_retryable"
    assert [a.code for a in caught.value.attempts] == ["UPSTREAM_UNAVAILABLE", "CIRCUIT_OPEN"]
    (transition,) = recorder.of(BreakerTransition)
    assert transition.policy == "crm"


def test_a_failing_observer_never_breaks_the_call(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An observer that raises is logged and ignored; the other observers still get events."""

    class Broken:
        def on_event(self, event: Event) -> None:
            raise RuntimeError("observer bug")

    recorder = RecordingObserver()
    policy = _policy(clock, observer=[Broken(), recorder])
    with caplog.at_level(logging.ERROR, logger="antifragile.events"):
        assert policy.call(Script(NetworkError("x"), "ok")) == "ok"
    assert len(recorder.events) == 3
    assert "observer bug" in caplog.text


def test_add_observer_applies_to_later_calls(clock: FakeClock) -> None:
    """An observer added after calls were made sees the calls made after it."""
    policy = _policy(clock)
    policy.call(Script("a"))
    recorder = RecordingObserver()
    policy.add_observer(recorder)
    policy.call(Script("b"))
    assert _kinds(recorder) == ["AttemptFinished"]


# -- decorator and call forms -----------------------------------------------------------------


def test_decorator_on_a_sync_function_keeps_its_identity(clock: FakeClock) -> None:
    """The wrapper has the function's name, doc, signature and ``__wrapped__``."""
    policy = _policy(clock)

    def lookup(customer_id: int, *, verbose: bool = False) -> dict[str, int]:
        """Find a customer."""
        return {"id": customer_id, "verbose": int(verbose)}

    wrapped = policy(lookup)
    assert wrapped(3, verbose=True) == {"id": 3, "verbose": 1}
    assert wrapped.__name__ == "lookup"
    assert wrapped.__doc__ == "Find a customer."
    assert inspect.signature(wrapped) == inspect.signature(lookup)
    assert wrapped.__wrapped__ is lookup  # type: ignore[attr-defined]
    assert not inspect.iscoroutinefunction(wrapped)


async def test_decorator_on_an_async_function_stays_a_coroutine_function(
    clock: FakeClock, recorder: RecordingObserver
) -> None:
    """An async function stays awaitable, keeps its metadata and retries like any call."""
    policy = _policy(clock, recorder)
    script = Script(NetworkError("reset"), "sent")

    @policy
    async def send(to: str) -> str:
        """Send a message."""
        return f"{await script.acall()} to {to}"

    assert inspect.iscoroutinefunction(send)
    assert send.__doc__ == "Send a message."
    assert list(inspect.signature(send).parameters) == ["to"]
    assert await send("ann") == "sent to ann"
    operations = {event.operation for event in recorder.events}
    assert operations == {send.__qualname__}


def test_resilient_builds_or_returns_a_policy() -> None:
    """``resilient(**options)`` builds a policy; ``resilient(policy)`` is that policy."""
    policy = resilient(retry=None, breaker=None, timeout=None)
    assert isinstance(policy, Policy)
    assert policy.retry is None
    assert resilient(policy) is policy
    with pytest.raises(ConfigurationError):
        resilient(policy, retry=None)

    @resilient(retry=Retry(attempts=2), breaker=None)
    def ping() -> str:
        return "pong"

    assert ping() == "pong"


def test_call_safe_returns_envelopes(clock: FakeClock) -> None:
    """``call_safe`` gives a success envelope or, after the retries, an error envelope."""
    policy = _policy(clock)
    ok = policy.call_safe(Script(NetworkError("x"), {"id": 1}))
    assert isinstance(ok, SuccessEnvelope)
    assert ok.data == {"id": 1}
    failed = policy.call_safe(Script(NetworkError("reset")))
    assert isinstance(failed, ErrorEnvelope)
    assert (failed.error.code, failed.error.retryable) == ("NETWORK", True)
    bug = policy.call_safe(Script(KeyError("k")))
    assert isinstance(bug, ErrorEnvelope)
    assert bug.error.code == "INTERNAL"


async def test_acall_safe_returns_envelopes(clock: FakeClock) -> None:
    """``acall_safe`` never raises either."""
    policy = _policy(clock)
    ok = await policy.acall_safe(Script("v").acall)
    assert isinstance(ok, SuccessEnvelope)
    failed = await policy.acall_safe(Script(NotFoundError("404")).acall)
    assert isinstance(failed, ErrorEnvelope)
    assert failed.error.code == "NOT_FOUND"
    with request_context("rid-safe"):
        failed = await policy.acall_safe(Script(NotFoundError("404")).acall)
    assert failed.meta.request_id == "rid-safe"


def test_call_passes_arguments_through(clock: FakeClock) -> None:
    """Positional and keyword arguments reach the function unchanged."""

    def combine(a: int, b: int, *, c: int = 0) -> int:
        return a * 100 + b * 10 + c

    policy = _policy(clock)
    assert policy.call(combine, 1, 2, c=3) == 123
    assert policy.run(combine, (4, 5), {"c": 6}) == 456


# -- order ------------------------------------------------------------------------------------


def test_default_order() -> None:
    """The documented order, from the outside in."""
    assert DEFAULT_ORDER == (
        "fallback",
        "cache",
        "rate_limit",
        "total_timeout",
        "retry",
        "hedge",
        "bulkhead",
        "breaker",
        "attempt_timeout",
    )


def test_breaker_inside_retry_sees_every_attempt(clock: FakeClock) -> None:
    """In the default order the breaker records each attempt."""
    breaker = CircuitBreaker(minimum_calls=100, window=100)
    policy = _policy(clock, breaker=breaker)
    with pytest.raises(NetworkError):
        policy.call(Script(NetworkError("reset")))
    assert breaker.metrics()["calls"] == 3


def test_order_override_puts_the_breaker_outside_retry(clock: FakeClock) -> None:
    """With ``order=`` the breaker wraps the whole retry loop and records one call."""
    breaker = CircuitBreaker(minimum_calls=100, window=100)
    order = ("fallback", "breaker", "total_timeout", "retry", "attempt_timeout")
    policy = _policy(clock, breaker=breaker, order=order)
    with pytest.raises(NetworkError):
        policy.call(Script(NetworkError("reset")))
    assert breaker.metrics()["calls"] == 1
    assert repr(policy) == "Policy('crm', breaker -> total_timeout -> retry)"


def test_order_override_puts_the_fallback_inside_retry(clock: FakeClock) -> None:
    """A fallback inside the retry answers the first failure: nothing is retried."""
    script = Script(NetworkError("reset"), "late")
    policy = _policy(clock, fallback=Fallback(value="fallback"), order=("retry", "fallback"))
    assert policy.call(script) == "fallback"
    assert script.calls == 1


async def test_strategies_left_out_of_the_order_are_skipped(clock: FakeClock) -> None:
    """An order naming only some strategies runs only those, sync and async."""
    script = Script(NetworkError("reset"), "ok")
    policy = _policy(clock, timeout=5.0, order=("retry", "total_timeout"))
    assert await policy.acall(script.acall) == "ok"
    assert policy.call(Script(NetworkError("reset"), "ok")) == "ok"


# -- the other strategies in the pipeline -----------------------------------------------------


def test_open_breaker_fails_fast_without_calling(clock: FakeClock) -> None:
    """An open breaker rejects without touching the provider, and is not retried."""
    breaker = CircuitBreaker(minimum_calls=1, window=1)
    policy = _policy(clock, breaker=breaker)
    breaker.force_open()
    script = Script("never")
    with pytest.raises(CircuitOpenError):
        policy.call(script)
    assert script.calls == 0
    assert clock.sleeps == []


async def test_cancelled_probe_returns_its_permit(clock: FakeClock) -> None:
    """A half-open probe whose task is cancelled lets the next call probe instead."""
    breaker = CircuitBreaker(minimum_calls=1, window=1, open_duration=5.0, clock=clock)
    policy = _policy(clock, breaker=breaker, retry=None)
    with pytest.raises(NetworkError):
        await policy.acall(Script(NetworkError("x")).acall)
    clock.advance(5.0)
    probe = asyncio.create_task(policy.acall(_forever))
    await asyncio.sleep(0.01)
    assert breaker.snapshot.probes_left == 0
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert await policy.acall(Script("ok").acall) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_rate_limiter_waits_on_the_clock(clock: FakeClock) -> None:
    """The limiter admits each logical call once and sleeps on the policy's clock."""
    policy = _policy(clock, rate=TokenBucket(2.0, burst=1))
    for _ in range(3):
        policy.call(Script("ok"))
    assert clock.sleeps == [0.5, 0.5]


async def test_rate_limiter_waits_on_the_clock_async(clock: FakeClock) -> None:
    """The async limiter sleeps on the policy's clock too."""
    policy = _policy(clock, rate=TokenBucket(4.0, burst=1))
    for _ in range(2):
        await policy.acall(Script("ok").acall)
    assert clock.sleeps == [0.25]


def test_rate_limiter_rejection_reaches_the_caller(clock: FakeClock) -> None:
    """A wait beyond ``max_wait`` raises ``RateLimitedError`` with when to come back."""
    policy = _policy(clock, rate=TokenBucket(0.1, burst=1, max_wait=1.0))
    policy.call(Script("ok"))
    with pytest.raises(RateLimitedError) as caught:
        policy.call(Script("ok"))
    assert caught.value.retry_after == pytest.approx(10.0)


def test_bulkhead_slot_is_released_after_failures(clock: FakeClock) -> None:
    """Every attempt gives its slot back, whatever its outcome."""
    bulkhead = Bulkhead(1)
    policy = _policy(clock, bulkhead=bulkhead)
    with pytest.raises(NetworkError):
        policy.call(Script(NetworkError("reset")))
    assert bulkhead.in_use == 0
    with pytest.raises(ZeroDivisionError):
        policy.call(Script(ZeroDivisionError()))
    assert bulkhead.in_use == 0


async def test_full_bulkhead_rejects_without_retrying(clock: FakeClock) -> None:
    """A bulkhead rejection is a local refusal: it is not retried."""
    bulkhead = Bulkhead(1)
    policy = _policy(clock, bulkhead=bulkhead)
    bulkhead.try_acquire()
    script = Script("never")
    with pytest.raises(BulkheadFullError) as caught:
        await policy.acall(script.acall)
    assert script.calls == 0
    assert caught.value.give_up_reason == "not_retryable"


def test_policy_defaults() -> None:
    """Defaults: 10 s attempts, 60 s total, three attempts, a budget and a named breaker."""
    policy = Policy("shopify")
    assert (policy.timeout, policy.total_timeout) == (10.0, 60.0)
    assert policy.retry == Retry()
    assert isinstance(policy.budget, RetryBudget)
    assert policy.breaker is not None
    assert policy.breaker.name == "shopify"
    assert repr(policy) == (
        "Policy('shopify', total_timeout -> retry -> breaker -> attempt_timeout)"
    )
    assert Policy(retry=None).budget is None


def test_durations_accept_timedelta(clock: FakeClock) -> None:
    """Timeouts may be given as ``timedelta``."""
    policy = Policy(timeout=timedelta(seconds=2), total_timeout=timedelta(minutes=1))
    assert (policy.timeout, policy.total_timeout) == (2.0, 60.0)


def test_strategies_take_the_policys_name_clock_and_observer(
    clock: FakeClock, recorder: RecordingObserver
) -> None:
    """Strategies built without a name, clock or observer of their own use the policy's."""
    breaker = CircuitBreaker(minimum_calls=1, window=1, open_duration=30.0)
    rate = TokenBucket(1.0, burst=1)
    budget = RetryBudget(0.0, min_retries_per_second=0.1, window=10.0)
    cache = StaleCache(10.0)
    bulkhead = Bulkhead(1)
    Policy(
        "hubspot",
        breaker=breaker,
        rate=rate,
        budget=budget,
        cache=cache,
        bulkhead=bulkhead,
        clock=clock,
        observer=recorder,
    )
    assert breaker.name == rate.name == bulkhead.name == "hubspot"
    breaker.on_failure(breaker.acquire(), NetworkError("x"))
    assert recorder.of(BreakerTransition)
    clock.advance(30.0)
    assert breaker.state is CircuitState.HALF_OPEN
    rate.reserve()
    assert rate.reserve() == 1.0
    assert budget.try_spend()
    assert not budget.try_spend()
    clock.advance(10.0)
    assert budget.try_spend()
    cache.store("k", "v")
    clock.advance(4.0)
    assert cache.lookup("k") == ("v", 4.0)


def test_strategies_keep_a_clock_of_their_own(clock: FakeClock) -> None:
    """A strategy given its own clock keeps it."""
    own = FakeClock(start=0.0)
    rate = TokenBucket(1.0, burst=1, clock=own)
    _policy(clock, rate=rate)
    rate.reserve()
    clock.advance(100.0)  # the policy's clock moves, the bucket's own does not
    assert rate.available == 0.0


# -- misuse -----------------------------------------------------------------------------------

MISUSES: list[tuple[str, Callable[[], object]]] = [
    ("timeout=0", lambda: Policy(timeout=0)),
    ("timeout<0", lambda: Policy(timeout=-1.0)),
    ("total_timeout=0", lambda: Policy(total_timeout=timedelta(0))),
    ("timeout_strategy", lambda: Policy(timeout_strategy="process")),  # type: ignore[arg-type]
    ("duplicate order", lambda: Policy(order=("retry", "retry"))),
    ("unknown order", lambda: Policy(order=("retry", "bogus"))),  # type: ignore[arg-type]
    ("resilient both", lambda: resilient(Policy(), retry=None)),
    ("retry attempts", lambda: Retry(attempts=0)),
    ("hedge delay", lambda: Hedge(delay=-1.0)),
    ("hedge none", lambda: Hedge(max_hedges=0)),
    ("hedge many", lambda: Hedge(max_hedges=11)),
    ("hedge float", lambda: Hedge(max_hedges=1.5)),  # type: ignore[arg-type]
    ("bulkhead", lambda: Bulkhead(0)),
    ("token bucket", lambda: TokenBucket(0)),
    ("breaker", lambda: CircuitBreaker(failure_rate=2.0)),
    ("budget", lambda: RetryBudget(ratio=-1.0)),
    ("cache", lambda: StaleCache(-1.0)),
    ("fallback", lambda: Fallback()),
    ("backoff", lambda: Exponential(multiplier=0.5)),
]


@pytest.mark.parametrize("make", [m for _, m in MISUSES], ids=[name for name, _ in MISUSES])
def test_bad_arguments_raise_configuration_error(make: Callable[[], object]) -> None:
    """Every constructor refuses bad arguments with ``ConfigurationError`` (a ``ValueError``)."""
    with pytest.raises(ConfigurationError):
        make()
