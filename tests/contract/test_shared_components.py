"""Contract: SharedCircuitBreaker and SharedTokenBucket over every backend.

Two store objects on one database (``store`` and ``peer_store``) stand for two processes: each
has its own connections, and each breaker or bucket its own cached view, as in separate
processes. Time is a FakeClock shared by both.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from antifragile import CircuitBreaker, CircuitOpenError, FakeClock, Policy
from antifragile.stores import SharedCircuitBreaker, SharedTokenBucket, Store

NAME = "provider"


class ProviderDown(ConnectionError):
    """What the fake provider raises: counts as a failure for the breaker."""


class Provider:
    """A fake provider: counts the calls that reach it, fails while ``failing``."""

    def __init__(self, *, failing: bool = False) -> None:
        self.calls = 0
        self.failing = failing

    async def __call__(self) -> str:
        self.calls += 1
        await asyncio.sleep(0)  # concurrent callers really overlap
        if self.failing:
            raise ProviderDown("provider down")
        return "ok"


class HeldClock(FakeClock):
    """A FakeClock whose ``asleep`` waits, without moving time, until it is cancelled;
    ``sleeping`` is set once something sleeps."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = asyncio.Event()

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping.set()
        await asyncio.Event().wait()


SETTINGS: dict[str, Any] = {"minimum_calls": 4, "failure_rate": 0.5, "open_duration": 10.0}


def shared(store: Store, clock: FakeClock, **options: Any) -> SharedCircuitBreaker:
    return SharedCircuitBreaker(NAME, store, clock=clock, **{**SETTINGS, **options})


def policy(
    clock: FakeClock,
    *,
    breaker: CircuitBreaker | None = None,
    rate: SharedTokenBucket | None = None,
) -> Policy:
    return Policy(
        NAME, breaker=breaker, rate=rate, retry=None, timeout=None, total_timeout=None, clock=clock
    )


async def trip(breaker: SharedCircuitBreaker, clock: FakeClock) -> None:
    provider = Provider(failing=True)
    p = policy(clock, breaker=breaker)
    for _ in range(4):
        with pytest.raises(ProviderDown):
            await p.acall(provider)
    assert breaker.state.value == "open"


# -- a process that starts after the breaker opened ------------------------------------------


async def test_a_new_process_does_not_burst_through_an_open_breaker(
    store: Store, peer_store: Store, clock: FakeClock
) -> None:
    """A breaker in a process started after another opened it reads the shared record before
    its first call: ten concurrent first calls all wait for that one read, and none of them
    reaches the dead provider."""
    await trip(shared(store, clock), clock)
    late = shared(peer_store, clock)
    provider = Provider()
    p = policy(clock, breaker=late)
    results = await asyncio.gather(*(p.acall(provider) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, CircuitOpenError) for r in results)
    assert provider.calls == 0
    assert late.state.value == "open"


async def test_a_new_process_sends_one_probe_when_the_open_duration_is_over(
    store: Store, peer_store: Store, clock: FakeClock
) -> None:
    """When the open duration has passed, the new process's first burst sends exactly one
    probe (half_open_calls=1), not ten calls."""
    await trip(shared(store, clock), clock)
    clock.advance(10.0)
    late = shared(peer_store, clock)
    provider = Provider(failing=True)
    p = policy(clock, breaker=late)
    results = await asyncio.gather(*(p.acall(provider) for _ in range(10)), return_exceptions=True)
    assert provider.calls == 1
    assert sum(isinstance(r, ProviderDown) for r in results) == 1
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 9


# -- half-open with several probes ------------------------------------------------------------


async def probes_judged(
    store: Store, peer_store: Store, clock: FakeClock, outcomes: list[bool]
) -> tuple[str, str]:
    """Run a probing round of len(outcomes) probes (True: success) spread over two processes,
    and the same round on a local breaker with the same settings; both final states."""
    n = len(outcomes)
    a, b = shared(store, clock, half_open_calls=n), shared(peer_store, clock, half_open_calls=n)
    await trip(a, clock)
    local = CircuitBreaker(NAME, clock=clock, half_open_calls=n, **SETTINGS)
    for _ in range(4):  # opens the local breaker as trip() opened the shared one
        local.on_failure(local.acquire(), ProviderDown("down"))
    clock.advance(10.0)
    await b.refresh()
    tokens = [await (a if i % 2 else b).aacquire() for i in range(n)]
    local_tokens = [local.acquire() for _ in range(n)]
    for i, (ok, token, local_token) in enumerate(zip(outcomes, tokens, local_tokens, strict=True)):
        breaker = a if i % 2 else b
        if ok:
            breaker.on_success(token)
            local.on_success(local_token)
        else:
            await breaker.aon_failure(token, ProviderDown("down"))
            local.on_failure(local_token, ProviderDown("down"))
        await breaker.settle()
        if i < n - 1:  # nothing decided before the last result
            assert (await store.breakers.load(NAME)).state == "half_open"
            assert local.state.value == "half_open"
    return (await store.breakers.load(NAME)).state, local.state.value


