"""The Prometheus metrics: names, labels and values after real events -- real policies on a
fake clock, a real job queue on a SQLite file, a real saga -- and the collect-time gauges."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from antifragile import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    Constant,
    FakeClock,
    InvalidRequestError,
    Policy,
    Retry,
    TokenBucket,
    UpstreamUnavailableError,
)
from antifragile.jobs import JobContext, Jobs, Saga, Step, StepContext, Worker
from antifragile.observability import IntentDetected, Metrics
from antifragile.observability._metrics import METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics(clock: FakeClock) -> Metrics:
    return Metrics(clock=clock.time)


@pytest.fixture
async def jobs(clock: FakeClock, metrics: Metrics) -> AsyncIterator[Jobs]:
    app = Jobs(
        database_url="memory://",
        clock=clock,
        observer=metrics.jobs_observer,
    )
    metrics.watch_queues(app.stats)
    async with app:
        yield app


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def policy(clock: FakeClock, metrics: Metrics, **options: object) -> Policy:
    options.setdefault("retry", Retry(attempts=3, backoff=Constant(1.0)))
    made = Policy("shopify", clock=clock, **options)  # type: ignore[arg-type]
    made.add_observer(metrics.observer)
    return made


async def test_outbound_attempts_retries_and_latency_by_provider_and_operation(
    clock: FakeClock, metrics: Metrics
) -> None:
    """Each attempt is counted by provider, operation and outcome (success or error code),
    each retry by its code, and the attempt's duration lands in the histogram."""
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        await clock.asleep(0.2)
        if calls < 3:
            raise UpstreamUnavailableError("HTTP 503", status=503, provider="shopify")
        return "ok"

    made = policy(clock, metrics, breaker=None)
    assert await made.arun(flaky, operation="customers.create") == "ok"
    labels = {"provider": "shopify", "operation": "customers.create"}
    total = "antifragile_outbound_attempts_total"
    assert value(metrics, total, **labels, outcome="success") == 1
    assert value(metrics, total, **labels, outcome="UPSTREAM_UNAVAILABLE") == 2
    assert (
        value(metrics, "antifragile_outbound_retries_total", **labels, code="UPSTREAM_UNAVAILABLE")
        == 2
    )
    hist = "antifragile_outbound_attempt_duration_seconds"
    assert value(metrics, f"{hist}_count", **labels) == 3
    assert value(metrics, f"{hist}_sum", **labels) == pytest.approx(0.6)
    assert value(metrics, f"{hist}_bucket", **labels, le="0.25") == 3


async def test_permanent_failure_gives_up_with_its_reason(
    clock: FakeClock, metrics: Metrics
) -> None:
    """A permanent error is not retried: one failed attempt and one ``gave_up`` with the
    reason."""

    async def bad() -> None:
        raise InvalidRequestError("HTTP 422", status=422, provider="shopify")

    made = policy(clock, metrics, breaker=None)
    with pytest.raises(InvalidRequestError):
        await made.arun(bad, operation="customers.create")
    labels = {"provider": "shopify", "operation": "customers.create"}
    assert (
        value(metrics, "antifragile_outbound_attempts_total", **labels, outcome="VALIDATION") == 1
    )
    assert (
        value(metrics, "antifragile_outbound_gave_up_total", **labels, reason="not_retryable") == 1
    )


async def test_breaker_transitions_rejections_and_state_gauge(
    clock: FakeClock, metrics: Metrics
) -> None:
    """Failures open the breaker (a transition closed -> open); calls while open are counted
    as rejected ``by="circuit_breaker"``; the state gauge shows 1 for ``open``."""
    breaker = CircuitBreaker("shopify", minimum_calls=2, window=2, open_duration=30, clock=clock)
    made = policy(clock, metrics, breaker=breaker, retry=None, budget=None)
    metrics.watch_breakers(lambda: {"shopify": breaker})

    async def down() -> None:
        raise UpstreamUnavailableError("HTTP 503", status=503, provider="shopify")

    for _ in range(2):
        with pytest.raises(UpstreamUnavailableError):
            await made.arun(down, operation="orders.list")
    with pytest.raises(CircuitOpenError):
        await made.arun(down, operation="orders.list")
    assert (
        value(
            metrics,
            "antifragile_breaker_transitions_total",
            breaker="shopify",
            from_state="closed",
            to_state="open",
        )
        == 1
    )
    assert (
        value(
            metrics, "antifragile_outbound_rejected_total", provider="shopify", by="circuit_breaker"
        )
        == 1
    )
    assert value(metrics, "antifragile_breaker_state", breaker="shopify", state="open") == 1
    assert value(metrics, "antifragile_breaker_state", breaker="shopify", state="closed") == 0


