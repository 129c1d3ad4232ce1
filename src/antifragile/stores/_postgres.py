"""The PostgreSQL backend: ``postgresql://user@host:5432/dbname`` (or ``postgres://``).

Driver: psycopg 3 (async) with ``psycopg_pool``, chosen by measurement:
``benchmarks/store_drivers.py`` runs this module's statements on both psycopg and asyncpg
(results in ``benchmarks/results/store_drivers.md``). asyncpg's pool as shipped was no faster:
it sends a reset query each time a connection goes back. With that reset turned off, asyncpg was
faster on a loopback server by 22% in throughput with 20 tasks and 38% for one task: 0.1-0.15 ms
of client time per operation. That is small next to a network round trip and a commit to disk,
and these operations are not made on every call (breakers and limiters cache locally and write
only transitions). So the simpler, sturdier code won: psycopg is typed (mypy --strict checks
every parameter and row), takes named parameters, composes identifiers safely, accepts
everything libpq accepts in a URL (sslmode, service files, several hosts), and is what the
``postgres`` extra installs. Only :class:`_Database` knows the driver; the SQL runs unchanged on
asyncpg.

Atomicity. Every operation is one SQL statement on an autocommit connection: an
``INSERT ... ON CONFLICT ... DO UPDATE ... WHERE ... RETURNING`` or a conditional
``UPDATE ... RETURNING``; the row lock PostgreSQL takes for the write is the only lock. Where the
losing side must report what it lost to (an idempotency claim, a breaker compare-and-set, a
refused token reservation) the same statement also reads the current row in a ``UNION ALL``
branch. That read sees the statement's snapshot, which can predate a write committed while this
statement waited for the row lock; such an answer is recognised (it would not have lost to it)
and the statement runs again with a fresh snapshot. No Python lock is held around any of it.

Time. Every statement takes ``now`` from the caller (epoch seconds from its Clock); the server's
``now()`` is never used, so a FakeClock drives expiry exactly as it does for the other backends.

Schema. ``schema`` (default ``public``; also ``?schema=`` in the URL, the option wins) names the
PostgreSQL schema holding the tables. Each connection sets ``search_path`` to it once when the
pool opens it, so the SQL below never names a schema. ``drop_schema_on_close=True`` (for tests)
drops the schema and everything in it on :meth:`PostgresStore.close`; it is refused for
``public``.

Migrations. Numbered files in ``sql/postgres/`` are applied by :meth:`PostgresStore.migrate`,
each in its own transaction that first takes ``pg_advisory_xact_lock`` on a key derived from the
schema name, so any number of processes may migrate at once and each migration runs exactly once.
They are recorded in ``antifragile_migrations`` in the store's schema. A schema migrated by a
newer antifragile is refused with SchemaVersionError.

Unlike SQLite, opening a PostgreSQL store does not migrate a database that is already under
management: schema changes on a shared server are an operator's decision (``antifragile
migrate``, or ``migrate=True``). The one exception is a schema with no ``antifragile_migrations``
table at all -- a brand-new database or a fresh per-test schema -- which :meth:`open` migrates
when ``auto_migrate`` is true (the default), so that ``open_store(url)`` works on an empty
database. An existing but outdated schema makes :meth:`open` fail with ConfigurationError naming
the command to run.

Expired rows are invisible at once and deleted later: every ``PURGE_EVERY`` key-value and
idempotency writes the store deletes, in a background task and in batches that skip rows
another statement holds, the rows expired ``PURGE_GRACE`` seconds before the writer's own
``now`` (never by the store's clock); or on demand with :meth:`PostgresStore.purge_expired`.
Lease, bucket and breaker rows are few and are kept (fencing tokens must never repeat).

Errors. A server that cannot be reached, refuses the credentials, or drops the connection raises
StoreUnavailableError naming host, port, database and user -- never the password, which is also
masked in :attr:`PostgresStore.url`. Other database errors raise StoreError.

Options: ``schema``, ``drop_schema_on_close``, ``min_size``/``max_size`` (pool sizes, default 1
and 10), ``connect_timeout`` (seconds, default 5), ``acquire_timeout`` (seconds to wait for a
pooled connection, default 10), ``reconnect_timeout`` (seconds the pool retries one lost
connection before giving up, default 2: the next operation starts a new attempt at once),
``migrate`` (migrate on open), ``auto_migrate`` (see above). The three timeouts may also come
from the URL -- ``?pool_timeout=1&connect_timeout=2&reconnect_timeout=2`` -- the keywords win.

Outages. An operation that finds the server unreachable (a connection dropped or refused, the
server shutting down: not a busy pool) marks it down: until a new connection succeeds, an
operation waits at most :data:`DOWN_WAIT` for a connection before StoreUnavailableError (the
service answers webhooks 503 at once instead of after the acquire timeout), and every pooled
connection is replaced.
Connections show up in ``pg_stat_activity`` as ``antifragile`` unless the URL sets
``application_name``.

Rate-limit takes. A take commits without waiting for its WAL to reach the disk
(``synchronous_commit`` off, for its own transaction only): the commit of a take that wrote its
bucket costs the server no ``fsync`` of its own. A crash of the server (not of the application:
the take is committed) can forget the takes of its last moments, and a forgotten take can only
leave more tokens in a bucket -- the same as when the store cannot be reached and limiters fall
back to their process's own state. The WAL is written in order, so the next durable commit on
the server makes every take before it durable too: an inbound message's take is on disk once its
session turn or reply is.

Lone statements. A single job's enqueue -- one caller awaiting one statement, the commonest call
of all -- and the single reads and writes of every inbound message (its inbox entry, session,
sender's rate-limit bucket, and the session's turn written with its reply and the reply's job)
run on a few connections kept out of the pool
(:meth:`_Database.lone_rows`), prepared once and driven through libpq directly; the others, and
any made while every kept connection is busy, use the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, LiteralString
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg import AsyncConnection, pq, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq.abc import PGconn, PGresult
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout, TooManyRequests

from antifragile.errors import ConfigurationError, StoreError, StoreUnavailableError
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.stores._codec import decode, encode
from antifragile.stores._common import (
    Bucket,
    breaker_matches,
    check_breaker_names,
    check_fields,
    check_outcome,
    check_rate,
    check_window,
    prefix_end,
    probe_key,
    take_tokens,
)
from antifragile.stores._migrations import (
    MIGRATIONS_TABLE,
    Migration,
    load_migrations,
    plan,
    split_statements,
)
from antifragile.stores._protocols import (
    JSON,
    BreakerRecord,
    Claim,
    IdempotencyRecord,
    IdempotencyStatus,
    Lease,
    TokenGrant,
    Versioned,
    WindowTotals,
)

DIALECT = "postgres"
_OWN_URL_OPTIONS = ("schema", "pool_timeout", "connect_timeout", "reconnect_timeout")
#: while the server is known to be unreachable, an operation waits at most this long for a
#: pooled connection (seconds; or the acquire timeout when that is shorter)
DOWN_WAIT = 0.5
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_ACQUIRE_TIMEOUT = 10.0
DEFAULT_RECONNECT_TIMEOUT = 2.0
#: how often an operation whose answer came from a stale snapshot runs again before the store
#: reads the row outright (each retry needs a concurrent commit to land in a microseconds-wide
#: window, so the bound is never reached in practice)
_STALE_RETRIES = 20
#: every this many key-value and idempotency writes, expired rows are deleted
PURGE_EVERY = 1000
#: rows are deleted only once expired this many seconds before the writer's ``now``
PURGE_GRACE = 300.0
#: rows deleted per statement when purging (each batch is its own short transaction)
PURGE_BATCH = 5000
#: what a :class:`LoneStatement`'s parameters may be (sent as text)
LoneParam = str | int | float | None

# -- SQL ------------------------------------------------------------------------------------
# Parameters are named (``%(name)s``); casts pin every parameter's type so that the text is
# unambiguous to the server whatever the driver sends (benchmarks/store_drivers.py runs the same
# statements on asyncpg).

KV_GET: LiteralString = """
SELECT value, version, expires_at FROM antifragile_kv
WHERE key = %(key)s::text AND (expires_at IS NULL OR expires_at > %(now)s::float8)
"""

KV_SET: LiteralString = """
INSERT INTO antifragile_kv AS e (key, value, version, expires_at)
VALUES (%(key)s, %(value)s, 1, %(expires_at)s::float8)
ON CONFLICT (key) DO UPDATE SET
    value = EXCLUDED.value,
    version = CASE WHEN e.expires_at <= %(now)s::float8 THEN 1 ELSE e.version + 1 END,
    expires_at = EXCLUDED.expires_at
RETURNING version
"""

KV_CREATE: LiteralString = """
INSERT INTO antifragile_kv AS e (key, value, version, expires_at)
VALUES (%(key)s, %(value)s, 1, %(expires_at)s::float8)
ON CONFLICT (key) DO UPDATE SET
    value = EXCLUDED.value, version = 1, expires_at = EXCLUDED.expires_at
WHERE e.expires_at <= %(now)s::float8
RETURNING version
"""

KV_CAS: LiteralString = """
UPDATE antifragile_kv
SET value = %(value)s, version = version + 1, expires_at = %(expires_at)s::float8
WHERE key = %(key)s AND version = %(expected)s::bigint
  AND (expires_at IS NULL OR expires_at > %(now)s::float8)
RETURNING version
"""

# an expired entry is replaced; a live one is merged into, but only when it holds an object
KV_MERGE: LiteralString = """
INSERT INTO antifragile_kv AS e (key, value, version, expires_at)
VALUES (%(key)s, %(fields)s, 1, %(expires_at)s::float8)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN e.expires_at <= %(now)s::float8 THEN EXCLUDED.value
                 ELSE (e.value::jsonb || EXCLUDED.value::jsonb)::text END,
    version = CASE WHEN e.expires_at <= %(now)s::float8 THEN 1 ELSE e.version + 1 END,
    expires_at = CASE WHEN e.expires_at <= %(now)s::float8 THEN EXCLUDED.expires_at
                      WHEN %(keep_expiry)s::boolean THEN e.expires_at
                      ELSE EXCLUDED.expires_at END
WHERE e.expires_at <= %(now)s::float8 OR jsonb_typeof(e.value::jsonb) = 'object'
RETURNING value, version, expires_at
"""

KV_DELETE: LiteralString = """
DELETE FROM antifragile_kv
WHERE key = %(key)s AND (%(expected)s::bigint IS NULL OR version = %(expected)s::bigint)
RETURNING expires_at IS NULL OR expires_at > %(now)s::float8
"""

# keys use the "C" collation: a [lower, upper) range is an index range in code-point order
KV_SCAN_RANGE: LiteralString = """
SELECT key, value, version, expires_at FROM antifragile_kv
WHERE key >= %(lower)s AND key < %(upper)s
  AND (expires_at IS NULL OR expires_at > %(now)s::float8)
ORDER BY key LIMIT %(limit)s::bigint
"""

KV_SCAN_FROM: LiteralString = """
SELECT key, value, version, expires_at FROM antifragile_kv
WHERE key >= %(lower)s AND starts_with(key, %(lower)s)
  AND (expires_at IS NULL OR expires_at > %(now)s::float8)
ORDER BY key LIMIT %(limit)s::bigint
"""

IDEM_CLAIM: LiteralString = """
WITH claimed AS (
    INSERT INTO antifragile_idempotency AS r
        (key, status, owner, fingerprint, result, created_at, expires_at)
    VALUES (%(key)s, 'processing', %(owner)s, %(fingerprint)s, NULL,
            %(now)s::float8, %(expires_at)s::float8)
    ON CONFLICT (key) DO UPDATE SET
        status = EXCLUDED.status, owner = EXCLUDED.owner, fingerprint = EXCLUDED.fingerprint,
        result = NULL, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
    WHERE r.expires_at <= %(now)s::float8
    RETURNING status, owner, fingerprint, result, created_at, expires_at
)
SELECT status, owner, fingerprint, result, created_at, expires_at, true FROM claimed
UNION ALL
SELECT status, owner, fingerprint, result, created_at, expires_at, false
FROM antifragile_idempotency
WHERE key = %(key)s AND NOT EXISTS (SELECT FROM claimed)
"""

IDEM_COMPLETE: LiteralString = """
UPDATE antifragile_idempotency
SET status = %(status)s, result = %(result)s, expires_at = %(expires_at)s::float8
WHERE key = %(key)s AND owner = %(owner)s AND status = 'processing'
  AND expires_at > %(now)s::float8
"""

IDEM_GET: LiteralString = """
SELECT status, owner, fingerprint, result, created_at, expires_at
FROM antifragile_idempotency
WHERE key = %(key)s AND expires_at > %(now)s::float8
"""

IDEM_SCAN_RANGE: LiteralString = """
SELECT key, status, owner, fingerprint, result, created_at, expires_at
FROM antifragile_idempotency
WHERE key >= %(lower)s AND key < %(upper)s AND expires_at > %(now)s::float8
ORDER BY key LIMIT %(limit)s::bigint
"""

IDEM_SCAN_FROM: LiteralString = """
SELECT key, status, owner, fingerprint, result, created_at, expires_at
FROM antifragile_idempotency
WHERE key >= %(lower)s AND starts_with(key, %(lower)s) AND expires_at > %(now)s::float8
ORDER BY key LIMIT %(limit)s::bigint
"""

IDEM_DELETE: LiteralString = "DELETE FROM antifragile_idempotency WHERE key = %(key)s"

IDEM_RELEASE: LiteralString = """
DELETE FROM antifragile_idempotency
WHERE key = %(key)s AND owner = %(owner)s AND status = 'processing'
"""

# a released lease keeps its row (owner NULL) so that the next token is still larger
LEASE_ACQUIRE: LiteralString = """
INSERT INTO antifragile_leases AS l (name, owner, token, expires_at)
VALUES (%(name)s, %(owner)s, 1, %(expires_at)s::float8)
ON CONFLICT (name) DO UPDATE SET
    token = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > %(now)s::float8
                 THEN l.token ELSE l.token + 1 END,
    owner = EXCLUDED.owner,
    expires_at = EXCLUDED.expires_at
WHERE l.owner IS NULL OR l.owner = EXCLUDED.owner OR l.expires_at <= %(now)s::float8
RETURNING token, expires_at
"""

LEASE_RENEW: LiteralString = """
UPDATE antifragile_leases SET expires_at = %(expires_at)s::float8
WHERE name = %(name)s AND owner = %(owner)s AND expires_at > %(now)s::float8
RETURNING token, expires_at
"""

LEASE_RELEASE: LiteralString = """
UPDATE antifragile_leases SET owner = NULL WHERE name = %(name)s AND owner = %(owner)s
"""

LEASE_HOLDER: LiteralString = """
SELECT owner, token, expires_at FROM antifragile_leases
WHERE name = %(name)s AND owner IS NOT NULL AND expires_at > %(now)s::float8
"""

# the arithmetic of stores._common.take_tokens, term for term, so that every backend rounds
# alike: level = min(burst, tokens + (now - stamp) * rate); wait = (n - level) / rate; granted
# when wait <= max_wait (also when wait <= 0), and then tokens = level - n, stamp = now.
# Whichever row it returns (the bucket it wrote, or the one it locked and left), it turns
# synchronous_commit off for its own transaction (the fourth column, unread): see "Rate-limit
# takes" in the module docs.
RATE_TAKE: LiteralString = """
WITH taken AS (
    INSERT INTO antifragile_rate_limits AS b (key, tokens, stamp)
    SELECT %(key)s::text, %(burst)s::float8 - %(tokens)s::float8, %(now)s::float8
    WHERE (%(tokens)s::float8 - %(burst)s::float8) / %(rate)s::float8 <= %(max_wait)s::float8
    ON CONFLICT (key) DO UPDATE SET
        tokens = LEAST(%(burst)s::float8,
                       b.tokens + (%(now)s::float8 - b.stamp) * %(rate)s::float8)
                 - %(tokens)s::float8,
        stamp = %(now)s::float8
    WHERE (%(tokens)s::float8
           - LEAST(%(burst)s::float8, b.tokens + (%(now)s::float8 - b.stamp) * %(rate)s::float8))
          / %(rate)s::float8 <= %(max_wait)s::float8
    RETURNING b.tokens, b.stamp, set_config('synchronous_commit', 'off', true) AS unsynced
)
SELECT tokens, stamp, true, unsynced FROM taken
UNION ALL
SELECT tokens, stamp, false, set_config('synchronous_commit', 'off', true)
FROM antifragile_rate_limits
WHERE key = %(key)s::text AND NOT EXISTS (SELECT FROM taken)
"""

# no token before until = now + seconds, and at most one then (the level at until, capped at 1)
RATE_PAUSE: LiteralString = """
INSERT INTO antifragile_rate_limits AS b (key, tokens, stamp)
VALUES (%(key)s, LEAST(%(burst)s::float8, 1.0::float8), %(until)s::float8)
ON CONFLICT (key) DO UPDATE SET
    tokens = LEAST(%(burst)s::float8,
                   b.tokens + (%(until)s::float8 - b.stamp) * %(rate)s::float8,
                   1.0::float8),
    stamp = EXCLUDED.stamp
