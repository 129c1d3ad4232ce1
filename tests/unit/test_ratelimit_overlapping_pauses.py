"""Overlapping pauses of the token bucket: several 429s or ``remaining: 0`` answers at once."""

from __future__ import annotations

import pytest

from antifragile import FakeClock, TokenBucket
from antifragile.policies import RateLimitInfo


def test_overlapping_pauses_do_not_add_up(clock: FakeClock) -> None:
    """Three answers asking for a 1 s pause at the same moment pause the bucket for 1 s."""
    bucket = TokenBucket(10.0, burst=10, clock=clock)
    for _ in range(3):
        bucket.pause(1.0)
    assert bucket.reserve() == pytest.approx(1.0)
    assert bucket.reserve() == pytest.approx(1.1)


def test_a_longer_pause_in_force_is_not_shortened(clock: FakeClock) -> None:
    """A short pause during a longer one leaves the longer one as it was."""
    bucket = TokenBucket(10.0, burst=10, clock=clock)
    bucket.pause(5.0)
    clock.advance(1.0)
    bucket.pause(1.0)
    assert bucket.reserve() == pytest.approx(4.0)


def test_a_later_pause_extends_the_current_one(clock: FakeClock) -> None:
    """A pause reaching further than the current one moves the end of the pause out."""
    bucket = TokenBucket(10.0, burst=10, clock=clock)
    bucket.pause(1.0)
    clock.advance(0.5)
    bucket.pause(2.0)
    assert bucket.reserve() == pytest.approx(2.0)


def test_concurrent_answers_with_nothing_remaining(clock: FakeClock) -> None:
    """Every in-flight call reporting ``remaining: 0`` still means one wait until the reset."""
    bucket = TokenBucket(5.0, burst=5, clock=clock)
    for _ in range(5):
        bucket.reserve()
    for _ in range(5):
        bucket.observe(RateLimitInfo(limit=10, remaining=0, reset_after=2.0))
    assert bucket.reserve() == pytest.approx(2.0)


def test_reservations_already_made_are_honoured(clock: FakeClock) -> None:
    """A pause shorter than the queue of reservations already made adds nothing to it."""
    bucket = TokenBucket(10.0, burst=1, clock=clock)
    waits = [bucket.reserve() for _ in range(21)]  # the last one goes out in 2 s
    assert waits[-1] == pytest.approx(2.0)
    bucket.pause(1.0)
    assert bucket.reserve() == pytest.approx(2.1)
