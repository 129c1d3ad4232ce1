"""The atomic operations a job-queue backend provides (SQLite and PostgreSQL).

Each operation is one statement or one transaction in the database -- claims use
``UPDATE ... RETURNING`` over a ``FOR UPDATE SKIP LOCKED`` selection on PostgreSQL and a
``BEGIN IMMEDIATE`` transaction on SQLite -- so any number of worker processes may share a
queue. Batches (several jobs claimed or completed in one transaction) are how the queue reaches
its throughput; every method takes and returns lists.

Time comes from the caller (``now``, wall-clock epoch seconds), as in the state stores.

The queue also keeps the inbox: inbound events recorded in the same transaction as the jobs
that handle them (:meth:`JobQueue.record_inbound`), so an event is handled once per delivery
window however often its provider delivers it, and never lost once acknowledged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from antifragile.jobs._model import (
    Enqueued,
    InboxEntry,
    Job,
    JobFilter,
    NewInboxEntry,
    NewJob,
    Outcome,
    ProcessBeat,
    QueueStats,
    Recorded,
)
from antifragile.stores import Store, Versioned


@runtime_checkable
class JobQueue(Protocol):
    """A durable job queue with leases, retries, a dead-letter queue and status flags."""

    @property
    def store(self) -> Store:
        """The store the queue lives in (status flags are its ``kv`` entries)."""
        ...

    async def enqueue(
        self, jobs: Sequence[NewJob], *, now: float, connection: Any = None
    ) -> list[Enqueued]:
        """Insert *jobs* (one transaction). A job whose ``idempotency_key`` already exists is
        not inserted again: its ``Enqueued`` names the existing job with ``created=False``.

        A job gets state ``scheduled`` when ``run_at > now``, else ``queued``. Its status flag,
        if any, is set to its ``pending`` value in the same transaction. A job with an
        ``ordering_key`` takes the next place (``ordering_seq``) in its key's order; jobs of one
        key in one batch in batch order.

        With *connection* -- a ``sqlite3.Connection`` / psycopg connection the caller holds, or an
        SQLAlchemy ``Session`` / ``Connection`` on the same database -- the rows are written in
        the caller's open transaction and are committed or rolled back with it (the
        transactional outbox); the queue does not commit.
        """
        ...

    async def claim(
        self,
        *,
        worker: str,
        limit: int,
        lease: float,
        now: float,
        queues: Sequence[str] | None = None,
    ) -> list[Job]:
        """Lease up to *limit* runnable jobs to *worker* until ``now + lease``.

        Runnable: state scheduled/queued/retrying with ``run_at <= now``, or ``running`` with an
        expired lease (its worker died: it is taken over, automatically). Order: priority
        (higher first), then ``run_at``, then id. Claimed jobs are ``running``.

        A job with an ``ordering_key`` is runnable only when no job of its key enqueued before
        it is unfinished (:data:`~antifragile.jobs.UNFINISHED`) and none of its key runs under a
        live lease -- judged in the claim's own statement or transaction, so a claim takes at
        most one job per key and never one ahead of its turn (see :mod:`antifragile.jobs._model`).
        """
        ...

    async def heartbeat(
        self, job_ids: Sequence[str], *, worker: str, lease: float, now: float
    ) -> list[str]:
        """Extend the leases *worker* still holds; returns the ids it still holds."""
        ...

    async def complete(self, outcomes: Sequence[Outcome], *, worker: str, now: float) -> list[str]:
        """Record *outcomes* (one transaction) for jobs *worker* still holds (``running`` with
        ``lease_owner == worker``); returns the ids recorded. Outcomes for jobs the worker no
        longer holds (its lease expired and another worker took over) are ignored.

        Status flags change in the same transaction: ``succeeded`` -> its succeeded value,
        ``dead`` -> its failed value, ``retry``/``defer``/``release`` leave it pending. A
        ``defer`` with an ``error_code`` records it (and ``error``) as the job's last error,
        without the failure times: why the job waits."""
        ...

    async def wake_deferred(self, provider: str, *, now: float, limit: int | None = None) -> int:
        """Make the jobs of *provider* that were deferred by its circuit breaker or rate limiter
        due now, in one statement: state ``queued``, ``run_at > now`` and ``last_error_code`` in
        :data:`~antifragile.jobs.WAKE_CODES` -> ``run_at = now``; the count. At most *limit*
        jobs (``None``: all), earliest ``run_at`` first.

        A worker calls it when the provider's breaker closes (every deferred job runs at once,
        paced by the limiter, instead of each waiting out its own deferral) and, with
        ``limit=1``, to have one job probe a breaker whose open period is over. Jobs in their
        own back-off after a real failure (``retrying``) keep their time."""
        ...

    async def save_progress(self, job_id: str, *, worker: str, state_data: Any, now: float) -> bool:
        """Checkpoint a running job's ``state_data`` (sagas), only while *worker* holds it."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def find(self, where: JobFilter, *, limit: int = 100, offset: int = 0) -> list[Job]:
        """Jobs matching *where*, most recently updated first."""
        ...

    async def stats(self, *, now: float) -> list[QueueStats]:
        """Per queue: jobs per state and the ``run_at`` of the oldest ready job (lag)."""
        ...

    async def redrive(self, where: JobFilter, *, now: float, delay: float = 0.0) -> int:
        """Send dead jobs matching *where* back to ``queued`` (run at ``now + delay``, attempts
        counted again from zero, history kept, status flags back to pending); the count."""
        ...

    async def resolve(self, where: JobFilter, *, reason: str, now: float) -> int:
        """Mark dead jobs matching *where* ``resolved`` with *reason*; the count."""
        ...

    async def purge(self, where: JobFilter, *, now: float, limit: int | None = None) -> int:
        """Delete jobs in a final state matching *where* (e.g. resolved or succeeded older than
        a week); the count. Jobs not in a final state are never purged. With *limit*, at most
        that many (the least recently updated first) in one statement: retention deletes in
        bounded batches so that no statement holds the table for long."""
        ...

    async def cancel(self, ids: Sequence[str]) -> int:
        """Delete the jobs with *ids* that are **waiting** (scheduled, queued, retrying); a job
        running, or in a final state, is left as it is. The count deleted (erasure uses it:
        a waiting job about an erased person is not run)."""
        ...

    # -- liveness -----------------------------------------------------------------------------

    async def beat(self, process: ProcessBeat, *, now: float) -> None:
        """Record that *process* is alive at *now* (one upsert): its row is created, or its
        ``last_seen`` (and queues) updated; ``started_at`` is the one given."""
        ...

    async def leave(self, process_id: str) -> bool:
        """Delete the row of *process_id* (a graceful stop); whether there was one."""
        ...

    async def processes(self) -> list[ProcessBeat]:
        """Every recorded process, alive or not (the caller judges by ``last_seen``), by kind
        then id."""
        ...

    async def forget_processes(self, *, before: float) -> int:
        """Delete the rows of processes last seen before *before* (dead ones); the count."""
        ...

    # -- the inbox ----------------------------------------------------------------------------

    async def record_inbound(
        self, entries: Sequence[NewInboxEntry], *, now: float
    ) -> list[Recorded]:
        """Record *entries* and enqueue their jobs, all in one transaction; one result each,
        in order.

        An entry is new unless an entry for its ``(channel, event_id)`` exists and has not
        expired (``expires_at > now``); an expired one is replaced by the new entry. A new
        entry is stored with ``received_at = now`` and ``expires_at = now + ttl``, and its job
        (if any) is enqueued exactly as :meth:`enqueue` would (idempotency key, state, status
        flag); ``job_id`` is the job it names (an existing job for a known idempotency key).
        A duplicate -- also a repeat of an event earlier in the same batch -- stores and
        enqueues nothing: its ``Recorded`` has ``created=False`` and the first entry's ``id``
        and ``job_id``. Any number of processes may record the same event at once: exactly one
        creates it. When anything fails, nothing of the batch is kept.
        """
        ...

    async def get_inbound(self, inbox_id: str) -> InboxEntry | None:
        """The entry *inbox_id*, until it is purged (expired entries included)."""
        ...

    async def find_inbound(
        self, *, channel: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[InboxEntry]:
        """Entries, newest (``received_at``) first, of *channel* or of every channel."""
        ...

    async def purge_inbound(self, *, now: float) -> int:
        """Delete the entries expired at *now* (``expires_at <= now``); the count."""
        ...

    async def delete_inbound(self, ids: Sequence[str]) -> int:
        """Delete the entries *ids* (erasure), in one statement; the count. An id that is not
        there counts nothing; the entries' jobs are left alone."""
        ...


@runtime_checkable
class RecordQueue(Protocol):
    """A queue that can write a record of its store and enqueue jobs in one transaction (the
    SQLite, PostgreSQL and memory queues): a state change and the jobs it causes exist together
    or not at all -- no crash between the two can leave one without the other."""

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
        """Compare-and-set the key-value entry *key* to *value* -- created when
        *expected_version* is ``None`` (and no live entry exists), else replaced only at that
        version -- then create the entries *alongside* (key to value, with the same *ttl*)
        that do not exist yet (a live one is kept as it is), and enqueue *jobs* exactly as
        :meth:`JobQueue.enqueue` would (idempotency keys, status flags set pending), all in
        one transaction.

        Returns the entry as stored (after the jobs' status flags were set) and one
        ``Enqueued`` per job, or ``None`` when the version did not match: then nothing was
        written and nothing enqueued. When anything fails, nothing is kept."""
        ...
