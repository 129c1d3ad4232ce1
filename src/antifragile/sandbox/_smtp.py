"""A local SMTP server for the sandbox (aiosmtpd), recording each accepted message as an effect.

::

    with SMTPSandbox(users={"app": "secret"}) as smtp:
        ...  # an SMTPConnector with host=smtp.host, port=smtp.port, username/password
        (effect,) = smtp.effects()

Every message the server accepts (``250`` after ``DATA``) is an
:class:`~antifragile.sandbox.Effect` of provider ``"smtp"`` and endpoint ``"DATA"``: its ``id``
and ``idempotency_key`` are the message's ``Message-ID`` header (a generated one when it has
none), its ``data`` the envelope (``mail_from``, ``rcpt_tos``), the ``subject`` and the raw
``content``. Pass a shared :class:`~antifragile.sandbox._simulator.EffectLog` (a
:class:`~antifragile.sandbox.ProviderSandbox`'s ``log``) to record them alongside the HTTP
providers.

With *users*, clients must log in (``AUTH PLAIN``/``LOGIN``; TLS is not required, this is a
local sandbox) -- a wrong password is ``535``. Faults are scripted per message with
:meth:`SMTPSandbox.faults`, each used once, on the ``DATA`` command:

====================  ===========================================================================
``"tempfail"``        ``451 4.3.0`` -- a temporary failure; nothing accepted
``"throttle"``        ``421 4.7.0`` -- too many messages (a server's throttle); nothing accepted
``"reject"``          ``554 5.6.0`` -- a permanent failure; nothing accepted
``"disconnect"``      the connection is dropped before the message is accepted; nothing recorded
``"ambiguous"``       the message **is** accepted and recorded, then the connection is dropped
                      before the ``250`` reaches the client
====================  ===========================================================================
"""

from __future__ import annotations

import asyncio
import collections
import email
import email.policy
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from antifragile.errors import ConfigurationError
from antifragile.sandbox._server import LoopThread, close_server
from antifragile.sandbox._simulator import Effect, EffectLog

SMTPFault = Literal["tempfail", "throttle", "reject", "disconnect", "ambiguous"]
_FAULTS: frozenset[str] = frozenset(("tempfail", "throttle", "reject", "disconnect", "ambiguous"))

PROVIDER = "smtp"
ENDPOINT = "DATA"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class _Connection(SMTP):
    """aiosmtpd's SMTP protocol, one per connection, known to its sandbox from the moment the
    connection is made until it is lost (so that stopping closes every one)."""

    def __init__(
        self,
        handler: _Handler,
        *,
        open_connections: set[_Connection],
        require_login: bool,
        **options: Any,
    ) -> None:
        super().__init__(handler, **options)
        self._open = open_connections
        self._require_login = require_login
        self.closed: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._open.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            self._open.discard(self)
            if not self.closed.done():
                self.closed.set_result(None)

    async def check_auth_needed(self, caller_method: str) -> bool:
        # logging in is required, over plain text on purpose (a local sandbox): checked here
        # rather than with aiosmtpd's auth_required, which warns about it on every connection
        assert self.session is not None
        if self._require_login and not self.session.authenticated:
            await self.push("530 5.7.0 Authentication required")
            return True
        return bool(await super().check_auth_needed(caller_method))

    def abort(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.abort()  # type: ignore[attr-defined]


class _Handler:
    def __init__(self, sandbox: SMTPSandbox) -> None:
        self._sandbox = sandbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = self._sandbox._next_fault()
        if fault == "tempfail":
            return "451 4.3.0 Temporary failure, try again later"
        if fault == "reject":
            return "554 5.6.0 Message rejected"
        if fault == "throttle":
            return "421 4.7.0 Too many messages, slow down"
        if fault == "disconnect":
            server.transport.abort()  # type: ignore[union-attr]
            return "451 4.3.0 lost"
        self._sandbox._record(envelope)
        if fault == "ambiguous":
            server.transport.abort()  # type: ignore[union-attr]
        return "250 2.0.0 OK: queued"


class SMTPSandbox(LoopThread):
    """A real SMTP server on ``host`` (a free port unless *port* is given) in a thread."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        users: Mapping[str, str] | None = None,
        log: EffectLog | None = None,
    ) -> None:
        self.host = host
        self.port = port or _free_port(host)
        self.users = None if users is None else dict(users)
        self.log = log if log is not None else EffectLog()
        self._lock = threading.Lock()
        self._script: collections.deque[SMTPFault | None] = collections.deque()
        super().__init__()
        self._open: set[_Connection] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    thread_name = "smtp-sandbox"

    async def _main(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        handler = _Handler(self)
        options: dict[str, Any] = {"enable_SMTPUTF8": True, "loop": loop}
        if self.users is not None:
            options.update(authenticator=self._authenticate, auth_require_tls=False)

        def connection() -> _Connection:
            return _Connection(
                handler,
                open_connections=self._open,
                require_login=self.users is not None,
                **options,
            )

        try:
            server = await loop.create_server(connection, self.host, self.port)
        except OSError as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await close_server(server, self._close_connections)

    def _close_connections(self) -> list[Awaitable[object]]:
        """Abort every open connection (its protocol cancels its own task); what to await."""
        connections = list(self._open)
        for connection in connections:
            connection.abort()
        return [connection.closed for connection in connections]

    # -- faults and effects ---------------------------------------------------------------------

    def faults(self, script: Iterable[SMTPFault | None]) -> None:
        """Replace the fault script: the next messages get these faults, one each, in order
        (``None``: that message is handled normally)."""
        listed = list(script)
        unknown = {f for f in listed if f is not None} - _FAULTS
        if unknown:
            raise ConfigurationError(f"unknown SMTP fault(s) {sorted(unknown)}; {sorted(_FAULTS)}")
        with self._lock:
            self._script = collections.deque(listed)

    @property
    def pending(self) -> int:
        """Scripted faults not used yet."""
        with self._lock:
            return len(self._script)

    def effects(self) -> list[Effect]:
        """Messages accepted so far, oldest first."""
        return self.log.list(PROVIDER)

    def reset(self) -> None:
        """Forget the fault script and the accepted messages (of this server's log)."""
        with self._lock:
            self._script.clear()
        self.log.clear()

    def _next_fault(self) -> SMTPFault | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def _record(self, envelope: Envelope) -> None:
        raw = envelope.original_content or envelope.content or b""
        content = raw if isinstance(raw, bytes) else raw.encode()
        message = email.message_from_bytes(content, policy=email.policy.default)
        message_id = str(message.get("Message-ID") or f"<{uuid.uuid4().hex}@sandbox.invalid>")
        data = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": str(message.get("Subject", "")),
            "content": content.decode("utf-8", "replace"),
        }
        self.log.add(Effect(PROVIDER, ENDPOINT, message_id, data, message_id, time.time()))

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and self.users is not None:
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            if self.users.get(login) == password:
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.running else "stopped"
        return f"SMTPSandbox({where})"
