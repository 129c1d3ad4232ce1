"""The dead-letter queue API: :class:`DeadLetters` (``jobs.dlq``) and its filter.

Dead jobs are listed, shown, retried (redriven), resolved or discarded with a reason, and purged;
when a provider's circuit breaker closes, its dead jobs that failed for a reason its recovery may
fix (:data:`RETRYABLE_CODES`) are redriven. Needs :class:`~antifragile.jobs.Jobs` only for its
types.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from antifragile.errors import ConfigurationError, ErrorCode
from antifragile.jobs._function import JobNotFoundError
from antifragile.jobs._model import (
    Job,
    JobFilter,
    JobState,
)
from antifragile.policies._clock import Duration, seconds

if TYPE_CHECKING:
    from antifragile.jobs._app import Jobs

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
        wait = seconds(delay)
        if not (wait >= 0 and math.isfinite(wait)):  # an infinite run_at breaks every listing
            raise ConfigurationError(f"delay must be a finite number of seconds >= 0, got {wait!r}")
        now = self._jobs.clock.time()
        return await self._jobs.queue.redrive(
            self._filter(target, (JobState.DEAD,)), now=now, delay=wait
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
