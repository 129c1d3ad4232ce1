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
before running a provider's jobs, and the dead-letter queue API (:class:`DeadLetters`).
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from antifragile.errors import AntifragileError, ConfigurationError, ErrorCode
from antifragile.jobs._model import (
    JSON,
    Enqueued,
    Job,
    JobFilter,
    JobState,
    NewJob,
    QueueStats,
    StatusFlag,
    new_job_id,
)
from antifragile.jobs._payload import PayloadCodec
from antifragile.jobs._policy import DEFAULT_JOB_RETRY
from antifragile.jobs._protocol import JobQueue
from antifragile.observability import (
    JobEnqueued,
    Observer,
    activate,
    capture_context,
    current_request_id,
)
from antifragile.policies import SYSTEM_CLOCK, CircuitBreaker, CircuitState, Clock, Retry
from antifragile.policies._clock import Duration, seconds

if TYPE_CHECKING:
    from antifragile.jobs._cron import CatchUp
    from antifragile.jobs._saga import Saga, Step
    from antifragile.jobs._scheduler import PeriodicFunction, Schedule
    from antifragile.jobs._worker import Worker

P = ParamSpec("P")
R = TypeVar("R")

DATABASE_URL_ENV = "ANTIFRAGILE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///antifragile.db"

#: error codes of failures that a provider's recovery may fix (redriven when its breaker closes)
RETRYABLE_CODES: frozenset[str] = frozenset(
    {
        ErrorCode.RATE_LIMITED,
        ErrorCode.UPSTREAM_UNAVAILABLE,
        ErrorCode.TIMEOUT,
        ErrorCode.NETWORK,
        ErrorCode.DEADLINE_EXCEEDED,
        ErrorCode.CIRCUIT_OPEN,
        ErrorCode.BULKHEAD_FULL,
        ErrorCode.RETRY_BUDGET_EXHAUSTED,
        ErrorCode.STORE_UNAVAILABLE,
    }
)

_log = logging.getLogger("antifragile.jobs")


class JobNotFoundError(AntifragileError, LookupError):
    """No job with this id (or not one in the state the operation needs)."""

    default_code = ErrorCode.NOT_FOUND


# -- the context a job runs with ----------------------------------------------------------------


@dataclass(eq=False)
class JobContext:
    """What a running job knows about itself.

    ``job`` is the record as claimed; ``attempt`` the number of this attempt (1-based);
    ``idempotency_key`` the key to hand to providers so that a job run twice (a worker died
    after the provider acted) has one effect: the job's own idempotency key, else
    ``job:<id>``. ``state_data`` holds what :meth:`save_progress` last stored (sagas resume
    from it). ``request_id`` correlates the run with the request that caused it.
    """

    job: Job
    jobs: Jobs
    clock: Clock = SYSTEM_CLOCK
    worker: str | None = None
    logger: logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.LoggerAdapter(_log, {})
    )
    state_data: JSON = None

    def __post_init__(self) -> None:
        if self.state_data is None:
            self.state_data = self.job.state_data

    @property
    def attempt(self) -> int:
        return self.job.attempts + 1

    @property
    def idempotency_key(self) -> str:
        return self.job.idempotency_key or f"job:{self.job.id}"

    @property
    def request_id(self) -> str | None:
        """The request id the job runs with: the one of the request that enqueued it (the
        worker makes it current, so outbound calls send it), else the one the worker drew."""
        return self.job.context.get("request_id") or current_request_id()

    async def save_progress(self, data: JSON) -> bool:
        """Checkpoint *data* (JSON) with the job, so that a later run can resume from it.

        Returns ``False`` when this worker no longer holds the job (its lease expired and another
        worker took it over): stop working then. Run inline (no worker), the data is only kept
        on this context.
        """
        self.state_data = data
        if self.worker is None:
            return True
        return await self.jobs.queue.save_progress(
            self.job.id, worker=self.worker, state_data=data, now=self.clock.time()
        )


# -- job functions ------------------------------------------------------------------------------


def _run_at(now: float, delay: Duration | None, run_at: float | datetime | None) -> float:
    if delay is not None and run_at is not None:
        raise ConfigurationError("give either delay or run_at, not both")
    if delay is not None:
        wait = seconds(delay)
        if not wait >= 0:
            raise ConfigurationError(f"delay must be >= 0 seconds, got {delay!r}")
        return now + wait
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise ConfigurationError("run_at must be a timezone-aware datetime")
        return run_at.timestamp()
    if run_at is not None:
        return float(run_at)
    return now


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    """Options of one enqueue call (see :meth:`JobFunction.configure`)."""

    idempotency_key: str | None = None
    delay: Duration | None = None
    run_at: float | datetime | None = None
    priority: int | None = None
    status: StatusFlag | None = None
    connection: Any = None
    queue: str | None = None
    context: Mapping[str, str] | None = None
    ordering_key: str | None = None


