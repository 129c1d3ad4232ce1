"""Circuit breaker: windows, thresholds, half-open probes, manual control, events, concurrency."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from antifragile import (
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    ConflictError,
    FakeClock,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from antifragile.observability import BreakerTransition, CallRejected, RecordingObserver
from antifragile.policies import (
    BreakerConfig,
    BreakerSnapshot,
    CircuitState,
    LocalBreakerState,
    default_record,
)

FAIL = UpstreamUnavailableError("503")


def _breaker(clock: FakeClock, **kw: object) -> CircuitBreaker:
    options: dict[str, object] = {
        "failure_rate": 0.5,
        "window": 10,
        "minimum_calls": 10,
        "open_duration": 30.0,
        "clock": clock,
    }
    options.update(kw)
    return CircuitBreaker("crm", **options)  # type: ignore[arg-type]


def _state(breaker: CircuitBreaker) -> CircuitState:
    """The state read afresh (a type checker would narrow a repeated ``breaker.state``)."""
    return breaker.state


def _succeed(breaker: CircuitBreaker, n: int = 1, duration: float = 0.0) -> None:
    for _ in range(n):
        breaker.on_success(breaker.acquire(), duration)


def _fail(breaker: CircuitBreaker, n: int = 1, exc: BaseException = FAIL) -> None:
    for _ in range(n):
        breaker.on_failure(breaker.acquire(), exc)


def _open(clock: FakeClock, **kw: object) -> CircuitBreaker:
    """A breaker that opened on one failure and whose open duration has just elapsed."""
    options: dict[str, object] = {"minimum_calls": 1, "window": 1, "open_duration": 10.0}
    options.update(kw)
    breaker = _breaker(clock, **options)
    _fail(breaker)
    assert breaker.snapshot.state is CircuitState.OPEN
    clock.advance(breaker.config.open_for(breaker.snapshot.consecutive_opens))
    return breaker


# -- closed: windows and thresholds -----------------------------------------------------------


def test_stays_closed_below_minimum_calls(clock: FakeClock) -> None:
    """Nine failures out of nine do not open a breaker that needs ten calls to judge."""
    breaker = _breaker(clock)
    _fail(breaker, 9)
    assert _state(breaker) is CircuitState.CLOSED
    _fail(breaker)
    assert _state(breaker) is CircuitState.OPEN


def test_opens_when_the_failure_rate_reaches_the_threshold(clock: FakeClock) -> None:
    """Five failures in ten calls is a 50 % failure rate: the breaker opens."""
    breaker = _breaker(clock)
    _succeed(breaker, 5)
    _fail(breaker, 4)
    assert _state(breaker) is CircuitState.CLOSED
    _fail(breaker)
    assert _state(breaker) is CircuitState.OPEN


def test_stays_closed_below_the_failure_rate(clock: FakeClock) -> None:
    """Four failures in ten calls (40 %) stay under a 50 % threshold."""
    breaker = _breaker(clock)
    _succeed(breaker, 6)
    _fail(breaker, 4)
    assert _state(breaker) is CircuitState.CLOSED
    assert breaker.metrics() == {
        "calls": 10,
        "failures": 4,
        "slow_calls": 0,
        "failure_rate": 0.4,
        "slow_call_rate": 0.0,
    }


def test_count_window_forgets_calls_older_than_the_window(clock: FakeClock) -> None:
    """Only the last ``window`` calls count: early failures slide out."""
    breaker = _breaker(clock, window=4, minimum_calls=4, failure_rate=0.3)
    _fail(breaker, 3)
    _succeed(breaker, 5)
    assert breaker.metrics()["failures"] == 0
    _fail(breaker)  # window: S S S F -> 25 %
    assert _state(breaker) is CircuitState.CLOSED
    assert breaker.metrics()["calls"] == 4
    _fail(breaker)  # window: S S F F -> 50 %
    assert _state(breaker) is CircuitState.OPEN


def test_time_window_forgets_calls_older_than_the_window(clock: FakeClock) -> None:
    """In a time window, failures more than ``window`` seconds old no longer count."""
    breaker = _breaker(clock, window=10, window_type="time", minimum_calls=4)
    _fail(breaker, 3)
    clock.advance(11.0)
    _fail(breaker)
    assert _state(breaker) is CircuitState.CLOSED
    assert breaker.metrics()["calls"] == 1
    _fail(breaker, 3)
    assert _state(breaker) is CircuitState.OPEN


def test_time_window_counts_calls_within_the_window(clock: FakeClock) -> None:
    """Calls spread over less than the window all count."""
    breaker = _breaker(clock, window=10, window_type="time", minimum_calls=4)
    for _ in range(3):
        _succeed(breaker)
        clock.advance(2.0)
    assert breaker.metrics()["calls"] == 3
    _fail(breaker, 2)
    assert _state(breaker) is CircuitState.CLOSED  # 2 of 5
    _fail(breaker)
    assert _state(breaker) is CircuitState.OPEN  # 3 of 6


def test_slow_call_rate_opens_the_breaker(clock: FakeClock) -> None:
    """Successes slower than ``slow_call_duration`` count as slow; too many open the breaker."""
    observer = RecordingObserver()
    breaker = _breaker(
        clock,
        window=4,
        minimum_calls=4,
        slow_call_duration=1.0,
        slow_call_rate=0.5,
        observer=observer,
    )
    assert breaker.times_calls
    _succeed(breaker, 2, duration=0.1)
    _succeed(breaker, 1, duration=1.0)
    assert _state(breaker) is CircuitState.CLOSED
    _succeed(breaker, 1, duration=3.0)
    assert _state(breaker) is CircuitState.OPEN
    (event,) = observer.of(BreakerTransition)
    assert event.reason.startswith("slow-call rate")
    assert event.slow_call_rate == 0.5


def test_slow_call_detection_is_off_by_default(clock: FakeClock) -> None:
    """Without ``slow_call_duration`` durations are not looked at."""
    breaker = _breaker(clock, window=2, minimum_calls=2)
    assert not breaker.times_calls
    _succeed(breaker, 5, duration=3_600.0)
    assert breaker.metrics()["slow_calls"] == 0


@pytest.mark.parametrize(
    "exc",
    [
        NotFoundError("404"),
        InvalidRequestError("422"),
        ConflictError("409"),
        PermanentError("418"),
        RateLimitedError("429"),
        CircuitOpenError("open"),
        BulkheadFullError("full"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_4xx_429_and_rejections_are_not_failures(clock: FakeClock, exc: BaseException) -> None:
    """The provider answered (or nothing was sent): an open breaker would not help."""
    assert not default_record(exc)
    breaker = _breaker(clock, window=5, minimum_calls=5)
    _fail(breaker, 20, exc)
    assert _state(breaker) is CircuitState.CLOSED
    assert breaker.metrics()["failures"] == 0
    assert breaker.metrics()["calls"] == 5


@pytest.mark.parametrize(
    "exc",
    [FAIL, UpstreamTimeoutError("t"), NetworkError("n"), ValueError("bug"), TimeoutError()],
    ids=lambda e: type(e).__name__,
)
def test_transient_and_unknown_failures_count(exc: BaseException) -> None:
    """5xx, timeouts, network errors and unknown exceptions count as failures."""
    assert default_record(exc)


def test_custom_record_decides_what_is_a_failure(clock: FakeClock) -> None:
    """``record=`` replaces the default classification."""
    breaker = _breaker(
        clock, window=2, minimum_calls=2, record=lambda e: isinstance(e, NotFoundError)
    )
    _fail(breaker, 4, FAIL)
    assert _state(breaker) is CircuitState.CLOSED
    _fail(breaker, 1, NotFoundError("404"))  # window: S F -> 50 %
    assert _state(breaker) is CircuitState.OPEN


# -- open ----------------------------------------------------------------------------------


def test_open_breaker_rejects_with_when_it_will_probe(clock: FakeClock) -> None:
    """An open breaker fails fast with ``until`` and a ``CallRejected`` event."""
    observer = RecordingObserver()
    breaker = _breaker(clock, minimum_calls=1, window=1, open_duration=30.0, observer=observer)
    _fail(breaker)
    clock.advance(12.0)
    with pytest.raises(CircuitOpenError) as caught:
        breaker.acquire(operation="create_contact")
    error = caught.value
    assert error.until == pytest.approx(clock.time() + 18.0)
    assert error.provider == "crm"
    assert error.operation == "create_contact"
    assert error.code == "CIRCUIT_OPEN"
    assert error.retryable is True
    assert "18.0s" in str(error)
    (rejected,) = observer.of(CallRejected)
    assert rejected.by == "circuit_breaker"
    assert rejected.retry_after == pytest.approx(18.0)


def test_open_breaker_reports_half_open_once_its_time_is_up(clock: FakeClock) -> None:
    """``state`` says half-open when the next call would be a probe."""
    breaker = _breaker(clock, minimum_calls=1, window=1, open_duration=5.0)
    _fail(breaker)
    assert _state(breaker) is CircuitState.OPEN
    clock.advance(5.0)
    assert _state(breaker) is CircuitState.HALF_OPEN
    assert breaker.snapshot.state is CircuitState.OPEN  # the transition happens on acquire


def test_open_duration_grows_with_the_multiplier(clock: FakeClock) -> None:
    """Each failed probe reopens for ``multiplier`` times longer, capped; a close resets it."""
    observer = RecordingObserver()
    breaker = _breaker(
        clock,
        minimum_calls=1,
        window=1,
        open_duration=10.0,
        open_duration_multiplier=2.0,
        max_open_duration=35.0,
        observer=observer,
    )
    _fail(breaker)
    for expected in (20.0, 35.0, 35.0):
        clock.advance(breaker.snapshot.open_until - clock.time())
        _fail(breaker)  # the probe fails
        assert breaker.snapshot.open_until - clock.time() == pytest.approx(expected)
    clock.advance(35.0)
    _succeed(breaker)
    assert _state(breaker) is CircuitState.CLOSED
    _fail(breaker)
    assert breaker.snapshot.open_until - clock.time() == pytest.approx(10.0)
    opened = [e.open_for for e in observer.of(BreakerTransition) if e.to_state == "open"]
    assert opened == [10.0, 20.0, 35.0, 35.0, 10.0]


def test_open_for_schedule() -> None:
    """``open_for(n)`` is ``open_duration * multiplier ** (n - 1)``, capped."""
    config = BreakerConfig(open_duration=1.0, open_duration_multiplier=3.0, max_open_duration=20.0)
    assert [config.open_for(n) for n in (1, 2, 3, 4, 1_000)] == [1.0, 3.0, 9.0, 20.0, 20.0]
    assert BreakerConfig(open_duration=5.0).open_for(50) == 5.0


# -- half-open --------------------------------------------------------------------------------


def test_half_open_admits_exactly_half_open_calls_probes(clock: FakeClock) -> None:
    """Only ``half_open_calls`` probes are let through; the rest are rejected."""
    breaker = _open(clock, half_open_calls=3)
    tokens = [breaker.acquire() for _ in range(3)]
    assert breaker.snapshot.state is CircuitState.HALF_OPEN
    assert breaker.snapshot.probes_left == 0
    with pytest.raises(CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.until is None
    assert len(set(tokens)) == 1


def test_half_open_closes_when_probes_succeed(clock: FakeClock) -> None:
    """All probes back with a failure rate under the threshold: the breaker closes."""
    breaker = _open(clock, half_open_calls=3)
    tokens = [breaker.acquire() for _ in range(3)]
    breaker.on_success(tokens[0])
    breaker.on_failure(tokens[1], FAIL)
    assert breaker.snapshot.state is CircuitState.HALF_OPEN  # waits for every probe
    breaker.on_success(tokens[2])
    assert _state(breaker) is CircuitState.CLOSED
    assert breaker.metrics()["calls"] == 0  # a fresh window


def test_half_open_reopens_when_probes_fail(clock: FakeClock) -> None:
    """Probes failing at or above the threshold reopen the breaker."""
    breaker = _open(clock, half_open_calls=2)
    first, second = breaker.acquire(), breaker.acquire()
    breaker.on_success(first)
    breaker.on_failure(second, FAIL)
    assert _state(breaker) is CircuitState.OPEN


def test_half_open_slow_probe_reopens(clock: FakeClock) -> None:
    """A probe slower than ``slow_call_duration`` counts against the slow-call rate."""
    breaker = _open(clock, slow_call_duration=1.0, slow_call_rate=1.0)
    breaker.on_success(breaker.acquire(), 2.0)
    assert _state(breaker) is CircuitState.OPEN


def test_4xx_probe_counts_as_success(clock: FakeClock) -> None:
    """A probe answered with a 404 shows the provider is up: the breaker closes."""
    breaker = _open(clock)
    breaker.on_failure(breaker.acquire(), NotFoundError("404"))
    assert _state(breaker) is CircuitState.CLOSED


def test_release_returns_a_probe_permit(clock: FakeClock) -> None:
    """A probe cancelled before its outcome gives its permit back to the next caller."""
    breaker = _open(clock, half_open_calls=1)
    probe = breaker.acquire()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    breaker.release(probe)
    assert breaker.snapshot.probes_left == 1
    again = breaker.acquire()
    breaker.on_success(again)
    assert _state(breaker) is CircuitState.CLOSED


def test_release_of_a_stale_or_closed_token_changes_nothing(clock: FakeClock) -> None:
    """Releasing a token from another generation, or while closed, is a no-op."""
    breaker = _breaker(clock)
    closed_token = breaker.acquire()
    breaker.release(closed_token)
    assert breaker.snapshot == BreakerSnapshot()
    breaker = _open(clock, half_open_calls=1)
    probe = breaker.acquire()
    breaker.release(probe - 1)
    assert breaker.snapshot.probes_left == 0


def test_results_from_an_earlier_generation_are_ignored(clock: FakeClock) -> None:
    """A slow call admitted while closed cannot close (or count in) a breaker that opened since."""
    breaker = _breaker(clock, minimum_calls=2, window=2, open_duration=10.0)
    straggler = breaker.acquire()
    _fail(breaker, 2)
    assert _state(breaker) is CircuitState.OPEN
    clock.advance(10.0)
    probe = breaker.acquire()
    breaker.on_success(straggler)
    assert breaker.snapshot.state is CircuitState.HALF_OPEN
    breaker.on_failure(straggler, FAIL)
    assert breaker.snapshot.state is CircuitState.HALF_OPEN
    breaker.on_success(probe)
    assert _state(breaker) is CircuitState.CLOSED
    breaker.on_failure(straggler, FAIL)
    breaker.on_failure(probe, FAIL)  # a probe's late duplicate is stale too
    assert breaker.metrics()["calls"] == 0


# -- manual control ---------------------------------------------------------------------------


def test_force_open_rejects_until_reset(clock: FakeClock) -> None:
    """A forced-open breaker rejects every call, however long, until ``reset``."""
    breaker = _breaker(clock)
    breaker.force_open()
    assert _state(breaker) is CircuitState.FORCED_OPEN
    clock.advance(1e6)
    with pytest.raises(CircuitOpenError) as caught:
        breaker.acquire()
    assert caught.value.until is None
    assert "forced_open" in str(caught.value)
    breaker.reset()
    assert _state(breaker) is CircuitState.CLOSED
    breaker.acquire()


def test_disable_lets_everything_through_and_records_nothing(clock: FakeClock) -> None:
    """A disabled breaker admits every call and ignores their outcomes."""
    breaker = _breaker(clock, minimum_calls=1, window=1)
    breaker.disable()
    _fail(breaker, 50)
    assert _state(breaker) is CircuitState.DISABLED
    assert breaker.metrics()["calls"] == 0
    breaker.reset()
    _fail(breaker)
    assert _state(breaker) is CircuitState.OPEN


def test_reset_forgets_the_window(clock: FakeClock) -> None:
    """``reset`` closes the breaker with an empty window, from any state."""
    breaker = _breaker(clock)
    _fail(breaker, 9)
    breaker.reset()
    assert breaker.metrics()["calls"] == 0
    _fail(breaker, 9)
    assert _state(breaker) is CircuitState.CLOSED
    breaker = _open(clock)
    breaker.acquire()
    breaker.reset()
    assert _state(breaker) is CircuitState.CLOSED


def test_use_clock_switches_clocks(clock: FakeClock) -> None:
    """A breaker built on the system clock can be moved to a fake one (as a policy does)."""
    breaker = CircuitBreaker(minimum_calls=1, window=1, open_duration=5.0)
    breaker.use_clock(clock)
    _fail(breaker)
    clock.advance(5.0)
    assert _state(breaker) is CircuitState.HALF_OPEN


# -- listeners and events ---------------------------------------------------------------------


def test_listeners_and_observer_see_every_transition(clock: FakeClock) -> None:
    """closed -> open -> half_open -> closed, then forced and disabled, each reported once."""
    observer = RecordingObserver()
    seen: list[tuple[CircuitState, CircuitState, str]] = []
    breaker = _breaker(clock, minimum_calls=2, window=2, open_duration=10.0, observer=observer)
    breaker.add_listener(lambda before, after, reason: seen.append((before, after, reason)))
    _fail(breaker, 2)
    clock.advance(10.0)
    _succeed(breaker)
    breaker.force_open()
    breaker.force_open()  # already forced: no second event
    breaker.disable()
    breaker.reset()
    assert seen == [
        (CircuitState.CLOSED, CircuitState.OPEN, "failure rate 100% >= 50%"),
        (CircuitState.OPEN, CircuitState.HALF_OPEN, "open duration elapsed"),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED, "probe succeeded"),
        (CircuitState.CLOSED, CircuitState.FORCED_OPEN, "forced open"),
        (CircuitState.FORCED_OPEN, CircuitState.DISABLED, "disabled"),
        (CircuitState.DISABLED, CircuitState.CLOSED, "reset"),
    ]
    events = observer.of(BreakerTransition)
    assert [(e.from_state, e.to_state) for e in events] == [
        (before.value, after.value) for before, after, _ in seen
    ]
    opened = events[0]
    assert opened.policy == "crm"
    assert opened.failure_rate == 1.0
    assert opened.open_for == 10.0


# -- shared state and concurrency -------------------------------------------------------------


def test_breakers_sharing_a_holder_trip_together(clock: FakeClock) -> None:
    """Two breakers (two processes) on one holder: one trips, both reject."""
    holder = LocalBreakerState()
    first = _breaker(clock, minimum_calls=1, window=1, state=holder)
    second = _breaker(clock, minimum_calls=1, window=1, state=holder)
    _fail(first)
    assert first.holder is second.holder
    with pytest.raises(CircuitOpenError):
        second.acquire()


def test_probe_tallies_start_afresh_in_each_half_open_round(clock: FakeClock) -> None:
    """Results from an earlier half-open round never count towards a later one.

    Two breakers share one holder; the second enters half-open through the first, so it never
    runs the transition itself and must still not reuse its tallies from the round before.
    """
    holder = LocalBreakerState()
    options: dict[str, object] = {
        "minimum_calls": 1,
        "window": 1,
        "open_duration": 10.0,
        "half_open_calls": 2,
        "state": holder,
    }
    first, second = _breaker(clock, **options), _breaker(clock, **options)
    _fail(first)
    clock.advance(10.0)
    _fail(second, 2)  # round 1, seen by the second breaker: both probes fail
    assert holder.get().state is CircuitState.OPEN
    clock.advance(10.0)
    first_probe = first.acquire()  # round 2 opened by the first breaker
    second_probe = second.acquire()
    second.on_success(second_probe)
    assert holder.get().state is CircuitState.HALF_OPEN  # one result of two: keep waiting
    first.release(first_probe)


class _InterleavingHolder:
    """A holder that runs *hook* just before its next compare-and-set: another thread's turn."""

    def __init__(self) -> None:
        self.inner = LocalBreakerState()
        self.hook: Callable[[], object] | None = None

    def get(self) -> BreakerSnapshot:
        return self.inner.get()

    def compare_and_set(self, expected: BreakerSnapshot, new: BreakerSnapshot) -> BreakerSnapshot:
        hook, self.hook = self.hook, None
        if hook is not None:
            hook()
        return self.inner.compare_and_set(expected, new)