async def test_limiter_waits_and_bulkhead_rejections(clock: FakeClock, metrics: Metrics) -> None:
    """A call the token bucket delays is counted with its wait; a call a full bulkhead refuses
    is counted as rejected ``by="bulkhead"``."""
    limited = policy(clock, metrics, breaker=None, rate=TokenBucket(2.0, burst=1))

    async def ok() -> str:
        return "ok"

    for _ in range(3):
        await limited.arun(ok, operation="send")
    assert value(metrics, "antifragile_limiter_waits_total", provider="shopify") == 2
    assert value(metrics, "antifragile_limiter_wait_seconds_sum", provider="shopify") == 1.0

    release = asyncio.Event()

    async def held() -> str:
        await release.wait()
        return "ok"

    crowded = policy(clock, metrics, breaker=None, retry=None, budget=None, bulkhead=Bulkhead(1))
    first = asyncio.create_task(crowded.arun(held, operation="send"))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError):
        await crowded.arun(held, operation="send")
    release.set()
    assert await first == "ok"
    assert (
        value(metrics, "antifragile_outbound_rejected_total", provider="shopify", by="bulkhead")
        == 1
    )


async def test_jobs_lifecycle_and_queue_gauges(
    jobs: Jobs, clock: FakeClock, metrics: Metrics
) -> None:
    """Enqueued, started, succeeded, failed and dead jobs are counted by job and queue (and
    error code); queue depth, lag and the dead-letter size come from ``jobs.stats()`` when
    scraped."""

    @jobs.job(queue="email", retry=Retry(attempts=2, backoff=Constant(60)))
    async def send(ctx: JobContext, fail: bool) -> str:
        if fail:
            raise UpstreamUnavailableError("HTTP 503", status=503, provider="resend")
        return "sent"

    await send.enqueue(False)
    await send.enqueue(True)
    await send.configure(idempotency_key="once").enqueue(False)
    await send.configure(idempotency_key="once").enqueue(False)  # same key: not a new job
    clock.advance(5)
    await metrics.refresh(force=True)
    assert value(metrics, "antifragile_queue_depth", queue="email") == 3
    assert value(metrics, "antifragile_queue_lag_seconds", queue="email") == pytest.approx(5)
    assert value(metrics, "antifragile_jobs_enqueued_total", job="send", queue="email") == 3

    worker = Worker(jobs)
    await worker.run_until_idle()
    clock.advance(60)
    await worker.run_until_idle()
    labels = {"job": "send", "queue": "email"}
    assert value(metrics, "antifragile_jobs_started_total", **labels) == 4
    assert value(metrics, "antifragile_jobs_succeeded_total", **labels) == 2
    failed = "antifragile_jobs_failed_total"
    assert value(metrics, failed, **labels, code="UPSTREAM_UNAVAILABLE") == 2
    assert value(metrics, "antifragile_jobs_dead_total", **labels, code="UPSTREAM_UNAVAILABLE") == 1
    assert value(metrics, "antifragile_job_duration_seconds_count", **labels) == 4
    assert value(metrics, "antifragile_job_start_delay_seconds_count", queue="email") == 4

    text = (await metrics.render()).decode()  # refreshed: older than the cache's 5 s
    assert 'antifragile_dlq_size{queue="email"} 1.0' in text
    assert 'antifragile_queue_depth{queue="email"} 0.0' in text
    assert 'antifragile_queue_jobs{queue="email",state="succeeded"} 2.0' in text


async def test_queue_stats_are_cached_between_scrapes(clock: FakeClock, metrics: Metrics) -> None:
    """A scrape within ``queue_ttl`` of the last fetch reuses it: the store is not asked."""
    fetched = 0

    async def stats() -> list[object]:
        nonlocal fetched
        fetched += 1
        return []

    metrics.watch_queues(stats)  # type: ignore[arg-type]
    await metrics.render()
    await metrics.render()
    assert fetched == 1
    clock.advance(metrics.queue_ttl)
    await metrics.render()
    assert fetched == 2