def _checked_context(context: Mapping[str, str]) -> dict[str, str]:
    """*context* as a plain dict of strings (ConfigurationError otherwise)."""
    checked = dict(context)
    for key, value in checked.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise ConfigurationError(
                f"a job's context maps non-empty strings to strings, got {key!r}: "
                f"{type(value).__name__}"
            )
    return checked


class JobFunction(Generic[P, R]):
    """A declared job: call :meth:`enqueue` to run it durably, :meth:`run_inline` to run it
    here and now (tests), or call it like the function it wraps."""

    def __init__(
        self,
        jobs: Jobs,
        fn: Callable[Concatenate[JobContext, P], Awaitable[R]],
        *,
        name: str,
        queue: str,
        retry: Retry,
        timeout: float | None,
        priority: int,
        provider: str | None,
        payload_version: int,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigurationError(f"job {name!r}: the job function must be an async def")
        if not isinstance(retry, Retry):
            raise ConfigurationError(f"job {name!r}: retry must be a Retry, got {retry!r}")
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(f"job {name!r}: timeout must be > 0 seconds")
        if not isinstance(payload_version, int) or payload_version < 1:
            raise ConfigurationError(f"job {name!r}: payload_version must be an int >= 1")
        self.jobs = jobs
        self.fn = fn
        self.name = name
        self.queue = queue
        self.retry = retry
        self.timeout = timeout
        self.priority = priority
        self.provider = provider
        self.payload_version = payload_version
        self.codec = PayloadCodec(fn, name)
        self._upgrades: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self.__name__ = getattr(fn, "__name__", name)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"JobFunction({self.name!r}, queue={self.queue!r})"

    async def __call__(self, ctx: JobContext, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the wrapped function directly (no validation, no queue)."""
        return await self.fn(ctx, *args, **kwargs)

    # -- payload versions -------------------------------------------------------------------

    def upgrade(
        self, from_version: int
    ) -> Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Callable[[dict[str, Any]], Any]]:
        """Register how a payload of version *from_version* becomes version *from_version + 1*.

        A worker runs a job stored with an older ``payload_version`` through the chain of
        upgrades; a missing step sends the job to the dead-letter queue (code CONFIGURATION).
        """

        def register(
            upgrade: Callable[[dict[str, Any]], dict[str, Any]],
        ) -> Callable[[dict[str, Any]], dict[str, Any]]:
            if not 1 <= from_version < self.payload_version:
                raise ConfigurationError(
                    f"job {self.name!r}: an upgrade from version {from_version} makes no sense "
                    f"for payload_version={self.payload_version}"
                )
            self._upgrades[from_version] = upgrade
            return upgrade

        return register

    def decode(self, job: Job) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments to run *job* with: its payload upgraded to this version, validated."""
        payload = job.payload
        version = job.payload_version
        if version > self.payload_version:
            raise _NewerPayload(
                f"job {self.name!r}: payload version {version} is newer than this code's "
                f"{self.payload_version} (a deployment in progress?)"
            )
        while version < self.payload_version:
            step = self._upgrades.get(version)
            if step is None:
                raise ConfigurationError(
                    f"job {self.name!r}: no upgrade from payload version {version} to {version + 1}"
                )
            payload = step(dict(payload or {}))
            version += 1
        return self.codec.decode(payload)

    # -- enqueueing -------------------------------------------------------------------------

    def _prepare(
        self, options: EnqueueOptions, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> NewJob:
        payload = self.codec.encode(args, kwargs)
        now = self.jobs.clock.time()
        context = capture_context() if options.context is None else options.context
        return NewJob(
            name=self.name,
            queue=options.queue or self.queue,
            payload=payload,
            run_at=_run_at(now, options.delay, options.run_at),
            max_attempts=self.retry.attempts,
            priority=self.priority if options.priority is None else options.priority,
            payload_version=self.payload_version,
            idempotency_key=options.idempotency_key,
            provider=self.provider,
            timeout=self.timeout,
            status_flag=options.status,
            context=context or None,
            ordering_key=options.ordering_key,
        )

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> NewJob:
        """Validate a payload and build the job to enqueue, without enqueueing it (for
        :meth:`Jobs.enqueue_many`). The job carries the current request's context (see
        :func:`~antifragile.observability.capture_context`)."""
        return self._prepare(EnqueueOptions(), args, kwargs)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Enqueued:
        """Validate the payload and enqueue the job to run as soon as a worker is free."""
        new = self._prepare(EnqueueOptions(), args, kwargs)
        return (await self.jobs.enqueue_many([new]))[0]

    def configure(
        self,
        *,
        idempotency_key: str | None = None,
        delay: Duration | None = None,
        run_at: float | datetime | None = None,
        priority: int | None = None,
        status: StatusFlag | None = None,
        connection: Any = None,
        queue: str | None = None,
        context: Mapping[str, str] | None = None,
        ordering_key: str | None = None,
    ) -> ConfiguredJob[P, R]:
        """Options for one enqueue: ``.configure(delay=60).enqueue(...)``.

        * *idempotency_key*: a second enqueue with the same key creates no second job (the
          ``Enqueued`` names the first one, with ``created=False``);
        * *delay* (seconds or ``timedelta``) or *run_at* (epoch seconds or an aware
          ``datetime``): when the job may run;
        * *priority*: higher runs first; *queue*: another queue than the declared one;
        * *status*: a :class:`StatusFlag` kept in step with the job (pending, then sent or
          failed);
        * *connection*: enqueue inside the caller's open transaction (the outbox pattern);
        * *context*: the context the job runs in (strings: ``request_id``, trace context),
          instead of the one captured from the current request when the job is prepared;
        * *ordering_key*: jobs with the same key start one at a time, in the order they were
          enqueued, whichever workers and processes run them (SQS FIFO message groups, Kafka
          partition keys); a job waiting for a retry still holds its key, a dead one lets it
          go. An opaque string: hash anything personal (a phone number) into it.
        """
        if idempotency_key is not None and not idempotency_key:
            raise ConfigurationError("idempotency_key must not be empty")
        if ordering_key is not None and (not ordering_key or "\x00" in ordering_key):
            raise ConfigurationError(
                "ordering_key must be a non-empty string without NUL characters"
            )
        if context is not None:
            context = _checked_context(context)
        options = EnqueueOptions(
            idempotency_key=idempotency_key,
            delay=delay,
            run_at=run_at,
            priority=priority,
            status=status,
            connection=connection,
            queue=queue,
            context=context,
            ordering_key=ordering_key,
        )
        _run_at(0.0, delay, run_at)  # reject contradictory timing now
        return ConfiguredJob(self, options)

    async def run_inline(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the job here and now, as a worker would run its first attempt: the payload is
        validated and goes through its JSON form; no queue, no retries (for tests)."""
        payload = self.codec.encode(args, kwargs)
        now = self.jobs.clock.time()
        job = Job(
            id=new_job_id(),
            name=self.name,
            queue=self.queue,
            state=JobState.RUNNING,
            priority=self.priority,
            payload=payload,
            payload_version=self.payload_version,
            idempotency_key=None,
            attempts=0,
            max_attempts=self.retry.attempts,
            run_at=now,
            created_at=now,
            updated_at=now,
            provider=self.provider,
            timeout=self.timeout,
            context=capture_context(),
        )
        call_args, call_kwargs = self.codec.decode(payload)
        ctx = JobContext(job=job, jobs=self.jobs, clock=self.jobs.clock)
        with activate(job.context):
            return await self.fn(ctx, *call_args, **call_kwargs)


class _NewerPayload(AntifragileError):
    """A payload written by newer code than this worker's: retried (the deployment finishes)."""

    default_code = ErrorCode.SCHEMA_VERSION
    default_retryable = True


class ConfiguredJob(Generic[P, R]):
    """A job function with the options of one enqueue (see :meth:`JobFunction.configure`)."""

    def __init__(self, function: JobFunction[P, R], options: EnqueueOptions) -> None:
        self.function = function
        self.options = options

    def prepare(self, *args: P.args, **kwargs: P.kwargs) -> NewJob:
        """Validate the payload and build the job, without enqueueing it."""
        return self.function._prepare(self.options, args, kwargs)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Enqueued:
        """Validate the payload and enqueue the job with these options."""
        new = self.function._prepare(self.options, args, kwargs)
        return (await self.function.jobs.enqueue_many([new], connection=self.options.connection))[0]


# -- the dead-letter queue ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead jobs an operator means; every field that is set must match.

    ``older_than`` / ``newer_than`` are ages (seconds or ``timedelta``) of the job's last change
    -- for a dead job, when it died.
    """

    queue: str | None = None
    name: str | None = None
    provider: str | None = None
    error_code: str | None = None
    older_than: Duration | None = None
    newer_than: Duration | None = None
    ids: tuple[str, ...] = ()

    def to_job_filter(
        self, now: float, states: tuple[JobState, ...] = (JobState.DEAD,)
    ) -> JobFilter:
        return JobFilter(
            states=states,
            queue=self.queue,
            name=self.name,
            provider=self.provider,
            error_code=self.error_code,
            older_than=None if self.older_than is None else now - seconds(self.older_than),
            newer_than=None if self.newer_than is None else now - seconds(self.newer_than),
            ids=tuple(self.ids),
        )


Target = DeadLetterFilter | Sequence[str]


class DeadLetters:
    """The dead-letter queue: jobs that failed for good, waiting for an operator.

    ``list`` them (with filters), ``show`` one with its whole history, ``retry`` (redrive) some
    or all of them, ``resolve`` them with a reason (handled by hand, or not worth doing), and
    ``purge`` old ones. Jobs are named by ids or by a :class:`DeadLetterFilter`.
    """

    def __init__(self, jobs: Jobs) -> None:
        self._jobs = jobs

    def _filter(self, target: Target | None, states: tuple[JobState, ...]) -> JobFilter:
        now = self._jobs.clock.time()
        if target is None:
            return DeadLetterFilter().to_job_filter(now, states)
        if isinstance(target, DeadLetterFilter):
            return target.to_job_filter(now, states)
        if isinstance(target, str):
            target = [target]
        ids = tuple(target)
        if not ids:
            raise ConfigurationError("no job ids given")
        return JobFilter(states=states, ids=ids)

    async def list(
        self,
        where: DeadLetterFilter | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
        include_resolved: bool = False,
    ) -> builtins.list[Job]:
        """Dead jobs matching *where*, the most recent first."""
        states = (JobState.DEAD, JobState.RESOLVED) if include_resolved else (JobState.DEAD,)
        return await self._jobs.queue.find(self._filter(where, states), limit=limit, offset=offset)

    async def show(self, job_id: str) -> Job:
        """One dead (or resolved) job with its payload and every attempt; raises
        :class:`JobNotFoundError` when there is none with that id."""
        job = await self._jobs.queue.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no job with id {job_id!r}")
        if job.state not in (JobState.DEAD, JobState.RESOLVED):
            raise JobNotFoundError(
                f"job {job_id!r} is not in the dead-letter queue (it is {job.state.value})"
            )
        return job

    async def retry(self, target: Target, *, delay: Duration = 0.0) -> int:
        """Send the dead jobs named by *target* back to the queue (attempts counted again from
        zero, history kept, status flags back to pending); how many were redriven."""
        now = self._jobs.clock.time()
        return await self._jobs.queue.redrive(
            self._filter(target, (JobState.DEAD,)), now=now, delay=seconds(delay)
        )

    async def resolve(self, target: Target, *, reason: str) -> int:
        """Close the dead jobs named by *target* with *reason*; how many were resolved."""
        if not reason or not reason.strip():
            raise ConfigurationError("a reason is required to resolve dead jobs")
        now = self._jobs.clock.time()
        return await self._jobs.queue.resolve(
            self._filter(target, (JobState.DEAD,)), reason=reason.strip(), now=now
        )

    async def purge(
        self,
        older_than: Duration,
        *,
        where: DeadLetterFilter | None = None,
        include_dead: bool = True,
    ) -> int:
        """Delete resolved (and, unless ``include_dead=False``, dead) jobs whose last change is
        older than *older_than*; how many were deleted."""
        states = (JobState.DEAD, JobState.RESOLVED) if include_dead else (JobState.RESOLVED,)
        base = where or DeadLetterFilter()
        flt = replace(base, older_than=older_than)
        now = self._jobs.clock.time()
        return await self._jobs.queue.purge(flt.to_job_filter(now, states), now=now)

    async def redrive_recoverable(self, provider: str, *, delay: Duration = 0.0) -> int:
        """Redrive the dead jobs of *provider* that died of a failure its recovery may fix
        (codes in :data:`RETRYABLE_CODES`), leaving permanent failures where they are."""
        ids: builtins.list[str] = []
        offset = 0
        while True:
            page = await self._jobs.queue.find(
                JobFilter(states=(JobState.DEAD,), provider=provider), limit=500, offset=offset
            )
            ids.extend(j.id for j in page if j.last_error_code in RETRYABLE_CODES)
            if len(page) < 500:
                break
            offset += len(page)
        if not ids:
            return 0
        return await self.retry(ids, delay=delay)


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
    ) -> Callable[[PeriodicFunction], Schedule]:
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

    async def wait_for_redrives(self) -> None:
        """Wait for redrives started by breaker listeners (tests)."""
        await asyncio.sleep(0)  # a listener schedules its redrive with call_soon_threadsafe
        while self._redrives:
            await asyncio.gather(*list(self._redrives), return_exceptions=True)

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

    def worker(self, **options: Any) -> Worker:
        """A :class:`~antifragile.jobs.Worker` for these jobs (keyword options as its own)."""
        from antifragile.jobs._worker import Worker

        return Worker(self, **options)
