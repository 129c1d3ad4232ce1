"""SharedCircuitBreaker and SharedTokenBucket in one process: the state machine, the batching of
successes, and what happens when the store fails, hangs or comes back.

Two breakers over one store stand for two processes (each keeps its own cached copy of the
record, exactly as separate processes do). The memory store and a FakeClock drive the state
machine; only store timeouts and a real Redis behind a TCP proxy that can be cut use real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import pytest

from antifragile import (
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    FakeClock,
    Policy,
    RateLimitedError,
    StoreUnavailableError,
)
from antifragile.observability import BreakerTransition, RecordingObserver, StoreFallback
from antifragile.sandbox._server import close_server
from antifragile.stores import (
    BreakerRecord,
    SharedCircuitBreaker,
    SharedTokenBucket,
    Store,
    TokenGrant,
    WindowTotals,
    open_store,
)
from tests.conftest import REDIS_URL, require_service

NAME = "provider"


class ProviderDown(ConnectionError):
    """What the fake provider raises: counts as a failure for the breaker."""


class Provider:
    """A fake provider: counts the calls that reach it."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = False

    async def __call__(self) -> str:
        self.calls += 1
        if self.failing:
            raise ProviderDown("provider down")
        return "ok"


class Switchable:
    """Breaker and rate-limit store operations that can be made to fail or hang on demand,
    counting every operation they are asked for."""

    def __init__(self, store: Store) -> None:
        self._breakers = store.breakers
        self._rates = store.rate_limits
        self.mode: Literal["up", "fail", "hang"] = "up"
        self.ops: Counter[str] = Counter()
        self.hanging = 0  # operations hanging right now

    async def _gate(self, op: str) -> None:
        self.ops[op] += 1
        if self.mode == "fail":
            raise StoreUnavailableError("the test store is down")
        if self.mode == "hang":
            self.hanging += 1
            try:
                await asyncio.sleep(3600)
            finally:
                self.hanging -= 1

    async def load(self, name: str) -> BreakerRecord:
        await self._gate("load")
        return await self._breakers.load(name)

    async def compare_and_set(self, expected: BreakerRecord, new: BreakerRecord) -> BreakerRecord:
        await self._gate("compare_and_set")
        return await self._breakers.compare_and_set(expected, new)

    async def add_outcomes(
        self, name: str, *, second: int, calls: int, failures: int, slow: int, window: int
    ) -> WindowTotals:
        await self._gate("add_outcomes")
        return await self._breakers.add_outcomes(
            name, second=second, calls=calls, failures=failures, slow=slow, window=window
        )

    async def reset_window(self, name: str) -> None:
        await self._gate("reset_window")
        await self._breakers.reset_window(name)

    async def add_probe_result(
        self, name: str, *, generation: int, failure: bool, slow: bool
    ) -> WindowTotals:
        await self._gate("add_probe_result")
        return await self._breakers.add_probe_result(
            name, generation=generation, failure=failure, slow=slow
        )

    async def refund(
        self, key: str, *, tokens: float, rate: float, burst: float, now: float
    ) -> None:
        await self._gate("refund")
        await self._rates.refund(key, tokens=tokens, rate=rate, burst=burst, now=now)

    async def take(
        self, key: str, *, tokens: float, rate: float, burst: float, max_wait: float, now: float
    ) -> TokenGrant:
        await self._gate("take")
        return await self._rates.take(
            key, tokens=tokens, rate=rate, burst=burst, max_wait=max_wait, now=now
        )

    async def pause(
        self, key: str, *, seconds: float, rate: float, burst: float, now: float
    ) -> None:
        await self._gate("pause")
        await self._rates.pause(key, seconds=seconds, rate=rate, burst=burst, now=now)


@pytest.fixture
async def store(clock: FakeClock) -> Store:
    return await open_store("memory://", clock=clock)


@pytest.fixture
def switch(store: Store) -> Switchable:
    return Switchable(store)


