"""Contract: RateLimitStore -- shared token buckets with reservation semantics and pauses."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from antifragile import ConfigurationError, FakeClock
from antifragile.stores import Store, TokenGrant


def approx(value: float) -> Any:
    return pytest.approx(value, abs=1e-6)


async def test_a_new_bucket_is_full_then_spaced_at_one_over_rate(
    store: Store, clock: FakeClock
) -> None:
    """A fresh bucket grants burst tokens at once; later takes wait 1/rate, 2/rate, ..."""
    now = clock.time()
    waits = []
    for _ in range(8):
        grant = await store.rate_limits.take("b", tokens=1, rate=2, burst=5, max_wait=60, now=now)
        assert grant.granted
        waits.append(grant.wait)
    assert waits == [approx(w) for w in (0, 0, 0, 0, 0, 0.5, 1.0, 1.5)]


async def test_tokens_refill_at_rate_up_to_burst(store: Store, clock: FakeClock) -> None:
    """Time refills the bucket at rate tokens per second, never beyond burst."""
    for _ in range(3):
        await store.rate_limits.take("b", tokens=1, rate=1, burst=3, max_wait=0, now=clock.time())
    clock.advance(2)
    for _ in range(2):
        grant = await store.rate_limits.take(
            "b", tokens=1, rate=1, burst=3, max_wait=0, now=clock.time()
        )
        assert grant == TokenGrant(True, 0.0)
    refused = await store.rate_limits.take(
        "b", tokens=1, rate=1, burst=3, max_wait=0, now=clock.time()
    )
    assert not refused.granted
    assert refused.wait == approx(1.0)
    clock.advance(3600)
    for _ in range(3):
        grant = await store.rate_limits.take(
            "b", tokens=1, rate=1, burst=3, max_wait=0, now=clock.time()
        )
        assert grant.granted
    assert not (
        await store.rate_limits.take("b", tokens=1, rate=1, burst=3, max_wait=0, now=clock.time())
    ).granted


async def test_a_wait_beyond_max_wait_is_refused_and_takes_nothing(
    store: Store, clock: FakeClock
) -> None:
    """A take whose wait exceeds max_wait is not granted, says the wait, and reserves nothing."""
    now = clock.time()
    await store.rate_limits.take("b", tokens=2, rate=4, burst=2, max_wait=0, now=now)
    for _ in range(3):
        refused = await store.rate_limits.take(
            "b", tokens=3, rate=4, burst=2, max_wait=0.5, now=now
        )
        assert refused == TokenGrant(False, approx(0.75))
    granted = await store.rate_limits.take("b", tokens=1, rate=4, burst=2, max_wait=0.5, now=now)
    assert granted == TokenGrant(True, approx(0.25))


async def test_a_wait_equal_to_max_wait_is_granted(store: Store, clock: FakeClock) -> None:
    """max_wait is inclusive: a wait of exactly max_wait is granted."""
    now = clock.time()
    await store.rate_limits.take("b", tokens=1, rate=2, burst=1, max_wait=0, now=now)
    grant = await store.rate_limits.take("b", tokens=1, rate=2, burst=1, max_wait=0.5, now=now)
    assert grant == TokenGrant(True, approx(0.5))


async def test_reservations_carry_over_into_the_future(store: Store, clock: FakeClock) -> None:
    """Granted waits are debts: time first pays them back before tokens are free again."""
    now = clock.time()
    for _ in range(4):
        await store.rate_limits.take("b", tokens=1, rate=1, burst=1, max_wait=10, now=now)
    clock.advance(2)
    grant = await store.rate_limits.take(
        "b", tokens=1, rate=1, burst=1, max_wait=10, now=clock.time()
    )
    assert grant == TokenGrant(True, approx(2.0))


async def test_multi_token_takes(store: Store, clock: FakeClock) -> None:
    """Taking several tokens at once costs that many tokens."""
    now = clock.time()
    first = await store.rate_limits.take("b", tokens=3, rate=1, burst=4, max_wait=10, now=now)
    second = await store.rate_limits.take("b", tokens=3, rate=1, burst=4, max_wait=10, now=now)
    assert first == TokenGrant(True, 0.0)
    assert second == TokenGrant(True, approx(2.0))


async def test_buckets_are_independent(store: Store, clock: FakeClock) -> None:
    """Emptying one bucket leaves another full."""
    now = clock.time()
    await store.rate_limits.take("a", tokens=1, rate=1, burst=1, max_wait=0, now=now)
    assert not (
        await store.rate_limits.take("a", tokens=1, rate=1, burst=1, max_wait=0, now=now)
    ).granted
    assert (
        await store.rate_limits.take("b", tokens=1, rate=1, burst=1, max_wait=0, now=now)
    ).granted


async def test_pause_hands_out_nothing_then_resumes_with_one_token(
    store: Store, clock: FakeClock
) -> None:
    """After pause(s) no token comes for s seconds; then one token, then one per 1/rate."""
    now = clock.time()
    await store.rate_limits.pause("b", seconds=5, rate=2, burst=10, now=now)
    refused = await store.rate_limits.take("b", tokens=1, rate=2, burst=10, max_wait=1, now=now)
    assert refused == TokenGrant(False, approx(5.0))
    clock.advance(3)
    reserved = await store.rate_limits.take(
        "b", tokens=1, rate=2, burst=10, max_wait=3, now=clock.time()
    )
    assert reserved == TokenGrant(True, approx(2.0))
    clock.advance(2)
    after = await store.rate_limits.take(
        "b", tokens=1, rate=2, burst=10, max_wait=3, now=clock.time()
    )
    assert after == TokenGrant(True, approx(0.5))


async def test_pause_of_a_full_bucket_keeps_only_one_token(store: Store, clock: FakeClock) -> None:
    """When a pause ends the bucket holds one token, not the burst it had before."""
    now = clock.time()
    await store.rate_limits.take("b", tokens=1, rate=1, burst=10, max_wait=0, now=now)
    await store.rate_limits.pause("b", seconds=2, rate=1, burst=10, now=now)
    clock.advance(2)
    first = await store.rate_limits.take(
        "b", tokens=1, rate=1, burst=10, max_wait=5, now=clock.time()
    )
    second = await store.rate_limits.take(
        "b", tokens=1, rate=1, burst=10, max_wait=5, now=clock.time()
    )
    assert first == TokenGrant(True, 0.0)
    assert second == TokenGrant(True, approx(1.0))


async def test_pauses_do_not_add_up(store: Store, clock: FakeClock) -> None:
    """Two pauses at once end when the longer ends; a shorter one does not cut it short."""
    now = clock.time()
    await store.rate_limits.pause("b", seconds=5, rate=1, burst=5, now=now)
    await store.rate_limits.pause("b", seconds=5, rate=1, burst=5, now=now)
    await store.rate_limits.pause("b", seconds=1, rate=1, burst=5, now=now)
    grant = await store.rate_limits.take("b", tokens=1, rate=1, burst=5, max_wait=60, now=now)
    assert grant == TokenGrant(True, approx(5.0))


async def test_pause_does_not_forgive_reservations(store: Store, clock: FakeClock) -> None:
    """A pause shorter than the waits already reserved changes nothing."""
    now = clock.time()
    for _ in range(5):
        await store.rate_limits.take("b", tokens=1, rate=1, burst=1, max_wait=60, now=now)
    await store.rate_limits.pause("b", seconds=2, rate=1, burst=1, now=now)
    grant = await store.rate_limits.take("b", tokens=1, rate=1, burst=1, max_wait=60, now=now)
    assert grant == TokenGrant(True, approx(5.0))


async def test_pause_of_zero_seconds_does_nothing(store: Store, clock: FakeClock) -> None:
    """pause with seconds <= 0 leaves the bucket as it was."""
    now = clock.time()
    await store.rate_limits.pause("b", seconds=0, rate=1, burst=3, now=now)
    await store.rate_limits.pause("b", seconds=-1, rate=1, burst=3, now=now)
    for _ in range(3):
        grant = await store.rate_limits.take("b", tokens=1, rate=1, burst=3, max_wait=0, now=now)
        assert grant == TokenGrant(True, 0.0)


async def test_a_non_positive_rate_is_refused(store: Store, clock: FakeClock) -> None:
    """take and pause with rate <= 0 raise ConfigurationError."""
    now = clock.time()
    with pytest.raises(ConfigurationError):
        await store.rate_limits.take("b", tokens=1, rate=0, burst=1, max_wait=0, now=now)
    with pytest.raises(ConfigurationError):
        await store.rate_limits.pause("b", seconds=1, rate=-1, burst=1, now=now)


async def test_concurrent_takes_are_spaced_exactly(store: Store, clock: FakeClock) -> None:
    """100 concurrent takes: burst get no wait, the rest waits exactly 1/rate apart."""
    now = clock.time()
    grants = await asyncio.gather(
        *(
            store.rate_limits.take("b", tokens=1, rate=10, burst=10, max_wait=100, now=now)
            for _ in range(100)
        )
    )
    assert all(g.granted for g in grants)
    waits = sorted(g.wait for g in grants)
    assert waits == [approx(max(0, i - 9) / 10) for i in range(100)]


async def test_concurrent_takes_beyond_max_wait_are_refused(store: Store, clock: FakeClock) -> None:
    """100 concurrent takes with max_wait 1s at 10/s after a burst of 5: 15 granted, 85 not."""
    now = clock.time()
    grants = await asyncio.gather(
        *(
            store.rate_limits.take("b", tokens=1, rate=10, burst=5, max_wait=1, now=now)
            for _ in range(100)
        )
    )
    granted = sorted(g.wait for g in grants if g.granted)
    assert granted == [approx(max(0, i - 4) / 10) for i in range(15)]
    assert all(g.wait == approx(1.1) for g in grants if not g.granted)


# -- refunds -----------------------------------------------------------------------------------


async def test_a_refund_gives_an_unused_reservation_back(store: Store, clock: FakeClock) -> None:
    """A grant whose caller stopped waiting, refunded, no longer delays the next caller: with
    rate 1/s and one token taken, a reservation (wait 1 s) refunded after 0.05 s leaves the
    next caller 0.95 s to wait, not 1.95 s."""
    limits = store.rate_limits
    first = await limits.take("b", tokens=1, rate=1, burst=1, max_wait=10, now=clock.time())
    second = await limits.take("b", tokens=1, rate=1, burst=1, max_wait=10, now=clock.time())
    assert (first.wait, second.wait) == (0.0, approx(1.0))
    clock.advance(0.05)
    await limits.refund("b", tokens=1, rate=1, burst=1, now=clock.time())
    third = await limits.take("b", tokens=1, rate=1, burst=1, max_wait=10, now=clock.time())
    assert third == TokenGrant(True, approx(0.95))


async def test_a_refund_never_fills_beyond_burst(store: Store, clock: FakeClock) -> None:
    """Refunding more than was taken leaves the bucket at burst, no fuller."""
    limits = store.rate_limits
    await limits.take("b", tokens=1, rate=1, burst=2, max_wait=10, now=clock.time())
    await limits.refund("b", tokens=5, rate=1, burst=2, now=clock.time())
    waits = [
        (await limits.take("b", tokens=1, rate=1, burst=2, max_wait=10, now=clock.time())).wait
        for _ in range(3)
    ]
    assert waits == [0.0, 0.0, approx(1.0)]


async def test_a_refund_to_an_unknown_bucket_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    """A bucket never taken from is full: a refund leaves it full (burst, not more)."""
    await store.rate_limits.refund("b", tokens=3, rate=1, burst=2, now=clock.time())
    waits = [
        (
            await store.rate_limits.take(
                "b", tokens=1, rate=1, burst=2, max_wait=10, now=clock.time()
            )
        ).wait
        for _ in range(3)
    ]
    assert waits == [0.0, 0.0, approx(1.0)]


async def test_a_refund_during_a_pause_keeps_the_pause(store: Store, clock: FakeClock) -> None:
    """A reservation made during a pause and refunded gives its token back without cutting
    the pause short: the next token still comes when the pause ends."""
    limits = store.rate_limits
    now = clock.time()
    await limits.pause("b", seconds=5, rate=1, burst=5, now=now)
    reserved = await limits.take("b", tokens=1, rate=1, burst=5, max_wait=10, now=now)
    assert reserved == TokenGrant(True, approx(5.0))
    clock.advance(1)
    await limits.refund("b", tokens=1, rate=1, burst=5, now=clock.time())
    after = await limits.take("b", tokens=1, rate=1, burst=5, max_wait=10, now=clock.time())
    assert after == TokenGrant(True, approx(4.0))


async def test_concurrent_refunds_are_all_counted(store: Store, clock: FakeClock) -> None:
    """Refunds racing each other are atomic: ten reservations refunded at once all come back."""
    limits = store.rate_limits
    now = clock.time()
    for _ in range(11):
        await limits.take("b", tokens=1, rate=1, burst=1, max_wait=60, now=now)
    await asyncio.gather(
        *(limits.refund("b", tokens=1, rate=1, burst=1, now=now) for _ in range(10))
    )
    grant = await limits.take("b", tokens=1, rate=1, burst=1, max_wait=60, now=now)
    assert grant == TokenGrant(True, approx(1.0))


async def test_a_refund_with_a_non_positive_rate_is_refused(store: Store, clock: FakeClock) -> None:
    """rate must be > 0 for a refund too."""
    with pytest.raises(ConfigurationError):
        await store.rate_limits.refund("b", tokens=1, rate=0, burst=1, now=clock.time())
