"""Retrying a block of code: ``for attempt in policy.attempts(): with attempt: ...``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from antifragile import (
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    Constant,
    FakeClock,
    InvalidRequestError,
    NetworkError,
    Policy,
    RateLimitedError,
    Retry,
    RetryBudget,
    SharedCircuitBreaker,
    TokenBucket,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from antifragile.observability import AttemptFinished, GaveUp, RecordingObserver
from antifragile.policies import Attempt, CircuitState, time_remaining
from antifragile.stores._memory import MemoryStore


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


def _run(policy: Policy, body: Callable[[Attempt], object]) -> None:
    """``body(attempt)`` as the block of ``policy.attempts()``."""
    for attempt in policy.attempts():
        with attempt:
            body(attempt)


async def _arun(policy: Policy, body: Callable[[Attempt], Awaitable[object]]) -> None:
    """``await body(attempt)`` as the block of ``policy.attempts_async()``."""
    async for attempt in policy.attempts_async():
        with attempt:
            await body(attempt)


def _fail(error: BaseException) -> Callable[[Attempt], object]:
    def body(attempt: Attempt) -> None:
        raise error

    return body


def test_a_failing_block_is_retried_until_it_completes(clock: FakeClock) -> None:
    """Two transient failures are swallowed and retried after the back-off; the third attempt
    completes and ends the loop."""
    numbers: list[int] = []
    for attempt in _policy(clock).attempts():
        with attempt:
            numbers.append(attempt.number)
            if attempt.number < 3:
                raise UpstreamUnavailableError("503")
    assert numbers == [1, 2, 3]
    assert clock.sleeps == [0.5, 0.5]


def test_the_callers_own_last_exception_propagates(clock: FakeClock) -> None:
    """When the attempts run out, the block's own exception comes out, with its history."""
    errors = [NetworkError(f"reset {n}") for n in range(4)]

    def body(attempt: Attempt) -> None:
        raise errors[attempt.number - 1]

    with pytest.raises(NetworkError) as caught:
        _run(_policy(clock), body)
    assert caught.value is errors[-1]
    assert caught.value.give_up_reason == "attempts_exhausted"
    assert [a.number for a in caught.value.attempts] == [1, 2, 3, 4]
    assert clock.sleeps == [0.5] * 3


def test_a_permanent_failure_is_not_retried(clock: FakeClock) -> None:
    """A 422 leaves at once: no wait, one attempt."""
    error = InvalidRequestError("422")
    with pytest.raises(InvalidRequestError) as caught:
        _run(_policy(clock), _fail(error))
    assert caught.value is error
    assert clock.sleeps == []


def test_retry_after_sets_the_wait(clock: FakeClock) -> None:
    """A 429 with ``Retry-After: 7`` waits 7 s before the next attempt, not the back-off."""
    for attempt in _policy(clock).attempts():
        with attempt:
            if attempt.number == 1:
                raise RateLimitedError("429", retry_after=7.0)
    assert clock.sleeps == [7.0]


def test_the_deadline_bounds_the_loop_and_is_visible_inside(clock: FakeClock) -> None:
    """``total_timeout`` is published to the block and ends the loop when the next wait no
    longer fits (reason ``deadline``)."""
    seen: list[float | None] = []
    policy = _policy(clock, total_timeout=1.2, retry=Retry(attempts=10, backoff=Constant(0.5)))

    def body(attempt: Attempt) -> None:
        seen.append(time_remaining())
        raise NetworkError("reset")

    with pytest.raises(NetworkError) as caught:
        _run(policy, body)
    assert seen == [pytest.approx(1.2), pytest.approx(0.7), pytest.approx(0.2)]
    assert caught.value.give_up_reason == "deadline"
    assert time_remaining() is None  # nothing left published after the loop


def test_the_per_attempt_timeout_is_published_too(clock: FakeClock) -> None:
    """Inside the block, ``time_remaining()`` is the nearer of attempt timeout and deadline."""
    seen: list[float | None] = []
    for attempt in _policy(clock, timeout=2.0).attempts():
        with attempt:
            seen.append(time_remaining())
    assert seen == [pytest.approx(2.0)]


def test_an_open_breaker_stops_the_block_before_it_runs(clock: FakeClock) -> None:
    """An open breaker raises CircuitOpenError at ``with attempt``; the block never runs."""
    breaker = CircuitBreaker("crm", clock=clock)
    breaker.force_open()
    ran: list[int] = []
    with pytest.raises(CircuitOpenError):
        _run(_policy(clock, breaker=breaker), lambda attempt: ran.append(attempt.number))
    assert ran == []


