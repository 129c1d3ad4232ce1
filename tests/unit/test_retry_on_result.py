"""Retrying on a returned value (``Retry(retry_on_result=...)``): polling until it is ready."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from antifragile import (
    CircuitBreaker,
    Constant,
    FakeClock,
    Policy,
    Retry,
    RetryBudget,
    UpstreamUnavailableError,
)
from antifragile.observability import GaveUp, RecordingObserver, RetryScheduled
from antifragile.policies._retry import RETRY_ON_RESULT


@dataclass(frozen=True)
class Job:
    status: str


def _pending(job: Job) -> bool:
    return job.status == "pending"


def _policy(clock: FakeClock, recorder: RecordingObserver | None = None, **kw: object) -> Policy:
    options: dict[str, object] = {
        "timeout": None,
        "total_timeout": 60.0,
        "retry": Retry(attempts=5, backoff=Constant(2.0), retry_on_result=_pending),
        "breaker": None,
        "budget": None,
        "clock": clock,
        "observer": recorder,
    }
    options.update(kw)
    return Policy("poller", **options)  # type: ignore[arg-type]


def _script(*statuses: str) -> tuple[list[str], Callable[[], Job]]:
    calls: list[str] = []
    remaining = list(statuses)

    def poll() -> Job:
        status = remaining.pop(0)
        calls.append(status)
        return Job(status)

    return calls, poll


def test_a_pending_result_is_polled_again_until_done(clock: FakeClock) -> None:
    """Two "pending" answers are retried after the back-off; the "done" one is returned."""
    calls, poll = _script("pending", "pending", "done")
    result = _policy(clock).call(poll)
    assert result == Job("done")
    assert calls == ["pending", "pending", "done"]
    assert clock.sleeps == [2.0, 2.0]


def test_when_attempts_run_out_the_last_result_is_returned(
    clock: FakeClock, recorder: RecordingObserver
) -> None:
    """No wrapper error: the caller gets the last value back, and the observer a GaveUp."""
    calls, poll = _script(*["pending"] * 5)
    result = _policy(clock, recorder).call(poll)
    assert result == Job("pending")
    assert len(calls) == 5
    assert clock.sleeps == [2.0] * 4
    gave_up = recorder.of(GaveUp)
    assert [(g.reason, g.code, g.attempts) for g in gave_up] == [
        ("attempts_exhausted", RETRY_ON_RESULT, 5)
    ]
    assert [r.code for r in recorder.of(RetryScheduled)] == [RETRY_ON_RESULT] * 4


def test_the_deadline_ends_polling_with_the_last_result(
    clock: FakeClock, recorder: RecordingObserver
) -> None:
    """A wait that does not fit before the total timeout ends the loop (reason ``deadline``)."""
    calls, poll = _script(*["pending"] * 5)
    policy = _policy(clock, recorder, total_timeout=5.0)
    assert policy.call(poll) == Job("pending")
    assert len(calls) == 3  # waits at 0 and 2 fit; the one at 4 would end at 6 > 5
    assert [g.reason for g in recorder.of(GaveUp)] == ["deadline"]


def test_an_empty_retry_budget_ends_polling(clock: FakeClock, recorder: RecordingObserver) -> None:
    """Result retries spend from the retry budget like failure retries."""
    budget = RetryBudget(ratio=0.0, min_retries_per_second=0.0, clock=clock)
    calls, poll = _script("pending", "done")
    assert _policy(clock, recorder, budget=budget).call(poll) == Job("pending")
    assert calls == ["pending"]
    assert [g.reason for g in recorder.of(GaveUp)] == ["retry_budget_exhausted"]


def test_failures_and_results_share_the_attempts(clock: FakeClock) -> None:
    """A failure, then a pending value, then a done value: three attempts of one loop."""
    steps: list[object] = [UpstreamUnavailableError("503"), Job("pending"), Job("done")]

    def poll() -> Job:
        step = steps.pop(0)
        if isinstance(step, Exception):
            raise step
        assert isinstance(step, Job)
        return step

    assert _policy(clock).call(poll) == Job("done")
    assert clock.sleeps == [2.0, 2.0]


def test_a_rejected_result_counts_as_a_success_for_the_breaker(clock: FakeClock) -> None:
    """The provider answered: "pending" is not a failure, the breaker stays closed."""
    breaker = CircuitBreaker("poller", minimum_calls=2, failure_rate=0.5, clock=clock)
    _calls, poll = _script(*["pending"] * 5)
    _policy(clock, breaker=breaker).call(poll)
    assert breaker.metrics()["failures"] == 0
    assert breaker.metrics()["calls"] == 5


async def test_async_polling_returns_the_first_accepted_result(clock: FakeClock) -> None:
    """The async runner polls the same way, waiting on the policy's clock."""
    statuses = ["pending", "pending", "done"]

    async def poll() -> Job:
        return Job(statuses.pop(0))

    assert await _policy(clock).acall(poll) == Job("done")
    assert clock.sleeps == [2.0, 2.0]


def test_decide_result_is_pure() -> None:
    """The decision: the back-off delay, ``attempts_exhausted`` at the last attempt, and
    ``deadline`` when the delay does not fit."""
    retry = Retry(attempts=3, backoff=Constant(1.0), retry_on_result=_pending)
    rng = random.Random(0)
    assert retry.decide_result(attempt=1, previous_delay=0, remaining=None, rng=rng).delay == 1.0
    assert (
        retry.decide_result(attempt=3, previous_delay=1, remaining=None, rng=rng).give_up
        == "attempts_exhausted"
    )
    assert retry.decide_result(attempt=1, previous_delay=0, remaining=1.0, rng=rng).give_up == (
        "deadline"
    )


@pytest.mark.parametrize("value", [None, 0, "", []])
def test_without_retry_on_result_any_value_is_returned(clock: FakeClock, value: object) -> None:
    """The default retries failures only: falsy values are results like any other."""
    policy = _policy(clock, retry=Retry(attempts=3, backoff=Constant(1.0)))
    assert policy.call(lambda: value) == value
    assert clock.sleeps == []
