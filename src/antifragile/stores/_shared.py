"""Breakers and rate limiters whose state several processes share through a store.

:class:`SharedCircuitBreaker` keeps a copy of the breaker record in the process and never pays a
round trip for a successful call in the closed state:

* successes are counted locally and written with the next batch (at most one batch per
  ``sync_interval``), which also refreshes the cached record -- demand-driven, so an idle
  process costs nothing;
* a failure writes the pending batch at once and reads back the window's totals over every
  process; when the failure or slow-call rate crosses its threshold, the transition to open is
  a compare-and-set on the record, so exactly one process opens it and the others adopt the
  record they read back;
* leaving open is a compare-and-set too, and its winner is the one probe: exactly one half-open
  probe goes out across all processes. A probe's result closes or re-opens the breaker for
  everyone (with several probes allowed, the first result decides);
* when the store fails or is slower than ``store_timeout``, the breaker falls back to a
  process-local breaker with the same settings, logs a warning, emits a ``StoreFallback``
  event, and goes back to the shared state when the store answers again. A call is never
  blocked or failed because the store is down.

The shared window is time-based (``shared_window`` seconds of one-second buckets, summed across
processes); ``minimum_calls`` and the rate thresholds apply to it.

:class:`SharedTokenBucket` takes its tokens from a bucket in the store -- one round trip per
call, the reservation made atomically by the store, so R tokens per second are handed out across
all processes -- and falls back to a process-local bucket in the same way.

Both need async calls (the async pipeline awaits their I/O); a sync policy refuses them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any, Literal, TypeVar

from antifragile.errors import AntifragileError, CircuitOpenError, ConfigurationError
from antifragile.observability._context import current_request_id
from antifragile.observability._events import Observer, StoreFallback
from antifragile.policies import (
    SYSTEM_CLOCK,
    BreakerSnapshot,
    CircuitBreaker,
    CircuitState,
    Clock,
    TokenBucket,
    default_record,
)
from antifragile.policies._clock import Duration, seconds
from antifragile.stores._protocols import BreakerRecord, BreakerStore, RateLimitStore, Store

_log = logging.getLogger("antifragile.stores")
T = TypeVar("T")


def _snapshot(record: BreakerRecord) -> BreakerSnapshot:
    return BreakerSnapshot(
        state=CircuitState(record.state),
        generation=record.generation,
        open_until=record.open_until,
        consecutive_opens=record.consecutive_opens,
        probes_left=record.probes_left,
    )


def _as_record(name: str, snap: BreakerSnapshot) -> BreakerRecord:
    return BreakerRecord(
        name=name,
        state=snap.state.value,
        generation=snap.generation,
        open_until=snap.open_until,
        consecutive_opens=snap.consecutive_opens,
        probes_left=snap.probes_left,
        writer=uuid.uuid4().hex,
    )


class _CachedRecord:
    """The breaker's view of the shared record: a plain attribute, read without I/O."""

    __slots__ = ("record", "snapshot")

    def __init__(self, name: str) -> None:
        self.record = BreakerRecord(name)
        self.snapshot = _snapshot(self.record)

    def get(self) -> BreakerSnapshot:
        return self.snapshot

    def compare_and_set(self, expected: BreakerSnapshot, new: BreakerSnapshot) -> BreakerSnapshot:
        # sync transitions would bypass the store; a shared breaker only transitions async
        raise ConfigurationError("a SharedCircuitBreaker changes state only in async calls")

    def adopt(self, record: BreakerRecord) -> None:
        self.record = record
        self.snapshot = _snapshot(record)


class _Fallback:
    """Process-local mode while the store is unavailable: one warning and one event per
    outage, and a retry of the store at most every ``retry_interval`` seconds."""

    def __init__(self, owner: str, kind: str, clock: Clock, retry_interval: float) -> None:
        self.owner = owner
        self.kind = kind
        self.clock = clock
        self.retry_interval = retry_interval
        self.active = False
        self.since = 0.0
        self.observer: Observer | None = None

    def enter(self, exc: BaseException) -> None:
        self.since = self.clock.monotonic()
        if self.active:
            return
        self.active = True
        _log.warning(
            "%s %r: store unavailable (%s); falling back to process-local state",
            self.kind,
            self.owner,
            exc if isinstance(exc, AntifragileError) else type(exc).__name__,
        )
        self._emit(True, exc)

    def leave(self) -> None:
        if not self.active:
            return
        self.active = False
        _log.warning("%s %r: store available again; using the shared state", self.kind, self.owner)
        self._emit(False, None)

    def may_retry(self) -> bool:
        return self.clock.monotonic() - self.since >= self.retry_interval

    def _emit(self, degraded: bool, exc: BaseException | None) -> None:
        if self.observer is not None:
            self.observer.on_event(
                StoreFallback(
                    policy=self.owner,
                    request_id=current_request_id(),
                    component=self.kind,
                    degraded=degraded,
                    error=None if exc is None else type(exc).__name__,
                )
            )