def breaker(store: Store | Switchable, clock: FakeClock, **options: Any) -> SharedCircuitBreaker:
    settings: dict[str, Any] = {"minimum_calls": 4, "failure_rate": 0.5, "open_duration": 10.0}
    settings.update(options)
    return SharedCircuitBreaker(NAME, store, clock=clock, **settings)


def policy(
    clock: FakeClock,
    *,
    breaker: SharedCircuitBreaker | None = None,
    rate: SharedTokenBucket | None = None,
    observer: RecordingObserver | None = None,
) -> Policy:
    return Policy(
        NAME,
        breaker=breaker,
        rate=rate,
        retry=None,
        timeout=None,
        total_timeout=None,
        clock=clock,
        observer=observer,
    )


async def until(condition: Callable[[], bool], *, seconds: float = 60.0) -> None:
    """Let background tasks (batched syncs, probe results, store retries) run until
    *condition* holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


def state(breaker: CircuitBreaker) -> str:
    """The breaker's state as its value (read afresh each time)."""
    return breaker.state.value


def degraded(*components: SharedCircuitBreaker | SharedTokenBucket) -> bool:
    return any(component.degraded for component in components)


def transitions(recorder: RecordingObserver) -> list[tuple[str, str]]:
    return [(e.from_state, e.to_state) for e in recorder.of(BreakerTransition)]


async def trip(p: Policy, provider: Provider, times: int) -> None:
    provider.failing = True
    for _ in range(times):
        with pytest.raises((ProviderDown, CircuitOpenError)):
            await p.acall(provider)


# -- the state machine ---------------------------------------------------------------------


async def test_window_is_shared_and_exactly_one_process_opens(
    store: Store, clock: FakeClock
) -> None:
    """Outcomes of all processes add up in one window; crossing the threshold opens the breaker
    once (one transition, in the process that crossed it), and the other process adopts it at
    its next failure instead of opening it again."""
    a, b = breaker(store, clock), breaker(store, clock)
    rec_a, rec_b = RecordingObserver(), RecordingObserver()
    pa, pb = policy(clock, breaker=a, observer=rec_a), policy(clock, breaker=b, observer=rec_b)
    ok, down = Provider(), Provider()
    down.failing = True
    await pb.acall(ok)
    await pb.acall(ok)
    await b.refresh()  # b's two successes are in the shared window
    with pytest.raises(ProviderDown):
        await pa.acall(down)  # 3 calls: below minimum_calls
    assert state(a) == "closed"
    with pytest.raises(ProviderDown):
        await pa.acall(down)  # 4 calls, 2 failures: 50 %
    assert state(a) == "open"
    [opened] = rec_a.of(BreakerTransition)
    assert (opened.from_state, opened.to_state, opened.failure_rate) == ("closed", "open", 0.5)
    assert opened.open_for == 10.0
    record = await store.breakers.load(NAME)
    assert record.state == "open"
    assert record.open_until == clock.time() + 10.0
    # b still has the closed record cached; its next failure brings the open one
    b_token = b.snapshot.generation
    await b.aon_failure(b_token, ProviderDown("late"))
    assert state(b) == "open"
    assert rec_b.of(BreakerTransition) == []
    assert (await store.breakers.load(NAME)).generation == record.generation


async def test_open_breaker_rejects_without_store_round_trips(
    switch: Switchable, clock: FakeClock
) -> None:
    """While open, calls fail fast with CircuitOpenError (retry_after = time left) and never
    reach the provider; the store is re-read at most once per 0.1 s, never per call."""
    b = breaker(switch, clock)
    p = policy(clock, breaker=b)
    provider = Provider()
    await trip(p, provider, 4)
    assert state(b) == "open"
    reached, ops = provider.calls, sum(switch.ops.values())
    for _ in range(100):
        with pytest.raises(CircuitOpenError) as info:
            await p.acall(provider)
    assert info.value.until == b.snapshot.open_until
    assert provider.calls == reached
    assert sum(switch.ops.values()) == ops
    clock.advance(0.125)
    for _ in range(100):
        with pytest.raises(CircuitOpenError):
            await p.acall(provider)
    assert sum(switch.ops.values()) == ops + 1  # one re-read for the hundred calls
    assert provider.calls == reached


