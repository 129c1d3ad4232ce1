"""Breakers and rate limiters whose state several processes share through a store.

:class:`SharedCircuitBreaker` keeps a copy of the breaker record in the process and never pays a
round trip for a successful call in the closed state:

* a success is one comparison and one counter increment: successes are written with the next
  batch, at most one batch per ``sync_interval`` and only when there is something to write or
  read -- so an idle process costs nothing. The batch also re-reads the record, which is how a
  process that only sees successes learns, within ``sync_interval``, that another one opened the
  breaker;
* a failure writes the pending outcomes at once and reads back the window's totals over every
  process; when the failure or slow-call rate crosses its threshold, the transition to open is
  a compare-and-set on the record, so exactly one process opens it and the others adopt the
  record they read back. A failure that does not trip the breaker re-reads the record, so a
  process whose calls fail learns at its next failure that someone else opened it;
* leaving open is a compare-and-set too, and its winner is the one probe: exactly one half-open
  probe goes out across all processes. The probe's result closes or re-opens the breaker for
  everyone (with several probes allowed, each result is counted in the store, and the one that
  completes ``half_open_calls`` judges the round's rates, as a local breaker does). A probe
  that reports nothing before its deadline -- the open duration of that round, stored in the
  record's ``open_until`` -- is presumed lost (its process died, or the store was unreachable
  when it finished), and the next call takes over as a new probe, so the breaker never stays
  half-open for good;
* when the store fails or is slower than ``store_timeout``, the breaker falls back to a
  process-local breaker with the same settings, starting from the last shared state it knew
  (an open breaker stays open), logs a warning, emits a ``StoreFallback`` event, retries the
  store in the background at most once per ``sync_interval``, and goes back to the shared state
  when the store answers again. A call is never failed because the store is down, and after the
  first store call that fails or times out, none waits for it.

The shared window is time-based (``shared_window`` seconds of one-second buckets, summed across
processes); ``minimum_calls`` and the rate thresholds apply to it. Results of calls admitted
under an earlier generation of the record are ignored, as in the local breaker. Successes are
counted without a lock: from several threads at once a success may occasionally go uncounted,
which only makes the window a little more pessimistic; failures are always counted.

:class:`SharedTokenBucket` takes its tokens from a bucket in the store -- one round trip per
call, the reservation made atomically by the store, so R tokens per second are handed out across
all processes -- and falls back to a process-local bucket in the same way (every process then
allows the full rate on its own until the store is back). A reservation whose caller stops
waiting (a cancelled task) is given back to the store, atomically.

Both need async calls (the async pipeline awaits their I/O); a sync policy refuses them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any, Literal, TypeVar

from antifragile.errors import (
    AntifragileError,
    ConfigurationError,
    RateLimitedError,
    StoreUnavailableError,
)
from antifragile.observability._context import current_request_id
from antifragile.observability._events import CallRejected, LimiterWait, Observer, StoreFallback
from antifragile.policies import (
    SYSTEM_CLOCK,
    BreakerConfig,
    BreakerSnapshot,
    CircuitBreaker,
    CircuitState,
    Clock,
    LocalBreakerState,
    TokenBucket,
    default_record,
)
from antifragile.policies._chain import AsyncNext, Chain
from antifragile.policies._clock import Duration, seconds
from antifragile.policies._deadline import CallInfo
from antifragile.stores._protocols import (
    BreakerRecord,
    BreakerStore,
    RateLimitStore,
    Store,
    TokenGrant,
    WindowTotals,
)

_log = logging.getLogger("antifragile.stores")
T = TypeVar("T")

_CLOSED = CircuitState.CLOSED.value
_OPEN = CircuitState.OPEN.value
_HALF_OPEN = CircuitState.HALF_OPEN.value
_DISABLED = CircuitState.DISABLED.value


def _writer() -> str:
    return uuid.uuid4().hex


def _snapshot(record: BreakerRecord) -> BreakerSnapshot:
    return BreakerSnapshot(
        state=CircuitState(record.state),
        generation=record.generation,
        open_until=record.open_until,
        consecutive_opens=record.consecutive_opens,
        probes_left=record.probes_left,
    )


def _positive(name: str, value: Duration) -> float:
    result = seconds(value)
    if not result > 0:
        raise ConfigurationError(f"{name} must be > 0 seconds, got {value!r}")
    return result


#: what the holder shows before the record was first read: not closed, so that the pipeline's
#: closed fast path does not admit calls on a record nobody has read -- it asks ``aacquire``,
#: which reads it first
_UNREAD = BreakerSnapshot(state=CircuitState.HALF_OPEN, generation=-1)


class _CachedRecord:
    """The breaker's view of its state, read without I/O: the shared record as last seen, or,
    while the store is unavailable, the process-local fallback breaker's state."""

    __slots__ = ("local", "read", "record", "snapshot")

    def __init__(self, name: str) -> None:
        self.record = BreakerRecord(name)
        self.snapshot = _snapshot(self.record)
        self.local: LocalBreakerState | None = None
        self.read = False  # whether the record has been read from the store yet

    def get(self) -> BreakerSnapshot:
        local = self.local
        if local is not None:
            return local.get()
        return self.snapshot if self.read else _UNREAD

    def current(self) -> BreakerSnapshot:
        """The state as known: the record as last seen (the default one before the first
        read), or the fallback breaker's."""
        local = self.local
        return self.snapshot if local is None else local.get()

    def compare_and_set(self, expected: BreakerSnapshot, new: BreakerSnapshot) -> BreakerSnapshot:
        # sync transitions would bypass the store; a shared breaker only transitions async
        raise ConfigurationError("a SharedCircuitBreaker changes state only in async calls")

    def adopt(self, record: BreakerRecord) -> None:
        self.record = record
        self.snapshot = _snapshot(record)
        self.read = True


