"""Jobs layer: durable jobs with leases, retries, a dead-letter queue, a scheduler and sagas."""

import typing as _typing

from antifragile.jobs._app import (
    ConfiguredJob,
    DeadLetterFilter,
    DeadLetters,
    JobContext,
    JobFunction,
    JobNotFoundError,
    Jobs,
)
from antifragile.jobs._coalesce import Coalescer
from antifragile.jobs._cron import Cron
from antifragile.jobs._memory import MemoryJobQueue
from antifragile.jobs._model import (
    FINAL,
    UNFINISHED,
    WAKE_CODES,
    Enqueued,
    InboxEntry,
    Job,
    JobFilter,
    JobState,
    NewInboxEntry,
    NewJob,
    Outcome,
    ProcessBeat,
    QueueStats,
    Recorded,
    StatusFlag,
    new_job_id,
)
from antifragile.jobs._policy import DEFAULT_JOB_RETRY, JobDeferred, job_retry_on
from antifragile.jobs._protocol import JobQueue, RecordQueue
from antifragile.jobs._retention import Pruned, Retention
from antifragile.jobs._saga import (
    DEFAULT_STEP_RETRY,
    Saga,
    SagaCompensationError,
    SagaFailure,
    SagaResult,
    Step,
    StepContext,
    StepTimeoutError,
)
from antifragile.jobs._scheduler import Fired, Schedule, Scheduler, SchedulerOptions
from antifragile.jobs._worker import Worker, WorkerOptions
from antifragile.observability._moved import moved_attribute as _moved_attribute

#: names this package exported before 0.2 that are now internal (or live elsewhere); they keep
#: working, with a DeprecationWarning, until the release after
_MOVED: dict[str, tuple[str, str | None]] = {
    "CLAIMABLE": ("antifragile.jobs._model", None),
    "looks_secret": ("antifragile.jobs._payload", None),
    "redact_payload": ("antifragile.jobs._payload", None),
}


# hidden from type checkers: a name that is not declared above is an error for them
if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> _typing.Any:
        return _moved_attribute(__name__, name, _MOVED)


__all__ = [
    "DEFAULT_JOB_RETRY",
    "DEFAULT_STEP_RETRY",
    "FINAL",
    "UNFINISHED",
    "WAKE_CODES",
    "Coalescer",
    "ConfiguredJob",
    "Cron",
    "DeadLetterFilter",
    "DeadLetters",
    "Enqueued",
    "Fired",
    "InboxEntry",
    "Job",
    "JobContext",
    "JobDeferred",
    "JobFilter",
    "JobFunction",
    "JobNotFoundError",
    "JobQueue",
    "JobState",
    "Jobs",
    "MemoryJobQueue",
    "NewInboxEntry",
    "NewJob",
    "Outcome",
    "ProcessBeat",
    "Pruned",
    "QueueStats",
    "RecordQueue",
    "Recorded",
    "Retention",
    "Saga",
    "SagaCompensationError",
    "SagaFailure",
    "SagaResult",
    "Schedule",
    "Scheduler",
    "SchedulerOptions",
    "StatusFlag",
    "Step",
    "StepContext",
    "StepTimeoutError",
    "Worker",
    "WorkerOptions",
    "job_retry_on",
    "new_job_id",
]
