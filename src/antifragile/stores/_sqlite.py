"""The SQLite backend, the default: ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db``.

One store owns one :mod:`sqlite3` connection and one dedicated thread, and the connection is
used by one thread at a time. Every operation is a single function call -- in the store's
thread (one thread hop), or, for a lone write on an idle store, in the caller's own thread (see
below) -- and inside it either one statement (``INSERT ... ON CONFLICT ... DO UPDATE ...
RETURNING``, ``UPDATE ... RETURNING``) or one ``BEGIN IMMEDIATE ... COMMIT`` transaction.
``BEGIN IMMEDIATE`` takes the database's write lock before the first read, so a
read-modify-write can never act on a stale snapshot, and it holds across processes: any number
of processes may open the same file. Enqueues that arrive while the connection is busy share one
transaction, each under a savepoint of its own (group commit, see :meth:`_Database.run_shared`):
one ``fsync`` for the group, every caller answered after the commit.

Who runs an operation: the connection is held by whoever set ``_Database._draining`` (under a
lock) -- the store's thread while it works through the operations waiting in ``_pending``, or a
caller. An enqueue, or a record saved with its jobs, that finds the store idle is run by its
caller (:meth:`_Database.run_shared_here`), on the caller's thread, with no hop and no wake-up
of the event loop from another thread: the caller holds the connection, lets its event loop run
once (callers ready at the same moment then queue behind it, and all of them go to the store's
thread to share a commit), and, still alone, runs the transaction itself -- the same function,
the same ``BEGIN IMMEDIATE ... COMMIT`` (or single statement) and the same ``fsync`` before it
returns, so durability is the same on either path. Callers arriving meanwhile (other threads,
other event loops) wait in ``_pending`` and are handed to the store's thread when it is done.
Such a call blocks its event loop for as long as the commit takes, so: it runs with
``busy_timeout`` 0, and a write lock held by another connection sends it (rolled back whole) to
the store's thread, which waits for the lock without blocking the loop; and when these calls
take long on average (a slow disk: more than ``HERE_SLOW_AFTER``), writes go to the store's
thread for ``HERE_PAUSE`` seconds. Every other operation -- reads, scans, purges, migrations,
claims and completions, and the inbox's records, whose server goes on accepting webhooks while
their commit is in flight -- runs in the store's thread, as does the store's own housekeeping;
:meth:`SQLiteStore.close` waits its turn behind the operations that came before it, wherever
they run. The exception: point reads (a key-value entry, an inbox entry by its id) run in the
caller's thread on a second, read-only connection, when the database has one (a file in WAL
mode; see :meth:`_Database.read_here`): they see what is committed, as reads in the store's
thread do, without waiting behind a commit's ``fsync``.

Rate-limit takes and job claims commit without waiting for an ``fsync`` (``synchronous=NORMAL``
for their own transactions, in WAL mode; see :class:`_unsynced`).

Connection settings:

* ``journal_mode=WAL`` -- readers never block the writer, nor the writer the readers;
* ``synchronous=FULL`` by default (every commit is on disk before it returns);
  ``?synchronous=normal`` in the URL trades the last commits before a power cut (never
  corruption) for fewer fsyncs;
* ``busy_timeout`` -- how long to wait for another process's write lock, ``?busy_timeout=5000``
  milliseconds by default; past it the operation raises
  :class:`~antifragile.StoreUnavailableError`;
* ``foreign_keys=ON``.

The store migrates its schema on :meth:`SQLiteStore.open` -- each migration in its own
``BEGIN IMMEDIATE`` transaction, so processes starting together migrate once -- unless opened
with ``migrate=False``; either way it refuses a database migrated by a newer antifragile with
:class:`~antifragile.SchemaVersionError`.

Expired rows are invisible at once and deleted later: every ``PURGE_EVERY`` writes, by the
writer's own ``now`` less ``PURGE_GRACE`` seconds (never by the store's clock), or on demand with
:meth:`SQLiteStore.purge_expired`. Lease rows are kept, so fencing tokens never repeat.

A coroutine cancelled while its operation runs does not cancel the operation: the thread finishes
it (a transaction is never left half done) and the result is dropped. (A call that runs in its
caller's thread cannot be cancelled halfway: it holds the event loop until it is done.)
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

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
    merge_fields,
    pause_bucket,
    prefix_end,
    probe_key,
    refund_bucket,
    take_tokens,
)
from antifragile.stores._migrations import (
    MIGRATIONS_TABLE,
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

T = TypeVar("T")
P = ParamSpec("P")

DIALECT = "sqlite"
DEFAULT_BUSY_TIMEOUT_MS = 5000
_SYNCHRONOUS = ("full", "normal", "extra")
_URL_OPTIONS = {
    "busy_timeout": "milliseconds to wait for another connection's lock (default 5000)",
    "synchronous": "full (default), normal or extra",
}
#: every this many key-value and idempotency writes, expired rows are deleted
PURGE_EVERY = 1000
#: rows are deleted only once expired this many seconds before the writer's ``now``
PURGE_GRACE = 300.0
#: an operation run in the caller's thread (see :meth:`_Database._run_here`) blocks its event
#: loop while it runs: when the moving average of their durations (seconds, by
#: ``time.perf_counter``; each new one weighs HERE_WEIGHT) passes HERE_SLOW_AFTER -- a slow
#: disk, rather than one preempted operation -- the following operations go to the store's
#: thread for HERE_PAUSE seconds. A performance heuristic only: results and durability are the
#: same on either path.
HERE_SLOW_AFTER = 0.002
HERE_WEIGHT = 0.1
HERE_PAUSE = 1.0


class _immediate:  # lower case: used like the function it was, ``with _immediate(conn):``
    """One ``BEGIN IMMEDIATE ... COMMIT`` transaction, rolled back on any error -- or, inside
    a shared transaction (see :meth:`_Database.run_shared`), a savepoint of it, rolled back
    alone. (A class rather than a generator: it wraps every operation, and costs less so.)"""

    __slots__ = ("conn", "shared")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.shared = False

    def __enter__(self) -> None:
        conn = self.conn
        self.shared = conn.in_transaction
        conn.execute("SAVEPOINT antifragile_operation" if self.shared else "BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        conn = self.conn
        if self.shared:
            if kind is not None:
                conn.execute("ROLLBACK TO antifragile_operation")
            conn.execute("RELEASE antifragile_operation")
            return
        if kind is None:
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        elif conn.in_transaction:
            conn.execute("ROLLBACK")


@contextlib.contextmanager
def _savepoint(conn: sqlite3.Connection, name: str) -> Iterator[None]:
    """A savepoint: released when the block ends, rolled back (alone) when it raises."""
    conn.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")
        raise
    conn.execute(f"RELEASE {name}")


#: (function, args, kwargs, loop, future, whether it may share a transaction); no loop and no
#: future for the store's own housekeeping, which nobody waits for
_Call = tuple[
    Callable[..., Any],
    tuple[Any, ...],
    dict[str, Any],
    "asyncio.AbstractEventLoop | None",
    "asyncio.Future[Any] | None",
    bool,
]


def _settle(future: asyncio.Future[Any] | None, result: Any, error: BaseException | None) -> None:
    if future is None or future.done():  # its caller was cancelled: the result is dropped
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


#: a future and what to settle it with: a result, or an error
_Settled = tuple[asyncio.Future[Any] | None, Any, BaseException | None]


def _settle_all(answers: list[_Settled]) -> None:
    for future, result, error in answers:
        _settle(future, result, error)


class _unsynced:  # lower case: used like a function, ``with _unsynced(conn, relaxed):``
    """The transaction inside commits without waiting for an ``fsync`` (``synchronous=NORMAL``
    for it alone, in WAL mode: its frames reach the disk with the next durable commit or
    checkpoint, and a crash of the application loses nothing; a power cut can). *relaxed* is
    the store's own setting to go back to (:meth:`_Database.relaxed`; None: keep it
    throughout); inside a transaction already (a shared one), nothing changes."""

    __slots__ = ("conn", "relaxed")

    def __init__(self, conn: sqlite3.Connection, relaxed: str | None) -> None:
        self.conn = conn
        self.relaxed = None if conn.in_transaction else relaxed

    def __enter__(self) -> None:
        if self.relaxed is not None:
            self.conn.execute("PRAGMA synchronous = NORMAL")

    def __exit__(self, *_: object) -> None:
        if self.relaxed is not None:
            self.conn.execute(f"PRAGMA synchronous = {self.relaxed}")


class _Undo(Exception):
    """Rolls an operation of a shared transaction back to its savepoint."""


def parse_url(url: str) -> tuple[str, int, str]:
    """``(path, busy_timeout_ms, synchronous)`` from a ``sqlite:///...`` URL."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise ConfigurationError(f"not a sqlite:// URL: {url!r}")
    if parts.netloc:
        raise ConfigurationError(
            f"a SQLite URL has no host ({parts.netloc!r} in {url!r}): use "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not path:
        raise ConfigurationError(f"no database file in {url!r}: use sqlite:///path/to/file.db")
    busy_timeout, synchronous = DEFAULT_BUSY_TIMEOUT_MS, "full"
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "busy_timeout":
            try:
                busy_timeout = int(value)
            except ValueError:
                busy_timeout = -1
            if busy_timeout < 0:
                raise ConfigurationError(
                    f"busy_timeout must be a whole number of milliseconds >= 0, got {value!r}"
                )
        elif name == "synchronous":
            synchronous = value.lower()
            if synchronous not in _SYNCHRONOUS:
                raise ConfigurationError(
                    f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {value!r}"
                )
        else:
            known = "; ".join(f"{k}: {v}" for k, v in _URL_OPTIONS.items())
            raise ConfigurationError(f"unknown SQLite URL option {name!r}; known: {known}")
    return path, busy_timeout, synchronous


def _set_wal(conn: sqlite3.Connection, timeout: float) -> Any:
    """Switch to WAL, waiting out a concurrent switch or migration in another connection.

    Changing the journal mode needs an exclusive moment and does not honour ``busy_timeout``
    by itself: several processes opening a new file together would otherwise see "database is
    locked" at once.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(delay)  # in the store's own thread, before it serves anything
            delay = min(delay * 2, 0.1)


class _Database:
    """The connection and its thread; runs one function per operation in that thread."""

    def __init__(self, path: str, busy_timeout_ms: int, synchronous: str, clock: Clock) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.synchronous = synchronous
        self.clock = clock
        self.journal_mode: str | None = None
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._opening: asyncio.Lock | None = None
        self._writes = 0
        #: operations waiting for the thread, and whether it is draining them
        self._pending: list[_Call] = []
        self._draining = False
        self._lock = threading.Lock()
        #: operations run in the store's thread until then (time.perf_counter()), see _run_here
        self._here_after = 0.0
        #: the moving average of the durations of operations run in a caller's thread
        self._here_average = 0.0
        #: whether the connection's busy_timeout is busy_timeout_ms (else 0, see _run_here)
        self._busy_timeout_set = True
        #: a second, read-only connection for point reads in the caller's thread (see
        #: read_here), held by whoever holds _reader_lock; None until open, and for a database
        #: that is not in WAL mode or is in memory
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    @property
    def shown_path(self) -> str:
        if self.path == ":memory:":
            return self.path
        return str(Path(self.path).absolute())

    # -- errors -------------------------------------------------------------------------------

    def translate(self, exc: sqlite3.Error) -> StoreError:
        where = f"SQLite database {self.shown_path}"
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return StoreUnavailableError(
                f"{where} stayed locked by another connection for longer than "
                f"busy_timeout={self.busy_timeout_ms} ms ({exc})"
            )
        if code is not None and code & 0xFF == sqlite3.SQLITE_READONLY:
            return StoreUnavailableError(f"{where} is not writable ({exc})")
        if "no such table: antifragile_" in str(exc):
            return StoreError(
                f"{where} lacks the antifragile schema ({exc}): run `antifragile migrate`, or "
                "open the store with migrate=True"
            )
        if isinstance(exc, sqlite3.OperationalError):
            return StoreUnavailableError(f"cannot use {where}: {exc}")
        return StoreError(f"{where} failed: {exc}")

    def relaxed(self) -> str | None:
        """The synchronous setting to go back to after a commit that need not wait for an
        ``fsync`` (see :class:`_unsynced`) when such commits are possible (WAL, and a setting
        that syncs every commit), else None (every commit as the setting says)."""
        synchronous = self.synchronous
        if self.journal_mode == "wal" and synchronous in ("full", "extra"):
            return synchronous.upper()
        return None

    # -- running ------------------------------------------------------------------------------

    async def run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(connection, *args, **kwargs)`` in the store's thread, by itself."""
        return await self._submit(fn, args, kwargs, shared=False, here=False)

    async def run_shared(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run ``fn(connection, *args, **kwargs)`` in the store's thread, sharing a commit.

        Shared operations that arrive while the connection is busy wait together and then run
        in one ``BEGIN IMMEDIATE ... COMMIT`` transaction in the store's thread, each under a
        savepoint of its own (group commit): one ``fsync`` for all of them, an operation that
        fails is rolled back alone, and every caller gets its result only once the shared
        transaction committed. A lone operation runs by itself, as it is. *fn* must be one
        transaction (``_immediate``) that keeps nothing when it raises."""
        return await self._submit(fn, args, kwargs, shared=True, here=False)

    async def run_shared_here(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """As :meth:`run_shared`, except that a lone operation on an idle store runs in the
        caller's own thread (see :meth:`_run_here`): for the writes of callers that await one
        at a time (an enqueue). The inbox's batches keep to the store's thread: a web server's
        event loop goes on accepting requests while their commit is in flight."""
        return await self._submit(fn, args, kwargs, shared=True, here=True)

    async def read_here(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run the read ``fn(connection, *args, **kwargs)`` in the caller's thread, on the
        store's read-only connection: for point reads (a row by its key), which take less
        than the thread hop they save. In WAL mode a reader sees every committed transaction
        and never waits for the writer, so such a read does not queue behind a commit's
        ``fsync`` in the store's thread -- and it reads only what is committed, as a read in
        the store's thread does (which never runs inside a transaction). Without that
        connection (a database in memory or not in WAL mode), while another thread reads on
        it, or when it finds the database busy (``busy_timeout`` 0: the event loop never
        waits for a lock), the read runs in the store's thread (:meth:`run`)."""
        reader = self._reader
        if reader is not None and not self._closed and self._reader_lock.acquire(blocking=False):
            try:
                if self._reader is reader:  # not closed meanwhile
                    return fn(reader, *args, **kwargs)
            except sqlite3.Error as exc:
                code = getattr(exc, "sqlite_errorcode", None)
                if code is None or code & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise self.translate(exc) from exc
            finally:
                self._reader_lock.release()
        return await self._submit(fn, args, kwargs, shared=False, here=False)

    async def _submit(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        shared: bool,
        here: bool,
    ) -> T:
        if self._closed:
            raise StoreUnavailableError(f"the SQLite store for {self.shown_path} is closed")
        conn, executor = self._conn, self._executor
        if conn is None or executor is None:
            raise ConfigurationError(
                f"the SQLite store for {self.shown_path} is not open: await store.open() first, "
                "or create it with open_store()"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        call: _Call = (fn, args, kwargs, loop, future, shared)
        with self._lock:
            self._pending.append(call)
            start, self._draining = not self._draining, True
        if start:
            if here and time.perf_counter() >= self._here_after:
                result: T = await self._run_here(conn, executor, call)
                return result
            self._start(conn, executor)
        return await future

    def _start(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        """Hand the connection, and the operations waiting, to the store's thread (or, once it
        is shut down, fail them)."""
        try:
            executor.submit(self._drain, conn)
        except RuntimeError:  # shut down meanwhile
            with self._lock:
                waiting, self._pending = self._pending, []
                self._draining = False
            for _, _, _, loop, future, _ in waiting:
                if loop is not None:
                    closed = StoreUnavailableError(
                        f"the SQLite store for {self.shown_path} is closed"
                    )
                    with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                        loop.call_soon_threadsafe(_settle, future, None, closed)

    async def _run_here(
        self, conn: sqlite3.Connection, executor: ThreadPoolExecutor, call: _Call
    ) -> Any:
        """Run *call* in the caller's thread: the store was idle when it came, and it holds the
        connection (``_draining``) -- the store's thread is not running, and whoever comes
        meanwhile waits in ``_pending``.

        First the caller lets its event loop run once, so that callers ready at the same
        moment (``asyncio.gather``, a burst of requests) register too: if any did, they all go
        to the store's thread together and share a commit. Alone, it runs *fn* at once, with
        ``busy_timeout`` 0: when another connection holds the write lock, the operation (rolled
        back whole, as every shared operation is) goes to the thread, which waits for the lock
        without blocking the event loop. When these operations take long on average (past
        :data:`HERE_SLOW_AFTER`: a slow disk), the following ones go to the thread for
        :data:`HERE_PAUSE` seconds, and so they do after a lock held by another connection.
        """
        fn, args, kwargs, _, future, _ = call
        assert future is not None
        try:
            await asyncio.sleep(0)
        except BaseException:  # cancelled: the thread runs what waits, this call included
            future.cancel()  # (its result is dropped, as when cancelled in the thread)
            self._start(conn, executor)
            raise
        with self._lock:
            alone = len(self._pending) == 1  # only this call: nobody else came
            if alone:
                self._pending.clear()
        if not alone:
            self._start(conn, executor)
            return await future
        started = time.perf_counter()
        result: Any = None
        error: BaseException | None = None
        try:
            if self._busy_timeout_set:
                conn.execute("PRAGMA busy_timeout = 0")
                self._busy_timeout_set = False
            result = fn(conn, *args, **kwargs)
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            busy = code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if busy and not conn.in_transaction:  # nothing was kept: wait in the thread
                self._here_after = time.perf_counter() + HERE_PAUSE
                with self._lock:
                    self._pending.insert(0, call)
                self._start(conn, executor)
                return await future
            error = self.translate(exc)
            error.__cause__ = exc
        except Exception as exc:
            error = exc
        except BaseException:
            self._release(conn, executor)
            raise
        ended = time.perf_counter()
        average = self._here_average + HERE_WEIGHT * (ended - started - self._here_average)
        if average > HERE_SLOW_AFTER:  # a slow disk: the thread waits for it for a while
            self._here_after, average = ended + HERE_PAUSE, 0.0
        self._here_average = average
        self._release(conn, executor)
        if error is not None:
            raise error
        return result

    def _release(self, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        """After an operation in the caller's thread: the connection is free again, or goes
        to the store's thread for the callers (of other threads) that came meanwhile."""
        with self._lock:
            more = bool(self._pending)
            if not more:
                self._draining = False
        if more:
            self._start(conn, executor)

    def _drain(self, conn: sqlite3.Connection) -> None:
        """In the store's thread: run the waiting operations until none is left.

        The shared operations of what waits run as one group (one commit) at the place of the
        last of them; the others run alone, in the order they came. Everything waiting came
        while none of it was answered (concurrent operations, any order of which is one its
        callers may see), and nothing comes after ``_close``, the last of a store's
        operations; so a read or a claim that came between two shared operations no longer
        splits their commit in two, and operations that came before the group's last member
        are answered before its ``fsync``.
        """
        if not self._busy_timeout_set:  # set to 0 by an operation in a caller's thread
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms:d}")
                self._busy_timeout_set = True
        while True:
            with self._lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._draining = False
                    return
            group = [call for call in batch if call[5]]
            last = group[-1] if group else None
            for call in batch:
                if not call[5]:
                    self._run_alone(conn, call)
                elif call is last:
                    if len(group) > 1:
                        self._run_together(conn, group)
                    else:
                        self._run_alone(conn, call)

    def _run_alone(self, conn: sqlite3.Connection, call: _Call) -> None:
        fn, args, kwargs, loop, future, _ = call
        result, error = self._call(conn, fn, args, kwargs)
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                loop.call_soon_threadsafe(_settle, future, result, error)

    def _call(
        self,
        conn: sqlite3.Connection,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[Any, BaseException | None]:
        try:
            return fn(conn, *args, **kwargs), None
        except sqlite3.Error as exc:
            error = self.translate(exc)
            error.__cause__ = exc
            return None, error
        except Exception as exc:
            return None, exc

    def _run_together(self, conn: sqlite3.Connection, batch: list[_Call]) -> None:
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            with _immediate(conn):
                for fn, args, kwargs, _, _, _ in batch:
                    try:
                        with _savepoint(conn, "antifragile_caller"):
                            outcome = self._call(conn, fn, args, kwargs)
                            if outcome[1] is not None:
                                raise _Undo
                    except _Undo:
                        pass
                    outcomes.append(outcome)
        except sqlite3.Error as exc:  # the shared commit failed: nothing of the batch is kept
            error = self.translate(exc)
            error.__cause__ = exc
            outcomes = [(None, error)] * len(batch)
        # one wake-up of each caller's event loop for all of its callers in the group
        settled: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
        for (_, _, _, loop, future, _), (result, failure) in zip(batch, outcomes, strict=True):
            if loop is not None:
                settled.setdefault(loop, []).append((future, result, failure))
        for loop, answers in settled.items():
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                loop.call_soon_threadsafe(_settle_all, answers)

    def wrote(self, now: float) -> None:
        """Count a write made at the caller's *now*; now and then collect expired rows.

        Collection goes by the callers' time, never the store's clock, and keeps a grace
        period, so it only ever deletes rows that every caller already sees as absent. It
        waits its turn in the store's thread like any operation (nobody waits for it).
        """
        self._writes += 1
        if self._writes % PURGE_EVERY or self._closed:
            return
        conn, executor = self._conn, self._executor
        if conn is None or executor is None:
            return
        with self._lock:
            self._pending.append((_purge_quietly, (now - PURGE_GRACE,), {}, None, None, False))
            start, self._draining = not self._draining, True
        if start:
            self._start(conn, executor)

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self, *, migrate: bool) -> None:
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            await self._open(migrate=migrate)

    async def _open(self, *, migrate: bool) -> None:
        if self._conn is not None:
            return
        if self._closed:
            raise StoreUnavailableError(f"the SQLite store for {self.shown_path} is closed")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="antifragile-sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(executor, self._connect, migrate)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor

    def _connect(self, migrate: bool) -> sqlite3.Connection:
        if self.path != ":memory:":
            folder = Path(self.path).absolute().parent
            if not folder.is_dir():
                raise StoreUnavailableError(
                    f"cannot open SQLite database {self.shown_path}: the directory {folder} "
                    "does not exist"
                )
            if Path(self.path).is_dir():
                raise StoreUnavailableError(
                    f"cannot open SQLite database {self.shown_path}: it is a directory"
                )
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,  # used by one thread at a time, see _run_here
            )
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms:d}")
            row = _set_wal(conn, self.busy_timeout_ms / 1000)
            self.journal_mode = str(row[0]).lower() if row else None
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys = ON")
            if migrate:
                _migrate(conn, self.clock.time())
            else:
                _check_schema(conn)
            if self.path != ":memory:" and self.journal_mode == "wal":
                self._reader = _open_reader(self.path)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self.translate(exc) from exc
            raise
        return conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        conn, executor = self._conn, self._executor
        self._conn = self._executor = None
        if executor is None:
            return
        try:
            if conn is not None:  # after every operation that came before, wherever it runs
                loop = asyncio.get_running_loop()
                future: asyncio.Future[None] = loop.create_future()
                with self._lock:
                    self._pending.append((_close, (), {}, loop, future, False))
                    start, self._draining = not self._draining, True
                if start:
                    self._start(conn, executor)
                await future
        finally:
            executor.shutdown(wait=True)
            with self._reader_lock:  # once a read under way in another thread is done
                reader, self._reader = self._reader, None
            if reader is not None:
                reader.close()


def _open_reader(path: str) -> sqlite3.Connection:
    """The read-only connection of :meth:`_Database.read_here` (for a database in WAL mode)."""
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        reader.execute("PRAGMA busy_timeout = 0")
        reader.execute("PRAGMA query_only = ON")
    except BaseException:
        reader.close()
        raise
    return reader


def _applied_versions(conn: sqlite3.Connection) -> set[int]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MIGRATIONS_TABLE,)
    ).fetchone()
    if exists is None:
        return set()
    return {int(row[0]) for row in conn.execute(f"SELECT version FROM {MIGRATIONS_TABLE}")}