def test_a_lost_probe_race_is_rejected(clock: FakeClock) -> None:
    """Two callers racing for the last probe permit: exactly one gets it."""
    holder = _InterleavingHolder()
    breaker = _breaker(clock, minimum_calls=1, window=1, open_duration=10.0, state=holder)
    _fail(breaker)
    clock.advance(10.0)
    breaker.release(breaker.acquire())  # half-open, one permit left
    assert holder.get().probes_left == 1
    rival: list[int] = []
    holder.hook = lambda: rival.append(breaker.acquire())  # wins between our read and our CAS
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    assert len(rival) == 1


def _hammer(breaker: CircuitBreaker, threads: int, tries: int) -> list[int]:
    """Start *threads* threads at once, each calling ``acquire`` *tries* times; the tokens won."""
    admitted: list[int] = []
    barrier = threading.Barrier(threads)

    def race() -> None:
        barrier.wait()
        for _ in range(tries):
            try:
                admitted.append(breaker.acquire())
            except CircuitOpenError:
                pass

    workers = [threading.Thread(target=race) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return admitted


def test_threads_hammering_a_half_open_breaker_get_at_most_the_permitted_probes() -> None:
    """Many threads racing through acquire() never get more than ``half_open_calls`` probes."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for _ in range(15):
            breaker = _open(FakeClock(), half_open_calls=2)
            admitted = _hammer(breaker, threads=12, tries=30)
            assert len(admitted) <= 2
            assert len(admitted) + breaker.snapshot.probes_left == 2
    finally:
        sys.setswitchinterval(previous)


def test_threads_reporting_results_keep_the_counts_exact(clock: FakeClock) -> None:
    """Concurrent successes and failures from many threads are all counted."""
    breaker = _breaker(clock, window=10_000, minimum_calls=10_000)

    def work() -> None:
        for i in range(500):
            token = breaker.acquire()
            if i % 10 == 0:
                breaker.on_failure(token, FAIL)
            else:
                breaker.on_success(token)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    metrics = breaker.metrics()
    assert (metrics["calls"], metrics["failures"]) == (4_000, 400)


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"failure_rate": 0.0},
        {"failure_rate": 1.5},
        {"slow_call_rate": 0.0},
        {"slow_call_duration": 0.0},
        {"window_type": "sliding"},
        {"window": 0},
        {"window": 2.5},
        {"window": 100_001},
        {"minimum_calls": 0},
        {"open_duration": 0.0},
        {"open_duration_multiplier": 0.5},
        {"open_duration": 60.0, "max_open_duration": 30.0},
        {"half_open_calls": 0},
    ],
)
def test_invalid_breaker_configuration_is_rejected(kw: dict[str, object]) -> None:
    """Rates outside (0, 1], empty windows, non-positive durations and zero probes are misuse."""
    with pytest.raises(ConfigurationError):
        CircuitBreaker(**kw)  # type: ignore[arg-type]


def test_time_window_may_be_fractional_free() -> None:
    """A time window of whole seconds is accepted; the repr names state."""
    breaker = CircuitBreaker("x", window=30, window_type="time")
    assert breaker.config.window_type == "time"
    assert repr(breaker) == "CircuitBreaker('x', state=closed)"


# -- the state machine, driven at random -------------------------------------------------------

# mostly failures that count, so that the machine spends time open and half-open
EXCEPTIONS = [FAIL, FAIL, FAIL, ValueError("bug"), NotFoundError("404"), RateLimitedError("429")]


class BreakerMachine(RuleBasedStateMachine):
    """Random acquire / success / failure / release / clock moves against the permit rules."""

    @initialize(
        half_open_calls=st.integers(min_value=1, max_value=4),
        minimum_calls=st.integers(min_value=1, max_value=3),
        window_type=st.sampled_from(["count", "time"]),
        slow=st.sampled_from([None, 1.0]),
    )
    def setup(
        self, half_open_calls: int, minimum_calls: int, window_type: str, slow: float | None
    ) -> None:
        self.clock = FakeClock()
        self.breaker = CircuitBreaker(
            "m",
            window=5,
            window_type=window_type,  # type: ignore[arg-type]
            minimum_calls=minimum_calls,
            half_open_calls=half_open_calls,
            open_duration=5.0,
            open_duration_multiplier=2.0,
            max_open_duration=20.0,
            slow_call_duration=slow,
            clock=self.clock,
        )
        self.in_flight: list[int] = []

    def _take(self, index: int) -> int:
        return self.in_flight.pop(index % len(self.in_flight))

    @rule(n=st.integers(min_value=1, max_value=3))
    def acquire(self, n: int) -> None:
        for _ in range(n):
            try:
                self.in_flight.append(self.breaker.acquire())
            except CircuitOpenError:
                pass

    @precondition(lambda self: bool(getattr(self, "in_flight", None)))
    @rule(index=st.integers(min_value=0), duration=st.sampled_from([0.0, 0.5, 2.0]))
    def succeed(self, index: int, duration: float) -> None:
        self.breaker.on_success(self._take(index), duration)

    @precondition(lambda self: bool(getattr(self, "in_flight", None)))
    @rule(index=st.integers(min_value=0), exc=st.sampled_from(EXCEPTIONS))
    def fail(self, index: int, exc: BaseException) -> None:
        self.breaker.on_failure(self._take(index), exc)

    @precondition(lambda self: bool(getattr(self, "in_flight", None)))
    @rule(index=st.integers(min_value=0))
    def release(self, index: int) -> None:
        self.breaker.release(self._take(index))

    @rule(seconds=st.sampled_from([0.5, 5.0, 20.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(action=st.sampled_from(["reset", "none", "none", "none", "none", "none"]))
    def manual(self, action: str) -> None:
        if action == "reset":  # rarely: most runs should live through open and half-open
            self.breaker.reset()

    @precondition(lambda self: hasattr(self, "breaker"))
    @invariant()
    def probes_never_exceed_the_permits(self) -> None:
        snap = self.breaker.snapshot
        if snap.state is not CircuitState.HALF_OPEN:
            return
        probes = sum(1 for token in self.in_flight if token == snap.generation)
        limit = self.breaker.config.half_open_calls
        assert probes <= limit
        assert probes + snap.probes_left <= limit
        # and a half-open breaker is never stuck: no permit left means a probe is out
        assert snap.probes_left > 0 or probes > 0


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)


def test_allow_probe_ends_an_open_period_early_after_a_while(clock: FakeClock) -> None:
    """``allow_probe(after=1)`` refuses within a second of opening, then ends the 30 s open
    period so that the next call is the half-open probe; while that probe is out it refuses; a
    failed probe opens the breaker again and the second counts from then."""
    breaker = _breaker(clock, minimum_calls=1, window=1)
    breaker.on_failure(breaker.acquire(), FAIL)
    assert not breaker.allow_probe(after=1.0)
    clock.advance(1.0)
    assert breaker.allow_probe(after=1.0)
    assert _state(breaker) is CircuitState.HALF_OPEN
    probe = breaker.acquire()
    assert not breaker.allow_probe(after=1.0)  # its probe is out
    breaker.on_failure(probe, FAIL)
    assert _state(breaker) is CircuitState.OPEN
    assert not breaker.allow_probe(after=1.0)
    clock.advance(1.0)
    assert breaker.allow_probe(after=1.0)
    breaker.on_success(breaker.acquire())
    assert _state(breaker) is CircuitState.CLOSED


def test_allow_probe_leaves_closed_forced_and_disabled_breakers_alone(clock: FakeClock) -> None:
    """Only an open (or half-open) breaker may be probed early: closed, forced open and
    disabled breakers answer no and stay as they are."""
    breaker = _breaker(clock)
    assert not breaker.allow_probe(after=0.0)
    breaker.force_open()
    clock.advance(60)
    assert not breaker.allow_probe(after=1.0)
    assert _state(breaker) is CircuitState.FORCED_OPEN
    breaker.disable()
    assert not breaker.allow_probe(after=1.0)
    assert _state(breaker) is CircuitState.DISABLED
