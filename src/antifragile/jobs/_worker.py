"""The worker: claims jobs with a lease, runs them concurrently, reports their outcomes.

One loop, on one event loop::

    flush finished outcomes (one ``complete`` call for the batch)
      -> claim up to the free slots (one ``claim`` call per batch) -> start a task per job
      -> wait until a job finishes, jobs arrive, the next delayed job falls due, the poll
         interval passes, or stop() is called

* **Leases.** Claimed jobs are leased to this worker for ``lease`` seconds; a heartbeat task
  renews the leases of running jobs every ``heartbeat`` seconds. A worker that dies stops
  renewing, and its jobs are claimed again by any worker once their leases run out. A job whose
  lease this worker lost (another worker took it over) is cancelled here, and its outcome is
  dropped by the queue.
* **Batched outcomes.** Outcomes of finished jobs are collected and recorded together before
  the next claim (after a short ``linger`` when the worker was idle), so a busy worker costs
  two statements per batch of jobs, not two per job. A queue that can record them in the
  claim's own transaction (SQLite: ``complete_and_claim``) does, when no breaker or queue limit
  needs a look in between: one commit per batch.
* **Prefetch.** When jobs are short, the worker claims a few more than its free slots and keeps
  them leased in a local buffer, so that claims come in full batches: by default (``prefetch=None``)
  as many as would all start within about 50 ms at the measured pace (at most ``batch``); none
  while jobs take long, so a busy worker never sits on jobs another worker could run. The
  buffer's share fills up the statement that claims for the free slots (never a statement of
  its own), and the buffer is topped up once it has run half empty, not job by job. Buffered
  jobs' leases are renewed like running ones'; a stopping worker releases them at once.
* **Wake-ups.** An idle worker does not wait for its next poll to see new work: it listens
  to its queue (PostgreSQL ``LISTEN``/``NOTIFY``; on SQLite a direct call in one process and a
  datagram across processes; see :mod:`antifragile.jobs._wakeup`) and claims as soon as jobs
  are committed, and it sleeps only until the earliest delayed or retried job falls due.
  ``poll_interval`` bounds every wait all the same: it is the fallback when a wake-up is lost.
* **Limits.** ``concurrency`` bounds the jobs in flight; ``queue_concurrency`` bounds them per
  queue and ``queue_rates`` (token buckets) paces the starts per queue -- the worker claims
  from a limited queue no more jobs than it may start now.
* **Breakers.** Before running a job of a provider whose breaker (``jobs.breakers``) is open,
  the worker defers it to the moment the breaker half-opens; no attempt is counted. A job that
  fails with :class:`~antifragile.CircuitOpenError` is deferred alike; one that meets a
  half-open breaker whose probe is out waits only for the probe (about a second).
* **Recovery.** While a provider's breaker is open the worker lets one job probe it every
  ``probe_interval`` seconds (1 s), whatever the breaker's open duration
  (:meth:`~antifragile.CircuitBreaker.allow_probe`, then
  :meth:`~antifragile.jobs.JobQueue.wake_deferred` with ``limit=1``): the probes are the only
  requests a dead provider sees, and the first success comes within about a second of its
  return. When the breaker closes, every job deferred by that provider's breaker or rate
  limiter becomes due at once (one statement); they drain at the pace the provider's limiter
  allows -- waiting for a token never costs a job an attempt (a token beyond ``max_wait``
  defers the job to when it is there). Jobs in their own back-off after a real failure keep
  their time.
* **Failures.** :func:`~antifragile.jobs._policy.decide_failure` picks retry (with back-off or
  the provider's ``Retry-After``), defer or dead; the attempt (time, duration, code, redacted
  message, HTTP status) joins the job's history.
* **Context.** Each job runs in the context it was enqueued with
  (:func:`~antifragile.observability.activate`): the request id of the request that caused it
  is current again -- a new one when it has none --, so its outbound calls send it as
  ``x-request-id``, its errors and log records carry it, and the jobs it enqueues inherit it;
  registered activators (trace context) wrap the run too.
* **Stopping.** :meth:`Worker.stop` (SIGTERM or SIGINT under the CLI) stops claiming, gives
  running jobs ``shutdown_grace`` seconds to finish, then cancels the rest and releases them
  (claimable again at once, no attempt counted). A second stop releases at once.

Timestamps written to the queue (``now``, run times, leases) come from the jobs' clock, so a
:class:`~antifragile.FakeClock` drives schedules and lease expiry in tests. Pacing -- the poll
interval, the heartbeat period, the linger -- runs on the event loop's own timer.
:meth:`Worker.run_until_idle` never waits on a timer: it runs every job that is due *now* and
returns, which lets a test advance a fake clock between calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import signal
import socket
import uuid
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import pydantic_core

from antifragile.errors import AntifragileError, ConfigurationError, ErrorCode, RateLimitedError
from antifragile.jobs._function import JobContext, JobFunction
from antifragile.jobs._liveness import Presence
from antifragile.jobs._model import Job, Outcome
from antifragile.jobs._policy import (
    DEFAULT_JOB_RETRY,
    PROBE_WAIT,
    decide_failure,
    describe_error,
    previous_delay,
)
from antifragile.observability import (
    AttemptFinished,
    GaveUp,
    JobFinished,
    JobStarted,
    RetryScheduled,
    activate,
    current_request_id,
)
from antifragile.policies import CircuitState, TokenBucket
from antifragile.policies._timeout import TimeoutScope, Watchdog, watchdog

if TYPE_CHECKING:
    from antifragile.jobs._app import Jobs

_log = logging.getLogger("antifragile.jobs.worker")
#: the logger of the jobs' own records (``ctx.logger``) and of their failed attempts
_run_log = logging.getLogger("antifragile.jobs.run")

#: how often a worker that has no queue list refreshes the names of the queues (seconds)
DISCOVER_INTERVAL = 2.0
#: automatic prefetch keeps no more buffered jobs than would all start within this (seconds)
PREFETCH_HORIZON = 0.05
#: how often a worker lets a job probe a provider whose breaker is open (seconds)
PROBE_INTERVAL = 1.0
#: an idle worker wakes this long after the earliest delayed job's run_at (seconds), so that
#: its claim sees the job due whatever the timer's rounding
DUE_MARGIN = 0.001
#: breaker states in which the worker holds a provider's jobs back
_HOLDING = frozenset({CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.FORCED_OPEN})


class _JobTimeout(AntifragileError):
    default_code = ErrorCode.TIMEOUT
    default_retryable = True


def _timed_out(dog: Watchdog, scope: TimeoutScope) -> bool:
    """End *scope*; whether its deadline cancelled its task and nothing else did (then the
    cancellation is the timeout's own: ``asyncio.timeout``'s rule)."""
    dog.exit(scope)
    return scope.expired and scope.task.uncancel() == 0


def _jsonable(value: Any) -> Any:
    try:
        return pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError:
        return repr(value)[:1000]


class WorkerOptions(TypedDict, total=False):
    """The keyword options of :class:`Worker`, each optional (see the class for their meaning).

    ``jobs.worker(**options)`` and ``assistant.worker(**options)`` take them, so a misspelt or
    mistyped option is a type error where the worker is made, not only when it starts.
    """

    queues: Sequence[str] | None
    concurrency: int
    lease: float
    heartbeat: float
    poll_interval: float
    batch: int
    prefetch: int | None
    queue_concurrency: Mapping[str, int] | None
    queue_rates: Mapping[str, TokenBucket] | None
    shutdown_grace: float
    linger: float
    name: str | None
    seed: int | None
    max_lost_leases: int
    probe_interval: float | None


class Worker:
    """Runs the jobs of a :class:`~antifragile.jobs.Jobs` registry from its queue.

    *queues* limits the queues it claims from (``None``: all); *concurrency* bounds the jobs in
    flight; *lease* is how long a claim lasts without a heartbeat and *heartbeat* how often
    running jobs' leases are renewed (seconds, ``heartbeat < lease``); *poll_interval* how long
    an idle worker waits before looking again; *batch* the most jobs claimed or completed in one
    call; *prefetch* how many claimed jobs may wait in a local buffer (``None``: adapt to the
    jobs' measured duration; ``0``: never buffer); *queue_concurrency* and *queue_rates* limit
    queues one by one (their jobs are never buffered); *shutdown_grace* how long :meth:`stop`
    lets running jobs finish before releasing them; *max_lost_leases* how many times a job may
    lose its worker (a crash, a kill, a stall past the lease) before it is dead-lettered
    instead of run again -- lost runs are recorded as ``LEASE_EXPIRED`` but are not attempts;
    *probe_interval* how often a job may probe a provider whose breaker is open (seconds;
    ``None``: only when the breaker's own open duration ends).
    """

    def __init__(
        self,
        jobs: Jobs,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 10,
        lease: float = 30.0,
        heartbeat: float = 10.0,
        poll_interval: float = 0.2,
        batch: int = 50,
        prefetch: int | None = None,
        queue_concurrency: Mapping[str, int] | None = None,
        queue_rates: Mapping[str, TokenBucket] | None = None,
        shutdown_grace: float = 30.0,
        linger: float = 0.002,
        name: str | None = None,
        seed: int | None = None,
        max_lost_leases: int = 5,
        probe_interval: float | None = PROBE_INTERVAL,
    ) -> None:
        if not isinstance(max_lost_leases, int) or max_lost_leases < 1:
            raise ConfigurationError(
                f"max_lost_leases must be an int >= 1, got {max_lost_leases!r}"
            )
        self.max_lost_leases = max_lost_leases
        if probe_interval is not None and not probe_interval > 0:
            raise ConfigurationError(f"probe_interval must be > 0 seconds, got {probe_interval!r}")
        self.probe_interval = probe_interval
        #: per provider: the breaker state seen last, and (generation, loop time) of the last
        #: job woken to probe it
        self._breaker_seen: dict[str, CircuitState] = {}
        self._probe_woken: dict[str, tuple[int, float]] = {}
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an int >= 1, got {concurrency!r}")
        if not isinstance(batch, int) or batch < 1:
            raise ConfigurationError(f"batch must be an int >= 1, got {batch!r}")
        if not lease > 0 or not heartbeat > 0 or not heartbeat < lease:
            raise ConfigurationError(
                f"need 0 < heartbeat < lease, got heartbeat={heartbeat!r}, lease={lease!r}"
            )
        if not poll_interval > 0:
            raise ConfigurationError("poll_interval must be > 0 seconds")
        if not shutdown_grace >= 0 or not linger >= 0:
            raise ConfigurationError("shutdown_grace and linger must be >= 0 seconds")
        if prefetch is not None and (not isinstance(prefetch, int) or prefetch < 0):
            raise ConfigurationError(f"prefetch must be None or an int >= 0, got {prefetch!r}")
        for queue, limit in (queue_concurrency or {}).items():
            if not isinstance(limit, int) or limit < 1:
                raise ConfigurationError(f"queue_concurrency[{queue!r}] must be an int >= 1")
        self.jobs = jobs
        self.queues = list(queues) if queues else None
        self.concurrency = concurrency
        self.lease = float(lease)
        self.heartbeat = float(heartbeat)
        self.poll_interval = float(poll_interval)
        self.batch = batch
        self.prefetch = prefetch
        self.shutdown_grace = float(shutdown_grace)
        self.linger = float(linger)
        self.queue_concurrency = dict(queue_concurrency or {})
        self.queue_rates = dict(queue_rates or {})
        self.id = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: outcomes recorded so far, by kind (succeeded, retry, defer, dead, release)
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._limited = sorted(
            q
            for q in {*self.queue_concurrency, *self.queue_rates}
            if self.queues is None or q in self.queues
        )
        self._running: dict[str, asyncio.Task[None]] = {}
        self._ready: deque[Job] = deque()  # claimed (leased), waiting for a free slot
        self._pace: float | None = None  # moving average of a job's duration (loop seconds)
        self._per_queue: Counter[str] = Counter()
        self._lost: set[str] = set()
        self._outcomes: list[Outcome] = []
        #: until when (loop time) held outcomes may wait for the next claim (see _hold)
        self._hold_until: float | None = None
        self._hold_timer: asyncio.TimerHandle | None = None  # wakes the loop when it ends
        self._wake: asyncio.Event | None = None
        self._active = False
        self._stopping = False
        self._release_now = False
        self._known: list[str] | None = None
        self._known_at = 0.0
        self._failures = 0  # consecutive store failures (claim or complete)
        #: the worker's heartbeat row (written while :meth:`run` runs, every *heartbeat*
        #: seconds of the jobs' clock)
        self.presence = Presence(
            lambda: self.jobs.queue,
            kind="worker",
            clock=jobs.clock,
            queues=self.queues,
            interval=self.heartbeat,
            id=self.id,
        )
        self._present = False

    def __repr__(self) -> str:
        return f"Worker({self.id!r}, running={len(self._running)})"

    @property
    def running(self) -> int:
        """Jobs in flight right now."""
        return len(self._running)

    # -- control ------------------------------------------------------------------------------

    def stop(self, *, release: bool = False) -> None:
        """Stop claiming; let running jobs finish within ``shutdown_grace``, then release the
        rest. With ``release=True`` (or on a second call) release running jobs at once."""
        if self._stopping or release:
            self._release_now = True
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            _log.warning("%s again: releasing %d running job(s) now", name, len(self._running))
        else:
            _log.info(
                "%s: finishing %d running job(s) (up to %gs), claiming no more",
                name,
                len(self._running),
                self.shutdown_grace,
            )
        self.stop()

    async def run(self, *, handle_signals: bool = False) -> None:
        """Run until :meth:`stop` is called (or, with *handle_signals*, SIGTERM or SIGINT)."""
        await self.jobs.open()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._on_signal, int(sig))
                    installed.append(sig)
        _log.info("worker %s started (queues: %s)", self.id, ", ".join(self.queues or ["all"]))
        self._present = True
        await self.presence.beat(force=True)
        try:
            await self._loop(until_idle=False)
        finally:
            self._present = False
            await self.presence.leave()
            for sig in installed:
                loop.remove_signal_handler(sig)
            _log.info("worker %s stopped: %s", self.id, dict(self.counts))

    async def run_until_idle(self) -> int:
        """Run every job that is due now -- including retries due at once -- and return when
        none is left and none is running; the number of outcomes recorded (for tests)."""
        await self.jobs.open()
        before = sum(self.counts.values())
        await self._loop(until_idle=True)
        return sum(self.counts.values()) - before

    # -- the loop -----------------------------------------------------------------------------

    async def _loop(self, *, until_idle: bool) -> None:
        if self._active:
            raise ConfigurationError(f"worker {self.id!r} is already running")
        self._active = True
        self._wake = asyncio.Event()
        if self._stopping:
            self._wake.set()
        beats = asyncio.create_task(self._heartbeats(), name=f"heartbeat:{self.id}")
        try:
            async with contextlib.AsyncExitStack() as stack:
                listen = None if until_idle else getattr(self.jobs.queue, "wakeups", None)
                if listen is not None:  # woken when jobs arrive; polling stays the fallback
                    # (by jobs of the queues it serves, where the queue can tell them apart)
                    served = {} if self.queues is None else {"queues": self.queues}
                    await stack.enter_async_context(listen(self._wake.set, **served))
                await self._main(until_idle)
        except BaseException:
            self._release_now = True
            raise
        finally:
            try:
                await self._shutdown()
            finally:
                beats.cancel()
                await asyncio.gather(beats, return_exceptions=True)
                self._end_hold()
                self._active = False
                self._stopping = self._release_now = False

    async def _main(self, until_idle: bool) -> None:
        wake = self._wake
        assert wake is not None
        while not self._stopping:
            wake.clear()
            # the outcomes go with the next claim when the queue records both at once
            carry = (
                not self.jobs.breakers
                and not self._limited
                and getattr(self.jobs.queue, "complete_and_claim", None) is not None
            )
            if self._outcomes and not carry and not await self._flush(raise_errors=until_idle):
                await self._pause()
                continue
            if self.jobs.breakers:
                await self._watch_breakers(raise_errors=until_idle)
            started = await self._claim_round(
                raise_errors=until_idle, carry=carry, hold=carry and not until_idle
            )
            if started < 0:  # the store failed
                await self._pause()
                continue
            if started:
                await asyncio.sleep(0)  # let the new tasks start (no-op jobs finish here)
                continue
            if until_idle:
                if not self._running and not self._outcomes and not self._ready:
                    return
                if self._outcomes:
                    continue
                await wake.wait()
                continue
            if self._outcomes and self._hold_until is not None:
                await wake.wait()  # held: until a job finishes or the hold ends (its timer)
                continue
            free = self.concurrency - len(self._running)
            timeout = await self._idle_timeout() if free > 0 else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
            if self._running and self.linger and len(self._outcomes) < self.batch:
                await asyncio.sleep(self.linger)  # let a few more finish: one batch

    async def _idle_timeout(self) -> float:
        """How long an idle worker waits: until the earliest delayed or retried job falls due
        (when the queue can tell), at most the poll interval."""
        next_due = getattr(self.jobs.queue, "next_due", None)
        if next_due is None:
            return self.poll_interval
        clock = self.jobs.clock
        try:
            due: float | None = await next_due(now=clock.time())
        except Exception as exc:  # the claim that follows will report a failing store
            _log.debug("reading the next due time failed: %s", exc)
            return self.poll_interval
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.0, due - clock.time()) + DUE_MARGIN)

    async def _pause(self) -> None:
        """After a store failure: wait a little longer each time (up to 5 s)."""
        delay = min(5.0, self.poll_interval * 2 ** min(self._failures, 10))
        wake = self._wake
        if wake is None:
            return
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), delay)

    async def _shutdown(self) -> None:
        """Let running jobs finish within the grace period, release the others, flush."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.shutdown_grace
        wake = self._wake
        while self._ready:  # never started: back to the queue at once
            self._outcomes.append(Outcome(self._ready.popleft().id, "release"))
        while self._running and not self._release_now and wake is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            wake.clear()
            if self._outcomes:
                await self._flush(raise_errors=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), remaining)
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            _log.info("releasing %d unfinished job(s)", len(tasks))
            await asyncio.gather(*tasks, return_exceptions=True)
        for attempt in range(5):
            if not self._outcomes or await self._flush(raise_errors=False):
                break
            await asyncio.sleep(0.05 * 2**attempt)
        if self._outcomes:
            _log.error(
                "could not record %d outcome(s); their jobs run again when their leases expire",
                len(self._outcomes),
            )
            self._outcomes.clear()

    # -- recovery -----------------------------------------------------------------------------

    async def _watch_breakers(self, *, raise_errors: bool) -> None:
        """Wake a provider's deferred jobs when its breaker closed; wake one to probe it while
        it is open (see the module docs)."""
        loop_now = asyncio.get_running_loop().time()
        interval = self.probe_interval
        for provider, breaker in list(self.jobs.breakers.items()):
            state = breaker.state
            before = self._breaker_seen.get(provider)
            self._breaker_seen[provider] = state
            limit: int | None
            if state is CircuitState.CLOSED or state is CircuitState.DISABLED:
                self._probe_woken.pop(provider, None)
                if before not in _HOLDING:
                    continue
                limit = None
            elif (
                state is CircuitState.FORCED_OPEN
                or interval is None
                or not await breaker.aallow_probe(after=interval)
            ):
                continue
            else:
                generation = breaker.snapshot.generation
                last = self._probe_woken.get(provider)
                if last is not None and last[0] == generation and loop_now < last[1]:
                    continue  # a job was woken for this probe already
                limit = 1
            try:
                woken = await self.jobs.queue.wake_deferred(
                    provider, now=self.jobs.clock.time(), limit=limit
                )
            except Exception as exc:
                if raise_errors:
                    raise
                _log.warning("waking the deferred jobs of %s failed: %s", provider, exc)
                continue
            if limit is None:
                if woken:
                    _log.info("%s is back: %d deferred job(s) due now", provider, woken)
                continue
            # look again after a while if the woken job never probed (or none was waiting)
            patience = (interval or PROBE_INTERVAL) * (10 if woken else 1)
            self._probe_woken[provider] = (breaker.snapshot.generation, loop_now + patience)

    # -- claiming -----------------------------------------------------------------------------

    def _prefetch_target(self) -> int:
        if self._stopping:
            return 0
        if self.prefetch is not None:
            return self.prefetch
        if self._pace is None:
            return 0
        return min(self.batch, int(self.concurrency * PREFETCH_HORIZON / max(self._pace, 1e-6)))

    def _fill(self) -> int:
        """Start buffered jobs in the free slots; how many started."""
        started = 0
        while self._ready and len(self._running) < self.concurrency and not self._stopping:
            self._start(self._ready.popleft())
            started += 1
        return started

    def _take(self, claimed: list[Job]) -> None:
        """Start claimed jobs in the free slots and buffer the rest."""
        self._ready.extend(claimed)
        self._fill()

    async def _claim_round(
        self, *, raise_errors: bool, carry: bool = False, hold: bool = False
    ) -> int:
        """Start buffered jobs, then claim for the free slots (and the buffer); how many jobs
        were started or claimed (-1: the store failed). With *carry*, the finished jobs'
        outcomes are recorded with the claim -- by themselves when no claim is due, unless
        *hold* lets them wait a little for the next one (see :meth:`_hold`)."""
        progress = self._fill()
        free = self.concurrency - len(self._running) - len(self._ready)
        buffered = max(0, len(self._ready) - max(0, free))
        target = self._prefetch_target()
        if free > 0:  # the buffer's share fills the claims' statements up, and no more
            extra = min(max(0, target - buffered), -free % self.batch)
        elif buffered <= target // 2:  # topped up once half empty, not job by job
            extra = target - buffered
        else:
            extra = 0
        if free <= 0 and extra <= 0:
            if carry and self._outcomes and not (hold and self._hold()):
                # no claim due soon: the outcomes go by themselves
                if not await self._flush(raise_errors=raise_errors):
                    return -1
                progress += self._fill()  # slots of the jobs that finished meanwhile
            return progress
        try:
            if not self._limited:
                want = max(0, free) + extra
                return progress + await self._claim(self.queues, want, carry=carry)
            for queue in self._limited:
                room = min(self._room(queue), free)
                if room > 0:
                    got = await self._claim([queue], room)
                    progress += got
                    free -= got
            if max(0, free) + extra > 0:
                others = await self._unlimited_queues(fresh=raise_errors)
                if others:
                    progress += await self._claim(others, max(0, free) + extra)
            return progress
        except Exception as exc:
            if raise_errors:
                raise
            self._failures += 1
            _log.warning("claiming jobs failed (%s); trying again", exc)
            return -1

    def _hold(self) -> bool:
        """Whether the finished jobs' outcomes may wait for the next claim (to share its
        transaction) rather than be recorded now: while buffered jobs run, fewer than a batch
        of them, and for at most ``PREFETCH_HORIZON`` (the buffer is meant to start within
        about that long; a timer of the loop, as for pacing)."""
        if len(self._outcomes) >= self.batch or not self._ready:
            return False
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._hold_until is None and self._wake is not None:
            self._hold_until = now + PREFETCH_HORIZON
            self._hold_timer = loop.call_at(self._hold_until, self._wake.set)
        return self._hold_until is not None and now < self._hold_until

    def _end_hold(self) -> None:
        """The held outcomes are being recorded (or the loop ends): no hold any more."""
        self._hold_until = None
        timer, self._hold_timer = self._hold_timer, None
        if timer is not None:
            timer.cancel()

    def _room(self, queue: str) -> int:
        """How many jobs of *queue* may start now."""
        room = math.inf
        limit = self.queue_concurrency.get(queue)
        if limit is not None:
            room = limit - self._per_queue[queue]
        bucket = self.queue_rates.get(queue)
        if bucket is not None:
            room = min(room, math.floor(bucket.available))
        return max(0, int(min(room, self.concurrency)))

    async def _unlimited_queues(self, *, fresh: bool) -> list[str]:
        if self.queues is not None:
            return [q for q in self.queues if q not in self._limited]
        loop = asyncio.get_running_loop()
        if fresh or self._known is None or loop.time() - self._known_at > DISCOVER_INTERVAL:
            stats = await self.jobs.queue.stats(now=self.jobs.clock.time())
            self._known = sorted({s.queue for s in stats})
            self._known_at = loop.time()
        return [q for q in self._known if q not in self._limited]

    async def _claim(self, queues: Sequence[str] | None, limit: int, *, carry: bool = False) -> int:
        started = 0
        while limit > 0:
            n = min(limit, self.batch)
            if carry and self._outcomes:  # recorded in the claim's own transaction
                batch, self._outcomes = self._outcomes, []
                self._end_hold()
                try:
                    recorded, claimed = await self.jobs.queue.complete_and_claim(  # type: ignore[attr-defined]
                        batch,
                        worker=self.id,
                        now=self.jobs.clock.time(),
                        limit=n,
                        lease=self.lease,
                        queues=queues,
                    )
                except BaseException:
                    self._outcomes[:0] = batch
                    raise
                self._recorded(batch, recorded)
            else:
                claimed = await self.jobs.queue.claim(
                    worker=self.id,
                    limit=n,
                    lease=self.lease,
                    now=self.jobs.clock.time(),
                    queues=queues,
                )
            self._failures = 0
            self._take(claimed)
            started += len(claimed)
            limit -= len(claimed)
            if len(claimed) < n:
                break
        return started

    def _start(self, job: Job) -> None:
        if job.id in self._running:  # cannot happen with a correct queue; never run it twice
            _log.error("job %s was claimed while already running here", job.id)
            return
        task = asyncio.create_task(self._execute(job), name=f"job:{job.name}:{job.id}")
        self._running[job.id] = task
        self._per_queue[job.queue] += 1

    # -- completing ---------------------------------------------------------------------------

    async def _flush(self, *, raise_errors: bool) -> bool:
        batch, self._outcomes = self._outcomes, []
        self._end_hold()
        try:
            recorded = await self.jobs.queue.complete(
                batch, worker=self.id, now=self.jobs.clock.time()
            )
        except Exception as exc:
            self._outcomes[:0] = batch
            if raise_errors:
                raise
            self._failures += 1
            _log.warning("recording %d outcome(s) failed (%s); trying again", len(batch), exc)
            return False
        self._failures = 0
        self._recorded(batch, recorded)
        return True

    def _recorded(self, batch: list[Outcome], recorded: list[str]) -> None:
        """Count the outcomes of *batch*; warn of those the queue ignored (not in *recorded*)."""
        if len(recorded) < len(batch):
            kept = set(recorded)
            ignored = [o.job_id for o in batch if o.job_id not in kept]
            _log.warning(
                "%d outcome(s) ignored: this worker no longer held their jobs (%s)",
                len(ignored),
                ", ".join(ignored[:5]),
            )
        for outcome in batch:
            self.counts[outcome.kind] += 1

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if self._present:
                await self.presence.beat()
            ids = [*self._running, *(job.id for job in self._ready)]
            if not ids:
                continue
            try:
                held = set(
                    await self.jobs.queue.heartbeat(
                        ids, worker=self.id, lease=self.lease, now=self.jobs.clock.time()
                    )
                )
            except Exception as exc:
                _log.warning("renewing %d lease(s) failed: %s", len(ids), exc)
                continue
            lost = set(ids) - held
            if lost:
                self._ready = deque(job for job in self._ready if job.id not in lost)
            for job_id in lost:
                task = self._running.get(job_id)
                if task is not None:
                    _log.warning("lost the lease of job %s; cancelling it here", job_id)
                    self._lost.add(job_id)
                    task.cancel()

    # -- running one job ----------------------------------------------------------------------

    async def _execute(self, job: Job) -> None:
        outcome: Outcome | None = None
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            with activate(job.context):  # the enqueuing request's id (and trace) is current
                self._observe_start(job)
                outcome = await self._attempt(job)
        except asyncio.CancelledError:
            if job.id not in self._lost:
                outcome = Outcome(job.id, "release")
            raise
        except Exception as exc:  # a bug here must not lose the job: retry it later
            _log.exception("worker error while running job %s", job.id)
            outcome = self._failed(job, None, exc, self.jobs.clock.time(), 0.0)
        finally:
            self._running.pop(job.id, None)
            self._per_queue[job.queue] -= 1
            self._lost.discard(job.id)
            if outcome is not None:
                self._outcomes.append(outcome)
            took = loop.time() - began
            if outcome is not None:
                self._observe_finish(job, outcome, took)
            self._pace = took if self._pace is None else 0.8 * self._pace + 0.2 * took
            if self._ready:
                self._fill()  # the freed slot goes to a buffered job at once
            if self._wake is not None:
                self._wake.set()

    def _breaker_defer(self, job: Job, now: float) -> Outcome | None:
        """Defer *job* when its provider's breaker is open (no attempt counted)."""
        breaker = self.jobs.breakers.get(job.provider) if job.provider else None
        if breaker is None:
            return None
        state = breaker.state
        if state is CircuitState.OPEN:
            until = breaker.snapshot.open_until
            run_at = until if until > now else now + self.poll_interval
        elif state is CircuitState.FORCED_OPEN:
            run_at = now + breaker.config.open_duration
        elif state is CircuitState.HALF_OPEN:
            snap = breaker.snapshot
            if snap.state is not CircuitState.HALF_OPEN or snap.probes_left > 0:
                return None  # its open period is over, or a probe permit is left: it may probe
            run_at = now + PROBE_WAIT  # its probe is out: wait for the outcome, not a duration
        else:
            return None
        return Outcome(
            job.id,
            "defer",
            run_at=run_at,
            error_code=str(ErrorCode.CIRCUIT_OPEN),
            error=f"circuit breaker {breaker.name!r} is {state.value}",
        )

    async def _attempt(self, job: Job) -> Outcome:
        clock = self.jobs.clock
        now = clock.time()
        history = job.history
        lost = sum(1 for entry in history if entry.get("code") == "LEASE_EXPIRED") if history else 0
        if lost >= self.max_lost_leases:
            # its workers keep dying while running it (a poison job): stop before it takes
            # down another one; lost runs are not attempts, so this has its own limit
            return Outcome(
                job.id,
                "dead",
                attempted=False,
                error_code="LEASE_EXPIRED",
                error=(
                    f"lost its worker {lost} times (the limit is {self.max_lost_leases}); the "
                    f"last time: {job.last_error or 'its worker stopped'}"
                ),
            )
        fn = self.jobs.registry.get(job.name)
        if fn is None:
            missing = AntifragileError(
                f"no job function named {job.name!r} in this worker (is it declared in the "
                "module the worker imports?)",
                code=str(ErrorCode.CONFIGURATION),
                retryable=True,
            )
            return self._failed(job, None, missing, now, 0.0)
        deferred = self._breaker_defer(job, now)
        if deferred is not None:
            return deferred
        bucket = self.queue_rates.get(job.queue)
        if bucket is not None:
            try:
                await bucket.aacquire(operation=job.name)
            except RateLimitedError as exc:
                wait = exc.retry_after if exc.retry_after is not None else self.poll_interval
                return Outcome(
                    job.id,
                    "defer",
                    run_at=clock.time() + wait,
                    error_code=str(ErrorCode.RATE_LIMITED),
                    error=f"queue {job.queue!r}: waiting for a token",
                )
        ctx = JobContext(
            job=job,
            jobs=self.jobs,
            clock=clock,
            worker=self.id,
            logger=logging.LoggerAdapter(
                _run_log,
                {
                    "job_id": job.id,
                    "job": job.name,
                    "attempt": job.attempts + 1,
                    "request_id": current_request_id(),
                },
            ),
        )
        started_at = clock.time()
        t0 = clock.monotonic()
        timeout = job.timeout if job.timeout is not None else fn.timeout
        try:
            args, kwargs = fn.decode(job)
            if timeout is None:
                result = await fn.fn(ctx, *args, **kwargs)
            else:  # the loop's one watchdog, not a timer per job (see policies._timeout)
                dog = watchdog()
                scope = dog.enter(dog.loop_time() + timeout)
                try:
                    result = await fn.fn(ctx, *args, **kwargs)
                except BaseException as exc:
                    if _timed_out(dog, scope) and isinstance(exc, asyncio.CancelledError):
                        raise _JobTimeout(
                            f"job {job.name!r} ran longer than its timeout of {timeout:g}s"
                        ) from None
                    raise
                _timed_out(dog, scope)
        except Exception as exc:
            return self._failed(job, fn, exc, started_at, clock.monotonic() - t0)
        duration = clock.monotonic() - t0
        if self.jobs.observer is not None:
            self._observe_attempt(job, duration, None, None)
        if history:  # keep the successful attempt beside the failed ones
            attempt = {
                "number": job.attempts + 1,
                "started_at": started_at,
                "duration": duration,
                "code": None,
                "message": "succeeded",
                "status": None,
            }
            return Outcome(job.id, "succeeded", result=_jsonable(result), attempt=attempt)
        if result is None:
            return Outcome(job.id, "succeeded")
        return Outcome(job.id, "succeeded", result=_jsonable(result))

    def _failed(
        self,
        job: Job,
        fn: JobFunction[Any, Any] | None,
        exc: BaseException,
        started_at: float,
        duration: float,
    ) -> Outcome:
        now = self.jobs.clock.time()
        info = describe_error(exc)
        number = job.attempts + 1
        decision = decide_failure(
            fn.retry if fn is not None else DEFAULT_JOB_RETRY,
            exc,
            attempt=number,
            max_attempts=job.max_attempts,
            now=now,
            created_at=job.created_at,
            previous_delay=previous_delay(job.history),
            rng=self._rng,
        )
        if decision.kind == "defer":
            return Outcome(
                job.id, "defer", run_at=decision.run_at, error_code=info.code, error=info.message
            )
        self._observe_attempt(job, duration, info.code, info.status)
        attempt: dict[str, Any] = {
            "number": number,
            "started_at": started_at,
            "duration": duration,
            "code": info.code,
            "message": info.message,
            "status": info.status,
            "retryable": info.retryable,
        }
        observer = self.jobs.observer
        if decision.kind == "retry":
            attempt["delay"] = decision.delay
            attempt["retry_after"] = decision.from_retry_after
            if observer is not None:
                observer.on_event(
                    RetryScheduled(
                        policy=job.name,
                        operation=job.queue,
                        number=number,
                        delay=decision.delay or 0.0,
                        code=info.code,
                        from_retry_after=decision.from_retry_after,
                    )
                )
            _run_log.info(
                "job %s (%s) attempt %d failed with %s; next run in %.1fs",
                job.id,
                job.name,
                number,
                info.code,
                decision.delay or 0.0,
            )
            return Outcome(
                job.id,
                "retry",
                run_at=decision.run_at,
                attempt=attempt,
                error_code=info.code,
                error=info.message,
            )
        attempt["reason"] = decision.reason
        if observer is not None:
            observer.on_event(
                GaveUp(
                    policy=job.name,
                    operation=job.queue,
                    attempts=number,
                    reason=decision.reason or "",
                    code=info.code,
                )
            )
        _log.warning(
            "job %s (%s) is dead after %d attempt(s): %s (%s)",
            job.id,
            job.name,
            number,
            info.code,
            decision.reason,
        )
        return Outcome(job.id, "dead", attempt=attempt, error_code=info.code, error=info.message)

    def _observe_attempt(
        self, job: Job, duration: float, code: str | None, status: int | None
    ) -> None:
        observer = self.jobs.observer
        if observer is not None:
            observer.on_event(
                AttemptFinished(
                    policy=job.name,
                    operation=job.queue,
                    number=job.attempts + 1,
                    duration=duration,
                    code=code,
                    status=status,
                )
            )

    def _observe_start(self, job: Job) -> None:
        observer = self.jobs.observer
        if observer is not None:
            observer.on_event(
                JobStarted(
                    policy=job.name,
                    operation=job.queue,
                    request_id=current_request_id(),
                    attempt=job.attempts + 1,
                    delay=max(0.0, self.jobs.clock.time() - job.run_at),
                )
            )

    def _observe_finish(self, job: Job, outcome: Outcome, duration: float) -> None:
        observer = self.jobs.observer
        if observer is not None:
            try:
                observer.on_event(
                    JobFinished(
                        policy=job.name,
                        operation=job.queue,
                        outcome=outcome.kind,
                        duration=duration,
                        code=outcome.error_code,
                    )
                )
            except Exception:  # observing must never break the worker's bookkeeping
                _log.exception("the jobs observer failed")
