"""Typed events that every policy decision emits, and the observer protocol that receives them.

Policies build an event only when an observer is attached, so an unobserved call pays nothing.
Exporters for Prometheus, OpenTelemetry and structured logs implement :class:`Observer`.
An observer must be quick and must not raise; an exception from one is logged and swallowed so
that observing a call can never break it.

Attempts are the one event of every call. An observer that aggregates them (a metrics exporter)
may take them without the event object: given an ``attempt_recorder(policy)`` method returning
an :class:`AttemptRecorder`, it receives each attempt of that policy as a plain call with the
fields of :class:`AttemptFinished` (the request id is the current one,
:func:`~antifragile.observability.current_request_id`), and no ``AttemptFinished`` is built for
it. Every other observer still receives every ``AttemptFinished``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from antifragile.observability._context import current_request_id

_log = logging.getLogger("antifragile.events")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Common fields: the policy's name (usually the provider) and the operation."""

    policy: str
    operation: str | None = None
    request_id: str | None = None

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptFinished(Event):
    """One attempt ended. ``code`` is ``None`` on success; ``slow`` marks a slow call."""

    number: int
    duration: float
    code: str | None = None
    status: int | None = None
    slow: bool = False


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Any, ...]:
    found = []
    for name in names:
        owner = next(k for k in cls.__mro__ if name in k.__dict__)
        found.append(owner.__dict__[name].__set__)
    return tuple(found)


_ATTEMPT_FIELDS = (
    "policy",
    "operation",
    "request_id",
    "number",
    "duration",
    "code",
    "status",
    "slow",
)
(
    _set_policy,
    _set_operation,
    _set_request_id,
    _set_number,
    _set_duration,
    _set_code,
    _set_status,
    _set_slow,
) = _slot_setters(AttemptFinished, _ATTEMPT_FIELDS)


def attempt_finished_event(
    policy: str,
    operation: str | None,
    request_id: str | None,
    number: int,
    duration: float,
    code: str | None,
    status: int | None,
    slow: bool,
) -> AttemptFinished:
    """``AttemptFinished(...)`` built positionally, for the per-attempt hot path: the same
    frozen event, without the keyword parsing and the frozen-attribute lookups of its
    generated ``__init__`` (a third of the cost)."""
    event: AttemptFinished = object.__new__(AttemptFinished)
    _set_policy(event, policy)
    _set_operation(event, operation)
    _set_request_id(event, request_id)
    _set_number(event, number)
    _set_duration(event, duration)
    _set_code(event, code)
    _set_status(event, status)
    _set_slow(event, slow)
    return event


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    """Another attempt will follow after ``delay`` seconds."""

    number: int
    delay: float
    code: str
    from_retry_after: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class GaveUp(Event):
    """Retrying stopped; ``reason`` is one of the ``give_up_reason`` values."""

    attempts: int
    reason: str
    code: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerTransition(Event):
    """The circuit breaker changed state."""

    from_state: str
    to_state: str
    reason: str
    failure_rate: float | None = None
    slow_call_rate: float | None = None
    open_for: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LimiterWait(Event):
    """The rate limiter delayed a call by ``wait`` seconds."""

    wait: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LimiterAdjusted(Event):
    """Provider rate-limit headers changed the limiter's pace or paused it."""

    remaining: float | None
    limit: float | None
    reset_after: float | None
    paused_for: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRejected(Event):
    """A local policy refused the call: ``by`` is ``circuit_breaker``, ``bulkhead``,
    ``rate_limiter``, ``retry_budget`` or ``deadline``."""

    by: str
    code: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackUsed(Event):
    """A fallback answered instead of the call; ``source`` is ``value``, ``function`` or
    ``stale``."""

    source: str
    code: str | None
    age: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgeStarted(Event):
    """A hedged copy of a slow idempotent call was launched."""

    number: int
    after: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreFallback(Event):
    """A breaker or rate limiter kept in a store lost it (``degraded``: now process-local) or
    got it back. ``component`` is ``circuit_breaker`` or ``rate_limiter``."""

    component: str
    degraded: bool
    error: str | None = None