def _migrate(conn: sqlite3.Connection, now: float) -> list[int]:
    """Apply pending migrations, each in its own ``BEGIN IMMEDIATE`` transaction.

    The pending list is read again inside every transaction, so processes starting together
    apply each migration once: the others wait for the write lock, then find nothing to do.
    """
    available = load_migrations(DIALECT)
    applied_now: list[int] = []
    while True:
        with _immediate(conn):
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            pending = plan(_applied_versions(conn), available)
            if not pending:
                return applied_now
            migration = pending[0]
            for statement in split_statements(migration.sql):
                conn.execute(statement)
            conn.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, now),
            )
        applied_now.append(migration.version)


def _check_schema(conn: sqlite3.Connection) -> None:
    """Without migrating: refuse a newer schema, and a file that cannot be written."""
    plan(_applied_versions(conn), load_migrations(DIALECT))
    with _immediate(conn):  # "not writable" now rather than on the first write
        pass


def _schema_version(conn: sqlite3.Connection) -> int:
    return max(_applied_versions(conn), default=0)


def _purge(conn: sqlite3.Connection, now: float) -> int:
    """Delete expired key-value and idempotency rows (invisible already; this frees space)."""
    with _immediate(conn):
        kv = conn.execute(
            "DELETE FROM antifragile_kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
        ).rowcount
        idem = conn.execute(
            "DELETE FROM antifragile_idempotency WHERE expires_at <= ?", (now,)
        ).rowcount
    return kv + idem


