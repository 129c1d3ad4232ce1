"""The job queue on SQLite: :class:`SQLiteJobQueue`, on a :class:`~antifragile.stores.SQLiteStore`.

The queue shares its store's one connection and thread: every operation is one function call in
that thread (one thread hop; a lone enqueue on an idle store runs in the caller's thread instead,
see :mod:`antifragile.stores._sqlite`) and, inside it, one ``BEGIN IMMEDIATE ... COMMIT``
transaction -- a single job without idempotency key or status flag is one ``INSERT``, a
transaction of its own --, so any number of processes may work the same database file. A
claim is one ``UPDATE ... WHERE rowid IN (SELECT ... LIMIT ?) RETURNING ...`` statement over the
partial "ready" index, by queue (a claim from any queue merges the first jobs of each queue
that has ready ones), merged with the expired leases after an index probe finds any. A job
with an ordering key is taken only in its turn: a ``NOT EXISTS`` over its key's unfinished jobs
(index ``antifragile_jobs_ordering_open``), evaluated only for jobs that have a key; a keyed
job's place is one more than the highest taken (``antifragile_jobs_ordering_seq``). Heartbeats
are one ``UPDATE`` for the whole batch, and completions at most two -- plain successes, and the
other outcomes with their per-job values -- each batch passed as one JSON array and read with
``json_each``. History is appended and status flags are merged with SQLite's JSON functions, in
the same transaction as the job's state.

Status flags live in the store's key-value table: the flag's field is merged into the JSON object
at ``status_flag.key`` exactly as :meth:`~antifragile.stores.KeyValueStore.merge` would (the
entry is created if absent or expired, its version grows by one, its expiry is kept). An entry
holding something other than a JSON object is left alone.

Concurrent enqueues, inbox records and records saved with their jobs (``save_and_enqueue``)
share one transaction (the store's group commit, see
:meth:`~antifragile.stores._sqlite._Database.run_shared`): while one transaction is in flight
(or when several callers come at the same moment), the ones that arrive meanwhile wait together
and go into the next one, each under a savepoint of
its own (a caller whose statement fails gets its error; the others' rows are kept), and each
caller returns only after the commit -- ``synchronous=FULL`` and every acknowledged job durable,
at one ``fsync`` per group. After each enqueue the workers listening to the database are woken
(:mod:`antifragile.jobs._wakeup`).

The transactional outbox: ``enqueue(..., connection=c)`` writes the jobs with the caller's own
connection, in the caller's thread, inside the caller's transaction -- they commit or roll back
with the caller's rows. *c* is a :class:`sqlite3.Connection`, or an SQLAlchemy ``Session`` or
``Connection`` whose driver connection is one. The caller's connection must be open on the
**same database file** as the store (checked: a connection to any other file is refused with a
ConfigurationError). The jobs are written under a savepoint, so a failed enqueue leaves the
caller's transaction as it was; a connection with no transaction open gets one begun (and not
committed), except one in autocommit mode, which is refused -- its writes would commit one by
one. While the caller's transaction holds the database's write lock, other writers (the
store's own connection included) wait for it, up to their busy timeout. Workers are woken once
the caller's transaction is over (the queue watches the connection's ``in_transaction``; see
:mod:`antifragile.jobs._wakeup`).

The inbox (table ``antifragile_inbox``): :meth:`SQLiteJobQueue.record_inbound` is one thread hop
and one ``BEGIN IMMEDIATE`` transaction for the whole batch. Each entry is one
``INSERT ... ON CONFLICT (channel, event_id) DO UPDATE ... WHERE expired RETURNING id``: a row
comes back when the entry is new or replaced an expired one, none for a duplicate (whose first
entry is then read by its unique key). The jobs of the new entries go through the same insert
as :meth:`~SQLiteJobQueue.enqueue`; an entry names its own job when it is inserted, and is
pointed at the existing job only when the job's idempotency key was known already. Holding the
write lock from the start, the transaction sees every committed entry: a concurrent writer of
the same event waits, then finds this one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from antifragile.errors import ConfigurationError, StoreError
from antifragile.jobs._model import (
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
    ProcessBeat,
    QueueStats,
    Recorded,
    StatusFlag,
    build_job,
)
from antifragile.jobs._wakeup import SQLiteWakeups, Wake, after_transaction
from antifragile.stores import Versioned
from antifragile.stores._codec import encode
from antifragile.stores._sqlite import (
    SQLiteStore,
    _immediate,
    _kv_create,
    _kv_get,
    _kv_update_at,
    _unsynced,
)

_COLUMNS = (
    "id, name, queue, state, priority, payload, payload_version, idempotency_key, attempts, "
    "max_attempts, run_at, created_at, updated_at, provider, timeout, lease_owner, lease_until, "
    "first_failed_at, last_failed_at, last_error_code, last_error, history, result, resolution, "
    "status_flag, state_data, context, ordering_key, ordering_seq"
)
#: what a claim returns: the columns but those the claim itself sets (state, lease owner and
#: expiry, updated_at), which ``_claimed`` fills in from the claim's own values
_CLAIMED_COLUMNS = (
    "id, name, queue, priority, payload, payload_version, idempotency_key, attempts, "
    "max_attempts, run_at, created_at, provider, timeout, first_failed_at, last_failed_at, "
    "last_error_code, last_error, history, result, resolution, status_flag, state_data, "
    "context, ordering_key, ordering_seq"
)
#: the WHERE terms that match the partial indexes' own, so the planner may use them
_READY = "state IN ('scheduled', 'queued', 'retrying')"
_FINISHED = "state IN ('succeeded', 'dead', 'resolved')"
_STATES = {state.value: state for state in JobState}
_KINDS = frozenset({"succeeded", "retry", "defer", "dead", "release"})
_SAVEPOINT = "antifragile_enqueue"

_raw_decode = json.JSONDecoder().raw_decode


def _loads(text: str) -> Any:
    """``json.loads(text)``, quicker on the short, compact JSON the queue writes (a claimed
    job's payload): what ``json.loads`` adds around the decoding itself -- a check for a
    byte-order mark, two whitespace scans -- costs more than decoding a small object. Text
    that has anything around its value, or is not JSON, goes through ``json.loads`` (the same
    value, the same errors)."""
    try:
        value, end = _raw_decode(text)
    except ValueError:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


_dumps = json.dumps


# -- SQL ---------------------------------------------------------------------------------------

#: a job with an ordering key takes the next place: one more than any keyed job's (one writer at
#: a time: places grow in enqueue order)
_INSERT = """
INSERT INTO antifragile_jobs (
    id, name, queue, state, priority, payload, payload_version, idempotency_key, attempts,
    max_attempts, run_at, created_at, updated_at, provider, timeout, status_flag, state_data,
    context, ordering_key, ordering_seq)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
    CASE WHEN ?18 IS NOT NULL THEN (
        SELECT coalesce(max(ordering_seq), 0) + 1 FROM antifragile_jobs
        WHERE ordering_seq IS NOT NULL) END)
