"""The PostgreSQL job queue: :class:`PostgresJobQueue` on a :class:`PostgresStore`'s pool.

Table ``antifragile_jobs`` (migration ``0002_jobs.sql``) has a column per field of
:class:`~antifragile.jobs.Job`; JSON fields are ``jsonb`` -- except ``context`` (migration
``0004_job_context.sql``), ``json`` stored as sent --, times are epoch seconds from the
caller (the server's ``now()`` is never used, so a FakeClock drives leases and schedules).

One statement per operation. Each method is one SQL statement -- common table expressions
chain its steps -- so it is atomic on the store's autocommit connections and costs one round
trip whatever the batch size; statements are prepared on the server once per connection:

* ``claim`` locks up to *limit* ready rows with ``FOR UPDATE SKIP LOCKED`` (rows another worker
  is claiming are passed over, never waited for) and marks them running in the same statement.
  Rows whose lease ran out come from their own small index and share the claim order. A row
  with an ordering key is taken only in its turn: ``NOT EXISTS`` an earlier unfinished job of
  its key, or one running under a live lease, in the claim's snapshot (index
  ``antifragile_jobs_ordering_open``, migration ``0005_ordering_keys.sql``); rows without a key
  skip the check. The claim
  runs in a transaction that first turns sorting off (``set_config(..., true)``, pipelined with
  the claim: still one round trip), so that it walks the claim index and stops after *limit*
  rows even when the planner's statistics think the backlog is small.
* ``enqueue`` inserts its batch from parallel arrays (``unnest``) -- a single job from scalar
  parameters, which cost the client far less to send -- with ``ON CONFLICT DO NOTHING``, and
  notifies the queue's channel once (``pg_notify``, in the same transaction) for the workers
  that ``LISTEN`` (:meth:`PostgresJobQueue.wakeups`); only when some jobs were not created
  does a second statement read which existing job each one names. ``heartbeat`` takes an id
  array. ``complete`` sends its batch as one ``jsonb`` object keyed by job id and read per row,
  so its plan never joins the table with an input whose size a prepared statement cannot know.
* A job's status flag (a field of a JSON object in ``antifragile_kv``) is merged by the same
  statement that records the job's outcome: ``value || {field: flag}`` and ``version + 1``
  (the entry's expiry kept), or a new entry when there is none (an expired entry is replaced).
  Several jobs of one batch that flag the same entry are folded into one write (the later
  outcome in the batch wins a field). An entry that holds something other than a JSON object is
  left alone, and the job's outcome is recorded all the same.
* The inbox (table ``antifragile_inbox``, migration ``0003_inbox.sql``): ``record_inbound`` is
  one statement too, its batch sent as two JSON arrays (entries, jobs). It first deletes the
  batch's expired entries, then inserts the entries with ``ON CONFLICT (channel, event_id) DO
  NOTHING`` -- a live entry is neither changed nor locked, so a duplicate writes nothing, and a
  concurrent writer of the same event waits for the first, then finds it -- and inserts the
  jobs of the entries it created through the same CTEs as ``enqueue``. Every lookup goes
  through a unique index (``LATERAL ... LIMIT 1`` per entry: without the limit the planner
  may turn the look-ups into a join that reads the whole inbox, as it does on a table it has
  no statistics for yet), whatever the planner thinks of the batch size; only the entries that
  were not inserted are looked up as duplicates. Repeats of an event within a batch are
  folded before the statement is sent. Concurrent calls share one statement (group commit,
  as on SQLite): while one is in flight, the calls that arrive meanwhile go together into the
  next; each caller is answered after the commit, and a shared statement that fails is run
  again caller by caller, so that one caller's bad entries cost only that caller.
* History grows by ``history || [attempt]`` in SQL; the row is never read back into Python.
* A claim returns only the columns it does not know already; JSON columns travel as text and
  are decoded here.

Transactional outbox. ``enqueue(jobs, now=..., connection=c)`` writes with the caller's own
connection, inside the caller's open transaction, and never commits or rolls back: the jobs
(and their status flags) exist exactly when the caller's transaction commits. *c* may be a
psycopg ``AsyncConnection`` or ``Connection``, or an SQLAlchemy ``Session``, ``AsyncSession``,
``Connection`` or ``AsyncConnection`` (through ``text()``, so with any PostgreSQL driver
SQLAlchemy supports). The connection must reach the same database as the store; the tables are
named with the store's schema, so the connection's ``search_path`` does not matter. A sync
connection or session blocks the event loop while its statement runs, as any sync call would. A
psycopg connection in autocommit mode commits the rows at once (there is no transaction to
join). When the caller has no transaction open yet, its driver begins one as usual for the
statement (psycopg outside autocommit, SQLAlchemy's autobegin), and it is the caller's to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow, tuple_row
from psycopg_pool import PoolClosed

from antifragile.errors import ConfigurationError, StoreError, StoreUnavailableError
from antifragile.jobs._model import (
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
from antifragile.jobs._wakeup import Wake
from antifragile.stores import Versioned
from antifragile.stores._codec import decode, encode
from antifragile.stores._postgres import LoneStatement, PostgresStore

__all__ = ["PostgresJobQueue"]

#: how often enqueue tries again for jobs that were neither inserted nor found (their
#: duplicate was deleted between the two statements)
_ENQUEUE_ROUNDS = 5

#: the longest identifier PostgreSQL keeps (a channel name is one)
_MAX_CHANNEL = 63
#: how long the listening connection waits for a notification before it checks that it is
#: still alive (seconds), and the longest pause before it connects again after a failure
_LISTEN_CHECK = 30.0
_LISTEN_BACKOFF = 5.0

_log = logging.getLogger("antifragile.jobs.postgres")

_STATES = {state.value: state for state in JobState}
_OUTCOME_KINDS = frozenset({"succeeded", "retry", "defer", "dead", "release"})

# -- SQL ----------------------------------------------------------------------------------------
# {jobs} and {kv} become the schema-qualified table names. Every parameter carries a cast, so
# the same text also runs through SQLAlchemy's text() once ``%(p)s::t`` becomes ``CAST(:p AS t)``.

# JSON columns travel as text (decoded by _json; an empty history as NULL)
_JSON_COLUMNS = {
    "payload": "{t}payload::text",
    "history": "NULLIF({t}history, '[]'::jsonb)::text",
    "result": "{t}result::text",
    "status_flag": "{t}status_flag::text",
    "state_data": "{t}state_data::text",
    "context": "{t}context::text",
}

#: every field of Job, in its order
_JOB_FIELDS = (
    "id", "name", "queue", "state", "priority", "payload", "payload_version", "idempotency_key",
    "attempts", "max_attempts", "run_at", "created_at", "updated_at", "provider", "timeout",
    "lease_owner", "lease_until", "first_failed_at", "last_failed_at", "last_error_code",
    "last_error", "history", "result", "resolution", "status_flag", "state_data", "context",
    "ordering_key", "ordering_seq",
)  # fmt: skip

#: a claim knows state, lease and updated_at already: only the other fields travel back
_CLAIMED_FIELDS = tuple(
    f for f in _JOB_FIELDS if f not in ("state", "updated_at", "lease_owner", "lease_until")
)


def _columns(fields: Sequence[str], table: str = "") -> str:
    prefix = f"{table}." if table else ""
    return ", ".join(
        f"{_JSON_COLUMNS[f].format(t=prefix)} AS {f}" if f in _JSON_COLUMNS else prefix + f
        for f in fields
    )


_JOB_COLUMNS = _columns(_JOB_FIELDS)

_CLAIMABLE_SQL = "('scheduled', 'queued', 'retrying')"


def _merge_flags(source: str) -> str:
    """An INSERT merging ``fields`` (jsonb) into the KV entry ``key`` for each row of *source*
    (one row per key, in key order, so concurrent merges lock entries in the same order)."""
    return f"""
    INSERT INTO {{kv}} AS e (key, value, version, expires_at)
    SELECT f.key, f.fields::text, 1, NULL FROM ({source}) AS f
    ON CONFLICT (key) DO UPDATE SET
        value = CASE WHEN e.expires_at <= %(now)s::float8 THEN EXCLUDED.value
                     ELSE (e.value::jsonb || EXCLUDED.value::jsonb)::text END,
        version = CASE WHEN e.expires_at <= %(now)s::float8 THEN 1 ELSE e.version + 1 END,
        expires_at = CASE WHEN e.expires_at <= %(now)s::float8 THEN NULL ELSE e.expires_at END
    WHERE e.expires_at <= %(now)s::float8 OR jsonb_typeof(e.value::jsonb) = 'object'
    """


#: the jobs of a batch, one row each (``ord`` is its position)
_JOBS_INPUT = """
    SELECT * FROM unnest(
        %(ids)s::text[], %(names)s::text[], %(queues)s::text[], %(priorities)s::int4[],
        %(payloads)s::text[], %(payload_versions)s::int4[], %(keys)s::text[],
        %(max_attempts)s::int4[], %(run_ats)s::float8[], %(providers)s::text[],
        %(timeouts)s::float8[], %(flags)s::text[], %(state_data)s::text[],
        %(contexts)s::text[], %(ordering_keys)s::text[]
    ) WITH ORDINALITY AS i(id, name, queue, priority, payload, payload_version,
                           idempotency_key, max_attempts, run_at, provider, timeout,
                           status_flag, state_data, context, ordering_key, ord)"""


def _insert_jobs(source: str, *, flags: bool = True) -> str:
    """The CTEs ``inserted`` (the jobs of *source*, rows of ``_JOBS_INPUT``, whose id and
    idempotency key are new) and ``flags`` (their status flags set pending; left out with
    *flags* false, for a job known to have none): how every job enters the queue, by enqueue
    or with an inbox entry. A job with an ordering key draws its place from the jobs' ordering
    sequence, in batch order."""
    inserted = f"""inserted AS (
    INSERT INTO {{jobs}} (id, name, queue, state, priority, payload, payload_version,
        idempotency_key, attempts, max_attempts, run_at, created_at, updated_at, provider,
        timeout, status_flag, state_data, context, ordering_key, ordering_seq)
    SELECT s.id, s.name, s.queue,
           CASE WHEN s.run_at > %(now)s::float8 THEN 'scheduled' ELSE 'queued' END,
           s.priority, s.payload::jsonb, s.payload_version, s.idempotency_key, 0,
           s.max_attempts, s.run_at, %(now)s::float8, %(now)s::float8, s.provider, s.timeout,
           s.status_flag::jsonb, s.state_data::jsonb, s.context::json, s.ordering_key,
           CASE WHEN s.ordering_key IS NOT NULL THEN nextval('{{ordering_seq}}') END
    FROM {source} AS s ORDER BY s.ord
    ON CONFLICT DO NOTHING
    RETURNING id, status_flag, queue
)"""
    if not flags:
        return inserted
    return f"""{inserted}, flags AS ({
        _merge_flags(
            "SELECT n.status_flag ->> 'key' AS key,"
            " jsonb_object_agg(n.status_flag ->> 'field', n.status_flag -> 'pending'"
            " ORDER BY n.id) AS fields"
            " FROM inserted AS n"
            " WHERE n.status_flag IS NOT NULL GROUP BY 1 ORDER BY 1"
        )
    })"""


def _notified(source: str) -> str:
    """The CTE ``notified``: one ``pg_notify`` on the queue's channel for each queue of the
    jobs in *source*, the queue's name its payload (delivered to the listening workers when
    the transaction commits; none when *source* has no rows), so that a worker is woken only by
    jobs of the queues it serves. It runs only when the statement's result joins it
    (``LEFT JOIN notified ON TRUE``: one row, an aggregate)."""
    return (
        "notified AS (SELECT count(pg_notify('{channel}', q.queue)) AS sent"
        f" FROM (SELECT DISTINCT queue FROM {source}) AS q)"
    )


ENQUEUE = f"""
WITH input AS ({_JOBS_INPUT}
), {_insert_jobs("input")}, {_notified("inserted")}
SELECT i.id FROM inserted AS i LEFT JOIN notified ON TRUE
"""

#: a single job, as scalar parameters: a single-job enqueue costs the client no array dumping
_ONE_JOB_INPUT = """(
    SELECT %(id)s::text AS id, %(name)s::text AS name, %(queue)s::text AS queue,
           %(priority)s::int4 AS priority, %(payload)s::text AS payload,
           %(payload_version)s::int4 AS payload_version,
           %(idempotency_key)s::text AS idempotency_key,
           %(max_attempts)s::int4 AS max_attempts, %(run_at)s::float8 AS run_at,
           %(provider)s::text AS provider, %(timeout)s::float8 AS timeout,
           %(status_flag)s::text AS status_flag, %(state_data)s::text AS state_data,
           %(context)s::text AS context, %(ordering_key)s::text AS ordering_key, 1 AS ord)"""

ENQUEUE_ONE = f"""
WITH {_insert_jobs(_ONE_JOB_INPUT)}, {_notified("inserted")}
SELECT i.id FROM inserted AS i LEFT JOIN notified ON TRUE
"""

#: a single job without a status flag (most jobs): no key-value merge for the server to run
ENQUEUE_ONE_UNFLAGGED = f"""
WITH {_insert_jobs(_ONE_JOB_INPUT, flags=False)}, {_notified("inserted")}
SELECT i.id FROM inserted AS i LEFT JOIN notified ON TRUE
"""

# -- the inbox --
# Each new entry names its own job -- or, when the job's idempotency key is known already, the
# job that has it. The results say, per entry: whether it was created, its id and job id (the
# first entry's for a duplicate, when this statement's snapshot sees it) and whether its job
# was inserted (to find the entries whose job id must be corrected, see record_inbound).
#: the batch of record_inbound: one JSON array of entries, one of their payloads and one of
#: their jobs. One parameter each costs far less to send and parse than an array per column,
#: and as the server cannot see how many rows a JSON array holds, its generic plan is as good
#: as a custom one: the prepared statement soon runs without being planned again. The payloads
#: are an array of their own, each element the payload's JSON text as encoded, read back by
#: json_array_elements: as json (not jsonb) each element is the very text sent, never
#: unescaped (inside the entries, json_to_recordset would unescape it and refuse a NUL), and it
#: is not escaped into a string of JSON text either (encoding it twice). Each entry carries
#: the ``now`` of its caller (the callers of one group commit differ); the jobs get the latest
#: of them.
_ENTRIES_INPUT = """
    SELECT e.*, p.payload FROM json_to_recordset(%(entries)s::json) AS e(
        id text, channel text, event_id text, kind text, tenant_key text,
        now float8, expires_at float8, job_id text, job_key text, request_id text, ord int8)
    JOIN json_array_elements(%(payloads)s::json) WITH ORDINALITY AS p(payload, ord)
      ON p.ord = e.ord"""
_ENTRY_JOBS_INPUT = """
    SELECT * FROM json_to_recordset(%(jobs)s::json) AS i(
        id text, name text, queue text, priority int4, payload text, payload_version int4,
        idempotency_key text, max_attempts int4, run_at float8, provider text, timeout float8,
        status_flag text, state_data text, context text, ordering_key text, ord int8)"""

RECORD_INBOUND = f"""
WITH entries AS ({_ENTRIES_INPUT}
), gone AS (
    SELECT ARRAY(
        SELECT x.id FROM entries AS e
        CROSS JOIN LATERAL (
            SELECT x.id FROM {{inbox}} AS x
            WHERE x.channel = e.channel AND x.event_id = e.event_id
              AND x.expires_at <= e.now LIMIT 1) AS x) AS ids
), expired AS (
    DELETE FROM {{inbox}}
    WHERE id = ANY((SELECT g.ids FROM gone AS g)::text[])
      AND (SELECT cardinality(g.ids) FROM gone AS g) > 0  -- else no scan at all
      AND expires_at <= %(now)s::float8
    RETURNING id
), recorded AS (
    INSERT INTO {{inbox}} (id, channel, event_id, kind, tenant_key, payload, received_at,
        expires_at, job_id, request_id)
    SELECT e.id, e.channel, e.event_id, e.kind, e.tenant_key, e.payload, e.now,
           e.expires_at,
           CASE WHEN e.job_key IS NULL THEN e.job_id
                ELSE coalesce((SELECT k.id FROM {{jobs}} AS k WHERE k.idempotency_key = e.job_key),
                              e.job_id) END,
           e.request_id
    FROM entries AS e
    WHERE (SELECT count(*) FROM expired) >= 0  -- the expired entries go first
    ORDER BY e.channel, e.event_id
    ON CONFLICT (channel, event_id) DO NOTHING
    RETURNING id, job_id
), input AS (
    SELECT i.* FROM ({_ENTRY_JOBS_INPUT}) AS i
    WHERE i.id IN (SELECT e.job_id FROM entries AS e JOIN recorded AS r ON r.id = e.id)
), {_insert_jobs("input")}, {_notified("inserted")}
SELECT e.ord, r.id IS NOT NULL, coalesce(r.id, d.id), coalesce(r.job_id, d.job_id),
       EXISTS (SELECT 1 FROM inserted AS n WHERE n.id = e.job_id)