def _close(conn: sqlite3.Connection) -> None:
    conn.close()


def _purge_quietly(conn: sqlite3.Connection, now: float) -> None:
    with contextlib.suppress(sqlite3.Error):
        _purge(conn, now)


# -- key-value ---------------------------------------------------------------------------------

_LIVE = "(expires_at IS NULL OR expires_at > :now)"


def _versioned(key: str, row: tuple[Any, ...]) -> Versioned:
    return Versioned(key, decode(row[0]), int(row[1]), row[2])


def _kv_get(conn: sqlite3.Connection, key: str, now: float) -> Versioned | None:
    row = conn.execute(
        f"SELECT value, version, expires_at FROM antifragile_kv WHERE key = :key AND {_LIVE}",
        {"key": key, "now": now},
    ).fetchone()
    return None if row is None else _versioned(key, row)


def _kv_set(
    conn: sqlite3.Connection, key: str, text: str, now: float, expires_at: float | None
) -> int:
    row = conn.execute(
        """
        INSERT INTO antifragile_kv (key, value, version, expires_at)
        VALUES (:key, :value, 1, :expires_at)
        ON CONFLICT (key) DO UPDATE SET
            value = excluded.value,
            version = CASE
                WHEN antifragile_kv.expires_at IS NULL OR antifragile_kv.expires_at > :now
                THEN antifragile_kv.version + 1 ELSE 1 END,
            expires_at = excluded.expires_at
        RETURNING version
        """,
        {"key": key, "value": text, "expires_at": expires_at, "now": now},
    ).fetchone()
    return int(row[0])


