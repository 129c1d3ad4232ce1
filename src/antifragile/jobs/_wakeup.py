"""Waking idle workers when jobs arrive, instead of leaving them to their next poll.

A queue that can wake its workers has two more methods, which :class:`~antifragile.jobs.Worker`
uses when they are there (polling stays as the fallback, so a lost wake-up costs at most one
poll interval):

* ``wakeups(wake)`` -- an async context manager: while it is entered, ``wake()`` is called
  (on the worker's event loop) soon after jobs were committed to the queue by anyone. A worker
  that serves some queues only passes them too (``wakeups(wake, queues=[...])``), and a queue
  that can tell jobs of other queues apart does not wake it for those (PostgreSQL; SQLite in
  the enqueuer's own process).
* ``next_due(now=...)`` -- the earliest ``run_at`` after *now* of a job waiting to run (or
  ``None``): an idle worker sleeps until then, capped by its poll interval, so a delayed or
  retried job starts when it falls due rather than on the next poll.

How the news travels depends on the backend:

* **In one process** (:class:`LocalWakers`): the enqueuer calls every worker listening to the
  same database directly (``call_soon_threadsafe`` on the worker's loop) -- on SQLite, those
  that serve a queue of the jobs (a worker of inbound messages is not woken by their
  replies). ``antifragile serve`` runs its API and its worker in one process, so a webhook's
  job starts at once.
* **Across processes on SQLite** (:class:`WakeSockets`): each listening worker binds a unix
  datagram socket in a directory beside the database (``<database>-wake/``, or a directory in
  the temporary directory named after the database's path when that one is too long for a
  socket address). After its commit an enqueuer sends one byte to each socket there (the
  listing is cached and read again when the directory changes; the enqueuer looks at the
  directory at most every 20 ms (``_RESTAT_AFTER``), so a worker that started listening a
  moment ago may miss one wake-up and find its job on its next poll). A datagram costs a few
  microseconds, reaches the worker's event loop at once, and needs no busy loop; a socket
  whose worker died is refused by the kernel and removed. ``PRAGMA data_version`` was the
  other candidate: it needs no file, but only tells a connection that *someone* wrote when it
  asks -- the worker would have to ask every few milliseconds, and every completion and
  heartbeat would look like news.
* **PostgreSQL**: workers ``LISTEN`` on a channel named after the store's schema and the
  enqueueing statement calls ``pg_notify`` inside its own transaction (delivered when it
  commits, one notification per transaction and queue of its jobs, the queue's name the
  payload: a worker of other queues is not woken); see :mod:`antifragile.jobs._postgres`.

Jobs written through the transactional outbox on SQLite (``enqueue(..., connection=...)``)
commit with the caller's transaction, whose commit the queue does not make: Python's
:mod:`sqlite3` has no commit hook. The queue watches the caller's connection instead
(:func:`after_transaction`): a timer on the event loop looks at its ``in_transaction`` -- an
attribute read, no statement, no lock -- soon after the enqueue, then less and less often, and
wakes the workers once the transaction is over (committed; a rollback wakes them for nothing).
A short transaction is seen to end within a millisecond or so; a long one within
:data:`OUTBOX_WATCH_LONGEST` of its end. After :data:`OUTBOX_WATCH_FOR` the watch gives up and
polling finds the jobs. A caller that commits and at once opens its next transaction before
the watch looks again hides that commit until the next one ends (or the next poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Iterator

_log = logging.getLogger("antifragile.jobs.wakeup")

Wake = Callable[[], None]

#: the longest path a unix socket address holds on Linux (108 bytes with the terminating NUL)
_MAX_SOCKET_PATH = 107
#: an enqueuer reads the socket directory again at least this often (seconds), whatever its
#: modification time says (which may be coarser than the time between two changes)
_RELIST_AFTER = 1.0
#: an enqueuer looks at the directory's modification time at most this often (seconds): a
#: worker that started listening less than this ago may miss a wake-up, and finds the job on
#: its next poll (or claim) instead
_RESTAT_AFTER = 0.02
#: the first look at an outbox caller's transaction comes this soon after the enqueue
#: (seconds); each later look waits twice as long, up to OUTBOX_WATCH_LONGEST
OUTBOX_WATCH_FIRST = 0.0005
OUTBOX_WATCH_LONGEST = 0.05
#: how long an outbox enqueue's transaction is watched at most (seconds): polling is the
#: fallback for a transaction held open longer
OUTBOX_WATCH_FOR = 60.0


def _wake_on(loop: asyncio.AbstractEventLoop, wake: Wake) -> Wake:
    """*wake*, callable from any thread: run on *loop*."""

    def call() -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake()
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(wake)

    return call


def after_transaction(in_transaction: Callable[[], bool], wake: Wake) -> None:
    """Call *wake* on this event loop once *in_transaction()* is false (or raises, e.g. for a
    closed connection), looking on timers that back off; give up after OUTBOX_WATCH_FOR.

    No task is made, only timer callbacks: nothing is left to cancel when the loop closes."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + OUTBOX_WATCH_FOR

    def look(delay: float) -> None:
        try:
            open_ = in_transaction()
        except Exception:  # closed, or unusable: its transaction is over either way
            open_ = False
        if not open_:
            wake()
        elif loop.time() < give_up:
            loop.call_later(delay, look, min(delay * 2, OUTBOX_WATCH_LONGEST))

    loop.call_later(OUTBOX_WATCH_FIRST, look, OUTBOX_WATCH_FIRST * 2)


