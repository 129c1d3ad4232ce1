"""SMTP: send email through any mail server (aiosmtplib), at most once, reconcilable.

::

    async with SMTPConnector() as smtp:              # ANTIFRAGILE_SMTP_* from the environment
        sent = await smtp.send_email(
            sender="Shop <orders@shop.example>",
            to="owner@shop.example",
            subject="New order",
            text="...",
            idempotency_key=f"order-summary/{order_id}",
        )

**Configuration.** ``ANTIFRAGILE_SMTP_HOST`` and ``ANTIFRAGILE_SMTP_PORT`` (``localhost:25``
when unset), ``ANTIFRAGILE_SMTP_USERNAME`` and ``ANTIFRAGILE_SMTP_PASSWORD`` (no login when
unset) and ``ANTIFRAGILE_SMTP_STARTTLS`` (``1``/``true`` to upgrade the connection with
STARTTLS; **off** by default, as the sandbox's server speaks plain text). Arguments to
:class:`SMTPConnector` override them.

**Default policy** (:func:`smtp_policy`): up to 5 attempts with exponential back-off from 0.5 s
(capped at 10 s, full jitter), 60 s per call, a circuit breaker; each SMTP step (connect,
login, ``MAIL``, ``RCPT``, ``DATA``) has *timeout* seconds (aiosmtplib's own timeout).

**Errors**: a refused login (``535``) is :class:`~antifragile.AuthenticationError`; a permanent
refusal (``5xx`` on ``MAIL``, ``RCPT`` or ``DATA``) :class:`~antifragile.InvalidRequestError`;
``421`` (the server throttles) :class:`~antifragile.RateLimitedError` and other ``4xx``
:class:`~antifragile.UpstreamUnavailableError` -- both retried, since the server said it did not
take the message; a failure to connect or a drop before ``DATA``
:class:`~antifragile.NetworkError` / :class:`~antifragile.UpstreamTimeoutError` (retried); a
drop or timeout *during or after* ``DATA`` :class:`OutcomeUnknownError`.

**Exactly once.** SMTP has no idempotency: a message sent twice is delivered twice. Every
message gets a ``Message-ID`` derived from the caller's key (:func:`message_id_for`:
``<sha256-of-key@domain>``, the sender's domain by default), the same on every attempt and
every later retry. The connector retries everything that certainly did not hand the message
over -- a failed connection or login, a drop before ``DATA``, a ``4xx`` -- and nothing else: once
the message's bytes were sent and the server's ``250`` did not arrive, it raises
:class:`OutcomeUnknownError` (``reconcile_key`` is the Message-ID), not retryable, so a durable
job stops instead of sending again. Reconcile by looking the Message-ID up (the server's log,
the recipient's mailbox, a bounce); should a message go out twice anyway, both copies carry the
same Message-ID, which mail clients and archives use to collapse duplicates.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, getaddresses
from types import TracebackType
from typing import Self

import aiosmtplib

from antifragile.connectors._base import masks_pii
from antifragile.connectors._outcome import OutcomeUnknownError, outcome_unknown
from antifragile.errors import (
    AuthenticationError,
    ConfigurationError,
    IntegrationError,
    InvalidRequestError,
    NetworkError,
    RateLimitedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from antifragile.policies import SYSTEM_CLOCK, Clock, Exponential, Policy, Retry

HOST_ENV = "ANTIFRAGILE_SMTP_HOST"
PORT_ENV = "ANTIFRAGILE_SMTP_PORT"
USERNAME_ENV = "ANTIFRAGILE_SMTP_USERNAME"
PASSWORD_ENV = "ANTIFRAGILE_SMTP_PASSWORD"
STARTTLS_ENV = "ANTIFRAGILE_SMTP_STARTTLS"
PROVIDER = "smtp"
SEND_EMAIL = "send_email"

__all__ = ["OutcomeUnknownError", "SMTPConnector", "SMTPSent", "message_id_for", "smtp_policy"]


def smtp_policy(*, clock: Clock = SYSTEM_CLOCK) -> Policy:
    """The default policy of :class:`SMTPConnector` (see the module docs)."""
    return Policy(
        PROVIDER,
        timeout=None,  # aiosmtplib times each step out, so a drop is placed before/after DATA
        total_timeout=60.0,
        retry=Retry(attempts=5, backoff=Exponential(0.5, cap=10.0)),
        clock=clock,
    )


def message_id_for(idempotency_key: str, domain: str) -> str:
    """The ``Message-ID`` of the message sent for *idempotency_key*; always the same."""
    if not idempotency_key:
        raise ConfigurationError("an idempotency key must not be empty")
    digest = hashlib.sha256(f"send-email/{idempotency_key}".encode()).hexdigest()[:40]
    return f"<{digest}@{domain}>"


@dataclass(frozen=True, slots=True)
class SMTPSent:
    """The server accepted the message: its ``Message-ID`` and the server's reply."""

    message_id: str
    reply: str


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _listed(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _bare(addresses: Sequence[str]) -> list[str]:
    return [addr for _, addr in getaddresses(list(addresses)) if addr]


class SMTPConnector:
    """An SMTP server behind a :class:`~antifragile.Policy` (see the module docs)."""

    provider = PROVIDER

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        start_tls: bool | None = None,
        use_tls: bool = False,
        timeout: float = 10.0,
        policy: Policy | None = None,
        clock: Clock = SYSTEM_CLOCK,
        message_id_domain: str | None = None,
    ) -> None:
        self.host = host or os.environ.get(HOST_ENV) or "localhost"
        raw_port = port if port is not None else os.environ.get(PORT_ENV)
        try:
            self.port = int(raw_port) if raw_port not in (None, "") else 25
        except ValueError:
            raise ConfigurationError(f"{PORT_ENV} must be a port number") from None
        self.username = username or os.environ.get(USERNAME_ENV) or None
        self._password = password or os.environ.get(PASSWORD_ENV) or None
        if self.username and not self._password:
            raise ConfigurationError(f"an SMTP username needs a password ({PASSWORD_ENV})")
        self.start_tls = _truthy(os.environ.get(STARTTLS_ENV)) if start_tls is None else start_tls
        self.use_tls = use_tls
        self.timeout = timeout
        self.message_id_domain = message_id_domain
        self.policy = policy if policy is not None else smtp_policy(clock=clock)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release: each send uses its own connection."""

    def build_message(
        self,
        *,
        sender: str,
        to: str | Sequence[str],
        subject: str,
        idempotency_key: str,
        text: str | None = None,
        html: str | None = None,
        cc: str | Sequence[str] | None = None,
        reply_to: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> EmailMessage:
        """The message :meth:`send_email` sends (``Bcc`` is never a header)."""
        if text is None and html is None:
            raise ConfigurationError("an email needs html or text")
        senders = _bare([sender])
        if not senders or "@" not in senders[0]:
            raise ConfigurationError(f"not a sender address: {sender!r}")
        domain = self.message_id_domain or Address(addr_spec=senders[0]).domain
        message = EmailMessage()
        message["From"] = sender
        message["To"] = ", ".join(_listed(to))
        if cc is not None:
            message["Cc"] = ", ".join(_listed(cc))
        if reply_to is not None:
            message["Reply-To"] = reply_to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = message_id_for(idempotency_key, domain)
        for name, value in (headers or {}).items():
            message[name] = value
        if text is not None:
            message.set_content(text)
            if html is not None:
                message.add_alternative(html, subtype="html")
        elif html is not None:
            message.set_content(html, subtype="html")
        return message

    @masks_pii("sender", "to", "cc", "bcc", "reply_to")
    async def send_email(
        self,
        *,
        sender: str,
        to: str | Sequence[str],
        subject: str,
        idempotency_key: str,
        text: str | None = None,
        html: str | None = None,
        cc: str | Sequence[str] | None = None,
        bcc: str | Sequence[str] | None = None,
        reply_to: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SMTPSent:
        """Send one message, never twice for one *idempotency_key* (see the module docs)."""
        message = self.build_message(
            sender=sender,
            to=to,
            subject=subject,
            idempotency_key=idempotency_key,
            text=text,
            html=html,
            cc=cc,
            reply_to=reply_to,
            headers=headers,
        )
        message_id = str(message["Message-ID"])
        recipients = _bare([*_listed(to), *_listed(cc), *_listed(bcc)])
        if not recipients:
            raise ConfigurationError("an email needs at least one recipient")
        envelope_from = _bare([sender])[0]
        content = message.as_bytes()

        async def attempt() -> SMTPSent:
            return await self._deliver(envelope_from, recipients, content, message_id)

        try:
            return await self.policy.arun(attempt, operation=SEND_EMAIL, replay_safe=False)
        except IntegrationError as exc:
            mapped = outcome_unknown(exc, message_id)
            if mapped is exc:
                raise
            raise mapped from exc

    async def _deliver(
        self, sender: str, recipients: list[str], content: bytes, message_id: str
    ) -> SMTPSent:
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
        )
        handed_over = False  # True once DATA's content may have reached the server
        try:
            await client.connect()
            if self.username and self._password:
                await client.login(self.username, self._password)
            await client.mail(sender)
            for recipient in recipients:
                await client.rcpt(recipient)
            handed_over = True
            reply = await client.data(content)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise AuthenticationError(
                f"the SMTP server refused the login ({exc.code})",
                provider=PROVIDER,
                operation=SEND_EMAIL,
                status=exc.code,
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _refused(exc) from exc
        except (aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
            raise UpstreamTimeoutError(
                f"the SMTP server did not answer in {self.timeout:g}s",
                provider=PROVIDER,
                operation=SEND_EMAIL,
                replay_safe=not handed_over,
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise NetworkError(
                f"the SMTP connection failed: {exc}",
                provider=PROVIDER,
                operation=SEND_EMAIL,
                replay_safe=not handed_over,
            ) from exc
        finally:
            client.close()
        return SMTPSent(message_id, f"{reply.code} {reply.message}")

    def __repr__(self) -> str:
        return f"SMTPConnector(host={self.host!r}, port={self.port})"


def _refused(exc: aiosmtplib.SMTPResponseException) -> IntegrationError:
    """An explicit refusal: the server did not take the message, so resending is safe."""
    text = f"the SMTP server refused the message: {exc.code} {exc.message}"
    kind: type[IntegrationError]
    if exc.code == 421 or (400 <= exc.code < 500 and "4.7." in exc.message):
        kind = RateLimitedError
    elif 400 <= exc.code < 500:
        kind = UpstreamUnavailableError
    else:
        kind = InvalidRequestError
    return kind(text, provider=PROVIDER, operation=SEND_EMAIL, status=exc.code, replay_safe=True)