def _kv_create(
    conn: sqlite3.Connection, key: str, text: str, now: float, expires_at: float | None
) -> int | None:
    row = conn.execute(
        """
        INSERT INTO antifragile_kv (key, value, version, expires_at)
        VALUES (:key, :value, 1, :expires_at)
        ON CONFLICT (key) DO UPDATE SET
            value = excluded.value, version = 1, expires_at = excluded.expires_at
        WHERE antifragile_kv.expires_at IS NOT NULL AND antifragile_kv.expires_at <= :now
        RETURNING version
        """,
        {"key": key, "value": text, "expires_at": expires_at, "now": now},
    ).fetchone()
    return None if row is None else int(row[0])


def _kv_update_at(
    conn: sqlite3.Connection,
    key: str,
    text: str,
    expected: int,
    now: float,
    expires_at: float | None,
) -> int | None:
    row = conn.execute(
        f"""
        UPDATE antifragile_kv SET value = :value, version = version + 1, expires_at = :expires_at
        WHERE key = :key AND version = :expected AND {_LIVE}
        RETURNING version
        """,
        {"key": key, "value": text, "expected": expected, "expires_at": expires_at, "now": now},
    ).fetchone()
    return None if row is None else int(row[0])


def _kv_merge(
    conn: sqlite3.Connection, key: str, fields: dict[str, JSON], now: float, ttl: float | None
) -> Versioned:
    with _immediate(conn):
        current = _kv_get(conn, key, now)
        if current is None:
            merged = merge_fields(key, fields, exists=False)
            version, expires_at = 1, (None if ttl is None else now + ttl)
        else:
            merged = merge_fields(key, fields, exists=True, current=current.value)
            version = current.version + 1
            expires_at = current.expires_at if ttl is None else now + ttl
        conn.execute(
            """
            INSERT INTO antifragile_kv (key, value, version, expires_at)
            VALUES (:key, :value, :version, :expires_at)
            ON CONFLICT (key) DO UPDATE SET
                value = excluded.value, version = excluded.version,
                expires_at = excluded.expires_at
            """,
            {"key": key, "value": encode(merged), "version": version, "expires_at": expires_at},
        )
    return Versioned(key, merged, version, expires_at)


