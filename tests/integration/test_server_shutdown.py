"""Stopping a server closes every connection it accepted and ends every task it started before
its event loop closes -- whatever the connections were doing, and however close to the stop
they arrived.

Each test starts a server, opens many raw TCP connections at once (idle ones, ones stopped
halfway through a request, ones waiting for an answer that never comes) while another thread
keeps connecting through the stop, stops the server, and does it again. Then the garbage is
collected: an unclosed transport or socket would be a ``ResourceWarning``, a task left pending
an asyncio "Task was destroyed but it is pending!" error, an exception nobody retrieved an
asyncio error too. None may appear.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import threading
import warnings
from collections.abc import Callable, Iterator

from antifragile.sandbox import Fault, FlakyServer, SMTPSandbox
from antifragile.sandbox._server import _closed
from tests.integration.test_shared_state import Proxy

ROUNDS = 20
AT_ONCE = 24  # connections opened before the stop
RACING = 150  # at most, opened by a thread while the server stops

HTTP = (
    b"",  # connected, said nothing
    b"GET /hang HTTP/1.1\r\nhost: x\r\n",  # headers not finished
    b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n",  # a request that is never answered
    b"POST /x HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nabc",  # body not finished
    b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n",  # answered late
    b"GET /x HTTP/1.1\r\nhost: x\r\n\r\nGET /x HTTP/1.1\r\n",  # one answered, one halfway
)
SMTP = (
    b"",
    b"EHLO client\r\n",
    b"EHLO client\r\nMAIL FROM:<shop@example.com>\r\n",
    b"EHLO client\r\nMAIL FROM:<shop@example.com>\r\nRCPT TO:<owner@example.com>\r\nDATA\r\n"
    b"Subject: half a message\r\n\r\nstill being writ",
    b"EHLO client\r\nMAIL FROM:<shop@example.com>\r\nRCPT TO:<owner@example.com>\r\nDATA\r\n"
    b"Subject: whole\r\n\r\ndone\r\n.\r\n",
)


class Leaks:
    """What the garbage collector and asyncio report while the block runs: resource warnings
    and asyncio's errors (pending tasks destroyed, exceptions never retrieved)."""

    def __init__(self) -> None:
        self.warnings: list[warnings.WarningMessage] = []
        self.errors: list[logging.LogRecord] = []

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        handler = _Collect(self.errors)
        asyncio_log = logging.getLogger("asyncio")
        asyncio_log.addHandler(handler)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield
                gc.collect()
            self.warnings = [w for w in caught if issubclass(w.category, ResourceWarning)]
        finally:
            asyncio_log.removeHandler(handler)

    def report(self) -> list[str]:
        return [str(w.message) for w in self.warnings] + [r.getMessage() for r in self.errors]


class _Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


def _open(port: int, data: bytes) -> socket.socket:
    # generous: a busy machine may be slow to complete a connection the server will accept
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if data:
        with contextlib.suppress(OSError):
            sock.sendall(data)
    return sock


def _connect_through_the_stop(
    port: int, payloads: tuple[bytes, ...], opened: list[socket.socket], started: threading.Event
) -> None:
    """Keep connecting (each connection saying a little) until the port refuses."""
    for number in range(RACING):
        try:
            opened.append(_open(port, payloads[number % len(payloads)]))
        except OSError:
            return  # the server stopped listening
        finally:
            started.set()


def _round(start: Callable[[], int], stop: Callable[[], None], payloads: tuple[bytes, ...]) -> int:
    """One start / connect / stop; how many connections were made."""
    opened: list[socket.socket] = []
    raced: list[socket.socket] = []
    started = threading.Event()
    try:
        port = start()
        for number in range(AT_ONCE):
            opened.append(_open(port, payloads[number % len(payloads)]))
        racer = threading.Thread(
            target=_connect_through_the_stop, args=(port, payloads, raced, started)
        )
        racer.start()
        started.wait()
        stop()
        racer.join()
    finally:
        for sock in opened + raced:
            sock.close()
    return len(opened) + len(raced)


def test_the_flaky_server_stops_clean_under_connections() -> None:
    """FlakyServer, stopped in the middle of many connections (idle, half-sent, waiting for a
    hanging or slow answer) and of new ones arriving: no unclosed transport or socket, no
    pending task destroyed, no unretrieved exception -- round after round."""
    leaks = Leaks()
    made = 0
    with leaks.watching():
        for _ in range(ROUNDS):
            server = FlakyServer(
                script={"/hang": Fault.repeat(Fault.hang(), 10**6)},
                default=Fault.ok(),
            )
            server.script("/slow", Fault.repeat(Fault.slow(30.0), 10**6))

            def start(server: FlakyServer = server) -> int:
                return server.start().port

            made += _round(start, server.stop, HTTP)
            assert not server.running
    assert made >= ROUNDS * AT_ONCE
    assert leaks.report() == []


def test_the_smtp_sandbox_stops_clean_under_connections() -> None:
    """SMTPSandbox, stopped in the middle of many SMTP sessions (idle, mid-envelope,
    mid-message) and of new ones arriving: nothing left open or pending, round after round."""
    leaks = Leaks()
    made = 0
    with leaks.watching():
        for _ in range(ROUNDS):
            smtp = SMTPSandbox()

            def start(smtp: SMTPSandbox = smtp) -> int:
                return smtp.start().port

            made += _round(start, smtp.stop, SMTP)
            assert not smtp.running
    assert made >= ROUNDS * AT_ONCE
    assert leaks.report() == []


def test_the_test_proxy_stops_clean_under_connections() -> None:
    """The TCP proxy the Redis outage tests cut, in front of a server that never answers:
    stopped and started again on the same port amid many connections (each also connected
    upstream), it leaves nothing open or pending."""
    leaks = Leaks()
    made = 0
    with leaks.watching(), FlakyServer(default=Fault.hang()) as upstream:
        proxy = Proxy("127.0.0.1", upstream.port)

        def start() -> int:
            asyncio.run(proxy.start())
            return proxy.port

        def stop() -> None:
            asyncio.run(proxy.stop())

        for _ in range(ROUNDS):
            made += _round(start, stop, HTTP)
    assert made >= ROUNDS * AT_ONCE
    assert leaks.report() == []


def test_a_stopped_server_can_start_again_on_its_port() -> None:
    """After a stop amid connections, the same FlakyServer starts again and answers."""
    server = FlakyServer(default=Fault.ok(json={"ok": True}))
    _round(lambda: server.start().port, server.stop, HTTP)
    request = b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    with server, _open(server.port, request) as sock:
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_a_connection_whose_close_wait_was_cancelled_is_forgotten() -> None:
    """A connection task that stop cancels while it waits for its connection to close cancels
    the connection's close future with it (asyncio hands every waiter the same future). The
    stop's own wait for that connection then ends at once -- and forgets the connection, or
    the stop would wait for it round after round, never ending (a thread left spinning)."""
    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda _, peer: accepted.append(peer), "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    _, writer = await asyncio.open_connection(host, port)
    try:
        waiting = asyncio.create_task(writer.wait_closed())
        await asyncio.sleep(0)  # the task now waits on the connection's close future
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        writer.transport.abort()
        writers = {writer}
        with contextlib.suppress(asyncio.CancelledError):  # the cancelled close future's
            await asyncio.wait_for(_closed(writer, writers), timeout=30.0)
        assert writers == set()
    finally:
        for each in (writer, *accepted):
            each.transport.abort()
        await asyncio.sleep(0)  # the aborted connections close
        server.close()
        await server.wait_closed()
