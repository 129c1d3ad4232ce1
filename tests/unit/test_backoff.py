"""Back-off schedules: ceilings, jitter, bounds and validation."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antifragile import ConfigurationError, Constant, DecorrelatedJitter, Exponential, Linear
from antifragile.policies import Backoff


def test_constant_is_the_same_every_time() -> None:
    """``Constant`` waits its seconds before every retry; its cap is that value."""
    backoff = Constant(2.0)
    rng = random.Random(1)
    assert [backoff.ceiling(n) for n in (1, 2, 10)] == [2.0, 2.0, 2.0]
    assert backoff.delay(5, 2.0, rng) == 2.0
    assert backoff.cap == 2.0


def test_linear_grows_by_step_until_the_cap() -> None:
    """``Linear`` is ``initial + step * (n - 1)``, capped."""
    backoff = Linear(initial=1.0, step=2.0, cap=6.0)
    assert [backoff.ceiling(n) for n in (1, 2, 3, 4, 100)] == [1.0, 3.0, 5.0, 6.0, 6.0]
    assert backoff.delay(2, 0.0, random.Random(0)) == 3.0


def test_exponential_doubles_until_the_cap() -> None:
    """``Exponential`` is ``initial * multiplier ** (n - 1)``, capped."""
    backoff = Exponential(initial=0.5, multiplier=2.0, cap=5.0, jitter="none")
    assert [backoff.ceiling(n) for n in (1, 2, 3, 4, 5, 50)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.delay(3, 0.0, random.Random(0)) == 2.0


def test_exponential_defaults_to_full_jitter() -> None:
    """The default exponential schedule draws uniformly in ``[0, ceiling]``."""
    backoff = Exponential()
    rng = random.Random(7)
    delays = [backoff.delay(3, 0.0, rng) for _ in range(200)]
    assert all(0.0 <= d <= backoff.ceiling(3) for d in delays)
    assert len(set(delays)) > 100  # actually random


def test_equal_jitter_keeps_at_least_half() -> None:
    """Equal jitter draws in ``[ceiling / 2, ceiling]``."""
    backoff = Linear(initial=4.0, step=0.0, cap=4.0, jitter="equal")
    rng = random.Random(3)
    assert all(2.0 <= backoff.delay(1, 0.0, rng) <= 4.0 for _ in range(200))


def test_decorrelated_jitter_draws_from_initial_to_three_times_previous() -> None:
    """Each decorrelated delay lies in ``[initial, 3 * previous]``, capped."""
    backoff = DecorrelatedJitter(initial=1.0, cap=100.0)
    rng = random.Random(5)
    for previous in (0.0, 1.0, 2.0, 10.0):
        for _ in range(50):
            delay = backoff.delay(2, previous, rng)
            assert 1.0 <= delay <= max(1.0, 3 * previous)
    assert DecorrelatedJitter(initial=1.0, cap=2.0).delay(9, 50.0, rng) <= 2.0
    assert [backoff.ceiling(n) for n in (1, 2, 3)] == [1.0, 3.0, 9.0]


@pytest.mark.parametrize("retry", [700, 1_000, 1_001, 10**6])
@pytest.mark.parametrize(
    "backoff",
    [Exponential(multiplier=3.0), Exponential(multiplier=10, jitter="none"), DecorrelatedJitter()],
    ids=["exp3", "exp10", "decorrelated"],
)
def test_huge_retry_numbers_reach_the_cap_without_overflow(backoff: Backoff, retry: int) -> None:
    """Retry number 10**6 (a long-lived durable job, say) gives the cap, not an OverflowError."""
    assert backoff.ceiling(retry) == backoff.cap
    assert 0.0 <= backoff.delay(retry, backoff.cap, random.Random(0)) <= backoff.cap


def test_zero_initial_stays_zero() -> None:
    """A schedule starting at zero never waits, however many retries."""
    assert Exponential(initial=0.0, jitter="none").ceiling(5_000) == 0.0
    assert Linear(initial=0.0, step=0.0).ceiling(5_000) == 0.0


def test_schedules_are_immutable() -> None:
    """Schedules are frozen values that can be shared by policies."""
    backoff = Exponential()
    with pytest.raises(dataclasses.FrozenInstanceError):
        backoff.cap = 1.0  # type: ignore[misc]
    assert Exponential(1.0) == Exponential(1.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Constant(-1.0),
        lambda: Constant(math.nan),
        lambda: Constant(1.0, jitter="sometimes"),  # type: ignore[arg-type]
        lambda: Linear(initial=-1.0),
        lambda: Linear(step=-0.5),
        lambda: Linear(cap=-1.0),
        lambda: Exponential(initial=-0.1),
        lambda: Exponential(cap=math.nan),
        lambda: Exponential(multiplier=0.5),
        lambda: Exponential(multiplier=math.nan),
        lambda: Exponential(jitter="half"),  # type: ignore[arg-type]
        lambda: DecorrelatedJitter(initial=0.0),
        lambda: DecorrelatedJitter(cap=-1.0),
    ],
)
def test_invalid_schedules_are_rejected(make: object) -> None:
    """Negative or NaN durations, a multiplier below 1 and unknown jitters are misuse."""
    assert callable(make)
    with pytest.raises(ConfigurationError):
        make()


# -- properties -------------------------------------------------------------------------------

seconds = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
jitters = st.sampled_from(["none", "full", "equal"])
schedules: st.SearchStrategy[Backoff] = st.one_of(
    st.builds(Constant, seconds, jitters),
    st.builds(Linear, seconds, seconds, seconds, jitters),
    st.builds(
        Exponential,
        seconds,
        st.floats(min_value=1.0, max_value=1e3, allow_nan=False, allow_infinity=False),
        seconds,
        jitters,
    ),
    st.builds(
        DecorrelatedJitter,
        st.floats(min_value=1e-6, max_value=1e4, allow_nan=False, allow_infinity=False),
        seconds,
    ),
)


@given(
    backoff=schedules,
    retry=st.integers(min_value=1, max_value=100_000),
    previous=seconds,
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_property_delays_are_within_zero_and_cap(
    backoff: Backoff, retry: int, previous: float, seed: int
) -> None:
    """Every delay of every schedule lies in ``[0, cap]``."""
    delay = backoff.delay(retry, previous, random.Random(seed))
    assert 0.0 <= delay <= backoff.cap
    assert 0.0 <= backoff.ceiling(retry) <= backoff.cap


@given(backoff=schedules, n=st.integers(min_value=1, max_value=5_000))
def test_property_ceiling_never_decreases(backoff: Backoff, n: int) -> None:
    """``ceiling(n)`` is non-decreasing in *n*, across the whole range up to huge *n*."""
    points = sorted({1, 2, n, n + 1, 2 * n, n + 997, 10 * n})
    ceilings = [backoff.ceiling(p) for p in points]
    assert ceilings == sorted(ceilings)