async def test_saga_compensations_are_counted(
    jobs: Jobs, clock: FakeClock, metrics: Metrics
) -> None:
    """When a step fails for good, each compensation that runs is counted by saga, step and
    outcome."""
    undone: list[str] = []

    async def reserve(ctx: StepContext, data: object) -> str:
        return "r-1"

    async def unreserve(ctx: StepContext, data: object) -> None:
        undone.append("reserve")

    async def charge(ctx: StepContext, data: object) -> None:
        raise InvalidRequestError("card declined", status=402, provider="payments")

    saga = Saga(
        jobs,
        "checkout",
        [Step(reserve, compensate=unreserve), Step(charge)],
        step_retry=Retry(attempts=1),
    )
    await saga.start({"order": 1})
    await Worker(jobs).run_until_idle()
    assert undone == ["reserve"]
    assert (
        value(
            metrics,
            "antifragile_saga_compensations_total",
            saga="checkout",
            step="reserve",
            outcome="succeeded",
        )
        == 1
    )


def test_intents_inbound_and_rejections(metrics: Metrics) -> None:
    """Intents are counted by intent and classifier with their confidence; inbound events by
    channel (new and duplicate); refused deliveries by channel and code."""
    observer = metrics.jobs_observer
    for confidence in (0.9, 0.55):
        observer.on_event(
            IntentDetected(
                policy="default",
                operation="whatsapp",
                intent="ORDER_REQUEST",
                confidence=confidence,
                source="keywords",
            )
        )
    assert (
        value(metrics, "antifragile_intents_total", intent="ORDER_REQUEST", source="keywords") == 2
    )
    hist = "antifragile_intent_confidence"
    assert value(metrics, f"{hist}_bucket", intent="ORDER_REQUEST", le="0.6") == 1
    assert value(metrics, f"{hist}_sum", intent="ORDER_REQUEST") == pytest.approx(1.45)

    metrics.inbound("whatsapp", received=2, duplicates=1)
    metrics.inbound("whatsapp", received=1)
    metrics.rejected("twilio", "SIGNATURE_INVALID")
    assert value(metrics, "antifragile_inbound_received_total", channel="whatsapp") == 3
    assert value(metrics, "antifragile_inbound_duplicates_total", channel="whatsapp") == 1
    assert (
        value(
            metrics,
            "antifragile_inbound_rejected_total",
            channel="twilio",
            code="SIGNATURE_INVALID",
        )
        == 1
    )


def test_each_app_has_its_own_registry(clock: FakeClock) -> None:
    """Two Metrics never share a sample (no global registry to reset between tests)."""
    one, two = Metrics(clock=clock.time), Metrics(clock=clock.time)
    one.inbound("whatsapp", received=1)
    assert value(one, "antifragile_inbound_received_total", channel="whatsapp") == 1
    assert value(two, "antifragile_inbound_received_total", channel="whatsapp") == 0


async def test_every_metric_is_named_and_documented(metrics: Metrics) -> None:
    """Every exported family is in ``METRIC_NAMES`` (and the reverse, once the collect-time
    ones are fed), each name is in the module's table and in docs/reference/metrics.md."""

    async def stats() -> list[object]:
        return []

    metrics.watch_queues(stats)  # type: ignore[arg-type]
    metrics.watch_breakers(dict)
    metrics.jobs_observer.on_event(
        IntentDetected(policy="t", operation="api", intent="UNKNOWN", confidence=0.0)
    )
    text = (await metrics.render()).decode()
    exported = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    exported = {name for name in exported if not name.endswith("_created")}
    assert exported <= set(METRIC_NAMES)
    # the collect-time families appear once there is something to show
    assert set(METRIC_NAMES) - exported <= {
        "antifragile_queue_jobs",
        "antifragile_queue_depth",
        "antifragile_queue_lag_seconds",
        "antifragile_dlq_size",
        "antifragile_breaker_state",
    }
    from antifragile.observability import _metrics

    table = _metrics.__doc__ or ""
    reference = (ROOT / "docs" / "reference" / "metrics.md").read_text()
    for name in METRIC_NAMES:
        short = name.removeprefix("antifragile_")
        assert short in table, name
        assert name in reference, name