FROM entries AS e
LEFT JOIN recorded AS r ON r.id = e.id
LEFT JOIN LATERAL (
    SELECT d.id, d.job_id FROM {{inbox}} AS d
    WHERE r.id IS NULL  -- only a duplicate is looked up
      AND d.channel = e.channel AND d.event_id = e.event_id
      AND d.expires_at > e.now LIMIT 1) AS d ON TRUE
LEFT JOIN notified ON TRUE
ORDER BY e.ord
"""

# the first entries of duplicates the statement above could not see (committed while it ran)
INBOUND_FIRST = """
SELECT f.ord, x.id, x.job_id
FROM unnest(%(channels)s::text[], %(event_ids)s::text[])
     WITH ORDINALITY AS f(channel, event_id, ord)
JOIN {inbox} AS x ON x.channel = f.channel AND x.event_id = f.event_id
WHERE x.expires_at > %(now)s::float8
"""

# new entries whose job id is in doubt: the job that has the idempotency key, else their own
INBOUND_SET_JOB = """
UPDATE {inbox} AS x
SET job_id = coalesce((SELECT k.id FROM {jobs} AS k WHERE k.idempotency_key = f.job_key), f.job_id)
FROM unnest(%(ids)s::text[], %(keys)s::text[], %(jobs)s::text[]) AS f(id, job_key, job_id)
WHERE x.id = f.id
RETURNING x.id, x.job_id
"""

_INBOX_COLUMNS = (
    "id, channel, event_id, kind, tenant_key, payload::text, received_at, expires_at, job_id, "
    "request_id"
)
GET_INBOUND = f"SELECT {_INBOX_COLUMNS} FROM {{inbox}} WHERE id = %(id)s::text"
FIND_INBOUND = f"""
SELECT {_INBOX_COLUMNS} FROM {{inbox}}
ORDER BY received_at DESC, id DESC LIMIT %(limit)s::int8 OFFSET %(offset)s::int8
"""
FIND_INBOUND_CHANNEL = f"""
SELECT {_INBOX_COLUMNS} FROM {{inbox}} WHERE channel = %(channel)s::text
ORDER BY received_at DESC, id DESC LIMIT %(limit)s::int8 OFFSET %(offset)s::int8
"""
PURGE_INBOUND = "DELETE FROM {inbox} WHERE expires_at <= %(now)s::float8"
DELETE_INBOUND = "DELETE FROM {inbox} WHERE id = ANY(%(ids)s::text[])"

CANCEL = """
DELETE FROM {jobs} WHERE id = ANY(%(ids)s::text[]) AND state IN ('scheduled', 'queued', 'retrying')
"""

PROCESS_BEAT = """
INSERT INTO {processes} (id, kind, host, pid, queues, started_at, last_seen)
VALUES (%(id)s::text, %(kind)s::text, %(host)s::text, %(pid)s::int4, %(queues)s::jsonb,
        %(started_at)s::float8, %(now)s::float8)
ON CONFLICT (id) DO UPDATE SET
    kind = EXCLUDED.kind, host = EXCLUDED.host, pid = EXCLUDED.pid, queues = EXCLUDED.queues,
    started_at = EXCLUDED.started_at, last_seen = EXCLUDED.last_seen
