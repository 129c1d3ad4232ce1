"""The HTTP server's own limits on slow clients: a deadline for a request's headers.

uvicorn closes a keep-alive connection idle for ``timeout_keep_alive`` seconds, but a client
that opens a connection and sends its headers a byte at a time (or never) holds it open
indefinitely. :func:`guarded_h11` makes an h11 protocol class whose connections are closed when
a request's headers are not complete within *header_timeout* seconds of the connection opening,
or of the previous response ending; the body's own timeout is the app's
(:class:`~antifragile.service._bodylimit.EdgeGuard`, ``ANTIFRAGILE_BODY_READ_TIMEOUT``).

::

    uvicorn.Config(app, http=guarded_h11(10.0), timeout_keep_alive=5,
                   h11_max_incomplete_event_size=16 * 1024)
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: seconds a client has to send a request's headers (``antifragile serve``)
HEADER_TIMEOUT = 10.0
#: the largest request line plus headers accepted (bytes)
MAX_HEADER_BYTES = 16 * 1024


def guarded_h11(header_timeout: float = HEADER_TIMEOUT) -> type[H11Protocol]:
    """An h11 protocol class closing connections whose request headers come too slowly."""

    class GuardedH11Protocol(H11Protocol):
        _headers_timer: asyncio.TimerHandle | None = None
        _waiting_for: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            self._waiting_for = self.cycle  # a new cycle: the next request's headers arrived
            self._headers_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._headers_timer is not None:
                self._headers_timer.cancel()
                self._headers_timer = None

        def _headers_late(self) -> None:
            self._headers_timer = None
            if self.cycle is self._waiting_for and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._headers_timer is not None and self.cycle is not self._waiting_for:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._disarm()
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol
