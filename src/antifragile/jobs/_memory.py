"""The in-process job queue: :class:`MemoryJobQueue`, on a :class:`~antifragile.stores.MemoryStore`.

For tests and for a single process, like procrastinate's ``InMemoryConnector`` or dramatiq's
``StubBroker``: the whole :class:`~antifragile.jobs.JobQueue` contract -- claims and leases,
outcomes, status flags, the dead-letter queue, ordering keys, the inbox -- in dicts, with the
same rules as the database backends (the same contract suite runs on all three). Nothing
survives the process, and nothing is shared with another process.

Each operation is one synchronous section under a lock, with no ``await`` inside, so it is
atomic with respect to the event loop and to other threads, as one statement or transaction is
in a database. Payloads and results go through their JSON form on the way in (a value that is
not JSON is refused before anything changes), so a job reads back as it would from a database.
Status flags are fields of the store's key-value entries, set in the same section as the job's
state.

There is no transactional outbox: ``enqueue(..., connection=...)`` is a ConfigurationError
(there is no database transaction to join).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from antifragile.errors import ConfigurationError
from antifragile.jobs._model import (
    CLAIMABLE,
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
)
from antifragile.jobs._wakeup import LOCAL, Wake
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.stores._codec import decode, encode
from antifragile.stores._memory import MemoryStore
from antifragile.stores._protocols import Versioned

__all__ = ["MemoryJobQueue"]

#: recorded when a job is taken over from a worker whose lease ran out (as the SQL backends do)
LEASE_EXPIRED_MESSAGE = "its worker stopped renewing the lease (crashed, killed or stalled)"
_KINDS = frozenset({"succeeded", "retry", "defer", "dead", "release"})


@contextlib.asynccontextmanager
async def _listening(key: str, wake: Wake) -> AsyncIterator[None]:
    with LOCAL.listening(key, wake):
        yield


def _json(value: Any) -> Any:
    """*value* as it reads back from its JSON form (ConfigurationError when it has none)."""
    return None if value is None else decode(encode(value))


def _matches(job: Job, where: JobFilter) -> bool:
    if where.states and job.state not in {JobState(state) for state in where.states}:
        return False
    for wanted, value in (
        (where.queue, job.queue),
        (where.name, job.name),
        (where.provider, job.provider),
        (where.error_code, job.last_error_code),
    ):
        if wanted is not None and wanted != value:
            return False
    if where.older_than is not None and not job.updated_at < where.older_than:
        return False
    if where.newer_than is not None and not job.updated_at >= where.newer_than:
        return False
    if where.id_part is not None and not (
        job.id.startswith(where.id_part) or job.id.endswith(where.id_part)
    ):
        return False
    return not where.ids or job.id in where.ids


def _claim_order(job: Job) -> tuple[int, float, str]:
    return (-job.priority, job.run_at, job.id)


class MemoryJobQueue:
    """:class:`~antifragile.jobs.JobQueue` in dicts; see the module docs.

    *store* is the :class:`~antifragile.stores.MemoryStore` whose key-value entries hold the
    status flags (a new one when omitted, opened with *clock*). The queue neither opens nor
    closes it.
    """

    def __init__(self, store: MemoryStore | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        if store is None:
            store = MemoryStore(clock=clock)
        if not isinstance(store, MemoryStore):
            raise ConfigurationError(
                f"MemoryJobQueue needs a MemoryStore, got {type(store).__name__}"
            )
        self._store = store
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._keys: dict[str, str] = {}  # idempotency key -> job id
        self._ordered: dict[str, dict[str, None]] = {}  # ordering key -> its job ids, in order
        self._places: dict[str, int] = {}  # ordering key -> the last place taken
        self._inbox: dict[str, InboxEntry] = {}
        self._events: dict[tuple[str, str], str] = {}  # (channel, event id) -> entry id
        self._processes: dict[str, ProcessBeat] = {}
        self._key = f"memory-queue:{id(self)}"

    def __repr__(self) -> str:
        return f"MemoryJobQueue({self._store!r})"

    def wakeups(
        self, wake: Wake, *, queues: Sequence[str] | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """While entered, *wake* is called when jobs are enqueued, whatever their queue
        (*queues* is not looked at; see :mod:`antifragile.jobs._wakeup`)."""
        return _listening(self._key, wake)

    async def next_due(self, *, now: float) -> float | None:
        """The earliest ``run_at`` after *now* of a job waiting to run (``None``: none)."""
        with self._lock:
            due = [j.run_at for j in self._jobs.values() if j.state in CLAIMABLE and j.run_at > now]
        return min(due, default=None)

    @property
    def store(self) -> MemoryStore:
        """The store the queue lives in (status flags are its ``kv`` entries)."""
        return self._store

    # -- inside the lock ------------------------------------------------------------------------

    def _flag(self, flag: StatusFlag, value: str, now: float) -> None:
        self._store.kv.set_field(flag.key, flag.field, value, now=now)

    def _prepared(self, job: NewJob) -> NewJob:
        """*job* with its values in their JSON form; refused before anything is written."""
        if job.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {job.max_attempts!r}")
        return replace(
            job,
            payload=_json(job.payload),
            state_data=_json(job.state_data),
            context=_json(dict(job.context)) if job.context else None,
        )

    def _insert(self, job: NewJob, now: float) -> Enqueued:
        key = job.idempotency_key
        existing = self._keys.get(key) if key is not None else None
        if existing is None and job.id in self._jobs:
            existing = job.id
        if existing is not None:
            return Enqueued(existing, False)
        place = None
        if job.ordering_key is not None:
            place = self._places.get(job.ordering_key, 0) + 1
            self._places[job.ordering_key] = place
            self._ordered.setdefault(job.ordering_key, {})[job.id] = None
        self._jobs[job.id] = Job(
            id=job.id,
            name=job.name,
            queue=job.queue,
            state=JobState.SCHEDULED if job.run_at > now else JobState.QUEUED,
            priority=job.priority,
            payload=job.payload,
            payload_version=job.payload_version,
            idempotency_key=key,
            attempts=0,
            max_attempts=job.max_attempts,
            run_at=job.run_at,
            created_at=now,
            updated_at=now,
            provider=job.provider,
            timeout=job.timeout,
            status_flag=job.status_flag,
            state_data=job.state_data,
            context=dict(job.context or {}),
            ordering_key=job.ordering_key,
            ordering_seq=place,
        )
        if key is not None:
            self._keys[key] = job.id
        if job.status_flag is not None:
            self._flag(job.status_flag, job.status_flag.pending, now)
        return Enqueued(job.id, True)

    def _in_turn(self, job: Job, now: float) -> bool:
        """Whether *job* may start now as far as its ordering key is concerned."""
        if job.ordering_key is None:
            return True
        seq = job.ordering_seq or 0
        for other_id in self._ordered.get(job.ordering_key, ()):
            if other_id == job.id:
                continue
            other = self._jobs[other_id]
            if other.state not in UNFINISHED:
                continue
            if (other.ordering_seq or 0) < seq:
                return False
            if other.state is JobState.RUNNING and (other.lease_until or 0.0) > now:
                return False
        return True

    def _unorder(self, job: Job) -> None:
        """Forget *job* in its key's order (it is finished for good, or gone)."""
        if job.ordering_key is not None:
            ids = self._ordered.get(job.ordering_key)
            if ids is not None:
                ids.pop(job.id, None)
                if not ids:
                    del self._ordered[job.ordering_key]

    def _delete(self, job: Job) -> None:
        del self._jobs[job.id]
        if job.idempotency_key is not None and self._keys.get(job.idempotency_key) == job.id:
            del self._keys[job.idempotency_key]
        self._unorder(job)

    # -- JobQueue ---------------------------------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[NewJob], *, now: float, connection: Any = None
    ) -> list[Enqueued]:
        if connection is not None:
            raise ConfigurationError(
                "the memory job queue has no transactional outbox: enqueue(connection=...) "
                "needs a SQLite or PostgreSQL queue"
            )
        prepared = [self._prepared(job) for job in jobs]
        with self._lock:
            enqueued = [self._insert(job, now) for job in prepared]
        LOCAL.notify(self._key)
        return enqueued

    async def save_and_enqueue(
        self,
        key: str,
        value: Any,
        *,
        expected_version: int | None,
        jobs: Sequence[NewJob],
        now: float,
        ttl: float | None = None,
        alongside: Mapping[str, Any] | None = None,
    ) -> tuple[Versioned, list[Enqueued]] | None:
        """See :meth:`~antifragile.jobs.RecordQueue.save_and_enqueue`: the entries and the jobs
        in one step under the queue's lock (the entries put back if the jobs cannot be
        written)."""
        prepared = [self._prepared(job) for job in jobs]
        kv = self._store.kv
        with self._lock:
            swapped = kv.swap(key, value, expected_version=expected_version, now=now, ttl=ttl)
            if swapped is None:
                return None
            undos = [swapped[1]]
            try:
                for other, other_value in (alongside or {}).items():
                    created = kv.swap(other, other_value, expected_version=None, now=now, ttl=ttl)
                    if created is not None:
                        undos.append(created[1])
                enqueued = [self._insert(job, now) for job in prepared]
            except BaseException:
                for undo in reversed(undos):
                    undo()
                raise
        saved = await kv.get(key, now=now)
        if saved is None:  # cannot happen: written in this very step
            raise ConfigurationError(f"the entry {key!r} vanished while it was written")
        LOCAL.notify(self._key)
        return saved, enqueued

    async def claim(
        self,
        *,
        worker: str,
        limit: int,
        lease: float,
        now: float,
        queues: Sequence[str] | None = None,
    ) -> list[Job]:
        if not lease > 0:
            raise ConfigurationError(f"lease must be > 0 seconds, got {lease!r}")
        if limit < 1 or (queues is not None and not queues):
            return []
        names = None if queues is None else set(queues)
        with self._lock:
            runnable = [
                job
                for job in self._jobs.values()
                if (names is None or job.queue in names)
                and (
                    (job.state in CLAIMABLE and job.run_at <= now)
                    or (job.state is JobState.RUNNING and (job.lease_until or 0.0) <= now)
                )
                and self._in_turn(job, now)  # judged before any of them is claimed
            ]
            runnable.sort(key=_claim_order)
            claimed: list[Job] = []
            for job in runnable[:limit]:
                taken = replace(
                    job,
                    state=JobState.RUNNING,
                    lease_owner=worker,
                    lease_until=now + lease,
                    updated_at=now,
                )
                if job.state is JobState.RUNNING:  # its worker's lease ran out: taken over
                    taken = replace(
                        taken,
                        first_failed_at=now if job.first_failed_at is None else job.first_failed_at,
                        last_failed_at=now,
                        last_error_code="LEASE_EXPIRED",
                        last_error=LEASE_EXPIRED_MESSAGE,
                        history=(
                            *job.history,
                            {
                                "number": job.attempts + 1,
                                "started_at": None,
                                "duration": None,
                                "code": "LEASE_EXPIRED",
                                "message": LEASE_EXPIRED_MESSAGE,
                                "status": None,
                                "delay": None,
                            },
                        ),
                    )
                self._jobs[job.id] = taken
                claimed.append(taken)
            return claimed

    async def heartbeat(
        self, job_ids: Sequence[str], *, worker: str, lease: float, now: float
    ) -> list[str]:
        if not lease > 0:
            raise ConfigurationError(f"lease must be > 0 seconds, got {lease!r}")
        held: list[str] = []
        with self._lock:
            for job_id in dict.fromkeys(job_ids):
                job = self._jobs.get(job_id)
                if job is not None and job.state is JobState.RUNNING and job.lease_owner == worker:
                    self._jobs[job_id] = replace(job, lease_until=now + lease)
                    held.append(job_id)
        return held

    async def complete(self, outcomes: Sequence[Outcome], *, worker: str, now: float) -> list[str]:
        for outcome in outcomes:
            if outcome.kind not in _KINDS:
                raise ConfigurationError(
                    f"unknown outcome kind {outcome.kind!r}; expected one of "
                    f"{', '.join(sorted(_KINDS))}"
                )
        results = [_json(outcome.result) for outcome in outcomes]
        attempts = [_json(outcome.attempt) for outcome in outcomes]
        recorded: list[str] = []
        with self._lock:
            for outcome, result, attempt in zip(outcomes, results, attempts, strict=True):
                job = self._jobs.get(outcome.job_id)
                if job is None or job.state is not JobState.RUNNING or job.lease_owner != worker:
                    continue  # not held (any more): a later outcome for one job finds none
                self._jobs[job.id] = self._outcome(job, outcome, result, attempt, now)
                recorded.append(job.id)
        return recorded

    def _outcome(self, job: Job, outcome: Outcome, result: Any, attempt: Any, now: float) -> Job:
        kind = outcome.kind
        history = job.history if attempt is None else (*job.history, attempt)
        done = replace(job, lease_owner=None, lease_until=None, updated_at=now, history=history)
        flag = job.status_flag
        if kind == "succeeded":
            if flag is not None:
                self._flag(flag, flag.succeeded, now)
            self._unorder(job)  # never unfinished again (a dead job may be redriven: kept)
            return replace(done, state=JobState.SUCCEEDED, attempts=job.attempts + 1, result=result)
        if kind == "release":
            return replace(done, state=JobState.QUEUED)
        run_at = now if outcome.run_at is None else outcome.run_at
        if kind == "defer":
            deferred = replace(done, state=JobState.QUEUED, run_at=run_at)
            if outcome.error_code is not None:  # why, as the last error (not a failure)
                deferred = replace(
                    deferred, last_error_code=outcome.error_code, last_error=outcome.error
                )
            return deferred
        failed = replace(
            done,
            first_failed_at=now if job.first_failed_at is None else job.first_failed_at,
            last_failed_at=now,
            last_error_code=outcome.error_code,
            last_error=outcome.error,
        )
        if kind == "retry":
            return replace(
                failed, state=JobState.RETRYING, attempts=job.attempts + 1, run_at=run_at
            )
        if flag is not None:
            self._flag(flag, flag.failed, now)
        counted = 1 if outcome.attempted else 0
        return replace(failed, state=JobState.DEAD, attempts=job.attempts + counted)

    async def wake_deferred(self, provider: str, *, now: float, limit: int | None = None) -> int:
        """See :meth:`~antifragile.jobs.JobQueue.wake_deferred`: under the queue's lock."""
        with self._lock:
            waiting = sorted(
                (
                    job
                    for job in self._jobs.values()
                    if job.state is JobState.QUEUED
                    and job.provider == provider
                    and job.run_at > now
                    and job.last_error_code in WAKE_CODES
                ),
                key=lambda job: (job.run_at, job.id),
            )
            if limit is not None:
                waiting = waiting[: max(limit, 0)]
            for job in waiting:
                self._jobs[job.id] = replace(job, run_at=now, updated_at=now)
            return len(waiting)

    async def save_progress(self, job_id: str, *, worker: str, state_data: Any, now: float) -> bool:
        data = _json(state_data)
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state is not JobState.RUNNING or job.lease_owner != worker:
                return False
            self._jobs[job_id] = replace(job, state_data=data, updated_at=now)
            return True

    async def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    async def find(self, where: JobFilter, *, limit: int = 100, offset: int = 0) -> list[Job]:
        with self._lock:
            found = [job for job in self._jobs.values() if _matches(job, where)]
        found.sort(key=lambda job: (job.updated_at, job.id), reverse=True)
        start = max(0, offset)
        return found[start : start + max(0, limit)]

    async def stats(self, *, now: float) -> list[QueueStats]:
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, float] = {}
        with self._lock:
            for job in self._jobs.values():
                per = counts.setdefault(job.queue, {state.value: 0 for state in JobState})
                per[job.state.value] += 1
                ready = (job.state in CLAIMABLE and job.run_at <= now) or (
                    job.state is JobState.RUNNING and (job.lease_until or 0.0) <= now
                )
                if ready and (job.queue not in oldest or job.run_at < oldest[job.queue]):
                    oldest[job.queue] = job.run_at
        return [QueueStats(queue, counts[queue], oldest.get(queue)) for queue in sorted(counts)]

    async def redrive(self, where: JobFilter, *, now: float, delay: float = 0.0) -> int:
        count = 0
        with self._lock:
            for job in list(self._jobs.values()):
                if job.state is JobState.DEAD and _matches(job, where):
                    self._jobs[job.id] = replace(
                        job,
                        state=JobState.QUEUED,
                        run_at=now + delay,
                        attempts=0,
                        lease_owner=None,
                        lease_until=None,
                        updated_at=now,
                    )
                    if job.status_flag is not None:
                        self._flag(job.status_flag, job.status_flag.pending, now)
                    count += 1
        LOCAL.notify(self._key)
        return count

    async def resolve(self, where: JobFilter, *, reason: str, now: float) -> int:
        count = 0
        with self._lock:
            for job in list(self._jobs.values()):
                if job.state is JobState.DEAD and _matches(job, where):
                    self._jobs[job.id] = replace(
                        job, state=JobState.RESOLVED, resolution=reason, updated_at=now
                    )
                    self._unorder(job)
                    count += 1
        return count

    async def purge(self, where: JobFilter, *, now: float, limit: int | None = None) -> int:
        if limit is not None and limit < 1:
            return 0
        with self._lock:
            doomed = [
                job for job in self._jobs.values() if job.state in FINAL and _matches(job, where)
            ]
            if limit is not None:
                doomed = sorted(doomed, key=lambda job: (job.updated_at, job.id))[:limit]
            for job in doomed:
                self._delete(job)
        return len(doomed)

    async def cancel(self, ids: Sequence[str]) -> int:
        with self._lock:
            doomed = [
                self._jobs[i]
                for i in dict.fromkeys(ids)
                if i in self._jobs and self._jobs[i].state in CLAIMABLE
            ]
            for job in doomed:
                self._delete(job)
        return len(doomed)

    # -- liveness ---------------------------------------------------------------------------------

    async def beat(self, process: ProcessBeat, *, now: float) -> None:
        with self._lock:
            self._processes[process.id] = replace(process, last_seen=now)

    async def leave(self, process_id: str) -> bool:
        with self._lock:
            return self._processes.pop(process_id, None) is not None

    async def processes(self) -> list[ProcessBeat]:
        with self._lock:
            found = list(self._processes.values())
        return sorted(found, key=lambda p: (p.kind, p.id))

    async def forget_processes(self, *, before: float) -> int:
        with self._lock:
            doomed = [p.id for p in self._processes.values() if p.last_seen < before]
            for process_id in doomed:
                del self._processes[process_id]
        return len(doomed)

    # -- the inbox --------------------------------------------------------------------------------

    async def record_inbound(
        self, entries: Sequence[NewInboxEntry], *, now: float
    ) -> list[Recorded]:
        """See :meth:`JobQueue.record_inbound`: the whole batch in one section."""
        payloads = [_json(entry.payload) for entry in entries]
        jobs = [None if entry.job is None else self._prepared(entry.job) for entry in entries]
        recorded: list[Recorded] = []
        with self._lock:
            for entry, payload, job in zip(entries, payloads, jobs, strict=True):
                event = (entry.channel, entry.event_id)
                first_id = self._events.get(event)
                first = None if first_id is None else self._inbox.get(first_id)
                if first is not None and first.expires_at > now:
                    recorded.append(Recorded(first.id, False, first.job_id))
                    continue
                if first is not None:  # expired: replaced
                    del self._inbox[first.id]
                job_id = None if job is None else self._insert(job, now).id
                self._inbox[entry.id] = InboxEntry(
                    entry.id,
                    entry.channel,
                    entry.event_id,
                    entry.kind,
                    entry.tenant_key,
                    payload,
                    now,
                    now + entry.ttl,
                    job_id,
                    entry.request_id,
                )
                self._events[event] = entry.id
                recorded.append(Recorded(entry.id, True, job_id))
        LOCAL.notify(self._key)
        return recorded

    async def get_inbound(self, inbox_id: str) -> InboxEntry | None:
        with self._lock:
            return self._inbox.get(inbox_id)

    async def find_inbound(
        self, *, channel: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[InboxEntry]:
        with self._lock:
            found = [e for e in self._inbox.values() if channel is None or e.channel == channel]
        found.sort(key=lambda entry: (entry.received_at, entry.id), reverse=True)
        start = max(0, offset)
        return found[start : start + max(0, limit)]

    async def purge_inbound(self, *, now: float) -> int:
        with self._lock:
            doomed = [entry for entry in self._inbox.values() if entry.expires_at <= now]
            for entry in doomed:
                del self._inbox[entry.id]
                if self._events.get((entry.channel, entry.event_id)) == entry.id:
                    del self._events[(entry.channel, entry.event_id)]
        return len(doomed)

    async def delete_inbound(self, ids: Sequence[str]) -> int:
        with self._lock:
            doomed = [self._inbox[i] for i in dict.fromkeys(ids) if i in self._inbox]
            for entry in doomed:
                del self._inbox[entry.id]
                if self._events.get((entry.channel, entry.event_id)) == entry.id:
                    del self._events[(entry.channel, entry.event_id)]
        return len(doomed)