def _attempt_families(registry: Any) -> str:
    """The attempt counter and duration histogram of *registry* as scraped, ``_created``
    times blanked."""
    text = generate_latest(registry).decode()
    lines = [
        re.sub(r"^(\S+_created\{.*\}) \S+$", r"\1 T", line)
        for line in text.splitlines()
        if "outbound_attempt" in line
    ]
    return "\n".join(lines)


def test_the_attempt_series_are_what_the_client_library_would_export() -> None:
    """The attempt counter and histogram, kept in plain Python, scrape exactly as a
    ``prometheus_client`` Counter and Histogram fed the same attempts: names, help, types,
    labels, series order, cumulative buckets (values on a bound included), counts and sums."""
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from antifragile.observability._metrics import DURATION_BUCKETS, NAMESPACE

    reference = CollectorRegistry()
    counter = Counter(
        "outbound_attempts",
        "Outbound attempts by provider, operation and outcome (success or error code)",
        ["provider", "operation", "outcome"],
        namespace=NAMESPACE,
        registry=reference,
    )
    histogram = Histogram(
        "outbound_attempt_duration_seconds",
        "Duration of outbound attempts",
        ["provider", "operation"],
        namespace=NAMESPACE,
        registry=reference,
        buckets=DURATION_BUCKETS,
    )
    metrics = Metrics()
    attempts = [
        ("shopify", "orders.get", 0.125, None),
        ("shopify", None, 0.25, "TIMEOUT"),
        ("twilio", "messages.create", 0.5, None),
        ("shopify", "orders.get", 2.5, "UPSTREAM_UNAVAILABLE"),
        ("shopify", "", 60.0, None),  # "" and None are the same operation label
        ("shopify", "orders.get", 61.0, None),
        ("twilio", "messages.create", 0.0, "RATE_LIMITED"),
        ("shopify", "orders.get", 1.0, None),
    ]
    for provider, operation, duration, code in attempts:
        metrics.observer.attempt_recorder(provider)(operation, 1, duration, code, None, False)
        outcome = "success" if code is None else code
        counter.labels(provider, operation or "", outcome).inc()
        histogram.labels(provider, operation or "").observe(duration)
    ours = _attempt_families(metrics.registry)
    assert ours == _attempt_families(reference)
    assert 'le="60.0",operation="orders.get",provider="shopify"} 3.0' in ours


def test_attempts_from_many_threads_are_all_counted() -> None:
    """Attempts recorded concurrently by several threads through real policies are all counted
    (none lost without a lock), and still counted once those threads have ended."""
    metrics = Metrics()
    policy = Policy("crm", retry=None, breaker=None, observer=metrics.observer)
    threads, per_thread = 8, 500
    start = threading.Barrier(threads)

    def work() -> None:
        start.wait()
        for _ in range(per_thread):
            policy.call(lambda: None)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    labels = {"provider": "crm", "operation": ""}
    total = "antifragile_outbound_attempts_total"
    count = "antifragile_outbound_attempt_duration_seconds_count"
    for _ in range(2):  # the ended threads' counts are folded, not dropped
        assert value(metrics, total, **labels, outcome="success") == threads * per_thread
        assert value(metrics, count, **labels) == threads * per_thread
    policy.call(lambda: None)
    assert value(metrics, total, **labels, outcome="success") == threads * per_thread + 1


def test_an_attempt_event_sent_to_the_metrics_observer_is_counted() -> None:
    """``AttemptFinished`` events given to the observer directly (not through a policy) are
    counted like attempts reported by a policy."""
    from antifragile.observability import AttemptFinished

    metrics = Metrics()
    metrics.observer.on_event(
        AttemptFinished(policy="crm", operation="get", number=1, duration=0.02, code="TIMEOUT")
    )
    labels = {"provider": "crm", "operation": "get"}
    assert value(metrics, "antifragile_outbound_attempts_total", **labels, outcome="TIMEOUT") == 1
    hist = "antifragile_outbound_attempt_duration_seconds"
    assert value(metrics, f"{hist}_bucket", **labels, le="0.01") == 0
    assert value(metrics, f"{hist}_bucket", **labels, le="0.025") == 1
    assert value(metrics, f"{hist}_sum", **labels) == pytest.approx(0.02)
