"""Contract: the dashboard's sign-in backoff shared through the shared-state store -- two
throttles on two connections (two API processes) count the same failures, honour the same
lockout, forget together on a success and after ``FORGET_AFTER``; concurrent failures from
both are all counted (compare-and-set in the store, no process-local lock). On every store
backend, on one FakeClock."""

from __future__ import annotations

import asyncio

import pytest

from antifragile import FakeClock
from antifragile.errors import StoreUnavailableError
from antifragile.service._login import FORGET_AFTER, FREE_FAILURES, PREFIX, LoginThrottle
from antifragile.stores import Store

IP, OTHER_IP = "203.0.113.7", "198.51.100.9"


async def test_failures_in_one_process_lock_the_address_in_another(
    store: Store, peer_store: Store, clock: FakeClock
) -> None:
    one = LoginThrottle(clock=clock, store=store.kv)
    two = LoginThrottle(clock=clock, store=peer_store.kv)
    for n in range(FREE_FAILURES):
        await (one if n % 2 else two).failed(IP, None)  # alternating processes
    assert await one.wait(IP, None) == 0.0
    await two.failed(IP, None)  # the sixth: a lockout of 1 s, seen by both
    assert await one.wait(IP, None) == 1.0
    assert await two.wait(IP, None) == 1.0
    assert await one.wait(OTHER_IP, None) == 0.0
    clock.advance(1)
    await one.failed(IP, None)  # the seventh doubles it
    assert await two.wait(IP, None) == 2.0
    await two.succeeded(IP, None)  # a correct key in one process clears it for both
    assert await one.wait(IP, None) == 0.0
    keys = [entry.key for entry in await store.kv.scan(PREFIX, now=clock.time())]
    assert keys == []


async def test_an_account_is_locked_from_every_address_and_failures_are_forgotten(
    store: Store, peer_store: Store, clock: FakeClock
) -> None:
    one = LoginThrottle(clock=clock, store=store.kv)
    two = LoginThrottle(clock=clock, store=peer_store.kv)
    for n in range(FREE_FAILURES + 1):
        await (one, two)[n % 2].failed(f"10.0.0.{n + 1}", "k0123456789abcdef")
    assert await one.wait("10.0.0.99", "k0123456789abcdef") == 1.0
    assert await two.wait("10.0.0.99", None) == 0.0
    stored = [entry.key for entry in await store.kv.scan(PREFIX, now=clock.time())]
    assert f"{PREFIX}account:k0123456789abcdef" in stored
    assert not any("10.0.0." in key for key in stored)  # addresses only as hashes
    clock.advance(FORGET_AFTER)
    assert await two.wait("10.0.0.99", "k0123456789abcdef") == 0.0
    assert await store.kv.scan(PREFIX, now=clock.time()) == []  # expired in the store
    await one.failed("10.0.0.1", "k0123456789abcdef")  # counting starts over
    assert await two.wait("10.0.0.1", "k0123456789abcdef") == 0.0


async def test_concurrent_failures_from_two_processes_are_all_counted(
    store: Store, peer_store: Store, clock: FakeClock
) -> None:
    one = LoginThrottle(clock=clock, store=store.kv)
    two = LoginThrottle(clock=clock, store=peer_store.kv)
    await asyncio.gather(*((one, two)[n % 2].failed(IP, None) for n in range(FREE_FAILURES + 3)))
    # eight failures: three past the free ones, a lockout of 4 s
    assert await one.wait(IP, None) == 4.0


class _Down:
    """A key-value store that is down (what an unreachable Redis answers)."""

    async def get(self, *args: object, **kwargs: object) -> None:
        raise StoreUnavailableError("down")

    compare_and_set = delete = get


async def test_a_failing_store_falls_back_to_counting_in_this_process(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    throttle = LoginThrottle(clock=clock, store=_Down())  # type: ignore[arg-type]
    for _ in range(FREE_FAILURES + 1):
        await throttle.failed(IP, None)
    assert await throttle.wait(IP, None) == 1.0
    warned = [r for r in caplog.records if "login backoff" in r.getMessage()]
    assert len(warned) == 1
