"""Jobs layer: durable jobs with leases, retries, a dead-letter queue, a scheduler and sagas."""

from antifragile.jobs._app import (
    ConfiguredJob,
    DeadLetterFilter,
    DeadLetters,
    JobContext,
    JobFunction,
    JobNotFoundError,
    Jobs,
)
from antifragile.jobs._cron import Cron
from antifragile.jobs._model import (
    CLAIMABLE,
    FINAL,
    WAKE_CODES,
    Enqueued,
    InboxEntry,
    Job,
    JobFilter,
    JobState,
    NewInboxEntry,
    NewJob,
    Outcome,
    QueueStats,
    Recorded,
    StatusFlag,
    new_job_id,
)
from antifragile.jobs._payload import looks_secret, redact_payload
from antifragile.jobs._policy import DEFAULT_JOB_RETRY, JobDeferred, job_retry_on
from antifragile.jobs._protocol import JobQueue, RecordQueue
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
from antifragile.jobs._scheduler import Fired, Schedule, Scheduler
from antifragile.jobs._worker import Worker

__all__ = [
    "CLAIMABLE",
    "DEFAULT_JOB_RETRY",
    "DEFAULT_STEP_RETRY",
    "FINAL",
    "WAKE_CODES",
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
    "NewInboxEntry",
    "NewJob",
    "Outcome",
    "QueueStats",
    "RecordQueue",
    "Recorded",
    "Saga",
    "SagaCompensationError",
    "SagaFailure",
    "SagaResult",
    "Schedule",
    "Scheduler",
    "StatusFlag",
    "Step",
    "StepContext",
    "StepTimeoutError",
    "Worker",
    "job_retry_on",
    "looks_secret",
    "new_job_id",
    "redact_payload",
]