"""
PROCESS_LEAVE = "DELETE FROM {processes} WHERE id = %(id)s::text"
PROCESS_LIST = """
SELECT id, kind, host, pid, queues::text, started_at, last_seen FROM {processes} ORDER BY kind, id
"""
PROCESS_FORGET = "DELETE FROM {processes} WHERE last_seen < %(before)s::float8"

# save_and_enqueue: the compare-and-set of a key-value entry, in the transaction of the jobs
SAVE_CREATE = """
INSERT INTO {kv} AS e (key, value, version, expires_at)
VALUES (%(key)s::text, %(value)s::text, 1, %(expires_at)s::float8)
ON CONFLICT (key) DO UPDATE SET
    value = EXCLUDED.value, version = 1, expires_at = EXCLUDED.expires_at
WHERE e.expires_at <= %(now)s::float8
RETURNING version
"""
SAVE_UPDATE = """
UPDATE {kv}
SET value = %(value)s::text, version = version + 1, expires_at = %(expires_at)s::float8
WHERE key = %(key)s::text AND version = %(expected)s::bigint
  AND (expires_at IS NULL OR expires_at > %(now)s::float8)
RETURNING version
"""
SAVED = "SELECT value, version, expires_at FROM {kv} WHERE key = %(key)s"
#: the compare-and-set (``{save}``: SAVE_CREATE or SAVE_UPDATE) with the entries alongside it,
#: created when absent, in one statement -- only when the compare-and-set wrote
SAVE_ALONGSIDE = """
WITH saved AS ({save}), others AS (
    INSERT INTO {kv} AS o (key, value, version, expires_at)
    SELECT t.key, t.value, 1, %(expires_at)s::float8
    FROM unnest(%(other_keys)s::text[], %(other_values)s::text[]) AS t(key, value)
    WHERE EXISTS (SELECT 1 FROM saved)
    ON CONFLICT (key) DO UPDATE SET
        value = EXCLUDED.value, version = 1, expires_at = EXCLUDED.expires_at
    WHERE o.expires_at <= %(now)s::float8
)
SELECT version FROM saved
"""

#: the parameters of each compare-and-set, in the order a lone statement takes them
_SAVE_NAMES: dict[str, tuple[str, ...]] = {
    SAVE_CREATE: ("key", "value", "now", "expires_at"),
    SAVE_UPDATE: ("key", "value", "now", "expires_at", "expected"),
}


def _save_enqueue(source: str, inserted: str = "ARRAY(SELECT id FROM inserted)") -> str:
    """save_and_enqueue in one statement (``{save}``: SAVE_CREATE or SAVE_UPDATE; *source*:
    the jobs, ``_JOBS_INPUT`` or ``_ONE_JOB_INPUT``): the compare-and-set, the jobs (only
    when it wrote) and the entries alongside (created when absent). A job's status flag on an
    entry this statement creates is written into the new entry; one on another existing entry
    is merged as enqueue merges it. (A flag on the saved entry itself would change its row
    twice: save_and_enqueue keeps its transaction for that.) It returns the new version (NULL:
    the compare-and-set lost) and *inserted*: the ids of the jobs inserted."""
    return f"""
WITH saved AS ({{save}}), input AS (
    SELECT j.* FROM {source} AS j WHERE EXISTS (SELECT 1 FROM saved)
), {_insert_jobs("input", flags=False)}, pending AS (
    SELECT n.status_flag ->> 'key' AS key,
           jsonb_object_agg(n.status_flag ->> 'field', n.status_flag -> 'pending'
                            ORDER BY n.id) AS fields
    FROM inserted AS n WHERE n.status_flag IS NOT NULL GROUP BY 1
), others AS (
    INSERT INTO {{kv}} AS o (key, value, version, expires_at)
    SELECT t.key,
           CASE WHEN p.fields IS NULL THEN t.value ELSE (t.value::jsonb || p.fields)::text END,
           1, %(expires_at)s::float8
    FROM json_each_text(%(others)s::json) AS t(key, value)
    LEFT JOIN pending AS p ON p.key = t.key
    WHERE EXISTS (SELECT 1 FROM saved)
    ON CONFLICT (key) DO UPDATE SET
        value = EXCLUDED.value, version = 1, expires_at = EXCLUDED.expires_at
    WHERE o.expires_at <= %(now)s::float8
    RETURNING key
), flags AS ({
        _merge_flags(
            "SELECT p.key, p.fields FROM pending AS p"
            " WHERE p.key NOT IN (SELECT key FROM others) ORDER BY 1"
        )
    }), {_notified("inserted")}
SELECT (SELECT version FROM saved), {inserted}
FROM (SELECT 1) AS one LEFT JOIN notified ON TRUE
"""


SAVE_ENQUEUE = _save_enqueue(f"({_JOBS_INPUT})")
#: a single job, as scalar parameters: its id when it was inserted (NULL: not inserted), so
#: that the statement runs as a lone statement (:meth:`_Database.lone_rows`, which reads no
#: arrays)
SAVE_ENQUEUE_ONE = _save_enqueue(_ONE_JOB_INPUT, "(SELECT id FROM inserted)")

# the jobs that were not inserted: which existing job each one names (an index look-up per key
# and per id, whatever plan the server keeps: made while the table was small, a plan of one
# scan for all of them would read every job)
ENQUEUE_EXISTING = """
SELECT j.id, j.idempotency_key FROM unnest(%(keys)s::text[]) AS k(key)
CROSS JOIN LATERAL (
    SELECT id, idempotency_key FROM {jobs} WHERE idempotency_key = k.key LIMIT 1) AS j
UNION
SELECT j.id, j.idempotency_key FROM unnest(%(ids)s::text[]) AS i(id)
CROSS JOIN LATERAL (SELECT id, idempotency_key FROM {jobs} WHERE id = i.id LIMIT 1) AS j
"""


#: a job taken over from a worker whose lease ran out: the lost run is recorded (LEASE_EXPIRED in
#: the history, not counted as an attempt); the worker dead-letters a job that lost its worker
#: too many times, so a job that crashes every worker cannot loop forever
LEASE_EXPIRED_MESSAGE = "its worker stopped renewing the lease (crashed, killed or stalled)"
_TAKEOVER = f"""
        , first_failed_at = CASE WHEN j.state = 'running'
                            THEN coalesce(j.first_failed_at, %(now)s::float8)
                            ELSE j.first_failed_at END
        , last_failed_at = CASE WHEN j.state = 'running' THEN %(now)s::float8
                           ELSE j.last_failed_at END
        , last_error_code = CASE WHEN j.state = 'running' THEN 'LEASE_EXPIRED'
                            ELSE j.last_error_code END
        , last_error = CASE WHEN j.state = 'running' THEN '{LEASE_EXPIRED_MESSAGE}'
                       ELSE j.last_error END
        , history = CASE WHEN j.state = 'running' THEN j.history || jsonb_build_array(
              jsonb_build_object('number', j.attempts + 1, 'started_at', NULL,
                  'duration', NULL, 'code', 'LEASE_EXPIRED',
                  'message', '{LEASE_EXPIRED_MESSAGE}', 'status', NULL, 'delay', NULL))
              ELSE j.history END"""


#: a job with an ordering key runs only when no job of its key enqueued before it (a lower
#: place) is unfinished, and no job of its key is running under a live
#: lease (see jobs._model). Checked against the claim's snapshot: a job another claimer is
#: taking right now is still unfinished there, so two claimers never start one key twice.
_IN_ORDER = """ AND (c.ordering_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM {jobs} AS o
        WHERE o.ordering_key = c.ordering_key
          AND o.state IN ('scheduled', 'queued', 'running', 'retrying')
          AND (o.ordering_seq < c.ordering_seq
               OR (o.state = 'running' AND o.lease_until > %(now)s::float8 AND o.id <> c.id))))"""


def _claim(queue_filter: str) -> str:
    # ready rows and rows whose lease ran out come from two indexes; each side is locked with
    # SKIP LOCKED, the best *limit* of both are taken (the rest unlock when the statement ends)
    return f"""