"""

# give tokens back: at max(now, stamp) (a pause keeps its end), the level plus the tokens,
# capped at burst; a missing bucket is full and stays absent
RATE_REFUND: LiteralString = """
UPDATE antifragile_rate_limits AS b SET
    tokens = LEAST(%(burst)s::float8,
                   LEAST(%(burst)s::float8,
                         b.tokens + (GREATEST(%(now)s::float8, b.stamp) - b.stamp)
                                    * %(rate)s::float8)
                   + %(tokens)s::float8),
    stamp = GREATEST(%(now)s::float8, b.stamp)
WHERE b.key = %(key)s
"""

BREAKER_LOAD: LiteralString = """
SELECT state, generation, open_until, consecutive_opens, probes_left, writer
FROM antifragile_breakers WHERE name = %(name)s
"""

# expected is the default record (what a missing row reads as): insert, or swap a stored one
BREAKER_CAS_FROM_DEFAULT: LiteralString = """
WITH swapped AS (
    INSERT INTO antifragile_breakers AS b
        (name, state, generation, open_until, consecutive_opens, probes_left, writer)
    VALUES (%(name)s, %(state)s, %(generation)s::bigint, %(open_until)s::float8,
            %(consecutive_opens)s::integer, %(probes_left)s::integer, %(writer)s)
    ON CONFLICT (name) DO UPDATE SET
        state = EXCLUDED.state, generation = EXCLUDED.generation,
        open_until = EXCLUDED.open_until, consecutive_opens = EXCLUDED.consecutive_opens,
        probes_left = EXCLUDED.probes_left, writer = EXCLUDED.writer
    WHERE b.state = %(expected_state)s AND b.generation = %(expected_generation)s::bigint
      AND b.probes_left = %(expected_probes_left)s::integer
    RETURNING state, generation, open_until, consecutive_opens, probes_left, writer
)
SELECT state, generation, open_until, consecutive_opens, probes_left, writer, true
FROM swapped
UNION ALL
SELECT state, generation, open_until, consecutive_opens, probes_left, writer, false
FROM antifragile_breakers WHERE name = %(name)s AND NOT EXISTS (SELECT FROM swapped)
"""

# expected is not the default record: only a stored row can match it
BREAKER_CAS: LiteralString = """
WITH swapped AS (
    UPDATE antifragile_breakers SET
        state = %(state)s, generation = %(generation)s::bigint,
        open_until = %(open_until)s::float8, consecutive_opens = %(consecutive_opens)s::integer,
        probes_left = %(probes_left)s::integer, writer = %(writer)s
    WHERE name = %(name)s AND state = %(expected_state)s
      AND generation = %(expected_generation)s::bigint
      AND probes_left = %(expected_probes_left)s::integer
    RETURNING state, generation, open_until, consecutive_opens, probes_left, writer
)
SELECT state, generation, open_until, consecutive_opens, probes_left, writer, true
FROM swapped
UNION ALL
SELECT state, generation, open_until, consecutive_opens, probes_left, writer, false
FROM antifragile_breakers WHERE name = %(name)s AND NOT EXISTS (SELECT FROM swapped)
"""

# add to this second's bucket, drop buckets that left the window (skipping any another
# statement holds, so two callers never wait on each other), and total (second - window, second]
BREAKER_ADD: LiteralString = """
WITH bucket AS (
    INSERT INTO antifragile_breaker_windows AS w (name, second, calls, failures, slow)
    VALUES (%(name)s, %(second)s::bigint, %(calls)s::bigint, %(failures)s::bigint,
            %(slow)s::bigint)
    ON CONFLICT (name, second) DO UPDATE SET
        calls = w.calls + EXCLUDED.calls,
        failures = w.failures + EXCLUDED.failures,
        slow = w.slow + EXCLUDED.slow
    RETURNING calls, failures, slow
), stale AS (
    SELECT second FROM antifragile_breaker_windows
    WHERE name = %(name)s AND second <= %(second)s::bigint - %(window)s::bigint
    FOR UPDATE SKIP LOCKED
), dropped AS (
    DELETE FROM antifragile_breaker_windows AS d USING stale
    WHERE d.name = %(name)s AND d.second = stale.second
), earlier AS (
    SELECT COALESCE(SUM(calls), 0)::bigint AS calls,
           COALESCE(SUM(failures), 0)::bigint AS failures,
           COALESCE(SUM(slow), 0)::bigint AS slow
    FROM antifragile_breaker_windows
    WHERE name = %(name)s AND second > %(second)s::bigint - %(window)s::bigint
      AND second < %(second)s::bigint
)
SELECT bucket.calls + earlier.calls, bucket.failures + earlier.failures,
       bucket.slow + earlier.slow
FROM bucket, earlier
"""

BREAKER_RESET: LiteralString = """
DELETE FROM antifragile_breaker_windows WHERE name = %(name)s
"""

# expired rows, a batch at a time, skipping rows a concurrent claim or write has locked
PURGE_KV: LiteralString = """
DELETE FROM antifragile_kv WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM antifragile_kv WHERE expires_at <= %(before)s::float8
    LIMIT %(batch)s::bigint FOR UPDATE SKIP LOCKED))
"""

PURGE_IDEMPOTENCY: LiteralString = """
DELETE FROM antifragile_idempotency WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM antifragile_idempotency WHERE expires_at <= %(before)s::float8
    LIMIT %(batch)s::bigint FOR UPDATE SKIP LOCKED))
"""


# -- helpers --------------------------------------------------------------------------------


def _expiry(now: float, ttl: float | None) -> float | None:
    return None if ttl is None else float(now) + float(ttl)


def _lock_key(schema: str) -> int:
    """The advisory-lock key serialising migrations of one schema (a signed 64-bit integer)."""
    digest = hashlib.blake2b(f"antifragile.migrate:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _mask_url(url: str) -> str:
    """*url* with any password replaced by ``***`` (in the authority and in the query)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _is_outage(exc: psycopg.Error) -> bool:
    """Whether *exc* says the server cannot be reached (a broken or refused connection, a
    server shutting down) -- not a busy pool, not a cancelled statement."""
    if isinstance(exc, PoolTimeout | TooManyRequests):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _seconds_option(
    given: float | None, own: Mapping[str, str], name: str, default: float
) -> float:
    """*given*, else the URL option *name* in seconds, else *default*; ConfigurationError for a
    URL value that is not a number of seconds > 0."""
    if given is not None:
        return float(given)
    raw = own.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ConfigurationError(
            f"the PostgreSQL URL option {name}= must be a number of seconds > 0, got {raw!r}"
        )
    return value


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """The libpq URL without antifragile's own query options, and those options."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in pairs if k in _OWN_URL_OPTIONS}
    rest = urlencode([(k, v) for k, v in pairs if k not in _OWN_URL_OPTIONS])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), own


_NAMED_PARAM = re.compile(r"%\((\w+)\)s")


class LoneStatement:
    """A statement for :meth:`_Database.lone`, written with psycopg's named parameters
    (``%(name)s``) and run with their values given by position, in the order of *names*.

    Every parameter must carry a cast (``%(n)s::int4``, the same one wherever a name repeats):
    the server learns the parameters' types from the text alone. Its columns are read as
    :meth:`_Database.lone_rows` says."""

    __slots__ = ("name", "positions", "query", "text")

    def __init__(self, query: str, names: Sequence[str]) -> None:
        index = {name: position for position, name in enumerate(names)}
        #: the statement as psycopg takes it on a pooled connection: ``%s`` for each parameter
        #: in the text, a repeated name repeated, whose values are these positions of *names*
        self.query = _NAMED_PARAM.sub("%s", query).encode()
        self.positions = tuple(index[m.group(1)] for m in _NAMED_PARAM.finditer(query))
        #: the statement as the server prepares it: ``$n`` for the n-th of *names*, so each value
        #: travels once however often the text uses it
        text = _NAMED_PARAM.sub(lambda m: f"${index[m.group(1)] + 1}", query)
        self.text = text.replace("%%", "%").encode()
        #: its name on the kept connection (psycopg names its own ``_pg3_...``)
        self.name = b"antifragile_" + hashlib.sha256(self.text).hexdigest()[:24].encode()


def _lone_param(value: LoneParam, encoding: str) -> bytes | None:
    """*value* as a text parameter, as psycopg would send it (a NUL in a string refused)."""
    if value is None:
        return None
    if isinstance(value, str):
        if "\x00" in value:
            raise psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        return value.encode(encoding)
    if isinstance(value, bool):  # before int: bool is an int
        return b"true" if value else b"false"
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value).encode()
        if math.isnan(value):
            return b"NaN"
        return b"Infinity" if value > 0 else b"-Infinity"
    raise TypeError(f"cannot send {type(value).__name__} as a parameter")


async def _give_back(
    pool: AsyncConnectionPool[AsyncConnection[TupleRow]], conn: AsyncConnection[TupleRow]
) -> None:
    """Return *conn* to *pool*: the pool keeps it if idle and sound, else (broken, or left in
    the middle of a statement, which closes it here) replaces it; a closed pool closes it."""
    if conn.pgconn.transaction_status not in (
        pq.TransactionStatus.IDLE,
        pq.TransactionStatus.UNKNOWN,
    ):
        await conn.close()
    await pool.putconn(conn)


def _lone_params(params: Sequence[LoneParam], encoding: str) -> list[bytes | None]:
    """:func:`_lone_param` of each of *params* (the common kinds inline: this runs for every
    parameter of every single enqueue)."""
    values: list[bytes | None] = []
    append = values.append
    for value in params:
        if type(value) is str and "\x00" not in value:
            append(value.encode(encoding))
        elif value is None:
            append(None)
        elif type(value) is int:
            append(b"%d" % value)
        elif type(value) is float and math.isfinite(value):
            append(repr(value).encode())
        else:
            append(_lone_param(value, encoding))
    return values


def _bool_column(value: bytes, encoding: str) -> bool:
    return value == b"t"


def _int_column(value: bytes, encoding: str) -> int:
    return int(value)


def _float_column(value: bytes, encoding: str) -> float:
    return float(value)  # also "NaN", "Infinity" and "-Infinity", as the server writes them


def _text_column(value: bytes, encoding: str) -> str:
    return value.decode(encoding)


#: how a column of a lone statement's result is read, by the type's oid (the types psycopg
#: reads as bool, int and float; any other is read as its text)
_COLUMN_READERS: dict[int, Callable[[bytes, str], Any]] = {
    16: _bool_column,  # bool
    20: _int_column,  # int8
    21: _int_column,  # int2
    23: _int_column,  # int4
    700: _float_column,  # float4
    701: _float_column,  # float8
}


def _lone_rows(result: PGresult, encoding: str) -> list[tuple[Any, ...]]:
    """The rows of *result* (text format), each column read by its type."""
    readers = [_COLUMN_READERS.get(result.ftype(c), _text_column) for c in range(result.nfields)]
    get_value = result.get_value
    rows: list[tuple[Any, ...]] = []
    for row in range(result.ntuples):
        values: list[Any] = []
        for column, read in enumerate(readers):
            value = get_value(row, column)
            values.append(None if value is None else read(value, encoding))
        rows.append(tuple(values))
    return rows


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _socket_ready(fileno: int, *, write: bool = False) -> None:
    """Until the connection's socket can be read (or written, with *write*)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    if write:
        loop.add_writer(fileno, _wake, future)
    else:
        loop.add_reader(fileno, _wake, future)
    try:
        await future
    finally:
        if write:
            loop.remove_writer(fileno)
        else:
            loop.remove_reader(fileno)


async def _results(pgconn: PGconn) -> list[PGresult]:
    """The results of what was just sent on *pgconn* (libpq's asynchronous command processing:
    flush, then read until no result is left)."""
    while pgconn.flush():  # 1: some of it still to be sent
        await _socket_ready(pgconn.socket, write=True)
        pgconn.consume_input()
    results: list[PGresult] = []
    while True:
        while pgconn.is_busy():
            await _socket_ready(pgconn.socket)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is None:
            return results
        results.append(result)


def _check_results(results: list[PGresult], encoding: str) -> PGresult:
    """The last of *results*, once none of them is an error (else the error, as psycopg
    raises it)."""
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise psycopg.errors.error_from_result(result, encoding=encoding)
    if not results:
        raise psycopg.InterfaceError("the server sent no result")
    return results[-1]


#: at most this many connections are kept out of the pool for lone statements (as many as a
#: worker's default concurrency of 10 has statements in flight, less the pool's reserve)
LONE_CONNECTIONS = 8
#: the pool keeps at least this many of its ``max_size`` connections from being kept for lone
#: statements: for the store's other operations (a worker's claims, completions and heartbeats)
POOL_RESERVE = 2


class _Kept:
    """A connection kept out of the pool for lone statements (:meth:`_Database.lone_rows`),
    the ``time.monotonic()`` when it was taken (the clock the pool measures its
    ``max_lifetime`` with: a connection's age, not the application's time), whether a
    statement is running on it, its encoding (as Python names it) and the names of the lone
    statements prepared on it."""

    __slots__ = ("busy", "conn", "encoding", "prepared", "since")

    def __init__(self) -> None:
        self.conn: AsyncConnection[TupleRow] | None = None
        self.since = 0.0
        self.busy = False
        self.encoding = "utf-8"
        self.prepared: set[bytes] = set()


async def _run_kept(
    slot: _Kept,
    conn: AsyncConnection[TupleRow],
    statement: LoneStatement,
    params: Sequence[LoneParam],
) -> list[tuple[Any, ...]]:
    pgconn = conn.pgconn
    encoding = slot.encoding
    values = _lone_params(params, encoding)
    if statement.name not in slot.prepared:
        pgconn.send_prepare(statement.name, statement.text)
        try:
            _check_results(await _results(pgconn), encoding)
        except psycopg.errors.DuplicatePreparedStatement:
            pass  # kept before, and prepared then (the name is the text's hash)
        slot.prepared.add(statement.name)
    pgconn.send_query_prepared(statement.name, values)
    result = _check_results(await _results(pgconn), encoding)
    if result.status != pq.ExecStatus.TUPLES_OK:
        return []
    return _lone_rows(result, encoding)