async def test_exactly_one_probe_wins_the_transition(store: Store, clock: FakeClock) -> None:
    """When the open duration has elapsed, of all the calls racing in all processes exactly one
    is let through as the half-open probe; the others are rejected."""
    rec_a, rec_b = RecordingObserver(), RecordingObserver()
    a, b = breaker(store, clock, observer=rec_a), breaker(store, clock, observer=rec_b)
    await trip(policy(clock, breaker=a), Provider(), 4)
    await b.refresh()
    clock.advance(10.0)
    results = await asyncio.gather(
        *(x.aacquire() for x in (a, b, a, b, b, a, b, a)), return_exceptions=True
    )
    admitted = [r for r in results if isinstance(r, int)]
    assert len(admitted) == 1
    assert all(isinstance(r, CircuitOpenError) for r in results if not isinstance(r, int))
    assert (await store.breakers.load(NAME)).state == "half_open"
    wins = transitions(rec_a) + transitions(rec_b)
    assert wins.count(("open", "half_open")) == 1


async def test_probe_success_closes_for_every_process(store: Store, clock: FakeClock) -> None:
    """A successful probe closes the shared breaker (one transition), forgets the window, and
    the other processes let calls through again once they re-read the record."""
    a, b = breaker(store, clock), breaker(store, clock)
    rec = RecordingObserver()
    pa, pb = policy(clock, breaker=a, observer=rec), policy(clock, breaker=b)
    provider = Provider()
    await trip(pa, provider, 4)
    clock.advance(10.0)
    provider.failing = False
    assert await pa.acall(provider) == "ok"  # the probe
    await until(lambda: state(a) == "closed")
    assert transitions(rec)[-2:] == [("open", "half_open"), ("half_open", "closed")]
    record = await store.breakers.load(NAME)
    assert (record.state, record.consecutive_opens) == ("closed", 0)
    totals = await store.breakers.add_outcomes(
        NAME, second=int(clock.time()), calls=0, failures=0, slow=0, window=30
    )
    assert totals == WindowTotals(0, 0, 0)
    await b.refresh()
    assert await pb.acall(provider) == "ok"


async def test_failed_probe_reopens_with_a_growing_open_duration(
    store: Store, clock: FakeClock
) -> None:
    """A failed probe re-opens the breaker for everyone, each time for longer
    (open_duration_multiplier, capped by max_open_duration); a successful one closes it and
    starts the sequence over."""
    b = breaker(store, clock, open_duration_multiplier=2.0, max_open_duration=30.0)
    rec = RecordingObserver()
    p = policy(clock, breaker=b, observer=rec)
    provider = Provider()
    await trip(p, provider, 4)
    for elapsed, expected in ((10.0, 20.0), (20.0, 30.0), (30.0, 30.0)):
        clock.advance(elapsed)
        with pytest.raises(ProviderDown):
            await p.acall(provider)  # the probe, failing
        record = await store.breakers.load(NAME)
        assert record.state == "open"
        assert record.open_until == clock.time() + expected
    assert [e.open_for for e in rec.of(BreakerTransition) if e.to_state == "open"] == [
        10.0,
        20.0,
        30.0,
        30.0,
    ]
    assert (await store.breakers.load(NAME)).consecutive_opens == 4
    clock.advance(30.0)
    provider.failing = False
    await p.acall(provider)
    await until(lambda: state(b) == "closed")
    provider.failing = True
    await trip(p, provider, 4)
    assert rec.of(BreakerTransition)[-1].open_for == 10.0


