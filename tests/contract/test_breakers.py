"""Contract: BreakerStore -- the shared record (compare-and-set) and the window of outcomes."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from antifragile import ConfigurationError
from antifragile.stores import BreakerRecord, Store, WindowTotals

OPEN = BreakerRecord(
    name="shopify",
    state="open",
    generation=1,
    open_until=1_700_000_030.5,
    consecutive_opens=1,
    probes_left=0,
)


async def test_an_unknown_breaker_loads_as_closed_generation_zero(store: Store) -> None:
    """load of a name never stored gives the closed generation-0 record."""
    assert await store.breakers.load("shopify") == BreakerRecord(name="shopify")
    assert await store.breakers.load("shopify") == BreakerRecord("shopify", "closed", 0, 0.0, 0, 0)


async def test_cas_from_the_default_record_wins(store: Store) -> None:
    """compare_and_set expecting the default record stores new and returns it."""
    result = await store.breakers.compare_and_set(BreakerRecord("shopify"), OPEN)
    assert result == OPEN
    assert await store.breakers.load("shopify") == OPEN


async def test_cas_stores_every_field(store: Store) -> None:
    """A winning compare_and_set stores all fields, floats included, exactly."""
    new = BreakerRecord("b", "half_open", 7, 1_700_000_123.25, 3, 2)
    await store.breakers.compare_and_set(BreakerRecord("b"), new)
    assert await store.breakers.load("b") == new


@pytest.mark.parametrize(
    "field",
    [{"state": "closed"}, {"generation": 2}, {"probes_left": 1}],
    ids=["state", "generation", "probes_left"],
)
async def test_cas_loses_when_a_compared_field_differs(
    store: Store, field: dict[str, object]
) -> None:
    """compare_and_set loses if state, generation or probes_left differ, returning the current."""
    await store.breakers.compare_and_set(BreakerRecord("shopify"), OPEN)
    stale = replace(OPEN, **field)  # type: ignore[arg-type]
    attempt = BreakerRecord("shopify", "half_open", 2, 0.0, 1, 1)
    assert await store.breakers.compare_and_set(stale, attempt) == OPEN
    assert await store.breakers.load("shopify") == OPEN


async def test_cas_ignores_open_until_and_consecutive_opens(store: Store) -> None:
    """open_until and consecutive_opens of expected are not compared."""
    await store.breakers.compare_and_set(BreakerRecord("shopify"), OPEN)
    expected = replace(OPEN, open_until=0.0, consecutive_opens=99)
    new = BreakerRecord("shopify", "half_open", 2, 0.0, 1, 1)
    assert await store.breakers.compare_and_set(expected, new) == new


async def test_cas_from_default_loses_once_a_record_exists(store: Store) -> None:
    """After a transition, expecting the default record loses and returns the stored one."""
    await store.breakers.compare_and_set(BreakerRecord("shopify"), OPEN)
    other = BreakerRecord("shopify", "forced_open", 1)
    assert await store.breakers.compare_and_set(BreakerRecord("shopify"), other) == OPEN


async def test_cas_chain_of_transitions(store: Store) -> None:
    """A sequence of transitions, each expecting the previous record, all win in order."""
    closed = BreakerRecord("b")
    opened = BreakerRecord("b", "open", 1, 1_700_000_030.0, 1, 0)
    half = BreakerRecord("b", "half_open", 2, 0.0, 1, 1)
    probing = replace(half, probes_left=0)
    closed_again = BreakerRecord("b", "closed", 3)
    for expected, new in (
        (closed, opened),
        (opened, half),
        (half, probing),
        (probing, closed_again),
    ):
        assert await store.breakers.compare_and_set(expected, new) == new
    assert await store.breakers.load("b") == closed_again


async def test_cas_with_a_different_name_is_refused(store: Store) -> None:
    """compare_and_set of a record under another name raises ConfigurationError."""
    with pytest.raises(ConfigurationError):
        await store.breakers.compare_and_set(BreakerRecord("a"), BreakerRecord("b", "open", 1))
    assert await store.breakers.load("a") == BreakerRecord("a")
    assert await store.breakers.load("b") == BreakerRecord("b")


async def test_breakers_are_independent(store: Store) -> None:
    """Records and windows of different names do not mix."""
    await store.breakers.compare_and_set(BreakerRecord("shopify"), OPEN)
    assert await store.breakers.load("hubspot") == BreakerRecord("hubspot")
    await store.breakers.add_outcomes("shopify", second=100, calls=5, failures=5, slow=0, window=10)
    totals = await store.breakers.add_outcomes(
        "hubspot", second=100, calls=1, failures=0, slow=0, window=10
    )
    assert totals == WindowTotals(calls=1, failures=0, slow=0)


async def test_concurrent_cas_has_one_winner(store: Store) -> None:
    """50 concurrent transitions from the same record: one wins, every loser sees the winner."""
    base = BreakerRecord("b")
    candidates = [BreakerRecord("b", "open", 1, float(i), 1, 0) for i in range(50)]
    results = await asyncio.gather(*(store.breakers.compare_and_set(base, c) for c in candidates))
    winners = [r for r, c in zip(results, candidates, strict=True) if r == c]
    assert len(winners) == 1
    assert all(r == winners[0] for r in results)
    assert await store.breakers.load("b") == winners[0]


async def test_add_outcomes_sums_the_window(store: Store) -> None:
    """add_outcomes adds to one-second buckets and totals those in (second - window, second]."""
    b = store.breakers
    assert await b.add_outcomes("b", second=100, calls=3, failures=1, slow=0, window=10) == (
        WindowTotals(3, 1, 0)
    )
    assert await b.add_outcomes("b", second=100, calls=2, failures=2, slow=1, window=10) == (
        WindowTotals(5, 3, 1)
    )
    assert await b.add_outcomes("b", second=105, calls=1, failures=0, slow=1, window=10) == (
        WindowTotals(6, 3, 2)
    )
    # at 110 the bucket of second 100 is just outside (110 - 10, 110]
    assert await b.add_outcomes("b", second=110, calls=1, failures=1, slow=0, window=10) == (
        WindowTotals(2, 1, 1)
    )


async def test_add_outcomes_with_zero_counts_only_reads(store: Store) -> None:
    """All-zero counts return the current totals and change nothing."""
    b = store.breakers
    await b.add_outcomes("b", second=50, calls=4, failures=1, slow=2, window=5)
    for _ in range(2):
        totals = await b.add_outcomes("b", second=52, calls=0, failures=0, slow=0, window=5)
        assert totals == WindowTotals(4, 1, 2)
    assert await b.add_outcomes("b", second=55, calls=0, failures=0, slow=0, window=5) == (
        WindowTotals(0, 0, 0)
    )


async def test_add_outcomes_ignores_later_buckets(store: Store) -> None:
    """Buckets after second (another process ahead in time) are not in the totals."""
    b = store.breakers
    await b.add_outcomes("b", second=200, calls=9, failures=9, slow=9, window=10)
    totals = await b.add_outcomes("b", second=195, calls=1, failures=0, slow=0, window=10)
    assert totals == WindowTotals(1, 0, 0)


async def test_a_window_of_one_second_counts_only_that_second(store: Store) -> None:
    """With window 1 only the bucket of second itself counts."""
    b = store.breakers
    await b.add_outcomes("b", second=10, calls=5, failures=5, slow=0, window=1)
    assert await b.add_outcomes("b", second=11, calls=1, failures=0, slow=0, window=1) == (
        WindowTotals(1, 0, 0)
    )


async def test_a_window_below_one_second_is_refused(store: Store) -> None:
    """add_outcomes with window < 1 raises ConfigurationError."""
    with pytest.raises(ConfigurationError):
        await store.breakers.add_outcomes("b", second=1, calls=1, failures=0, slow=0, window=0)


async def test_reset_window_forgets_outcomes_but_not_the_record(store: Store) -> None:
    """reset_window empties the window; the breaker record is untouched."""
    b = store.breakers
    await b.compare_and_set(BreakerRecord("shopify"), OPEN)
    await b.add_outcomes("shopify", second=100, calls=5, failures=4, slow=1, window=10)
    await b.reset_window("shopify")
    assert await b.add_outcomes("shopify", second=101, calls=0, failures=0, slow=0, window=10) == (
        WindowTotals(0, 0, 0)
    )
    assert await b.load("shopify") == OPEN
    await b.reset_window("never-used")


async def test_concurrent_outcomes_are_all_counted(store: Store) -> None:
    """50 concurrent add_outcomes into one second all count: the last total sees them all."""
    b = store.breakers
    await asyncio.gather(
        *(
            b.add_outcomes("b", second=300, calls=1, failures=i % 2, slow=0, window=10)
            for i in range(50)
        )
    )
    assert await b.add_outcomes("b", second=300, calls=0, failures=0, slow=0, window=10) == (
        WindowTotals(50, 25, 0)
    )


async def test_the_writer_id_tells_the_winner_of_equal_proposals(store: Store) -> None:
    """Two identical transitions but for their writer id: only the winner reads its own id back,
    the loser reads the winner's record (this is how exactly one process becomes the probe)."""
    start = BreakerRecord("w", state="open", generation=3, open_until=10.0, probes_left=0)
    await store.breakers.compare_and_set(BreakerRecord("w"), start)
    proposals = [
        BreakerRecord("w", state="half_open", generation=4, probes_left=0, writer=f"p{i}")
        for i in range(8)
    ]
    results = await asyncio.gather(
        *(store.breakers.compare_and_set(start, proposal) for proposal in proposals)
    )
    winners = [p.writer for p, r in zip(proposals, results, strict=True) if r.writer == p.writer]
    assert len(winners) == 1
    assert all(r.writer == winners[0] for r in results)
    assert (await store.breakers.load("w")).writer == winners[0]


