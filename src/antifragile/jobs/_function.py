"""Job functions and the context a job runs with: what :meth:`Jobs.job` makes of an
``async def``, its enqueue options, and :class:`JobContext`.

A job function is an ``async def`` whose first parameter is the :class:`JobContext`; the other
parameters are its payload, validated (pydantic, from the annotations) and encoded as JSON when
the job is enqueued -- a wrong payload is an error in the caller, never in a worker. The
decorator returns a :class:`JobFunction`, typed like the function it wraps. This module needs
:class:`~antifragile.jobs.Jobs` only for its types.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar

from antifragile.errors import AntifragileError, ConfigurationError, ErrorCode
from antifragile.jobs._model import (
    JSON,
    Enqueued,
    Job,
    JobState,
    NewJob,
    StatusFlag,
    new_job_id,
)
from antifragile.jobs._payload import PayloadCodec
from antifragile.observability import (
    activate,
    capture_context,
    current_request_id,
)
from antifragile.policies import SYSTEM_CLOCK, Clock, Retry
from antifragile.policies._clock import Duration, seconds

if TYPE_CHECKING:
    from antifragile.jobs._app import Jobs

P = ParamSpec("P")
R = TypeVar("R")

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
        if not (wait >= 0 and math.isfinite(wait)):
            raise ConfigurationError(f"delay must be a finite number of seconds >= 0, got {wait!r}")
        return now + wait
    if isinstance(run_at, datetime):
        if run_at.tzinfo is None:
            raise ConfigurationError("run_at must be a timezone-aware datetime")
        return run_at.timestamp()
    if run_at is not None:
        if not math.isfinite(float(run_at)):
            raise ConfigurationError(f"run_at must be a finite time, got {run_at!r}")
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


#: the options of a plain ``enqueue`` (immutable: one for all)
_NO_OPTIONS = EnqueueOptions()


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
        return self._prepare(_NO_OPTIONS, args, kwargs)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> Enqueued:
        """Validate the payload and enqueue the job to run as soon as a worker is free."""
        new = self._prepare(_NO_OPTIONS, args, kwargs)
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
