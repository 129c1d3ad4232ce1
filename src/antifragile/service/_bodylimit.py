"""The service's edge: body size limits enforced while reading, and who may send a body at all.

:class:`EdgeGuard` is pure ASGI, outside the framework, so it acts before anything reads or
parses a request's body:

1. **per-IP limit** -- a request to a guarded route (``/v1/admin``, ``/v1/ai-results``,
   ``/dashboard``, the API docs) takes its address's token here (``429 RATE_LIMITED``); the
   route's own :func:`~antifragile.service._limits.limit_by_ip` then takes none again;
2. **credentials** -- a request to a credentialed route (``/v1/admin``, ``/v1/ai-results``, and
   the API docs when ``ANTIFRAGILE_DOCS_REQUIRE_AUTH`` is on) is authenticated from its headers
   (``401 AUTH``) before a byte of its body is read; the route reuses the principal;
3. **size** -- a ``Content-Length`` above the route class's limit is refused at once, and the
   body is counted as it arrives and refused as soon as it grows past the limit
   (``413 PAYLOAD_TOO_LARGE``): webhooks ``ANTIFRAGILE_WEBHOOK_MAX_BYTES`` (1 MiB), dashboard
   forms ``ANTIFRAGILE_DASHBOARD_MAX_BYTES`` (16 KiB), everything else
   ``ANTIFRAGILE_API_MAX_BYTES`` (256 KiB);
4. **time** -- a client that stops sending its body for ``ANTIFRAGILE_BODY_READ_TIMEOUT``
   seconds is answered ``408 REQUEST_TIMEOUT`` and its connection closed.

The webhook routes check their own signature before parsing and take their own IP token
(:class:`~antifragile.service._webhooks.WebhookFastPath`); this guard only bounds their size
and read time.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from antifragile.errors import ErrorCode
from antifragile.service._envelope import ApiError, api_error_response, error_response

_log = logging.getLogger("antifragile.service.edge")

#: the error code of a body that did not arrive in time
REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
#: the ``scope["state"]`` flag set once the per-IP limit was checked for a request
IP_CHECKED = "antifragile.ip_checked"
#: the ``scope["state"]`` entry holding the principal authenticated before the body was read
PRINCIPAL = "principal"

DEFAULT_API_MAX_BYTES = 256 * 1024
DEFAULT_DASHBOARD_MAX_BYTES = 16 * 1024
DEFAULT_BODY_READ_TIMEOUT = 30.0

_CREDENTIALED = ("/v1/admin", "/v1/ai-results")
_DOCS = ("/openapi.json", "/docs", "/redoc")
_IP_LIMITED = (*_CREDENTIALED, "/dashboard")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body grows past its limit (the framework re-raises an
    HTTPException from body parsing as it is; :class:`EdgeGuard` answers it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")
        self.limit = limit


class BodyTimeout(HTTPException):
    """Raised from ``receive`` when the client stopped sending its body."""

    def __init__(self) -> None:
        super().__init__(408, "the request body did not arrive in time")


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


class EdgeGuard:
    """Pure ASGI: per-IP limit, credentials, body size and read time (see the module docs).

    *settings* gives ``webhook_max_bytes``, ``api_max_bytes``, ``dashboard_max_bytes``,
    ``body_read_timeout`` and ``docs_require_auth`` (defaults when missing).
    """

    def __init__(self, app: ASGIApp, settings: Any) -> None:
        self.app = app
        self.webhook_max = int(getattr(settings, "webhook_max_bytes", 1024 * 1024))
        self.api_max = int(getattr(settings, "api_max_bytes", DEFAULT_API_MAX_BYTES))
        self.dashboard_max = int(
            getattr(settings, "dashboard_max_bytes", DEFAULT_DASHBOARD_MAX_BYTES)
        )
        self.read_timeout = float(getattr(settings, "body_read_timeout", DEFAULT_BODY_READ_TIMEOUT))
        self.docs_auth = bool(getattr(settings, "docs_require_auth", False))
        self._read_deadlines: _ReadDeadlines | None = None
        #: the prefixes of every path _admit checks (a path under none of them is not)
        self._guarded = (*_IP_LIMITED, *_DOCS) if self.docs_auth else _IP_LIMITED
        # the credentials' settings are checked at start-up, not at the first admin request
        from antifragile.service._auth import ApiKeys, check_issuer_audience

        ApiKeys(None, bootstrap=getattr(settings, "admin_api_keys", ()))
        if getattr(settings, "jwt_jwks_url", None) or getattr(settings, "jwt_public_key", None):
            check_issuer_audience(settings)

    def _deadlines(self) -> _ReadDeadlines | None:
        """The body reads' deadlines on the running loop (``None`` without a read timeout)."""
        timeout = self.read_timeout
        if not (math.isfinite(timeout) and timeout > 0):
            return None
        loop = asyncio.get_running_loop()
        deadlines = self._read_deadlines
        if deadlines is None or deadlines.loop is not loop:
            deadlines = self._read_deadlines = _ReadDeadlines(loop, timeout)
        return deadlines

    def limit_for(self, path: str) -> int:
        """The body size limit of the route class of *path* (bytes)."""
        if path.startswith("/v1/webhooks/"):
            return self.webhook_max
        if _under(path, ("/dashboard",)):
            return self.dashboard_max
        return self.api_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        try:
            refused = await self._admit(scope, path)
        except ApiError as exc:
            refused = api_error_response(exc)
        if refused is not None:
            if _content_length(scope) != 0 or _chunked(scope):
                # the body is not read: close rather than drain it for the next request
                refused.headers["Connection"] = "close"
            await refused(scope, receive, send)
            return
        limit = self.limit_for(path)
        declared = _content_length(scope)
        if declared is None:
            await error_response(400, ErrorCode.BAD_REQUEST, "Content-Length is not a number")(
                scope, receive, send
            )
            return
        if declared > limit:
            await _too_large(limit)(scope, receive, send)
            return
        started = False
        bounded = _Bounded(receive, limit, self._deadlines())

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if bounded.refused:  # the body was cut off: this connection cannot go on
                    headers = list(message.get("headers", ()))
                    headers.append((b"connection", b"close"))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, bounded, tracking_send)
        except (BodyTooLarge, BodyTimeout) as exc:
            if started:
                raise
            if isinstance(exc, BodyTooLarge):
                await _too_large(exc.limit)(scope, receive, send)
            else:
                response = error_response(408, REQUEST_TIMEOUT, str(exc.detail))
                response.headers["Connection"] = "close"
                await response(scope, receive, send)

    async def _admit(self, scope: Scope, path: str) -> Any:
        """``None`` when the request may go on (having checked its IP and credentials where
        its route wants them); raises :class:`ApiError` otherwise."""
        if not path.startswith(self._guarded):  # the webhooks and the rest of the API
            return None
        docs = self.docs_auth and _under(path, _DOCS)
        if not (_under(path, _IP_LIMITED) or docs):
            return None
        from antifragile.service._auth import admin_auth_for, credential_of
        from antifragile.service._limits import limit_by_ip

        request = Request(scope)
        await limit_by_ip(request)
        request.state.__setattr__(IP_CHECKED, True)
        if _under(path, _CREDENTIALED) or docs:
            auth = admin_auth_for(request)
            principal = await auth.authenticate(credential_of(request))
            setattr(request.state, PRINCIPAL, principal)
        return None