class _Database:
    """The pool, the connection settings, and the translation of driver errors."""

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str,
        min_size: int,
        max_size: int,
        connect_timeout: float,
        acquire_timeout: float,
        reconnect_timeout: float,
    ) -> None:
        self.conninfo = conninfo
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.acquire_timeout = acquire_timeout
        self.reconnect_timeout = reconnect_timeout
        #: ``time.monotonic()`` when the server was last found unreachable, until a new
        #: connection to it succeeds (``None``: it answers, as far as is known)
        self.down_since: float | None = None
        self.pool: AsyncConnectionPool[AsyncConnection[TupleRow]] | None = None
        self.writes = 0
        self.purging: asyncio.Task[int] | None = None
        self.draining: asyncio.Task[None] | None = None
        #: the connections kept out of the pool for lone statements (:meth:`lone_rows`): at
        #: most :data:`LONE_CONNECTIONS`, and ``max_size`` less :data:`POOL_RESERVE`; each is
        #: taken from the pool the first time every kept one before it is busy
        self.kept_slots = [_Kept() for _ in range(min(LONE_CONNECTIONS, max_size - POOL_RESERVE))]
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            raise ConfigurationError(
                f"invalid PostgreSQL URL {_mask_url(conninfo)!r}: {_one_line(exc)}"
            ) from None
        self.password = str(params.get("password") or "")
        #: shown in pg_stat_activity unless the URL names the application itself
        self.application_name = str(params.get("application_name") or "antifragile")
        host = str(params.get("host") or "localhost")
        port = str(params.get("port") or "5432")
        user = str(params.get("user") or "(default user)")
        dbname = str(params.get("dbname") or user)
        self.where = f"PostgreSQL at {host}:{port}, database {dbname!r}, user {user!r}"

    # -- connections ------------------------------------------------------------------------

    def _connect_kwargs(self) -> dict[str, Any]:
        # libpq counts whole seconds and treats less than 2 as 2; asyncio.timeout bounds it too
        return {
            "autocommit": True,
            "connect_timeout": max(2, math.ceil(self.connect_timeout)),
            "application_name": self.application_name,
        }

    async def configure(self, conn: AsyncConnection[TupleRow]) -> None:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        self.down_since = None  # a new connection works: the server is back

    def mark_down(self) -> None:
        """The server was found unreachable: from now until a new connection succeeds,
        operations wait at most :data:`DOWN_WAIT` for a connection (a webhook is answered 503
        at once instead of after the acquire timeout), and the pooled connections -- all
        broken by the outage -- are replaced by new ones."""
        if self.down_since is not None:
            return
        self.down_since = time.monotonic()
        pool = self.pool
        if pool is not None and not pool.closed:
            # replace every pooled connection (those in use are closed when returned)
            self.draining = asyncio.get_running_loop().create_task(
                pool.drain(), name="antifragile-postgres-drain"
            )

    async def _reconnect_failed(self, pool: Any) -> None:
        self.mark_down()

    def wait(self) -> float:
        """How long an operation waits for a pooled connection now."""
        if self.down_since is None:
            return self.acquire_timeout
        return min(self.acquire_timeout, DOWN_WAIT)

    def connection(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection[TupleRow]]:
        """A pooled connection, waited for at most :meth:`wait` seconds."""
        return self._pool().connection(timeout=self.wait())

    async def connect(self) -> AsyncConnection[TupleRow]:
        """One connection outside the pool, with precise errors (used by open and migrate)."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                conn = await AsyncConnection.connect(self.conninfo, **self._connect_kwargs())
        except TimeoutError:
            raise StoreUnavailableError(
                f"cannot connect to {self.where}: no answer within {self.connect_timeout:g}s"
            ) from None
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"cannot connect to {self.where}: {self._reason(exc)}"
            ) from None
        try:
            await self.configure(conn)
        except psycopg.Error as exc:
            await conn.close()
            raise self.translate(exc) from exc
        return conn

    async def open_pool(self) -> None:
        pool: AsyncConnectionPool[AsyncConnection[TupleRow]] = AsyncConnectionPool(
            self.conninfo,
            kwargs=self._connect_kwargs(),
            min_size=self.min_size,
            max_size=self.max_size,
            configure=self.configure,
            timeout=self.acquire_timeout,
            # give up a reconnection attempt soon: the next operation starts a new one at once,
            # so the pool reconnects within about a second of the server's return instead of
            # after an exponential back-off grown through the whole outage
            reconnect_timeout=self.reconnect_timeout,
            reconnect_failed=self._reconnect_failed,
            name="antifragile",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=max(self.connect_timeout, 1.0))
        except psycopg.Error as exc:
            await pool.close()
            raise StoreUnavailableError(
                f"cannot open a connection pool to {self.where}: {self._reason(exc)}"
            ) from None
        self.pool = pool

    async def close_pool(self) -> None:
        draining, self.draining = self.draining, None
        if draining is not None and not draining.done():
            draining.cancel()
            await asyncio.wait([draining])
        purging, self.purging = self.purging, None
        if purging is not None and not purging.done():
            purging.cancel()
            await asyncio.wait([purging])  # its outcome is of no interest any more
        await self._release_kept()  # one in use goes back once its statement ends
        pool, self.pool = self.pool, None
        for slot in self.kept_slots:
            slot.conn = None
        if pool is not None:
            await pool.close()

    # -- collecting expired rows ------------------------------------------------------------

    def wrote(self, now: float) -> None:
        """Count a key-value or idempotency write made at the caller's *now*; now and then
        start deleting expired rows in the background (one collection at a time)."""
        self.writes += 1
        if self.writes % PURGE_EVERY or self.pool is None:
            return
        if self.purging is None or self.purging.done():
            self.purging = asyncio.get_running_loop().create_task(
                self._purge_quietly(now - PURGE_GRACE), name="antifragile-postgres-purge"
            )

    async def purge(self, before: float) -> int:
        """Delete key-value and idempotency rows expired at *before*; how many."""
        deleted = 0
        for query in (PURGE_KV, PURGE_IDEMPOTENCY):
            while True:
                count = await self.execute(query, {"before": before, "batch": PURGE_BATCH})
                deleted += count
                if count < PURGE_BATCH:
                    break
        return deleted

    async def _purge_quietly(self, before: float) -> int:
        try:
            return await self.purge(before)
        except (StoreError, ConfigurationError):  # best effort: the next collection retries
            return 0

    # -- statements -------------------------------------------------------------------------

    def _pool(self) -> AsyncConnectionPool[AsyncConnection[TupleRow]]:
        if self.pool is None:
            raise ConfigurationError(
                "the PostgreSQL store is not open: await store.open() (or use open_store) first"
            )
        return self.pool

    async def prepared(
        self, query: bytes, params: Sequence[Any] | Mapping[str, Any]
    ) -> list[TupleRow]:
        """The rows of one statement (none when it returns none), prepared on the server by
        psycopg the first time each connection runs it.

        The hot path of the job queue: the connection is taken from the pool and given back
        directly, which spares a context manager and a ``COMMIT`` check per call; the pool
        resets and replaces a returned connection exactly as on leaving ``connection()`` (a
        statement on these autocommit connections leaves no transaction open)."""
        try:
            pool = self._pool()
            conn = await pool.getconn(timeout=self.wait())
            try:
                cursor = await conn.execute(query, params, prepare=True)
                result = cursor.pgresult
                if result is None or result.status != pq.ExecStatus.TUPLES_OK:
                    return []
                return await cursor.fetchall()
            finally:
                await pool.putconn(conn)
        except PoolClosed:
            raise ConfigurationError("the PostgreSQL store is closed") from None
        except psycopg.Error as exc:
            raise self.translate(exc) from exc

    async def lone(self, statement: LoneStatement, params: Sequence[LoneParam]) -> list[Any]:
        """The first column of the rows of :meth:`lone_rows`."""
        return [row[0] for row in await self.lone_rows(statement, params)]

    async def lone_rows(
        self, statement: LoneStatement, params: Sequence[LoneParam]
    ) -> list[tuple[Any, ...]]:
        """The rows of one statement in autocommit, with the values of its parameters in the
        order of its names: the hot path of a single enqueue, and of the single reads and
        writes every inbound message makes (its inbox entry, session, sender's bucket, the
        session's turn with its reply).

        Columns of type text, varchar, integer, float and boolean read as psycopg reads them
        (``str``, ``int``, ``float``, ``bool``; SQL NULL as ``None``); on the kept connection
        any other type reads as its text, so a statement returns only those types.

        A lone statement (one caller awaiting one statement, as an application enqueues a job)
        runs on a connection kept out of the pool for them, driven through libpq's own
        asynchronous interface (psycopg's documented ``pgconn``): the statement prepared on
        the server once per connection, then one message out and one result back, sparing the
        pool's checkout and return and psycopg's cursor for every call. One statement runs on
        a kept connection at a time; a statement started while every kept connection is busy
        takes the next one from the pool and keeps it too, up to :data:`LONE_CONNECTIONS` and
        ``max_size`` less :data:`POOL_RESERVE` (the kept ones count towards it); beyond that it
        runs on a pooled connection (:meth:`prepared`). No caller ever waits for a kept
        connection. With ``max_size`` of 2 or less nothing is kept, and while the server is
        known to be down the kept ones are given back and the pool's rules for an outage apply
        (a short wait for a connection, then StoreUnavailableError).

        A kept connection is checked before each statement (one the server ended while it was
        idle is given back and another one taken, so a restarted server costs no failed call),
        given back when a statement on it failed to complete, when it is older than the
        pool's ``max_lifetime``, and on close."""
        slot = None
        if self.down_since is None:
            for candidate in self.kept_slots:
                if not candidate.busy:
                    slot = candidate
                    break
        if slot is None:
            if self.down_since is not None:
                await self._release_kept()  # the pool replaces them with the others
            positional = [params[position] for position in statement.positions]
            return await self.prepared(statement.query, positional)
        pool = self._pool()
        slot.busy = True
        conn: AsyncConnection[TupleRow] | None = None
        try:
            conn = slot.conn
            if conn is None or not self._usable(slot, pool):
                conn = await self._keep(slot, pool)
            return await _run_kept(slot, conn, statement, params)
        except PoolClosed:
            raise ConfigurationError("the PostgreSQL store is closed") from None
        except psycopg.Error as exc:
            raise self.translate(exc) from exc
        finally:
            slot.busy = False
            if conn is not None and (
                conn is not slot.conn
                or self.pool is not pool
                or conn.pgconn.transaction_status != pq.TransactionStatus.IDLE
            ):
                # the store closed meanwhile, or the connection broke or was interrupted
                if conn is slot.conn:
                    slot.conn = None
                await _give_back(pool, conn)

    async def _release_kept(self) -> None:
        """Give the kept connections back to the pool (not those a statement runs on: they go
        back once it ends)."""
        for slot in self.kept_slots:
            if slot.busy:
                continue
            kept, slot.conn = slot.conn, None
            if kept is not None and self.pool is not None:
                await _give_back(self.pool, kept)

    def _usable(self, slot: _Kept, pool: AsyncConnectionPool[Any]) -> bool:
        """Whether the connection kept in *slot* may run the next statement: the server has
        not ended it while it was idle (reading what it sent costs two system calls) and it is
        not older than the pool's ``max_lifetime``."""
        assert slot.conn is not None
        pgconn = slot.conn.pgconn
        try:
            # a server ending a connection sends a FATAL message, then closes it: the first
            # read takes the message (libpq reports it as a notice), the second meets the end
            pgconn.consume_input()
            pgconn.consume_input()
        except psycopg.OperationalError:
            return False
        return (
            pgconn.status == pq.ConnStatus.OK
            and pgconn.transaction_status == pq.TransactionStatus.IDLE
            and time.monotonic() - slot.since < pool.max_lifetime
        )

    async def _keep(
        self, slot: _Kept, pool: AsyncConnectionPool[AsyncConnection[TupleRow]]
    ) -> AsyncConnection[TupleRow]:
        """Give the connection kept in *slot* back to *pool* and keep another one from it."""
        old, slot.conn = slot.conn, None
        if old is not None:
            await _give_back(pool, old)
        conn = await pool.getconn(timeout=self.wait())
        slot.conn, slot.since = conn, time.monotonic()
        slot.encoding = conn.info.encoding
        slot.prepared = set()
        return conn

    async def fetchone(
        self, query: LiteralString, params: Mapping[str, Any] | None = None
    ) -> TupleRow | None:
        try:
            async with self.connection() as conn:
                cursor = await conn.execute(query, params)
                return await cursor.fetchone()
        except PoolClosed:
            raise ConfigurationError("the PostgreSQL store is closed") from None
        except psycopg.Error as exc:
            raise self.translate(exc) from exc

    async def fetchall(
        self, query: LiteralString, params: Mapping[str, Any] | None = None
    ) -> list[TupleRow]:
        try:
            async with self.connection() as conn:
                cursor = await conn.execute(query, params)
                return await cursor.fetchall()
        except PoolClosed:
            raise ConfigurationError("the PostgreSQL store is closed") from None
        except psycopg.Error as exc:
            raise self.translate(exc) from exc

    async def execute(self, query: LiteralString, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement; the number of rows it changed."""
        try:
            async with self.connection() as conn:
                cursor = await conn.execute(query, params)
                return cursor.rowcount
        except PoolClosed:
            raise ConfigurationError("the PostgreSQL store is closed") from None
        except psycopg.Error as exc:
            raise self.translate(exc) from exc

    # -- errors -----------------------------------------------------------------------------

    def _reason(self, exc: BaseException) -> str:
        reason = _one_line(exc)
        if self.password:
            reason = reason.replace(self.password, "***")
        return reason

    def translate(self, exc: psycopg.Error) -> StoreError:
        reason = self._reason(exc)
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return StoreError(
                f"{self.where}: schema {self.schema!r} lacks antifragile's tables ({reason}); "
                "run `antifragile migrate` or open the store with migrate=True"
            )
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            if _is_outage(exc):
                self.mark_down()
            return StoreUnavailableError(f"{self.where} is unavailable: {reason}")
        return StoreError(f"{self.where}, schema {self.schema!r}: {reason}")


# -- the protocols ------------------------------------------------------------------------------


#: the single statements every inbound message runs, on the kept connection (:meth:`lone_rows`)
_LONE_KV_GET = LoneStatement(KV_GET, ("key", "now"))
_LONE_RATE_TAKE = LoneStatement(RATE_TAKE, ("key", "tokens", "rate", "burst", "max_wait", "now"))


class PostgresKeyValueStore:
    """KeyValueStore on the table ``antifragile_kv``.

    Values are stored as the JSON text the codec wrote, so they read back exactly; merge works
    on them as ``jsonb``, which cannot hold the NUL character (such a merge is refused with
    ConfigurationError)."""

    def __init__(self, db: _Database) -> None:
        self._db = db

    async def get(self, key: str, *, now: float) -> Versioned | None:
        rows = await self._db.lone_rows(_LONE_KV_GET, (key, float(now)))
        if not rows:
            return None
        row = rows[0]
        return Versioned(key, decode(row[0]), row[1], row[2])

    async def set(
        self, key: str, value: JSON, *, now: float, ttl: float | None = None
    ) -> Versioned:
        text = encode(value)
        expires_at = _expiry(now, ttl)
        params = {"key": key, "value": text, "now": float(now), "expires_at": expires_at}
        row = await self._db.fetchone(KV_SET, params)
        assert row is not None
        self._db.wrote(now)
        return Versioned(key, decode(text), row[0], expires_at)

    async def compare_and_set(
        self,
        key: str,
        value: JSON,
        *,
        expected_version: int | None,
        now: float,
        ttl: float | None = None,
    ) -> Versioned | None:
        text = encode(value)
        expires_at = _expiry(now, ttl)
        params: dict[str, Any] = {
            "key": key,
            "value": text,
            "now": float(now),
            "expires_at": expires_at,
        }
        if expected_version is None:
            row = await self._db.fetchone(KV_CREATE, params)
        else:
            params["expected"] = int(expected_version)
            row = await self._db.fetchone(KV_CAS, params)
        if row is None:
            return None
        self._db.wrote(now)
        return Versioned(key, decode(text), row[0], expires_at)

    async def merge(
        self, key: str, fields: dict[str, JSON], *, now: float, ttl: float | None = None
    ) -> Versioned:
        check_fields(fields)
        params = {
            "key": key,
            "fields": encode(fields),
            "now": float(now),
            "expires_at": _expiry(now, ttl),
            "keep_expiry": ttl is None,
        }
        try:
            row = await self._db.fetchone(KV_MERGE, params)
        except StoreError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UntranslatableCharacter):
                raise ConfigurationError(
                    f"cannot merge into {key!r}: PostgreSQL JSON cannot hold the NUL character"
                ) from None
            raise
        if row is None:
            raise ConfigurationError(f"cannot merge fields into {key!r}: its value is not a dict")
        self._db.wrote(now)
        return Versioned(key, decode(row[0]), row[1], row[2])

    async def delete(self, key: str, *, expected_version: int | None = None, now: float) -> bool:
        params = {
            "key": key,
            "expected": None if expected_version is None else int(expected_version),
            "now": float(now),
        }
        row = await self._db.fetchone(KV_DELETE, params)
        return bool(row is not None and row[0])

    async def scan(self, prefix: str, *, now: float, limit: int = 100) -> list[Versioned]:
        upper = prefix_end(prefix)
        params = {"lower": prefix, "upper": upper, "now": float(now), "limit": int(limit)}
        rows = await self._db.fetchall(KV_SCAN_FROM if upper is None else KV_SCAN_RANGE, params)
        return [Versioned(r[0], decode(r[1]), r[2], r[3]) for r in rows]


def _idempotency_record(key: str, row: TupleRow) -> IdempotencyRecord:
    return IdempotencyRecord(
        key=key,
        status=IdempotencyStatus(row[0]),
        owner=row[1],
        fingerprint=row[2],
        result=decode(row[3]),
        created_at=row[4],
        expires_at=row[5],
    )


class PostgresIdempotencyStore:
    """IdempotencyStore on the table ``antifragile_idempotency``."""

    def __init__(self, db: _Database) -> None:
        self._db = db

    async def claim(
        self,
        key: str,
        *,
        owner: str,
        now: float,
        ttl: float,
        fingerprint: str | None = None,
    ) -> Claim:
        now = float(now)
        params = {
            "key": key,
            "owner": owner,
            "fingerprint": fingerprint,
            "now": now,
            "expires_at": now + float(ttl),
        }
        for _ in range(_STALE_RETRIES):
            row = await self._db.fetchone(IDEM_CLAIM, params)
            if row is not None and row[6]:
                self._db.wrote(now)
                return Claim(True, _idempotency_record(key, row), fingerprint)
            # lost: the snapshot shows the record it lost to, unless a commit landed meanwhile
            if row is not None and row[5] > now:
                return Claim(False, _idempotency_record(key, row), fingerprint)
        raise StoreError(f"claim of {key!r} kept meeting concurrent changes; try again")

    async def complete(
        self,
        key: str,
        *,
        owner: str,
        status: IdempotencyStatus,
        result: JSON = None,
        now: float,
        ttl: float,
    ) -> bool:
        status = check_outcome(status)
        params = {
            "key": key,
            "owner": owner,
            "status": status.value,
            "result": encode(result),
            "now": float(now),
            "expires_at": float(now) + float(ttl),
        }
        return await self._db.execute(IDEM_COMPLETE, params) == 1

    async def get(self, key: str, *, now: float) -> IdempotencyRecord | None:
        row = await self._db.fetchone(IDEM_GET, {"key": key, "now": float(now)})
        return None if row is None else _idempotency_record(key, row)

    async def release(self, key: str, *, owner: str) -> bool:
        return await self._db.execute(IDEM_RELEASE, {"key": key, "owner": owner}) == 1

    async def scan(self, prefix: str, *, now: float, limit: int = 100) -> list[IdempotencyRecord]:
        upper = prefix_end(prefix)
        params = {"lower": prefix, "upper": upper, "now": float(now), "limit": max(0, int(limit))}
        rows = await self._db.fetchall(IDEM_SCAN_FROM if upper is None else IDEM_SCAN_RANGE, params)
        return [_idempotency_record(r[0], r[1:]) for r in rows]

    async def delete(self, key: str) -> bool:
        return await self._db.execute(IDEM_DELETE, {"key": key}) == 1


class PostgresLeaseStore:
    """LeaseStore on the table ``antifragile_leases``."""

    def __init__(self, db: _Database) -> None:
        self._db = db

    async def acquire(self, name: str, *, owner: str, now: float, ttl: float) -> Lease | None:
        params = {
            "name": name,
            "owner": owner,
            "now": float(now),
            "expires_at": float(now) + float(ttl),
        }
        row = await self._db.fetchone(LEASE_ACQUIRE, params)
        return None if row is None else Lease(name, owner, row[0], row[1])

    async def renew(self, name: str, *, owner: str, now: float, ttl: float) -> Lease | None:
        params = {
            "name": name,
            "owner": owner,
            "now": float(now),
            "expires_at": float(now) + float(ttl),
        }
        row = await self._db.fetchone(LEASE_RENEW, params)
        return None if row is None else Lease(name, owner, row[0], row[1])

    async def release(self, name: str, *, owner: str) -> bool:
        return await self._db.execute(LEASE_RELEASE, {"name": name, "owner": owner}) == 1

    async def holder(self, name: str, *, now: float) -> Lease | None:
        row = await self._db.fetchone(LEASE_HOLDER, {"name": name, "now": float(now)})
        return None if row is None else Lease(name, row[0], row[1], row[2])


class PostgresRateLimitStore:
    """RateLimitStore on the table ``antifragile_rate_limits``."""

    def __init__(self, db: _Database) -> None:
        self._db = db

    async def take(
        self,
        key: str,
        *,
        tokens: float,
        rate: float,
        burst: float,
        max_wait: float,
        now: float,
    ) -> TokenGrant:
        check_rate(rate)
        n, rate, burst, max_wait = float(tokens), float(rate), float(burst), float(max_wait)
        params = (key, n, rate, burst, max_wait, float(now))
        for _ in range(_STALE_RETRIES):
            rows = await self._db.lone_rows(_LONE_RATE_TAKE, params)
            row = rows[0] if rows else None
            if row is not None and row[2]:
                left = row[0]
                return TokenGrant(True, -left / rate if left < 0 else 0.0)
            # refused: the snapshot must agree, or a commit landed while the statement waited
            bucket = None if row is None else Bucket(row[0], row[1])
            grant, _ = take_tokens(
                bucket, tokens=n, rate=rate, burst=burst, max_wait=max_wait, now=now
            )
            if not grant.granted:
                return grant
        raise StoreError(f"take from bucket {key!r} kept meeting concurrent changes; try again")

    async def refund(
        self, key: str, *, tokens: float, rate: float, burst: float, now: float
    ) -> None:
        check_rate(rate)
        if not tokens > 0:
            return
        params = {
            "key": key,
            "tokens": float(tokens),
            "rate": float(rate),
            "burst": float(burst),
            "now": float(now),
        }
        await self._db.execute(RATE_REFUND, params)

    async def pause(
        self, key: str, *, seconds: float, rate: float, burst: float, now: float
    ) -> None:
        check_rate(rate)
        if not seconds > 0:
            return
        params = {
            "key": key,
            "rate": float(rate),
            "burst": float(burst),
            "now": float(now),
            "until": float(now) + float(seconds),
        }
        await self._db.execute(RATE_PAUSE, params)


def _breaker_record(name: str, row: TupleRow) -> BreakerRecord:
    return BreakerRecord(name, row[0], row[1], row[2], row[3], row[4], row[5])


class PostgresBreakerStore:
    """BreakerStore on the tables ``antifragile_breakers`` and ``antifragile_breaker_windows``."""

    def __init__(self, db: _Database) -> None:
        self._db = db

    async def load(self, name: str) -> BreakerRecord:
        row = await self._db.fetchone(BREAKER_LOAD, {"name": name})
        return BreakerRecord(name) if row is None else _breaker_record(name, row)

    async def compare_and_set(self, expected: BreakerRecord, new: BreakerRecord) -> BreakerRecord:
        check_breaker_names(expected, new)
        name = expected.name
        default = BreakerRecord(name)
        params = {
            "name": name,
            "state": str(new.state),
            "generation": int(new.generation),
            "open_until": float(new.open_until),
            "consecutive_opens": int(new.consecutive_opens),
            "probes_left": int(new.probes_left),
            "writer": str(new.writer),
            "expected_state": str(expected.state),
            "expected_generation": int(expected.generation),
            "expected_probes_left": int(expected.probes_left),
        }
        query = BREAKER_CAS_FROM_DEFAULT if breaker_matches(default, expected) else BREAKER_CAS
        for _ in range(_STALE_RETRIES):
            row = await self._db.fetchone(query, params)
            current = default if row is None else _breaker_record(name, row)
            if row is not None and row[6]:
                return current
            if not breaker_matches(current, expected):  # a real loss, not a stale snapshot
                return current
        return await self.load(name)

    async def add_outcomes(
        self,
        name: str,
        *,
        second: int,
        calls: int,
        failures: int,
        slow: int,
        window: int,
    ) -> WindowTotals:
        check_window(window)
        params = {
            "name": name,
            "second": int(second),
            "calls": int(calls),
            "failures": int(failures),
            "slow": int(slow),
            "window": int(window),
        }
        row = await self._db.fetchone(BREAKER_ADD, params)
        assert row is not None
        return WindowTotals(calls=row[0], failures=row[1], slow=row[2])

    async def reset_window(self, name: str) -> None:
        await self._db.execute(BREAKER_RESET, {"name": name})

    async def add_probe_result(
        self, name: str, *, generation: int, failure: bool, slow: bool
    ) -> WindowTotals:
        # the window's statement on rows of their own: one bucket per round (see SQLite)
        params = {
            "name": probe_key(name),
            "second": int(generation),
            "calls": 1,
            "failures": int(bool(failure)),
            "slow": int(bool(slow)),
            "window": 1,
        }
        row = await self._db.fetchone(BREAKER_ADD, params)
        assert row is not None
        return WindowTotals(calls=row[0], failures=row[1], slow=row[2])


# -- the store ----------------------------------------------------------------------------------


class PostgresStore:
    """Every state protocol on one PostgreSQL schema (see the module docs for the options)."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        schema: str | None = None,
        drop_schema_on_close: bool = False,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float | None = None,
        acquire_timeout: float | None = None,
        reconnect_timeout: float | None = None,
        migrate: bool = False,
        auto_migrate: bool = True,
    ) -> None:
        conninfo, own = _split_url(url)
        schema = schema if schema is not None else own.get("schema", "public")
        # the options win over the URL's, which win over the defaults
        connect_timeout = _seconds_option(
            connect_timeout, own, "connect_timeout", DEFAULT_CONNECT_TIMEOUT
        )
        acquire_timeout = _seconds_option(
            acquire_timeout, own, "pool_timeout", DEFAULT_ACQUIRE_TIMEOUT
        )
        reconnect_timeout = _seconds_option(
            reconnect_timeout, own, "reconnect_timeout", DEFAULT_RECONNECT_TIMEOUT
        )
        if not schema or len(schema.encode()) > 63 or "\x00" in schema:
            raise ConfigurationError(f"invalid PostgreSQL schema name {schema!r}")
        if drop_schema_on_close and schema == "public":
            raise ConfigurationError("drop_schema_on_close is refused for the schema 'public'")
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ConfigurationError(
                f"pool sizes need 0 <= min_size <= max_size and max_size >= 1, "
                f"got {min_size}, {max_size}"
            )
        if not connect_timeout > 0 or not acquire_timeout > 0 or not reconnect_timeout > 0:
            raise ConfigurationError(
                "connect_timeout, acquire_timeout and reconnect_timeout must be > 0 seconds"
            )
        #: the URL with its password masked
        self.url = _mask_url(url)
        self.schema = schema
        self._clock = clock
        self._drop_schema_on_close = drop_schema_on_close
        self._migrate_on_open = migrate
        self._auto_migrate = auto_migrate
        self._db = _Database(
            conninfo,
            schema=schema,
            min_size=min_size,
            max_size=max_size,
            connect_timeout=float(connect_timeout),
            acquire_timeout=float(acquire_timeout),
            reconnect_timeout=float(reconnect_timeout),
        )
        self.kv = PostgresKeyValueStore(self._db)
        self.idempotency = PostgresIdempotencyStore(self._db)
        self.leases = PostgresLeaseStore(self._db)
        self.rate_limits = PostgresRateLimitStore(self._db)
        self.breakers = PostgresBreakerStore(self._db)

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r}, schema={self.schema!r})"

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check (or create) the schema, then open the pool.

        Raises StoreUnavailableError when the server cannot be reached or refuses the login,
        SchemaVersionError for a schema migrated by a newer antifragile, and ConfigurationError
        for an outdated one (run ``antifragile migrate``).
        """
        if self._db.pool is not None:
            return
        conn = await self._db.connect()
        try:
            # wait for a migration run under way (another process creating this schema) to
            # finish before judging the schema's version
            async with self._migration_lock(conn):
                applied = await self._applied(conn)
                available = load_migrations(DIALECT)
                if self._migrate_on_open or (applied is None and self._auto_migrate):
                    await self._migrate(conn, available)
                else:
                    pending = plan(applied or set(), available)
                    if pending:
                        raise ConfigurationError(
                            f"{self._db.where}: schema {self.schema!r} is at version "
                            f"{max(applied or {0})}, this antifragile needs "
                            f"{available[-1].version}; run `antifragile migrate` (or open the "
                            "store with migrate=True)"
                        )
        except psycopg.Error as exc:
            raise self._db.translate(exc) from exc
        finally:
            await conn.close()
        await self._db.open_pool()

    async def close(self) -> None:
        """Close the pool (dropping the schema first when ``drop_schema_on_close``)."""
        if self._db.pool is None:
            return
        try:
            if self._drop_schema_on_close:
                drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(self.schema)
                )
                try:
                    async with self._db.pool.connection() as conn:
                        await conn.execute(drop)
                except psycopg.Error as exc:
                    raise self._db.translate(exc) from exc
        finally:
            await self._db.close_pool()

    async def ping(self) -> float:
        """Round-trip time of ``SELECT 1`` in seconds; raises StoreUnavailableError."""
        started = time.perf_counter()
        await self._db.fetchone("SELECT 1")
        return time.perf_counter() - started

    # -- migrations -------------------------------------------------------------------------

    async def migrate(self) -> list[int]:
        """Apply the pending migrations (creating the schema if needed); the versions applied.

        Safe to run from several processes at once: each migration is applied exactly once.
        Works whether or not the store is open. Raises SchemaVersionError for a schema that a
        newer antifragile migrated.
        """
        conn = await self._db.connect()
        try:
            return await self._migrate(conn, load_migrations(DIALECT))
        except psycopg.Error as exc:
            raise self._db.translate(exc) from exc
        finally:
            await conn.close()

    async def purge_expired(self, *, now: float) -> int:
        """Delete the key-value and idempotency rows expired at *now*; how many.

        Expired rows are invisible already; this only frees space. The store also does it by
        itself every ``PURGE_EVERY`` writes, with a grace of ``PURGE_GRACE`` seconds."""
        return await self._db.purge(float(now))

    async def schema_version(self) -> int:
        """The newest migration applied to the schema (0 when it has none)."""
        conn = await self._db.connect()
        try:
            applied = await self._applied(conn)
        except psycopg.Error as exc:
            raise self._db.translate(exc) from exc
        finally:
            await conn.close()
        return max(applied, default=0) if applied else 0

    async def _applied(self, conn: AsyncConnection[TupleRow]) -> set[int] | None:
        """The versions recorded in the schema (None: there is no migrations table)."""
        cursor = await conn.execute(
            "SELECT to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text))",
            {"schema": self.schema, "table": MIGRATIONS_TABLE},
        )
        found = await cursor.fetchone()
        if found is None or found[0] is None:
            return None
        cursor = await conn.execute("SELECT version FROM antifragile_migrations")
        return {row[0] for row in await cursor.fetchall()}

    @contextlib.asynccontextmanager
    async def _migration_lock(self, conn: AsyncConnection[TupleRow]) -> AsyncIterator[None]:
        """Hold this schema's migration lock on *conn* (a session lock, re-entrant): a whole
        migration run, or a look at the version, never interleaves with another run."""
        key = {"key": _lock_key(self.schema)}
        await conn.execute("SELECT pg_advisory_lock(%(key)s::bigint)", key)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%(key)s::bigint)", key)

    async def _migrate(
        self, conn: AsyncConnection[TupleRow], available: list[Migration]
    ) -> list[int]:
        async with self._migration_lock(conn):
            return await self._migrate_steps(conn, available)

    async def _migrate_steps(
        self, conn: AsyncConnection[TupleRow], available: list[Migration]
    ) -> list[int]:
        applied_now: list[int] = []
        while True:
            async with conn.transaction():
                # serialise with every other migrator of this schema until this commit
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(%(key)s::bigint)", {"key": _lock_key(self.schema)}
                )
                cursor = await conn.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %(schema)s", {"schema": self.schema}
                )
                if await cursor.fetchone() is None:
                    await conn.execute(
                        sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema))
                    )
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS antifragile_migrations ("
                    " version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL,"
                    " applied_at DOUBLE PRECISION NOT NULL)"
                )
                cursor = await conn.execute("SELECT version FROM antifragile_migrations")
                pending = plan({row[0] for row in await cursor.fetchall()}, available)
                if not pending:
                    return applied_now
                migration = pending[0]
                for statement in split_statements(migration.sql):
                    await conn.execute(statement.encode())
                await conn.execute(
                    "INSERT INTO antifragile_migrations (version, name, applied_at)"
                    " VALUES (%(version)s, %(name)s, %(applied_at)s::float8)",
                    {
                        "version": migration.version,
                        "name": migration.name,
                        "applied_at": self._clock.time(),
                    },
                )
            applied_now.append(migration.version)