async def test_results_of_calls_admitted_under_an_earlier_state_are_ignored(
    switch: Switchable, store: Store, clock: FakeClock
) -> None:
    """A call admitted while closed that ends after the breaker opened changes nothing: its
    success is not counted and its failure neither writes nor re-opens anything."""
    a, b = breaker(switch, clock), breaker(store, clock)
    await a.refresh()
    stale = a.acquire()
    await trip(policy(clock, breaker=b), Provider(), 4)
    await a.refresh()
    assert state(a) == "open"
    before = switch.ops.copy()
    a.on_success(stale)
    await a.aon_failure(stale, ProviderDown("late"))
    await a.aon_failure(stale, ProviderDown("late"))
    assert switch.ops == before
    clock.advance(10.0)
    probe = await a.aacquire()
    a.on_success(stale)  # still not the probe's token
    assert (await store.breakers.load(NAME)).state == "half_open"
    a.on_success(probe)
    await until(lambda: state(a) == "closed")


async def test_a_cancelled_probe_gives_its_permit_back(store: Store, clock: FakeClock) -> None:
    """A probe call that ends without an outcome (cancelled) returns its permit, so another
    process can probe at once instead of waiting for the probe deadline."""
    a, b = breaker(store, clock), breaker(store, clock)
    pa = policy(clock, breaker=a)
    await trip(pa, Provider(), 4)
    await b.refresh()
    clock.advance(10.0)
    started, never = asyncio.Event(), asyncio.Event()

    async def hangs() -> None:
        started.set()
        await never.wait()

    task = asyncio.create_task(pa.acall(hangs))
    await started.wait()
    with pytest.raises(CircuitOpenError):
        await b.aacquire()  # the probe is out
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: a.snapshot.probes_left == 1)
    record = await store.breakers.load(NAME)
    assert (record.state, record.probes_left) == ("half_open", 1)
    await b.refresh()
    token = await b.aacquire()
    assert token == record.generation


async def test_a_lost_probe_is_replaced_after_its_deadline(store: Store, clock: FakeClock) -> None:
    """A probe that never reports (its process died) does not leave the breaker half-open for
    good: after the round's deadline (its open duration) the next call becomes the probe, and
    the lost probe's late result is ignored."""
    rec_b = RecordingObserver()
    a, b = breaker(store, clock), breaker(store, clock, observer=rec_b)
    await trip(policy(clock, breaker=a), Provider(), 4)
    clock.advance(10.0)
    lost = await a.aacquire()
    await b.refresh()
    clock.advance(9.5)
    with pytest.raises(CircuitOpenError):
        await b.aacquire()
    clock.advance(0.5)
    probe = await b.aacquire()
    assert probe == lost + 1
    assert transitions(rec_b) == [("half_open", "half_open")]
    a.on_success(lost)
    await asyncio.sleep(0.01)
    record = await store.breakers.load(NAME)
    assert (record.state, record.generation) == ("half_open", probe)
    await b.aon_failure(probe, ProviderDown("still down"))
    assert (await store.breakers.load(NAME)).state == "open"


async def test_with_several_probes_all_results_decide(store: Store, clock: FakeClock) -> None:
    """With half_open_calls=2, two processes may each hold a probe; the first result decides
    nothing, the second -- counted with the first in the store -- decides for both: one
    success and one failure is a 50 % failure rate, which re-opens the breaker."""
    a = breaker(store, clock, half_open_calls=2)
    b = breaker(store, clock, half_open_calls=2)
    await trip(policy(clock, breaker=a), Provider(), 4)
    await b.refresh()
    clock.advance(10.0)
    first = await a.aacquire()
    await b.refresh()
    second = await b.aacquire()
    assert first == second
    half_open = await store.breakers.load(NAME)
    assert (half_open.state, half_open.probes_left) == ("half_open", 0)
    a.on_success(first)  # counted in the background
    await a.settle()
    assert await store.breakers.load(NAME) == half_open
    await b.aon_failure(second, ProviderDown("down"))
    reopened = await store.breakers.load(NAME)
    assert (reopened.state, reopened.generation) == ("open", half_open.generation + 1)