WITH ready AS MATERIALIZED (
    SELECT id, priority, run_at FROM {{jobs}} AS c
    WHERE state IN {_CLAIMABLE_SQL} AND run_at <= %(now)s::float8{queue_filter}{_IN_ORDER}
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s::int8
    FOR UPDATE SKIP LOCKED
), expired AS MATERIALIZED (
    SELECT id, priority, run_at FROM {{jobs}} AS c
    WHERE state = 'running' AND lease_until <= %(now)s::float8{queue_filter}{_IN_ORDER}
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s::int8
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM (SELECT * FROM ready UNION ALL SELECT * FROM expired) AS c
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s::int8
), claimed AS (
    UPDATE {{jobs}} AS j SET state = 'running', lease_owner = %(worker)s::text,
        lease_until = %(until)s::float8, updated_at = %(now)s::float8{_TAKEOVER}
    FROM picked WHERE j.id = picked.id
    RETURNING {_columns(_CLAIMED_FIELDS, "j")}
)
SELECT * FROM claimed ORDER BY priority DESC, run_at, id
"""


CLAIM_ANY = _claim("")
CLAIM_ONE = _claim(" AND queue = %(queue)s::text")
CLAIM_SOME = _claim(" AND queue = ANY(%(queues)s::text[])")

# set for the claim's transaction only (see PostgresJobQueue._claim_rows); JIT goes too, or
# the cost that disables sorting would make the server compile the claim (hundreds of ms). The
# claim's plan is generic: with sorting off it walks the claim index whatever the parameters,
# and planning it again for every claim (the ordering-key check makes it costlier to plan)
# would cost more than running it. The claim's commit does not wait for its WAL to reach the
# disk (synchronous_commit off, for this transaction only): a claim lost with a server crash
# only makes the job claimable again, as an expired lease would -- at least once either way --,
# and the job's later outcome, committed durably, makes the WAL before it durable too. An idle
# worker's claim is on the path of every job's start, and need not wait for an fsync.
_NO_SORT = (
    b"SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true),"
    b" set_config('plan_cache_mode', 'force_generic_plan', true),"
    b" set_config('synchronous_commit', 'off', true)"
)

HEARTBEAT = """
UPDATE {jobs} SET lease_until = %(until)s::float8
WHERE id = ANY(%(ids)s::text[]) AND state = 'running' AND lease_owner = %(worker)s::text
RETURNING id
"""

# The batch is one jsonb object keyed by job id ({"n": position, "k": kind, "t": run_at,
# "r": result, "a": attempt, "c": error code, "e": error}), read per row with ``->``: no join
# with the input, whose size a prepared statement's plan cannot know. retry and dead count an
# attempt and record the failure (its code and message); succeeded counts the attempt; defer
# and release count nothing and record no failure -- a defer with a code ("w": why) records it
# as the last error, without the failure times. Every outcome ends the lease.
COMPLETE = f"""
WITH done AS (
    UPDATE {{jobs}} AS j SET
        state = CASE %(batch)s::jsonb -> j.id ->> 'k'
                    WHEN 'succeeded' THEN 'succeeded' WHEN 'retry' THEN 'retrying'
                    WHEN 'dead' THEN 'dead' ELSE 'queued' END,
        attempts = j.attempts + CASE WHEN %(batch)s::jsonb -> j.id ? 'u' THEN 0
                                     WHEN %(batch)s::jsonb -> j.id ->> 'k'
                                          IN ('succeeded', 'retry', 'dead') THEN 1 ELSE 0 END,
        run_at = CASE WHEN %(batch)s::jsonb -> j.id ->> 'k' IN ('retry', 'defer')
                      THEN COALESCE((%(batch)s::jsonb -> j.id ->> 't')::float8, %(now)s::float8)
                      ELSE j.run_at END,
        result = CASE WHEN %(batch)s::jsonb -> j.id ->> 'k' = 'succeeded'
                      THEN %(batch)s::jsonb -> j.id -> 'r' ELSE j.result END,
        history = CASE WHEN %(batch)s::jsonb -> j.id -> 'a' IS NULL THEN j.history
                       ELSE j.history || jsonb_build_array(%(batch)s::jsonb -> j.id -> 'a') END,
        first_failed_at = CASE WHEN %(batch)s::jsonb -> j.id ->> 'k' IN ('retry', 'dead')
                               THEN COALESCE(j.first_failed_at, %(now)s::float8)
                               ELSE j.first_failed_at END,
        last_failed_at = CASE WHEN %(batch)s::jsonb -> j.id ->> 'k' IN ('retry', 'dead')
                              THEN %(now)s::float8 ELSE j.last_failed_at END,
        last_error_code = CASE WHEN %(batch)s::jsonb -> j.id ->> 'k' IN ('retry', 'dead')
                                    OR %(batch)s::jsonb -> j.id ? 'w'
                               THEN %(batch)s::jsonb -> j.id ->> 'c' ELSE j.last_error_code END,
        last_error = CASE WHEN %(batch)s::jsonb -> j.id ->> 'k' IN ('retry', 'dead')
                               OR %(batch)s::jsonb -> j.id ? 'w'
                          THEN %(batch)s::jsonb -> j.id ->> 'e' ELSE j.last_error END,
        lease_owner = NULL,
        lease_until = NULL,
        updated_at = %(now)s::float8
    WHERE j.id = ANY(ARRAY(SELECT jsonb_object_keys(%(batch)s::jsonb)))
      AND j.state = 'running' AND j.lease_owner = %(worker)s::text
    RETURNING j.id, %(batch)s::jsonb -> j.id ->> 'k' AS kind, j.status_flag,
              (%(batch)s::jsonb -> j.id ->> 'n')::int4 AS ord
), flags AS ({
    _merge_flags(
        "SELECT d.status_flag ->> 'key' AS key,"
        " jsonb_object_agg(d.status_flag ->> 'field',"
        " d.status_flag -> CASE d.kind WHEN 'succeeded' THEN 'succeeded' ELSE 'failed' END"
        " ORDER BY d.ord) AS fields"
        " FROM done AS d"
        " WHERE d.status_flag IS NOT NULL AND d.kind IN ('succeeded', 'dead')"
        " GROUP BY 1 ORDER BY 1"
    )
})
SELECT id FROM done
"""

# the jobs of a provider deferred by its breaker or rate limiter become due (wake_deferred); a
# NULL limit takes them all
WAKE_DEFERRED = f"""
UPDATE {{jobs}} SET run_at = %(now)s::float8, updated_at = %(now)s::float8
WHERE id IN (
    SELECT id FROM {{jobs}}
    WHERE state = 'queued' AND provider = %(provider)s::text AND run_at > %(now)s::float8
      AND last_error_code IN ({", ".join(f"'{c}'" for c in WAKE_CODES)})
    ORDER BY run_at, id LIMIT %(limit)s::int8
    FOR UPDATE SKIP LOCKED)
"""

SAVE_PROGRESS = """
UPDATE {jobs} SET state_data = %(state_data)s::jsonb, updated_at = %(now)s::float8
WHERE id = %(id)s::text AND state = 'running' AND lease_owner = %(worker)s::text
"""

GET = f"SELECT {_JOB_COLUMNS} FROM {{jobs}} WHERE id = %(id)s::text"

FIND = f"""
SELECT {_JOB_COLUMNS} FROM {{jobs}} WHERE {{where}}
ORDER BY updated_at DESC, id DESC LIMIT %(limit)s::int8 OFFSET %(offset)s::int8
"""

STATS = f"""
SELECT queue, state, count(*),
       min(run_at) FILTER (WHERE (state IN {_CLAIMABLE_SQL} AND run_at <= %(now)s::float8)
                              OR (state = 'running' AND lease_until <= %(now)s::float8))
FROM {{jobs}} GROUP BY queue, state ORDER BY queue, state
"""

REDRIVE = f"""
WITH redriven AS (
    UPDATE {{jobs}} SET state = 'queued', attempts = 0, run_at = %(run_at)s::float8,
        lease_owner = NULL, lease_until = NULL, updated_at = %(now)s::float8
    WHERE state = 'dead' AND {{where}}
    RETURNING id, status_flag, queue
), flags AS ({
    _merge_flags(
        "SELECT r.status_flag ->> 'key' AS key,"
        " jsonb_object_agg(r.status_flag ->> 'field', r.status_flag -> 'pending' ORDER BY r.id)"
        " AS fields"
        " FROM redriven AS r WHERE r.status_flag IS NOT NULL GROUP BY 1 ORDER BY 1"
    )
}), {_notified("redriven")}
SELECT count(*) FROM redriven LEFT JOIN notified ON TRUE
"""

#: the earliest time a waiting job falls due after now (an idle worker sleeps until then)
NEXT_DUE = f"""
SELECT min(run_at) FROM {{jobs}} WHERE state IN {_CLAIMABLE_SQL} AND run_at > %(now)s::float8
"""

RESOLVE = """
UPDATE {jobs} SET state = 'resolved', resolution = %(reason)s::text,
    updated_at = %(now)s::float8
WHERE state = 'dead' AND {where}
"""

PURGE = """
DELETE FROM {jobs} WHERE state IN ('succeeded', 'dead', 'resolved') AND {where}
"""

# a bounded batch: the oldest matching rows no other statement holds
PURGE_BATCH = """
DELETE FROM {jobs} WHERE id IN (
    SELECT id FROM {jobs} WHERE state IN ('succeeded', 'dead', 'resolved') AND {where}
    ORDER BY updated_at, id LIMIT %(limit)s::int8 FOR UPDATE SKIP LOCKED
)
"""


# -- helpers ----------------------------------------------------------------------------------


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


_CAST_PARAM = re.compile(r"%\((\w+)\)s::(\w+(?:\[\])?)")


def _for_sqlalchemy(query: str) -> str:
    """*query* with psycopg's ``%(p)s::t`` parameters written as ``CAST(:p AS t)`` (SQLAlchemy's
    ``text()`` would read ``:p::t`` as literal text)."""
    converted = _CAST_PARAM.sub(r"CAST(:\1 AS \2)", query)
    assert "%(" not in converted, "every parameter needs a cast"
    return converted


def _filter(where: JobFilter) -> tuple[str, dict[str, Any]]:
    """The SQL condition for *where* (``TRUE`` when nothing is set) and its parameters."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    if where.states:
        parts.append("state = ANY(%(f_states)s::text[])")
        params["f_states"] = [JobState(s).value for s in where.states]
    for column, value in (
        ("queue", where.queue),
        ("name", where.name),
        ("provider", where.provider),
        ("last_error_code", where.error_code),
    ):
        if value is not None:
            parts.append(f"{column} = %(f_{column})s::text")
            params[f"f_{column}"] = value
    if where.older_than is not None:
        parts.append("updated_at < %(f_older)s::float8")
        params["f_older"] = float(where.older_than)
    if where.newer_than is not None:
        parts.append("updated_at >= %(f_newer)s::float8")
        params["f_newer"] = float(where.newer_than)
    if where.ids:
        parts.append("id = ANY(%(f_ids)s::text[])")
        params["f_ids"] = list(where.ids)
    if where.id_part is not None:
        parts.append("(id LIKE %(f_id_head)s::text OR id LIKE %(f_id_tail)s::text)")
        params["f_id_head"] = f"{where.id_part}%"
        params["f_id_tail"] = f"%{where.id_part}"
    return (" AND ".join(parts) or "TRUE"), params


_raw_decode = json.JSONDecoder().raw_decode
_json_loads = json.loads


def _json(text: str | None) -> Any:
    """A JSON column's value (the server's text of a jsonb is one value, no padding)."""
    return None if text is None else _raw_decode(text)[0]


def _flag(text: str | None) -> StatusFlag | None:
    return None if text is None else StatusFlag.from_json(_raw_decode(text)[0])


def _context(text: str | None) -> dict[str, str]:
    """A job's context (json, stored as sent: compact text, so one plain parse)."""
    if text is None:
        return {}
    context: dict[str, str] = _json_loads(text)
    return context


def _history(text: str | None) -> tuple[dict[str, Any], ...]:
    return () if text is None else tuple(_raw_decode(text)[0])


def _job(row: TupleRow) -> Job:
    """A Job from a row of ``_JOB_FIELDS``."""
    return build_job(
        row[0],
        row[1],
        row[2],
        _STATES[row[3]],
        row[4],
        _json(row[5]),
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
        row[15],
        row[16],
        row[17],
        row[18],
        row[19],
        row[20],
        _history(row[21]),
        _json(row[22]),
        row[23],
        _flag(row[24]),
        _json(row[25]),
        _context(row[26]),
        row[27],
        row[28],
    )


