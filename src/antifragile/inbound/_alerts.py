"""Alerts: a growing dead-letter queue, a provider failing too often, a breaker opening.

::

    alerts = Alerts(jobs, connectors, config=AlertConfig(slack=True, email=("ops@shop.example",)))
    await jobs.open()
    alerts.install()           # observe the connectors' policies, listen to their breakers
    # a scheduler enqueues ``alerts.check`` every minute; a worker runs it and the notifications

Three **conditions**, each about one *subject*:

=================  ==========  ===========================================================
condition          subject     fires when
=================  ==========  ===========================================================
``dlq_backlog``    ``all``     the dead-letter queue holds ``dlq_threshold`` jobs or more
``error_rate``     a provider  more than ``error_rate`` of its attempts failed over the last
                               ``error_window`` seconds, with at least ``min_calls`` attempts
``breaker_open``   a provider  its circuit breaker opens
=================  ==========  ===========================================================

The first two are checked by the periodic job ``alerts.check`` (every minute by default); a
breaker's opening fires at once, from a listener on the breaker.

**Firing** enqueues the durable job ``alerts.notify`` (queue ``alerts``), which posts the alert
to Slack (the Slack connector's webhook) and/or emails it to the configured recipients (the
Resend connector). Its idempotency key is ``alert:<condition>:<subject>:<window_start>``, where
``window_start`` is the start of the current alert window (``window`` seconds, 15 minutes by
default, aligned on the epoch): the queue creates at most one job per key, atomically, so a
condition notifies at most once per window however many checks, listeners and processes see
it. A condition that still holds in the next window fires again there.

**Records.** Each condition keeps ``alert:<condition>:<subject>`` in the key-value store beside
the queue: ``state`` (``firing`` or ``resolved``), ``last_fired_at`` (the last notification),
``last_seen_at``, ``last_resolved_at``, ``window_start``, the ``details`` and the notification's
job id -- for dashboards and the admin API. A condition is *resolved* when a check finds it no
longer holds (fewer dead jobs than the threshold; the provider's failure rate back at or under
the threshold, or no attempts at all in the window) or, for a breaker, when it closes again.

**Error rates** come from the events the policies emit: :class:`AlertsObserver` is an
:class:`~antifragile.observability.Observer` that counts each
:class:`~antifragile.observability.AttemptFinished` (a failed attempt has an error ``code``)
per policy name -- the provider, for connectors -- in a sliding window of time buckets: O(1)
per event. The counts are those of the process: the check, which runs in a worker, judges the
calls of that worker process (where provider calls are made).

**No personal data, no secrets.** Alert texts and job payloads hold the condition, provider,
counts, queue names, error codes and breaker reasons only; recipients' addresses are read from
the configuration when the job runs, never stored in it. A notification whose Slack post may
or may not have arrived is sent again (a duplicate alert is harmless, a lost one is not).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import re
import threading
import warnings
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from antifragile.connectors import Connectors, OutcomeUnknownError
from antifragile.errors import AntifragileError, ConfigurationError, ErrorCode, redact
from antifragile.inbound._replies import kv_of, scrubbed
from antifragile.jobs import Enqueued, JobContext, JobFilter, JobFunction, Jobs, JobState
from antifragile.observability import AttemptFinished, AttemptRecorder, Event
from antifragile.policies import (
    SYSTEM_CLOCK,
    CircuitBreaker,
    CircuitState,
    Clock,
    Exponential,
    Policy,
    Retry,
)
from antifragile.stores import KeyValueStore

_log = logging.getLogger("antifragile.inbound.alerts")

DLQ_BACKLOG = "dlq_backlog"
ERROR_RATE = "error_rate"
BREAKER_OPEN = "breaker_open"
NO_WORKER = "no_worker"
QUEUE_LAG = "queue_lag"
#: the conditions alerts watch (the last two are judged by the watchdog of ``serve`` and the
#: scheduler, :mod:`antifragile.service._watchdog`, since no worker may be there to judge them)
CONDITIONS: tuple[str, ...] = (DLQ_BACKLOG, ERROR_RATE, BREAKER_OPEN, NO_WORKER, QUEUE_LAG)

#: the key prefix of alert records in the key-value store
ALERT_PREFIX = "alert:"
#: the periodic job that checks the dead-letter queue and error rates
CHECK_JOB = "alerts.check"
#: the job that sends one alert
NOTIFY_JOB = "alerts.notify"
#: the queue of both
ALERTS_QUEUE = "alerts"
#: the subject of the dead-letter queue's condition
ALL = "all"

#: how a notification is retried: soon, since a late alert is worth less
NOTIFY_RETRY = Retry(attempts=8, backoff=Exponential(15.0, multiplier=2.0, cap=900.0))
#: how a failed check is retried (the next minute's check follows anyway)
CHECK_RETRY = Retry(attempts=2, backoff=Exponential(5.0, multiplier=2.0, cap=30.0))

EMAIL_FROM_ENV = "ANTIFRAGILE_EMAIL_FROM"
DEFAULT_EMAIL_FROM = "Assistant <onboarding@resend.dev>"

_TITLES = {
    DLQ_BACKLOG: "Dead-letter queue backlog",
    ERROR_RATE: "High error rate",
    BREAKER_OPEN: "Circuit breaker open",
    NO_WORKER: "No worker alive",
    QUEUE_LAG: "Queue lag",
}
_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+\.[^@\s,]+$")


def _name(value: object) -> str:
    """*value* when it is a short plain name (a provider, queue or error code), else ``?``."""
    text = str(value)
    return text if _NAME.match(text) else "?"


class AlertDeliveryError(AntifragileError):
    """A notification could not be delivered for sure on one of its channels; retried."""

    default_code = ErrorCode.UPSTREAM_UNAVAILABLE
    default_retryable = True


# -- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertConfig:
    """What fires an alert and where it goes.

    *slack*: post alerts with the Slack connector; *email*: the recipients of alert emails
    (sent with Resend from *email_sender*, default ``ANTIFRAGILE_EMAIL_FROM``);
    *dlq_threshold*: dead jobs that fire ``dlq_backlog``; *error_rate* (a fraction in (0, 1]),
    *error_window* (seconds) and *min_calls*: what fires ``error_rate``; *window*: an alert
    fires at most once per condition and window (seconds); *cron*: when ``alerts.check`` runs.
    """

    slack: bool = False
    email: tuple[str, ...] = ()
    email_sender: str | None = None
    dlq_threshold: int = 10
    error_rate: float = 0.5
    error_window: float = 300.0
    min_calls: int = 20
    window: float = 900.0
    cron: str = "* * * * *"

    def __post_init__(self) -> None:
        given: Any = self.email
        if isinstance(given, str):
            raise ConfigurationError("alert email recipients are a sequence of addresses")
        object.__setattr__(self, "email", tuple(e.strip() for e in given if e.strip()))
        bad = sum(1 for e in self.email if not _EMAIL.match(e))
        if bad:  # never echo the addresses themselves
            raise ConfigurationError(f"{bad} alert email recipient(s) are not email addresses")
        if not isinstance(self.dlq_threshold, int) or self.dlq_threshold < 1:
            raise ConfigurationError("dlq_threshold must be an int >= 1")
        if not 0.0 < self.error_rate <= 1.0:
            raise ConfigurationError(f"error_rate must be within (0, 1], got {self.error_rate!r}")
        if not isinstance(self.min_calls, int) or self.min_calls < 1:
            raise ConfigurationError("min_calls must be an int >= 1")
        for name in ("error_window", "window"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 1.0):
                raise ConfigurationError(f"{name} must be a number of seconds >= 1")

    @property
    def channels(self) -> tuple[str, ...]:
        """Where alerts go: ``slack`` and/or ``email`` (empty: alerts are only recorded)."""
        return (*(("slack",) if self.slack else ()), *(("email",) if self.email else ()))

    def __repr__(self) -> str:
        return (
            f"AlertConfig(slack={self.slack}, email=<{len(self.email)} recipient(s)>, "
            f"dlq_threshold={self.dlq_threshold}, error_rate={self.error_rate}, "
            f"error_window={self.error_window}, min_calls={self.min_calls}, "
            f"window={self.window})"
        )


# -- error rates from policy events ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorRate:
    """A provider's attempts over the window: how many, how many failed, and their codes."""

    provider: str
    calls: int
    failures: int
    codes: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