def _kv_delete(conn: sqlite3.Connection, key: str, expected: int | None, now: float) -> bool:
    sql = f"DELETE FROM antifragile_kv WHERE key = :key AND {_LIVE}"
    if expected is not None:
        sql += " AND version = :expected"
    cursor = conn.execute(sql, {"key": key, "now": now, "expected": expected})
    return cursor.rowcount > 0


def _kv_scan(conn: sqlite3.Connection, prefix: str, now: float, limit: int) -> list[Versioned]:
    end = prefix_end(prefix)
    sql = "SELECT key, value, version, expires_at FROM antifragile_kv WHERE key >= :lo"
    if end is not None:
        sql += " AND key < :hi"
    sql += f" AND {_LIVE} ORDER BY key LIMIT :limit"
    rows = conn.execute(sql, {"lo": prefix, "hi": end, "now": now, "limit": max(0, limit)})
    return [_versioned(row[0], row[1:]) for row in rows]


class SQLiteKeyValueStore:
    """:class:`~antifragile.stores.KeyValueStore` on SQLite."""

    def __init__(self, db: _Database) -> None:
        self._db = db

    async def get(self, key: str, *, now: float) -> Versioned | None:
        return await self._db.read_here(_kv_get, key, now)

    async def set(
        self, key: str, value: JSON, *, now: float, ttl: float | None = None
    ) -> Versioned:
        text = encode(value)
        expires_at = None if ttl is None else now + ttl
        version = await self._db.run(_kv_set, key, text, now, expires_at)
        self._db.wrote(now)
        return Versioned(key, decode(text), version, expires_at)

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
        expires_at = None if ttl is None else now + ttl
        if expected_version is None:
            version = await self._db.run(_kv_create, key, text, now, expires_at)
        else:
            version = await self._db.run(
                _kv_update_at, key, text, expected_version, now, expires_at
            )
        self._db.wrote(now)
        return None if version is None else Versioned(key, decode(text), version, expires_at)

    async def merge(
        self, key: str, fields: dict[str, JSON], *, now: float, ttl: float | None = None
    ) -> Versioned:
        check_fields(fields)
        fields = decode(encode(fields))  # refused before any I/O; stored as JSON reads it back
        merged = await self._db.run(_kv_merge, key, fields, now, ttl)
        self._db.wrote(now)
        return merged

    async def delete(self, key: str, *, expected_version: int | None = None, now: float) -> bool:
        return await self._db.run(_kv_delete, key, expected_version, now)

    async def scan(self, prefix: str, *, now: float, limit: int = 100) -> list[Versioned]:
        return await self._db.run(_kv_scan, prefix, now, limit)