# -- events of the jobs, the inbound pipeline and the sagas --------------------------------------
# Emitted to ``Jobs.observer`` (the application's observer), not to a policy's: ``policy`` names
# the job (or the tenant, or the saga) and ``operation`` its queue (or channel, or step).


@dataclass(frozen=True, slots=True, kw_only=True)
class JobEnqueued(Event):
    """``count`` new jobs named ``policy`` were enqueued on queue ``operation`` (an enqueue
    that found its idempotency key taken creates none and is not counted)."""

    count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStarted(Event):
    """A worker started running job ``policy`` of queue ``operation``; ``delay`` is how long
    after it was due (seconds, by the jobs' clock)."""

    attempt: int
    delay: float


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFinished(Event):
    """A run of job ``policy`` (queue ``operation``) ended with ``outcome`` -- ``succeeded``,
    ``retry``, ``defer``, ``dead`` or ``release`` -- after ``duration`` seconds; ``code`` is
    the error code of a failed run."""

    outcome: str
    duration: float
    code: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IntentDetected(Event):
    """The pipeline classified a message for tenant ``policy`` on channel ``operation``."""

    intent: str
    confidence: float
    source: str = "classifier"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryStatusRecorded(Event):
    """A provider's delivery status (``operation``: the normalised status) of provider
    ``policy`` was recorded; ``matched`` is ``False`` when it belongs to no known message."""

    matched: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaCompensated(Event):
    """Saga ``policy`` ran the compensation of step ``operation``: ``succeeded`` is ``False``
    when it failed for good (the saga goes to the dead-letter queue)."""

    succeeded: bool


@runtime_checkable
class Observer(Protocol):
    """Receives every event of the policies it is attached to."""

    def on_event(self, event: Event) -> None: ...


@dataclass
class RecordingObserver:
    """Keeps every event in a list: for tests and the demo."""

    events: list[Event] = field(default_factory=list)

    def on_event(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Any]:
        """The recorded events of one type."""
        return [e for e in self.events if isinstance(e, kind)]

    def clear(self) -> None:
        self.events.clear()


class LoggingObserver:
    """Logs each event through the standard library logger ``antifragile.events``."""

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self._logger = logger or _log
        self._level = level

    def on_event(self, event: Event) -> None:
        if self._logger.isEnabledFor(self._level):
            self._logger.log(self._level, "%s", event.kind, extra={"event": event.to_dict()})


class AttemptRecorder(Protocol):
    """Takes one finished attempt of a policy, as an :class:`AttemptFinished` would carry it:
    ``(operation, number, duration, code, status, slow)``."""

    def __call__(
        self,
        operation: str | None,
        number: int,
        duration: float,
        code: str | None,
        status: int | None,
        slow: bool,
        /,
    ) -> None: ...


class AttemptsObserver(Observer, Protocol):
    """An observer that takes a policy's attempts without events (see the module docs):
    ``attempt_recorder(policy)`` returns the function to call for each attempt of the policy
    named *policy*, or ``None`` to receive them as :class:`AttemptFinished` events."""

    def attempt_recorder(self, policy: str) -> AttemptRecorder | None: ...


def _ignore_attempt(
    operation: str | None,
    number: int,
    duration: float,
    code: str | None,
    status: int | None,
    slow: bool,
    /,
) -> None:
    return None


def _event_recorder(policy: str, observers: tuple[Observer, ...]) -> AttemptRecorder:
    """Report attempts of *policy* to *observers* as :class:`AttemptFinished` events (built
    once per attempt, whatever their number)."""
    if len(observers) == 1:
        on_event = observers[0].on_event

        def record_one(
            operation: str | None,
            number: int,
            duration: float,
            code: str | None,
            status: int | None,
            slow: bool,
            /,
        ) -> None:
            on_event(
                attempt_finished_event(
                    policy, operation, current_request_id(), number, duration, code, status, slow
                )
            )

        return record_one

    def record_all(
        operation: str | None,
        number: int,
        duration: float,
        code: str | None,
        status: int | None,
        slow: bool,
        /,
    ) -> None:
        event = attempt_finished_event(
            policy, operation, current_request_id(), number, duration, code, status, slow
        )
        for observer in observers:
            try:
                observer.on_event(event)
            except Exception:  # an observer must never break the call it observes
                _log.exception("observer %r failed on %s", observer, event.kind)

    return record_all


