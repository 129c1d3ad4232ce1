"""Sagas: ordered steps with compensations, run as one durable job.

::

    checkout = jobs.saga("checkout", steps=[
        Step(create_customer, compensate=delete_customer),
        Step(charge_card, compensate=refund_card),
        Step(send_receipt),
    ])

    async with jobs:
        await checkout.start({"email": "ada@example.com", "amount": 42},
                             idempotency_key="order:1234")

A step's action and its compensation are each either a declared job function
(``@jobs.job``; it is called with the saga data's fields that it declares as parameters) or a
plain ``async def f(ctx, data)``. Both receive a :class:`StepContext`: a
:class:`~antifragile.jobs.JobContext` whose ``idempotency_key`` is the step's own,
``saga:<job id>:<step>`` (``saga:<job id>:<step>:compensate`` for a compensation; steps count
from 1), so a step run twice -- a worker died after the provider acted -- has one effect when
it hands that key to the provider. ``ctx.results`` holds what earlier steps returned, by step
name (a compensation finds there what its own action returned, e.g. the id to delete). Results
are stored with the job as JSON, redacted like payloads: a secret-looking field (``token``,
``api_key``...) is kept as ``[REDACTED]``, so return references, not credentials.

**Durable progress.** The saga is one job. After each action and each compensation its progress
is checkpointed with the job (``ctx.save_progress``), so when the worker running it dies, the
worker that takes the job over after the lease expires resumes at the next step: finished steps
do not run again. (A step interrupted *while* it ran does run again, with the same idempotency
key.)

**Retries.** Each action and compensation is retried under its own policy: a job function's
``retry``, else ``Step(retry=..., compensate_retry=...)``, else the saga's ``step_retry``
(:data:`DEFAULT_STEP_RETRY`). A retry is not a sleep inside the worker: the attempt count is
checkpointed and the saga job is rescheduled for the step's back-off delay (the job's history
shows each failed attempt), so a long back-off holds no worker and survives restarts. An open
circuit breaker defers the saga without counting an attempt.

**Failure.** When step *k*'s action fails for good (its policy gives up), the compensations of
steps *k-1* down to 1 run, in that order (steps without one are skipped). The job then succeeds
with a :class:`SagaResult` (``status="compensated"``) as its result, listing the actions
executed, the one that failed and the compensations run; a saga whose actions all succeed ends
with ``status="completed"``. When a compensation fails for good the saga cannot restore a
consistent state by itself: the job goes **dead**, into the dead-letter queue, with a
:class:`SagaCompensationError` (code ``SAGA_COMPENSATION_FAILED``) that says which
compensation failed, which ran and which did not. An operator who fixes the cause redrives it;
it resumes at that compensation with a fresh count of attempts.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import pydantic_core

from antifragile.errors import AntifragileError, ConfigurationError, ErrorCode
from antifragile.jobs._function import JobContext, JobFunction
from antifragile.jobs._model import JSON, Enqueued, Job, StatusFlag
from antifragile.jobs._payload import redact_payload
from antifragile.jobs._policy import decide_failure, describe_error, job_retry_on
from antifragile.observability import SagaCompensated
from antifragile.policies import Constant, Exponential, Retry
from antifragile.policies._clock import Duration

if TYPE_CHECKING:
    from antifragile.jobs._app import Jobs

#: the retry policy of a step given as a plain callable, when neither the step nor the saga
#: names one: 5 attempts, waits growing from 2 s (full jitter) up to 5 min
DEFAULT_STEP_RETRY = Retry(
    attempts=5,
    backoff=Exponential(2.0, multiplier=2.0, cap=300.0, jitter="full"),
    retry_on=job_retry_on,
)

#: room in the saga job's own attempt budget for failures outside the steps (a store outage)
_SPARE_ATTEMPTS = 10

SAGA_COMPENSATION_FAILED = "SAGA_COMPENSATION_FAILED"

StepCallable = Callable[["StepContext", Any], Awaitable[Any]]
StepFunction = JobFunction[..., Any] | StepCallable


class SagaCompensationError(AntifragileError):
    """A compensation failed for good: the saga job goes to the dead-letter queue.

    The message names the failed compensation and its error, the compensations that ran and
    those still owed; redriving the job resumes at the failed compensation.
    """

    default_code = SAGA_COMPENSATION_FAILED  # type: ignore[assignment]
    default_retryable = False


class _StepRetry(AntifragileError):
    """A step failed and its policy retries it: the saga job runs again after ``retry_after``.

    Carries the step failure's own code, so that the job's history and the dead-letter queue's
    filters see what actually failed."""

    default_retryable = True

    def __init__(self, message: str, *, code: str, retry_after: float) -> None:
        super().__init__(message, code=code, retryable=True)
        self.retry_after = retry_after


class StepTimeoutError(AntifragileError):
    """A step ran longer than its timeout (retried per its policy)."""

    default_code = ErrorCode.TIMEOUT
    default_retryable = True


class _LostJob(AntifragileError):
    """This worker no longer holds the saga's job (another one took it over): stop here."""

    default_retryable = True


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a saga: an *action* and the *compensate* that undoes it (optional).

    *name* defaults to the action's name and must be unique in the saga. *retry* /
    *compensate_retry* override the policies (by default: a job function's own, else the saga's
    ``step_retry``); *timeout* bounds one attempt of a plain callable (seconds; a job function
    uses its own ``timeout``).
    """

    action: StepFunction
    compensate: StepFunction | None = None
    name: str | None = None
    retry: Retry | None = None
    compensate_retry: Retry | None = None
    timeout: float | None = None

    @property
    def label(self) -> str:
        return self.name or _name_of(self.action)


def _name_of(fn: StepFunction) -> str:
    if isinstance(fn, JobFunction):
        return fn.name
    name = getattr(fn, "__name__", None)
    if not name:
        raise ConfigurationError(f"cannot name the saga step {fn!r}: pass Step(name=...)")
    return str(name)


@dataclass(eq=False)
class StepContext(JobContext):
    """The context of one saga action or compensation.

    ``idempotency_key`` is the step's own (see the module docs); ``step`` its number (from 1)
    and ``step_name`` its name; ``step_attempt`` the attempt of this action or compensation
    (from 1; ``attempt`` counts the saga job's runs); ``data`` the saga's data; ``results``
    what earlier actions returned, by step name; ``compensating`` tells a compensation from an
    action.
    :meth:`save_progress` checkpoints this step's own progress inside the saga's, and
    ``state_data`` gives it back when the step runs again.
    """

    saga: str = ""
    step: int = 0
    step_name: str = ""
    step_key: str = ""
    step_attempt: int = 1
    data: Any = None
    results: dict[str, Any] = field(default_factory=dict)
    compensating: bool = False
    checkpoint: Callable[[JSON], Awaitable[bool]] | None = None

    @property
    def idempotency_key(self) -> str:
        return self.step_key

    async def save_progress(self, data: JSON) -> bool:
        self.state_data = data
        if self.checkpoint is None:
            return True
        return await self.checkpoint(data)


@dataclass(frozen=True, slots=True)
class SagaFailure:
    """The action that failed for good: its step number and name, error code and message."""

    step: int
    name: str
    code: str
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "name": self.name, "code": self.code, "error": self.error}


@dataclass(frozen=True, slots=True)
class SagaResult:
    """How a saga ended (the result of its job).

    ``status`` is ``completed`` (every action succeeded) or ``compensated`` (an action failed
    for good and the compensations ran). ``executed`` lists the actions that succeeded, in
    order; ``failed`` the action that failed; ``compensated`` the compensations run, in the
    order they ran; ``skipped`` the executed steps that have no compensation; ``results`` what
    each action returned, by step name.
    """

    saga: str
    status: Literal["completed", "compensated"]
    executed: tuple[str, ...]
    failed: SagaFailure | None
    compensated: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    results: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "saga": self.saga,
            "status": self.status,
            "executed": list(self.executed),
            "failed": None if self.failed is None else self.failed.to_json(),
            "compensated": list(self.compensated),
            "skipped": list(self.skipped),
            "results": dict(self.results),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SagaResult:
        failed = data.get("failed")
        return cls(
            saga=str(data["saga"]),
            status=data["status"],
            executed=tuple(data.get("executed", ())),
            failed=None if not failed else SagaFailure(**failed),
            compensated=tuple(data.get("compensated", ())),
            skipped=tuple(data.get("skipped", ())),
            results=dict(data.get("results") or {}),
        )

    @classmethod
    def from_job(cls, job: Job) -> SagaResult | None:
        """The result of a finished saga job (``None`` while it runs, or when it died)."""
        if not isinstance(job.result, Mapping) or "saga" not in job.result:
            return None
        return cls.from_json(job.result)


def _jsonable(value: Any) -> Any:
    try:
        return pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError:
        return repr(value)[:1000]


def _fresh_state(name: str) -> dict[str, Any]:
    return {
        "saga": name,
        "phase": "forward",
        "next": 0,  # index of the next action to run
        "executed": [],
        "results": {},
        "failed": None,
        "undo": None,  # index of the next compensation to run (counting down)
        "compensated": [],
        "skipped": [],
        "attempts": {},  # failed attempts of the current action / compensation
        "delays": {},  # the last back-off chosen for it
        "progress": {},  # a step's own checkpoint (StepContext.save_progress)
        "dead": False,
    }


class Saga:
    """A declared saga: :meth:`start` runs it durably (see the module docs).

    Built by ``jobs.saga(name, steps=[...])``. ``function`` is the job it runs as, declared
    under the saga's name on *queue* with *priority*; *timeout* bounds one run of the whole
    saga (seconds; ``None``, the default: unbounded -- each step has its own); *step_retry* is
    the policy of plain-callable steps that name none. The job's own attempt budget is the sum
    of its steps' attempts, plus a few for failures between steps (a store outage while
    checkpointing), which wait *retry_delay* seconds.
    """

    def __init__(
        self,
        jobs: Jobs,
        name: str,
        steps: Sequence[Step],
        *,
        queue: str = "default",
        priority: int = 0,
        timeout: float | None = None,
        step_retry: Retry = DEFAULT_STEP_RETRY,
        retry_delay: float = 15.0,
    ) -> None:
        if not name:
            raise ConfigurationError("a saga needs a name")
        steps = list(steps)
        if not steps:
            raise ConfigurationError(f"saga {name!r}: needs at least one step")
        for step in steps:
            if not isinstance(step, Step):
                raise ConfigurationError(f"saga {name!r}: steps must be Step(...), got {step!r}")
            for fn in (step.action, step.compensate):
                if fn is None or isinstance(fn, JobFunction):
                    continue
                if not inspect.iscoroutinefunction(fn):
                    raise ConfigurationError(
                        f"saga {name!r}: step {step.label!r} must be a job function or an "
                        "async def taking (ctx, data)"
                    )
            if step.timeout is not None and not step.timeout > 0:
                raise ConfigurationError(f"saga {name!r}: step timeout must be > 0 seconds")
        labels = [step.label for step in steps]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ConfigurationError(
                f"saga {name!r}: step names must be unique; repeated: {', '.join(duplicates)} "
                "(pass Step(name=...))"
            )
        if not isinstance(step_retry, Retry):
            raise ConfigurationError(f"saga {name!r}: step_retry must be a Retry")
        self.jobs = jobs
        self.name = name
        self.steps: tuple[Step, ...] = tuple(steps)
        self.step_retry = step_retry
        budget = sum(
            self._policy(step, compensate=False).attempts
            + (self._policy(step, compensate=True).attempts if step.compensate else 0)
            for step in steps
        )
        # the saga job's own policy: step retries come back with their delay as retry_after;
        # other failures (the store down while checkpointing) wait retry_delay seconds
        own_retry = Retry(
            attempts=budget + _SPARE_ATTEMPTS,
            backoff=Constant(retry_delay),
            retry_on=job_retry_on,
        )

        async def run_saga(ctx: JobContext, data: Any = None) -> Any:
            return await self._run(ctx, data)

        run_saga.__name__ = name
        run_saga.__qualname__ = f"saga:{name}"
        self.function: JobFunction[..., Any] = jobs.job(
            name, queue=queue, retry=own_retry, timeout=timeout, priority=priority
        )(run_saga)

    def __repr__(self) -> str:
        return f"Saga({self.name!r}, steps={[s.label for s in self.steps]!r})"

    async def start(
        self,
        data: Any = None,
        *,
        idempotency_key: str | None = None,
        delay: Duration | None = None,
        run_at: float | datetime | None = None,
        status: StatusFlag | None = None,
        connection: Any = None,
        context: Mapping[str, str] | None = None,
    ) -> Enqueued:
        """Enqueue a run of the saga with *data* (JSON; a dict for job-function steps).

        With *idempotency_key*, starting the same saga twice runs it once. The run carries the
        current request's context (its request id...) unless *context* is given. The other
        options are those of :meth:`JobFunction.configure`."""
        return await self.function.configure(
            idempotency_key=idempotency_key,
            delay=delay,
            run_at=run_at,
            status=status,
            connection=connection,
            context=context,
        ).enqueue(data=data)

    # -- running ----------------------------------------------------------------------------

    def _policy(self, step: Step, *, compensate: bool) -> Retry:
        fn = step.compensate if compensate else step.action
        own = step.compensate_retry if compensate else step.retry
        if own is not None:
            return own
        if isinstance(fn, JobFunction):
            return fn.retry
        return self.step_retry

    async def _run(self, ctx: JobContext, data: Any) -> Any:
        state = ctx.state_data
        if not isinstance(state, dict) or state.get("saga") != self.name:
            state = _fresh_state(self.name)
        else:
            state = dict(state)
        if state.get("dead"):  # redriven from the dead-letter queue: try the failed step anew
            state["dead"] = False
            state["attempts"] = {}
            state["delays"] = {}
        if state["phase"] == "forward":
            await self._forward(ctx, data, state)
        if state["phase"] == "compensating":
            await self._compensate(ctx, data, state)
        return self._result(state).to_json()

    async def _save(self, ctx: JobContext, state: dict[str, Any]) -> None:
        if not await ctx.save_progress(state):
            raise _LostJob(f"saga {self.name!r}: the job was taken over by another worker")

    async def _forward(self, ctx: JobContext, data: Any, state: dict[str, Any]) -> None:
        while state["next"] < len(self.steps):
            index = state["next"]
            step = self.steps[index]
            key = str(index + 1)
            try:
                result = await self._call(
                    ctx, data, state, step, index, step.action, compensate=False
                )
            except Exception as exc:
                await self._give_up_or_raise(ctx, state, step, index, key, exc, compensate=False)
                info = describe_error(exc)
                failure = SagaFailure(index + 1, step.label, info.code, info.message)
                state["failed"] = failure.to_json()
                state["phase"] = "compensating"
                state["undo"] = index - 1
                state["attempts"], state["delays"] = {}, {}
                state["progress"] = {}
                await self._save(ctx, state)
                return
            state["executed"] = [*state["executed"], step.label]
            kept = redact_payload(_jsonable(result))
            state["results"] = {**state["results"], step.label: kept}
            state["next"] = index + 1
            state["attempts"], state["delays"] = {}, {}
            state["progress"] = {}
            await self._save(ctx, state)
        state["phase"] = "done"

    async def _compensate(self, ctx: JobContext, data: Any, state: dict[str, Any]) -> None:
        while state["undo"] is not None and state["undo"] >= 0:
            index = state["undo"]
            step = self.steps[index]
            if step.compensate is None:
                state["skipped"] = [*state["skipped"], step.label]
                state["undo"] = index - 1
                continue
            key = f"{index + 1}:compensate"
            try:
                await self._call(ctx, data, state, step, index, step.compensate, compensate=True)
            except Exception as exc:
                await self._give_up_or_raise(ctx, state, step, index, key, exc, compensate=True)
                info = describe_error(exc)
                state["dead"] = True
                await self._save(ctx, state)
                _observe_compensation(ctx, self.name, step.label, succeeded=False)
                owed = [
                    s.label for s in reversed(self.steps[: index + 1]) if s.compensate is not None
                ]
                failed = state["failed"] or {}
                raise SagaCompensationError(
                    f"saga {self.name!r}: the compensation of step {index + 1} "
                    f"({step.label!r}) failed for good ({info.code}: {info.message}) after "
                    f"action {failed.get('step')} ({failed.get('name')!r}) failed; "
                    f"compensated: {', '.join(state['compensated']) or 'none'}; "
                    f"not compensated: {', '.join(owed)}"
                ) from exc
            state["compensated"] = [*state["compensated"], step.label]
            state["undo"] = index - 1
            state["attempts"], state["delays"] = {}, {}
            state["progress"] = {}
            await self._save(ctx, state)
            _observe_compensation(ctx, self.name, step.label, succeeded=True)
        state["phase"] = "compensated"

    async def _give_up_or_raise(
        self,
        ctx: JobContext,
        state: dict[str, Any],
        step: Step,
        index: int,
        key: str,
        exc: Exception,
        *,
        compensate: bool,
    ) -> None:
        """Raise what makes the worker run the saga again (a retry, or a deferral when a
        breaker is open); return when the step's policy gives up."""
        if isinstance(exc, _LostJob):
            raise exc
        policy = self._policy(step, compensate=compensate)
        failures = int(state["attempts"].get(key, 0)) + 1
        now = ctx.clock.time()
        decision = decide_failure(
            policy,
            exc,
            attempt=failures,
            max_attempts=policy.attempts,
            now=now,
            created_at=ctx.job.created_at,
            previous_delay=float(state["delays"].get(key, 0.0)),
        )
        if decision.kind == "dead":
            return
        if decision.kind == "defer":  # an open breaker: the worker defers the whole saga
            raise exc
        delay = decision.delay or 0.0
        state["attempts"] = {**state["attempts"], key: failures}
        state["delays"] = {**state["delays"], key: delay}
        await self._save(ctx, state)
        info = describe_error(exc)
        what = "compensation of step" if compensate else "step"
        raise _StepRetry(
            f"saga {self.name!r}: {what} {index + 1} ({step.label!r}) attempt {failures} "
            f"failed: {info.message}",
            code=info.code,
            retry_after=delay,
        ) from exc

    async def _call(
        self,
        ctx: JobContext,
        data: Any,
        state: dict[str, Any],
        step: Step,
        index: int,
        fn: StepFunction,
        *,
        compensate: bool,
    ) -> Any:
        key = f"saga:{ctx.job.id}:{index + 1}" + (":compensate" if compensate else "")
        progress_key = f"{index + 1}" + (":compensate" if compensate else "")

        async def checkpoint(progress: JSON) -> bool:
            state["progress"] = {**state["progress"], progress_key: progress}
            return await ctx.save_progress(state)

        step_ctx = StepContext(
            job=ctx.job,
            jobs=ctx.jobs,
            clock=ctx.clock,
            worker=ctx.worker,
            logger=ctx.logger,
            state_data=state["progress"].get(progress_key),
            saga=self.name,
            step=index + 1,
            step_name=step.label,
            step_key=key,
            step_attempt=int(state["attempts"].get(progress_key, 0)) + 1,
            data=data,
            results=dict(state["results"]),
            compensating=compensate,
            checkpoint=checkpoint,
        )
        call: Awaitable[Any]
        if isinstance(fn, JobFunction):
            if data is not None and not isinstance(data, Mapping):
                raise ConfigurationError(
                    f"saga {self.name!r}: step {step.label!r} is a job function; the saga data "
                    "must be a JSON object whose fields it takes"
                )
            wanted = {p.name for p in fn.codec.params}
            fields = {k: v for k, v in (data or {}).items() if k in wanted}
            args, kwargs = fn.codec.decode(fields)
            call = fn.fn(step_ctx, *args, **kwargs)
            timeout = fn.timeout
        else:
            call = fn(step_ctx, data)
            timeout = step.timeout
        if timeout is None:
            return await call
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                return await call
        except TimeoutError:
            if not limit.expired():
                raise
            raise StepTimeoutError(
                f"saga {self.name!r}: step {index + 1} ({step.label!r}) ran longer than "
                f"{timeout:g}s"
            ) from None

    def _result(self, state: dict[str, Any]) -> SagaResult:
        failed = state.get("failed")
        return SagaResult(
            saga=self.name,
            status="compensated" if failed else "completed",
            executed=tuple(state["executed"]),
            failed=None if not failed else SagaFailure(**failed),
            compensated=tuple(state["compensated"]),
            skipped=tuple(state["skipped"]),
            results=dict(state["results"]),
        )


def _observe_compensation(ctx: JobContext, saga: str, step: str, *, succeeded: bool) -> None:
    observer = ctx.jobs.observer
    if observer is not None:
        observer.on_event(SagaCompensated(policy=saga, operation=step, succeeded=succeeded))