# -- idempotency -------------------------------------------------------------------------------

_IDEM_COLUMNS = "status, owner, fingerprint, result, created_at, expires_at"


def _idem_record(key: str, row: tuple[Any, ...]) -> IdempotencyRecord:
    return IdempotencyRecord(
        key, IdempotencyStatus(row[0]), row[1], row[2], decode(row[3]), row[4], row[5]
    )


def _idem_claim(
    conn: sqlite3.Connection, key: str, owner: str, now: float, ttl: float, fp: str | None
) -> tuple[bool, IdempotencyRecord]:
    with _immediate(conn):
        row = conn.execute(
            f"""
            INSERT INTO antifragile_idempotency (key, {_IDEM_COLUMNS})
            VALUES (:key, 'processing', :owner, :fp, NULL, :now, :expires_at)
            ON CONFLICT (key) DO UPDATE SET
                status = 'processing', owner = excluded.owner,
                fingerprint = excluded.fingerprint, result = NULL,
                created_at = excluded.created_at, expires_at = excluded.expires_at
            WHERE antifragile_idempotency.expires_at <= :now
            RETURNING {_IDEM_COLUMNS}
            """,
            {"key": key, "owner": owner, "fp": fp, "now": now, "expires_at": now + ttl},
        ).fetchone()
        if row is not None:
            return True, _idem_record(key, row)
        row = conn.execute(
            f"SELECT {_IDEM_COLUMNS} FROM antifragile_idempotency WHERE key = ?", (key,)
        ).fetchone()
    return False, _idem_record(key, row)


def _idem_complete(
    conn: sqlite3.Connection,
    key: str,
    owner: str,
    status: str,
    text: str,
    now: float,
    expires_at: float,
) -> bool:
    cursor = conn.execute(
        """
        UPDATE antifragile_idempotency SET status = :status, result = :result,
            expires_at = :expires_at
        WHERE key = :key AND owner = :owner AND status = 'processing' AND expires_at > :now
        """,
        {
            "key": key,
            "owner": owner,
            "status": status,
            "result": text,
            "now": now,
            "expires_at": expires_at,
        },
    )
    return cursor.rowcount > 0


def _idem_get(conn: sqlite3.Connection, key: str, now: float) -> IdempotencyRecord | None:
    row = conn.execute(
        f"SELECT {_IDEM_COLUMNS} FROM antifragile_idempotency WHERE key = ? AND expires_at > ?",
        (key, now),
    ).fetchone()
    return None if row is None else _idem_record(key, row)


def _idem_release(conn: sqlite3.Connection, key: str, owner: str) -> bool:
    cursor = conn.execute(
        "DELETE FROM antifragile_idempotency WHERE key = ? AND owner = ? AND status = 'processing'",
        (key, owner),
    )
    return cursor.rowcount > 0


def _idem_scan(
    conn: sqlite3.Connection, prefix: str, now: float, limit: int
) -> list[IdempotencyRecord]:
    end = prefix_end(prefix)
    sql = f"SELECT key, {_IDEM_COLUMNS} FROM antifragile_idempotency WHERE key >= :lo"
    if end is not None:
        sql += " AND key < :hi"
    sql += " AND expires_at > :now ORDER BY key LIMIT :limit"
    rows = conn.execute(sql, {"lo": prefix, "hi": end, "now": now, "limit": max(0, limit)})
    return [_idem_record(row[0], row[1:]) for row in rows]


def _idem_delete(conn: sqlite3.Connection, key: str) -> bool:
    cursor = conn.execute("DELETE FROM antifragile_idempotency WHERE key = ?", (key,))
    return cursor.rowcount > 0


class SQLiteIdempotencyStore:
    """:class:`~antifragile.stores.IdempotencyStore` on SQLite."""

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
        acquired, record = await self._db.run(_idem_claim, key, owner, now, ttl, fingerprint)
        self._db.wrote(now)
        return Claim(acquired, record, fingerprint)

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
        outcome = check_outcome(status)
        text = encode(result)
        return await self._db.run(_idem_complete, key, owner, outcome.value, text, now, now + ttl)

    async def get(self, key: str, *, now: float) -> IdempotencyRecord | None:
        return await self._db.run(_idem_get, key, now)

    async def release(self, key: str, *, owner: str) -> bool:
        return await self._db.run(_idem_release, key, owner)

    async def scan(self, prefix: str, *, now: float, limit: int = 100) -> list[IdempotencyRecord]:
        return await self._db.run(_idem_scan, prefix, now, limit)

    async def delete(self, key: str) -> bool:
        return await self._db.run(_idem_delete, key)


# -- leases ------------------------------------------------------------------------------------


