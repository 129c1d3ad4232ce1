"""Token-bucket rate limiter: waits, rejections, refunds, pauses and provider-header adaptation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from antifragile import ConfigurationError, FakeClock, RateLimitedError, TokenBucket
from antifragile.observability import CallRejected, LimiterAdjusted, LimiterWait, RecordingObserver
from antifragile.policies import RateLimitInfo
from antifragile.policies._ratelimit import WINDOW_SETTLED, window_margin


def _bucket(clock: FakeClock, rate: float = 10.0, **kw: object) -> TokenBucket:
    return TokenBucket(rate, clock=clock, name="shopify", **kw)  # type: ignore[arg-type]


def test_burst_is_available_at_once_then_calls_are_spaced(clock: FakeClock) -> None:
    """``burst`` calls go at once; later ones are spaced ``1 / rate`` apart."""
    bucket = _bucket(clock, 2.0, burst=2)
    assert [bucket.reserve() for _ in range(5)] == [0.0, 0.0, 0.5, 1.0, 1.5]


def test_tokens_refill_with_time_up_to_burst(clock: FakeClock) -> None:
    """Tokens come back at ``rate`` per second, never beyond ``burst``."""
    bucket = _bucket(clock, 2.0, burst=4)
    for _ in range(4):
        bucket.reserve()
    assert bucket.available == 0.0
    clock.advance(1.0)
    assert bucket.available == 2.0
    clock.advance(100.0)
    assert bucket.available == 4.0


def test_default_burst_is_the_rate_or_one(clock: FakeClock) -> None:
    """Without ``burst``, one second's worth of tokens (at least one) is the bucket's size."""
    assert TokenBucket(5.0, clock=clock).burst == 5.0
    assert TokenBucket(0.2, clock=clock).burst == 1.0


def test_acquire_sleeps_on_the_clock(clock: FakeClock) -> None:
    """The blocking form sleeps exactly the reserved wait (on the injected clock)."""
    bucket = _bucket(clock, 1.0, burst=1)
    bucket.acquire()
    bucket.acquire()
    bucket.acquire()
    assert clock.sleeps == [1.0, 1.0]  # each sleep moved the clock on by one token


async def test_aacquire_sleeps_on_the_clock(clock: FakeClock) -> None:
    """The async form suspends for the reserved wait (on the injected clock)."""
    bucket = _bucket(clock, 4.0, burst=1)
    await bucket.aacquire()
    await bucket.aacquire()
    assert clock.sleeps == [0.25]


def test_wait_beyond_max_wait_is_rejected_with_retry_after(clock: FakeClock) -> None:
    """A call that would wait longer than ``max_wait`` is refused at once and takes nothing."""
    observer = RecordingObserver()
    bucket = _bucket(clock, 1.0, burst=1, max_wait=2.0, observer=observer)
    assert [bucket.reserve(operation="op") for _ in range(3)] == [0.0, 1.0, 2.0]
    before = bucket.available
    with pytest.raises(RateLimitedError) as caught:
        bucket.reserve(operation="op")
    assert caught.value.retry_after == 3.0
    assert caught.value.provider == "shopify"
    assert caught.value.operation == "op"
    assert bucket.available == before
    (rejected,) = observer.of(CallRejected)
    assert (rejected.by, rejected.code, rejected.retry_after) == (
        "rate_limiter",
        "RATE_LIMITED",
        3.0,
    )
    assert [e.wait for e in observer.of(LimiterWait)] == [1.0, 2.0]


def test_max_wait_zero_rejects_whenever_no_token_is_there(clock: FakeClock) -> None:
    """With ``max_wait=0`` the limiter never queues."""
    bucket = _bucket(clock, 1.0, burst=1, max_wait=0.0)
    bucket.reserve()
    with pytest.raises(RateLimitedError):
        bucket.acquire()
    assert clock.sleeps == []


def test_refund_gives_tokens_back_up_to_burst(clock: FakeClock) -> None:
    """A reservation for a call that was not made is returned, capped at ``burst``."""
    bucket = _bucket(clock, 1.0, burst=2)
    bucket.reserve()
    bucket.reserve()
    bucket.reserve()
    assert bucket.available == -1.0
    bucket.refund()
    assert bucket.available == 0.0
    bucket.refund(5.0)
    assert bucket.available == 2.0


class _StuckClock(FakeClock):
    """A fake clock whose async sleep never ends (until cancelled)."""

    async def asleep(self, seconds: float) -> None:
        await asyncio.Event().wait()


async def test_cancelled_async_wait_refunds_its_token() -> None:
    """A task cancelled while waiting for its token gives the token back."""
    clock = _StuckClock()
    bucket = TokenBucket(1.0, burst=1, clock=clock)
    await bucket.aacquire()
    task = asyncio.create_task(bucket.aacquire())
    await asyncio.sleep(0)
    assert bucket.available == -1.0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bucket.available == 0.0


def test_threads_reserving_at_once_are_spaced_evenly() -> None:
    """Reservations are atomic: concurrent callers get distinct, evenly spaced slots."""
    clock = FakeClock()
    bucket = TokenBucket(10.0, burst=5, max_wait=100.0, clock=clock)
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(5):
            wait = bucket.reserve()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = [0.0] * 5 + [k / 10 for k in range(1, 36)]
    assert sorted(waits) == pytest.approx(expected)


# -- pause ------------------------------------------------------------------------------------


def test_pause_hands_out_nothing_until_it_ends(clock: FakeClock) -> None:
    """After ``pause(5)`` the next token is there in exactly 5 s, then the normal pace resumes."""
    bucket = _bucket(clock, 10.0, burst=10)
    bucket.pause(5.0)
    assert bucket.reserve() == pytest.approx(5.0)
    bucket.refund()
    clock.advance(5.0)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.1)


def test_pause_of_zero_does_nothing(clock: FakeClock) -> None:
    """A non-positive pause leaves the bucket as it was."""
    bucket = _bucket(clock, 10.0, burst=10)
    bucket.pause(0.0)
    bucket.pause(-3.0)
    assert bucket.available == 10.0


def test_use_clock_restarts_on_the_new_clock(clock: FakeClock) -> None:
    """A bucket moved to another clock measures refills on that clock."""
    bucket = TokenBucket(1.0, burst=1)
    bucket.use_clock(clock)
    bucket.reserve()
    clock.advance(1.0)
    assert bucket.available == 1.0


# -- observe: adapting to provider headers ----------------------------------------------------


def test_empty_information_changes_nothing(clock: FakeClock) -> None:
    """A response without rate-limit headers is ignored, without an event."""
    observer = RecordingObserver()
    bucket = _bucket(clock, observer=observer)
    assert not RateLimitInfo()
    bucket.observe(RateLimitInfo())
    assert bucket.available == 10.0
    assert observer.events == []


def test_remaining_clamps_local_tokens(clock: FakeClock) -> None:
    """Other clients use the quota too: local tokens never exceed what the provider has left."""
    observer = RecordingObserver()
    bucket = _bucket(clock, 10.0, burst=10, observer=observer)
    bucket.observe(RateLimitInfo(remaining=3, limit=10), operation="op")
    assert bucket.available == 3.0
    (event,) = observer.of(LimiterAdjusted)
    assert (event.remaining, event.limit, event.paused_for) == (3, 10, None)
    bucket.observe(RateLimitInfo(remaining=50))  # more than we have: nothing to do
    assert bucket.available == 3.0
    assert len(observer.of(LimiterAdjusted)) == 1


def test_low_remaining_slows_the_pace_until_the_reset(clock: FakeClock) -> None:
    """Below ``low_watermark`` of the limit the pace drops to ``remaining / reset_after``."""
    bucket = _bucket(clock, 10.0, burst=10, low_watermark=0.1)
    bucket.observe(RateLimitInfo(limit=100, remaining=5, reset_after=10))
    assert bucket.available == 5.0
    for _ in range(5):
        assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(2.0)  # 0.5 tokens per second
    bucket.refund()
    clock.advance(10.0)  # the provider's window reset: full pace again
    for _ in range(10):
        bucket.reserve()
    assert bucket.reserve() == pytest.approx(0.1)


def test_remaining_above_the_watermark_keeps_the_pace(clock: FakeClock) -> None:
    """Plenty left: the pace stays at ``rate``."""
    bucket = _bucket(clock, 10.0, burst=10, low_watermark=0.1)
    bucket.observe(RateLimitInfo(limit=100, remaining=50, reset_after=10))
    for _ in range(10):
        bucket.reserve()
    assert bucket.reserve() == pytest.approx(0.1)


def test_slower_pace_applies_from_the_moment_it_is_learnt(clock: FakeClock) -> None:
    """Tokens earned before the provider asked to slow down are kept; the new pace counts on."""
    bucket = _bucket(clock, 10.0, burst=10, low_watermark=0.1)
    for _ in range(10):
        bucket.reserve()
    clock.advance(0.5)  # five tokens earned at the full pace
    bucket.observe(RateLimitInfo(limit=100, remaining=8, reset_after=10))
    assert bucket.available == pytest.approx(5.0)
    for _ in range(5):
        assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(1.25)  # 0.8 tokens per second


def test_remaining_zero_pauses_until_the_reset(clock: FakeClock) -> None:
    """With nothing left, no call goes out before the provider's window resets."""
    observer = RecordingObserver()
    bucket = _bucket(clock, 10.0, burst=10, observer=observer)
    bucket.observe(RateLimitInfo(limit=100, remaining=0, reset_after=7))
    assert bucket.reserve() == pytest.approx(7.0)
    (event,) = observer.of(LimiterAdjusted)
    assert event.paused_for == 7


