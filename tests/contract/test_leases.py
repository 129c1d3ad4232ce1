"""Contract: LeaseStore -- acquire, renew, release, holder, and fencing tokens."""

from __future__ import annotations

import asyncio

from antifragile import FakeClock
from antifragile.stores import Lease, Store


async def test_acquire_of_a_free_name(store: Store, clock: FakeClock) -> None:
    """The first acquisition of a name gets token 1 and expires at now + ttl."""
    now = clock.time()
    lease = await store.leases.acquire("sched", owner="a", now=now, ttl=10)
    assert lease == Lease(name="sched", owner="a", token=1, expires_at=now + 10)
    assert await store.leases.holder("sched", now=now) == lease


async def test_holder_of_unknown_name_is_none(store: Store, clock: FakeClock) -> None:
    """holder of a name never acquired is None."""
    assert await store.leases.holder("missing", now=clock.time()) is None


async def test_another_owner_is_refused_while_held(store: Store, clock: FakeClock) -> None:
    """acquire by another owner returns None while the lease is live, and changes nothing."""
    lease = await store.leases.acquire("l", owner="a", now=clock.time(), ttl=10)
    clock.advance(9.9)
    assert await store.leases.acquire("l", owner="b", now=clock.time(), ttl=10) is None
    assert await store.leases.holder("l", now=clock.time()) == lease


async def test_same_owner_reacquire_extends_and_keeps_token(store: Store, clock: FakeClock) -> None:
    """acquire by the holder extends the lease to now + ttl and keeps its token."""
    first = await store.leases.acquire("l", owner="a", now=clock.time(), ttl=10)
    assert first is not None
    clock.advance(8)
    again = await store.leases.acquire("l", owner="a", now=clock.time(), ttl=10)
    assert again == Lease("l", "a", first.token, clock.time() + 10)
    clock.advance(8)
    assert await store.leases.holder("l", now=clock.time()) == again


async def test_after_expiry_another_owner_gets_a_larger_token(
    store: Store, clock: FakeClock
) -> None:
    """Once a lease expires another owner takes it with a larger fencing token."""
    first = await store.leases.acquire("l", owner="a", now=clock.time(), ttl=10)
    assert first is not None
    clock.advance(10)
    assert await store.leases.holder("l", now=clock.time()) is None
    second = await store.leases.acquire("l", owner="b", now=clock.time(), ttl=10)
    assert second is not None
    assert second.owner == "b"
    assert second.token > first.token
    assert await store.leases.acquire("l", owner="a", now=clock.time(), ttl=10) is None
    assert await store.leases.renew("l", owner="a", now=clock.time(), ttl=10) is None


async def test_same_owner_after_expiry_gets_a_new_token(store: Store, clock: FakeClock) -> None:
    """An owner whose lease expired gets a new, larger token when it acquires again."""
    first = await store.leases.acquire("l", owner="a", now=clock.time(), ttl=5)
    assert first is not None
    clock.advance(5)
    again = await store.leases.acquire("l", owner="a", now=clock.time(), ttl=5)
    assert again is not None
    assert again.token > first.token


async def test_renew_extends_a_held_lease(store: Store, clock: FakeClock) -> None:
    """renew by the holder moves expires_at to now + ttl and keeps the token."""
    first = await store.leases.acquire("l", owner="a", now=clock.time(), ttl=10)
    assert first is not None
    clock.advance(7)
    renewed = await store.leases.renew("l", owner="a", now=clock.time(), ttl=30)
    assert renewed == Lease("l", "a", first.token, clock.time() + 30)
    clock.advance(25)
    assert await store.leases.holder("l", now=clock.time()) == renewed


async def test_renew_by_another_owner_is_refused(store: Store, clock: FakeClock) -> None:
    """renew by anyone but the holder returns None and leaves the lease alone."""
    lease = await store.leases.acquire("l", owner="a", now=clock.time(), ttl=10)
    assert await store.leases.renew("l", owner="b", now=clock.time(), ttl=10) is None
    assert await store.leases.holder("l", now=clock.time()) == lease