def test_the_breaker_records_every_attempt(clock: FakeClock) -> None:
    """Failures and the final success reach the breaker's window; enough failures open it."""
    breaker = CircuitBreaker("crm", minimum_calls=3, failure_rate=0.5, clock=clock)
    policy = _policy(clock, breaker=breaker, retry=Retry(attempts=3))
    with pytest.raises(UpstreamUnavailableError):
        _run(policy, _fail(UpstreamUnavailableError("503")))
    assert breaker.state is CircuitState.OPEN


def test_an_empty_retry_budget_stops_retrying(clock: FakeClock) -> None:
    """The loop spends from the retry budget; without room it gives up at once."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.0, clock=clock)
    with pytest.raises(NetworkError) as caught:
        _run(_policy(clock, budget=budget), _fail(NetworkError("reset")))
    assert caught.value.give_up_reason == "retry_budget_exhausted"


def test_the_rate_limiter_admits_the_loop_once(clock: FakeClock) -> None:
    """One token for the whole loop, however many attempts it takes."""
    bucket = TokenBucket(1.0, burst=2.0, clock=clock)
    for attempt in _policy(clock, rate=bucket).attempts():
        with attempt:
            if attempt.number < 3:
                raise NetworkError("reset")
    assert bucket.available == pytest.approx(1.0 + 1.0)  # one taken, one refilled by the waits


def test_the_observer_sees_attempts_and_the_give_up(
    clock: FakeClock, recorder: RecordingObserver
) -> None:
    """One AttemptFinished per attempt and a GaveUp, as for a call."""
    with pytest.raises(NetworkError):
        _run(_policy(clock, recorder, retry=Retry(attempts=2)), _fail(NetworkError("reset")))
    assert [e.number for e in recorder.of(AttemptFinished)] == [1, 2]
    assert [g.reason for g in recorder.of(GaveUp)] == ["attempts_exhausted"]


def test_an_attempt_left_unused_ends_the_loop(clock: FakeClock) -> None:
    """A loop body that never enters its attempt runs once (it cannot have failed)."""
    count = 0
    for _attempt in _policy(clock).attempts():
        count += 1
    assert count == 1


def test_a_shared_breaker_needs_the_async_loop(clock: FakeClock) -> None:
    """A breaker kept in a store cannot be asked from sync code: a clear error at once."""
    breaker = SharedCircuitBreaker("crm", MemoryStore(clock=clock), clock=clock)
    with pytest.raises(ConfigurationError, match="attempts_async"):
        _policy(clock, breaker=breaker).attempts()


async def test_async_block_is_retried_with_awaited_waits(clock: FakeClock) -> None:
    """``async for`` retries the same way, awaiting the waits on the policy's clock."""
    numbers: list[int] = []
    async for attempt in _policy(clock).attempts_async():
        with attempt:
            numbers.append(attempt.number)
            if attempt.number < 2:
                raise UpstreamUnavailableError("503")
    assert numbers == [1, 2]
    assert clock.sleeps == [0.5]


async def test_async_attempt_timeout_cancels_a_hung_block() -> None:
    """In async code the attempt timeout is enforced: a hung block is cancelled, counted as a
    timeout and retried; after the last attempt the timeout error propagates."""
    policy = Policy("crm", timeout=0.02, retry=Retry(attempts=2, backoff=Constant(0.0)))
    started: list[int] = []

    async def body(attempt: Attempt) -> None:
        started.append(attempt.number)
        await asyncio.sleep(30)

    with pytest.raises(UpstreamTimeoutError) as caught:
        await _arun(policy, body)
    assert started == [1, 2]
    assert caught.value.give_up_reason == "attempts_exhausted"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_async_shared_breaker_learns_of_the_failures(clock: FakeClock) -> None:
    """A shared breaker records the block's failures in its store: enough of them open it for
    every process, and the next loop is rejected."""
    store = MemoryStore(clock=clock)
    await store.open()
    breaker = SharedCircuitBreaker(
        "crm", store, minimum_calls=2, failure_rate=0.5, sync_interval=0.01, clock=clock
    )
    policy = _policy(clock, breaker=breaker, retry=Retry(attempts=3, backoff=Constant(0.5)))

    async def fail(attempt: Attempt) -> None:
        raise UpstreamUnavailableError("503")

    async def succeed(attempt: Attempt) -> None:
        return None

    with pytest.raises((UpstreamUnavailableError, CircuitOpenError)):
        await _arun(policy, fail)
    record = await store.breakers.load("crm")
    assert record is not None
    assert record.state == "open"
    with pytest.raises(CircuitOpenError):
        await _arun(policy, succeed)
    await store.close()
