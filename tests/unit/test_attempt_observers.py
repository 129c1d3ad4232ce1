"""Observers that take attempts without events (``attempt_recorder``) get every attempt as a plain
call, while the other observers of the same policy still get every ``AttemptFinished``."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from antifragile import (
    CircuitBreaker,
    Constant,
    FakeClock,
    Policy,
    Retry,
    UpstreamUnavailableError,
)
from antifragile.observability import (
    AttemptFinished,
    AttemptRecorder,
    Event,
    RecordingObserver,
    RetryScheduled,
    request_context,
)

Attempt = tuple[str | None, int, float, str | None, int | None, bool]


class Tally:
    """Takes attempts through ``attempt_recorder``; keeps the events it is sent as well."""

    def __init__(self) -> None:
        self.attempts: dict[str, list[Attempt]] = {}
        self.events: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def attempt_recorder(self, policy: str) -> AttemptRecorder:
        found = self.attempts.setdefault(policy, [])

        def record(
            operation: str | None,
            number: int,
            duration: float,
            code: str | None,
            status: int | None,
            slow: bool,
            /,
        ) -> None:
            found.append((operation, number, duration, code, status, slow))

        return record


class Broken:
    """An observer whose attempt recorder always raises."""

    def on_event(self, event: Event) -> None:
        return None

    def attempt_recorder(self, policy: str) -> AttemptRecorder:
        def record(*attempt: Any) -> None:
            raise RuntimeError("observer bug")

        return record


def _policy(clock: FakeClock, *observers: Any) -> Policy:
    return Policy(
        "crm",
        clock=clock,
        timeout=5.0,
        retry=Retry(attempts=3, backoff=Constant(1.0)),
        breaker=CircuitBreaker("crm", minimum_calls=50, slow_call_duration=0.5, clock=clock),
        observer=list(observers),
    )


def _flaky(clock: FakeClock) -> Any:
    calls = 0

    def work() -> str:
        nonlocal calls
        calls += 1
        clock.advance(0.75 if calls == 1 else 0.25)
        if calls == 1:
            raise UpstreamUnavailableError("HTTP 503", status=503, provider="crm")
        return "ok"

    return work


def _as_tuple(event: AttemptFinished) -> Attempt:
    return (event.operation, event.number, event.duration, event.code, event.status, event.slow)


EXPECTED: list[Attempt] = [
    ("contacts.create", 1, 0.75, "UPSTREAM_UNAVAILABLE", 503, True),
    ("contacts.create", 2, 0.25, None, None, False),
]


def test_a_recorder_gets_each_attempt_and_an_event_observer_each_event(clock: FakeClock) -> None:
    """Beside an observer that takes attempts directly, a recording observer still receives an
    ``AttemptFinished`` for every attempt, with every field (request id included); the direct
    observer receives the same attempts as calls and no ``AttemptFinished``, but every other
    event."""
    tally, recording = Tally(), RecordingObserver()
    policy = _policy(clock, tally, recording)
    with request_context("req-42"):
        assert policy.run(_flaky(clock), operation="contacts.create") == "ok"
    events = recording.of(AttemptFinished)
    assert [_as_tuple(e) for e in events] == EXPECTED
    assert {(e.policy, e.request_id) for e in events} == {("crm", "req-42")}
    assert tally.attempts == {"crm": EXPECTED}
    assert not [e for e in tally.events if isinstance(e, AttemptFinished)]
    assert [type(e) for e in tally.events] == [RetryScheduled]


def test_async_attempts_reach_both_kinds_of_observer(clock: FakeClock) -> None:
    """The async chain reports attempts the same way as the sync one."""
    tally, recording = Tally(), RecordingObserver()
    policy = _policy(clock, tally, recording)
    work = _flaky(clock)

    async def call() -> str:
        return work()  # type: ignore[no-any-return]

    assert asyncio.run(policy.arun(call, operation="contacts.create")) == "ok"
    assert [_as_tuple(e) for e in recording.of(AttemptFinished)] == EXPECTED
    assert tally.attempts == {"crm": EXPECTED}


def test_a_retried_block_reports_its_attempts_to_a_recorder(clock: FakeClock) -> None:
    """``policy.attempts()`` reports each attempt of the block to a direct observer too."""
    tally = Tally()
    policy = _policy(clock, tally)
    work = _flaky(clock)
    for attempt in policy.attempts(operation="contacts.create"):
        with attempt:
            work()
    assert [(a[1], a[3]) for a in tally.attempts["crm"]] == [
        (1, "UPSTREAM_UNAVAILABLE"),
        (2, None),
    ]


def test_an_observer_added_later_reaches_a_policy_already_built(clock: FakeClock) -> None:
    """A replaced policy shares its observers: one added to the new policy reaches the attempts
    of the old one, whose chain was built before it came."""
    first = Tally()
    policy = _policy(clock, first)
    assert policy.call(lambda: "ok") == "ok"  # the chain is built now
    later, recording = Tally(), RecordingObserver()
    replaced = policy.replace(timeout=3.0)
    replaced.add_observer(later)
    replaced.add_observer(recording)
    assert policy.call(lambda: "ok") == "ok"
    assert len(first.attempts["crm"]) == 2
    assert len(later.attempts["crm"]) == 1
    assert len(recording.of(AttemptFinished)) == 1


def test_a_failing_recorder_neither_breaks_the_call_nor_starves_the_others(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception from an attempt recorder is logged and swallowed: the call returns its
    result, and the other observers get the attempt."""
    tally, recording = Tally(), RecordingObserver()
    policy = _policy(clock, Broken(), tally, recording)
    with caplog.at_level(logging.ERROR, logger="antifragile.events"):
        assert policy.call(lambda: "ok") == "ok"
    assert len(tally.attempts["crm"]) == 1
    assert len(recording.of(AttemptFinished)) == 1
    assert "failed on AttemptFinished" in caplog.text


def test_a_lone_failing_recorder_does_not_break_the_call(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """With only a failing observer, sync and async calls still return, and the failure is
    logged."""
    policy = _policy(clock, Broken())
    with caplog.at_level(logging.ERROR, logger="antifragile.events"):
        assert policy.call(lambda: "ok") == "ok"

        async def call() -> str:
            return "ok"

        assert asyncio.run(policy.acall(call)) == "ok"
    assert caplog.text.count("failed on AttemptFinished") == 2