def _lease_acquire(
    conn: sqlite3.Connection, name: str, owner: str, now: float, expires_at: float
) -> int | None:
    # SET expressions read the row as it was, so the token is decided on the old owner/expiry
    row = conn.execute(
        """
        INSERT INTO antifragile_leases (name, owner, token, expires_at)
        VALUES (:name, :owner, 1, :expires_at)
        ON CONFLICT (name) DO UPDATE SET
            token = CASE
                WHEN antifragile_leases.owner = excluded.owner
                     AND antifragile_leases.expires_at > :now
                THEN antifragile_leases.token ELSE antifragile_leases.token + 1 END,
            owner = excluded.owner,
            expires_at = excluded.expires_at
        WHERE antifragile_leases.owner IS NULL
           OR antifragile_leases.expires_at <= :now
           OR antifragile_leases.owner = excluded.owner
        RETURNING token
        """,
        {"name": name, "owner": owner, "now": now, "expires_at": expires_at},
    ).fetchone()
    return None if row is None else int(row[0])


def _lease_renew(
    conn: sqlite3.Connection, name: str, owner: str, now: float, expires_at: float
) -> int | None:
    row = conn.execute(
        """
        UPDATE antifragile_leases SET expires_at = :expires_at
        WHERE name = :name AND owner = :owner AND expires_at > :now
        RETURNING token
        """,
        {"name": name, "owner": owner, "now": now, "expires_at": expires_at},
    ).fetchone()
    return None if row is None else int(row[0])


def _lease_release(conn: sqlite3.Connection, name: str, owner: str) -> bool:
    cursor = conn.execute(
        "UPDATE antifragile_leases SET owner = NULL WHERE name = ? AND owner = ?", (name, owner)
    )
    return cursor.rowcount > 0


def _lease_holder(conn: sqlite3.Connection, name: str, now: float) -> Lease | None:
    row = conn.execute(
        "SELECT owner, token, expires_at FROM antifragile_leases "
        "WHERE name = ? AND owner IS NOT NULL AND expires_at > ?",
        (name, now),
    ).fetchone()
    return None if row is None else Lease(name, row[0], int(row[1]), row[2])


class SQLiteLeaseStore:
    """:class:`~antifragile.stores.LeaseStore` on SQLite."""

    def __init__(self, db: _Database) -> None:
        self._db = db

    async def acquire(self, name: str, *, owner: str, now: float, ttl: float) -> Lease | None:
        expires_at = now + ttl
        token = await self._db.run(_lease_acquire, name, owner, now, expires_at)
        return None if token is None else Lease(name, owner, token, expires_at)

    async def renew(self, name: str, *, owner: str, now: float, ttl: float) -> Lease | None:
        expires_at = now + ttl
        token = await self._db.run(_lease_renew, name, owner, now, expires_at)
        return None if token is None else Lease(name, owner, token, expires_at)

    async def release(self, name: str, *, owner: str) -> bool:
        return await self._db.run(_lease_release, name, owner)

    async def holder(self, name: str, *, now: float) -> Lease | None:
        return await self._db.run(_lease_holder, name, now)


# -- rate limits -------------------------------------------------------------------------------


def _bucket(conn: sqlite3.Connection, key: str) -> Bucket | None:
    row = conn.execute(
        "SELECT tokens, stamp FROM antifragile_rate_limits WHERE key = ?", (key,)
    ).fetchone()
    return None if row is None else Bucket(row[0], row[1])


def _store_bucket(conn: sqlite3.Connection, key: str, bucket: Bucket) -> None:
    conn.execute(
        """
        INSERT INTO antifragile_rate_limits (key, tokens, stamp) VALUES (?, ?, ?)
        ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, stamp = excluded.stamp
        """,
        (key, bucket.tokens, bucket.stamp),
    )


def _rate_take(
    conn: sqlite3.Connection,
    key: str,
    tokens: float,
    rate: float,
    burst: float,
    max_wait: float,
    now: float,
    relaxed: str | None,
) -> TokenGrant:
    """Take from the bucket *key*; the commit does not wait for an ``fsync`` (*relaxed*, see
    "Rate-limit takes" in :class:`SQLiteRateLimitStore`)."""
    with _unsynced(conn, relaxed), _immediate(conn):
        grant, bucket = take_tokens(
            _bucket(conn, key), tokens=tokens, rate=rate, burst=burst, max_wait=max_wait, now=now
        )
        if bucket is not None:
            _store_bucket(conn, key, bucket)
    return grant


def _rate_pause(
    conn: sqlite3.Connection, key: str, seconds: float, rate: float, burst: float, now: float
) -> None:
    with _immediate(conn):
        bucket = pause_bucket(_bucket(conn, key), seconds=seconds, rate=rate, burst=burst, now=now)
        if bucket is not None:
            _store_bucket(conn, key, bucket)


def _rate_refund(
    conn: sqlite3.Connection, key: str, tokens: float, rate: float, burst: float, now: float
) -> None:
    with _immediate(conn):
        bucket = refund_bucket(_bucket(conn, key), tokens=tokens, rate=rate, burst=burst, now=now)
        if bucket is not None:
            _store_bucket(conn, key, bucket)


class SQLiteRateLimitStore:
    """:class:`~antifragile.stores.RateLimitStore` on SQLite.

    Rate-limit takes: in WAL mode a take commits without waiting for an ``fsync``
    (``synchronous=NORMAL`` for its own transaction, as a job claim does): a crash of the
    application loses nothing, and a power cut can forget the takes of the last moments -- a
    forgotten take can only leave more tokens in a bucket, as on PostgreSQL, where a take
    commits without waiting for the WAL flush. The WAL is written in order, so the next durable
    commit makes every take before it durable too.
    """

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
        take_tokens(None, tokens=tokens, rate=rate, burst=burst, max_wait=max_wait, now=now)
        relaxed = self._db.relaxed()
        return await self._db.run(_rate_take, key, tokens, rate, burst, max_wait, now, relaxed)

    async def refund(
        self, key: str, *, tokens: float, rate: float, burst: float, now: float
    ) -> None:
        check_rate(rate)
        if not tokens > 0:
            return
        await self._db.run(_rate_refund, key, tokens, rate, burst, now)

    async def pause(
        self, key: str, *, seconds: float, rate: float, burst: float, now: float
    ) -> None:
        if pause_bucket(None, seconds=seconds, rate=rate, burst=burst, now=now) is None:
            return
        await self._db.run(_rate_pause, key, seconds, rate, burst, now)


# -- breakers ----------------------------------------------------------------------------------

_BREAKER_COLUMNS = "state, generation, open_until, consecutive_opens, probes_left, writer"