async def test_a_policy_renaming_the_breaker_keeps_its_record(
    store: Store, clock: FakeClock
) -> None:
    """A breaker named "default" takes its policy's name, but keeps sharing the record it
    was created for."""
    b = SharedCircuitBreaker("default", store, minimum_calls=4, clock=clock)
    p = Policy("checkout", breaker=b, retry=None, timeout=None, total_timeout=None, clock=clock)
    assert b.name == "checkout"
    await trip(p, Provider(), 4)
    assert not b.degraded
    assert (await store.breakers.load("default")).state == "open"


async def test_slow_successes_trip_the_slow_call_rate_with_the_next_batch(
    store: Store, clock: FakeClock
) -> None:
    """Slow successes are counted like other successes and written with the batch (at most
    one per sync_interval, never one per call); the batch that brings the window's slow-call
    rate over its threshold opens the breaker."""
    rec = RecordingObserver()
    b = breaker(store, clock, slow_call_duration=1.0, slow_call_rate=0.5, observer=rec)
    p = policy(clock, breaker=b)
    await b.refresh()

    async def slow() -> str:
        await clock.asleep(2.0)  # the fake clock moves: the call took 2 s
        return "ok"

    for _ in range(6):  # each call moves the clock past sync_interval: a batch every other call
        assert await p.acall(slow) == "ok"
    await until(lambda: state(b) == "open")
    [opened] = rec.of(BreakerTransition)
    assert opened.slow_call_rate == 1.0
    assert opened.reason.startswith("slow-call rate")


async def test_aforce_sets_the_state_for_every_process(
    switch: Switchable, store: Store, clock: FakeClock
) -> None:
    """aforce: forced_open rejects every call in every process, disabled lets every call through
    and records nothing, closed resets; the sync reset() is refused, and aforce raises
    StoreUnavailableError when the store cannot be used."""
    a, b = breaker(switch, clock), breaker(store, clock)
    pb = policy(clock, breaker=b)
    provider = Provider()
    await a.aforce("forced_open")
    await b.refresh()
    clock.advance(3600.0)
    with pytest.raises(CircuitOpenError) as info:
        await pb.acall(provider)
    assert info.value.until is None
    assert provider.calls == 0
    await a.aforce("disabled")
    await b.refresh()
    provider.failing = True
    for _ in range(20):
        with pytest.raises(ProviderDown):
            await pb.acall(provider)
    assert (await store.breakers.load(NAME)).state == "disabled"
    await a.aforce("closed")
    await b.refresh()
    assert state(b) == "closed"
    with pytest.raises(ConfigurationError):
        b.reset()
    switch.mode = "fail"
    with pytest.raises(StoreUnavailableError):
        await a.aforce("forced_open")


def test_sync_pipeline_refuses_shared_components(store: Store, clock: FakeClock) -> None:
    """A sync policy refuses a shared breaker or bucket with ConfigurationError (their state
    needs async I/O); the plain CircuitBreaker is the per-process mode."""
    for p in (
        policy(clock, breaker=breaker(store, clock)),
        policy(clock, rate=SharedTokenBucket(10, store, clock=clock)),
    ):
        with pytest.raises(ConfigurationError, match="needs async"):
            p.call(lambda: 1)


# -- cheap success path ---------------------------------------------------------------------


async def test_successes_cost_no_round_trip_and_are_written_in_batches(
    switch: Switchable, store: Store, clock: FakeClock
) -> None:
    """Successes are counted locally and written at most once per sync_interval (one batch:
    write plus re-read), exactly; an idle process makes no store call at all."""
    b = breaker(switch, clock, sync_interval=1.0, shared_window=3600)
    p = policy(clock, breaker=b)
    provider = Provider()
    for _ in range(1000):
        await p.acall(provider)
    await until(lambda: switch.ops["load"] == 1)
    assert sum(switch.ops.values()) == 1  # the first call reads the record, for 1000 calls
    clock.advance(1.0)
    for _ in range(1000):
        await p.acall(provider)
    await until(lambda: switch.ops["load"] == 2)
    assert sum(switch.ops.values()) == 3  # one batch: one add_outcomes + one load
    clock.advance(60.0)
    await asyncio.sleep(0.01)
    assert sum(switch.ops.values()) == 3  # idle: nothing
    await b.refresh()
    totals = await store.breakers.add_outcomes(
        NAME, second=int(clock.time()), calls=0, failures=0, slow=0, window=3600
    )
    assert totals == WindowTotals(2000, 0, 0)