"""

_EXISTING_KEYS = """
SELECT idempotency_key, id FROM antifragile_jobs
WHERE idempotency_key IN (SELECT value FROM json_each(?))
"""

# (key, field, value, now): merge one field into a live JSON object, or create the entry; a
# live entry that is not an object is left alone
_LIVE_KV = "(antifragile_kv.expires_at IS NULL OR antifragile_kv.expires_at > ?4)"
_MERGE_FLAG = f"""
INSERT INTO antifragile_kv (key, value, version, expires_at)
VALUES (?1, json_object(?2, ?3), 1, NULL)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN {_LIVE_KV} THEN json_patch(antifragile_kv.value, excluded.value)
            ELSE excluded.value END,
    version = CASE WHEN {_LIVE_KV} THEN antifragile_kv.version + 1 ELSE 1 END,
    expires_at = CASE WHEN {_LIVE_KV} THEN antifragile_kv.expires_at ELSE NULL END
WHERE NOT {_LIVE_KV} OR json_type(antifragile_kv.value) = 'object'
"""


#: a job taken over from a worker whose lease ran out: the lost run is recorded (LEASE_EXPIRED in
#: the history, not counted as an attempt); the worker dead-letters a job that lost its worker
#: too many times, so a job that crashes every worker cannot loop forever
LEASE_EXPIRED_MESSAGE = "its worker stopped renewing the lease (crashed, killed or stalled)"
_TAKEOVER = f"""
    , first_failed_at = CASE WHEN state = 'running' THEN coalesce(first_failed_at, :now)
                        ELSE first_failed_at END
    , last_failed_at = CASE WHEN state = 'running' THEN :now ELSE last_failed_at END
    , last_error_code = CASE WHEN state = 'running' THEN 'LEASE_EXPIRED' ELSE last_error_code END
    , last_error = CASE WHEN state = 'running' THEN '{LEASE_EXPIRED_MESSAGE}' ELSE last_error END
    , history = CASE WHEN state = 'running' THEN json_insert(history, '$[#]', json_object(
          'number', attempts + 1, 'started_at', NULL, 'duration', NULL,
          'code', 'LEASE_EXPIRED', 'message', '{LEASE_EXPIRED_MESSAGE}',
          'status', NULL, 'delay', NULL)) ELSE history END"""


#: a job with an ordering key runs only when no job of its key enqueued before it is
#: unfinished, and no job of its key is running under a live lease (see jobs._model)
_IN_ORDER = """ AND (ordering_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM antifragile_jobs AS o
                WHERE o.ordering_key = antifragile_jobs.ordering_key
                  AND o.ordering_key IS NOT NULL
                  AND o.state IN ('scheduled', 'queued', 'running', 'retrying')
                  AND (o.ordering_seq < antifragile_jobs.ordering_seq
                       OR (o.state = 'running' AND o.lease_until > :now))))"""


#: the queues that have ready jobs, each found by one seek in ``antifragile_jobs_claim_queue``
#: (the next queue name after the last one): a CTE for :func:`_claim_sql` when no queue is named
_READY_QUEUES = f"""q(name) AS (
        SELECT (SELECT min(queue) FROM antifragile_jobs WHERE {_READY})
        UNION ALL
        SELECT (SELECT min(queue) FROM antifragile_jobs WHERE {_READY} AND queue > q.name)
        FROM q WHERE q.name IS NOT NULL)"""
#: the queues a claim names (``:queues``, a JSON array): the CTE for :func:`_claim_sql`
_NAMED_QUEUES = "q(name) AS (SELECT DISTINCT value FROM json_each(:queues))"


def _claim_sql(queue_term: str, *, expired: bool, by_queue: str | None = None) -> str:
    """Lease the first ``:limit`` runnable jobs in claim order. With *expired*, running jobs
    whose lease ran out are runnable too: each kind is taken in order from its own index, and
    the two are merged. A job with an ordering key is runnable only in its turn
    (``_IN_ORDER``); within one claim, its key's earlier job -- itself still unfinished --
    holds it back, so a claim takes at most one job per key.

    Ready jobs are taken from the one claim index, ``(queue, priority DESC, run_at, id)``:
    for one queue, its first ``:limit`` in order; for several (*by_queue*: a CTE ``q(name)``
    of their names, ``_READY_QUEUES`` for any queue), the first ``:limit`` of each, merged --
    the first ``:limit`` of all are among them, so a claim costs one seek and at most
    ``:limit`` index entries per queue that has ready jobs. (An index in the any-queue order
    would spare the merge, at one more b-tree written by every enqueue, claim and completion:
    a fifth of a single enqueue's pages.)"""
    if by_queue is None:
        ready = f"""
            SELECT rowid AS rid, priority, run_at, id FROM antifragile_jobs
            WHERE {_READY} AND run_at <= :now{queue_term}{_IN_ORDER}
            ORDER BY priority DESC, run_at, id LIMIT :limit"""
    else:
        ready = f"""
            WITH RECURSIVE {by_queue}
            SELECT j.rowid AS rid, j.priority, j.run_at, j.id FROM q, antifragile_jobs AS j
            WHERE j.rowid IN (
                SELECT rowid FROM antifragile_jobs
                WHERE {_READY} AND queue = q.name AND run_at <= :now{_IN_ORDER}
                ORDER BY priority DESC, run_at, id LIMIT :limit)
            ORDER BY j.priority DESC, j.run_at, j.id LIMIT :limit"""
    if expired:
        chosen = f"""
    SELECT rid FROM (
        SELECT * FROM ({ready})
        UNION ALL
        SELECT * FROM (
            SELECT rowid AS rid, priority, run_at, id FROM antifragile_jobs
            WHERE state = 'running' AND lease_until <= :now{queue_term}{_IN_ORDER}
            ORDER BY priority DESC, run_at, id LIMIT :limit))
    ORDER BY priority DESC, run_at, id LIMIT :limit"""
        takeover = _TAKEOVER
    else:  # only ready jobs: no lost run to record
        chosen, takeover = f"SELECT rid FROM ({ready})", ""
    return f"""
UPDATE antifragile_jobs
SET state = 'running', lease_owner = :worker, lease_until = :until, updated_at = :now{takeover}
WHERE rowid IN ({chosen})
RETURNING {_CLAIMED_COLUMNS}
"""


_ANY, _ONE, _SOME = (
    "",
    " AND queue = :queue",
    " AND queue IN (SELECT value FROM json_each(:queues))",
)


def _claims(queue_term: str, by_queue: str | None = None) -> tuple[str, str]:
    """A claim's statements (without, with) the running jobs whose lease ran out."""
    return (
        _claim_sql(queue_term, expired=False, by_queue=by_queue),
        _claim_sql(queue_term, expired=True, by_queue=by_queue),
    )


#: the claim's statements per kind of queue filter (see _claims)
_CLAIM_ANY = _claims(_ANY, _READY_QUEUES)
_CLAIM_ONE = _claims(_ONE)
_CLAIM_SOME = _claims(_SOME, _NAMED_QUEUES)
#: whether any lease ran out (an index probe; claims skip the takeover branch when none did)
_ANY_EXPIRED = "SELECT 1 FROM antifragile_jobs WHERE state = 'running' AND lease_until <= ? LIMIT 1"

_HEARTBEAT = """
UPDATE antifragile_jobs SET lease_until = ?
WHERE id IN (SELECT value FROM json_each(?)) AND state = 'running' AND lease_owner = ?
RETURNING id
"""

#: plain successes (no result, no attempt record): the common case, without per-row values
_SUCCEED = """
UPDATE antifragile_jobs SET state = 'succeeded', attempts = attempts + 1, lease_owner = NULL,
    lease_until = NULL, updated_at = ?
WHERE id IN (SELECT value FROM json_each(?)) AND state = 'running' AND lease_owner = ?
RETURNING id, state, status_flag
"""

# each outcome is [id, state, counted, run_at, result, attempt, failed, error_code, error]
_COMPLETE = """
UPDATE antifragile_jobs AS j SET
    state = o.state,
    attempts = j.attempts + o.counted,
    run_at = coalesce(o.run_at, j.run_at),
    result = CASE WHEN o.state = 'succeeded' THEN o.result ELSE j.result END,
    lease_owner = NULL,
    lease_until = NULL,
    updated_at = :now,
    first_failed_at = CASE WHEN o.failed THEN coalesce(j.first_failed_at, :now)
                      ELSE j.first_failed_at END,
    last_failed_at = CASE WHEN o.failed THEN :now ELSE j.last_failed_at END,
    last_error_code = CASE WHEN o.failed OR o.error_code IS NOT NULL THEN o.error_code
                      ELSE j.last_error_code END,
    last_error = CASE WHEN o.failed OR o.error_code IS NOT NULL THEN o.error
                 ELSE j.last_error END,
    history = CASE WHEN o.attempt IS NULL THEN j.history
              ELSE json_insert(j.history, '$[#]', json(o.attempt)) END
FROM (
    SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS state,
           json_extract(value, '$[2]') AS counted, json_extract(value, '$[3]') AS run_at,
           json_extract(value, '$[4]') AS result, json_extract(value, '$[5]') AS attempt,
           json_extract(value, '$[6]') AS failed, json_extract(value, '$[7]') AS error_code,
           json_extract(value, '$[8]') AS error
    FROM json_each(:outcomes)) AS o
WHERE j.id = o.id AND j.state = 'running' AND j.lease_owner = :worker
RETURNING id, state, status_flag
"""

#: the jobs of a provider deferred by its breaker or rate limiter become due (see wake_deferred)
_WAKE = f"""
UPDATE antifragile_jobs SET run_at = :now, updated_at = :now
WHERE rowid IN (
    SELECT rowid FROM antifragile_jobs
    WHERE state = 'queued' AND provider = :provider AND run_at > :now
      AND last_error_code IN ({", ".join(f"'{c}'" for c in WAKE_CODES)})
    ORDER BY run_at, id LIMIT :limit)
"""

_SAVE_PROGRESS = """
UPDATE antifragile_jobs SET state_data = ?, updated_at = ?
WHERE id = ? AND state = 'running' AND lease_owner = ?
"""

_GET = f"SELECT {_COLUMNS} FROM antifragile_jobs WHERE id = ?"

_COUNTS = "SELECT queue, state, count(*) FROM antifragile_jobs GROUP BY queue, state"
_OLDEST_READY = f"""
SELECT queue, min(run_at) FROM antifragile_jobs WHERE {_READY} AND run_at <= ? GROUP BY queue
"""
#: the earliest time a waiting job falls due after now (an idle worker sleeps until then)
_NEXT_DUE = f"SELECT min(run_at) FROM antifragile_jobs WHERE {_READY} AND run_at > ?"
_OLDEST_EXPIRED = """
SELECT queue, min(run_at) FROM antifragile_jobs
WHERE state = 'running' AND lease_until <= ? GROUP BY queue
"""


# -- the inbox ----------------------------------------------------------------------------------

_INBOX_COLUMNS = (
    "id, channel, event_id, kind, tenant_key, payload, received_at, expires_at, job_id, request_id"
)
# a new entry, or one replacing the expired entry of its event (?7 is now): its id comes back;
# nothing for a duplicate
_INBOX_INSERT = f"""
INSERT INTO antifragile_inbox ({_INBOX_COLUMNS})
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT (channel, event_id) DO UPDATE SET
    id = excluded.id, kind = excluded.kind, tenant_key = excluded.tenant_key,
    payload = excluded.payload, received_at = excluded.received_at,
    expires_at = excluded.expires_at, job_id = excluded.job_id, request_id = excluded.request_id
WHERE antifragile_inbox.expires_at <= ?7
RETURNING id
"""
_INBOX_FIRST = "SELECT id, job_id FROM antifragile_inbox WHERE channel = ? AND event_id = ?"
_INBOX_SET_JOB = "UPDATE antifragile_inbox SET job_id = ? WHERE id = ?"
_INBOX_GET = f"SELECT {_INBOX_COLUMNS} FROM antifragile_inbox WHERE id = ?"
_INBOX_FIND = (
    f"SELECT {_INBOX_COLUMNS} FROM antifragile_inbox{{where}} "
    "ORDER BY received_at DESC, id DESC LIMIT ? OFFSET ?"
)
_INBOX_PURGE = "DELETE FROM antifragile_inbox WHERE expires_at <= ?"

_PROCESS_BEAT = """
INSERT INTO antifragile_processes (id, kind, host, pid, queues, started_at, last_seen)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET
    kind = excluded.kind, host = excluded.host, pid = excluded.pid, queues = excluded.queues,
    started_at = excluded.started_at, last_seen = excluded.last_seen
"""
_PROCESS_LEAVE = "DELETE FROM antifragile_processes WHERE id = ?"
_PROCESS_LIST = (
    "SELECT id, kind, host, pid, queues, started_at, last_seen FROM antifragile_processes "
    "ORDER BY kind, id"
)
_PROCESS_FORGET = "DELETE FROM antifragile_processes WHERE last_seen < ?"


# -- rows --------------------------------------------------------------------------------------


def _job(row: tuple[Any, ...]) -> Job:
    # REAL columns are coerced: RETURNING hands back whole-number REALs as integers
    (
        id_,
        name,
        queue,
        state,
        priority,
        payload,
        payload_version,
        idempotency_key,
        attempts,
        max_attempts,
        run_at,
        created_at,
        updated_at,
        provider,
        timeout,
        lease_owner,
        lease_until,
        first_failed_at,
        last_failed_at,
        last_error_code,
        last_error,
        history,
        result,
        resolution,
        status_flag,
        state_data,
        context,
        ordering_key,
        ordering_seq,
    ) = row
    return build_job(
        id_,
        name,
        queue,
        _STATES[state],
        priority,
        _loads(payload),
        payload_version,
        idempotency_key,
        attempts,
        max_attempts,
        float(run_at),
        float(created_at),
        float(updated_at),
        provider,
        None if timeout is None else float(timeout),
        lease_owner,
        None if lease_until is None else float(lease_until),
        None if first_failed_at is None else float(first_failed_at),
        None if last_failed_at is None else float(last_failed_at),
        last_error_code,
        last_error,
        () if history == "[]" else tuple(_loads(history)),
        None if result is None else _loads(result),
        resolution,
        None if status_flag is None else _flag(status_flag),
        None if state_data is None else _loads(state_data),
        {} if context is None else _loads(context),
        ordering_key,
        ordering_seq,
    )


def _claimed(row: tuple[Any, ...], worker: str, until: float, now: float) -> Job:
    """A Job from a row of ``_CLAIMED_COLUMNS`` that *worker* now holds until *until*: the
    row of ``_COLUMNS`` with the values the claim set itself filled in."""
    return _job((*row[:3], "running", *row[3:11], now, *row[11:13], worker, until, *row[13:]))


def _inbox_entry(row: tuple[Any, ...]) -> InboxEntry:
    id_, channel, event_id, kind, tenant_key, payload, received_at, expires_at, job, request = row
    return InboxEntry(
        id_,
        channel,
        event_id,
        kind,
        tenant_key,
        _loads(payload),
        float(received_at),
        float(expires_at),
        job,
        request,
    )


def _flag(text: str) -> StatusFlag:
    return StatusFlag.from_json(_loads(text))


def _claim_order(job: Job) -> tuple[int, float, str]:
    return (-job.priority, job.run_at, job.id)


def _where(where: JobFilter) -> tuple[list[str], list[Any]]:
    """SQL terms (ANDed) and their parameters for *where*."""
    terms: list[str] = []
    params: list[Any] = []
    if where.states:
        states = sorted({JobState(state) for state in where.states})
        if len(states) == 1:
            terms.append(f"state = '{states[0].value}'")
        else:
            terms.append("state IN ({})".format(", ".join(f"'{s.value}'" for s in states)))
        if all(state in FINAL for state in states):
            terms.append(_FINISHED)
    for column, value in (
        ("queue", where.queue),
        ("name", where.name),
        ("provider", where.provider),
        ("last_error_code", where.error_code),
    ):
        if value is not None:
            terms.append(f"{column} = ?")
            params.append(value)
    if where.older_than is not None:
        terms.append("updated_at < ?")
        params.append(where.older_than)
    if where.newer_than is not None:
        terms.append("updated_at >= ?")
        params.append(where.newer_than)
    if where.ids:
        terms.append("id IN (SELECT value FROM json_each(?))")
        params.append(_dumps(list(where.ids)))
    if where.id_part is not None:
        terms.append("(id LIKE ? OR id LIKE ?)")
        params.extend((f"{where.id_part}%", f"%{where.id_part}"))
    return terms, params


def _process(row: tuple[Any, ...]) -> ProcessBeat:
    queues = None if row[4] is None else tuple(_loads(row[4]))
    return ProcessBeat(row[0], row[1], row[2], int(row[3]), queues, float(row[5]), float(row[6]))


def _and(terms: list[str]) -> str:
    return "".join(f" AND {term}" for term in terms)


# -- operations (run in the store's thread, or the caller's for the outbox) ----------------------

_Row = tuple[Any, ...]
_FlagParams = tuple[str, str, str, float]


def _insert(
    conn: sqlite3.Connection, rows: list[_Row], flags: list[_FlagParams | None]
) -> list[Enqueued]:
    """Insert the rows whose idempotency key is new; set the status flags of those created."""
    keys = [row[7] for row in rows if row[7] is not None]
    existing: dict[str, str] = {}
    if keys:
        existing = dict(conn.execute(_EXISTING_KEYS, (_dumps(keys),)).fetchall())
    enqueued: list[Enqueued] = []
    created: list[_Row] = []
    pending: list[_FlagParams] = []
    for row, flag in zip(rows, flags, strict=True):
        key = row[7]
        if key is not None:
            found = existing.get(key)
            if found is not None:
                enqueued.append(Enqueued(found, False))
                continue
            existing[key] = row[0]
        enqueued.append(Enqueued(row[0], True))
        created.append(row)
        if flag is not None:
            pending.append(flag)
    if created:
        conn.executemany(_INSERT, created)
    if pending:
        conn.executemany(_MERGE_FLAG, pending)
    return enqueued


def _enqueue(
    conn: sqlite3.Connection, rows: list[_Row], flags: list[_FlagParams | None]
) -> list[Enqueued]:
    if len(rows) == 1 and rows[0][7] is None and flags[0] is None:
        # one job, no idempotency key to look up, no flag to set: one INSERT, a transaction
        # of its own (it takes the write lock as it starts, as BEGIN IMMEDIATE would, and
        # commits -- with the same fsync -- as it ends), or a part of the shared one
        conn.execute(_INSERT, rows[0])
        return [Enqueued(rows[0][0], True)]
    with _immediate(conn):
        return _insert(conn, rows, flags)


def _record(
    conn: sqlite3.Connection,
    entries: list[_Row],
    jobs: list[_Row | None],
    flags: list[_FlagParams | None],
) -> list[Recorded]:
    """Record the inbox rows (``_INBOX_INSERT`` parameters, each naming its own job), and
    insert the jobs of the new ones; one transaction."""
    with _immediate(conn):
        recorded: list[Recorded] = []
        first: dict[tuple[str, str], int] = {}  # the first entry of each event in the batch
        new_jobs: list[_Row] = []
        new_flags: list[_FlagParams | None] = []
        new_at: list[int] = []
        for index, (row, job, flag) in enumerate(zip(entries, jobs, flags, strict=True)):
            event = (row[1], row[2])
            earlier = first.get(event)
            if earlier is not None:  # a repeat within the batch: resolved below
                recorded.append(Recorded("", False, None))
                continue
            first[event] = index
            if conn.execute(_INBOX_INSERT, row).fetchall():
                recorded.append(Recorded(row[0], True, row[8]))
                if job is not None:
                    new_jobs.append(job)
                    new_flags.append(flag)
                    new_at.append(index)
                continue
            found = conn.execute(_INBOX_FIRST, event).fetchone()
            if found is None:  # cannot happen while this transaction holds the write lock
                raise StoreError(f"the inbox entry of a {row[1]} event vanished; try again")
            recorded.append(Recorded(found[0], False, found[1]))
        if new_jobs:
            fixes: list[tuple[str, str]] = []
            for index, made in zip(new_at, _insert(conn, new_jobs, new_flags), strict=True):
                entry = recorded[index]
                if made.id != entry.job_id:  # the job's idempotency key named an existing job
                    recorded[index] = Recorded(entry.id, True, made.id)
                    fixes.append((made.id, entry.id))
            if fixes:
                conn.executemany(_INBOX_SET_JOB, fixes)
    for index, row in enumerate(entries):
        at = first[(row[1], row[2])]
        if at != index:
            recorded[index] = Recorded(recorded[at].id, False, recorded[at].job_id)
    return recorded


def _save_and_enqueue(
    conn: sqlite3.Connection,
    key: str,
    text: str,
    expected: int | None,
    now: float,
    expires_at: float | None,
    rows: list[_Row],
    flags: list[_FlagParams | None],
    alongside: list[tuple[str, str]],
) -> tuple[Versioned, list[Enqueued]] | None:
    """Compare-and-set the entry *key*, create the entries *alongside* that are absent, then
    insert the jobs; one transaction (nothing of any when the version does not match)."""
    with _immediate(conn):
        if expected is None:
            version = _kv_create(conn, key, text, now, expires_at)
        else:
            version = _kv_update_at(conn, key, text, expected, now, expires_at)
        if version is None:
            return None
        for other, other_text in alongside:
            _kv_create(conn, other, other_text, now, expires_at)
        enqueued = _insert(conn, rows, flags) if rows else []
        saved = _kv_get(conn, key, now)
    if saved is None:  # cannot happen: written in this very transaction
        raise StoreError(f"the entry {key!r} vanished while it was written; try again")
    return saved, enqueued


def _claim(
    conn: sqlite3.Connection, sql: tuple[str, str], params: dict[str, Any], relaxed: str | None
) -> list[Job]:
    # A claim's commit does not wait for an fsync (synchronous=NORMAL for its transaction
    # only, in WAL mode: its frames reach the disk with the next durable commit or
    # checkpoint). A claim lost with a power cut only makes its jobs claimable again, as an
    # expired lease would -- at least once either way --, and the jobs' outcomes, committed
    # durably, make the claim durable too. An idle worker's claim is on the path of every
    # job's start and need not wait for the disk; enqueues and outcomes still do. *relaxed*
    # is the store's own synchronous setting, to go back to (None: keep it throughout).
    with _unsynced(conn, relaxed), _immediate(conn):
        expired = conn.execute(_ANY_EXPIRED, (params["now"],)).fetchone() is not None
        rows = conn.execute(sql[expired], params).fetchall()
    worker, until, now = params["worker"], float(params["until"]), float(params["now"])
    jobs = [_claimed(row, worker, until, now) for row in rows]
    jobs.sort(key=_claim_order)
    return jobs


def _complete_and_claim(
    conn: sqlite3.Connection,
    plain: str | None,
    others: str | None,
    worker: str,
    now: float,
    sql: tuple[str, str],
    params: dict[str, Any],
) -> tuple[list[str], list[Job]]:
    """``_complete`` then ``_claim``, in one transaction (each under a savepoint of it),
    committed as durably as the outcomes need."""
    with _immediate(conn):
        recorded = _complete(conn, plain, others, worker, now)
        claimed = _claim(conn, sql, params, None)
    return recorded, claimed


def _heartbeat(conn: sqlite3.Connection, ids: str, worker: str, until: float) -> list[str]:
    with _immediate(conn):
        return [row[0] for row in conn.execute(_HEARTBEAT, (until, ids, worker)).fetchall()]


def _complete(
    conn: sqlite3.Connection, plain: str | None, others: str | None, worker: str, now: float
) -> list[str]:
    """Record the plain successes (a JSON list of ids) and the other outcomes (a JSON list of
    rows for ``_COMPLETE``)."""
    with _immediate(conn):
        rows: list[Any] = []
        if plain is not None:
            rows = conn.execute(_SUCCEED, (now, plain, worker)).fetchall()
        if others is not None:
            params = {"outcomes": others, "worker": worker, "now": now}
            rows.extend(conn.execute(_COMPLETE, params).fetchall())
        flags: list[_FlagParams] = []
        for _, state, flag_text in rows:
            if flag_text is not None and (state == "succeeded" or state == "dead"):
                flag = _loads(flag_text)
                value = flag["succeeded"] if state == "succeeded" else flag["failed"]
                flags.append((flag["key"], flag["field"], value, now))
        if flags:
            conn.executemany(_MERGE_FLAG, flags)
    return [row[0] for row in rows]


def _wake(conn: sqlite3.Connection, provider: str, now: float, limit: int) -> int:
    with _immediate(conn):
        return conn.execute(_WAKE, {"provider": provider, "now": now, "limit": limit}).rowcount


def _save_progress(
    conn: sqlite3.Connection, job_id: str, worker: str, text: str | None, now: float
) -> bool:
    with _immediate(conn):
        return conn.execute(_SAVE_PROGRESS, (text, now, job_id, worker)).rowcount > 0


def _get(conn: sqlite3.Connection, job_id: str) -> Job | None:
    row = conn.execute(_GET, (job_id,)).fetchone()
    return None if row is None else _job(row)


def _find(conn: sqlite3.Connection, sql: str, params: list[Any]) -> list[Job]:
    return [_job(row) for row in conn.execute(sql, params).fetchall()]


def _select(conn: sqlite3.Connection, sql: str, params: list[Any]) -> list[_Row]:
    return conn.execute(sql, params).fetchall()


def _stats(conn: sqlite3.Connection, now: float) -> list[QueueStats]:
    own = not conn.in_transaction  # else a shared transaction is one snapshot already
    if own:
        conn.execute("BEGIN")  # one snapshot for the counts and the lag
    try:
        counts = conn.execute(_COUNTS).fetchall()
        ready = conn.execute(_OLDEST_READY, (now,)).fetchall()
        expired = conn.execute(_OLDEST_EXPIRED, (now,)).fetchall()
    finally:
        if own:
            conn.execute("COMMIT")
    per_queue: dict[str, dict[str, int]] = {}
    for queue, state, count in counts:
        per_queue.setdefault(queue, dict.fromkeys(_STATES, 0))[state] = count
    oldest: dict[str, float] = {}
    for queue, run_at in [*ready, *expired]:
        if queue not in oldest or run_at < oldest[queue]:
            oldest[queue] = float(run_at)
    return [QueueStats(queue, per_queue[queue], oldest.get(queue)) for queue in sorted(per_queue)]


def _redrive(conn: sqlite3.Connection, sql: str, params: list[Any], now: float) -> int:
    with _immediate(conn):
        rows = conn.execute(sql, params).fetchall()
        flags: list[_FlagParams] = []
        for (flag_text,) in rows:
            if flag_text is not None:
                flag = _loads(flag_text)
                flags.append((flag["key"], flag["field"], flag["pending"], now))
        if flags:
            conn.executemany(_MERGE_FLAG, flags)
    return len(rows)


def _change(conn: sqlite3.Connection, sql: str, params: list[Any]) -> int:
    with _immediate(conn):
        return conn.execute(sql, params).rowcount


# -- the transactional outbox --------------------------------------------------------------------


def _driver_connection(connection: Any) -> sqlite3.Connection:
    """The :mod:`sqlite3` connection under *connection* (itself, or an SQLAlchemy session's or
    connection's), in a transaction SQLAlchemy knows about."""
    if isinstance(connection, sqlite3.Connection):
        return connection
    if type(connection).__module__.startswith("sqlalchemy."):
        from sqlalchemy.engine import Connection as SAConnection
        from sqlalchemy.orm import Session

        if isinstance(connection, Session):
            connection = connection.connection()  # begins the session's transaction
        if isinstance(connection, SAConnection):
            if not connection.in_transaction():
                connection.begin()  # what the first execute would do: the caller commits it
            driver: Any = connection.connection.dbapi_connection
            if isinstance(driver, sqlite3.Connection):
                return driver
            raise ConfigurationError(
                f"the SQLAlchemy connection given to enqueue() uses {type(driver).__name__}, "
                "not sqlite3: a SQLite job queue writes through a sqlite3 connection"
            )
    raise ConfigurationError(
        f"enqueue(connection=...) takes a sqlite3.Connection or an SQLAlchemy Session or "
        f"Connection on the same database file, got {type(connection).__name__}"
    )


def _check_same_file(conn: sqlite3.Connection, path: str) -> None:
    files = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
    theirs = files[0] if files else ""
    same = False
    if theirs and path != ":memory:":
        try:
            same = os.path.samefile(theirs, path)
        except OSError:
            same = False
    if not same:
        raise ConfigurationError(
            f"the connection given to enqueue() is on {theirs or 'an in-memory database'!r}, "
            f"not on the job queue's database {path!r}: the transactional outbox needs a "
            "connection to the same file"
        )


def _begin_if_needed(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        return
    autocommit = getattr(conn, "autocommit", -1)  # Python 3.12+; -1: legacy transactions
    if autocommit is True or (autocommit == -1 and conn.isolation_level is None):
        raise ConfigurationError(
            "the sqlite3 connection given to enqueue() is in autocommit mode with no "
            "transaction open: BEGIN first, so the jobs commit with your own writes"
        )
    level = (conn.isolation_level or "").upper()
    conn.execute(f"BEGIN {level}" if level in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE") else "BEGIN")


def _enqueue_outbox(
    conn: sqlite3.Connection, rows: list[_Row], flags: list[_FlagParams | None]
) -> list[Enqueued]:
    _begin_if_needed(conn)
    conn.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        enqueued = _insert(conn, rows, flags)
    except BaseException:
        conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
        conn.execute(f"RELEASE {_SAVEPOINT}")
        raise
    conn.execute(f"RELEASE {_SAVEPOINT}")
    return enqueued


# -- the queue -----------------------------------------------------------------------------------


def _row(job: NewJob, now: float) -> _Row:
    state = JobState.SCHEDULED if job.run_at > now else JobState.QUEUED
    if job.max_attempts < 1:
        raise ConfigurationError(f"max_attempts must be at least 1, got {job.max_attempts!r}")
    return (
        job.id,
        job.name,
        job.queue,
        state.value,
        job.priority,
        encode(job.payload),
        job.payload_version,
        job.idempotency_key,
        job.max_attempts,
        job.run_at,
        now,
        now,
        job.provider,
        job.timeout,
        None if job.status_flag is None else encode(job.status_flag.to_json()),
        None if job.state_data is None else encode(job.state_data),
        encode(dict(job.context)) if job.context else None,
        job.ordering_key,
    )


def _outcome(outcome: Outcome, now: float) -> list[Any]:
    kind = outcome.kind
    if kind not in _KINDS:
        raise ConfigurationError(
            f"unknown outcome kind {kind!r}; expected one of {', '.join(sorted(_KINDS))}"
        )
    attempt = None if outcome.attempt is None else encode(outcome.attempt)
    if kind == "succeeded":
        result = None if outcome.result is None else encode(outcome.result)
        return [outcome.job_id, "succeeded", 1, None, result, attempt, 0, None, None]
    if kind == "release":
        return [outcome.job_id, "queued", 0, None, None, attempt, 0, None, None]
    run_at = now if outcome.run_at is None else outcome.run_at
    if kind == "defer":  # its cause, when given, is recorded (not as a failure)
        return [outcome.job_id, "queued", 0, run_at, None, attempt, 0, *_cause(outcome)]
    if kind == "retry":
        return [outcome.job_id, "retrying", 1, run_at, None, attempt, 1, *_error(outcome)]
    counted = 1 if outcome.attempted else 0
    return [outcome.job_id, "dead", counted, None, None, attempt, 1, *_error(outcome)]


def _completion_params(outcomes: Sequence[Outcome], now: float) -> tuple[str | None, str | None]:
    """``_complete``'s plain successes (a JSON list of ids) and other outcomes (a JSON list of
    rows), each None when there is none."""
    plain: dict[str, None] = {}
    others: dict[str, list[Any]] = {}
    for outcome in outcomes:  # a job named twice: its last outcome counts
        if outcome.kind == "succeeded" and outcome.result is None and outcome.attempt is None:
            plain[outcome.job_id] = None
            others.pop(outcome.job_id, None)
        else:
            others[outcome.job_id] = _outcome(outcome, now)
            plain.pop(outcome.job_id, None)
    return (
        _dumps(list(plain)) if plain else None,
        _dumps(list(others.values())) if others else None,
    )


def _claim_params(
    worker: str, limit: int, lease: float, now: float, queues: Sequence[str] | None
) -> tuple[tuple[str, str], dict[str, Any]]:
    """The claim statements (without, with expired leases) for *queues*, and their values."""
    params: dict[str, Any] = {"worker": worker, "until": now + lease, "now": now, "limit": limit}
    if queues is None:
        return _CLAIM_ANY, params
    if len(queues) == 1:
        params["queue"] = queues[0]
        return _CLAIM_ONE, params
    params["queues"] = _dumps(list(queues))
    return _CLAIM_SOME, params


def _inbox_row(entry: NewInboxEntry, now: float) -> _Row:
    return (
        entry.id,
        entry.channel,
        entry.event_id,
        entry.kind,
        entry.tenant_key,
        encode(entry.payload),
        now,
        now + entry.ttl,
        None if entry.job is None else entry.job.id,
        entry.request_id,
    )


def _flag_params(job: NewJob, now: float) -> _FlagParams | None:
    flag = job.status_flag
    return None if flag is None else (flag.key, flag.field, flag.pending, now)


def _error(outcome: Outcome) -> tuple[str | None, str | None]:
    return outcome.error_code, outcome.error


def _cause(outcome: Outcome) -> tuple[str | None, str | None]:
    """A deferral's cause: its code and message, or nothing (the job's last error stays)."""
    if outcome.error_code is None:
        return None, None
    return outcome.error_code, outcome.error


class SQLiteJobQueue:
    """:class:`~antifragile.jobs.JobQueue` on an open :class:`~antifragile.stores.SQLiteStore`;
    see the module docs. The queue neither opens nor closes its store."""

    def __init__(self, store: SQLiteStore) -> None:
        if not isinstance(store, SQLiteStore):
            raise ConfigurationError(
                f"SQLiteJobQueue needs a SQLiteStore, got {type(store).__name__}"
            )
        self.store = store
        self._db = store._db
        self._wakeups = SQLiteWakeups(store._db.path)

    def __repr__(self) -> str:
        return f"SQLiteJobQueue({self.store!r})"

    def wakeups(
        self, wake: Wake, *, queues: Sequence[str] | None = None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """While entered, *wake* is called when jobs are committed by any queue on this
        database file, in this process or another (see :mod:`antifragile.jobs._wakeup`),
        -- in this process, only by jobs of one of *queues* when given."""
        return self._wakeups.listening(wake, queues)

    async def next_due(self, *, now: float) -> float | None:
        """The earliest ``run_at`` after *now* of a job waiting to run (``None``: none)."""
        rows = await self._db.run(_select, _NEXT_DUE, [now])
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def enqueue(
        self, jobs: Sequence[NewJob], *, now: float, connection: Any = None
    ) -> list[Enqueued]:
        """See :meth:`JobQueue.enqueue`; *connection* as in the module docs."""
        rows = [_row(job, now) for job in jobs]
        flags = [_flag_params(job, now) for job in jobs]
        if connection is None:
            if not rows:
                return []
            enqueued = await self._db.run_shared_here(_enqueue, rows, flags)
            self._wakeups.notify({job.queue for job in jobs})
            return enqueued
        conn = _driver_connection(connection)
        try:
            _check_same_file(conn, self._db.path)
            enqueued = _enqueue_outbox(conn, rows, flags)
        except sqlite3.Error as exc:
            raise self._db.translate(exc) from exc
        if rows:  # the workers hear of the jobs once the caller's transaction is over
            after_transaction(lambda: conn.in_transaction, self._wakeups.notify)
        return enqueued

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
        sql, params = _claim_params(worker, limit, lease, now, queues)
        return await self._db.run(_claim, sql, params, self._db.relaxed())

    async def complete_and_claim(
        self,
        outcomes: Sequence[Outcome],
        *,
        worker: str,
        now: float,
        limit: int,
        lease: float,
        queues: Sequence[str] | None = None,
    ) -> tuple[list[str], list[Job]]:
        """:meth:`complete` the *outcomes*, then :meth:`claim` up to *limit* jobs -- in one
        transaction (one thread hop, one commit), as a busy worker does between two batches.
        Returns what each returns; an error keeps neither."""
        if not lease > 0:
            raise ConfigurationError(f"lease must be > 0 seconds, got {lease!r}")
        if limit < 1 or (queues is not None and not queues):
            return await self.complete(outcomes, worker=worker, now=now), []
        if not outcomes:
            return [], await self.claim(
                worker=worker, limit=limit, lease=lease, now=now, queues=queues
            )
        plain, others = _completion_params(outcomes, now)
        sql, params = _claim_params(worker, limit, lease, now, queues)
        return await self._db.run(_complete_and_claim, plain, others, worker, now, sql, params)

    async def heartbeat(
        self, job_ids: Sequence[str], *, worker: str, lease: float, now: float
    ) -> list[str]:
        if not lease > 0:
            raise ConfigurationError(f"lease must be > 0 seconds, got {lease!r}")
        if not job_ids:
            return []
        return await self._db.run(_heartbeat, _dumps(list(job_ids)), worker, now + lease)

    async def complete(self, outcomes: Sequence[Outcome], *, worker: str, now: float) -> list[str]:
        if not outcomes:
            return []
        plain, others = _completion_params(outcomes, now)
        return await self._db.run(_complete, plain, others, worker, now)

    async def wake_deferred(self, provider: str, *, now: float, limit: int | None = None) -> int:
        """See :meth:`JobQueue.wake_deferred`: one ``UPDATE`` over the ready jobs."""
        if limit is not None and limit < 1:
            return 0
        return await self._db.run(_wake, provider, now, -1 if limit is None else limit)

    async def save_progress(self, job_id: str, *, worker: str, state_data: Any, now: float) -> bool:
        text = None if state_data is None else encode(state_data)
        return await self._db.run(_save_progress, job_id, worker, text, now)

    async def get(self, job_id: str) -> Job | None:
        return await self._db.run(_get, job_id)

    async def find(self, where: JobFilter, *, limit: int = 100, offset: int = 0) -> list[Job]:
        terms, params = _where(where)
        sql = (
            f"SELECT {_COLUMNS} FROM antifragile_jobs WHERE 1{_and(terms)} "
            "ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?"
        )
        return await self._db.run(_find, sql, [*params, max(0, limit), max(0, offset)])

    async def stats(self, *, now: float) -> list[QueueStats]:
        return await self._db.run(_stats, now)

    async def redrive(self, where: JobFilter, *, now: float, delay: float = 0.0) -> int:
        terms, params = _where(where)
        sql = (
            "UPDATE antifragile_jobs SET state = 'queued', run_at = ?, attempts = 0, "
            "lease_owner = NULL, lease_until = NULL, updated_at = ? "
            f"WHERE state = 'dead' AND {_FINISHED}{_and(terms)} RETURNING status_flag"
        )
        count = await self._db.run(_redrive, sql, [now + delay, now, *params], now)
        if count:
            self._wakeups.notify()
        return count

    async def resolve(self, where: JobFilter, *, reason: str, now: float) -> int:
        terms, params = _where(where)
        sql = (
            "UPDATE antifragile_jobs SET state = 'resolved', resolution = ?, updated_at = ? "
            f"WHERE state = 'dead' AND {_FINISHED}{_and(terms)}"
        )
        return await self._db.run(_change, sql, [reason, now, *params])

    async def purge(self, where: JobFilter, *, now: float, limit: int | None = None) -> int:
        terms, params = _where(where)
        if limit is None:
            sql = f"DELETE FROM antifragile_jobs WHERE {_FINISHED}{_and(terms)}"
            return await self._db.run(_change, sql, params)
        if limit < 1:
            return 0
        sql = (
            "DELETE FROM antifragile_jobs WHERE id IN (SELECT id FROM antifragile_jobs "
            f"WHERE {_FINISHED}{_and(terms)} ORDER BY updated_at, id LIMIT ?)"
        )
        return await self._db.run(_change, sql, [*params, limit])

    async def cancel(self, ids: Sequence[str]) -> int:
        unique = list(dict.fromkeys(ids))
        deleted = 0
        for start in range(0, len(unique), 500):  # SQLite's limit on bound parameters
            chunk = unique[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            sql = (
                f"DELETE FROM antifragile_jobs WHERE id IN ({marks}) "
                "AND state IN ('scheduled', 'queued', 'retrying')"
            )
            deleted += await self._db.run(_change, sql, chunk)
        return deleted

    # -- liveness -------------------------------------------------------------------------------

    async def beat(self, process: ProcessBeat, *, now: float) -> None:
        queues = None if process.queues is None else _dumps(list(process.queues))
        params = [process.id, process.kind, process.host, process.pid, queues]
        await self._db.run(_change, _PROCESS_BEAT, [*params, process.started_at, now])

    async def leave(self, process_id: str) -> bool:
        return await self._db.run(_change, _PROCESS_LEAVE, [process_id]) > 0

    async def processes(self) -> list[ProcessBeat]:
        return [_process(row) for row in await self._db.run(_select, _PROCESS_LIST, [])]

    async def forget_processes(self, *, before: float) -> int:
        return await self._db.run(_change, _PROCESS_FORGET, [before])

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
        """See :meth:`~antifragile.jobs.RecordQueue.save_and_enqueue`: one ``BEGIN
        IMMEDIATE`` transaction for the compare-and-set, the entries alongside and the jobs."""
        text = encode(value)
        expires_at = None if ttl is None else now + ttl
        rows = [_row(job, now) for job in jobs]
        flags = [_flag_params(job, now) for job in jobs]
        others = [(k, encode(v)) for k, v in (alongside or {}).items()]
        saved = await self._db.run_shared_here(
            _save_and_enqueue, key, text, expected_version, now, expires_at, rows, flags, others
        )
        self._db.wrote(now)
        if saved is not None and rows:
            self._wakeups.notify({job.queue for job in jobs})
        return saved

    # -- the inbox ------------------------------------------------------------------------------

    async def record_inbound(
        self, entries: Sequence[NewInboxEntry], *, now: float
    ) -> list[Recorded]:
        """See :meth:`JobQueue.record_inbound` and the module docs."""
        if not entries:
            return []
        rows = [_inbox_row(entry, now) for entry in entries]
        jobs = [None if e.job is None else _row(e.job, now) for e in entries]
        flags = [None if e.job is None else _flag_params(e.job, now) for e in entries]
        recorded = await self._db.run_shared(_record, rows, jobs, flags)
        if any(r.created for r in recorded):
            self._wakeups.notify({e.job.queue for e in entries if e.job is not None})
        return recorded

    async def get_inbound(self, inbox_id: str) -> InboxEntry | None:
        rows = await self._db.read_here(_select, _INBOX_GET, [inbox_id])
        return _inbox_entry(rows[0]) if rows else None

    async def find_inbound(
        self, *, channel: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[InboxEntry]:
        params: list[Any] = [max(0, limit), max(0, offset)]
        if channel is None:
            sql = _INBOX_FIND.format(where="")
        else:
            sql = _INBOX_FIND.format(where=" WHERE channel = ?")
            params.insert(0, channel)
        return [_inbox_entry(row) for row in await self._db.run(_select, sql, params)]

    async def purge_inbound(self, *, now: float) -> int:
        return await self._db.run(_change, _INBOX_PURGE, [now])

    async def delete_inbound(self, ids: Sequence[str]) -> int:
        unique = list(dict.fromkeys(ids))
        if not unique:
            return 0
        deleted = 0
        for start in range(0, len(unique), 500):  # SQLite's limit on bound parameters
            chunk = unique[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            sql = f"DELETE FROM antifragile_inbox WHERE id IN ({marks})"
            deleted += await self._db.run(_change, sql, chunk)
        return deleted
