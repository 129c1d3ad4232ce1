"""Retention: how long finished jobs and dead processes' rows are kept.

The scheduler runs :func:`prune` every ``Retention.interval`` seconds (and ``antifragile jobs
prune`` on demand): succeeded jobs older than ``succeeded`` seconds, resolved dead-letter jobs
older than ``resolved``, and the heartbeat rows of processes not seen for ``processes`` seconds
are deleted. Jobs go in batches of ``batch`` rows, each one statement (the oldest first), so no
statement holds the table for long and any number of schedulers may prune at once. Dead jobs that
are not resolved are never deleted: they wait for an operator.
"""

from __future__ import annotations

from dataclasses import dataclass

from antifragile.errors import ConfigurationError
from antifragile.jobs._model import JobFilter, JobState
from antifragile.jobs._protocol import JobQueue

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Retention:
    """How long the scheduler keeps finished rows (seconds; ``None``: forever)."""

    succeeded: float | None = 7 * DAY
    resolved: float | None = 30 * DAY
    processes: float = DAY
    interval: float = 3_600.0
    batch: int = 1_000

    def __post_init__(self) -> None:
        for name in ("succeeded", "resolved"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ConfigurationError(f"retention {name} must be >= 0 seconds, got {value!r}")
        if not self.processes > 0 or not self.interval > 0:
            raise ConfigurationError("retention processes and interval must be > 0 seconds")
        if not isinstance(self.batch, int) or self.batch < 1:
            raise ConfigurationError(f"retention batch must be an int >= 1, got {self.batch!r}")


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one prune deleted (or, for a dry run, would delete: jobs are then counted)."""

    succeeded: int = 0
    resolved: int = 0
    processes: int = 0

    def to_json(self) -> dict[str, int]:
        return {"succeeded": self.succeeded, "resolved": self.resolved, "processes": self.processes}


def prune_filters(retention: Retention, *, now: float) -> dict[str, JobFilter]:
    """The jobs *retention* deletes at *now*, per kind (``succeeded``, ``resolved``)."""
    filters: dict[str, JobFilter] = {}
    if retention.succeeded is not None:
        filters["succeeded"] = JobFilter(
            states=(JobState.SUCCEEDED,), older_than=now - retention.succeeded
        )
    if retention.resolved is not None:
        filters["resolved"] = JobFilter(
            states=(JobState.RESOLVED,), older_than=now - retention.resolved
        )
    return filters


async def _delete_all(queue: JobQueue, where: JobFilter, *, now: float, batch: int) -> int:
    deleted = 0
    while True:
        count = await queue.purge(where, now=now, limit=batch)
        deleted += count
        if count < batch:
            return deleted


async def _count(queue: JobQueue, where: JobFilter, *, batch: int) -> int:
    counted = 0
    while True:
        page = await queue.find(where, limit=batch, offset=counted)
        counted += len(page)
        if len(page) < batch:
            return counted


async def prunable(queue: JobQueue, retention: Retention, *, now: float) -> Pruned:
    """What :func:`prune` would delete at *now* (counted; nothing is deleted)."""
    counts = {
        kind: await _count(queue, where, batch=max(retention.batch, 1000))
        for kind, where in prune_filters(retention, now=now).items()
    }
    before = now - retention.processes
    processes = sum(1 for p in await queue.processes() if p.last_seen < before)
    return Pruned(counts.get("succeeded", 0), counts.get("resolved", 0), processes)


async def prune(queue: JobQueue, retention: Retention, *, now: float) -> Pruned:
    """Delete what *retention* no longer keeps at *now*, in bounded batches."""
    counts = {
        kind: await _delete_all(queue, where, now=now, batch=retention.batch)
        for kind, where in prune_filters(retention, now=now).items()
    }
    processes = await queue.forget_processes(before=now - retention.processes)
    return Pruned(counts.get("succeeded", 0), counts.get("resolved", 0), processes)