@pytest.mark.parametrize(
    ("outcomes", "judged"),
    [
        ([False, True, True], "closed"),  # 1 of 3 failed: 33 % < 50 %
        ([True, False, False], "open"),  # 2 of 3 failed
        ([True, True, False, False], "open"),  # 50 % >= 50 %
        ([True, True, True], "closed"),
    ],
)
async def test_several_probes_are_judged_together_as_a_local_breaker_judges_them(
    store: Store, peer_store: Store, clock: FakeClock, outcomes: list[bool], judged: str
) -> None:
    """With half_open_calls=N the shared breaker decides on all N probe results, counted in
    the store across processes -- the first result decides nothing -- and reaches the state a
    local breaker with the same settings reaches."""
    shared_state, local_state = await probes_judged(store, peer_store, clock, outcomes)
    assert shared_state == judged
    assert local_state == judged


# -- metrics and state ------------------------------------------------------------------------


async def test_metrics_count_every_process_s_calls(
    store: Store, peer_store: Store, clock: FakeClock
) -> None:
    """metrics() reports the shared window: the calls and failures of both processes, in each
    of them and in a third that made no call at all."""
    a = shared(store, clock, minimum_calls=100)
    b = shared(peer_store, clock, minimum_calls=100)
    watcher = shared(peer_store, clock, minimum_calls=100)
    ok, down = Provider(), Provider(failing=True)
    pa, pb = policy(clock, breaker=a), policy(clock, breaker=b)
    for _ in range(3):
        await pa.acall(ok)
    with pytest.raises(ProviderDown):
        await pa.acall(down)
    for _ in range(2):
        with pytest.raises(ProviderDown):
            await pb.acall(down)
    for breaker in (a, b, watcher):
        await breaker.refresh()
        metrics = breaker.metrics()
        assert (metrics["calls"], metrics["failures"]) == (6, 3)
        assert metrics["failure_rate"] == pytest.approx(0.5)


async def test_state_follows_the_record_other_processes_wrote(
    store: Store, peer_store: Store, clock: FakeClock
) -> None:
    """A process that saw the breaker open, and has made no call since, reports the state a
    call would find now: half_open once the open duration is over, and closed once another
    process's probe closed it (re-read, at most once per sync_interval, when the state is
    looked at)."""
    watcher = shared(store, clock, sync_interval=0.5)
    prober = shared(peer_store, clock)
    await trip(watcher, clock)
    clock.advance(10.0)
    assert watcher.state.value == "half_open"
    await policy(clock, breaker=prober).acall(Provider())
    await prober.settle()
    assert (await store.breakers.load(NAME)).state == "closed"
    clock.advance(0.5)
    assert watcher.state.value in ("half_open", "closed")  # starts a re-read
    await watcher.settle()
    assert watcher.state.value == "closed"


# -- token buckets ----------------------------------------------------------------------------


async def test_a_cancelled_wait_gives_its_token_back_to_the_store(
    store: Store, peer_store: Store
) -> None:
    """Rate 1/s: one caller takes the token, a second reserves the next one (wait 1 s) and is
    cancelled after 0.05 s; the token goes back to the store, so a caller in another process
    waits 0.95 s, not 1.95 s."""
    clock = HeldClock()
    here = SharedTokenBucket(1, store, burst=1, key="shared", clock=clock)
    there = SharedTokenBucket(1, peer_store, burst=1, key="shared", clock=clock)
    p = policy(clock, rate=here)
    await p.acall(Provider())
    waiting = asyncio.create_task(p.acall(Provider()))
    await clock.sleeping.wait()
    assert clock.sleeps == [pytest.approx(1.0)]
    clock.advance(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await here.settle()
    assert await there.areserve() == pytest.approx(0.95)


async def test_a_cancelled_aacquire_gives_its_token_back_to_the_store(
    store: Store, peer_store: Store
) -> None:
    """The same through the bucket's own aacquire."""
    clock = HeldClock()
    here = SharedTokenBucket(1, store, burst=1, key="shared", clock=clock)
    there = SharedTokenBucket(1, peer_store, burst=1, key="shared", clock=clock)
    await here.aacquire()
    waiting = asyncio.create_task(here.aacquire())
    await clock.sleeping.wait()
    clock.advance(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await here.settle()
    assert await there.areserve() == pytest.approx(0.95)


# -- a worker's early probe --------------------------------------------------------------------


async def test_an_early_probe_ends_the_open_period_for_every_process(
    store: Store, peer_store: Store, clock: FakeClock
) -> None:
    """``aallow_probe(after=1)`` on a shared breaker open for 10 s: refused within the first
    second, then it ends the open period in the store, so another process's breaker admits
    exactly one probe at once instead of waiting out the 10 s (the provider is still down, so
    the probe fails and the breaker opens again, whatever order the calls take)."""
    breaker = shared(store, clock)
    await trip(breaker, clock)
    assert not await breaker.aallow_probe(after=1.0)
    clock.advance(1.5)
    assert await breaker.aallow_probe(after=1.0)
    other = shared(peer_store, clock)
    provider = Provider(failing=True)
    p = policy(clock, breaker=other)
    results = await asyncio.gather(*(p.acall(provider) for _ in range(5)), return_exceptions=True)
    assert provider.calls == 1
    assert sum(isinstance(r, ProviderDown) for r in results) == 1
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 4