async def _bounded(awaitable: Awaitable[T], limit: float) -> T:
    async with asyncio.timeout(limit):
        return await awaitable


class SharedCircuitBreaker(CircuitBreaker):
    """A circuit breaker whose state is shared by every process using the same store.

    >>> store = await open_store("redis://127.0.0.1:6379/0")
    >>> breaker = SharedCircuitBreaker("shopify", store, failure_rate=0.5, minimum_calls=10)
    >>> policy = Policy("shopify", breaker=breaker)

    ``store`` is a :class:`~antifragile.stores.Store` (its ``breakers``) or a
    :class:`~antifragile.stores.BreakerStore`. Other options are those of
    :class:`~antifragile.CircuitBreaker`, plus ``shared_window`` (seconds),
    ``sync_interval`` (the longest a batch of successes waits before being written) and
    ``store_timeout`` (beyond which the store counts as unavailable).
    """

    shares_state = True

    def __init__(
        self,
        name: str,
        store: Store | BreakerStore,
        *,
        failure_rate: float = 0.5,
        slow_call_rate: float = 1.0,
        slow_call_duration: Duration | None = None,
        shared_window: int = 30,
        minimum_calls: int = 10,
        open_duration: Duration = 30.0,
        open_duration_multiplier: float = 1.0,
        max_open_duration: Duration = 600.0,
        half_open_calls: int = 1,
        record: Callable[[BaseException], bool] = default_record,
        sync_interval: Duration = 1.0,
        store_timeout: Duration = 0.5,
        clock: Clock = SYSTEM_CLOCK,
        observer: Observer | None = None,
    ) -> None:
        if not 1 <= shared_window <= 3600:
            raise ConfigurationError("shared_window must be within [1, 3600] seconds")
        options: dict[str, Any] = {
            "failure_rate": failure_rate,
            "slow_call_rate": slow_call_rate,
            "slow_call_duration": slow_call_duration,
            "window": shared_window,
            "window_type": "time",
            "minimum_calls": minimum_calls,
            "open_duration": open_duration,
            "open_duration_multiplier": open_duration_multiplier,
            "max_open_duration": max_open_duration,
            "half_open_calls": half_open_calls,
            "record": record,
            "clock": clock,
        }
        self._cache = _CachedRecord(name)
        super().__init__(name, state=self._cache, observer=observer, **options)
        self._store: BreakerStore = store.breakers if isinstance(store, Store) else store
        self._shared_window = shared_window
        self._sync_interval = seconds(sync_interval)
        self._store_timeout = seconds(store_timeout)
        #: the breaker used while the store is unavailable
        self.local = CircuitBreaker(name, **options)
        self._fallback = _Fallback(name, "circuit_breaker", clock, self._sync_interval)
        self._pending = [0, 0, 0]  # calls, failures, slow -- not yet written
        self._synced_at = -float("inf")
        self._sync_task: asyncio.Task[None] | None = None

    @property
    def degraded(self) -> bool:
        """Whether the breaker runs process-local because the store is unavailable."""
        return self._fallback.active

    def _is_local(self) -> bool:
        return self._fallback.active

    def use_clock(self, clock: Clock) -> None:
        super().use_clock(clock)
        self.local.use_clock(clock)
        self._fallback.clock = clock

    def _bind_observer(self) -> None:
        self._fallback.observer = self._observer
        self.local._observer = self._observer

    # -- store access -------------------------------------------------------------------------

    async def _call_store(self, awaitable: Awaitable[T]) -> T | None:
        """Run one store operation; on failure enter fallback mode and return ``None``."""
        try:
            result = await _bounded(awaitable, self._store_timeout)
        except (Exception, TimeoutError) as exc:  # any store failure means: go local
            self._bind_observer()
            self._fallback.enter(exc)
            return None
        if self._fallback.active:
            self._bind_observer()
            self._fallback.leave()
        return result

    async def _cas_shared(
        self, expected: BreakerRecord, new: BreakerRecord, reason: str, **rates: float | None
    ) -> bool | None:
        """Compare-and-set the shared record; ``None`` when the store is unavailable."""
        current = await self._call_store(self._store.compare_and_set(expected, new))
        if current is None:
            return None
        self._cache.adopt(current)
        if current.writer != new.writer:
            return False
        self._notify(
            CircuitState(expected.state),
            CircuitState(new.state),
            reason,
            rates.get("failure_rate"),
            rates.get("slow_rate"),
            rates.get("open_for"),
        )
        return True

    def _take_pending(self) -> tuple[int, int, int]:
        with self._lock:
            calls, failures, slow = self._pending
            self._pending = [0, 0, 0]
        return calls, failures, slow

    async def _flush(self) -> tuple[int, int, int] | None:
        """Write the pending outcomes; the window totals across processes, or ``None``."""
        calls, failures, slow = self._take_pending()
        totals = await self._call_store(
            self._store.add_outcomes(
                self.name,
                second=int(self._clock.time()),
                calls=calls,
                failures=failures,
                slow=slow,
                window=self._shared_window,
            )
        )
        if totals is None:
            return None
        self._synced_at = self._clock.monotonic()
        return totals.calls, totals.failures, totals.slow

    async def _evaluate(self, totals: tuple[int, int, int]) -> None:
        """Open the shared breaker when the window's rates cross a threshold."""
        calls, failures, slow = totals
        record = self._cache.record
        if record.state != CircuitState.CLOSED.value or calls < self.config.minimum_calls:
            return
        failure_rate, slow_rate = failures / calls, slow / calls
        if failure_rate >= self.config.failure_rate or slow_rate >= self.config.slow_call_rate:
            reason = (
                f"failure rate {failure_rate:.0%} >= {self.config.failure_rate:.0%}"
                if failure_rate >= self.config.failure_rate
                else f"slow-call rate {slow_rate:.0%} >= {self.config.slow_call_rate:.0%}"
            )
            await self._open_shared(record, reason, failure_rate, slow_rate)

    async def _open_shared(
        self, record: BreakerRecord, reason: str, failure_rate: float, slow_rate: float
    ) -> None:
        opens = record.consecutive_opens + 1
        open_for = self.config.open_for(opens)
        opened = _as_record(
            self.name,
            BreakerSnapshot(
                state=CircuitState.OPEN,
                generation=record.generation + 1,
                open_until=self._clock.time() + open_for,
                consecutive_opens=opens,
            ),
        )
        won = await self._cas_shared(
            record,
            opened,
            reason,
            failure_rate=failure_rate,
            slow_rate=slow_rate,
            open_for=open_for,
        )
        if won:
            await self._call_store(self._store.reset_window(self.name))

    async def _close_shared(self, record: BreakerRecord) -> None:
        closed = _as_record(
            self.name, BreakerSnapshot(state=CircuitState.CLOSED, generation=record.generation + 1)
        )
        if await self._cas_shared(record, closed, "probe succeeded"):
            self._take_pending()
            await self._call_store(self._store.reset_window(self.name))

    async def _sync(self) -> None:
        """Write pending outcomes and refresh the cached record (one batch)."""
        try:
            pending = any(self._pending)
            if pending:
                totals = await self._flush()
                if totals is not None:
                    await self._evaluate(totals)
            record = await self._call_store(self._store.load(self.name))
            if record is not None:
                self._cache.adopt(record)
                self._synced_at = self._clock.monotonic()
        finally:
            self._sync_task = None

    def _maybe_sync(self) -> None:
        if self._sync_task is not None:
            return
        if self._fallback.active:
            if not self._fallback.may_retry():
                return
        elif self._clock.monotonic() - self._synced_at < self._sync_interval:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._sync_task = loop.create_task(self._sync())

    async def refresh(self) -> BreakerSnapshot:
        """Write pending outcomes and read the shared record now."""
        if self._sync_task is not None:
            await asyncio.shield(self._sync_task)
        else:
            self._sync_task = asyncio.get_running_loop().create_task(self._sync())
            await self._sync_task
        return self.snapshot

    # -- the call protocol, async ---------------------------------------------------------------

    async def aacquire(self, *, operation: str | None = None) -> int:
        if self._fallback.active:
            self._maybe_sync()
            return self.local.acquire(operation=operation)
        if self._cache.snapshot.state is not CircuitState.CLOSED and (
            self._clock.monotonic() - self._synced_at >= min(0.1, self._sync_interval)
        ):
            await self.refresh()  # a non-closed record is worth re-reading before deciding
            if self._is_local():
                return self.local.acquire(operation=operation)
        while True:
            record = self._cache.record
            state = CircuitState(record.state)
            if state is CircuitState.CLOSED or state is CircuitState.DISABLED:
                return record.generation
            if state is CircuitState.OPEN:
                if self._clock.time() < record.open_until:
                    raise self._rejection(self._cache.snapshot, operation)
                # the winner of the transition is the (first) probe
                probe = _as_record(
                    self.name,
                    replace(
                        self._cache.snapshot,
                        state=CircuitState.HALF_OPEN,
                        generation=record.generation + 1,
                        probes_left=self.config.half_open_calls - 1,
                    ),
                )
                won = await self._cas_shared(record, probe, "open duration elapsed")
                if won is None:
                    return self.local.acquire(operation=operation)
                if won:
                    return probe.generation
                continue
            if state is CircuitState.HALF_OPEN:
                if record.probes_left <= 0:
                    raise self._rejection(self._cache.snapshot, operation)
                taken = replace(record, probes_left=record.probes_left - 1, writer=uuid.uuid4().hex)
                current = await self._call_store(self._store.compare_and_set(record, taken))
                if current is None:
                    return self.local.acquire(operation=operation)
                self._cache.adopt(current)
                if current.writer == taken.writer:
                    return taken.generation
                continue
            raise self._rejection(self._cache.snapshot, operation)

    def acquire(self, *, operation: str | None = None) -> int:
        """The sync form works only while the cached record is closed (see the module docs)."""
        if self._fallback.active:
            return self.local.acquire(operation=operation)
        snap = self._cache.snapshot
        if snap.state is CircuitState.CLOSED or snap.state is CircuitState.DISABLED:
            return snap.generation
        raise self._rejection(snap, operation)

    def on_success(self, token: int, duration: float = 0.0) -> None:
        if self._fallback.active:
            self.local.on_success(token, duration)
            self._maybe_sync()
            return
        slow = self._slow_threshold is not None and duration >= self._slow_threshold
        with self._lock:
            self._pending[0] += 1
            if slow:
                self._pending[2] += 1
        record = self._cache.record
        if record.generation == token and record.state == CircuitState.HALF_OPEN.value:
            self._spawn(self._probe_done(record, failure=False, slow=slow))
        self._maybe_sync()

    async def aon_failure(self, token: int, exc: BaseException, duration: float = 0.0) -> None:
        if self._fallback.active:
            self.local.on_failure(token, exc, duration)
            self._maybe_sync()
            return
        failure = self._record(exc)
        slow = self._slow_threshold is not None and duration >= self._slow_threshold
        with self._lock:
            self._pending[0] += 1
            self._pending[1] += failure
            self._pending[2] += slow
        record = self._cache.record
        if record.generation != token:
            self._maybe_sync()
            return
        if record.state == CircuitState.HALF_OPEN.value:
            await self._probe_done(record, failure=failure, slow=slow)
        elif failure or slow:
            totals = await self._flush()
            if totals is not None:
                await self._evaluate(totals)

    def on_failure(self, token: int, exc: BaseException, duration: float = 0.0) -> None:
        """Sync form: the failure is counted and written with the next batch."""
        if self._fallback.active:
            self.local.on_failure(token, exc, duration)
            return
        with self._lock:
            self._pending[0] += 1
            self._pending[1] += self._record(exc)
        self._maybe_sync()

    def release(self, token: int) -> None:
        record = self._cache.record
        if record.state == CircuitState.HALF_OPEN.value and record.generation == token:
            returned = replace(record, probes_left=record.probes_left + 1, writer=uuid.uuid4().hex)
            self._spawn(self._call_store(self._store.compare_and_set(record, returned)))

    async def _probe_done(self, record: BreakerRecord, *, failure: bool, slow: bool) -> None:
        if failure or slow:
            rate = 1.0
            await self._open_shared(record, "probe failed", rate if failure else 0.0, float(slow))
        else:
            await self._close_shared(record)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            return
        task: asyncio.Task[Any] = loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @property
    def _background(self) -> set[asyncio.Task[Any]]:
        tasks: set[asyncio.Task[Any]] | None = self.__dict__.get("_tasks")
        if tasks is None:
            tasks = self.__dict__["_tasks"] = set()
        return tasks

    # -- manual control ---------------------------------------------------------------------

    async def aforce(self, state: Literal["closed", "forced_open", "disabled"]) -> None:
        """Set the shared state for every process (``reset``, ``force_open``, ``disable``)."""
        target = CircuitState(state)
        while True:
            record = await self._call_store(self._store.load(self.name))
            if record is None:
                raise CircuitOpenError(
                    f"circuit breaker {self.name!r}: the store is unavailable", provider=self.name
                )
            new = _as_record(
                self.name, BreakerSnapshot(state=target, generation=record.generation + 1)
            )
            won = await self._cas_shared(record, new, f"set to {state}")
            if won:
                await self._call_store(self._store.reset_window(self.name))
                return

    def _force(self, state: CircuitState, reason: str) -> None:
        raise ConfigurationError(
            "use `await breaker.aforce(...)` to change a shared breaker's state"
        )


