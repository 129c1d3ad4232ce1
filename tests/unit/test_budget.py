"""Retry budget: retries stay within a share of recent requests plus a floor."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from antifragile import ConfigurationError, FakeClock, RetryBudget, RetryBudgetExhaustedError
from antifragile.policies import RetryBudgetConfig


def test_floor_allows_retries_without_traffic(clock: FakeClock) -> None:
    """With no requests, ``min_retries_per_second * window`` retries are still allowed."""
    budget = RetryBudget(0.2, min_retries_per_second=0.5, window=10.0, clock=clock)
    assert budget.config.floor == 5.0
    assert [budget.try_spend() for _ in range(6)] == [True] * 5 + [False]


def test_ratio_of_requests_is_allowed(clock: FakeClock) -> None:
    """Without a floor, retries may be ``ratio`` of the requests in the window."""
    budget = RetryBudget(0.2, min_retries_per_second=0.0, clock=clock)
    assert not budget.try_spend()
    for _ in range(50):
        budget.record_request()
    granted = sum(budget.try_spend() for _ in range(20))
    assert granted == 10
    assert budget.usage() == (50, 10)


def test_window_slides_and_old_counts_expire(clock: FakeClock) -> None:
    """Retries spent more than ``window`` seconds ago no longer count."""
    budget = RetryBudget(0.0, min_retries_per_second=0.2, window=10.0, clock=clock)
    assert [budget.try_spend() for _ in range(3)] == [True, True, False]
    clock.advance(9.0)
    assert not budget.try_spend()
    clock.advance(1.0)
    assert budget.try_spend()
    assert budget.usage() == (0, 1)


def test_buckets_expire_one_by_one(clock: FakeClock) -> None:
    """Requests leave the window bucket by bucket, not all at once."""
    budget = RetryBudget(1.0, min_retries_per_second=0.0, window=10.0, buckets=10, clock=clock)
    budget.record_request()
    clock.advance(5.0)
    budget.record_request()
    assert budget.usage() == (2, 0)
    clock.advance(5.0)
    assert budget.usage() == (1, 0)
    clock.advance(5.0)
    assert budget.usage() == (0, 0)


def test_a_long_idle_period_clears_everything(clock: FakeClock) -> None:
    """After more than a window of silence the budget is back to its floor."""
    budget = RetryBudget(1.0, min_retries_per_second=0.0, window=4.0, buckets=4, clock=clock)
    for _ in range(10):
        budget.record_request()
    assert budget.try_spend()
    clock.advance(1_000.0)
    assert budget.usage() == (0, 0)
    assert not budget.try_spend()


def test_acquire_raises_when_exhausted(clock: FakeClock) -> None:
    """``acquire`` raises a retry-budget rejection naming the provider and the counts."""
    budget = RetryBudget(0.0, min_retries_per_second=0.1, window=10.0, clock=clock)
    budget.acquire(provider="hubspot")
    with pytest.raises(RetryBudgetExhaustedError) as caught:
        budget.acquire(provider="hubspot")
    assert caught.value.provider == "hubspot"
    assert caught.value.code == "RETRY_BUDGET_EXHAUSTED"
    assert "1 retries for 0 requests" in str(caught.value)


def test_use_clock_starts_afresh(clock: FakeClock) -> None:
    """Switching clocks forgets the counts kept on the old one."""
    budget = RetryBudget(0.0, min_retries_per_second=0.1, window=10.0)
    budget.try_spend()
    budget.use_clock(clock)
    assert budget.usage() == (0, 0)
    assert budget.try_spend()


def test_repr_names_the_configuration() -> None:
    """The repr shows ratio, floor rate and window."""
    assert repr(RetryBudget(0.3, window=5.0)) == (
        "RetryBudget(ratio=0.3, min_retries_per_second=1.0, window=5.0)"
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetryBudgetConfig(ratio=-0.1),
        lambda: RetryBudgetConfig(ratio=11.0),
        lambda: RetryBudgetConfig(min_retries_per_second=-1.0),
        lambda: RetryBudgetConfig(window=0.0),
        lambda: RetryBudgetConfig(buckets=0),
        lambda: RetryBudgetConfig(buckets=3601),
        lambda: RetryBudget(ratio=float("nan")),
    ],
)
def test_invalid_budgets_are_rejected(make: Callable[[], object]) -> None:
    """Out-of-range ratios, negative floors, empty windows and bad bucket counts are misuse."""
    with pytest.raises(ConfigurationError):
        make()


class BudgetMachine(RuleBasedStateMachine):
    """Random requests, retries and clock moves against a model that remembers every event."""

    @initialize(
        ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
        per_second=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
        window=st.sampled_from([1.0, 5.0, 10.0]),
        buckets=st.sampled_from([1, 5, 10]),
    )
    def setup(self, ratio: float, per_second: float, window: float, buckets: int) -> None:
        self.clock = FakeClock()
        self.budget = RetryBudget(
            ratio,
            min_retries_per_second=per_second,
            window=window,
            buckets=buckets,
            clock=self.clock,
        )
        self.config = self.budget.config
        self.width = window / buckets
        self.requests: list[int] = []  # bucket epoch of each request
        self.retries: list[int] = []  # bucket epoch of each granted retry

    def _epoch(self) -> int:
        return int(self.clock.monotonic() / self.width)

    def _in_window(self, epochs: list[int]) -> int:
        oldest = self._epoch() - self.config.buckets
        return sum(1 for e in epochs if e > oldest)

    @rule(n=st.integers(min_value=1, max_value=20))
    def requests_arrive(self, n: int) -> None:
        for _ in range(n):
            self.budget.record_request()
            self.requests.append(self._epoch())

    @rule()
    def retry(self) -> None:
        requests = self._in_window(self.requests)
        retries = self._in_window(self.retries)
        allowed = retries + 1 <= self.config.ratio * requests + self.config.floor
        granted = self.budget.try_spend()
        assert granted == allowed
        if granted:
            self.retries.append(self._epoch())
            # the invariant at the moment of granting
            assert retries + 1 <= self.config.ratio * requests + self.config.floor

    @rule(seconds=st.floats(min_value=0.0, max_value=15.0))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: hasattr(self, "budget"))
    @invariant()
    def usage_matches_the_model(self) -> None:
        assert self.budget.usage() == (
            self._in_window(self.requests),
            self._in_window(self.retries),
        )


TestBudgetMachine = BudgetMachine.TestCase
TestBudgetMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
