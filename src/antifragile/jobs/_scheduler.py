"""Periodic jobs: ``@jobs.every("*/5 * * * *")``, and the scheduler that enqueues their ticks.

::

    @jobs.every("0 * * * *", catch_up="latest")
    async def nudge_inactive(ctx: JobContext) -> None: ...

    async with jobs:
        await Scheduler(jobs).run()          # or: antifragile scheduler --app myapp:jobs

A schedule is a job like any other (declared under the schedule's name, run by workers, retried,
dead-lettered); the :class:`Scheduler` only *enqueues* it, once per tick of its cron expression.

**Each tick fires exactly once, however many schedulers run.** The job of a tick carries the
idempotency key ``cron:<name>:<tick>`` (the tick in whole epoch seconds), and the queue creates
at most one job per key, in one atomic statement. So any number of scheduler processes may run
side by side -- for availability, or simply one per host -- with no leader election and no
lock: they all try to enqueue a due tick, one insert wins, the others find the job already there
(``created=False``). A scheduler that dies costs nothing as long as another runs; when none was
running, the catch-up policy decides what happens to the ticks it missed.

**Catch-up** (``catch_up=``, per schedule). A due tick is *on time* while it is at most
``grace`` seconds old (a scheduler option, by default ``max(10 s, 3 * tick_interval)``); on-time
ticks always fire. Older due ticks were *missed*, because no scheduler was running:

* ``"latest"`` (default) fires the most recent missed tick only, and none at all when an on-time
  tick fires -- after an outage the job runs once, not once per missed tick;
* ``"all"`` fires each missed tick, oldest first, at most ``max_catch_up`` of them (100 by
  default; the most recent ones, older ones are skipped and logged);
* ``"none"`` skips them; the job runs at its next tick.

**State.** Per schedule, the scheduler records the newest tick it dealt with (fired or skipped)
in the key-value store beside the queue (key ``scheduler:<name>``, a JSON object with
``last_tick``), so catch-up knows after a restart which ticks were missed. The record only ever
moves forward (compare-and-set). A schedule seen for the first time starts one
``tick_interval`` before *now*: declaring a schedule does not replay its past. The record saves
work (a pass with nothing due reads one key and writes nothing); correctness does not depend on
it, since the idempotency key alone prevents a tick from being enqueued twice -- as long as the
tick's job has not been purged, which happens days later, long after every scheduler moved past
the tick.

The tick is the job's payload (``ctx.job.payload["tick"]``) and part of its idempotency key
(``ctx.idempotency_key``), so a job that calls providers with that key has one effect per tick.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypedDict

from typing_extensions import TypeVar

from antifragile.errors import ConfigurationError
from antifragile.jobs._cron import MAX_CATCH_UP, CatchUp, Cron, check_catch_up, due_ticks
from antifragile.jobs._function import JobContext, JobFunction
from antifragile.jobs._liveness import BEAT_INTERVAL, Presence
from antifragile.jobs._policy import DEFAULT_JOB_RETRY
from antifragile.jobs._retention import Pruned, Retention, prune
from antifragile.observability import current_request_id, request_context
from antifragile.policies import Clock, Retry
from antifragile.stores import KeyValueStore

if TYPE_CHECKING:
    from antifragile.jobs._app import Jobs

_log = logging.getLogger("antifragile.jobs.scheduler")

#: the attribute on a periodic job's function that names its schedule
_SCHEDULE_ATTR = "__antifragile_schedule__"
#: key prefix of the per-schedule records in the key-value store
RECORD_PREFIX = "scheduler:"

#: what a periodic job returns (``Any`` where a schedule is named without it)
R = TypeVar("R", default=Any)

#: the function ``@jobs.every(...)`` decorates: ``async def f(ctx: JobContext) -> R``
PeriodicFunction = Callable[[JobContext], Awaitable[R]]


@dataclass(frozen=True, slots=True, eq=False)
class Schedule(Generic[R]):
    """A periodic job: its cron expression, catch-up policy and the job it enqueues.

    Returned by ``@jobs.every(...)``. ``function`` is the job declared under the schedule's
    name (its payload is the tick); calling the schedule runs the decorated function directly,
    and returns what it returns (``R``).
    """

    name: str
    cron: Cron
    catch_up: CatchUp
    max_catch_up: int
    function: JobFunction[..., R]
    fn: PeriodicFunction[R]

    @property
    def expression(self) -> str:
        return self.cron.expression

    @property
    def timezone(self) -> str:
        return self.cron.timezone

    def key(self, tick: int) -> str:
        """The idempotency key of the job of *tick*."""
        return f"cron:{self.name}:{tick}"

    def next_tick(self, after: float) -> int:
        """The first tick strictly after *after* (epoch seconds)."""
        return self.cron.next_after(after)

    async def __call__(self, ctx: JobContext) -> R:
        return await self.fn(ctx)

    def __repr__(self) -> str:
        return (
            f"Schedule({self.name!r}, {self.expression!r}, timezone={self.timezone!r}, "
            f"catch_up={self.catch_up!r})"
        )


def every(
    jobs: Jobs,
    cron: str,
    *,
    name: str | None = None,
    queue: str = "default",
    catch_up: CatchUp = "latest",
    timezone: str = "UTC",
    retry: Retry = DEFAULT_JOB_RETRY,
    timeout: float | None = 300.0,
    priority: int = 0,
    provider: str | None = None,
    max_catch_up: int = MAX_CATCH_UP,
) -> Callable[[PeriodicFunction[R]], Schedule[R]]:
    """Declare a periodic job on *jobs* (what ``@jobs.every(...)`` does).

    *cron* has five fields, or six with a trailing seconds field, evaluated in *timezone*; an
    invalid expression, time zone or policy raises ConfigurationError here, at declaration.
    *name* defaults to the function's name and is also the job's name. *catch_up* and
    *max_catch_up*: see the module docs. The other options are those of ``@jobs.job``.
    """
    parsed = Cron(cron, timezone)
    check_catch_up(catch_up, max_catch_up)

    def register(fn: PeriodicFunction[R]) -> Schedule[R]:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError("a periodic job must be an async def taking the context")
        schedule_name = name or getattr(fn, "__name__", None)
        if not schedule_name:
            raise ConfigurationError("cannot name this schedule: pass name=")

        async def periodic(ctx: JobContext, tick: int) -> R:
            return await fn(ctx)

        periodic.__name__ = schedule_name
        periodic.__qualname__ = getattr(fn, "__qualname__", schedule_name)
        periodic.__doc__ = fn.__doc__
        function = jobs.job(
            schedule_name,
            queue=queue,
            retry=retry,
            timeout=timeout,
            priority=priority,
            provider=provider,
        )(periodic)
        schedule = Schedule(
            name=schedule_name,
            cron=parsed,
            catch_up=catch_up,
            max_catch_up=max_catch_up,
            function=function,
            fn=fn,
        )
        setattr(periodic, _SCHEDULE_ATTR, schedule)
        return schedule

    return register


def schedules_of(jobs: Jobs) -> list[Schedule[Any]]:
    """The schedules declared on *jobs*, by name."""
    found: list[Schedule[Any]] = []
    for function in jobs.registry.values():
        schedule = getattr(function.fn, _SCHEDULE_ATTR, None)
        if isinstance(schedule, Schedule):
            found.append(schedule)
    return sorted(found, key=lambda s: s.name)


@dataclass(frozen=True, slots=True)
class Fired:
    """One tick a scheduler pass enqueued: ``created`` is ``False`` when another scheduler had
    enqueued it already (the job is then that one)."""

    schedule: str
    tick: int
    job_id: str
    created: bool


class _Records:
    """The per-schedule ``last_tick`` records, in the key-value store."""

    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    async def last_tick(self, schedule: Schedule[Any], *, now: float) -> float | None:
        record = await self.kv.get(RECORD_PREFIX + schedule.name, now=now)
        if record is None or not isinstance(record.value, dict):
            return None
        value = record.value.get("last_tick")
        return float(value) if isinstance(value, int | float) else None

    async def advance(self, schedule: Schedule[Any], tick: float, *, now: float) -> None:
        """Record *tick* unless a newer one is recorded already (compare-and-set, retried)."""
        key = RECORD_PREFIX + schedule.name
        value = {
            "last_tick": tick,
            "cron": schedule.expression,
            "timezone": schedule.timezone,
            "updated_at": now,
        }
        for _ in range(10):
            current = await self.kv.get(key, now=now)
            if current is not None and isinstance(current.value, dict):
                recorded = current.value.get("last_tick")
                if isinstance(recorded, int | float) and recorded >= tick:
                    return
            written = await self.kv.compare_and_set(
                key, value, expected_version=None if current is None else current.version, now=now
            )
            if written is not None:
                return
        _log.warning("schedule %r: could not record tick %s (too much contention)", key, tick)


def _kv_of(jobs: Jobs) -> KeyValueStore:
    """The key-value store of the database the queue lives in."""
    store = getattr(jobs.queue, "store", None)  # JobQueue.store; tolerate a queue without one
    kv = getattr(store, "kv", None)
    if not isinstance(kv, KeyValueStore):
        raise ConfigurationError(
            "the scheduler keeps its records in the key-value store beside the job queue; this "
            "queue has none: pass Scheduler(..., store=<a KeyValueStore>)"
        )
    return kv


class SchedulerOptions(TypedDict, total=False):
    """The keyword options of :class:`Scheduler`, each optional (see the class for their
    meaning); ``assistant.scheduler(**options)`` takes them."""

    tick_interval: float
    clock: Clock | None
    grace: float | None
    store: KeyValueStore | None
    schedules: Sequence[Schedule[Any]] | None
    on_fired: Callable[[Fired], None] | None
    retention: Retention | None


class Scheduler:
    """Enqueues the ticks of every schedule declared on *jobs* (see the module docs).

    ``await run()`` loops until :meth:`stop`: a pass, then a sleep until the next tick of any
    schedule (at most *tick_interval* seconds). :meth:`run_once` is one pass at a given time
    (tests drive it with a :class:`~antifragile.FakeClock`'s time). Both open *jobs* when
    needed; closing them stays the caller's business.

    *grace*: how late a tick may be and still count as on time (seconds; by default
    ``max(10, 3 * tick_interval)``). *store*: where the per-schedule records live (by default
    the key-value store of the queue's database). *schedules*: a subset to run (by default all
    of *jobs*' schedules). *on_fired* is called with each tick a pass enqueued.

    While :meth:`run` runs, the scheduler keeps a heartbeat row (:attr:`presence`, see
    :mod:`antifragile.jobs._liveness`) and, every ``retention.interval`` seconds of its clock,
    deletes what *retention* no longer keeps (:meth:`prune`; ``None``: never).
    """

    def __init__(
        self,
        jobs: Jobs,
        *,
        tick_interval: float = 1.0,
        clock: Clock | None = None,
        grace: float | None = None,
        store: KeyValueStore | None = None,
        schedules: Sequence[Schedule[Any]] | None = None,
        on_fired: Callable[[Fired], None] | None = None,
        retention: Retention | None = Retention(),  # noqa: B008 (frozen, shared safely)
    ) -> None:
        if not tick_interval > 0:
            raise ConfigurationError(f"tick_interval must be > 0 seconds, got {tick_interval!r}")
        if grace is not None and not grace >= 0:
            raise ConfigurationError(f"grace must be >= 0 seconds, got {grace!r}")
        self.jobs = jobs
        self.clock = clock or jobs.clock
        self.tick_interval = float(tick_interval)
        self.grace = max(10.0, 3 * self.tick_interval) if grace is None else float(grace)
        self._store = store
        self._records: _Records | None = None
        self._schedules = None if schedules is None else list(schedules)
        self.on_fired = on_fired
        self.retention = retention
        self._stop = asyncio.Event()
        self.presence = Presence(
            lambda: self.jobs.queue, kind="scheduler", clock=self.clock, interval=BEAT_INTERVAL
        )
        self._pruned_at: float | None = None

    @property
    def schedules(self) -> list[Schedule[Any]]:
        if self._schedules is not None:
            return list(self._schedules)
        return schedules_of(self.jobs)

    def _records_store(self) -> _Records:
        if self._records is None:
            self._records = _Records(self._store or _kv_of(self.jobs))
        return self._records

    async def run_once(self, now: float | None = None) -> list[Fired]:
        """One pass at *now* (wall-clock epoch seconds; the clock's time by default): enqueue
        the due ticks of every schedule and record them. Returns the ticks enqueued.

        A pass has a request id (the current one, else a new one): its log records and the
        jobs it enqueues carry it."""
        with request_context(current_request_id()):
            return await self._run_once(now)

    async def _run_once(self, now: float | None) -> list[Fired]:
        await self.jobs.open()
        now = self.clock.time() if now is None else now
        records = self._records_store()
        fired: list[Fired] = []
        for schedule in self.schedules:
            last = await records.last_tick(schedule, now=now)
            after = now - self.tick_interval if last is None else last
            due = due_ticks(
                schedule.cron,
                after=after,
                now=now,
                grace=self.grace,
                catch_up=schedule.catch_up,
                max_catch_up=schedule.max_catch_up,
            )
            if due.skipped:
                _log.warning(
                    "schedule %r: skipped %s missed tick(s) (catch_up=%r)",
                    schedule.name,
                    f"{due.skipped}+" if due.skipped >= 1000 else due.skipped,
                    schedule.catch_up,
                )
            batch = [
                schedule.function.configure(
                    idempotency_key=schedule.key(tick), run_at=float(tick)
                ).prepare(tick=tick)
                for tick in due.fire
            ]
            # one transaction for the schedule's due ticks (catch-up may fire many)
            for tick, enqueued in zip(due.fire, await self.jobs.enqueue_many(batch), strict=True):
                done = Fired(schedule.name, tick, enqueued.id, enqueued.created)
                fired.append(done)
                if enqueued.created:
                    _log.info("schedule %r: enqueued tick %d", schedule.name, tick)
                if self.on_fired is not None:
                    self.on_fired(done)
            if due.last_tick is not None:
                await records.advance(schedule, due.last_tick, now=now)
            elif last is None:
                await records.advance(schedule, after, now=now)  # the starting point
        return fired

    def next_wakeup(self, now: float) -> float:
        """When the loop passes next: the next tick of any schedule, at most *tick_interval*
        seconds from *now*."""
        wake = now + self.tick_interval
        for schedule in self.schedules:
            wake = min(wake, float(schedule.next_tick(now)))
        return wake

    async def run(self) -> None:
        """Pass, then sleep until the next tick, until :meth:`stop` is called.

        A failed pass (the database unreachable, say) is logged and tried again at the next
        wakeup: the ticks it could not enqueue are still due then, and fire if still on time
        (or per the catch-up policy)."""
        self._stop.clear()
        if not self.schedules:
            _log.warning("the scheduler has no schedules to run")
        try:
            while not self._stop.is_set():
                try:
                    await self.run_once()
                    await self.presence.beat()
                    await self._prune_when_due()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    _log.exception("scheduler pass failed; trying again at the next wakeup")
                now = self.clock.time()
                # wake a little after the tick, never before it
                delay = max(0.0, self.next_wakeup(now) - now) + 0.005
                await self._sleep(delay)
        finally:
            await self.presence.leave()

    async def prune(self, now: float | None = None) -> Pruned:
        """Delete what the retention no longer keeps at *now* (the clock's time by default)."""
        if self.retention is None:
            return Pruned()
        await self.jobs.open()
        pruned = await prune(
            self.jobs.queue, self.retention, now=self.clock.time() if now is None else now
        )
        if pruned.succeeded or pruned.resolved or pruned.processes:
            _log.info("retention: deleted %s", pruned.to_json())
        return pruned

    async def _prune_when_due(self) -> None:
        if self.retention is None:
            return
        moment = self.clock.monotonic()
        if self._pruned_at is not None and moment - self._pruned_at < self.retention.interval:
            return
        self._pruned_at = moment
        await self.prune()

    async def _sleep(self, delay: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.asleep(delay))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                if not task.done():
                    task.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    def stop(self) -> None:
        """Ask :meth:`run` to return (after the pass in progress, if any)."""
        self._stop.set()
