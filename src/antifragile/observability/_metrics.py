"""Prometheus metrics: every metric the project exports, in one place.

One :class:`Metrics` per application holds its own :class:`~prometheus_client.CollectorRegistry`
(no global state: two apps in one process, or two tests, never share a sample). It is fed by

* :attr:`Metrics.observer` -- attach it to the policies of the outbound clients
  (``policy.add_observer(metrics.observer)``): attempts, latency, retries, rejections, breaker
  transitions, limiter waits;
* :attr:`Metrics.jobs_observer` -- give it to ``Jobs(observer=...)``: jobs enqueued, started,
  finished, the intents the pipeline detects, saga compensations;
* direct calls on the webhook hot path (:meth:`Metrics.inbound`, :meth:`Metrics.rejected`): a
  counter increment, nothing else;
* collect-time readers: :meth:`Metrics.watch_queues` (depth, lag and DLQ size from
  ``jobs.stats()``, refreshed at most every few seconds by :meth:`Metrics.refresh`) and
  :meth:`Metrics.watch_breakers` (each breaker's state when scraped).

:meth:`Metrics.render` is the Prometheus text format of the registry (``GET /metrics``).

The metrics (all prefixed ``antifragile_``; counters end in ``_total``):

=============================================  =========  ==========================================
name                                           type       labels
=============================================  =========  ==========================================
``inbound_received_total``                     counter    channel
``inbound_duplicates_total``                   counter    channel
``inbound_rejected_total``                     counter    channel, code
``intents_total``                              counter    intent, source
``intent_classifier_total``                    counter    classifier, reason
``intent_confidence``                          histogram  intent
``delivery_statuses_total``                    counter    provider, status, matched
``outbound_attempts_total``                    counter    provider, operation, outcome
``outbound_attempt_duration_seconds``          histogram  provider, operation
``outbound_retries_total``                     counter    provider, operation, code
``outbound_gave_up_total``                     counter    provider, operation, reason
``outbound_rejected_total``                    counter    provider, by
``outbound_fallbacks_total``                   counter    provider, source
``breaker_state``                              gauge      breaker, state
``breaker_transitions_total``                  counter    breaker, from_state, to_state
``limiter_waits_total``                        counter    provider
``limiter_wait_seconds``                       histogram  provider
``state_store_fallbacks_total``                counter    provider, component, degraded
``jobs_enqueued_total``                        counter    job, queue
``jobs_started_total``                         counter    job, queue
``jobs_succeeded_total``                       counter    job, queue
``jobs_failed_total``                          counter    job, queue, code
``jobs_dead_total``                            counter    job, queue, code
``jobs_deferred_total``                        counter    job, queue
``job_duration_seconds``                       histogram  job, queue
``job_start_delay_seconds``                    histogram  queue
``queue_jobs``                                 gauge      queue, state
``queue_depth``                                gauge      queue
``queue_lag_seconds``                          gauge      queue
``dlq_size``                                   gauge      queue
``saga_compensations_total``                   counter    saga, step, outcome
=============================================  =========  ==========================================

``docs/reference/metrics.md`` says what each one means.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import metrics as _client_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from antifragile.observability._events import (
    AttemptFinished,
    AttemptRecorder,
    BreakerTransition,
    CallRejected,
    DeliveryStatusRecorded,
    Event,
    FallbackUsed,
    GaveUp,
    IntentDetected,
    JobEnqueued,
    JobFinished,
    JobStarted,
    LimiterWait,
    RetryScheduled,
    SagaCompensated,
    StoreFallback,
)

__all__ = [
    "CONTENT_TYPE",
    "METRIC_NAMES",
    "NAMESPACE",
    "Metrics",
    "MetricsObserver",
]

#: the prefix of every metric
NAMESPACE = "antifragile"
#: the content type of :meth:`Metrics.render`'s output
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: latency buckets of outbound attempts and jobs (seconds)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: buckets of waits and delays (seconds): from milliseconds to hours
DELAY_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
#: buckets of an intent's confidence
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

#: the breaker states exported by ``antifragile_breaker_state``
BREAKER_STATES = ("closed", "open", "half_open", "forced_open", "disabled")
#: the job states whose count makes a queue's depth (waiting to run)
WAITING_STATES = ("scheduled", "queued", "retrying")

#: every metric's exported name, for tests and the docs
METRIC_NAMES: tuple[str, ...] = (
    "antifragile_inbound_received_total",
    "antifragile_inbound_duplicates_total",
    "antifragile_inbound_rejected_total",
    "antifragile_intents_total",
    "antifragile_intent_classifier_total",
    "antifragile_intent_confidence",
    "antifragile_delivery_statuses_total",
    "antifragile_outbound_attempts_total",
    "antifragile_outbound_attempt_duration_seconds",
    "antifragile_outbound_retries_total",
    "antifragile_outbound_gave_up_total",
    "antifragile_outbound_rejected_total",
    "antifragile_outbound_fallbacks_total",
    "antifragile_breaker_state",
    "antifragile_breaker_transitions_total",
    "antifragile_limiter_waits_total",
    "antifragile_limiter_wait_seconds",
    "antifragile_state_store_fallbacks_total",
    "antifragile_jobs_enqueued_total",
    "antifragile_jobs_started_total",
    "antifragile_jobs_succeeded_total",
    "antifragile_jobs_failed_total",
    "antifragile_jobs_dead_total",
    "antifragile_jobs_deferred_total",
    "antifragile_job_duration_seconds",
    "antifragile_job_start_delay_seconds",
    "antifragile_queue_jobs",
    "antifragile_queue_depth",
    "antifragile_queue_lag_seconds",
    "antifragile_dlq_size",
    "antifragile_saga_compensations_total",
)


class QueueStatsLike(Protocol):
    """What the queue collector reads of :class:`~antifragile.jobs.QueueStats`."""

    @property
    def queue(self) -> str: ...

    @property
    def counts(self) -> Mapping[str, int]: ...

    @property
    def oldest_ready_at(self) -> float | None: ...


class BreakerLike(Protocol):
    """What the breaker collector reads of a circuit breaker: its ``state`` (an enum whose
    ``value`` is one of :data:`BREAKER_STATES`)."""

    @property
    def state(self) -> Any: ...


StatsReader = Callable[[], Awaitable[Sequence[QueueStatsLike]]]
BreakersReader = Callable[[], Mapping[str, BreakerLike]]


def _outcome(code: str | None) -> str:
    return "success" if code is None else code


class _StateCollector(Collector):
    """Collect-time gauges: the queues (from the cached stats) and the breakers."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # collected on each scrape; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        yield from self._metrics._queue_families()
        yield from self._metrics._breaker_families()


