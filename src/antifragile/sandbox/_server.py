"""FlakyServer: a real local HTTP/1.1 server whose answers are scripted per request.

It runs an asyncio event loop in a background thread, speaks HTTP/1.1 through ``h11`` with
keep-alive (clients such as httpx reuse connections) and serves every connection in its own task,
so a request that hangs never blocks the others. Each request is recorded, then answered by the
first of:

1. the next fault queued for its path (``script``; each fault is used once, first in first out);
2. the :class:`~antifragile.sandbox.Phase` of the timeline covering the time since the start
   (a fault, a :class:`~antifragile.sandbox.Chaos` draw or a
   :class:`~antifragile.sandbox.Quota`);
3. the ``chaos`` mix, when given and it draws a fault;
4. the ``default`` fault (a plain ``200``).

A ``handler`` (a function of the :class:`IncomingRequest`) answers before all of these when
it returns a :class:`~antifragile.sandbox.Fault`; returning ``None`` falls through to the list
above. The provider simulators of :class:`~antifragile.sandbox.ProviderSandbox` are served this
way, so they share this server's connection handling, resets and hangs.

::

    server = FlakyServer(
        script={"/orders": [Fault.status(503), Fault.status(503), Fault.ok()]},
        default=Fault.ok(json={"ok": True}),
    )
    with server:
        httpx.get(server.url + "/orders")
        assert server.count("/orders") == 1
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import json as _json
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import h11

from antifragile.errors import ConfigurationError
from antifragile.sandbox._faults import Chaos, Fault, Phase, Quota, reason_phrase, seconds_text

_READ_SIZE = 65536
_log = logging.getLogger("antifragile.sandbox")
_SERVER_HEADER = ("server", "antifragile-sandbox")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the server received, and what it did with it.

    ``headers`` has lower-case names (repeated headers joined with ``", "``); ``query`` is the
    raw query string without ``?``; ``at`` is wall-clock epoch seconds; ``fault`` is the kind of
    the fault that answered (``"ok"``, ``"status"``, ``"rate_limited"``, ``"slow"``, ``"reset"``,
    ``"hang"``, ``"malformed"``); ``status`` the status it answers with (``None`` when it sends
    no response); ``phase`` the name of the timeline phase in force, if any; ``connection``
    numbers the TCP connections in the order they were accepted (requests on a kept-alive
    connection share it).
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float
    fault: str
    status: int | None = None
    phase: str | None = None
    connection: int = 0

    def json(self) -> Any:
        """The body, decoded as JSON."""
        return _json.loads(self.body)


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """A request as a ``handler`` sees it: lower-case header names, raw query, whole body."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body, decoded as JSON."""
        return _json.loads(self.body)


#: answers a request with a fault (any answer or non-answer), or ``None`` to fall through
RequestHandler = Callable[[IncomingRequest], Fault | None]


def _retry_after_value(seconds: float, http_date: bool) -> str:
    if http_date:
        return email.utils.formatdate(math.ceil(time.time() + seconds), usegmt=True)
    return seconds_text(seconds)


class LoopThread:
    """A server that runs its own event loop in a background thread: :meth:`start` returns once
    :meth:`_main` has bound its port (or re-raises why it could not), :meth:`stop` sets
    ``_stopping`` and joins the thread; :meth:`_main` closes every connection before it
    returns, so nothing outlives the loop. Usable as a sync or async context manager."""

    #: the background thread's name
    thread_name = "server"

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    def _start_again(self) -> Self:
        """What :meth:`start` does when the server runs already (nothing, by default)."""
        return self

    def start(self) -> Self:
        """Start serving in a background thread; returns once the port is bound."""
        if self._thread is not None:
            return self._start_again()
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(10.0):  # pragma: no cover - the thread failed to come up
            raise RuntimeError(f"{type(self).__name__} did not start within 10 s")
        error, self._startup_error = self._startup_error, None
        if error is not None:
            self._thread.join()
            self._thread = None
            raise error
        return self

    def stop(self) -> None:
        """Stop serving: close every connection (hanging ones included) and join the thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        thread.join(10.0)
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # pragma: no cover - reported to start() when it can be
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _main(self) -> None:
        """Bind, set ``_ready`` (or ``_startup_error`` then ``_ready``), serve until
        ``_stopping`` is set, then close every connection."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    @property
    def running(self) -> bool:
        return self._thread is not None