async def test_renew_after_expiry_is_refused(store: Store, clock: FakeClock) -> None:
    """A lease that expired is lost, even if nobody took it since: renew returns None."""
    await store.leases.acquire("l", owner="a", now=clock.time(), ttl=10)
    clock.advance(10)
    assert await store.leases.renew("l", owner="a", now=clock.time(), ttl=10) is None
    assert await store.leases.holder("l", now=clock.time()) is None


async def test_renew_of_unknown_name_is_refused(store: Store, clock: FakeClock) -> None:
    """renew of a name never acquired returns None and creates nothing."""
    assert await store.leases.renew("l", owner="a", now=clock.time(), ttl=10) is None
    assert await store.leases.holder("l", now=clock.time()) is None


async def test_release_by_holder_frees_the_name(store: Store, clock: FakeClock) -> None:
    """release by the holder frees the lease; the next acquisition gets a larger token."""
    first = await store.leases.acquire("l", owner="a", now=clock.time(), ttl=10)
    assert first is not None
    assert await store.leases.release("l", owner="a") is True
    assert await store.leases.holder("l", now=clock.time()) is None
    assert await store.leases.release("l", owner="a") is False
    second = await store.leases.acquire("l", owner="b", now=clock.time(), ttl=10)
    assert second is not None
    assert second.token > first.token


async def test_release_by_another_owner_is_refused(store: Store, clock: FakeClock) -> None:
    """release by anyone but the holder returns False and the lease stays."""
    lease = await store.leases.acquire("l", owner="a", now=clock.time(), ttl=10)
    assert await store.leases.release("l", owner="b") is False
    assert await store.leases.holder("l", now=clock.time()) == lease


async def test_release_of_unknown_name_is_false(store: Store, clock: FakeClock) -> None:
    """release of a name never acquired returns False."""
    assert await store.leases.release("missing", owner="a") is False


async def test_tokens_only_grow_across_handovers(store: Store, clock: FakeClock) -> None:
    """Across expiries and releases, every new acquisition has a larger token than the last."""
    tokens: list[int] = []
    for i in range(6):
        lease = await store.leases.acquire("l", owner=f"o{i % 2}", now=clock.time(), ttl=3)
        assert lease is not None
        tokens.append(lease.token)
        if i % 2:
            assert await store.leases.release("l", owner=lease.owner)
        else:
            clock.advance(3)
    assert tokens == sorted(set(tokens))
    assert tokens[0] == 1


async def test_names_are_independent(store: Store, clock: FakeClock) -> None:
    """Leases on different names neither block each other nor share tokens."""
    now = clock.time()
    a = await store.leases.acquire("x", owner="a", now=now, ttl=10)
    b = await store.leases.acquire("y", owner="b", now=now, ttl=10)
    assert a is not None
    assert b is not None
    assert (a.token, b.token) == (1, 1)


async def test_concurrent_acquirers_have_one_holder(store: Store, clock: FakeClock) -> None:
    """20 concurrent acquirers of a free name: exactly one holds it, the others get None."""
    now = clock.time()
    results = await asyncio.gather(
        *(store.leases.acquire("l", owner=f"w{i}", now=now, ttl=10) for i in range(20))
    )
    holders = [r for r in results if r is not None]
    assert len(holders) == 1
    assert await store.leases.holder("l", now=now) == holders[0]


async def test_concurrent_acquirers_after_expiry_have_one_holder(
    store: Store, clock: FakeClock
) -> None:
    """20 concurrent acquirers of an expired lease: one takes it with the next token."""
    first = await store.leases.acquire("l", owner="old", now=clock.time(), ttl=1)
    assert first is not None
    clock.advance(1)
    now = clock.time()
    results = await asyncio.gather(
        *(store.leases.acquire("l", owner=f"w{i}", now=now, ttl=10) for i in range(20))
    )
    holders = [r for r in results if r is not None]
    assert len(holders) == 1
    assert holders[0].token > first.token