def _labels(policy: str, key: Any) -> tuple[str, str, str]:
    """(provider, operation, outcome) of a cell's key: an operation (a success) or an
    (operation, code) pair."""
    operation, code = key if isinstance(key, tuple) else (key, None)
    return policy, "" if operation is None else str(operation), _outcome(code)


class AttemptMetrics(Collector):
    """``antifragile_outbound_attempts_total`` and
    ``antifragile_outbound_attempt_duration_seconds``, kept in plain Python and exported at
    scrape time.

    They are updated on every attempt of every observed call, so an update is a dictionary
    look-up, a ``bisect`` on the bucket bounds and two increments on a list -- no lock and no
    label resolution. Each thread counts in cells of its own (a :class:`threading.local` per
    policy): only that thread writes them, so no update is ever lost, and a scrape adds the
    threads' cells up (those of finished threads are folded into one total). What a scrape
    exports is what :class:`~prometheus_client.Counter` and
    :class:`~prometheus_client.Histogram` would: the same names, help, labels, cumulative
    buckets, ``_count``, ``_sum`` and ``_created`` samples, series in the order first seen.
    """

    COUNTER = f"{NAMESPACE}_outbound_attempts"
    COUNTER_HELP = "Outbound attempts by provider, operation and outcome (success or error code)"
    HISTOGRAM = f"{NAMESPACE}_outbound_attempt_duration_seconds"
    HISTOGRAM_HELP = "Duration of outbound attempts"

    def __init__(self, buckets: Sequence[float] = DURATION_BUCKETS) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        if list(self.bounds) != sorted(self.bounds) or math.inf in self.bounds:
            raise ValueError("buckets must be finite and sorted")
        self._le: tuple[str, ...] = tuple(
            floatToGoString(bound)  # type: ignore[no-untyped-call]  # the client's own spelling
            for bound in (*self.bounds, math.inf)
        )
        # a cell: one count per bucket (the last is +Inf), then the sum of the durations
        self._width = len(self.bounds) + 2
        # guards the lists below and the shards' registration, never an update
        self._lock = threading.Lock()
        # per thread and policy: its cells, keyed by operation (a success) or (operation, code)
        self._shards: list[tuple[threading.Thread, str, dict[Any, list[float]]]] = []
        self._retired: dict[tuple[str, str, str], list[float]] = {}
        self._count_created: dict[tuple[str, str, str], float] = {}
        self._histogram_created: dict[tuple[str, str], float] = {}
        self._recorders: dict[str, AttemptRecorder] = {}

    def recorder(self, policy: str) -> AttemptRecorder:
        """The function that records one attempt of *policy* (see
        :class:`~antifragile.observability.AttemptRecorder`)."""
        found = self._recorders.get(policy)
        if found is None:
            found = self._recorders.setdefault(policy, self._recorder(str(policy)))
        return found

    def _recorder(self, policy: str) -> AttemptRecorder:
        local = threading.local()
        bounds, total = self.bounds, self._width - 1
        lock, shards, width = self._lock, self._shards, self._width
        count_created, histogram_created = self._count_created, self._histogram_created

        def cells_of_this_thread() -> dict[Any, list[float]]:
            cells: dict[Any, list[float]] = {}
            local.cells = cells
            with lock:
                shards.append((threading.current_thread(), policy, cells))
            return cells

        def new_cell(
            cells: dict[Any, list[float]], operation: str | None, code: str | None
        ) -> list[float]:
            op = "" if operation is None else str(operation)
            now = time.time()
            with lock:
                count_created.setdefault((policy, op, _outcome(code)), now)
                histogram_created.setdefault((policy, op), now)
            cell = cells[operation if code is None else (operation, code)] = [0.0] * width
            return cell

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
                cells = local.cells
            except AttributeError:
                cells = cells_of_this_thread()
            # a success is keyed by its operation alone: no tuple to build on the common path
            cell = cells.get(operation if code is None else (operation, code))
            if cell is None:
                cell = new_cell(cells, operation, code)
            cell[bisect_left(bounds, duration)] += 1
            cell[total] += duration

        return record

    def _totals(
        self,
    ) -> tuple[
        dict[tuple[str, str, str], list[float]],
        dict[tuple[str, str, str], float],
        dict[tuple[str, str], float],
    ]:
        """Every thread's cells added up, by (provider, operation, outcome); the finished
        threads' folded into the retired totals on the way."""
        totals: dict[tuple[str, str, str], list[float]] = {}

        def add(
            into: dict[tuple[str, str, str], list[float]],
            key: tuple[str, str, str],
            cell: list[float],
        ) -> None:
            found = into.get(key)
            if found is None:
                into[key] = list(cell)
            else:
                for i, value in enumerate(cell):
                    found[i] += value

        with self._lock:
            alive = []
            for shard in self._shards:
                thread, policy, cells = shard
                if thread.is_alive():
                    alive.append(shard)
                    continue
                for key, cell in cells.copy().items():  # it writes no more
                    add(self._retired, _labels(policy, key), cell)
            self._shards[:] = alive
            for key, cell in self._retired.items():
                add(totals, key, cell)
            count_created = dict(self._count_created)
            histogram_created = dict(self._histogram_created)
        for _thread, policy, cells in alive:
            for key, cell in cells.copy().items():
                add(totals, _labels(policy, key), list(cell))
        return totals, count_created, histogram_created

    def describe(self) -> Iterable[Metric]:
        return [
            Metric(self.COUNTER, self.COUNTER_HELP, "counter"),
            Metric(self.HISTOGRAM, self.HISTOGRAM_HELP, "histogram"),
        ]

    def collect(self) -> Iterable[Metric]:
        totals, count_created, histogram_created = self._totals()
        created = _client_metrics._use_created  # PROMETHEUS_DISABLE_CREATED_SERIES, as the client
        last = self._width - 1
        counter = Metric(self.COUNTER, self.COUNTER_HELP, "counter")
        per_operation: dict[tuple[str, str], list[float]] = {}
        for key, since in count_created.items():
            policy, op, outcome = key
            cell = totals.get(key)
            labels = {"provider": policy, "operation": op, "outcome": outcome}
            counter.add_sample(
                f"{self.COUNTER}_total", labels, float(sum(cell[:last])) if cell else 0.0
            )
            if created:
                counter.add_sample(f"{self.COUNTER}_created", labels, since)
            if cell is not None:
                found = per_operation.setdefault((policy, op), [0.0] * self._width)
                for i, value in enumerate(cell):
                    found[i] += value
        histogram = Metric(self.HISTOGRAM, self.HISTOGRAM_HELP, "histogram")
        for (policy, op), since in histogram_created.items():
            cell = per_operation.get((policy, op), [0.0] * self._width)
            acc = 0.0
            for le, value in zip(self._le, cell, strict=False):
                acc += value
                histogram.add_sample(
                    f"{self.HISTOGRAM}_bucket", {"provider": policy, "operation": op, "le": le}, acc
                )
            labels = {"provider": policy, "operation": op}
            histogram.add_sample(f"{self.HISTOGRAM}_count", labels, acc)
            if self.bounds[0] >= 0:
                histogram.add_sample(f"{self.HISTOGRAM}_sum", labels, cell[last])
            if created:
                histogram.add_sample(f"{self.HISTOGRAM}_created", labels, since)
        return [counter, histogram]