class _Fallback:
    """Process-local mode while the store is unavailable: one warning and one event per
    outage, and a retry of the store at most every ``retry_interval`` seconds."""

    def __init__(
        self, owner: str, kind: str, clock: Clock, retry_interval: float, store_timeout: float
    ) -> None:
        self.owner = owner
        self.kind = kind
        self.clock = clock
        self.retry_interval = retry_interval
        self.store_timeout = store_timeout
        self.active = False
        self.since = 0.0
        self.observer: Observer | None = None

    def enter(self, exc: BaseException) -> None:
        self.since = self.clock.monotonic()
        if self.active:
            return
        self.active = True
        if isinstance(exc, TimeoutError):
            reason = f"no answer within store_timeout={self.store_timeout:g}s"
        elif isinstance(exc, AntifragileError):
            reason = str(exc)
        else:
            reason = type(exc).__name__
        _log.warning(
            "%s %r: store unavailable (%s); falling back to process-local state",
            self.kind,
            self.owner,
            reason,
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


def _spawn(tasks: set[asyncio.Task[Any]], coro: Coroutine[Any, Any, Any]) -> None:
    """Run *coro* in the background on the running loop (closed unrun without one)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        coro.close()
        return
    task: asyncio.Task[Any] = loop.create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


class SharedCircuitBreaker(CircuitBreaker):
    """A circuit breaker whose state is shared by every process using the same store.

    >>> store = await open_store("redis://127.0.0.1:6379/0")
    >>> breaker = SharedCircuitBreaker("shopify", store, failure_rate=0.5, minimum_calls=10)
    >>> policy = Policy("shopify", breaker=breaker)

    ``name`` is also the record's key in the store. ``store`` is a
    :class:`~antifragile.stores.Store` (its ``breakers``) or a
    :class:`~antifragile.stores.BreakerStore`. Other options are those of
    :class:`~antifragile.CircuitBreaker`, plus ``shared_window`` (seconds),
    ``sync_interval`` (the longest a batch of successes waits before being written, and the
    pause between two tries of an unavailable store) and ``store_timeout`` (beyond which the
    store counts as unavailable). Change the state for every process with :meth:`aforce`.

    A new breaker reads the record before it admits its first call (concurrent first callers
    wait for that one read); ``await breaker.refresh()`` reads it at once. While the store is
    unavailable, listeners and the observer see the local breaker's transitions.
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
        if not 1 <= shared_window <= 3600 or shared_window != int(shared_window):
            raise ConfigurationError("shared_window must be a whole number in [1, 3600] seconds")
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
        self._options = options
        self._store: BreakerStore = store.breakers if isinstance(store, Store) else store
        #: the record's key in the store (fixed, even if a policy renames the breaker)
        self.key = name
        self._shared_window = int(shared_window)
        self._sync_interval = _positive("sync_interval", sync_interval)
        self._store_timeout = _positive("store_timeout", store_timeout)
        # how stale a non-closed record may be before a call re-reads it
        self._refresh_interval = min(0.1, self._sync_interval)
        #: the breaker used while the store is unavailable
        self.local = CircuitBreaker(name, **options)
        self._fallback = _Fallback(
            name, "circuit_breaker", clock, self._sync_interval, self._store_timeout
        )
        self._mono = clock.monotonic
        self._slow_limit = math.inf if self._slow_threshold is None else self._slow_threshold
        # the hot path: a success whose token equals ``_fast_token`` (the generation of a closed,
        # shared record; -1 otherwise) only bumps ``_successes``
        self._fast_token = 0
        self._successes = 0
        self._outcomes = [0, 0, 0]  # calls, failures, slow not yet written (besides successes)
        self._sync_due = -math.inf  # monotonic time from which the next success starts a sync
        self._synced_at = -math.inf  # when the cached record was last read from the store
        self._sync_task: asyncio.Task[None] | None = None
        # every store call gets a ticket; a record read by an older call never replaces one
        # read by a newer call (unless it has a higher generation)
        self._tickets = itertools.count(1)
        self._adopted = 0
        self._probe: BreakerRecord | None = None  # the half-open round this process probes
        self._probe_permits = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        # the shared window's totals as last read (of the cached record's generation), and
        # the epoch second they were read at
        self._totals = WindowTotals(0, 0, 0)
        self._totals_second = 0

    @property
    def degraded(self) -> bool:
        """Whether the breaker runs process-local because the store is unavailable."""
        return self._fallback.active

    def use_clock(self, clock: Clock) -> None:
        super().use_clock(clock)
        self.local.use_clock(clock)
        self._fallback.clock = clock
        self._options["clock"] = clock
        self._mono = clock.monotonic

    def __repr__(self) -> str:
        mode = ", degraded" if self._fallback.active else ""
        return f"SharedCircuitBreaker({self.name!r}, state={self.state.value}{mode})"

    @classmethod
    def from_config(
        cls,
        config: BreakerConfig,
        store: Store | BreakerStore,
        *,
        name: str,
        record: Callable[[BaseException], bool] = default_record,
        shared_window: int = 30,
        sync_interval: Duration = 1.0,
        store_timeout: Duration = 0.5,
        clock: Clock = SYSTEM_CLOCK,
        observer: Observer | None = None,
    ) -> SharedCircuitBreaker:
        """A shared breaker with the thresholds of *config* (a local breaker's ``config``)::

            shared = SharedCircuitBreaker.from_config(policy.breaker.config, store, name="shopify")
            policy = policy.replace(breaker=shared)

        Failure and slow-call rates, minimum calls, open durations and half-open probes carry
        over; the window is the shared one (``shared_window`` seconds), since a count window
        cannot be shared between processes.
        """
        return cls(
            name,
            store,
            failure_rate=config.failure_rate,
            slow_call_rate=config.slow_call_rate,
            slow_call_duration=config.slow_call_duration,
            shared_window=shared_window,
            minimum_calls=config.minimum_calls,
            open_duration=config.open_duration,
            open_duration_multiplier=config.open_duration_multiplier,
            max_open_duration=config.max_open_duration,
            half_open_calls=config.half_open_calls,
            record=record,
            sync_interval=sync_interval,
            store_timeout=store_timeout,
            clock=clock,
            observer=observer,
        )

    def wrap_async(self, nxt: AsyncNext, chain: Chain) -> AsyncNext:
        """The breaker's shell in an async policy: admission and failures may need the store
        (they are awaited); a success on a closed breaker is counted without I/O."""
        aacquire, ok, afail = self.aacquire, self.on_success, self.aon_failure
        release, snapshot = self.release, self.holder.get
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
            if snap.state is closed:
                token = snap.generation
            else:
                token = await aacquire(operation=info.operation)
            start = mono() if timed else 0.0
            try:
                result = await nxt(info, fn, args, kwargs)
            except Exception as exc:
                await afail(token, exc, mono() - start if timed else 0.0)
                raise
            except BaseException:
                release(token)
                raise
            ok(token, mono() - start if timed else 0.0)
            return result

        return call

    # -- the cached record and the store ---------------------------------------------------

    def _adopt(self, record: BreakerRecord, ticket: int) -> None:
        cached = self._cache.record
        if ticket < self._adopted and record.generation <= cached.generation:
            return  # an older read, overtaken by a newer one
        self._adopted = max(ticket, self._adopted)
        if record.generation != cached.generation:
            self._drop_pending()  # outcomes of calls admitted under the earlier generation
            self._totals = WindowTotals(0, 0, 0)  # a transition starts a new window
        self._cache.adopt(record)
        self._synced_at = self._mono()
        closed = record.state == _CLOSED and not self._fallback.active
        self._fast_token = record.generation if closed else -1

    async def _call_store(self, awaitable: Awaitable[T]) -> T | None:
        """Run one store operation; on failure enter fallback mode and return ``None``."""
        try:
            result = await _bounded(awaitable, self._store_timeout)
        except Exception as exc:  # any store failure (a timeout too) means: go local
            self._enter_fallback(exc)
            return None
        if self._fallback.active:
            self._leave_fallback()
        return result

    async def _load(self) -> BreakerRecord | None:
        ticket = next(self._tickets)
        record = await self._call_store(self._store.load(self.key))
        if record is not None:
            self._adopt(record, ticket)
        return record

    async def _cas_record(
        self, expected: BreakerRecord, new: BreakerRecord
    ) -> BreakerRecord | None:
        """Compare-and-set; the record current afterwards (``new`` when it won), or ``None``
        when the store is unavailable."""
        ticket = next(self._tickets)
        current = await self._call_store(self._store.compare_and_set(expected, new))
        if current is not None:
            self._adopt(current, ticket)
        return current

    async def _transition(
        self,
        expected: BreakerRecord,
        new: BreakerRecord,
        reason: str,
        failure_rate: float | None = None,
        slow_rate: float | None = None,
        open_for: float | None = None,
    ) -> BreakerRecord | None:
        """A compare-and-set that notifies listeners and the observer when it wins."""
        current = await self._cas_record(expected, new)
        if current is not None and current.writer == new.writer:
            self._notify(
                CircuitState(expected.state),
                CircuitState(new.state),
                reason,
                failure_rate,
                slow_rate,
                open_for,
            )
        return current

    # -- fallback ----------------------------------------------------------------------------

    def _bind_observer(self) -> None:
        self._fallback.owner = self.name
        self._fallback.observer = self._observer
        self.local._observer = self._observer

    def _enter_fallback(self, exc: BaseException) -> None:
        if not self._fallback.active:
            self._fast_token = -1
            self._start_local()
        self._bind_observer()
        self._fallback.enter(exc)

    def _leave_fallback(self) -> None:
        self._cache.local = None
        self._bind_observer()
        self._fallback.leave()
        record = self._cache.record
        self._fast_token = record.generation if record.state == _CLOSED else -1

    def _start_local(self) -> None:
        """A fresh local breaker that starts where the shared state was last seen.

        It takes the shared generation too, so calls admitted just before the outage report
        to it. An open (or half-open) record stays open locally until its ``open_until``.
        """
        snap = self._cache.snapshot
        state = CircuitState.OPEN if snap.state is CircuitState.HALF_OPEN else snap.state
        holder = LocalBreakerState()
        seeded = BreakerSnapshot(
            state=state,
            generation=snap.generation,
            open_until=snap.open_until if state is CircuitState.OPEN else 0.0,
            consecutive_opens=snap.consecutive_opens,
        )
        holder.compare_and_set(holder.get(), seeded)
        self.local = CircuitBreaker(
            self.name, state=holder, observer=self._observer, **self._options
        )
        for listener in self._listeners:
            self.local.add_listener(listener)
        self._cache.local = holder

    # -- outcomes and syncing ---------------------------------------------------------------

    def _drop_pending(self) -> None:
        with self._lock:
            self._successes = 0
            self._outcomes = [0, 0, 0]

    def _take_pending(self) -> tuple[int, int, int]:
        with self._lock:
            successes, self._successes = self._successes, 0
            (calls, failures, slow), self._outcomes = self._outcomes, [0, 0, 0]
        return calls + successes, failures, slow

    async def _flush(self) -> WindowTotals | None:
        """Write the pending outcomes; the window totals across processes, or ``None``."""
        calls, failures, slow = self._take_pending()
        second = int(self._clock.time())
        generation = self._cache.record.generation
        totals = await self._call_store(
            self._store.add_outcomes(
                self.key,
                second=second,
                calls=calls,
                failures=failures,
                slow=slow,
                window=self._shared_window,
            )
        )
        if totals is not None and generation == self._cache.record.generation:
            self._totals, self._totals_second = totals, second
        return totals

    async def _evaluate(self, totals: WindowTotals) -> bool:
        """Open the shared breaker when the window's rates cross a threshold; whether a
        transition was tried (its compare-and-set also brought the current record)."""
        record = self._cache.record
        calls = totals.calls
        if record.state != _CLOSED or calls < self.config.minimum_calls:
            return False
        failure_rate, slow_rate = totals.failures / calls, totals.slow / calls
        if failure_rate >= self.config.failure_rate:
            reason = f"failure rate {failure_rate:.0%} >= {self.config.failure_rate:.0%}"
        elif slow_rate >= self.config.slow_call_rate:
            reason = f"slow-call rate {slow_rate:.0%} >= {self.config.slow_call_rate:.0%}"
        else:
            return False
        await self._open_shared(record, reason, failure_rate, slow_rate)
        return True

    async def _report(self) -> None:
        """After a failure: write the outcomes, open if the window says so, else re-read."""
        totals = await self._flush()
        if totals is not None and not await self._evaluate(totals):
            await self._load()

    async def _open_shared(
        self, record: BreakerRecord, reason: str, failure_rate: float, slow_rate: float
    ) -> BreakerRecord | None:
        opens = record.consecutive_opens + 1
        open_for = self.config.open_for(opens)
        opened = BreakerRecord(
            self.key,
            _OPEN,
            record.generation + 1,
            self._clock.time() + open_for,
            opens,
            0,
            _writer(),
        )
        current = await self._transition(record, opened, reason, failure_rate, slow_rate, open_for)
        if current is not None and current.writer == opened.writer:
            await self._call_store(self._store.reset_window(self.key))
        return current

    async def _close_shared(self, record: BreakerRecord) -> BreakerRecord | None:
        closed = BreakerRecord(self.key, _CLOSED, record.generation + 1, writer=_writer())
        current = await self._transition(record, closed, "probe succeeded")
        if current is not None and current.writer == closed.writer:
            await self._call_store(self._store.reset_window(self.key))
        return current

    async def _sync(self, *, totals: bool = False) -> None:
        """Write pending outcomes and refresh the cached record (one batch); with *totals*,
        read the window's totals even when there is nothing to write."""
        try:
            if self._successes or any(self._outcomes) or totals:
                window = await self._flush()
                if window is None or await self._evaluate(window):
                    return
            await self._load()
        finally:
            if self._sync_task is asyncio.current_task():
                self._sync_task = None
            self._sync_due = self._mono() + self._sync_interval

    def _begin_sync(
        self, loop: asyncio.AbstractEventLoop, *, totals: bool = False
    ) -> asyncio.Task[None]:
        self._sync_due = math.inf  # no success needs to look at the clock meanwhile
        task = self._sync_task = loop.create_task(self._sync(totals=totals))
        return task

    def _start_sync(self, *, totals: bool = False) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a sync caller: try again on a later call
            self._sync_due = self._mono() + self._sync_interval
            return
        task = self._sync_task
        if task is not None and not task.done() and task.get_loop() is loop:
            return
        self._begin_sync(loop, totals=totals)

    def _maybe_sync(self) -> None:
        if self._fallback.active:
            if not self._fallback.may_retry():
                return
        elif self._mono() < self._sync_due:
            return
        self._start_sync()

    async def refresh(self) -> BreakerSnapshot:
        """Write pending outcomes and read the shared record and window totals now (what
        :attr:`state` and :meth:`metrics` report)."""
        await self._refresh(totals=True)
        return self.snapshot

    async def _refresh(self, *, totals: bool = False) -> None:
        """Join the sync under way, or start one; concurrent callers share one read."""
        loop = asyncio.get_running_loop()
        task = self._sync_task
        if task is None or task.done() or task.get_loop() is not loop:
            task = self._begin_sync(loop, totals=totals)
        await asyncio.shield(task)

    # -- inspection ---------------------------------------------------------------------------

    @property
    def snapshot(self) -> BreakerSnapshot:
        """The shared record as last read (the default closed one before the first read), or
        the process-local breaker's state while the store is unavailable."""
        return self._cache.current()

    @property
    def state(self) -> CircuitState:
        """The state as a call would find it now, from the record as last read: an open
        breaker whose time is up reports ``half_open``.

        A record never read, or a non-closed one older than ``sync_interval``, is re-read in
        the background (when an event loop runs), so an inspection that repeats -- a
        dashboard -- follows the other processes; ``await refresh()`` reads it at once.
        """
        if not self._fallback.active:
            stale = self._mono() - self._synced_at >= self._sync_interval
            if stale and (self._cache.record.state != _CLOSED or not self._cache.read):
                self._start_sync()
        snap = self._cache.current()
        if snap.state is CircuitState.OPEN and self._clock.time() >= snap.open_until:
            return CircuitState.HALF_OPEN
        return snap.state

    def metrics(self) -> dict[str, float]:
        """Calls, failures and slow calls in the shared window -- every process's, as last
        read from the store, plus this process's not yet written -- and their rates.

        While the store is unavailable: those of the process-local breaker.
        """
        if self._fallback.active:
            return self.local.metrics()
        totals = self._totals
        if self._totals_second <= int(self._clock.time()) - self._shared_window:
            totals = WindowTotals(0, 0, 0)  # read so long ago that it has left the window
        with self._lock:
            calls = totals.calls + self._successes + self._outcomes[0]
            failures = totals.failures + self._outcomes[1]
            slow = totals.slow + self._outcomes[2]
        if self._mono() >= self._sync_due:
            self._start_sync(totals=True)  # fresher totals for the next look
        return {
            "calls": calls,
            "failures": failures,
            "slow_calls": slow,
            "failure_rate": failures / calls if calls else 0.0,
            "slow_call_rate": slow / calls if calls else 0.0,
        }

    # -- the call protocol, async ---------------------------------------------------------------

    def _probe_round(self, record: BreakerRecord, now: float) -> BreakerRecord:
        """The half-open record of a new probing round; ``open_until`` is its deadline."""
        return BreakerRecord(
            self.key,
            _HALF_OPEN,
            record.generation + 1,
            now + self.config.open_for(max(1, record.consecutive_opens)),
            record.consecutive_opens,
            self.config.half_open_calls - 1,
            _writer(),
        )

    def _take_probe(self, token: int) -> BreakerRecord | None:
        """The probing round a result of *token* belongs to (one permit used), or ``None``."""
        probe = self._probe
        if probe is None or probe.generation != token:
            return None
        self._probe_permits -= 1
        if self._probe_permits <= 0:
            self._probe = None
        return probe

    def _hold_probe(self, record: BreakerRecord) -> None:
        probe = self._probe
        if probe is not None and probe.generation == record.generation:
            self._probe_permits += 1
        else:
            self._probe_permits = 1
        self._probe = record

    async def aacquire(self, *, operation: str | None = None) -> int:
        if self._fallback.active:
            self._maybe_sync()
            return self.local.acquire(operation=operation)
        if not self._cache.read:
            # the first use: decide on the shared record, never on the default closed one
            # (concurrent first callers all wait for the one read)
            await self._refresh()
            if self.degraded:
                return self.local.acquire(operation=operation)
        if (
            self._cache.record.state != _CLOSED
            and self._mono() - self._synced_at >= self._refresh_interval
        ):
            await self._refresh()  # a non-closed record is worth re-reading before deciding
            if self.degraded:  # the store failed meanwhile
                return self.local.acquire(operation=operation)
        record = self._cache.record
        while True:
            state = record.state
            if state in (_CLOSED, _DISABLED):
                return record.generation
            now = self._clock.time()
            if state == _OPEN and now >= record.open_until:
                # the winner of the transition is the (first) probe
                claim = self._probe_round(record, now)
                current = await self._transition(record, claim, "open duration elapsed")
            elif state == _HALF_OPEN and record.probes_left > 0:
                claim = replace(record, probes_left=record.probes_left - 1, writer=_writer())
                current = await self._cas_record(record, claim)
            elif state == _HALF_OPEN and now >= record.open_until:
                claim = self._probe_round(record, now)
                current = await self._transition(record, claim, "probe reported no result")
            else:
                raise self._rejection(_snapshot(record), operation)
            if current is None:
                return self.local.acquire(operation=operation)
            if current.writer == claim.writer:
                self._hold_probe(claim)
                return claim.generation
            record = current  # someone else moved first: decide again on what they wrote

    def allow_probe(self, *, after: Duration) -> bool:
        """The sync form only reads the cached record: ``True`` once its open period is over,
        or while it is half-open with a probe permit left (:meth:`aallow_probe` also ends an
        open period early, through the store)."""
        snap = self._cache.snapshot if not self._fallback.active else self.local.snapshot
        if snap.state is CircuitState.HALF_OPEN:
            return snap.probes_left > 0
        return snap.state is CircuitState.OPEN and self._clock.time() >= snap.open_until

    async def aallow_probe(self, *, after: Duration) -> bool:
        """See :meth:`~antifragile.policies.CircuitBreaker.allow_probe`: the open period is ended
        early with one compare-and-set in the store, so every process sees the probe is due."""
        if self._fallback.active:
            return self.local.allow_probe(after=after)
        if not self._cache.read or (
            self._cache.record.state != _CLOSED
            and self._mono() - self._synced_at >= self._refresh_interval
        ):
            await self._refresh()
            if self.degraded:
                return self.local.allow_probe(after=after)
        wait = seconds(after)
        record = self._cache.record
        while True:
            if record.state == _HALF_OPEN:
                return record.probes_left > 0
            if record.state != _OPEN:
                return False
            now = self._clock.time()
            if now >= record.open_until:
                return True
            opened_at = record.open_until - self.config.open_for(record.consecutive_opens)
            if now - opened_at < wait:
                return False
            due = replace(record, open_until=now, writer=_writer())
            current = await self._cas_record(record, due)
            if current is None:  # the store failed: decide locally from here on
                return self.local.allow_probe(after=after)
            if current.writer == due.writer:
                return True
            record = current

    def acquire(self, *, operation: str | None = None) -> int:
        """The sync form only admits calls while the cached record is closed (or disabled)."""
        if self._fallback.active:
            return self.local.acquire(operation=operation)
        snap = self._cache.snapshot
        if snap.state is CircuitState.CLOSED or snap.state is CircuitState.DISABLED:
            return snap.generation
        raise self._rejection(snap, operation)

    def on_success(self, token: int, duration: float = 0.0) -> None:
        if token == self._fast_token and duration < self._slow_limit:
            self._successes += 1
            if self._mono() >= self._sync_due:
                self._start_sync()
            return
        self._other_success(token, duration)

    def _other_success(self, token: int, duration: float) -> None:
        if self._fallback.active:
            self.local.on_success(token, duration)
            self._maybe_sync()
            return
        slow = duration >= self._slow_limit
        probe = self._take_probe(token)
        if probe is not None:
            _spawn(self._tasks, self._probe_done(probe, failure=False, slow=slow))
            return
        record = self._cache.record
        if record.generation != token or record.state != _CLOSED:
            return  # admitted under an earlier state, or the breaker records nothing
        with self._lock:  # a slow success: counted, and written with the next batch
            self._outcomes[0] += 1
            self._outcomes[2] += slow
        self._maybe_sync()

    async def aon_failure(self, token: int, exc: BaseException, duration: float = 0.0) -> None:
        if self._fallback.active:
            self.local.on_failure(token, exc, duration)
            self._maybe_sync()
            return
        failure = self._record(exc)
        slow = duration >= self._slow_limit
        probe = self._take_probe(token)
        if probe is not None:
            await self._probe_done(probe, failure=failure, slow=slow)
            return
        if not self._count(token, failure, slow):
            return
        if failure or slow:
            await self._report()
        else:
            self._maybe_sync()

    def on_failure(self, token: int, exc: BaseException, duration: float = 0.0) -> None:
        """Sync form: counted now, written in the background (when an event loop runs)."""
        if self._fallback.active:
            self.local.on_failure(token, exc, duration)
            return
        failure = self._record(exc)
        slow = duration >= self._slow_limit
        if not self._count(token, failure, slow):
            return
        if failure or slow:
            _spawn(self._tasks, self._report())
        else:
            self._maybe_sync()

    def _count(self, token: int, failure: bool, slow: bool) -> bool:
        record = self._cache.record
        if record.generation != token or record.state != _CLOSED:
            return False
        with self._lock:
            outcomes = self._outcomes
            outcomes[0] += 1
            outcomes[1] += failure
            outcomes[2] += slow
        return True

    def release(self, token: int) -> None:
        """The admitted call ended without an outcome: give its probe permit back."""
        if self._fallback.active:
            self.local.release(token)
            return
        probe = self._probe
        if probe is None or probe.generation != token:
            return
        self._probe_permits -= 1
        if self._probe_permits <= 0:
            self._probe = None
        _spawn(self._tasks, self._return_permit(probe))

    async def _return_permit(self, probe: BreakerRecord) -> None:
        expected = probe
        while True:
            returned = replace(expected, probes_left=expected.probes_left + 1, writer=_writer())
            current = await self._cas_record(expected, returned)
            if current is None or current.writer == returned.writer:
                return
            if current.state != _HALF_OPEN or current.generation != probe.generation:
                return  # the round is over: nothing to give back
            expected = current

    async def _probe_done(self, probe: BreakerRecord, *, failure: bool, slow: bool) -> None:
        """Once all ``half_open_calls`` results of a probing round are in (counted atomically
        in the store, across processes), their rates close or re-open the breaker for
        everyone -- as a local breaker judges its probes."""
        needed = self.config.half_open_calls
        if needed > 1:
            totals = await self._call_store(
                self._store.add_probe_result(
                    self.key, generation=probe.generation, failure=failure, slow=slow
                )
            )
            if totals is None or totals.calls < needed:
                return  # the store is unavailable, or the round is still waiting for results
            failure_rate = totals.failures / totals.calls
            slow_rate = totals.slow / totals.calls
        else:
            failure_rate, slow_rate = float(failure), float(slow)
        reopen = failure_rate >= self.config.failure_rate or slow_rate >= self.config.slow_call_rate
        expected = probe
        while True:
            if reopen:
                current = await self._open_shared(expected, "probe failed", failure_rate, slow_rate)
            else:
                current = await self._close_shared(expected)
            if (
                current is None
                or current.state != _HALF_OPEN
                or current.generation != probe.generation
            ):
                return  # done (won, or the round is over), or the store is unavailable
            # lost only because the probe permits changed meanwhile (another probe of the round)
            expected = current

    async def settle(self) -> None:
        """Wait for the store writes started in the background (results of probes and of
        sync-reported calls, batches of outcomes)."""
        loop = asyncio.get_running_loop()
        while True:
            pending = [task for task in (*self._tasks, self._sync_task) if task is not None]
            pending = [task for task in pending if not task.done() and task.get_loop() is loop]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    # -- manual control ---------------------------------------------------------------------

    async def aforce(self, state: Literal["closed", "forced_open", "disabled"]) -> None:
        """Set the shared state for every process: ``"closed"`` (reset: close and forget the
        window), ``"forced_open"`` (reject every call) or ``"disabled"`` (let every call
        through, record nothing). Raises StoreUnavailableError when the store cannot be used.
        """
        target = CircuitState(state)
        if target not in (CircuitState.CLOSED, CircuitState.FORCED_OPEN, CircuitState.DISABLED):
            raise ConfigurationError(f"aforce takes closed, forced_open or disabled, not {state!r}")
        while True:
            record = await self._load()
            if record is None:
                break
            new = BreakerRecord(self.key, target.value, record.generation + 1, writer=_writer())
            current = await self._cas_record(record, new)
            if current is None:
                break
            if current.writer == new.writer:
                self._probe = None
                await self._call_store(self._store.reset_window(self.key))
                if record.state != target.value:
                    self._notify(CircuitState(record.state), target, f"set to {state}")
                return
        raise StoreUnavailableError(
            f"circuit breaker {self.name!r}: the store is unavailable; its state was not changed"
        )

    def _force(self, state: CircuitState, reason: str) -> None:
        raise ConfigurationError(
            "use `await breaker.aforce(...)` to change a shared breaker's state"
        )


class SharedTokenBucket(TokenBucket):
    """A token bucket kept in a store and shared by every process (see the module docs).

    ``key`` names the bucket in the store (default: the bucket's ``name``). While the store is
    unavailable the bucket works process-locally and tries the store again, in the background,
    at most once a second.
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
        self._store_timeout = _positive("store_timeout", store_timeout)
        self._fallback_state = _Fallback(name, "rate_limiter", clock, 1.0, self._store_timeout)
        self._probing: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def key(self) -> str:
        return self._key or self.name

    @property
    def degraded(self) -> bool:
        """Whether the bucket runs process-local because the store is unavailable."""
        return self._fallback_state.active

    def use_clock(self, clock: Clock) -> None:
        super().use_clock(clock)
        self._fallback_state.clock = clock

    def _enter_fallback(self, exc: BaseException) -> None:
        fallback = self._fallback_state
        fallback.owner = self.name
        fallback.observer = self._observer
        fallback.enter(exc)

    def _leave_fallback(self) -> None:
        fallback = self._fallback_state
        fallback.observer = self._observer
        fallback.leave()

    async def _take(self, tokens: float, max_wait: float) -> TokenGrant:
        coro = self._rate_store.take(
            self.key,
            tokens=tokens,
            rate=self.rate,
            burst=self.burst,
            max_wait=max_wait,
            now=self._clock.time(),
        )
        return await _bounded(coro, self._store_timeout)

    async def _probe_store(self) -> None:
        """Try the store without taking anything (a zero-token take changes no level)."""
        try:
            await self._take(0.0, 0.0)
        except Exception as exc:
            self._enter_fallback(exc)
        else:
            self._leave_fallback()
        finally:
            self._probing = None

    async def areserve(self, tokens: float = 1.0, operation: str | None = None) -> float:
        fallback = self._fallback_state
        if fallback.active:
            if self._probing is None and fallback.may_retry():
                fallback.since = self._clock.monotonic()
                self._probing = asyncio.get_running_loop().create_task(self._probe_store())
            return self.reserve(tokens, operation)
        try:
            grant = await self._take(tokens, self.max_wait)
        except Exception as exc:  # any store failure (a timeout too) means: go local
            self._enter_fallback(exc)
            return self.reserve(tokens, operation)
        if not grant.granted:
            raise self._rejection(grant.wait, operation)
        wait: float = grant.wait
        if wait > 0 and self._observer is not None:
            self._observer.on_event(
                LimiterWait(
                    policy=self.name,
                    operation=operation,
                    request_id=current_request_id(),
                    wait=wait,
                )
            )
        return wait

    async def aacquire(self, tokens: float = 1.0, *, operation: str | None = None) -> None:
        """Take *tokens* from the shared bucket, suspending the task if needed; a wait that
        is cancelled gives the tokens back (see :meth:`refund`)."""
        wait = await self.areserve(tokens, operation)
        if wait > 0:
            try:
                await self._clock.asleep(wait)
            except BaseException:
                self.refund(tokens)
                raise

    def refund(self, tokens: float = 1.0) -> None:
        """Give back tokens reserved for a call that was then not made.

        They go back to the bucket they came from: to the store -- atomically, in the
        background, so a cancelled caller does not wait for it (:meth:`settle` does) -- or,
        while the store is unavailable, to the process-local bucket.
        """
        if self._fallback_state.active:
            super().refund(tokens)
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no event loop: nothing was taken from the store here
            super().refund(tokens)
            return
        coro = self._rate_store.refund(
            self.key, tokens=tokens, rate=self.rate, burst=self.burst, now=self._clock.time()
        )
        _spawn(self._tasks, _quiet(_bounded(coro, self._store_timeout)))

    async def settle(self) -> None:
        """Wait for the store writes started in the background (refunds and pauses)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _rejection(self, wait: float, operation: str | None) -> RateLimitedError:
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
        return RateLimitedError(
            f"rate limiter {self.name!r}: next token in {wait:.2f}s, beyond max_wait "
            f"{self.max_wait:g}s",
            provider=self.name,
            operation=operation,
            retry_after=wait,
            local=True,
        )

    def pause(self, seconds: float) -> None:
        """Pause here at once, and in the store for every process (in the background)."""
        super().pause(seconds)
        if seconds <= 0 or self._fallback_state.active:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no event loop: the pause stays local
            return
        coro = self._rate_store.pause(
            self.key, seconds=seconds, rate=self.rate, burst=self.burst, now=self._clock.time()
        )
        _spawn(self._tasks, _quiet(_bounded(coro, self._store_timeout)))


async def _quiet(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        _log.debug("could not write a rate-limit refund or pause to the store", exc_info=True)