def _content_length(scope: Scope) -> int | None:
    """The declared length (0 when there is none); ``None`` when it is not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            if not text.isdigit() or len(text) > 18:
                return None
            return int(text)
    return 0


def _chunked(scope: Scope) -> bool:
    return any(
        name == b"transfer-encoding" and b"chunked" in value.lower()
        for name, value in scope.get("headers", ())
    )


def _too_large(limit: int) -> Any:
    response = error_response(
        413, ErrorCode.PAYLOAD_TOO_LARGE, f"the request body is larger than {limit} bytes"
    )
    response.headers["Connection"] = "close"
    return response


class _ReadDeadlines:
    """The body reads under way on one event loop, each with its deadline, under one timer.

    A read's deadline is *timeout* seconds after it started; every read has the same
    *timeout*, so the reads, kept in the order they started, are in the order of their
    deadlines, and one timer -- at the earliest deadline -- serves them all. A read past its
    deadline has its task cancelled (as ``asyncio.timeout`` does; :meth:`_Bounded.__call__`
    turns that into :class:`BodyTimeout`). Most reads end at once (the body has arrived):
    they cost a dictionary entry, not a timer of their own to schedule and cancel.
    """

    __slots__ = ("loop", "reads", "timeout", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        #: each read under way: its task and its deadline (loop time)
        self.reads: dict[_Bounded, tuple[asyncio.Task[Any], float]] = {}
        self.timer: asyncio.TimerHandle | None = None

    def add(self, read: _Bounded, task: asyncio.Task[Any]) -> None:
        deadline = self.loop.time() + self.timeout
        self.reads[read] = (task, deadline)
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._expire)

    def discard(self, read: _Bounded) -> None:
        self.reads.pop(read, None)

    def _expire(self) -> None:
        self.timer = None
        now = self.loop.time()
        for read, (task, deadline) in list(self.reads.items()):
            if deadline > now:  # the earliest deadline still to come
                self.timer = self.loop.call_at(deadline, self._expire)
                return
            del self.reads[read]
            read.expired = True
            task.cancel()


class _Bounded:
    """*receive* counting the body's bytes (refused past *limit*) and bounding the wait for
    each chunk by *timeout* while the body is incomplete (the reads of one event loop share
    one timer: *deadlines*)."""

    __slots__ = ("deadlines", "done", "expired", "limit", "receive", "received", "refused")

    def __init__(self, receive: Receive, limit: int, deadlines: _ReadDeadlines | None) -> None:
        self.receive = receive
        self.limit = limit
        self.deadlines = deadlines
        self.received = 0
        self.done = False
        self.refused = False
        #: set by *deadlines* when it cancelled the read under way
        self.expired = False

    async def _read(self) -> Message:
        """The next message, within the deadline (a deadline on this task, not a task of its
        own as ``wait_for`` would make: every request's body goes through here)."""
        deadlines = self.deadlines
        task = asyncio.current_task()
        if deadlines is None or task is None:
            return await self.receive()
        cancelling = task.cancelling()
        deadlines.add(self, task)
        try:
            return await self.receive()
        except asyncio.CancelledError:
            # ours (and no other cancellation meanwhile): the deadline passed
            if self.expired and task.uncancel() <= cancelling:
                raise TimeoutError from None
            raise
        finally:
            deadlines.discard(self)

    async def __call__(self) -> Message:
        if self.done:
            return await self.receive()
        try:
            message = await self._read()
        except TimeoutError:
            self.refused = True
            raise BodyTimeout() from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.refused = True
                raise BodyTooLarge(self.limit)
            if not message.get("more_body", False):
                self.done = True
        else:
            self.done = True
        return message