class FlakyServer(LoopThread):
    """A local HTTP server on ``127.0.0.1`` (ephemeral port) that fails on cue.

    Start and stop it with ``with``, ``async with`` or :meth:`start` / :meth:`stop`. Everything
    here is thread-safe: tests and the server thread share the script and the records.
    """

    def __init__(
        self,
        script: Mapping[str, Iterable[Fault]] | None = None,
        *,
        default: Fault | None = None,
        chaos: Chaos | None = None,
        phases: Iterable[Phase] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        handler: RequestHandler | None = None,
    ) -> None:
        self.handler = handler
        self.default = default or Fault.ok()
        self.chaos = chaos
        self.phases: tuple[Phase, ...] = tuple(phases)
        self.host = host
        self._port = port
        self._lock = threading.Lock()
        self._queues: dict[str, collections.deque[Fault]] = {}
        self._records: list[RecordedRequest] = []
        self._origin = time.monotonic()
        super().__init__()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._connections = 0
        for path, faults in (script or {}).items():
            self.script(path, faults)

    # -- lifecycle ------------------------------------------------------------------------------

    thread_name = "flaky-server"

    def _start_again(self) -> Self:
        raise ConfigurationError("this FlakyServer is already running")

    @property
    def port(self) -> int:
        if self._thread is None:
            raise ConfigurationError("the FlakyServer is not running")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (without a trailing slash)."""
        return f"http://{self.host}:{self.port}"

    # -- scripting and inspection ---------------------------------------------------------------

    def script(self, path: str, faults: Iterable[Fault]) -> None:
        """Replace the queue of faults for *path* (the path only, without the query string)."""
        queue = collections.deque(faults)
        with self._lock:
            self._queues[path] = queue

    def reset(self) -> None:
        """Forget the records and every script; start the timeline, chaos and quotas over."""
        with self._lock:
            self._records.clear()
            self._queues.clear()
            self._origin = time.monotonic()
        for source in self._stateful():
            source.restart()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received so far, oldest first."""
        with self._lock:
            return list(self._records)

    def count(self, path: str | None = None, method: str | None = None) -> int:
        """How many requests were received (for *path* and/or *method* when given)."""
        wanted = None if method is None else method.upper()
        with self._lock:
            return sum(
                1
                for r in self._records
                if (path is None or r.path == path) and (wanted is None or r.method == wanted)
            )

    @property
    def elapsed(self) -> float:
        """Seconds since the timeline started (at :meth:`start`, or the last :meth:`reset`)."""
        return time.monotonic() - self._origin

    @property
    def current_phase(self) -> Phase | None:
        """The timeline phase in force now, if any."""
        return self._phase_at(self.elapsed)

    def _phase_at(self, elapsed: float) -> Phase | None:
        for phase in self.phases:
            if phase.covers(elapsed):
                return phase
        return None

    def _stateful(self) -> list[Chaos | Quota]:
        found = [p.behaviour for p in self.phases if isinstance(p.behaviour, Chaos | Quota)]
        return found if self.chaos is None else [self.chaos, *found]

    def _choose(self, path: str) -> tuple[Fault, str | None]:
        with self._lock:
            queue = self._queues.get(path)
            if queue:
                return queue.popleft(), None
            elapsed = time.monotonic() - self._origin
        phase = self._phase_at(elapsed)
        if phase is not None:
            return phase.pick(self.default), phase.name
        if self.chaos is not None:
            fault = self.chaos.pick()
            if fault is not None:
                return fault, None
        return self.default, None

    # -- the server thread ----------------------------------------------------------------------

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            # a plain callback: asyncio calls it as the connection is made, so every connection
            # is known (and closed at stop) from the moment it exists
            server = await asyncio.start_server(self._accept, self.host, self._port)
        except OSError as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._port = server.sockets[0].getsockname()[1]
        with self._lock:
            self._origin = time.monotonic()
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await close_server(server, self._close_connections)

    def _close_connections(self) -> list[Awaitable[object]]:
        """Abort every open connection and cancel its task; what to await for them."""
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        return [_closed(writer, self._writers) for writer in writers]

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A new connection: serve it in a task of its own -- or, once stopping, drop it."""
        self._writers.add(writer)
        if self._stopping is None or self._stopping.is_set():
            writer.transport.abort()
            return
        self._connections += 1
        task = asyncio.get_running_loop().create_task(
            self._connection(reader, writer, self._connections)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        try:
            await self._serve(h11.Connection(h11.SERVER), reader, writer, number)
        except (ConnectionError, OSError, h11.LocalProtocolError):
            pass  # the client went away, or the connection is unusable: just close it
        except Exception:  # a bug here must not end the server; say what it was
            _log.exception("FlakyServer connection %d failed", number)
        finally:
            try:
                if not writer.is_closing():
                    writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            finally:
                # also when stop cancels this task while it waits for the close (which cancels
                # the connection's close future): stop has aborted the connection already
                self._writers.discard(writer)

    async def _serve(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        number: int,
    ) -> None:
        """Serve requests on one connection until either side closes it."""
        while True:
            try:
                request, body = await self._read_request(conn, reader)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    error = Fault.status(exc.error_status_hint)
                    await self._respond(conn, writer, error, "GET", None)
                return
            if request is None:
                return
            target = request.target.decode("latin-1")
            path, _, query = target.partition("?")
            headers: dict[str, str] = {}
            for name, value in request.headers:
                key, text = name.decode("latin-1").lower(), value.decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
            method = request.method.decode("latin-1").upper()
            handled = None
            if self.handler is not None:
                try:
                    handled = self.handler(IncomingRequest(method, path, query, headers, body))
                except Exception:  # a broken handler answers 500 instead of killing the task
                    _log.exception("FlakyServer handler failed on %s %s", method, path)
                    handled = Fault.status(500)
            fault, phase = (handled, None) if handled is not None else self._choose(path)
            final = fault.final
            record = RecordedRequest(
                method=method,
                path=path,
                query=query,
                headers=headers,
                body=body,
                at=time.time(),
                fault=fault.kind,
                status=final.code if fault.answers else None,
                phase=phase,
                connection=number,
            )
            with self._lock:
                self._records.append(record)
            step = fault
            while step.kind == "slow":
                await asyncio.sleep(step.seconds)
                step = step.then or Fault.ok()
            if final.kind == "reset":
                _reset(writer)
                return
            if final.kind == "hang":
                while await reader.read(_READ_SIZE):  # until the client gives up
                    pass
                return
            await self._respond(conn, writer, final, method, headers.get("x-request-id"))
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # one side asked to close the connection
            conn.start_next_cycle()

    @staticmethod
    async def _read_request(
        conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request | None, bytes]:
        """The next request and its body; ``(None, b"")`` when the client closed instead."""
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ_SIZE))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            else:  # ConnectionClosed (or PAUSED, which cannot happen between cycles)
                return None, b""

    @staticmethod
    async def _respond(
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        fault: Fault,
        method: str,
        request_id: str | None,
    ) -> None:
        status = fault.code or 200
        body = fault.body if status not in (204, 304) else b""
        headers = [_SERVER_HEADER, *fault.headers]
        if status not in (204, 304):
            headers.append(("content-length", str(len(body))))
        if request_id is not None:
            headers.append(("x-request-id", request_id))
        if fault.kind == "rate_limited" and fault.retry_after is not None:
            headers.append(("retry-after", _retry_after_value(fault.retry_after, fault.http_date)))
        out = [
            conn.send(
                h11.Response(status_code=status, headers=headers, reason=reason_phrase(status))
            )
        ]
        if body and method != "HEAD":
            out.append(conn.send(h11.Data(data=body)))
        out.append(conn.send(h11.EndOfMessage()))
        writer.write(b"".join(data for data in out if data))
        await writer.drain()


async def close_server(
    server: asyncio.Server, close: Callable[[], Iterable[Awaitable[object]]]
) -> None:
    """Stop *server*, in a loop that serves it alone, leaving nothing open or pending.

    It first stops accepting (the listening sockets stay open for now) and lets the
    connections accepted so far be set up: closing the server while asyncio still sets one up
    would leave that one's socket open for good (Python 3.11). Then :func:`drain_loop` closes
    them all with *close*, and the server is closed."""
    loop = asyncio.get_running_loop()
    for sock in server.sockets:
        with contextlib.suppress(NotImplementedError, ValueError, OSError):
            loop.remove_reader(sock.fileno())
    await drain_loop(close)
    server.close()
    await server.wait_closed()
    await drain_loop(close)


async def drain_loop(close: Callable[[], Iterable[Awaitable[object]]]) -> None:
    """End the connections of a server that accepts no more, in a loop that serves it alone:
    *close* closes every connection still open and returns what to await for them; that and
    every other task of the loop are awaited, round after round, until the loop holds nothing
    but the caller. The tasks asyncio runs to set up connections accepted just before are awaited
    too (never cancelled: a cancelled one would leave its socket open), and the connections
    they make are closed in the next round."""
    me = asyncio.current_task()
    while True:
        waits = list(close())
        others = [task for task in asyncio.all_tasks() if task is not me]
        if not waits and not others:
            return
        await asyncio.gather(*waits, *others, return_exceptions=True)


async def _closed(writer: asyncio.StreamWriter, writers: set[asyncio.StreamWriter]) -> None:
    """Wait for an aborted connection to be closed, then forget it -- also when its close
    future was cancelled (a task cancelled while waiting for the close): that wait raises
    CancelledError at once, and a writer left in *writers* would be waited for forever."""
    try:
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    finally:
        writers.discard(writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection so that the peer sees a reset rather than an orderly close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