async def test_a_process_with_only_successes_learns_of_an_open_within_sync_interval(
    store: Store, clock: FakeClock
) -> None:
    """A process that sees only successes keeps its cached closed record until its next batch,
    at most sync_interval later; from then on it rejects calls like everyone else."""
    a, b = breaker(store, clock), breaker(store, clock, sync_interval=1.0)
    pb = policy(clock, breaker=b)
    provider = Provider()
    await pb.acall(provider)
    await b.refresh()
    await trip(policy(clock, breaker=a), Provider(), 4)
    assert await pb.acall(provider) == "ok"  # within the interval: cached closed
    clock.advance(1.0)
    await pb.acall(provider)  # due: starts the batch
    await until(lambda: state(b) == "open")
    with pytest.raises(CircuitOpenError):
        await pb.acall(provider)


async def test_bucket_hands_out_tokens_across_processes(store: Store, clock: FakeClock) -> None:
    """Two buckets on one key share one reservation sequence: waits are spaced 1/rate apart
    across both, and a wait beyond max_wait is refused with RateLimitedError."""
    a = SharedTokenBucket(10, store, burst=1, max_wait=0.25, key="shared", clock=clock)
    b = SharedTokenBucket(10, store, burst=1, max_wait=0.25, key="shared", clock=clock)
    waits = [await a.areserve(), await b.areserve(), await a.areserve()]
    assert waits == pytest.approx([0.0, 0.1, 0.2])
    with pytest.raises(RateLimitedError) as info:
        await b.areserve()
    assert info.value.retry_after == pytest.approx(0.3)


# -- store outages ----------------------------------------------------------------------------


def fallbacks(recorder: RecordingObserver, component: str) -> list[bool]:
    return [e.degraded for e in recorder.of(StoreFallback) if e.component == component]