def _breaker_load(conn: sqlite3.Connection, name: str) -> BreakerRecord:
    row = conn.execute(
        f"SELECT {_BREAKER_COLUMNS} FROM antifragile_breakers WHERE name = ?", (name,)
    ).fetchone()
    if row is None:
        return BreakerRecord(name)
    return BreakerRecord(
        name, row[0], int(row[1]), float(row[2]), int(row[3]), int(row[4]), str(row[5])
    )


def _breaker_cas(
    conn: sqlite3.Connection, expected: BreakerRecord, new: BreakerRecord
) -> BreakerRecord:
    with _immediate(conn):
        current = _breaker_load(conn, expected.name)
        if not breaker_matches(current, expected):
            return current
        conn.execute(
            f"""
            INSERT INTO antifragile_breakers (name, {_BREAKER_COLUMNS})
            VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (name) DO UPDATE SET
                state = excluded.state, generation = excluded.generation,
                open_until = excluded.open_until, consecutive_opens = excluded.consecutive_opens,
                probes_left = excluded.probes_left, writer = excluded.writer
            """,
            (
                new.name,
                new.state,
                new.generation,
                new.open_until,
                new.consecutive_opens,
                new.probes_left,
                new.writer,
            ),
        )
    return new


def _window_totals(conn: sqlite3.Connection, name: str, second: int, window: int) -> WindowTotals:
    row = conn.execute(
        """
        SELECT coalesce(sum(calls), 0), coalesce(sum(failures), 0), coalesce(sum(slow), 0)
        FROM antifragile_breaker_windows WHERE name = ? AND second > ? AND second <= ?
        """,
        (name, second - window, second),
    ).fetchone()
    return WindowTotals(int(row[0]), int(row[1]), int(row[2]))


def _breaker_add(
    conn: sqlite3.Connection, name: str, second: int, counts: tuple[int, int, int], window: int
) -> WindowTotals:
    if not any(counts):
        return _window_totals(conn, name, second, window)
    with _immediate(conn):
        conn.execute(
            """
            INSERT INTO antifragile_breaker_windows (name, second, calls, failures, slow)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (name, second) DO UPDATE SET
                calls = calls + excluded.calls, failures = failures + excluded.failures,
                slow = slow + excluded.slow
            """,
            (name, second, *counts),
        )
        conn.execute(
            "DELETE FROM antifragile_breaker_windows WHERE name = ? AND second <= ?",
            (name, second - window),
        )
        return _window_totals(conn, name, second, window)


def _breaker_reset(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM antifragile_breaker_windows WHERE name = ?", (name,))


class SQLiteBreakerStore:
    """:class:`~antifragile.stores.BreakerStore` on SQLite."""

    def __init__(self, db: _Database) -> None:
        self._db = db

    async def load(self, name: str) -> BreakerRecord:
        return await self._db.run(_breaker_load, name)

    async def compare_and_set(self, expected: BreakerRecord, new: BreakerRecord) -> BreakerRecord:
        check_breaker_names(expected, new)
        return await self._db.run(_breaker_cas, expected, new)

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
        counts = (int(calls), int(failures), int(slow))
        return await self._db.run(_breaker_add, name, int(second), counts, int(window))

    async def reset_window(self, name: str) -> None:
        await self._db.run(_breaker_reset, name)

    async def add_probe_result(
        self, name: str, *, generation: int, failure: bool, slow: bool
    ) -> WindowTotals:
        # a round's results are a bucket of their own row set: the record's name plus a
        # character no breaker name has, one "second" per generation (earlier ones dropped)
        counts = (1, int(bool(failure)), int(bool(slow)))
        return await self._db.run(_breaker_add, probe_key(name), int(generation), counts, 1)


# -- the store ---------------------------------------------------------------------------------


class SQLiteStore:
    """The SQLite backend; see the module docs.

    ``migrate=False`` makes :meth:`open` leave the schema alone -- it still refuses a newer one --
    for deployments that migrate as a separate step (``antifragile migrate``, which opens the
    store this way and calls :meth:`migrate`).
    """

    def __init__(
        self, url: str, *, clock: Clock = SYSTEM_CLOCK, migrate: bool = True, **options: Any
    ) -> None:
        if options:
            raise ConfigurationError(
                f"unknown SQLite store options: {', '.join(sorted(options))} "
                f"(URL options: {', '.join(_URL_OPTIONS)}; keyword options: migrate)"
            )
        path, busy_timeout, synchronous = parse_url(url)
        self.url = url
        self._migrate_on_open = migrate
        self._db = _Database(path, busy_timeout, synchronous, clock)
        self.kv = SQLiteKeyValueStore(self._db)
        self.idempotency = SQLiteIdempotencyStore(self._db)
        self.leases = SQLiteLeaseStore(self._db)
        self.rate_limits = SQLiteRateLimitStore(self._db)
        self.breakers = SQLiteBreakerStore(self._db)

    @property
    def path(self) -> str:
        """The database file, as given in the URL."""
        return self._db.path

    @property
    def busy_timeout(self) -> float:
        """Seconds an operation waits for another connection's write lock."""
        return self._db.busy_timeout_ms / 1000

    @property
    def synchronous(self) -> str:
        return self._db.synchronous

    @property
    def journal_mode(self) -> str | None:
        """``wal`` once open (``memory`` for ``:memory:``); ``None`` before."""
        return self._db.journal_mode

    async def open(self) -> None:
        """Connect, set the pragmas and migrate (or check) the schema.

        Raises :class:`~antifragile.StoreUnavailableError` when the file cannot be opened or
        written, :class:`~antifragile.SchemaVersionError` when a newer antifragile migrated it.
        """
        await self._db.open(migrate=self._migrate_on_open)

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> float:
        started = time.perf_counter()
        await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone())
        return time.perf_counter() - started

    async def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; the versions applied (oldest first)."""
        return await self._db.run(_migrate, self._db.clock.time())

    async def schema_version(self) -> int:
        """The newest migration applied to the database (0 for an empty one)."""
        return await self._db.run(_schema_version)

    async def purge_expired(self, *, now: float) -> int:
        """Delete the key-value and idempotency rows expired at *now*; how many.

        Expired rows are invisible already; this only frees space. The store also does it by
        itself every ``PURGE_EVERY`` writes, with a grace of ``PURGE_GRACE`` seconds."""
        return await self._db.run(_purge, now)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"
