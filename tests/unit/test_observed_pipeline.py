"""An observed policy behaves exactly as the same policy unobserved (the attempt events are the
only difference in its chain)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from antifragile import (
    Bulkhead,
    CircuitBreaker,
    Exponential,
    FakeClock,
    IntegrationError,
    InvalidRequestError,
    Policy,
    Retry,
    TokenBucket,
    UpstreamUnavailableError,
)
from antifragile.observability import AttemptFinished, RecordingObserver
from antifragile.observability._events import attempt_finished_event

Script = list[BaseException | str]

SCRIPTS: dict[str, Script] = {
    "succeeds": ["ok"],
    "retried then succeeds": [UpstreamUnavailableError("503"), ConnectionError("reset"), "ok"],
    "permanent": [InvalidRequestError("422")],
    "exhausted": [UpstreamUnavailableError("503")] * 5,
    "unknown error": [KeyError("bug")],
}


def _policy(clock: FakeClock, observed: bool) -> Policy:
    return Policy(
        "p",
        timeout=5.0,
        total_timeout=600.0,
        retry=Retry(attempts=4, backoff=Exponential(1.0, cap=10.0, jitter="none")),
        breaker=CircuitBreaker("p", minimum_calls=50, clock=clock),
        rate=TokenBucket(100.0, burst=100.0),
        bulkhead=Bulkhead(4),
        clock=clock,
        observer=RecordingObserver() if observed else None,
    )


def _outcome(policy: Policy, clock: FakeClock, run: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        result: Any = run()
    except Exception as exc:
        attempts = len(exc.attempts) if isinstance(exc, IntegrationError) else None
        result = (type(exc).__name__, getattr(exc, "give_up_reason", None), attempts)
    bulkhead = policy.bulkhead
    assert bulkhead is not None
    return result, tuple(clock.sleeps), bulkhead.in_use, policy.breaker and policy.breaker.state


@pytest.mark.parametrize("name", SCRIPTS)
def test_sync_observed_equals_unobserved(name: str) -> None:
    """Every scripted outcome (result or error, give-up reason, attempts, sleeps, bulkhead slots
    and breaker state) is the same with and without an observer."""
    outcomes = []
    for observed in (False, True):
        clock = FakeClock()
        policy = _policy(clock, observed)
        script = list(SCRIPTS[name])

        def work(script: Script = script) -> str:
            step = script.pop(0)
            if isinstance(step, BaseException):
                raise step
            return step

        def run(policy: Policy = policy, work: Callable[[], str] = work) -> str:
            return policy.call(work)

        outcomes.append(_outcome(policy, clock, run))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("name", SCRIPTS)
def test_async_observed_equals_unobserved(name: str) -> None:
    """The same, for async calls (the timeouts are enforced with the watchdog)."""
    outcomes = []
    for observed in (False, True):
        clock = FakeClock()
        policy = _policy(clock, observed)
        script = list(SCRIPTS[name])

        async def work(script: Script = script) -> str:
            step = script.pop(0)
            if isinstance(step, BaseException):
                raise step
            return step

        def run(policy: Policy = policy, work: Any = work) -> Any:
            return asyncio.run(policy.acall(work))

        outcomes.append(_outcome(policy, clock, run))
    assert outcomes[0] == outcomes[1]


def test_async_attempt_timeout_cancels_and_retries() -> None:
    """A hung attempt is cancelled by the attempt timeout and retried."""
    calls: list[int] = []

    async def slow() -> str:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(10)
        return "ok"

    policy = Policy("p", timeout=0.05, retry=Retry(attempts=2), clock=FakeClock())
    assert asyncio.run(policy.acall(slow)) == "ok"
    assert len(calls) == 2


def test_the_fast_attempt_event_is_the_same_frozen_event() -> None:
    """The positional constructor of the per-attempt hot path builds an event equal to (and as
    frozen as) the one the dataclass constructor builds."""
    fast = attempt_finished_event("crm", "get", "req-1", 2, 0.25, "TIMEOUT", 504, True)
    slow = AttemptFinished(
        policy="crm",
        operation="get",
        request_id="req-1",
        number=2,
        duration=0.25,
        code="TIMEOUT",
        status=504,
        slow=True,
    )
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert repr(fast) == repr(slow)
    assert fast.to_dict() == slow.to_dict()
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.code = None  # type: ignore[misc]