async def test_breaker_falls_back_to_local_state_and_recovers(
    switch: Switchable, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """When the store fails, calls keep being served by a process-local breaker (which still
    opens and fails fast), with one warning and one StoreFallback(degraded=True); when the store
    answers again the breaker goes back to the shared state (StoreFallback(degraded=False))."""
    rec = RecordingObserver()
    b = breaker(switch, clock, minimum_calls=3, sync_interval=1.0)
    p = policy(clock, breaker=b, observer=rec)
    provider = Provider()
    await b.refresh()
    switch.mode = "fail"
    with caplog.at_level(logging.WARNING, logger="antifragile.stores"):
        for _ in range(5):
            assert await p.acall(provider) == "ok"
        clock.advance(1.0)
        assert await p.acall(provider) == "ok"  # starts a batch, which fails
        await until(lambda: b.degraded)
        for _ in range(5):
            assert await p.acall(provider) == "ok"
        await trip(p, provider, 5)  # 50 % of the local window
        assert state(b.local) == "open"
        reached = provider.calls
        for _ in range(10):
            with pytest.raises(CircuitOpenError):
                await p.acall(provider)
        assert provider.calls == reached
    warnings = [r for r in caplog.records if "falling back" in r.getMessage()]
    assert len(warnings) == 1
    assert fallbacks(rec, "circuit_breaker") == [True]
    assert b.degraded
    switch.mode = "up"
    clock.advance(1.0)
    with pytest.raises(CircuitOpenError):
        await p.acall(provider)  # still local, but it retries the store in the background
    await until(lambda: not b.degraded)
    assert fallbacks(rec, "circuit_breaker") == [True, False]
    provider.failing = False
    assert await p.acall(provider) == "ok"  # the shared record never opened
    assert state(b) == "closed"


async def test_local_fallback_starts_from_the_last_shared_state(
    switch: Switchable, clock: FakeClock
) -> None:
    """An outage while the shared breaker is open keeps rejecting calls locally until the
    shared open_until, instead of letting the process hammer a provider known to be down."""
    b = breaker(switch, clock)
    p = policy(clock, breaker=b)
    provider = Provider()
    await trip(p, provider, 4)
    switch.mode = "fail"
    clock.advance(0.5)
    reached = provider.calls
    with pytest.raises(CircuitOpenError):
        await p.acall(provider)  # re-reads the record: the store fails
    assert b.degraded
    assert state(b) == "open"
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            await p.acall(provider)
    assert provider.calls == reached


async def test_hanging_store_costs_one_store_timeout_then_nothing(
    switch: Switchable, clock: FakeClock
) -> None:
    """A store that does not answer within store_timeout counts as unavailable: the call that
    found out gave up on the store (which would have hung for an hour) after store_timeout,
    later calls do not ask the store at all, and both breaker and bucket recover when it
    answers again. (How long each costs is measured by benchmarks/failure_latency.py.)"""
    rec = RecordingObserver()
    b = breaker(switch, clock, store_timeout=0.05)
    bucket = SharedTokenBucket(1000, switch, burst=1000, store_timeout=0.05, clock=clock)
    p = policy(clock, breaker=b, rate=bucket, observer=rec)
    provider = Provider()
    await b.refresh()
    assert await p.acall(provider) == "ok"
    switch.mode = "hang"
    started = time.perf_counter()
    assert await p.acall(provider) == "ok"  # the bucket's take times out
    assert time.perf_counter() - started >= 0.04  # it did wait for the store (0.05 s)
    assert bucket.degraded
    asked = sum(switch.ops.values())
    for _ in range(20):
        assert await p.acall(provider) == "ok"
    assert sum(switch.ops.values()) == asked  # the bucket no longer asks the store
    provider.failing = True
    with pytest.raises(ProviderDown):
        await p.acall(provider)  # the breaker's failure report times out
    assert b.degraded
    asked = sum(switch.ops.values())
    for _ in range(5):
        with pytest.raises((ProviderDown, CircuitOpenError)):
            await p.acall(provider)
    assert sum(switch.ops.values()) == asked  # nor does the breaker
    assert fallbacks(rec, "rate_limiter") == [True]
    assert fallbacks(rec, "circuit_breaker") == [True]
    switch.mode = "up"
    await until(lambda: switch.hanging == 0)  # the background tries still hanging time out
    clock.advance(1.0)
    with pytest.raises(CircuitOpenError):
        await p.acall(provider)  # the local breaker opened; both retry in the background
    await until(lambda: not b.degraded and not bucket.degraded)
    assert fallbacks(rec, "rate_limiter") == [True, False]
    assert fallbacks(rec, "circuit_breaker") == [True, False]


async def test_bucket_falls_back_to_a_local_bucket_and_recovers(
    switch: Switchable, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """When the store fails, the bucket keeps admitting calls from a process-local bucket at
    the same rate (one warning, one StoreFallback), tries the store again in the background at
    most once a second, and takes its tokens from the store again once it answers."""
    rec = RecordingObserver()
    bucket = SharedTokenBucket(5, switch, burst=2, max_wait=10, clock=clock)
    p = policy(clock, rate=bucket, observer=rec)
    provider = Provider()
    assert await p.acall(provider) == "ok"
    assert switch.ops["take"] == 1
    switch.mode = "fail"
    with caplog.at_level(logging.WARNING, logger="antifragile.stores"):
        for _ in range(4):
            assert await p.acall(provider) == "ok"
    assert bucket.degraded
    assert switch.ops["take"] == 2  # no try per call while degraded
    assert len([r for r in caplog.records if "falling back" in r.getMessage()]) == 1
    assert fallbacks(rec, "rate_limiter") == [True]
    assert clock.sleeps == pytest.approx([0.2, 0.2])  # the local bucket paces at 5/s
    switch.mode = "up"
    clock.advance(1.0)
    await p.acall(provider)
    await until(lambda: not bucket.degraded)
    assert fallbacks(rec, "rate_limiter") == [True, False]
    takes = switch.ops["take"]
    await p.acall(provider)
    assert switch.ops["take"] == takes + 1


# -- a real outage: Redis behind a proxy that can be cut -----------------------------------


class Proxy:
    """A TCP proxy to Redis that can be stopped (dropping every connection) and restarted on
    the same port.

    It runs its own event loop in a thread, like the sandbox's servers: each connection is
    registered as it is made, and stopping closes every one (both sides) and ends every task
    before that loop closes -- connections that arrive during the stop included."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop)

    def _start(self) -> None:
        self._ready.clear()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        self._ready.wait()
        error, self._error = self._error, None
        if error is not None:
            self._thread.join()
            self._thread = None
            raise error

    def _stop(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = None

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await close_server(server, self._close_connections)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # a plain callback: called as the connection is made, so none escapes the stop
        self._writers.add(writer)
        if self._stopping is None or self._stopping.is_set():
            writer.transport.abort()
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_connections(self) -> list[Awaitable[object]]:
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        return [self._closed(writer) for writer in writers]

    async def _closed(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        self._writers.discard(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


@pytest.fixture
async def proxied_redis(clock: FakeClock) -> AsyncIterator[tuple[Store, Proxy]]:
    require_service("redis", REDIS_URL)
    from urllib.parse import urlsplit

    parts = urlsplit(REDIS_URL)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    url = f"redis://127.0.0.1:{proxy.port}{parts.path}"
    prefix = f"t{uuid.uuid4().hex[:12]}:"
    store = await open_store(url, clock=clock, prefix=prefix, socket_timeout=1.0)
    try:
        yield store, proxy
    finally:
        await proxy.stop()
        await proxy.start()
        try:
            cleanup = await open_store(REDIS_URL, prefix=prefix, flush_prefix_on_close=True)
            await cleanup.close()
            await store.close()
        finally:
            await proxy.stop()


async def test_redis_outage_serves_locally_and_recovers(
    proxied_redis: tuple[Store, Proxy], clock: FakeClock
) -> None:
    """A real Redis outage (every connection dropped, the port refusing): breaker and bucket keep
    serving calls process-locally, each reports StoreFallback(degraded=True) once, and both
    use the shared state again (degraded=False) once Redis can be reached again."""
    store, proxy = proxied_redis
    rec = RecordingObserver()
    b = SharedCircuitBreaker(NAME, store, minimum_calls=3, clock=clock)
    bucket = SharedTokenBucket(1000, store, burst=1000, key="rl", clock=clock)
    p = policy(clock, breaker=b, rate=bucket, observer=rec)
    provider = Provider()
    await b.refresh()
    for _ in range(3):
        assert await p.acall(provider) == "ok"
    assert not degraded(b, bucket)
    await proxy.stop()
    for _ in range(10):
        assert await p.acall(provider) == "ok"
    assert bucket.degraded
    clock.advance(1.0)
    await p.acall(provider)
    await until(lambda: b.degraded)
    await trip(p, provider, 3)
    with pytest.raises(CircuitOpenError):
        await p.acall(provider)
    assert fallbacks(rec, "rate_limiter") == [True]
    assert fallbacks(rec, "circuit_breaker") == [True]
    await proxy.start()
    deadline = time.monotonic() + 60
    while degraded(b, bucket) and time.monotonic() < deadline:
        # local and open; both retry Redis in the background, once a (fake) second
        clock.advance(1.0)
        with pytest.raises((CircuitOpenError, ProviderDown)):
            await p.acall(provider)
        await asyncio.sleep(0.05)
    assert fallbacks(rec, "rate_limiter") == [True, False]
    assert fallbacks(rec, "circuit_breaker") == [True, False]
    provider.failing = False
    assert await p.acall(provider) == "ok"
    assert (await store.breakers.load(NAME)).state == "closed"