class SharedTokenBucket(TokenBucket):
    """A token bucket kept in a store and shared by every process (see the module docs).

    ``key`` names the bucket in the store (default: the bucket's ``name``).
    """

    shares_state = True

    def __init__(
        self,
        rate: float,
        store: Store | RateLimitStore,
        *,
        burst: float | None = None,
        max_wait: Duration = 10.0,
        low_watermark: float = 0.1,
        name: str = "default",
        key: str | None = None,
        store_timeout: Duration = 0.5,
        clock: Clock = SYSTEM_CLOCK,
        observer: Observer | None = None,
    ) -> None:
        super().__init__(
            rate,
            burst=burst,
            max_wait=max_wait,
            low_watermark=low_watermark,
            name=name,
            clock=clock,
            observer=observer,
        )
        self._rate_store: RateLimitStore = store.rate_limits if isinstance(store, Store) else store
        self._key = key
        self._store_timeout = seconds(store_timeout)
        self._fallback_state = _Fallback(name, "rate_limiter", clock, 1.0)

    @property
    def key(self) -> str:
        return self._key or self.name

    @property
    def degraded(self) -> bool:
        return self._fallback_state.active

    def use_clock(self, clock: Clock) -> None:
        super().use_clock(clock)
        self._fallback_state.clock = clock

    async def areserve(self, tokens: float = 1.0, operation: str | None = None) -> float:
        fallback = self._fallback_state
        if fallback.active and not fallback.may_retry():
            return self.reserve(tokens, operation)
        try:
            grant = await _bounded(
                self._rate_store.take(
                    self.key,
                    tokens=tokens,
                    rate=self.rate,
                    burst=self.burst,
                    max_wait=self.max_wait,
                    now=self._clock.time(),
                ),
                self._store_timeout,
            )
        except (Exception, TimeoutError) as exc:
            fallback.observer = self._observer
            fallback.enter(exc)
            return self.reserve(tokens, operation)
        if fallback.active:
            fallback.observer = self._observer
            fallback.leave()
        if not grant.granted:
            self._reject_shared(grant.wait, operation)
        return grant.wait

    def _reject_shared(self, wait: float, operation: str | None) -> None:
        from antifragile.errors import RateLimitedError
        from antifragile.observability._events import CallRejected

        if self._observer is not None:
            self._observer.on_event(
                CallRejected(
                    policy=self.name,
                    operation=operation,
                    request_id=current_request_id(),
                    by="rate_limiter",
                    code="RATE_LIMITED",
                    retry_after=wait,
                )
            )
        raise RateLimitedError(
            f"rate limiter {self.name!r}: next token in {wait:.2f}s, beyond max_wait "
            f"{self.max_wait:g}s",
            provider=self.name,
            operation=operation,
            retry_after=wait,
        )

    def pause(self, seconds: float) -> None:
        """Pause here at once, and in the store for every process (in the background)."""
        super().pause(seconds)
        if seconds <= 0 or self._fallback_state.active:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        coro = self._rate_store.pause(
            self.key, seconds=seconds, rate=self.rate, burst=self.burst, now=self._clock.time()
        )
        task = loop.create_task(_quiet(_bounded(coro, self._store_timeout)))
        _PAUSES.add(task)
        task.add_done_callback(_PAUSES.discard)


_PAUSES: set[asyncio.Task[None]] = set()


async def _quiet(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except (Exception, TimeoutError):
        _log.debug("could not write a rate-limit pause to the store", exc_info=True)
