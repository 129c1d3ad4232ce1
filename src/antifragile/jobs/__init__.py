"""Jobs layer: durable jobs with leases, retries, a dead-letter queue, a scheduler and sagas."""

from antifragile.jobs._model import (
    CLAIMABLE,
    FINAL,
    Enqueued,
    Job,
    JobFilter,
    JobState,
    NewJob,
    Outcome,
    QueueStats,
    StatusFlag,
    new_job_id,
)
from antifragile.jobs._protocol import JobQueue

__all__ = [
    "CLAIMABLE",
    "FINAL",
    "Enqueued",
    "Job",
    "JobFilter",
    "JobQueue",
    "JobState",
    "NewJob",
    "Outcome",
    "QueueStats",
    "StatusFlag",
    "new_job_id",
]
