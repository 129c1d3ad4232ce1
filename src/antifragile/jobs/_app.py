"""Declaring jobs, enqueueing them, and the dead-letter queue -- the user's side of the queue.

::

    jobs = Jobs(database_url="sqlite:///antifragile.db")

    @jobs.job(queue="email", retry=Retry(attempts=8), provider="resend")
    async def send_summary(ctx: JobContext, session_id: str) -> None:
        await resend.send(..., idempotency_key=ctx.idempotency_key)

    async with jobs:
        await send_summary.enqueue("s-42")                                   # now
        await send_summary.configure(idempotency_key="summary:s-42",         # once per key
                                     delay=60).enqueue("s-42")

A job function is an ``async def`` whose first parameter is the :class:`JobContext`; the other
parameters are its payload, validated (pydantic, from the annotations) and encoded as JSON when
the job is enqueued -- a wrong payload is an error in the caller, never in a worker. The
decorator returns a :class:`JobFunction`, typed like the function it wraps.

:class:`Jobs` holds the registry of job functions, the queue (any :class:`JobQueue` backend,
or one opened from a database URL), the circuit breakers by provider that a worker consults
before running a provider's jobs, and the dead-letter queue API (:class:`DeadLetters`). Job
functions and their context live in :mod:`antifragile.jobs._function`, the dead-letter queue
in :mod:`antifragile.jobs._dlq`; the worker, the scheduler and sagas need :class:`Jobs` only
for their types.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Unpack, overload

from antifragile.errors import ConfigurationError
from antifragile.jobs._model import (
    Enqueued,
    Job,
    JobFilter,
    NewJob,
    QueueStats,
)
from antifragile.jobs._policy import DEFAULT_JOB_RETRY
from antifragile.jobs._protocol import JobQueue
from antifragile.observability import (
    JobEnqueued,
    Observer,
)
from antifragile.policies import SYSTEM_CLOCK, CircuitBreaker, CircuitState, Clock, Retry
from antifragile.policies._clock import Duration

if TYPE_CHECKING:
    from antifragile.jobs._cron import CatchUp
    from antifragile.jobs._saga import Saga, Step
    from antifragile.jobs._scheduler import PeriodicFunction, Schedule
    from antifragile.jobs._worker import Worker, WorkerOptions

from antifragile.jobs._dlq import RETRYABLE_CODES, DeadLetterFilter, DeadLetters, Target
from antifragile.jobs._function import (
    ConfiguredJob,
    EnqueueOptions,
    JobContext,
    JobFunction,
    JobNotFoundError,
    P,
    R,
)

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "RETRYABLE_CODES",
    "ConfiguredJob",
    "DeadLetterFilter",
    "DeadLetters",
    "EnqueueOptions",
    "JobContext",
    "JobFunction",
    "JobNotFoundError",
    "Jobs",
    "Target",
]

DATABASE_URL_ENV = "ANTIFRAGILE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///antifragile.db"

_log = logging.getLogger("antifragile.jobs")


# -- the application object ---------------------------------------------------------------------


class Jobs:
    """The registry of job functions, the queue they go through, and the dead-letter queue.

    Give it a :class:`JobQueue` (it stays yours to close) or a database URL (opened by
    :meth:`open`, closed by :meth:`close`); with neither, ``ANTIFRAGILE_DATABASE_URL`` or
    ``sqlite:///antifragile.db`` is used.
    """

    def __init__(
        self,
        queue: JobQueue | None = None,
        *,
        database_url: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        observer: Observer | None = None,
    ) -> None:
        if queue is not None and database_url is not None:
            raise ConfigurationError("give either a queue or a database_url, not both")
        self._queue = queue
        self._owns_queue = False
        self.database_url = database_url
        self.clock = clock
        self.observer = observer
        self.registry: dict[str, JobFunction[Any, Any]] = {}
        self._breakers: dict[str, CircuitBreaker] = {}
        self.dlq = DeadLetters(self)
        self._open_lock: asyncio.Lock | None = None
        self._redrives: set[asyncio.Task[int]] = set()

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._queue is not None

    @property
    def queue(self) -> JobQueue:
        """The queue; :meth:`open` first when the jobs were given a database URL."""
        if self._queue is None:
            raise ConfigurationError("the job queue is not open: await jobs.open() first")
        return self._queue

    async def open(self) -> None:
        """Open the queue from the database URL (a no-op when it is open already)."""
        if self._queue is not None:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self.is_open:  # opened by another task while this one waited
                return
            from antifragile.jobs._open import open_job_queue

            url = self.database_url or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL
            self._queue = await open_job_queue(url, clock=self.clock)
            self._owns_queue = True

    async def close(self) -> None:
        """Close the queue when :meth:`open` opened it."""
        for task in list(self._redrives):
            task.cancel()
        if self._queue is not None and self._owns_queue:
            queue = self._queue
            self._queue, self._owns_queue = None, False
            closer = getattr(queue, "close", None)
            if closer is None:  # a queue on a store: the store holds the connections
                closer = getattr(getattr(queue, "store", None), "close", None)
            if closer is not None:
                await closer()

    async def __aenter__(self) -> Jobs:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- declaring ----------------------------------------------------------------------------

    @overload
    def job(
        self, name: Callable[Concatenate[JobContext, P], Awaitable[R]], /
    ) -> JobFunction[P, R]: ...

    @overload
    def job(
        self,
        name: str | None = None,
        *,
        queue: str = "default",
        retry: Retry = DEFAULT_JOB_RETRY,
        timeout: float | None = 300.0,
        priority: int = 0,
        provider: str | None = None,
        payload_version: int = 1,
    ) -> Callable[[Callable[Concatenate[JobContext, P], Awaitable[R]]], JobFunction[P, R]]: ...

    def job(
        self,
        name: str | Callable[..., Awaitable[Any]] | None = None,
        *,
        queue: str = "default",
        retry: Retry = DEFAULT_JOB_RETRY,
        timeout: float | None = 300.0,
        priority: int = 0,
        provider: str | None = None,
        payload_version: int = 1,
    ) -> Any:
        """Declare a job: ``@jobs.job`` or ``@jobs.job("name", queue=..., retry=...)``.

        *name* defaults to the function's name and must be unique; *queue* is where it waits;
        *retry* its policy (:data:`DEFAULT_JOB_RETRY` by default); *timeout* bounds one attempt
        (seconds; ``None``: unbounded); *priority* orders the queue (higher first); *provider*
        names the circuit breaker in :attr:`breakers` that defers the job while open;
        *payload_version* is the version of its payload's shape (see :meth:`JobFunction.upgrade`).
        """
        if callable(name):
            return self.job()(name)
        if not queue:
            raise ConfigurationError("queue must not be empty")

        def register(fn: Callable[Concatenate[JobContext, P], Awaitable[R]]) -> JobFunction[P, R]:
            job_name = name or getattr(fn, "__name__", None)
            if not job_name:
                raise ConfigurationError("cannot name this job: pass name=")
            if job_name in self.registry:
                raise ConfigurationError(f"a job named {job_name!r} is already declared")
            function = JobFunction(
                self,
                fn,
                name=job_name,
                queue=queue,
                retry=retry,
                timeout=timeout,
                priority=priority,
                provider=provider,
                payload_version=payload_version,
            )
            self.registry[job_name] = function
            return function

        return register

    def every(
        self,
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
        max_catch_up: int = 100,
    ) -> Callable[[PeriodicFunction[R]], Schedule[R]]:
        """Declare a periodic job: ``@jobs.every("*/5 * * * *")`` on ``async def f(ctx)``.

        The :class:`~antifragile.jobs.Scheduler` (``antifragile scheduler``) enqueues it once
        per tick of *cron* (five fields, or six with trailing seconds) in *timezone*, however
        many schedulers run; *catch_up* (``latest``, ``all``, ``none``) says what happens to the
        ticks missed while no scheduler ran. An invalid expression raises ConfigurationError
        here. See :mod:`antifragile.jobs._scheduler`.
        """
        from antifragile.jobs._scheduler import every

        return every(
            self,
            cron,
            name=name,
            queue=queue,
            catch_up=catch_up,
            timezone=timezone,
            retry=retry,
            timeout=timeout,
            priority=priority,
            provider=provider,
            max_catch_up=max_catch_up,
        )

    def saga(
        self,
        name: str,
        steps: Sequence[Step],
        *,
        queue: str = "default",
        priority: int = 0,
        timeout: float | None = None,
        step_retry: Retry | None = None,
    ) -> Saga:
        """Declare a saga: ordered steps (an action and its compensation each) run as one
        durable job; ``await saga.start(data, idempotency_key=...)`` runs it. See
        :mod:`antifragile.jobs._saga`."""
        from antifragile.jobs._saga import DEFAULT_STEP_RETRY, Saga

        return Saga(
            self,
            name,
            steps,
            queue=queue,
            priority=priority,
            timeout=timeout,
            step_retry=step_retry or DEFAULT_STEP_RETRY,
        )

    # -- breakers -----------------------------------------------------------------------------

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """Circuit breakers by provider name: while a provider's breaker is open, workers defer
        its jobs (no attempt counted) to the moment it half-opens."""
        return self._breakers

    @breakers.setter
    def breakers(self, value: Mapping[str, CircuitBreaker]) -> None:
        self._breakers = dict(value)

    def redrive_when_closed(
        self,
        provider: str,
        breaker: CircuitBreaker | None = None,
        *,
        delay: Duration = 0.0,
    ) -> None:
        """When *provider*'s breaker closes after a recovery, redrive its dead jobs that died
        of a failure the recovery may fix (see :meth:`DeadLetters.redrive_recoverable`).

        *breaker* defaults to ``breakers[provider]``. Call it from inside the event loop the
        worker runs on; the listener schedules the redrive on that loop.
        """
        breaker = breaker or self._breakers.get(provider)
        if breaker is None:
            raise ConfigurationError(f"no breaker for provider {provider!r} in jobs.breakers")
        loop = asyncio.get_running_loop()

        def start() -> None:
            task = loop.create_task(self.dlq.redrive_recoverable(provider, delay=delay))
            self._redrives.add(task)
            task.add_done_callback(self._redrive_done)

        def listener(before: CircuitState, after: CircuitState, reason: str) -> None:
            if after is CircuitState.CLOSED and before is not CircuitState.CLOSED:
                loop.call_soon_threadsafe(start)

        breaker.add_listener(listener)

    def _redrive_done(self, task: asyncio.Task[int]) -> None:
        self._redrives.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            _log.warning("redrive after a breaker closed failed: %s", exc)
        else:
            _log.info("redrove %d dead job(s) after a breaker closed", task.result())

    def redrives_under_way(self) -> builtins.list[asyncio.Task[int]]:
        """The redrives that breaker listeners started and that have not ended yet."""
        return builtins.list(self._redrives)

    # -- queue access -------------------------------------------------------------------------

    async def enqueue_many(
        self, jobs: Iterable[NewJob], *, connection: Any = None
    ) -> builtins.list[Enqueued]:
        """Enqueue prepared jobs (:meth:`JobFunction.prepare`) in one transaction."""
        batch = list(jobs)
        if not batch:
            return []
        await self.open()
        enqueued = await self.queue.enqueue(batch, now=self.clock.time(), connection=connection)
        if self.observer is not None:
            self.observed_enqueue(batch, [e.created for e in enqueued])
        return enqueued

    def observed_enqueue(self, jobs: Sequence[NewJob], created: Sequence[bool]) -> None:
        """Tell the observer that the *created* ones of *jobs* were enqueued (one
        :class:`~antifragile.observability.JobEnqueued` per job name and queue)."""
        observer = self.observer
        if observer is None:
            return
        counts: dict[tuple[str, str], int] = {}
        for job, new in zip(jobs, created, strict=False):
            if new:
                key = (job.name, job.queue)
                counts[key] = counts.get(key, 0) + 1
        for (name, queue), count in counts.items():
            observer.on_event(JobEnqueued(policy=name, operation=queue, count=count))

    async def get(self, job_id: str) -> Job | None:
        await self.open()
        return await self.queue.get(job_id)

    async def find(
        self, where: JobFilter | None = None, *, limit: int = 100, offset: int = 0
    ) -> builtins.list[Job]:
        await self.open()
        return await self.queue.find(where or JobFilter(), limit=limit, offset=offset)

    async def stats(self) -> builtins.list[QueueStats]:
        await self.open()
        return await self.queue.stats(now=self.clock.time())

    def worker(self, **options: Unpack[WorkerOptions]) -> Worker:
        """A :class:`~antifragile.jobs.Worker` for these jobs; *options* are the worker's own
        (:class:`~antifragile.jobs.WorkerOptions`: a misspelt or mistyped one fails
        type-checking)."""
        from antifragile.jobs._worker import Worker

        return Worker(self, **options)