async def test_probe_results_are_counted_per_round(store: Store) -> None:
    """Half-open results add up within their round; a new round starts from zero."""
    b = store.breakers
    assert await b.add_probe_result("p", generation=5, failure=False, slow=False) == (
        WindowTotals(1, 0, 0)
    )
    assert await b.add_probe_result("p", generation=5, failure=True, slow=True) == (
        WindowTotals(2, 1, 1)
    )
    assert await b.add_probe_result("p", generation=7, failure=True, slow=False) == (
        WindowTotals(1, 1, 0)
    )


async def test_probe_results_are_apart_from_the_window_and_other_breakers(
    store: Store,
) -> None:
    """Probe results neither show in the breaker's window nor in another breaker's round, and
    resetting the window does not touch them."""
    b = store.breakers
    await b.add_outcomes("p", second=5, calls=3, failures=1, slow=0, window=10)
    await b.add_probe_result("p", generation=5, failure=True, slow=False)
    assert await b.add_outcomes("p", second=5, calls=0, failures=0, slow=0, window=10) == (
        WindowTotals(3, 1, 0)
    )
    assert await b.add_probe_result("q", generation=5, failure=False, slow=False) == (
        WindowTotals(1, 0, 0)
    )
    await b.reset_window("p")
    assert await b.add_probe_result("p", generation=5, failure=False, slow=False) == (
        WindowTotals(2, 1, 0)
    )


async def test_concurrent_probe_results_see_each_count_once(store: Store) -> None:
    """Of N results reported at once, each sees a different running total: exactly one sees
    all N (the one that decides the round)."""
    results = await asyncio.gather(
        *(
            store.breakers.add_probe_result("p", generation=2, failure=i % 2 == 0, slow=False)
            for i in range(6)
        )
    )
    assert sorted(r.calls for r in results) == [1, 2, 3, 4, 5, 6]
    final = next(r for r in results if r.calls == 6)
    assert final.failures == 3