def test_remaining_zero_without_reset_pauses_one_interval(clock: FakeClock) -> None:
    """With nothing left and no reset time, wait one refill interval."""
    bucket = _bucket(clock, 4.0, burst=4)
    bucket.observe(RateLimitInfo(remaining=0))
    assert bucket.reserve() == pytest.approx(0.25)


def test_retry_after_pauses_the_bucket(clock: FakeClock) -> None:
    """A 429's ``Retry-After`` pauses every caller of the bucket, not just the one that got it."""
    observer = RecordingObserver()
    bucket = _bucket(clock, 10.0, burst=10, max_wait=60.0, observer=observer)
    bucket.observe(RateLimitInfo(retry_after=30, remaining=40))
    assert bucket.reserve(operation="a") == pytest.approx(30.0)
    (event,) = observer.of(LimiterAdjusted)
    assert event.paused_for == 30


def test_a_pause_beyond_max_wait_rejects_with_its_end(clock: FakeClock) -> None:
    """Callers that cannot wait that long are told when to come back."""
    bucket = _bucket(clock, 10.0, burst=10, max_wait=10.0)
    bucket.observe(RateLimitInfo(retry_after=30))
    with pytest.raises(RateLimitedError) as caught:
        bucket.reserve()
    assert caught.value.retry_after == pytest.approx(30.0)