def _claimed(row: TupleRow, worker: str, until: float, now: float) -> Job:
    """A Job from a row of ``_CLAIMED_FIELDS`` that *worker* now holds until *until*."""
    return build_job(
        row[0],
        row[1],
        row[2],
        JobState.RUNNING,
        row[3],
        _json(row[4]),
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
        now,
        row[11],
        row[12],
        worker,
        until,
        row[13],
        row[14],
        row[15],
        row[16],
        _history(row[17]),
        _json(row[18]),
        row[19],
        _flag(row[20]),
        _json(row[21]),
        _context(row[22]),
        row[23],
        row[24],
    )


def _enqueue_params(jobs: Sequence[NewJob], now: float) -> dict[str, Any]:
    return {
        "now": now,
        "ids": [j.id for j in jobs],
        "names": [j.name for j in jobs],
        "queues": [j.queue for j in jobs],
        "priorities": [int(j.priority) for j in jobs],
        "payloads": [encode(j.payload) for j in jobs],
        "payload_versions": [int(j.payload_version) for j in jobs],
        "keys": [j.idempotency_key for j in jobs],
        "max_attempts": [int(j.max_attempts) for j in jobs],
        "run_ats": [float(j.run_at) for j in jobs],
        "providers": [j.provider for j in jobs],
        "timeouts": [None if j.timeout is None else float(j.timeout) for j in jobs],
        "flags": [None if j.status_flag is None else encode(j.status_flag.to_json()) for j in jobs],
        "state_data": [None if j.state_data is None else encode(j.state_data) for j in jobs],
        "contexts": [encode(dict(j.context)) if j.context else None for j in jobs],
        "ordering_keys": [j.ordering_key for j in jobs],
    }


#: the names of _job_row's values, in its order
_JOB_VALUE_NAMES = (
    "id", "name", "queue", "priority", "payload", "payload_version", "idempotency_key",
    "max_attempts", "run_at", "provider", "timeout", "status_flag", "state_data", "context",
    "ordering_key",
)  # fmt: skip


def _job_row(job: NewJob) -> tuple[Any, ...]:
    """A job's values as a single enqueue and the inbox's jobs send them (_JOB_VALUE_NAMES)."""
    return (
        job.id,
        job.name,
        job.queue,
        int(job.priority),
        encode(job.payload),
        int(job.payload_version),
        job.idempotency_key,
        int(job.max_attempts),
        float(job.run_at),
        job.provider,
        None if job.timeout is None else float(job.timeout),
        None if job.status_flag is None else encode(job.status_flag.to_json()),
        None if job.state_data is None else encode(job.state_data),
        encode(dict(job.context)) if job.context else None,
        job.ordering_key,
    )


def _job_values(job: NewJob) -> dict[str, Any]:
    """A job's values by name (_job_row)."""
    return dict(zip(_JOB_VALUE_NAMES, _job_row(job), strict=True))


_SQL_COMMENT = re.compile(r"--[^\n]*")


def _compact(query: str) -> str:
    """*query* without its comments and runs of white space (for SQL whose string literals
    hold neither ``--`` nor significant white space). psycopg converts a statement's
    placeholders on every call unless its text is at most 4096 bytes long; the inbox's
    statement is longer than that as written."""
    return " ".join(_SQL_COMMENT.sub("", query).split())


def _record_params(entries: Sequence[NewInboxEntry], nows: Sequence[float]) -> dict[str, Any]:
    """RECORD_INBOUND's parameters: the entries (each with its caller's *nows*), and the jobs of
    those that have one (the same values as enqueue sends, at the latest of *nows*)."""
    records: list[dict[str, Any]] = []
    jobs: list[dict[str, Any]] = []
    for position, (entry, now) in enumerate(zip(entries, nows, strict=True), 1):
        job = entry.job
        records.append(
            {
                "id": entry.id,
                "channel": entry.channel,
                "event_id": entry.event_id,
                "kind": entry.kind,
                "tenant_key": entry.tenant_key,
                "now": now,
                "expires_at": now + float(entry.ttl),
                "job_id": None if job is None else job.id,
                "job_key": None if job is None else job.idempotency_key,
                "request_id": entry.request_id,
                "ord": position,
            }
        )
        if job is not None:
            values = _job_values(job)
            values["ord"] = len(jobs) + 1
            jobs.append(values)
    return {
        "now": max(nows),
        "entries": encode(records),
        # an array of the payloads: each element is the payload's own JSON text (the same
        # text as encode(payload) on its own), stored as it is (see _ENTRIES_INPUT)
        "payloads": encode([entry.payload for entry in entries]),
        "jobs": encode(jobs),
    }


def _inbox_entry(row: TupleRow) -> InboxEntry:
    return InboxEntry(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        _json(row[5]),
        row[6],
        row[7],
        row[8],
        row[9],
    )


def _complete_params(
    outcomes: Sequence[Outcome], worker: str, now: float
) -> tuple[dict[str, Any], list[str]]:
    """COMPLETE's parameters (``batch`` is the JSON object it reads) and the job ids, in order
    and each once."""
    batch: dict[str, dict[str, Any]] = {}
    for outcome in outcomes:
        if outcome.kind not in _OUTCOME_KINDS:
            raise ConfigurationError(
                f"unknown outcome kind {outcome.kind!r} for job {outcome.job_id!r}"
            )
        if outcome.job_id in batch:  # the first outcome ends the lease; later ones find none
            continue
        entry: dict[str, Any] = {"n": len(batch), "k": outcome.kind}
        if outcome.run_at is not None:
            entry["t"] = float(outcome.run_at)
        if outcome.result is not None:
            entry["r"] = outcome.result
        if outcome.attempt is not None:
            entry["a"] = outcome.attempt
        if outcome.error_code is not None:
            entry["c"] = outcome.error_code
        if outcome.error is not None:
            entry["e"] = outcome.error
        if not outcome.attempted:
            entry["u"] = 1  # not attempted: attempts stay as they are
        if outcome.kind == "defer" and outcome.error_code is not None:
            entry["w"] = 1  # why it waits: recorded as its last error
        batch[outcome.job_id] = entry
    return {"now": now, "worker": worker, "batch": encode(batch)}, list(batch)


def _nul_error(exc: StoreError) -> ConfigurationError | None:
    if isinstance(exc.__cause__, psycopg.errors.UntranslatableCharacter):
        return ConfigurationError(
            "a job's JSON cannot be stored: PostgreSQL jsonb cannot hold the NUL character"
        )
    return None


# -- the queue --------------------------------------------------------------------------------


class _InboxCall:
    """A record_inbound call waiting for the next group's statement."""

    __slots__ = ("entries", "future", "now")

    def __init__(
        self, entries: Sequence[NewInboxEntry], now: float, future: asyncio.Future[list[Recorded]]
    ) -> None:
        self.entries = entries
        self.now = now
        self.future = future


def _settle(
    future: asyncio.Future[list[Recorded]],
    result: list[Recorded] | None,
    error: BaseException | None,
) -> None:
    if future.done():  # its caller was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)


def channel_name(schema: str) -> str:
    """The ``LISTEN``/``NOTIFY`` channel of the queue in *schema* (at most 63 bytes)."""
    name = f"antifragile_jobs.{schema}"
    if len(name.encode()) > _MAX_CHANNEL:
        name = "antifragile_jobs." + hashlib.sha256(schema.encode()).hexdigest()[:32]
    return name


class _Statements:
    """The SQL with the store's schema-qualified table names, as psycopg and SQLAlchemy text."""

    def __init__(self, schema: str) -> None:
        self.jobs = f"{_quote(schema)}.antifragile_jobs"
        self.kv = f"{_quote(schema)}.antifragile_kv"
        self.inbox = f"{_quote(schema)}.antifragile_inbox"
        self.processes = f"{_quote(schema)}.antifragile_processes"
        # inside a string literal (nextval's argument)
        self.ordering_seq = f"{_quote(schema)}.antifragile_jobs_ordering_seq".replace("'", "''")
        self.channel = channel_name(schema)
        self.enqueue = self.text(ENQUEUE)
        self.enqueue_one = self.text(ENQUEUE_ONE)
        self.enqueue_one_unflagged = self.text(ENQUEUE_ONE_UNFLAGGED)
        self.enqueue_existing = self.text(ENQUEUE_EXISTING)
        self.claim_any = self.text(CLAIM_ANY)
        self.claim_one = self.text(CLAIM_ONE)
        self.claim_some = self.text(CLAIM_SOME)
        self.heartbeat = self.text(HEARTBEAT)
        self.complete = self.text(COMPLETE)
        self.save_progress = self.text(SAVE_PROGRESS)
        self.wake_deferred = self.text(WAKE_DEFERRED)
        self.get = self.text(GET)
        self.next_due = self.text(NEXT_DUE)
        self.stats = self.text(STATS)
        self.record_inbound = _compact(self.text(RECORD_INBOUND))
        self.inbound_first = self.text(INBOUND_FIRST)
        self.inbound_set_job = self.text(INBOUND_SET_JOB)
        self.get_inbound = self.text(GET_INBOUND)
        self.find_inbound = self.text(FIND_INBOUND)
        self.find_inbound_channel = self.text(FIND_INBOUND_CHANNEL)
        self.purge_inbound = self.text(PURGE_INBOUND)
        self.delete_inbound = self.text(DELETE_INBOUND)
        self.cancel = self.text(CANCEL)
        # the single-job statements on the store's own connections: now, then _job_row
        one_names = ("now", *_JOB_VALUE_NAMES)
        self.lone_enqueue_one = LoneStatement(self.enqueue_one, one_names)
        self.lone_enqueue_one_unflagged = LoneStatement(self.enqueue_one_unflagged, one_names)
        self.lone_get_inbound = LoneStatement(self.get_inbound, ("id",))
        self.sqlalchemy_enqueue = _for_sqlalchemy(self.enqueue)
        self.sqlalchemy_enqueue_one = _for_sqlalchemy(self.enqueue_one)
        self.sqlalchemy_enqueue_one_unflagged = _for_sqlalchemy(self.enqueue_one_unflagged)
        self.sqlalchemy_enqueue_existing = _for_sqlalchemy(self.enqueue_existing)

    def save_enqueue_one(self, save: str) -> LoneStatement:
        """SAVE_ENQUEUE_ONE with the compare-and-set *save* (SAVE_CREATE or SAVE_UPDATE) as
        a lone statement: the entry's key, value, now, expiry (and the version expected, for
        SAVE_UPDATE), the entries alongside, then the job's values (_job_row)."""
        text = self.text(SAVE_ENQUEUE_ONE.replace("{save}", save.strip()))
        return LoneStatement(text, (*_SAVE_NAMES[save], "others", *_JOB_VALUE_NAMES))

    def text(self, template: str, where: str = "") -> str:
        return (
            template.replace("{jobs}", self.jobs)
            .replace("{kv}", self.kv)
            .replace("{inbox}", self.inbox)
            .replace("{processes}", self.processes)
            .replace("{ordering_seq}", self.ordering_seq)
            .replace("{channel}", self.channel.replace("'", "''"))
            .replace("{where}", where)
        )


