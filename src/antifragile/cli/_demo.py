"""The demo: one workload against a misbehaving provider, sent twice.

A :class:`~antifragile.sandbox.FlakyServer` plays a fault timeline (503 bursts, 429 with
``Retry-After``, slow answers and resets, an outage, a recovery). The same calls -- half
``GET /orders/{n}``, half ``POST /orders`` with an idempotency key -- arrive at a steady rate,
at most ``concurrency`` at a time, first through :class:`~antifragile.ResilientClient` with a
full policy, then through plain httpx with a naive loop that retries at once, up to five times,
on any error. Each run gets a fresh server playing the same timeline with the same seeds.

Every number in the summary is measured: outcomes and latencies on the client side (a call's
latency runs from its start to its outcome), requests as counted by the server.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from antifragile.errors import classify_response, error_body
from antifragile.http import ResilientClient
from antifragile.observability import BreakerTransition, RecordingObserver
from antifragile.policies import (
    Bulkhead,
    CircuitBreaker,
    Exponential,
    Policy,
    Retry,
    RetryBudget,
    TokenBucket,
)
from antifragile.sandbox import Chaos, Fault, FlakyServer, Phase, Quota

#: how many times the naive loop sends a failed call again
NAIVE_RETRIES = 5
#: the name of the phase during which the provider is down
OUTAGE = "outage"


@dataclass(frozen=True, slots=True)
class Pace:
    """The timings of a demo (seconds, except ``arrival_rate``: calls per second)."""

    arrival_rate: float
    attempt_timeout: float  # the policy's per-attempt timeout; the naive client's httpx timeout
    call_timeout: float  # the policy's total timeout for a call, retries and waits included
    backoff: float  # the first back-off ceiling, doubling from there
    slow_seconds: float  # how long a slow answer takes: longer than an attempt may
    quota_window: float  # the provider's quota window during the 429 phase
    open_duration: float  # how long the breaker stays open before probing
    budget_window: float  # the retry budget's sliding window


FULL_PACE = Pace(
    arrival_rate=20.0,
    attempt_timeout=1.0,
    call_timeout=4.0,
    backoff=0.1,
    slow_seconds=1.5,
    quota_window=1.0,
    open_duration=1.0,
    budget_window=5.0,
)
QUICK_PACE = Pace(
    arrival_rate=30.0,
    attempt_timeout=0.25,
    call_timeout=1.0,
    backoff=0.02,
    slow_seconds=0.4,
    quota_window=0.25,
    open_duration=0.3,
    budget_window=1.0,
)


@dataclass(frozen=True, slots=True)
class DemoConfig:
    calls: int
    concurrency: int
    seed: int
    quick: bool = False

    @property
    def pace(self) -> Pace:
        return QUICK_PACE if self.quick else FULL_PACE

    @property
    def window(self) -> float:
        """Seconds over which the calls arrive."""
        return self.calls / self.pace.arrival_rate


def build_phases(config: DemoConfig) -> list[Phase]:
    """The fault timeline: the times below are for a 15 s window, scaled to the actual one."""
    pace, seed = config.pace, config.seed
    k = config.window / 15.0
    slow = pace.slow_seconds
    quota = max(1, round(pace.arrival_rate * pace.quota_window * 0.5))

    def steady(start: float, end: float, offset: int) -> Phase:
        chaos = Chaos(p_slow=0.02, slow_seconds=slow, seed=seed + offset)
        return Phase(start * k, end * k, chaos, "steady")

    return [
        steady(0.0, 2.0, 0),
        Phase(2.0 * k, 2.3 * k, Fault.status(503), "503 burst"),
        steady(2.3, 3.0, 1),
        Phase(3.0 * k, 3.3 * k, Fault.status(503), "503 burst"),
        steady(3.3, 3.5, 2),
        Phase(3.5 * k, 5.0 * k, Quota(quota, per=pace.quota_window), "429 quota"),
        Phase(
            5.0 * k,
            6.5 * k,
            Chaos(p_slow=0.25, p_reset=0.15, slow_seconds=slow, seed=seed + 3),
            "slow + resets",
        ),
        Phase.outage(6.5 * k, 9.5 * k),
        Phase(
            9.5 * k,
            None,
            Chaos(p_503=0.05, p_slow=0.02, p_reset=0.02, slow_seconds=slow, seed=seed + 4),
            "recovery",
        ),
    ]


def describe(behaviour: Fault | Chaos | Quota) -> str:
    """What a phase does to requests, in a few words."""
    if isinstance(behaviour, Fault):
        return f"every request: {behaviour.final.code or behaviour.kind}"
    if isinstance(behaviour, Quota):
        return f"quota of {behaviour.limit} per {behaviour.per:g}s, then 429 + Retry-After"
    parts = []
    if behaviour.p_503:
        parts.append(f"503 {behaviour.p_503:.0%}")
    if behaviour.p_429:
        parts.append(f"429 {behaviour.p_429:.0%} (Retry-After {behaviour.retry_after:g}s)")
    if behaviour.p_slow:
        parts.append(f"slow {behaviour.p_slow:.0%} ({behaviour.slow_seconds:g}s)")
    if behaviour.p_reset:
        parts.append(f"reset {behaviour.p_reset:.0%}")
    return ", ".join(parts) or "healthy"


def timeline(config: DemoConfig) -> list[dict[str, Any]]:
    return [
        {
            "name": p.name,
            "start": round(p.start, 3),
            "end": None if p.end is None else round(p.end, 3),
            "behaviour": describe(p.behaviour),
        }
        for p in build_phases(config)
    ]


def _percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@dataclass
class RunStats:
    """What one run has done so far (read by the live display while the run goes on)."""

    name: str
    calls: int
    server: FlakyServer
    policy: Policy | None = None
    observer: RecordingObserver | None = None
    done: int = 0
    succeeded: int = 0
    failed_by_code: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None

    @property
    def failed(self) -> int:
        return sum(self.failed_by_code.values())

    @property
    def breaker_state(self) -> str:
        if self.policy is None or self.policy.breaker is None:
            return "none"
        return self.policy.breaker.state.value

    def record(self, code: str | None, latency: float) -> None:
        self.done += 1
        self.latencies.append(latency)
        if code is None:
            self.succeeded += 1
        else:
            self.failed_by_code[code] += 1

    def summary(self) -> dict[str, Any]:
        requests = self.server.requests
        transitions: list[BreakerTransition] = (
            [] if self.observer is None else self.observer.of(BreakerTransition)
        )
        p50, p99 = _percentile(self.latencies, 50), _percentile(self.latencies, 99)
        wall = (self.finished or 0.0) - (self.started or 0.0)
        return {
            "calls": self.calls,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "failed_by_code": dict(sorted(self.failed_by_code.items())),
            "server_requests": len(requests),
            "requests_during_outage": sum(1 for r in requests if r.phase == OUTAGE),
            "breaker_transitions": [
                {"from": t.from_state, "to": t.to_state, "reason": t.reason} for t in transitions
            ],
            "latency_ms": {
                "p50": None if p50 is None else round(p50 * 1000, 1),
                "p99": None if p99 is None else round(p99 * 1000, 1),
            },
            "wall_seconds": round(wall, 3),
        }


def _request(n: int) -> tuple[str, str, dict[str, Any] | None, str | None]:
    """Call *n* of the workload: method, path, JSON body and idempotency key."""
    if n % 2:
        return "POST", "/orders", {"order": n, "total": 42.0}, f"order-{n}"
    return "GET", f"/orders/{n}", None, None


async def _drive(
    config: DemoConfig, stats: RunStats, call: Callable[[int], Awaitable[str | None]]
) -> None:
    """Start call *n* at ``n / arrival_rate`` seconds (later when all slots are busy)."""
    slots = asyncio.Semaphore(config.concurrency)
    loop = asyncio.get_running_loop()

    async def one(n: int) -> None:
        started = time.perf_counter()
        try:
            code = await call(n)
        finally:
            slots.release()
        stats.record(code, time.perf_counter() - started)

    stats.server.reset()  # the fault timeline starts with the first call
    stats.started = time.perf_counter()
    origin = loop.time()
    tasks: list[asyncio.Task[None]] = []
    for n in range(config.calls):
        delay = origin + n / config.pace.arrival_rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await slots.acquire()
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    stats.finished = time.perf_counter()


def resilient_policy(config: DemoConfig, observer: RecordingObserver) -> Policy:
    """The policy of the resilient run.

    * retry: four attempts, exponential back-off with full jitter, ``Retry-After`` honoured;
    * retry budget: retries at most 20 % of recent calls, plus a floor of a fifth of the
      nominal call rate, so a failing provider never sees a retry storm;
    * breaker: it sees every attempt, so it opens at 70 % failures over the last 40 attempts
      -- an outage does that within a second, while a short burst of 503s that back-off
      rides out does not;
    * rate limiter: room above the nominal rate, slowed by the provider's rate-limit headers
      and paused by its ``Retry-After``;
    * bulkhead: half the workers at most in flight to the provider, waiting up to one attempt
      timeout for a slot;
    * timeouts: per attempt and per call.
    """
    pace = config.pace
    return Policy(
        "provider",
        timeout=pace.attempt_timeout,
        total_timeout=pace.call_timeout,
        retry=Retry(attempts=4, backoff=Exponential(pace.backoff, cap=pace.call_timeout / 2)),
        budget=RetryBudget(
            0.2, min_retries_per_second=pace.arrival_rate / 5, window=pace.budget_window
        ),
        breaker=CircuitBreaker(
            failure_rate=0.7,
            window=40,
            minimum_calls=20,
            open_duration=pace.open_duration,
            half_open_calls=2,
        ),
        rate=TokenBucket(
            pace.arrival_rate * 1.5, burst=config.concurrency, max_wait=pace.call_timeout
        ),
        bulkhead=Bulkhead(max(1, config.concurrency // 2), max_wait=pace.attempt_timeout),
        observer=observer,
    )


async def run_resilient(config: DemoConfig, stats: RunStats) -> None:
    """Send the workload through a ResilientClient with :func:`resilient_policy`."""
    stats.observer = RecordingObserver()
    stats.policy = resilient_policy(config, stats.observer)
    async with ResilientClient(
        "provider",
        base_url=stats.server.url,
        policy=stats.policy,
        timeout=config.pace.attempt_timeout,
    ) as client:

        async def call(n: int) -> str | None:
            method, path, body, key = _request(n)
            try:
                await client.request(method, path, json=body, idempotency_key=key)
            except Exception as exc:
                return str(error_body(exc).code)
            return None

        await _drive(config, stats, call)


async def run_naive(config: DemoConfig, stats: RunStats) -> None:
    """Send the workload with plain httpx, retrying at once up to NAIVE_RETRIES times."""
    async with httpx.AsyncClient(
        base_url=stats.server.url, timeout=config.pace.attempt_timeout
    ) as http:

        async def call(n: int) -> str | None:
            method, path, body, key = _request(n)
            headers = {"Idempotency-Key": key} if key else None
            code = "INTERNAL"
            for _ in range(1 + NAIVE_RETRIES):
                try:
                    response = await http.request(method, path, json=body, headers=headers)
                except Exception as exc:
                    code = str(error_body(exc).code)
                    continue
                error = classify_response(response)
                if error is None:
                    return None
                code = error.code
            return code

        await _drive(config, stats, call)