def _fan_out(sinks: tuple[tuple[Observer, AttemptRecorder], ...]) -> AttemptRecorder:
    def record(
        operation: str | None,
        number: int,
        duration: float,
        code: str | None,
        status: int | None,
        slow: bool,
        /,
    ) -> None:
        for observer, sink in sinks:
            try:
                sink(operation, number, duration, code, status, slow)
            except Exception:  # an observer must never break the call it observes
                _log.exception("observer %r failed on AttemptFinished", observer)

    return record


class AttemptSink:
    """Where the attempts of one policy go: ``record`` reports one to every observer (without
    an event for those that take attempts directly). It follows the observers: one added later
    is reached by the next attempt. ``record`` may raise what an observer raised; the caller
    then calls :meth:`failed` (which logs it) and carries on."""

    __slots__ = ("observers", "policy", "record")

    def __init__(self, policy: str, observers: tuple[Observer, ...]) -> None:
        self.policy = policy
        self.observers = observers
        self.record: AttemptRecorder = _ignore_attempt
        self.bind(observers)

    def bind(self, observers: tuple[Observer, ...]) -> None:
        sinks: list[tuple[Observer, AttemptRecorder]] = []
        evented: list[Observer] = []
        for observer in observers:
            attempt_recorder: Callable[[str], AttemptRecorder | None] | None = getattr(
                observer, "attempt_recorder", None
            )
            recorder = attempt_recorder(self.policy) if attempt_recorder is not None else None
            if recorder is None:
                evented.append(observer)
            else:
                sinks.append((observer, recorder))
        if evented:
            sinks.append((evented[0], _event_recorder(self.policy, tuple(evented))))
        self.observers = observers
        if not sinks:
            self.record = _ignore_attempt
        elif len(sinks) == 1:
            self.record = sinks[0][1]
        else:
            self.record = _fan_out(tuple(sinks))

    def failed(self) -> None:
        """Log the exception an observer raised from :attr:`record` (call it in ``except``)."""
        names = ", ".join(repr(observer) for observer in self.observers)
        _log.exception("observer %s failed on AttemptFinished", names)


class Observers:
    """Fans events out to several observers, isolating each from the others' failures."""

    __slots__ = ("_attempts", "_observers")

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._observers: tuple[Observer, ...] = tuple(observers)
        self._attempts: dict[str, AttemptSink] = {}

    def __bool__(self) -> bool:
        return bool(self._observers)

    def __iter__(self) -> Any:
        return iter(self._observers)

    def add(self, observer: Observer) -> None:
        self._observers = (*self._observers, observer)
        for sink in list(self._attempts.values()):
            sink.bind(self._observers)

    def on_event(self, event: Event) -> None:
        for observer in self._observers:
            try:
                observer.on_event(event)
            except Exception:  # an observer must never break the call it observes
                _log.exception("observer %r failed on %s", observer, event.kind)

    def attempts(self, policy: str) -> AttemptSink:
        """Where the attempts of *policy* go (one sink per policy name, kept up to date)."""
        sink = self._attempts.get(policy)
        if sink is None:
            sink = self._attempts.setdefault(policy, AttemptSink(policy, self._observers))
        return sink

    def attempt_recorder(self, policy: str) -> AttemptRecorder | None:
        """Attempts of *policy* for every observer (observers nested in observers)."""
        sink = self.attempts(policy)

        def record(
            operation: str | None,
            number: int,
            duration: float,
            code: str | None,
            status: int | None,
            slow: bool,
            /,
        ) -> None:
            try:
                sink.record(operation, number, duration, code, status, slow)
            except Exception:  # an observer must never break the call it observes
                sink.failed()

        return record