class LocalWakers:
    """The workers of this process listening to one queue, by the queue's identity, each with
    the names of the queues (``queue`` of a job) it serves, or None for all of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wakers: dict[str, dict[int, tuple[Wake, frozenset[str] | None]]] = {}

    def notify(self, key: str, queues: Collection[str] | None = None) -> None:
        """Wake every worker of this process listening to *key* that serves one of *queues*
        (the queues of the jobs just committed; None: not known, every worker)."""
        wakers = self._wakers.get(key)
        if not wakers:
            return
        for wake, served in list(wakers.values()):
            if served is None or queues is None or not served.isdisjoint(queues):
                wake()

    @contextlib.contextmanager
    def listening(
        self, key: str, wake: Wake, queues: Collection[str] | None = None
    ) -> Iterator[None]:
        """Call *wake* (on the current event loop) whenever :meth:`notify` names *key* (and
        one of *queues*, when given)."""
        token = id(wake)
        call = _wake_on(asyncio.get_running_loop(), wake)
        served = None if queues is None else frozenset(queues)
        with self._lock:
            self._wakers.setdefault(key, {})[token] = (call, served)
        try:
            yield
        finally:
            with self._lock:
                wakers = self._wakers.get(key, {})
                wakers.pop(token, None)
                if not wakers:
                    self._wakers.pop(key, None)


#: the one registry of this process (a worker and an enqueuer on one database meet here)
LOCAL = LocalWakers()


def sqlite_key(path: str) -> str:
    """The identity of a SQLite database file, the same for every spelling of its path."""
    if path == ":memory:" or not path:
        return f"memory:{id(path)}"
    return os.path.realpath(path)


def socket_directory(path: str) -> str | None:
    """Where the wake sockets of the database at *path* live (``None``: an in-memory one)."""
    if path == ":memory:" or not path:
        return None
    real = os.path.realpath(path)
    beside = f"{real}-wake"
    if len(os.fsencode(beside)) + 1 + 32 <= _MAX_SOCKET_PATH:
        return beside
    digest = hashlib.sha256(os.fsencode(real)).hexdigest()[:24]
    return os.path.join(tempfile.gettempdir(), f"antifragile-wake-{digest}")


class WakeSockets:
    """Wake-ups across processes through unix datagram sockets in one directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._own: set[str] = set()  # this process's sockets: woken through LocalWakers
        self._listing: list[str] = []
        self._listed: tuple[int, float] | None = None  # (directory mtime, when listed)
        self._looked = -_RESTAT_AFTER  # when the directory was last looked at (monotonic)

    def _targets(self) -> list[str]:
        now = time.monotonic()
        if now - self._looked < _RESTAT_AFTER:
            return self._listing
        self._looked = now
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            self._listing, self._listed = [], None
            return []
        listed = self._listed
        if listed is None or listed[0] != mtime or now - listed[1] > _RELIST_AFTER:
            try:
                names = os.listdir(self.directory)
            except OSError:
                return []
            self._listing = [
                os.path.join(self.directory, n)
                for n in names
                if n.endswith(".sock") and n not in self._own
            ]
            self._listed = (mtime, now)
        return self._listing

    def poke(self) -> None:
        """Wake the listeners of other processes (best effort, never raises)."""
        targets = self._targets()
        if not targets:
            return
        stale = False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for target in targets:
                try:
                    sender.sendto(b"!", target)
                except (BlockingIOError, InterruptedError):
                    pass  # its buffer is full: it has wake-ups waiting already
                except (ConnectionRefusedError, FileNotFoundError):
                    stale = True  # its worker is gone
                    with contextlib.suppress(OSError):
                        os.unlink(target)
                except OSError:
                    stale = True
        if stale:
            self._listed, self._looked = None, -_RESTAT_AFTER

    @contextlib.asynccontextmanager
    async def listening(self, wake: Wake) -> AsyncIterator[None]:
        """Call *wake* on this loop whenever another process pokes the directory."""
        loop = asyncio.get_running_loop()
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}.sock"
        address = os.path.join(self.directory, name)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            os.makedirs(self.directory, mode=0o770, exist_ok=True)
            sock.bind(address)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            _log.warning("cannot listen for wake-ups at %s (%s): polling only", address, exc)
            yield
            return

        def readable() -> None:
            with contextlib.suppress(OSError):
                while sock.recv(64):
                    pass
            wake()

        self._own.add(name)
        loop.add_reader(sock.fileno(), readable)
        try:
            yield
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()
            self._own.discard(name)
            with contextlib.suppress(OSError):
                os.unlink(address)


class SQLiteWakeups:
    """The wake-ups of one SQLite database: in this process, then through its sockets."""

    def __init__(self, path: str) -> None:
        self.key = sqlite_key(path)
        directory = socket_directory(path)
        self.sockets = None if directory is None else WakeSockets(directory)

    def notify(self, queues: Collection[str] | None = None) -> None:
        """Wake the workers of this process that serve one of *queues* (None: every one), and
        every listening worker of the other processes."""
        LOCAL.notify(self.key, queues)
        if self.sockets is not None:
            self.sockets.poke()

    @contextlib.asynccontextmanager
    async def listening(
        self, wake: Wake, queues: Collection[str] | None = None
    ) -> AsyncIterator[None]:
        with LOCAL.listening(self.key, wake, queues):
            if self.sockets is None:
                yield
            else:
                async with self.sockets.listening(wake):
                    yield