class Metrics:
    """The metrics of one application (see the module docs).

    *registry* defaults to a new one; *clock* (``() -> float``, wall seconds) dates the queue
    lag and the refresh cache; *queue_ttl* is how long fetched queue stats are reused.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        clock: Callable[[], float] = time.time,
        queue_ttl: float = 5.0,
        process: bool = False,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.clock = clock
        self.queue_ttl = queue_ttl
        reg = self.registry
        ns = NAMESPACE

        def counter(name: str, doc: str, labels: Sequence[str]) -> Counter:
            return Counter(name, doc, labels, namespace=ns, registry=reg)

        def histogram(
            name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
        ) -> Histogram:
            return Histogram(name, doc, labels, namespace=ns, registry=reg, buckets=buckets)

        # inbound
        self.inbound_received = counter(
            "inbound_received", "Inbound events verified and recorded (new ones)", ["channel"]
        )
        self.inbound_duplicates = counter(
            "inbound_duplicates", "Inbound events already recorded (redeliveries)", ["channel"]
        )
        self.inbound_rejected = counter(
            "inbound_rejected", "Webhook deliveries refused, by error code", ["channel", "code"]
        )
        self.intents = counter(
            "intents", "Messages classified, by intent and classifier", ["intent", "source"]
        )
        self.intent_classifier = counter(
            "intent_classifier",
            "Messages classified, by the classifier that answered (llm or keywords) and why "
            "the model did not (none when it did)",
            ["classifier", "reason"],
        )
        self.intent_confidence = histogram(
            "intent_confidence", "Confidence of detected intents", ["intent"], CONFIDENCE_BUCKETS
        )
        self.delivery_statuses = counter(
            "delivery_statuses",
            "Delivery statuses recorded, by provider, normalised status and whether they "
            "belonged to a known message",
            ["provider", "status", "matched"],
        )
        # outbound
        # attempts and their durations: the per-attempt hot path, kept in plain Python
        self.attempts = AttemptMetrics()
        reg.register(self.attempts)
        self.outbound_retries = counter(
            "outbound_retries", "Outbound retries scheduled", ["provider", "operation", "code"]
        )
        self.outbound_gave_up = counter(
            "outbound_gave_up",
            "Outbound calls that stopped retrying",
            ["provider", "operation", "reason"],
        )
        self.outbound_rejected = counter(
            "outbound_rejected",
            "Calls refused by a local policy (circuit_breaker, bulkhead, rate_limiter, "
            "retry_budget, deadline)",
            ["provider", "by"],
        )
        self.outbound_fallbacks = counter(
            "outbound_fallbacks", "Fallback answers instead of a call", ["provider", "source"]
        )
        self.breaker_transitions = counter(
            "breaker_transitions",
            "Circuit breaker state changes",
            ["breaker", "from_state", "to_state"],
        )
        self.limiter_waits = counter(
            "limiter_waits", "Calls delayed by a rate limiter", ["provider"]
        )
        self.limiter_wait_seconds = histogram(
            "limiter_wait_seconds",
            "How long the rate limiter delayed calls",
            ["provider"],
            DELAY_BUCKETS,
        )
        self.store_fallbacks = counter(
            "state_store_fallbacks",
            "Shared breakers or limiters that lost (degraded=true) or regained their store",
            ["provider", "component", "degraded"],
        )
        # jobs
        self.jobs_enqueued = counter("jobs_enqueued", "Jobs enqueued", ["job", "queue"])
        self.jobs_started = counter("jobs_started", "Job runs started", ["job", "queue"])
        self.jobs_succeeded = counter("jobs_succeeded", "Job runs that succeeded", ["job", "queue"])
        self.jobs_failed = counter(
            "jobs_failed", "Job runs that failed (retried or dead)", ["job", "queue", "code"]
        )
        self.jobs_dead = counter(
            "jobs_dead", "Jobs moved to the dead-letter queue", ["job", "queue", "code"]
        )
        self.jobs_deferred = counter(
            "jobs_deferred",
            "Job runs deferred without an attempt (open breaker, rate)",
            ["job", "queue"],
        )
        self.job_duration = histogram(
            "job_duration_seconds", "Duration of job runs", ["job", "queue"], DURATION_BUCKETS
        )
        self.job_start_delay = histogram(
            "job_start_delay_seconds",
            "How long after it was due a job started",
            ["queue"],
            DELAY_BUCKETS,
        )
        self.saga_compensations = counter(
            "saga_compensations",
            "Saga compensations run, by outcome (succeeded or failed)",
            ["saga", "step", "outcome"],
        )
        # collect-time state
        self._stats_reader: StatsReader | None = None
        self._stats: Sequence[QueueStatsLike] = ()
        self._stats_at: float | None = None
        self._breakers_reader: BreakersReader | None = None
        self._breaker_seen: dict[str, str] = {}
        self._received: dict[str, Any] = {}
        self._duplicates: dict[str, Any] = {}
        reg.register(_StateCollector(self))
        if process:
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=reg)
        self.observer = MetricsObserver(self)
        self.jobs_observer = _JobsObserver(self)

    # -- the webhook hot path -------------------------------------------------------------------

    def inbound(self, channel: str, *, received: int = 0, duplicates: int = 0) -> None:
        """Count *received* new and *duplicates* redelivered events of *channel*."""
        if received:
            child = self._received.get(channel)
            if child is None:
                child = self._received[channel] = self.inbound_received.labels(channel)
            child.inc(received)
        if duplicates:
            child = self._duplicates.get(channel)
            if child is None:
                child = self._duplicates[channel] = self.inbound_duplicates.labels(channel)
            child.inc(duplicates)

    def rejected(self, channel: str, code: str) -> None:
        """Count a refused webhook delivery of *channel* with error *code*."""
        self.inbound_rejected.labels(channel, code).inc()

    # -- collect-time readers -------------------------------------------------------------------

    def watch_queues(self, reader: StatsReader | None) -> None:
        """Export depth, lag and DLQ size from *reader* (``jobs.stats``), fetched by
        :meth:`refresh`; ``None`` stops exporting them (a worker process leaves them to the
        API's scrape)."""
        self._stats_reader = reader
        self._stats = ()
        self._stats_at = None

    def watch_breakers(self, reader: BreakersReader) -> None:
        """Export the state of the breakers *reader* returns, read at each scrape."""
        self._breakers_reader = reader

    async def refresh(self, *, force: bool = False) -> None:
        """Fetch the queue stats unless the last fetch is younger than ``queue_ttl``."""
        reader = self._stats_reader
        if reader is None:
            return
        now = self.clock()
        if not force and self._stats_at is not None and now - self._stats_at < self.queue_ttl:
            return
        self._stats = list(await reader())
        self._stats_at = now

    async def render(self) -> bytes:
        """The Prometheus text format of every metric (queue stats refreshed if stale)."""
        await self.refresh()
        return bytes(generate_latest(self.registry))

    def _queue_families(self) -> Iterator[Metric]:
        if self._stats_reader is None:
            return
        jobs = GaugeMetricFamily(
            f"{NAMESPACE}_queue_jobs", "Jobs in each queue, by state", labels=["queue", "state"]
        )
        depth = GaugeMetricFamily(
            f"{NAMESPACE}_queue_depth",
            "Jobs waiting to run (scheduled, queued or retrying)",
            labels=["queue"],
        )
        lag = GaugeMetricFamily(
            f"{NAMESPACE}_queue_lag_seconds",
            "Age of the oldest job that is due and not running (0 when none)",
            labels=["queue"],
        )
        dlq = GaugeMetricFamily(
            f"{NAMESPACE}_dlq_size", "Dead jobs awaiting an operator", labels=["queue"]
        )
        now = self._stats_at if self._stats_at is not None else self.clock()
        for stats in self._stats:
            for state, count in sorted(stats.counts.items()):
                jobs.add_metric([stats.queue, state], count)
            depth.add_metric([stats.queue], sum(stats.counts.get(s, 0) for s in WAITING_STATES))
            oldest = stats.oldest_ready_at
            lag.add_metric([stats.queue], 0.0 if oldest is None else max(0.0, now - oldest))
            dlq.add_metric([stats.queue], stats.counts.get("dead", 0))
        yield from (jobs, depth, lag, dlq)

    def _breaker_families(self) -> Iterator[Metric]:
        states = dict(self._breaker_seen)
        reader = self._breakers_reader
        if reader is not None:
            try:
                for name, breaker in reader().items():
                    state = breaker.state
                    states[name] = str(getattr(state, "value", state))
            except Exception:  # a scrape shows what it can
                pass
        if not states:
            return
        family = GaugeMetricFamily(
            f"{NAMESPACE}_breaker_state",
            "1 for each breaker's current state, 0 for the others",
            labels=["breaker", "state"],
        )
        for name in sorted(states):
            for state in BREAKER_STATES:
                family.add_metric([name, state], 1.0 if states[name] == state else 0.0)
        yield family


class MetricsObserver:
    """The observer of outbound policies: turns their events into samples (see
    :class:`Metrics`; ``metrics.observer`` is one)."""

    __slots__ = ("_handlers", "metrics")

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            AttemptFinished: self._attempt,
            RetryScheduled: self._retry,
            GaveUp: self._gave_up,
            CallRejected: self._rejected,
            BreakerTransition: self._transition,
            LimiterWait: self._wait,
            FallbackUsed: self._fallback,
            StoreFallback: self._store,
        }

    def on_event(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def attempt_recorder(self, policy: str) -> AttemptRecorder:
        """Attempts of *policy* straight into the counters, without events (the hot path)."""
        return self.metrics.attempts.recorder(policy)

    def _attempt(self, e: AttemptFinished) -> None:
        self.metrics.attempts.recorder(e.policy)(
            e.operation, e.number, e.duration, e.code, e.status, e.slow
        )

    def _retry(self, e: RetryScheduled) -> None:
        self.metrics.outbound_retries.labels(e.policy, e.operation or "", e.code).inc()

    def _gave_up(self, e: GaveUp) -> None:
        self.metrics.outbound_gave_up.labels(e.policy, e.operation or "", e.reason).inc()

    def _rejected(self, e: CallRejected) -> None:
        self.metrics.outbound_rejected.labels(e.policy, e.by).inc()

    def _transition(self, e: BreakerTransition) -> None:
        m = self.metrics
        m.breaker_transitions.labels(e.policy, e.from_state, e.to_state).inc()
        m._breaker_seen[e.policy] = e.to_state

    def _wait(self, e: LimiterWait) -> None:
        m = self.metrics
        m.limiter_waits.labels(e.policy).inc()
        m.limiter_wait_seconds.labels(e.policy).observe(e.wait)

    def _fallback(self, e: FallbackUsed) -> None:
        self.metrics.outbound_fallbacks.labels(e.policy, e.source).inc()

    def _store(self, e: StoreFallback) -> None:
        degraded = "true" if e.degraded else "false"
        self.metrics.store_fallbacks.labels(e.policy, e.component, degraded).inc()


class _JobsObserver:
    """The observer of a :class:`~antifragile.jobs.Jobs` registry (``Jobs(observer=...)``):
    job lifecycle, intents, saga compensations. The worker's per-attempt events
    (``AttemptFinished`` with the job's name as ``policy``) are left alone: ``JobFinished``
    counts runs."""

    __slots__ = ("_handlers", "metrics")

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            JobEnqueued: self._enqueued,
            JobStarted: self._started,
            JobFinished: self._finished,
            IntentDetected: self._intent,
            DeliveryStatusRecorded: self._delivery,
            SagaCompensated: self._compensated,
        }

    def on_event(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _enqueued(self, e: JobEnqueued) -> None:
        if e.count > 0:
            self.metrics.jobs_enqueued.labels(e.policy, e.operation or "").inc(e.count)

    def _started(self, e: JobStarted) -> None:
        m, queue = self.metrics, e.operation or ""
        m.jobs_started.labels(e.policy, queue).inc()
        m.job_start_delay.labels(queue).observe(max(0.0, e.delay))

    def _finished(self, e: JobFinished) -> None:
        m, queue = self.metrics, e.operation or ""
        outcome = e.outcome
        if outcome == "succeeded":
            m.jobs_succeeded.labels(e.policy, queue).inc()
        elif outcome in ("retry", "dead"):
            code = e.code or "UNKNOWN"
            m.jobs_failed.labels(e.policy, queue, code).inc()
            if outcome == "dead":
                m.jobs_dead.labels(e.policy, queue, code).inc()
        elif outcome == "defer":
            m.jobs_deferred.labels(e.policy, queue).inc()
            return
        else:  # released at shutdown: not a run that counts
            return
        m.job_duration.labels(e.policy, queue).observe(e.duration)

    def _intent(self, e: IntentDetected) -> None:
        m = self.metrics
        m.intents.labels(e.intent, e.source).inc()
        m.intent_confidence.labels(e.intent).observe(e.confidence)

    def _delivery(self, e: DeliveryStatusRecorded) -> None:
        matched = "true" if e.matched else "false"
        self.metrics.delivery_statuses.labels(e.policy, e.operation or "other", matched).inc()

    def _compensated(self, e: SagaCompensated) -> None:
        outcome = "succeeded" if e.succeeded else "failed"
        self.metrics.saga_compensations.labels(e.policy, e.operation or "", outcome).inc()