def test_repr() -> None:
    """The repr shows rate, burst and max_wait."""
    assert repr(TokenBucket(2, burst=40)) == "TokenBucket(rate=2, burst=40, max_wait=10)"


@pytest.mark.parametrize(
    "make",
    [
        lambda: TokenBucket(0),
        lambda: TokenBucket(-1),
        lambda: TokenBucket(float("nan")),
        lambda: TokenBucket(1, burst=0.5),
        lambda: TokenBucket(1, max_wait=-1),
        lambda: TokenBucket(1, low_watermark=1.0),
        lambda: TokenBucket(1, low_watermark=-0.1),
    ],
)
def test_invalid_limiters_are_rejected(make: Callable[[], TokenBucket]) -> None:
    """Non-positive rates, bursts below one, negative waits and bad watermarks are misuse."""
    with pytest.raises(ConfigurationError):
        make()


# -- rolling windows ------------------------------------------------------------------------------


def test_rolling_window_spends_the_burst_then_follows_the_window(clock: FakeClock) -> None:
    """Told the limit is a rolling window (100 per 10 s), the bucket lets a full window go at
    once, then hands out the next slot only when the first request leaves the window (plus a
    small margin) -- the provider's own schedule, without a 429 -- and the next hundred go as
    the first hundred leave."""
    bucket = _bucket(clock, 10.0, burst=100, max_wait=60)
    bucket.observe(RateLimitInfo(limit=100, remaining=100, window=10.0))
    assert [bucket.reserve() for _ in range(100)] == [0.0] * 100
    margin = window_margin(10.0)
    assert bucket.reserve() == pytest.approx(10.0 + margin)
    clock.advance(10.0 + margin)
    waits = [bucket.reserve() for _ in range(99)]
    assert max(waits) == pytest.approx(0.0, abs=1e-9)  # the bucket refilled meanwhile