class PostgresJobQueue:
    """JobQueue on the table ``antifragile_jobs`` of a :class:`PostgresStore` (see the module
    docs for the statements, the status flags, the inbox and the transactional outbox).

    The store must be open and migrated (version 4 or later: 3 brought the inbox, 4 the jobs'
    context); the queue uses its pool and closes with it.
    """

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._db = store._db  # the store's pool and its error translation
        self._sql = _Statements(store.schema)
        # record_inbound's group commit: whether a statement is in flight, the calls waiting
        # for the next one, and the task that records them
        self._inbox_busy = False
        self._inbox_waiting: list[_InboxCall] = []
        self._inbox_task: asyncio.Task[None] | None = None
        #: SAVE_ENQUEUE and SAVE_ENQUEUE_ONE by their compare-and-set, made on first use
        self._save_enqueue: dict[str, bytes] = {}
        self._save_enqueue_one: dict[str, LoneStatement] = {}

    def __repr__(self) -> str:
        return f"PostgresJobQueue({self._store!r})"

    @property
    def store(self) -> PostgresStore:
        """The store the queue lives in (status flags are its ``kv`` entries)."""
        return self._store

    # -- wake-ups -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def wakeups(
        self, wake: Wake, *, queues: Sequence[str] | None = None
    ) -> AsyncIterator[None]:
        """While entered, *wake* is called when jobs are committed to this queue -- to one of
        *queues* when given: a connection of its own ``LISTEN``s on the queue's channel, which
        every enqueueing transaction notifies once per queue of its jobs, the queue's name the
        payload (see :mod:`antifragile.jobs._wakeup`); a notification without a payload (from
        an older version) wakes every listener. A lost connection is opened again (and *wake*
        called, for what may have been missed meanwhile)."""
        served = None if queues is None else frozenset(queues)
        task = asyncio.create_task(self._listen(wake, served), name="antifragile-jobs-listen")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _listen(self, wake: Wake, served: frozenset[str] | None) -> None:
        pause = 0.1
        listen = sql.SQL("LISTEN {}").format(sql.Identifier(self._sql.channel))
        while True:
            conn: AsyncConnection[TupleRow] | None = None
            try:
                conn = await self._db.connect()
                await conn.execute(listen)
                pause = 0.1
                wake()  # whatever was committed while nobody listened
                while True:
                    async for note in conn.notifies(timeout=_LISTEN_CHECK):
                        if served is None or not note.payload or note.payload in served:
                            wake()
                    await conn.execute("SELECT 1")  # quiet for a while: still there?
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("listening for new jobs failed (%s); polling until it is back", exc)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            wake()
            await asyncio.sleep(pause)
            pause = min(pause * 2, _LISTEN_BACKOFF)

    async def next_due(self, *, now: float) -> float | None:
        """The earliest ``run_at`` after *now* of a job waiting to run (``None``: none)."""
        rows = await self._fetch(self._sql.next_due, {"now": float(now)})
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    # -- running statements -----------------------------------------------------------------

    async def _fetch(self, query: str, params: Mapping[str, Any]) -> list[TupleRow]:
        """Rows of one statement on a pooled connection (prepared on the server, by psycopg,
        the first time each connection runs it)."""
        return await self._db.prepared(query.encode(), params)

    async def _claim_rows(self, query: str, params: Mapping[str, Any]) -> list[TupleRow]:
        """Rows of a claim, planned with sorting disabled for its transaction.

        The claim must walk a claim index in order and stop after *limit* rows. Left to
        itself the planner sorts every ready row instead whenever its statistics say that few
        are ready -- a fresh table, or a backlog that arrived since the last ANALYZE -- which
        costs a full sort per claim just when the backlog is largest.

        Both statements go out in one pipeline with a single ``Sync`` (on leaving the block):
        one round trip. Without an explicit ``BEGIN``, the statements before a ``Sync`` form
        one implicit transaction, which the ``Sync`` commits -- so the settings hold for the
        claim, and its rows are read only once it is committed. (An explicit transaction
        block would cost three round trips: psycopg syncs after ``BEGIN`` and ``COMMIT``.)"""
        try:
            async with self._db.connection() as conn:
                async with conn.pipeline():
                    await conn.execute(_NO_SORT, prepare=True)
                    cursor = await conn.execute(query.encode(), params, prepare=True)
                return await cursor.fetchall()
        except PoolClosed:
            raise ConfigurationError("the PostgreSQL store is closed") from None
        except psycopg.Error as exc:
            raise self._db.translate(exc) from exc

    async def _count(self, query: str, params: Mapping[str, Any]) -> int:
        """The number of rows one statement changed, on a pooled connection."""
        try:
            async with self._db.connection() as conn:
                cursor = await conn.execute(query.encode(), params)
                return cursor.rowcount
        except PoolClosed:
            raise ConfigurationError("the PostgreSQL store is closed") from None
        except psycopg.Error as exc:
            raise self._db.translate(exc) from exc

    async def _fetch_on(
        self, connection: Any, query: str, sqlalchemy_query: str, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Rows of one statement run on the caller's *connection*, in its transaction."""
        try:
            if isinstance(connection, AsyncConnection):
                async with connection.cursor(row_factory=tuple_row) as acursor:
                    await acursor.execute(query.encode(), params)
                    return await acursor.fetchall()
            if isinstance(connection, psycopg.Connection):
                with connection.cursor(row_factory=tuple_row) as cursor:
                    cursor.execute(query.encode(), params)
                    return cursor.fetchall()
        except psycopg.Error as exc:
            raise self._db.translate(exc) from exc
        return await _sqlalchemy_fetch(connection, sqlalchemy_query, params)

    # -- JobQueue ---------------------------------------------------------------------------

    async def enqueue(
        self, jobs: Sequence[NewJob], *, now: float, connection: Any = None
    ) -> list[Enqueued]:
        now = float(now)
        inserted: list[tuple[Any, ...]] | None = None  # the first statement's rows, if run
        if connection is not None:
            _check_connection(connection)
        elif len(jobs) == 1:  # one job, as applications mostly enqueue: the shortest path
            try:
                new_ids = await self._insert_one(jobs[0], now)
            except StoreError as exc:
                raise (_nul_error(exc) or exc) from exc.__cause__
            if new_ids:
                return [Enqueued(jobs[0].id, True)]
            inserted = []  # a duplicate: found below
        # one row per id and per idempotency key: a repeat names the first one
        first_by_key: dict[str, NewJob] = {}
        first_by_id: dict[str, NewJob] = {}
        unique: list[NewJob] = []
        firsts: list[NewJob] = []
        for job in jobs:
            first = first_by_id.get(job.id)
            if first is None and job.idempotency_key is not None:
                first = first_by_key.get(job.idempotency_key)
            if first is None:
                first_by_id[job.id] = job
                if job.idempotency_key is not None:
                    first_by_key[job.idempotency_key] = job
                unique.append(job)
                first = job
            firsts.append(first)
        if not unique:
            return []

        outcome: dict[str, Enqueued] = {}  # by the id of each unique job
        pending = unique
        for _ in range(_ENQUEUE_ROUNDS):
            if inserted is not None:
                rows, inserted = inserted, None
            else:
                try:
                    rows = await self._insert(pending, now, connection)
                except StoreError as exc:
                    raise (_nul_error(exc) or exc) from exc.__cause__
            created = {row[0] for row in rows}
            missed = [job for job in pending if job.id not in created]
            for job in pending:
                if job.id in created:
                    outcome[job.id] = Enqueued(job.id, True)
            if not missed:
                break
            lookup = {
                "keys": [j.idempotency_key for j in missed if j.idempotency_key is not None],
                "ids": [j.id for j in missed],
            }
            if connection is None:
                found = await self._fetch(self._sql.enqueue_existing, lookup)
            else:
                found = await self._fetch_on(
                    connection,
                    self._sql.enqueue_existing,
                    self._sql.sqlalchemy_enqueue_existing,
                    lookup,
                )
            by_key = {row[1]: row[0] for row in found if row[1] is not None}
            ids = {row[0] for row in found}
            pending = []
            for job in missed:
                existing = by_key.get(job.idempotency_key) if job.idempotency_key else None
                if existing is None and job.id in ids:
                    existing = job.id
                if existing is None:
                    pending.append(job)  # its duplicate went away meanwhile: insert again
                else:
                    outcome[job.id] = Enqueued(existing, False)
            if not pending:
                break
        else:
            raise StoreError("enqueue kept meeting concurrent deletions; try again")
        result: list[Enqueued] = []
        for job, first in zip(jobs, firsts, strict=True):
            made = outcome[first.id]
            result.append(made if job is first else Enqueued(made.id, False))
        return result

    async def _insert(
        self, jobs: Sequence[NewJob], now: float, connection: Any
    ) -> list[tuple[Any, ...]]:
        """The first statement of enqueue: the ids of the *jobs* it inserted."""
        flagged = jobs[0].status_flag is not None
        if len(jobs) == 1 and connection is None:  # again, after a duplicate went away
            return [(id_,) for id_ in await self._insert_one(jobs[0], now)]
        if len(jobs) == 1:  # scalar parameters on the caller's connection
            params = {"now": now, **_job_values(jobs[0])}
            if flagged:
                query = self._sql.enqueue_one
                sqlalchemy_query = self._sql.sqlalchemy_enqueue_one
            else:
                query = self._sql.enqueue_one_unflagged
                sqlalchemy_query = self._sql.sqlalchemy_enqueue_one_unflagged
        else:
            params = _enqueue_params(jobs, now)
            query, sqlalchemy_query = self._sql.enqueue, self._sql.sqlalchemy_enqueue
        if connection is None:
            return await self._fetch(query, params)
        return await self._fetch_on(connection, query, sqlalchemy_query, params)

    async def _insert_one(self, job: NewJob, now: float) -> list[Any]:
        """A single job inserted by the store's lone statement (one round trip, on the
        connection it keeps for them): its id if it was inserted (none: a duplicate)."""
        one = self._sql.lone_enqueue_one
        if job.status_flag is None:
            one = self._sql.lone_enqueue_one_unflagged
        return await self._db.lone(one, (now, *_job_row(job)))

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
        """See :meth:`~antifragile.jobs.RecordQueue.save_and_enqueue`: one statement
        (:func:`_save_enqueue`, one round trip) -- or, when a job's status flag is on the
        entry itself or two jobs share an id or idempotency key, one transaction on one
        pooled connection: the compare-and-set, the entries alongside (created when absent),
        then the statements of ``enqueue(connection=...)``, then the entry read back."""
        now = float(now)
        params: dict[str, Any] = {
            "key": key,
            "value": encode(value),
            "now": now,
            "expires_at": None if ttl is None else now + float(ttl),
        }
        cas = save = SAVE_CREATE if expected_version is None else SAVE_UPDATE
        if expected_version is not None:
            params["expected"] = int(expected_version)
        if alongside:
            save = SAVE_ALONGSIDE.replace("{save}", save.strip())
            params["other_keys"] = list(alongside)
            params["other_values"] = [encode(v) for v in alongside.values()]
        # a job whose status flag is on the entry changes it: then the entry is read back
        flagged = any(job.status_flag is not None and job.status_flag.key == key for job in jobs)
        if jobs and not flagged and _distinct(jobs):
            others = (params.pop("other_keys", []), params.pop("other_values", []))
            return await self._save_with_jobs(key, params, cas, jobs, now, others)
        query = self._sql.text(save)
        try:
            async with self._db.connection() as conn, conn.transaction():
                cursor = await conn.execute(query.encode(), params)
                written = await cursor.fetchone()
                if written is None:
                    return None
                row: tuple[Any, ...] | None = (params["value"], written[0], params["expires_at"])
                enqueued = await self.enqueue(jobs, now=now, connection=conn) if jobs else []
                if flagged:
                    cursor = await conn.execute(self._sql.text(SAVED).encode(), {"key": key})
                    row = await cursor.fetchone()
        except PoolClosed:
            raise ConfigurationError("the PostgreSQL store is closed") from None
        except psycopg.Error as exc:
            raise self._db.translate(exc) from exc
        if row is None:  # cannot happen: written in this very transaction
            raise StoreError(f"the entry {key!r} vanished while it was written; try again")
        self._db.wrote(now)
        return Versioned(key, decode(row[0]), int(row[1]), row[2]), enqueued

    async def _save_with_jobs(
        self,
        key: str,
        params: dict[str, Any],
        save: str,
        jobs: Sequence[NewJob],
        now: float,
        others: tuple[list[str], list[str]],
    ) -> tuple[Versioned, list[Enqueued]] | None:
        """save_and_enqueue as one statement (SAVE_ENQUEUE, its own transaction): one round
        trip instead of four. *others*: the keys and encoded values of the entries alongside
        (one JSON object for the statement: cheaper to send than two arrays). The jobs it did
        not insert name existing ones (their idempotency key or id), found afterwards as
        enqueue finds them."""
        encoded_others = encode(dict(zip(*others, strict=True)))
        try:
            if len(jobs) == 1:  # a session's turn with its reply: the store's lone statement
                one = self._save_enqueue_one.get(save)
                if one is None:
                    one = self._save_enqueue_one[save] = self._sql.save_enqueue_one(save)
                entry = [params[name] for name in _SAVE_NAMES[save]]
                rows = await self._db.lone_rows(one, (*entry, encoded_others, *_job_row(jobs[0])))
                inserted = [rows[0][1]] if rows and rows[0][1] is not None else []
            else:
                statement = self._save_enqueue.get(save)
                if statement is None:
                    text = self._sql.text(SAVE_ENQUEUE.replace("{save}", save.strip()))
                    statement = self._save_enqueue[save] = text.encode()
                values = {**params, "others": encoded_others, **_enqueue_params(jobs, now)}
                rows = await self._db.prepared(statement, values)
                inserted = list(rows[0][1] or ()) if rows else []
        except StoreError as exc:
            raise (_nul_error(exc) or exc) from exc.__cause__
        if not rows or rows[0][0] is None:
            return None
        self._db.wrote(now)
        created = set(inserted)
        outcome = {job.id: Enqueued(job.id, True) for job in jobs if job.id in created}
        missed = [job for job in jobs if job.id not in created]
        if missed:  # enqueued before: the existing jobs (inserted again when gone meanwhile)
            for job, made in zip(missed, await self.enqueue(missed, now=now), strict=True):
                outcome[job.id] = made
        saved = Versioned(key, decode(params["value"]), int(rows[0][0]), params["expires_at"])
        return saved, [outcome[job.id] for job in jobs]

    async def claim(
        self,
        *,
        worker: str,
        limit: int,
        lease: float,
        now: float,
        queues: Sequence[str] | None = None,
    ) -> list[Job]:
        if limit <= 0:
            return []
        now = float(now)
        until = now + float(lease)
        params: dict[str, Any] = {"now": now, "until": until, "limit": limit, "worker": worker}
        if queues is None:
            query = self._sql.claim_any
        else:
            names = list(dict.fromkeys(queues))
            if not names:
                return []
            if len(names) == 1:
                query = self._sql.claim_one
                params["queue"] = names[0]
            else:
                query = self._sql.claim_some
                params["queues"] = names
        rows = await self._claim_rows(query, params)
        return [_claimed(row, worker, until, now) for row in rows]

    async def heartbeat(
        self, job_ids: Sequence[str], *, worker: str, lease: float, now: float
    ) -> list[str]:
        if not job_ids:
            return []
        ids = list(dict.fromkeys(job_ids))
        params = {"ids": ids, "worker": worker, "until": float(now) + float(lease)}
        held = {row[0] for row in await self._fetch(self._sql.heartbeat, params)}
        return [job_id for job_id in ids if job_id in held]

    async def complete(self, outcomes: Sequence[Outcome], *, worker: str, now: float) -> list[str]:
        params, ids = _complete_params(outcomes, worker, float(now))
        if not ids:
            return []
        try:
            rows = await self._fetch(self._sql.complete, params)
        except StoreError as exc:
            raise (_nul_error(exc) or exc) from exc.__cause__
        recorded = {row[0] for row in rows}
        return [job_id for job_id in ids if job_id in recorded]

    async def wake_deferred(self, provider: str, *, now: float, limit: int | None = None) -> int:
        """See :meth:`JobQueue.wake_deferred`: one ``UPDATE`` (rows a claim holds are skipped)."""
        if limit is not None and limit < 1:
            return 0
        params = {"provider": provider, "now": float(now), "limit": limit}
        return await self._count(self._sql.wake_deferred, params)

    async def save_progress(self, job_id: str, *, worker: str, state_data: Any, now: float) -> bool:
        params = {
            "id": job_id,
            "worker": worker,
            "state_data": None if state_data is None else encode(state_data),
            "now": float(now),
        }
        try:
            return await self._count(self._sql.save_progress, params) == 1
        except StoreError as exc:
            raise (_nul_error(exc) or exc) from exc.__cause__

    async def get(self, job_id: str) -> Job | None:
        rows = await self._fetch(self._sql.get, {"id": job_id})
        return _job(rows[0]) if rows else None

    async def find(self, where: JobFilter, *, limit: int = 100, offset: int = 0) -> list[Job]:
        condition, params = _filter(where)
        params["limit"] = max(0, int(limit))
        params["offset"] = max(0, int(offset))
        rows = await self._fetch(self._sql.text(FIND, condition), params)
        return [_job(row) for row in rows]

    async def stats(self, *, now: float) -> list[QueueStats]:
        rows = await self._fetch(self._sql.stats, {"now": float(now)})
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, float | None] = {}
        for queue, state, count, ready_at in rows:
            per_state = counts.setdefault(queue, {s.value: 0 for s in JobState})
            per_state[state] = count
            if ready_at is not None:
                known = oldest.get(queue)
                oldest[queue] = ready_at if known is None else min(known, ready_at)
        return [QueueStats(queue, counts[queue], oldest.get(queue)) for queue in sorted(counts)]

    async def redrive(self, where: JobFilter, *, now: float, delay: float = 0.0) -> int:
        condition, params = _filter(where)
        params["now"] = float(now)
        params["run_at"] = float(now) + float(delay)
        rows = await self._fetch(self._sql.text(REDRIVE, condition), params)
        return int(rows[0][0])

    async def resolve(self, where: JobFilter, *, reason: str, now: float) -> int:
        condition, params = _filter(where)
        params["now"] = float(now)
        params["reason"] = reason
        return await self._count(self._sql.text(RESOLVE, condition), params)

    async def purge(self, where: JobFilter, *, now: float, limit: int | None = None) -> int:
        condition, params = _filter(where)
        if limit is None:
            return await self._count(self._sql.text(PURGE, condition), params)
        if limit < 1:
            return 0
        params["limit"] = int(limit)
        return await self._count(self._sql.text(PURGE_BATCH, condition), params)

    async def cancel(self, ids: Sequence[str]) -> int:
        unique = list(dict.fromkeys(ids))
        if not unique:
            return 0
        return await self._count(self._sql.cancel, {"ids": unique})

    # -- liveness -----------------------------------------------------------------------------

    async def beat(self, process: ProcessBeat, *, now: float) -> None:
        queues = None if process.queues is None else json.dumps(list(process.queues))
        params = {
            "id": process.id,
            "kind": process.kind,
            "host": process.host,
            "pid": process.pid,
            "queues": queues,
            "started_at": float(process.started_at),
            "now": float(now),
        }
        await self._count(self._sql.text(PROCESS_BEAT), params)

    async def leave(self, process_id: str) -> bool:
        return await self._count(self._sql.text(PROCESS_LEAVE), {"id": process_id}) > 0

    async def processes(self) -> list[ProcessBeat]:
        rows = await self._fetch(self._sql.text(PROCESS_LIST), {})
        return [
            ProcessBeat(
                r[0],
                r[1],
                r[2],
                int(r[3]),
                None if r[4] is None else tuple(json.loads(r[4])),
                float(r[5]),
                float(r[6]),
            )
            for r in rows
        ]

    async def forget_processes(self, *, before: float) -> int:
        return await self._count(self._sql.text(PROCESS_FORGET), {"before": float(before)})

    # -- the inbox ----------------------------------------------------------------------------

    async def record_inbound(
        self, entries: Sequence[NewInboxEntry], *, now: float
    ) -> list[Recorded]:
        """See :meth:`JobQueue.record_inbound`.

        Concurrent calls share one statement (group commit): a call that finds none in flight
        runs at once; the calls that arrive while a statement is in flight wait together and go
        into the next one, as one batch (an event repeated across them is recorded by the first
        and a duplicate for the others, as within a batch). Every caller is answered once the
        statement that holds its entries has committed. When a shared statement fails for any
        reason but an unreachable server, each of its callers' batches is recorded again on its
        own, so that a caller whose entries cannot be recorded gets its error and the others
        keep theirs. Each entry is checked for expiry, and received, at its own caller's *now*.

        One statement (``RECORD_INBOUND``: one round trip, atomic on its own) records the
        batch and enqueues the jobs of its new entries. Two rare cases take one more statement
        each, after it: a duplicate whose first entry was committed by another writer while
        the statement ran (the statement waited for it, but its snapshot does not show it: the
        entry is read afterwards), and a new entry whose job was not inserted because another
        job has its idempotency key -- one inserted meanwhile by another writer, or by an
        earlier entry of the same batch -- or was inserted although the statement's snapshot
        named an existing one. The entries and jobs are committed together all the same; only
        such an entry's ``job_id`` is then corrected to the job that has the key.
        """
        if not entries:
            return []
        now = float(now)
        if self._inbox_busy:  # a statement is in flight: go with the next group
            call = _InboxCall(entries, now, asyncio.get_running_loop().create_future())
            self._inbox_waiting.append(call)
            return await call.future
        self._inbox_busy = True
        try:
            return await self._record(entries, [now] * len(entries))
        finally:
            self._next_inbox_group()

    def _next_inbox_group(self) -> None:
        """The statement in flight is over: record the calls that waited meanwhile."""
        if self._inbox_waiting:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a caller's coroutine closed outside its loop
                for call in self._inbox_waiting:
                    with contextlib.suppress(RuntimeError):  # their loop closed too
                        call.future.cancel()
                self._inbox_waiting = []
            else:
                self._inbox_task = loop.create_task(
                    self._record_waiting(), name="antifragile-inbox-group"
                )
                return
        self._inbox_busy = False

    async def _record_waiting(self) -> None:
        try:
            while self._inbox_waiting:
                group, self._inbox_waiting = self._inbox_waiting, []
                await self._record_group(group)
        finally:
            self._inbox_busy = False
            self._inbox_task = None
            left, self._inbox_waiting = self._inbox_waiting, []
            for call in left:  # only when cancelled
                call.future.cancel()

    async def _record_group(self, group: list[_InboxCall]) -> None:
        """Record the batches of *group* in one statement and answer each caller."""
        entries = [entry for call in group for entry in call.entries]
        nows = [call.now for call in group for _ in call.entries]
        try:
            recorded = await self._record(entries, nows)
        except asyncio.CancelledError:
            for call in group:
                call.future.cancel()
            raise
        except Exception as exc:
            if len(group) == 1 or isinstance(exc, StoreUnavailableError):
                for call in group:
                    _settle(call.future, None, exc)
                return
            # perhaps one caller's entries failed the statement: each batch on its own
            for call in group:
                try:
                    alone = await self._record(call.entries, [call.now] * len(call.entries))
                except asyncio.CancelledError:
                    for other in group:
                        other.future.cancel()
                    raise
                except Exception as error:
                    _settle(call.future, None, error)
                else:
                    _settle(call.future, alone, None)
            return
        start = 0
        for call in group:
            end = start + len(call.entries)
            _settle(call.future, recorded[start:end], None)
            start = end

    async def _record(self, entries: Sequence[NewInboxEntry], nows: list[float]) -> list[Recorded]:
        """Record *entries* (each at its caller's time in *nows*): RECORD_INBOUND, and the rare
        statements after it (see :meth:`record_inbound`)."""
        now = max(nows)
        firsts: dict[tuple[str, str], int] = {}  # the first entry of each event in the batch
        for index, entry in enumerate(entries):
            firsts.setdefault((entry.channel, entry.event_id), index)
        results: dict[int, Recorded] = {}
        pending = list(firsts.values())
        for _ in range(_ENQUEUE_ROUNDS):
            batch = [entries[index] for index in pending]
            params = _record_params(batch, [nows[index] for index in pending])
            try:
                rows = await self._fetch(self._sql.record_inbound, params)
            except StoreError as exc:
                raise (_nul_error(exc) or exc) from exc.__cause__
            unseen: list[int] = []
            doubtful: list[int] = []
            for position, created, inbox_id, job_id, job_inserted in rows:
                index = pending[position - 1]
                if inbox_id is None:
                    unseen.append(index)
                    continue
                results[index] = Recorded(inbox_id, created, job_id)
                job = entries[index].job
                if created and job is not None:
                    if job_inserted:  # named an existing job that was deleted meanwhile
                        in_doubt = job_id != job.id
                    else:  # another job may have taken its key
                        in_doubt = job_id == job.id and job.idempotency_key is not None
                    if in_doubt:
                        doubtful.append(index)
            if doubtful:
                await self._correct_jobs(entries, doubtful, results)
            pending = await self._find_firsts(entries, unseen, results, now) if unseen else []
            if not pending:
                break
        else:
            raise StoreError("record_inbound kept meeting concurrent deletions; try again")
        recorded: list[Recorded] = []
        for index, entry in enumerate(entries):
            at = firsts[(entry.channel, entry.event_id)]
            first = results[at]
            recorded.append(first if at == index else Recorded(first.id, False, first.job_id))
        return recorded

    async def _correct_jobs(
        self, entries: Sequence[NewInboxEntry], doubtful: list[int], results: dict[int, Recorded]
    ) -> None:
        """Point the new entries at *doubtful* at the job that has their job's key."""
        jobs = [entries[index].job for index in doubtful]
        params = {
            "ids": [results[index].id for index in doubtful],
            "keys": [None if job is None else job.idempotency_key for job in jobs],
            "jobs": [None if job is None else job.id for job in jobs],
        }
        rows = await self._fetch(self._sql.inbound_set_job, params)
        corrected: dict[str, str | None] = {row[0]: row[1] for row in rows}
        for index in doubtful:
            entry = results[index]
            results[index] = Recorded(entry.id, True, corrected.get(entry.id, entry.job_id))

    async def _find_firsts(
        self,
        entries: Sequence[NewInboxEntry],
        unseen: list[int],
        results: dict[int, Recorded],
        now: float,
    ) -> list[int]:
        """Read the first entries of the duplicates at *unseen*; those still missing (deleted
        or expired meanwhile) are returned, to be recorded again."""
        params = {
            "channels": [entries[index].channel for index in unseen],
            "event_ids": [entries[index].event_id for index in unseen],
            "now": now,
        }
        missing = set(unseen)
        for position, inbox_id, job_id in await self._fetch(self._sql.inbound_first, params):
            index = unseen[position - 1]
            results[index] = Recorded(inbox_id, False, job_id)
            missing.discard(index)
        return [index for index in unseen if index in missing]

    async def get_inbound(self, inbox_id: str) -> InboxEntry | None:
        rows = await self._db.lone_rows(self._sql.lone_get_inbound, (inbox_id,))
        return _inbox_entry(rows[0]) if rows else None

    async def find_inbound(
        self, *, channel: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[InboxEntry]:
        params: dict[str, Any] = {"limit": max(0, int(limit)), "offset": max(0, int(offset))}
        if channel is None:
            query = self._sql.find_inbound
        else:
            query = self._sql.find_inbound_channel
            params["channel"] = channel
        return [_inbox_entry(row) for row in await self._fetch(query, params)]

    async def purge_inbound(self, *, now: float) -> int:
        return await self._count(self._sql.purge_inbound, {"now": float(now)})

    async def delete_inbound(self, ids: Sequence[str]) -> int:
        unique = list(dict.fromkeys(ids))
        if not unique:
            return 0
        return await self._count(self._sql.delete_inbound, {"ids": unique})


# -- the caller's connections (transactional outbox) -------------------------------------------


def _sqlalchemy_kind(connection: Any) -> str | None:
    """``sync``/``async`` for an SQLAlchemy session or connection, else None (SQLAlchemy is
    only imported when the program already has, so the ``postgres`` extra does not need it)."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection as SAAsyncConnection
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    if isinstance(connection, Session | Connection):
        return "sync"
    if isinstance(connection, AsyncSession | SAAsyncConnection):
        return "async"
    return None


def _distinct(jobs: Sequence[NewJob]) -> bool:
    """Whether no two of *jobs* share an id or an idempotency key."""
    keys = [job.idempotency_key for job in jobs if job.idempotency_key is not None]
    return len({job.id for job in jobs}) == len(jobs) and len(set(keys)) == len(keys)


def _check_connection(connection: Any) -> None:
    if isinstance(connection, AsyncConnection | psycopg.Connection):
        return
    if _sqlalchemy_kind(connection) is not None:
        return
    raise ConfigurationError(
        "enqueue(connection=...) takes a psycopg Connection or AsyncConnection, or an "
        "SQLAlchemy Session, AsyncSession, Connection or AsyncConnection; got "
        f"{type(connection).__name__}"
    )


async def _sqlalchemy_fetch(
    connection: Any, query: str, params: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    kind = _sqlalchemy_kind(connection)
    statement = text(query)
    try:
        if kind == "async":
            result = await connection.execute(statement, dict(params))
        else:
            result = connection.execute(statement, dict(params))
    except DBAPIError as exc:
        cause = exc.orig
        if isinstance(cause, psycopg.errors.UntranslatableCharacter):
            raise ConfigurationError(
                "a job's JSON cannot be stored: PostgreSQL jsonb cannot hold the NUL character"
            ) from exc
        raise StoreError(f"enqueue on the caller's connection failed: {exc.orig}") from exc
    return [tuple(row) for row in result.all()]
