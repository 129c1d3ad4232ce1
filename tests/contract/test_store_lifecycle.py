"""Contract: a Store bundles the five kinds of state and has open, ping and close."""

from __future__ import annotations

from antifragile import FakeClock
from antifragile.stores import (
    BreakerRecord,
    BreakerStore,
    IdempotencyStore,
    KeyValueStore,
    LeaseStore,
    RateLimitStore,
    Store,
)


async def test_store_satisfies_the_protocols(store: Store) -> None:
    """The backend and each of its parts are instances of the runtime-checkable protocols."""
    assert isinstance(store, Store)
    assert isinstance(store.kv, KeyValueStore)
    assert isinstance(store.idempotency, IdempotencyStore)
    assert isinstance(store.leases, LeaseStore)
    assert isinstance(store.rate_limits, RateLimitStore)
    assert isinstance(store.breakers, BreakerStore)
    assert isinstance(store.url, str)


async def test_ping_returns_a_round_trip_time(store: Store) -> None:
    """ping of an open store returns a non-negative number of seconds."""
    rtt = await store.ping()
    assert isinstance(rtt, float)
    assert rtt >= 0


async def test_close_twice_is_harmless(store: Store) -> None:
    """close may be called again on a closed store (the fixture closes it once more)."""
    await store.close()
    await store.close()


async def test_kinds_of_state_do_not_share_names(store: Store, clock: FakeClock) -> None:
    """The same name used as key, claim, lease, bucket and breaker stays five separate things."""
    now = clock.time()
    await store.kv.set("x", 1, now=now)
    assert (await store.idempotency.claim("x", owner="o", now=now, ttl=10)).acquired
    lease = await store.leases.acquire("x", owner="o", now=now, ttl=10)
    assert lease is not None
    assert lease.token == 1
    grant = await store.rate_limits.take("x", tokens=1, rate=1, burst=1, max_wait=0, now=now)
    assert grant.granted
    assert await store.breakers.load("x") == BreakerRecord("x")
    got = await store.kv.get("x", now=now)
    assert got is not None
    assert (got.value, got.version) == (1, 1)