def test_rolling_window_at_zero_does_not_pause_for_the_window(clock: FakeClock) -> None:
    """``remaining == 0`` under a rolling window, after this bucket's own burst, changes
    nothing: the window already says when the next slot comes free (as the first request
    leaves it), and the tokens earned meanwhile go then -- no pause of the whole interval, no
    clamp to a steady trickle."""
    observer = RecordingObserver()
    bucket = _bucket(clock, 10.0, burst=100, max_wait=60, observer=observer)
    bucket.observe(RateLimitInfo(limit=100, remaining=100, window=10.0))
    for _ in range(100):
        bucket.reserve()
    bucket.observe(RateLimitInfo(limit=100, remaining=0, window=10.0))
    assert not observer.of(LimiterAdjusted)
    clock.advance(10.0 + window_margin(10.0))
    assert [bucket.reserve() for _ in range(100)] == [0.0] * 100


def test_others_use_of_a_rolling_window_fills_it(clock: FakeClock) -> None:
    """The provider counting more than this bucket handed out (other clients: 95 of 100 used)
    fills the window as if those requests were made now: five go, the sixth waits for them to
    leave -- no 429."""
    bucket = _bucket(clock, 10.0, burst=10, max_wait=60)
    bucket.observe(RateLimitInfo(limit=100, remaining=100, window=10.0))
    clock.advance(1.0)
    bucket.observe(RateLimitInfo(limit=100, remaining=5, window=10.0))
    for _ in range(5):
        assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(10.0 + window_margin(10.0))


def test_a_steady_drain_under_a_rolling_window_runs_at_the_limit(clock: FakeClock) -> None:
    """Draining 500 requests against 100 per 10 s: a window at once, then a window per 10 s;
    the last one goes 40 s (and four margins) after the first -- never a window on, a window
    off -- and no more than 100 fall within any 10 s."""
    bucket = _bucket(clock, 10.0, burst=100, max_wait=60)
    bucket.observe(RateLimitInfo(limit=100, remaining=100, window=10.0))
    sent: list[float] = []
    for _ in range(500):
        wait = bucket.reserve()
        clock.advance(wait)
        sent.append(clock.monotonic())
    start = sent[0]
    assert sent[-1] - start == pytest.approx(40.0 + 4 * window_margin(10.0), abs=0.01)
    assert all(sent[i + 100] - sent[i] >= 10.0 for i in range(400))


def test_reservations_the_provider_did_not_count_leave_the_window(clock: FakeClock) -> None:
    """Reservations whose calls never reached the provider (an open breaker refused them, the
    provider was down) leave the window once the provider's ``remaining`` says they were not
    counted and they are older than ``WINDOW_SETTLED``: they do not hold back the drain."""
    bucket = _bucket(clock, 10.0, burst=100, max_wait=60)
    bucket.observe(RateLimitInfo(limit=100, remaining=100, window=10.0))
    for _ in range(100):
        bucket.reserve()
    clock.advance(WINDOW_SETTLED + 0.5)
    bucket.observe(RateLimitInfo(limit=100, remaining=100, window=10.0))  # none was counted
    clock.advance(10.0)  # the bucket refills; the window is free
    assert [bucket.reserve() for _ in range(100)] == [0.0] * 100


def test_fresh_reservations_stay_in_the_window_whatever_a_late_answer_says(
    clock: FakeClock,
) -> None:
    """An answer to the first request of a burst reports an older state (99 left): it does not
    free the slots of reservations made since, still in flight."""
    bucket = _bucket(clock, 10.0, burst=100, max_wait=60)
    bucket.observe(RateLimitInfo(limit=100, remaining=100, window=10.0))
    for _ in range(100):
        bucket.reserve()
    bucket.observe(RateLimitInfo(limit=100, remaining=99, window=10.0))
    assert bucket.reserve() == pytest.approx(10.0 + window_margin(10.0))


def test_what_the_provider_counted_before_the_window_was_known_fills_it(clock: FakeClock) -> None:
    """The first answer that tells of a rolling window (3 per 10 s, 2 left) counts the one
    request made before the bucket knew as made just now: two more go, the fourth waits for
    the window."""
    bucket = _bucket(clock, 100.0, burst=100, max_wait=60)
    assert bucket.reserve() == 0.0
    bucket.observe(RateLimitInfo(limit=3, remaining=2, window=10.0))
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]
    assert bucket.reserve() == pytest.approx(10.0 + window_margin(10.0))