class _Series:
    """One provider's time buckets: ``[index, calls, failures, codes]``, oldest first."""

    __slots__ = ("buckets", "calls", "codes", "failures")

    def __init__(self) -> None:
        self.buckets: deque[list[Any]] = deque()
        self.calls = 0
        self.failures = 0
        self.codes: Counter[str] = Counter()

    def expire(self, oldest: int) -> None:
        buckets = self.buckets
        while buckets and buckets[0][0] < oldest:
            _, calls, failures, codes = buckets.popleft()
            self.calls -= calls
            self.failures -= failures
            if codes:
                self.codes.subtract(codes)
                for code in [c for c, n in self.codes.items() if n <= 0]:
                    del self.codes[code]

    def add(self, index: int, code: str | None) -> None:
        buckets = self.buckets
        if not buckets or buckets[-1][0] != index:
            buckets.append([index, 0, 0, None])
        bucket = buckets[-1]
        bucket[1] += 1
        self.calls += 1
        if code is not None:
            bucket[2] += 1
            self.failures += 1
            if bucket[3] is None:
                bucket[3] = Counter()
            bucket[3][code] += 1
            self.codes[code] += 1


class AlertsObserver:
    """Counts attempts and failed attempts per policy over a sliding window (an
    :class:`~antifragile.observability.Observer`; attach it to the policies to watch).

    The window (*window* seconds) is kept as *buckets* time buckets, so recording an event is
    O(1) and the window slides by one bucket's width. Thread-safe: a lock guards a few integer
    updates (policies may run in threads).
    """

    def __init__(
        self, *, window: float = 300.0, buckets: int = 30, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        if not window > 0 or not isinstance(buckets, int) or buckets < 1:
            raise ConfigurationError("the error window must be > 0 seconds in >= 1 bucket")
        self.window = float(window)
        self.clock = clock
        self._span = buckets
        self._width = self.window / buckets
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}

    def on_event(self, event: Event) -> None:
        if isinstance(event, AttemptFinished):
            self.record(event.policy, event.code)

    def attempt_recorder(self, policy: str) -> AttemptRecorder:
        """The attempts of *policy* without their events (see
        :class:`~antifragile.observability.AttemptRecorder`)."""
        record = self.record

        def attempt(
            operation: str | None,
            number: int,
            duration: float,
            code: str | None,
            status: int | None,
            slow: bool,
            /,
        ) -> None:
            record(policy, code)

        return attempt

    def record(self, provider: str, code: str | None) -> None:
        """Count one attempt of *provider*; *code* is its error code (``None``: it succeeded)."""
        index = int(self.clock.monotonic() // self._width)
        with self._lock:
            series = self._series.get(provider)
            if series is None:
                series = self._series[provider] = _Series()
            series.expire(index - self._span + 1)
            series.add(index, code)

    def rates(self) -> dict[str, ErrorRate]:
        """Every provider seen, with its counts over the window (possibly zero now)."""
        oldest = int(self.clock.monotonic() // self._width) - self._span + 1
        found: dict[str, ErrorRate] = {}
        with self._lock:
            for provider, series in self._series.items():
                series.expire(oldest)
                found[provider] = ErrorRate(
                    provider, series.calls, series.failures, dict(series.codes)
                )
        return found

    def rate(self, provider: str) -> ErrorRate:
        """*provider*'s counts over the window."""
        return self.rates().get(provider) or ErrorRate(provider, 0, 0)

    def __repr__(self) -> str:
        return f"AlertsObserver(window={self.window:g}, providers={len(self._series)})"


# -- alerts -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertFired:
    """One firing: the notification job (``None`` when no channel is configured) and whether
    this firing created it (``False``: it fired already in this window)."""

    condition: str
    subject: str
    window_start: int
    key: str
    job_id: str | None
    created: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "condition": self.condition,
            "subject": self.subject,
            "window_start": self.window_start,
            "job_id": self.job_id,
            "created": self.created,
        }


def _top(codes: Mapping[str, int], n: int = 5) -> list[list[Any]]:
    """The *n* most frequent codes as ``[code, count]`` pairs (pairs, not a mapping: payload
    keys must never look like credentials, whatever a queue or code is called)."""
    ordered = sorted(codes.items(), key=lambda item: (-item[1], item[0]))
    return [[_name(code), count] for code, count in ordered[:n]]


def _listing(counts: Any) -> str:
    """``a=1, b=2`` from ``[name, count]`` pairs (or a mapping)."""
    pairs = counts.items() if isinstance(counts, Mapping) else counts
    try:
        return ", ".join(f"{_name(k)}={int(v)}" for k, v in pairs) or "none"
    except (TypeError, ValueError):
        return "?"


def render(condition: str, subject: str, window_start: int, details: Mapping[str, Any]) -> str:
    """The text of an alert: condition, subject, counts and codes only (no personal data)."""
    subject = _name(subject)
    if condition == DLQ_BACKLOG:
        body = (
            f"{int(details.get('dead', 0))} dead job(s) in the dead-letter queue "
            f"(threshold {int(details.get('threshold', 0))}). "
            f"By queue: {_listing(details.get('queues') or ())}. "
            f"Top error codes: {_listing(details.get('codes') or ())}."
        )
    elif condition == ERROR_RATE:
        calls, failures = int(details.get("calls", 0)), int(details.get("failures", 0))
        rate = failures / calls if calls else 0.0
        body = (
            f"{subject}: {failures} of {calls} attempts failed ({rate:.0%}) over the last "
            f"{float(details.get('window', 0)) / 60:g} min "
            f"(threshold {float(details.get('threshold', 0)):.0%}). "
            f"Top error codes: {_listing(details.get('codes') or ())}."
        )
    elif condition == BREAKER_OPEN:
        reason = re.sub(r"[^A-Za-z0-9 %.,:=<>_-]", "", str(details.get("reason") or ""))[:80]
        body = (
            f"{subject}: the circuit breaker opened ({reason or 'no reason given'}); calls to "
            f"{subject} are refused and its jobs wait until it recovers."
        )
    elif condition == NO_WORKER:
        body = (
            f"no worker has been seen for {float(details.get('dead_after', 0)):g}s "
            f"({int(details.get('dead', 0))} silent); events are still recorded, but no job runs "
            "until a worker starts."
        )
    elif condition == QUEUE_LAG:
        body = (
            f"the oldest due job has waited {float(details.get('lag', 0)):g}s "
            f"(threshold {float(details.get('threshold', 0)):g}s) with "
            f"{int(details.get('workers', 0))} worker(s) alive."
        )
    else:
        body = f"{subject}: {condition}."
    since = datetime.fromtimestamp(window_start, UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = _TITLES.get(condition, condition)
    return redact(f"[antifragile alert] {title} -- {body} Window from {since}.")


class Alerts:
    """Watches the conditions and sends alerts (see the module docs).

    Declares the jobs ``alerts.check`` (periodic, *config.cron*) and ``alerts.notify`` on
    *jobs*; *connectors* provides Slack and Resend and the policies and breakers to watch.
    """

    def __init__(
        self,
        jobs: Jobs,
        connectors: Connectors,
        *,
        config: AlertConfig | None = None,
        clock: Clock = SYSTEM_CLOCK,
        observer: AlertsObserver | None = None,
    ) -> None:
        self.jobs = jobs
        self.connectors = connectors
        self.config = config if config is not None else AlertConfig()
        self.clock = clock
        self.observer = (
            observer
            if observer is not None
            else AlertsObserver(window=self.config.error_window, clock=clock)
        )
        self.email_sender = (
            self.config.email_sender or os.environ.get(EMAIL_FROM_ENV) or DEFAULT_EMAIL_FROM
        )
        self._observed: list[Policy] = []
        self._watched: list[CircuitBreaker] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        alerts = self

        @jobs.job(name=NOTIFY_JOB, queue=ALERTS_QUEUE, retry=NOTIFY_RETRY, timeout=120.0)
        async def notify(
            ctx: JobContext,
            condition: str,
            subject: str,
            window_start: int,
            details: dict[str, Any],
        ) -> dict[str, Any]:
            return await alerts.deliver(ctx, condition, subject, window_start, details)

        self.notify_job: JobFunction[..., dict[str, Any]] = notify

        @jobs.every(
            self.config.cron, name=CHECK_JOB, queue=ALERTS_QUEUE, retry=CHECK_RETRY, timeout=60.0
        )
        async def check(ctx: JobContext) -> dict[str, Any]:
            fired = await alerts.check()
            return {"fired": [f.to_json() for f in fired]}

        self.schedule = check

    def __repr__(self) -> str:
        return f"Alerts({self.config!r})"

    @property
    def kv(self) -> KeyValueStore:
        """The key-value store the alert records live in (the queue's, once open)."""
        return kv_of(self.jobs)

    def window_start(self, now: float | None = None) -> int:
        """The start of the alert window *now* (default: the clock's) falls in."""
        at = self.clock.time() if now is None else now
        return int(at // self.config.window * self.config.window)

    # -- wiring -------------------------------------------------------------------------------

    def install(self) -> None:
        """Observe every connector in use (its policy's attempts) and listen to its breaker.

        Call it inside the running event loop, once the connectors are built (the assistant's
        ``open`` does); calling it again adds what is new only.
        """
        for connector in self.connectors.built.values():
            policy = getattr(connector, "policy", None)
            if isinstance(policy, Policy) and not any(p is policy for p in self._observed):
                policy.add_observer(self.observer)
                self._observed.append(policy)
        for provider, breaker in self.connectors.breakers().items():
            self.watch(provider, breaker)
        for channel, provider in (("slack", "slack"), ("email", "resend")):
            if channel in self.config.channels and not self.connectors.configured(provider):
                _log.warning(
                    "alerts go to %s but the %s connector is not configured", channel, provider
                )

    def watch(self, provider: str, breaker: CircuitBreaker) -> None:
        """Fire ``breaker_open`` for *provider* when *breaker* opens (and resolve it when it
        closes). Call it inside the running event loop: the listener schedules the firing on
        it, from whichever thread the transition happens in."""
        if any(b is breaker for b in self._watched):
            return
        loop = asyncio.get_running_loop()
        provider = _name(provider)

        def listener(before: CircuitState, after: CircuitState, reason: str) -> None:
            work: Callable[[], Coroutine[Any, Any, Any]]
            if after is CircuitState.OPEN and before is not CircuitState.OPEN:
                details = {"reason": str(reason)[:200], "from": before.value}

                def work() -> Coroutine[Any, Any, Any]:
                    return self.fire(BREAKER_OPEN, provider, details)
            elif after is CircuitState.CLOSED and before is not CircuitState.CLOSED:

                def work() -> Coroutine[Any, Any, Any]:
                    return self.resolve(BREAKER_OPEN, provider, {"reason": str(reason)[:200]})
            else:
                return
            try:
                loop.call_soon_threadsafe(self._spawn, work)
            except RuntimeError:  # the loop is closed: the process is shutting down
                _log.warning("alert for %s's breaker dropped: the event loop is closed", provider)

        breaker.add_listener(listener)
        self._watched.append(breaker)

    def _spawn(self, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        task = asyncio.get_running_loop().create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            code = getattr(exc, "code", type(exc).__name__)
            _log.warning("a breaker alert could not be recorded: %s", code)

    def firings_under_way(self) -> list[asyncio.Task[Any]]:
        """The firings and resolutions that breaker listeners started and that have not ended
        yet (:func:`antifragile.inbound.testing.wait_for_breaker_alerts` waits for them)."""
        return list(self._tasks)

    async def wait_for_breaker_alerts(self) -> None:
        """Deprecated: use :func:`antifragile.inbound.testing.wait_for_breaker_alerts`."""
        warnings.warn(
            "Alerts.wait_for_breaker_alerts() is deprecated and will be removed in the next "
            "release; use `from antifragile.inbound.testing import wait_for_breaker_alerts` "
            "and `await wait_for_breaker_alerts(alerts)`",
            DeprecationWarning,
            stacklevel=2,
        )
        from antifragile.inbound.testing import wait_for_breaker_alerts

        await wait_for_breaker_alerts(self)

    # -- checking -----------------------------------------------------------------------------

    async def check(self) -> list[AlertFired]:
        """Check the dead-letter queue and the error rates; fire or resolve each condition."""
        fired = await self.check_dlq()
        fired.extend(await self.check_error_rates())
        return fired

    async def check_dlq(self) -> list[AlertFired]:
        """Fire ``dlq_backlog`` when ``dlq_threshold`` jobs or more are dead, else resolve it."""
        stats = await self.jobs.stats()
        dead = {s.queue: s.counts.get(JobState.DEAD.value, 0) for s in stats}
        by_queue: list[list[Any]] = [[_name(q), n] for q, n in sorted(dead.items()) if n]
        total = sum(dead.values())
        threshold = self.config.dlq_threshold
        if total < threshold:
            await self.resolve(DLQ_BACKLOG, ALL, {"dead": total, "threshold": threshold})
            return []
        sample = await self.jobs.find(JobFilter(states=(JobState.DEAD,)), limit=200)
        codes = Counter(j.last_error_code or "UNKNOWN" for j in sample)
        details: dict[str, Any] = {
            "dead": total,
            "threshold": threshold,
            "queues": by_queue,
            "codes": _top(codes),
        }
        return [await self.fire(DLQ_BACKLOG, ALL, details)]

    async def check_error_rates(self) -> list[AlertFired]:
        """Fire ``error_rate`` for each provider over the threshold; resolve the others."""
        config = self.config
        fired: list[AlertFired] = []
        rates = self.observer.rates()
        for provider, rate in sorted(rates.items()):
            over = rate.calls >= config.min_calls and rate.rate > config.error_rate
            details: dict[str, Any] = {
                "calls": rate.calls,
                "failures": rate.failures,
                "threshold": config.error_rate,
                "window": self.observer.window,
            }
            if over:
                details["codes"] = _top(rate.codes)
                fired.append(await self.fire(ERROR_RATE, provider, details))
            elif rate.calls == 0 or rate.rate <= config.error_rate:
                await self.resolve(ERROR_RATE, provider, details)
        return fired

    # -- firing and resolving -----------------------------------------------------------------

    def _key(self, condition: str, subject: str) -> str:
        if condition not in CONDITIONS:
            raise ConfigurationError(f"unknown alert condition {condition!r}")
        return f"{ALERT_PREFIX}{condition}:{_name(subject)}"

    async def fire(self, condition: str, subject: str, details: Mapping[str, Any]) -> AlertFired:
        """Fire *condition* for *subject*: enqueue its notification once per window, and
        record it. *details* (counts, codes; never personal data) go into the alert's text."""
        record_key = self._key(condition, subject)
        subject = _name(subject)
        await self.jobs.open()
        now = self.clock.time()
        start = self.window_start(now)
        key = f"{record_key}:{start}"
        payload = dict(details)
        job: Enqueued | None = None
        if self.config.channels:
            job = await self.notify_job.configure(idempotency_key=key).enqueue(
                condition, subject, start, payload
            )
            created = job.created
        else:  # nothing to send: a new window is a new firing
            current = await self.kv.get(record_key, now=now)
            value = current.value if current is not None else None
            created = not (isinstance(value, dict) and value.get("window_start") == start)
        fields: dict[str, Any] = {
            "condition": condition,
            "subject": subject,
            "state": "firing",
            "last_seen_at": now,
            "details": payload,
        }
        if created:
            fields.update(
                last_fired_at=now, window_start=start, job_id=None if job is None else job.id
            )
            _log.warning("alert %s:%s fired (window %d)", condition, subject, start)
        await self.kv.merge(record_key, fields, now=now)
        return AlertFired(condition, subject, start, key, None if job is None else job.id, created)

    async def resolve(
        self, condition: str, subject: str, details: Mapping[str, Any] | None = None
    ) -> bool:
        """Record *condition* for *subject* as resolved when it was firing; whether it was."""
        record_key = self._key(condition, subject)
        await self.jobs.open()
        now = self.clock.time()
        current = await self.kv.get(record_key, now=now)
        value = current.value if current is not None else None
        if not isinstance(value, dict) or value.get("state") != "firing":
            return False
        fields: dict[str, Any] = {"state": "resolved", "last_resolved_at": now}
        if details is not None:
            fields["resolved_details"] = dict(details)
        await self.kv.merge(record_key, fields, now=now)
        _log.info("alert %s:%s resolved", condition, _name(subject))
        return True

    async def records(self, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The alert records (``alert:<condition>:<subject>``), by key."""
        await self.jobs.open()
        entries = await self.kv.scan(ALERT_PREFIX, now=self.clock.time(), limit=limit)
        return [
            {"key": entry.key, **entry.value} for entry in entries if isinstance(entry.value, dict)
        ]

    # -- sending --------------------------------------------------------------------------------

    async def deliver(
        self,
        ctx: JobContext,
        condition: str,
        subject: str,
        window_start: int,
        details: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Send one alert on every configured channel (the body of ``alerts.notify``).

        Each channel that succeeded is checkpointed, so a retry sends only what is missing.
        """
        text = render(condition, subject, window_start, details)
        state = ctx.state_data if isinstance(ctx.state_data, dict) else {}
        done: dict[str, Any] = {"slack": bool(state.get("slack")), "emails": []}
        done["emails"] = [str(e) for e in state.get("emails") or []]
        failure: BaseException | None = None
        if self.config.slack and not done["slack"]:
            try:
                await self.connectors.slack.post_message(text, reference=ctx.idempotency_key)
            except OutcomeUnknownError as exc:  # at least once: a duplicate alert is harmless
                failure = AlertDeliveryError(f"the Slack alert may not have arrived ({exc.code})")
            except Exception as exc:
                failure = exc
            else:
                done["slack"] = True
                await ctx.save_progress(dict(done))
        subject_line = f"[alert] {_TITLES.get(condition, condition)}: {_name(subject)}"
        for recipient in self.config.email:
            tag = hashlib.sha256(recipient.lower().encode()).hexdigest()[:12]
            if tag in done["emails"]:
                continue
            try:
                with scrubbed(recipient):
                    await self.connectors.resend.send_email(
                        sender=self.email_sender,
                        to=recipient,
                        subject=subject_line,
                        text=text,
                        idempotency_key=f"{ctx.idempotency_key}:{tag}",
                    )
            except Exception as exc:
                failure = failure or exc
            else:
                done["emails"].append(tag)
                await ctx.save_progress(dict(done))
        if failure is not None:
            raise failure
        return {"slack": done["slack"], "emails": len(done["emails"])}
