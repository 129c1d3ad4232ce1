"""Circuit breaker: stop calling a provider that is failing, probe it, resume when it recovers.

States and transitions::

    CLOSED --(failure or slow-call rate >= threshold over >= minimum_calls)--> OPEN
    OPEN --(open duration elapsed; next call)--> HALF_OPEN
    HALF_OPEN --(all permitted probes done, rates below thresholds)--> CLOSED
    HALF_OPEN --(rates at or above a threshold)--> OPEN (open duration grows if configured)
    any --force_open()--> FORCED_OPEN     any --disable()--> DISABLED     any --reset()--> CLOSED

The sliding window is count-based (the last ``window`` calls) or time-based (the calls of the
last ``window`` seconds, in one-second buckets); both record in O(1).

Which outcomes count as failures: transient provider failures (5xx, timeouts, network errors)
and exceptions antifragile does not know. Permanent 4xx errors and rate limiting count as
successes -- the provider answered; an open breaker would not help (429s are the rate limiter's
business). Pass ``record=`` to decide yourself.

The breaker never holds its lock while the protected call runs: :meth:`acquire` takes a permit,
the call runs unlocked, :meth:`on_success` / :meth:`on_failure` / :meth:`release` report back.
Results of calls admitted under an earlier state (a slow call that finishes after the breaker
opened) are ignored, so a stale success cannot close a breaker that opened meanwhile.

The shared part of the state (state, open-until, probes left) sits in a :class:`BreakerSnapshot`
held by a :class:`BreakerStateHolder`; every transition is a compare-and-set on it. The default
:class:`LocalBreakerState` keeps it in the process; a shared holder keeps it in a store so that
several processes trip and recover together.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from antifragile.errors import (
    CircuitOpenError,
    ConfigurationError,
    PermanentError,
    RateLimitedError,
    RejectedError,
)
from antifragile.observability._context import current_request_id
from antifragile.observability._events import BreakerTransition, CallRejected, Observer
from antifragile.policies._clock import SYSTEM_CLOCK, Clock, Duration, seconds
from antifragile.policies._deadline import CallInfo

if TYPE_CHECKING:
    from antifragile.policies._chain import AsyncNext, Chain, SyncNext


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


def default_record(exc: BaseException) -> bool:
    """``True`` when *exc* should count as a failure of the provider."""
    return not isinstance(exc, PermanentError | RateLimitedError | RejectedError)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_rate: float = 0.5
    slow_call_rate: float = 1.0
    slow_call_duration: float | None = None
    window: float = 20
    window_type: Literal["count", "time"] = "count"
    minimum_calls: int = 10
    open_duration: float = 30.0
    open_duration_multiplier: float = 1.0
    max_open_duration: float = 600.0
    half_open_calls: int = 1

    def __post_init__(self) -> None:
        for name in ("failure_rate", "slow_call_rate"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigurationError(f"{name} must be within (0, 1], got {value!r}")
        if self.slow_call_duration is not None and not self.slow_call_duration > 0:
            raise ConfigurationError("slow_call_duration must be > 0 seconds")
        if self.window_type not in ("count", "time"):
            raise ConfigurationError("window_type must be 'count' or 'time'")
        if not 1 <= self.window <= 100_000 or (
            self.window_type == "count" and self.window != int(self.window)
        ):
            raise ConfigurationError(
                "window must be a whole number of calls or seconds in [1, 100000], "
                f"got {self.window!r}"
            )
        if not self.minimum_calls >= 1:
            raise ConfigurationError("minimum_calls must be >= 1")
        if not self.open_duration > 0:
            raise ConfigurationError("open_duration must be > 0 seconds")
        if not self.open_duration_multiplier >= 1.0:
            raise ConfigurationError("open_duration_multiplier must be >= 1")
        if not self.max_open_duration >= self.open_duration:
            raise ConfigurationError("max_open_duration must be >= open_duration")
        if not self.half_open_calls >= 1:
            raise ConfigurationError("half_open_calls must be >= 1")

    def open_for(self, consecutive_opens: int) -> float:
        """How long the breaker stays open after its *n*-th consecutive opening (1-based)."""
        exponent = min(max(0, consecutive_opens - 1), 64)
        return min(
            self.max_open_duration, self.open_duration * self.open_duration_multiplier**exponent
        )


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """The part of a breaker's state that several processes may share.

    ``open_until`` is wall-clock epoch seconds (monotonic clocks differ between processes);
    ``generation`` increases with every transition, so results from calls admitted under an
    older state can be recognised and ignored.
    """

    state: CircuitState = CircuitState.CLOSED
    generation: int = 0
    open_until: float = 0.0
    consecutive_opens: int = 0
    probes_left: int = 0


class BreakerStateHolder(Protocol):
    """Where a breaker keeps its :class:`BreakerSnapshot`."""

    def get(self) -> BreakerSnapshot:
        """The current snapshot (may be a cached copy; must be cheap)."""
        ...

    def compare_and_set(self, expected: BreakerSnapshot, new: BreakerSnapshot) -> BreakerSnapshot:
        """Replace *expected* by *new* atomically; return whatever is current afterwards.

        When the swap happened, the object returned must be *new* itself: callers tell their
        own win from a rival's identical transition by identity (``result is new``).
        """
        ...


class LocalBreakerState:
    """Keeps the snapshot in this process."""

    __slots__ = ("_lock", "_snapshot")

    def __init__(self) -> None:
        self._snapshot = BreakerSnapshot()
        self._lock = threading.Lock()

    def get(self) -> BreakerSnapshot:
        return self._snapshot

    def compare_and_set(self, expected: BreakerSnapshot, new: BreakerSnapshot) -> BreakerSnapshot:
        with self._lock:
            if self._snapshot is expected or self._snapshot == expected:
                self._snapshot = new
            return self._snapshot


_CALL, _FAIL, _SLOW = 1, 2, 4


class _Window:
    """Outcome counts over the sliding window (count- or time-based), O(1) per record.

    Count windows keep one small int per call (bits: call, failure, slow) in a ring; time
    windows keep per-second buckets of counts.
    """

    __slots__ = (
        "_epochs",
        "_fails",
        "_slows",
        "_time",
        "by_count",
        "calls",
        "failures",
        "pos",
        "ring",
        "size",
        "slow",
    )

    def __init__(self, config: BreakerConfig) -> None:
        self._time = config.window_type == "time"
        self.by_count = not self._time
        self.size = int(config.window)
        self.reset()

    def reset(self) -> None:
        n = self.size
        self.ring = [0] * n  # count window: outcome bits; time window: calls per bucket
        self._fails = [0] * n if self._time else []
        self._slows = [0] * n if self._time else []
        self._epochs = [-1] * n if self._time else []
        self.pos = 0
        self.calls = self.failures = self.slow = 0

    def record(self, failure: bool, slow: bool, now: float) -> None:
        if not self._time:
            i = self.pos
            self.pos = i + 1 if i + 1 < self.size else 0
            old = self.ring[i]
            if old:
                self.calls -= 1
                self.failures -= (old & _FAIL) >> 1
                self.slow -= (old & _SLOW) >> 2
            self.ring[i] = _CALL | (_FAIL if failure else 0) | (_SLOW if slow else 0)
            self.calls += 1
            self.failures += failure
            self.slow += slow
            return
        epoch = int(now)
        i = epoch % self.size
        if self._epochs[i] != epoch:
            self._evict(i)
            self._epochs[i] = epoch
        self.ring[i] += 1
        self.calls += 1
        self._fails[i] += failure
        self.failures += failure
        self._slows[i] += slow
        self.slow += slow

    def _evict(self, i: int) -> None:
        self.calls -= self.ring[i]
        self.failures -= self._fails[i]
        self.slow -= self._slows[i]
        self.ring[i] = self._fails[i] = self._slows[i] = 0

    def expire(self, now: float) -> None:
        """Drop time buckets older than the window (no-op for count windows)."""
        if self._time and self.calls:
            oldest = int(now) - self.size
            for i, epoch in enumerate(self._epochs):
                if 0 <= epoch <= oldest:
                    self._evict(i)
                    self._epochs[i] = -1


TransitionListener = Callable[[CircuitState, CircuitState, str], None]


class CircuitBreaker:
    """A circuit breaker (thread- and task-safe; no lock held during the protected call).

    >>> breaker = CircuitBreaker("shopify", failure_rate=0.5, window=20, minimum_calls=10)

    Use it through a :class:`~antifragile.Policy`, or by hand::

        token = breaker.acquire()        # raises CircuitOpenError when open
        try:
            result = call()
        except Exception as exc:
            breaker.on_failure(token, exc, duration)
            raise
        breaker.on_success(token, duration)
    """

    def __init__(
        self,
        name: str = "default",
        *,
        failure_rate: float = 0.5,
        slow_call_rate: float = 1.0,
        slow_call_duration: Duration | None = None,
        window: float = 20,
        window_type: Literal["count", "time"] = "count",
        minimum_calls: int = 10,
        open_duration: Duration = 30.0,
        open_duration_multiplier: float = 1.0,
        max_open_duration: Duration = 600.0,
        half_open_calls: int = 1,
        record: Callable[[BaseException], bool] = default_record,
        clock: Clock = SYSTEM_CLOCK,
        state: BreakerStateHolder | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.name = name
        self.config = BreakerConfig(
            failure_rate=failure_rate,
            slow_call_rate=slow_call_rate,
            slow_call_duration=None if slow_call_duration is None else seconds(slow_call_duration),
            window=window,
            window_type=window_type,
            minimum_calls=minimum_calls,
            open_duration=seconds(open_duration),
            open_duration_multiplier=open_duration_multiplier,
            max_open_duration=seconds(max_open_duration),
            half_open_calls=half_open_calls,
        )
        self._record = record
        self._clock = clock
        self._holder: BreakerStateHolder = state or LocalBreakerState()
        self._observer = observer
        self._listeners: list[TransitionListener] = []
        self._lock = threading.Lock()  # guards the window and half-open tallies, never a call
        self._window = _Window(self.config)
        self._slow_threshold = self.config.slow_call_duration
        self._probe_generation = -1  # the half-open generation the tallies below belong to
        self._probe_results = 0
        self._probe_failures = 0
        self._probe_slow = 0

    def use_clock(self, clock: Clock) -> None:
        """Switch to *clock* (a policy hands its clock to strategies built without one)."""
        self._clock = clock
        with self._lock:
            self._window.reset()

    # -- inspection ---------------------------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state; an open breaker whose time is up reports ``half_open``."""
        snap = self._holder.get()
        if snap.state is CircuitState.OPEN and self._clock.time() >= snap.open_until:
            return CircuitState.HALF_OPEN
        return snap.state

    @property
    def snapshot(self) -> BreakerSnapshot:
        return self._holder.get()

    @property
    def holder(self) -> BreakerStateHolder:
        """Where the shared part of the state is kept."""
        return self._holder

    def metrics(self) -> dict[str, float]:
        """Calls, failures and slow calls in the window, and the rates derived from them."""
        with self._lock:
            self._window.expire(self._clock.monotonic())
            calls, failures, slow = self._window.calls, self._window.failures, self._window.slow
        return {
            "calls": calls,
            "failures": failures,
            "slow_calls": slow,
            "failure_rate": failures / calls if calls else 0.0,
            "slow_call_rate": slow / calls if calls else 0.0,
        }

    def add_listener(self, listener: TransitionListener) -> None:
        """Call ``listener(from_state, to_state, reason)`` after every transition."""
        self._listeners.append(listener)

    # -- the call protocol --------------------------------------------------------------------

    def acquire(self, *, operation: str | None = None) -> int:
        """Ask to make a call; returns a token for the result, or raises CircuitOpenError."""
        snap = self._holder.get()
        state = snap.state
        if state is CircuitState.CLOSED or state is CircuitState.DISABLED:
            return snap.generation
        return self._acquire_slow(snap, operation)

    def _acquire_slow(self, snap: BreakerSnapshot, operation: str | None) -> int:
        while True:
            if snap.state is CircuitState.CLOSED or snap.state is CircuitState.DISABLED:
                return snap.generation
            if snap.state is CircuitState.OPEN:
                if self._clock.time() < snap.open_until:
                    raise self._rejection(snap, operation)
                half = replace(
                    snap,
                    state=CircuitState.HALF_OPEN,
                    generation=snap.generation + 1,
                    probes_left=self.config.half_open_calls,
                )
                self._cas(snap, half, "open duration elapsed")
                snap = self._holder.get()
                continue
            if snap.state is CircuitState.HALF_OPEN:
                if snap.probes_left <= 0:
                    raise self._rejection(snap, operation)
                taken = replace(snap, probes_left=snap.probes_left - 1)
                if self._holder.compare_and_set(snap, taken) is taken:
                    return taken.generation
                snap = self._holder.get()
                continue
            raise self._rejection(snap, operation)  # FORCED_OPEN

    def _rejection(self, snap: BreakerSnapshot, operation: str | None) -> CircuitOpenError:
        until = snap.open_until if snap.state is CircuitState.OPEN else None
        retry_after = None if until is None else max(0.0, until - self._clock.time())
        if self._observer is not None:
            self._observer.on_event(
                CallRejected(
                    policy=self.name,
                    operation=operation,
                    request_id=current_request_id(),
                    by="circuit_breaker",
                    code="CIRCUIT_OPEN",
                    retry_after=retry_after,
                )
            )
        detail = "" if retry_after is None else f" for another {retry_after:.1f}s"
        return CircuitOpenError(
            f"circuit breaker {self.name!r} is {snap.state.value}{detail}",
            provider=self.name,
            operation=operation,
            until=until,
        )

    @property
    def times_calls(self) -> bool:
        """Whether call durations matter (slow-call detection is on)."""
        return self._slow_threshold is not None

    def on_success(self, token: int, duration: float = 0.0) -> None:
        """Report that the call admitted with *token* succeeded after *duration* seconds."""
        if self._slow_threshold is not None and duration >= self._slow_threshold:
            self._on_result(token, False, True)
            return
        snap = self._holder.get()
        if snap.generation != token:
            return
        if snap.state is CircuitState.CLOSED:
            window = self._window
            with self._lock:
                if window.by_count:  # inlined record_success: the hot path of every call
                    i = window.pos
                    window.pos = i + 1 if i + 1 < window.size else 0
                    ring = window.ring
                    old = ring[i]
                    ring[i] = _CALL
                    if old == 0:
                        window.calls += 1
                    elif old != _CALL:
                        window.failures -= (old & _FAIL) >> 1
                        window.slow -= (old & _SLOW) >> 2
                else:
                    window.record(False, False, self._clock.monotonic())
        elif snap.state is CircuitState.HALF_OPEN:
            self._on_result(token, False, False)

    def on_failure(self, token: int, exc: BaseException, duration: float = 0.0) -> None:
        """Report that the call admitted with *token* failed with *exc*."""
        slow = self._slow_threshold is not None and duration >= self._slow_threshold
        self._on_result(token, self._record(exc), slow)

    def release(self, token: int) -> None:
        """The admitted call ended without an outcome (cancelled): return its probe permit."""
        snap = self._holder.get()
        while snap.state is CircuitState.HALF_OPEN and snap.generation == token:
            returned = replace(snap, probes_left=snap.probes_left + 1)
            if self._holder.compare_and_set(snap, returned) is returned:
                return
            snap = self._holder.get()

    def _on_result(self, token: int, failure: bool, slow: bool) -> None:
        snap = self._holder.get()
        if snap.generation != token:
            return  # admitted under an earlier state
        state = snap.state
        if state is CircuitState.CLOSED:
            with self._lock:
                window = self._window
                window.record(failure, slow, self._clock.monotonic())
                if not (failure or slow) or window.calls < self.config.minimum_calls:
                    return
                window.expire(self._clock.monotonic())
                calls = window.calls
                if calls < self.config.minimum_calls:
                    return
                failure_rate = window.failures / calls
                slow_rate = window.slow / calls
            if failure_rate >= self.config.failure_rate or slow_rate >= self.config.slow_call_rate:
                reason = (
                    f"failure rate {failure_rate:.0%} >= {self.config.failure_rate:.0%}"
                    if failure_rate >= self.config.failure_rate
                    else f"slow-call rate {slow_rate:.0%} >= {self.config.slow_call_rate:.0%}"
                )
                self._open(snap, reason, failure_rate, slow_rate)
        elif state is CircuitState.HALF_OPEN:
            with self._lock:
                if self._probe_generation != token:  # the first result of this round
                    self._probe_generation = token
                    self._probe_results = self._probe_failures = self._probe_slow = 0
                self._probe_results += 1
                self._probe_failures += failure
                self._probe_slow += slow
                done = self._probe_results >= self.config.half_open_calls
                failure_rate = self._probe_failures / self._probe_results
                slow_rate = self._probe_slow / self._probe_results
                if not done:
                    return
            if failure_rate >= self.config.failure_rate or slow_rate >= self.config.slow_call_rate:
                self._open(snap, "probe failed", failure_rate, slow_rate)
            else:
                closed = BreakerSnapshot(state=CircuitState.CLOSED, generation=snap.generation + 1)
                if self._cas(snap, closed, "probe succeeded"):
                    with self._lock:
                        self._window.reset()

    def _open(
        self, snap: BreakerSnapshot, reason: str, failure_rate: float, slow_rate: float
    ) -> None:
        opens = snap.consecutive_opens + 1
        open_for = self.config.open_for(opens)
        opened = BreakerSnapshot(
            state=CircuitState.OPEN,
            generation=snap.generation + 1,
            open_until=self._clock.time() + open_for,
            consecutive_opens=opens,
        )
        if self._cas(snap, opened, reason, failure_rate, slow_rate, open_for):
            with self._lock:
                self._window.reset()

    def _cas(
        self,
        expected: BreakerSnapshot,
        new: BreakerSnapshot,
        reason: str,
        failure_rate: float | None = None,
        slow_rate: float | None = None,
        open_for: float | None = None,
    ) -> bool:
        """Compare-and-set a transition; notify listeners and observer when it wins."""
        if self._holder.compare_and_set(expected, new) is not new:
            return False
        self._notify(expected.state, new.state, reason, failure_rate, slow_rate, open_for)
        return True

    def _notify(
        self,
        before: CircuitState,
        after: CircuitState,
        reason: str,
        failure_rate: float | None = None,
        slow_rate: float | None = None,
        open_for: float | None = None,
    ) -> None:
        if self._observer is not None:
            self._observer.on_event(
                BreakerTransition(
                    policy=self.name,
                    from_state=before.value,
                    to_state=after.value,
                    reason=reason,
                    failure_rate=failure_rate,
                    slow_call_rate=slow_rate,
                    open_for=open_for,
                )
            )
        for listener in self._listeners:
            listener(before, after, reason)

    # -- async hooks ----------------------------------------------------------------------------
    # A breaker whose state lives in a store needs I/O on its slow paths (leaving open, taking
    # a probe, recording a failure). ``shares_state`` tells the async pipeline to go through
    # these coroutines; for a process-local breaker they are the sync methods themselves.

    shares_state: ClassVar[bool] = False

    async def aacquire(self, *, operation: str | None = None) -> int:
        """:meth:`acquire`, for breakers that may need I/O to decide."""
        return self.acquire(operation=operation)

    async def aon_failure(self, token: int, exc: BaseException, duration: float = 0.0) -> None:
        """:meth:`on_failure`, for breakers that may need I/O to record it."""
        self.on_failure(token, exc, duration)

    # -- in a policy ----------------------------------------------------------------------------

    def adopt(self, *, name: str, clock: Clock, observer: Observer | None) -> None:
        """Take a policy's name, clock and observer where this breaker was built without them."""
        if self.name == "default":
            self.name = name
        if self._observer is None:
            self._observer = observer
        if self._clock is SYSTEM_CLOCK and clock is not SYSTEM_CLOCK:
            self.use_clock(clock)

    def wrap_sync(self, nxt: SyncNext, chain: Chain) -> SyncNext:
        """Admit each call through *nxt* (or fail fast) and record its outcome."""
        if self.shares_state:
            raise ConfigurationError(
                f"{type(self).__name__} keeps its state in a store and needs async "
                "calls; use a process-local one for sync code"
            )
        acquire, ok, fail = self.acquire, self.on_success, self.on_failure
        release, snapshot = self.release, self._holder.get
        closed = CircuitState.CLOSED
        if self.times_calls:  # durations are only measured when slow-call detection needs them
            mono = chain.clock.monotonic

            def timed(
                info: CallInfo,
                fn: Callable[..., Any],
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                snap = snapshot()
                token = (
                    snap.generation if snap.state is closed else acquire(operation=info.operation)
                )
                start = mono()
                try:
                    result = nxt(info, fn, args, kwargs)
                except Exception as exc:
                    fail(token, exc, mono() - start)
                    raise
                except BaseException:
                    release(token)
                    raise
                ok(token, mono() - start)
                return result

            return timed

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            snap = snapshot()
            token = snap.generation if snap.state is closed else acquire(operation=info.operation)
            try:
                result = nxt(info, fn, args, kwargs)
            except Exception as exc:
                fail(token, exc, 0.0)
                raise
            except BaseException:
                release(token)
                raise
            ok(token, 0.0)
            return result

        return call

    def wrap_async(self, nxt: AsyncNext, chain: Chain) -> AsyncNext:
        """:meth:`wrap_sync` for async calls (a breaker kept in a store provides its own)."""
        acquire, ok, fail = self.acquire, self.on_success, self.on_failure
        release, snapshot = self.release, self._holder.get
        closed = CircuitState.CLOSED
        timed = self.times_calls
        mono = chain.clock.monotonic

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            snap = snapshot()
            token = snap.generation if snap.state is closed else acquire(operation=info.operation)
            start = mono() if timed else 0.0
            try:
                result = await nxt(info, fn, args, kwargs)
            except Exception as exc:
                fail(token, exc, mono() - start if timed else 0.0)
                raise
            except BaseException:
                release(token)
                raise
            ok(token, mono() - start if timed else 0.0)
            return result

        return call

    # -- manual control -----------------------------------------------------------------------

    def _force(self, state: CircuitState, reason: str) -> None:
        while True:
            snap = self._holder.get()
            new = BreakerSnapshot(state=state, generation=snap.generation + 1)
            if self._holder.compare_and_set(snap, new) is new:
                break
        with self._lock:
            self._window.reset()
        if snap.state is not state:
            self._notify(snap.state, state, reason)

    def allow_probe(self, *, after: Duration) -> bool:
        """End an open period early, once the breaker has been open for *after* seconds, so
        that the next call probes the provider (half-open); whether a probe may go now.

        A worker calls it to probe a provider that is down every few seconds, whatever the open
        duration: a probe is one request, and the first success after the provider is back
        closes the breaker within about *after* seconds. ``True`` also when the open period is
        over already, or the breaker is half-open with a probe permit left; ``False`` while it
        is closed, forced open, disabled, within *after* of opening, or its probe is out.
        """
        after = seconds(after)
        while True:
            snap = self._holder.get()
            if snap.state is CircuitState.HALF_OPEN:
                return snap.probes_left > 0
            if snap.state is not CircuitState.OPEN:
                return False
            now = self._clock.time()
            if now >= snap.open_until:
                return True
            opened_at = snap.open_until - self.config.open_for(snap.consecutive_opens)
            if now - opened_at < after:
                return False
            due = replace(snap, open_until=now)
            if self._holder.compare_and_set(snap, due) is due:
                return True

    async def aallow_probe(self, *, after: Duration) -> bool:
        """:meth:`allow_probe` for async callers (a shared breaker writes through its store)."""
        return self.allow_probe(after=after)

    def force_open(self) -> None:
        """Reject every call until :meth:`reset` (for maintenance windows, say)."""
        self._force(CircuitState.FORCED_OPEN, "forced open")

    def disable(self) -> None:
        """Let every call through and record nothing until :meth:`reset`."""
        self._force(CircuitState.DISABLED, "disabled")

    def reset(self) -> None:
        """Close the breaker and forget the window."""
        self._force(CircuitState.CLOSED, "reset")

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.state.value})"
