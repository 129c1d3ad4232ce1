"""Mailchimp Transactional (Mandrill): send transactional email, at most once, reconcilable.

::

    async with MandrillConnector() as mandrill:      # ANTIFRAGILE_MANDRILL_* from the environment
        sent = await mandrill.send_email(
            sender="Shop <orders@shop.example>",
            to="owner@shop.example",
            subject="New order",
            text="...",
            idempotency_key=f"order-summary/{order_id}",
        )
        sent.id, sent.status                          # Mandrill's message _id, "sent" or "queued"

**Configuration.** ``ANTIFRAGILE_MANDRILL_API_KEY`` holds the API key (``md-...``; Mandrill
takes it *inside* the JSON body as ``key``, never in a header) and
``ANTIFRAGILE_MANDRILL_BASE_URL`` the API's address (``https://mandrillapp.com/api/1.0`` when
unset; ``{sandbox.url}/mandrill`` for the sandbox). Arguments to :class:`MandrillConnector`
override both. In an email chain the provider is named ``mandrill``.

**Default policy** (:func:`mandrill_policy`): Mandrill publishes no rate limit for
``messages/send`` (its sending quota shows as *queueing*, not as errors), so there is no token
bucket; a 429 ``RequestLimitExceeded`` is waited out and retried. Up to 5 attempts with
exponential back-off from 0.5 s (capped at 10 s, full jitter); 10 s per attempt, 60 s per call;
a circuit breaker for the provider.

**Answers.** ``messages/send`` answers 200 with one entry per recipient
(``{"email", "status", "reject_reason", "queued_reason", "_id"}``): ``sent``, ``queued`` and
``scheduled`` are accepted; ``rejected`` and ``invalid`` are not, and a 200 is not a success
until every entry is read. When no recipient was accepted:

* ``invalid`` (the address), or a reject for the *recipient* (``hard-bounce``, ``soft-bounce``,
  ``spam``, ``unsub``, ``custom``, ``invalid``) is :class:`~antifragile.InvalidRequestError`:
  another provider must not send it either (an unsubscribed or bouncing address stays so);
* a reject for the *account* (``invalid-sender``, ``unsigned``, ``test-mode-limit``, ``rule``)
  is :class:`~antifragile.connectors.ProviderRefusedError`: Mandrill will not send it, another
  provider may (an email chain moves on).

A recipient ``queued`` with ``queued_reason`` ``hourly-quota-exhausted``,
``monthly-limit-reached``, ``free-trial-sends-exhausted``, ``sending-paused``,
``sending-suspended`` or ``account-suspended`` is accepted -- Mandrill will send it later, so it
is never sent elsewhere -- and pauses this connector (:attr:`MandrillConnector.quota_paused_until`:
to the next hour for the hourly quota and a paused account, to the next month otherwise), so
an email chain sends the next emails through its next provider meanwhile.

**Errors** are Mandrill's ``{"status": "error", "code", "name", "message"}``, read by ``name``
whatever the HTTP status: ``Invalid_Key`` :class:`~antifragile.AuthenticationError`,
``ValidationError`` :class:`~antifragile.InvalidRequestError`, ``PaymentRequired`` and
``Unknown_Subaccount`` :class:`~antifragile.connectors.ProviderRefusedError`,
``RequestLimitExceeded`` :class:`~antifragile.RateLimitedError`; ``GeneralError`` and
``ServiceUnavailable`` (5xx in Mandrill's own format: it failed the request as a whole, nothing
was sent) are retried.

**Exactly once.** Mandrill has no idempotency key: the same request sent twice is two emails.
So, as for SendGrid, the connector never sends a request again once Mandrill may have received
it: a refusal (429, a 5xx in Mandrill's error format, a failure before sending) is retried; an
ambiguous failure -- a reset or timeout after sending, a gateway's bodiless 502/504, a 200 that
is not Mandrill's recipient array -- raises :class:`~antifragile.connectors.OutcomeUnknownError`
(not retryable). Every message carries ``metadata`` ``{"antifragile_ref": <correlation>}``
(:func:`~antifragile.connectors.correlation_for` of ``send-email/<key>``, 35 characters: within
Mandrill's 250-byte metadata limit, no personal data), which Mandrill echoes in ``msg.metadata``
of every webhook event and which :meth:`MandrillConnector.lookup_sent` searches for
(``messages/search``, query ``u_antifragile_ref:<correlation>``; the field must be indexed in
the account's *Custom Metadata* settings). An email chain settles an unknown send with that
lookup (found: sent; not found: not yet known) and otherwise after its settle window.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

import httpx

from antifragile.connectors._base import HTTPConnector, base_url_from, masks_pii, required_from
from antifragile.connectors._correlation import REF_ARG, correlation_for
from antifragile.connectors._outcome import (
    OutcomeUnknownError,
    ProviderRefusedError,
    mandrill_error_answer,
    outcome_unknown,
)
from antifragile.connectors._quota import QuotaPause, paused_refusal, until_monthly_reset
from antifragile.connectors._resend import idempotency_key_for
from antifragile.errors import (
    AuthenticationError,
    ConfigurationError,
    IntegrationError,
    InvalidRequestError,
    RateLimitedError,
    redact,
)
from antifragile.http import ResilientClient
from antifragile.policies import SYSTEM_CLOCK, Clock, Exponential, Policy, Retry
from antifragile.stores import KeyValueStore

BASE_URL_ENV = "ANTIFRAGILE_MANDRILL_BASE_URL"
API_KEY_ENV = "ANTIFRAGILE_MANDRILL_API_KEY"
DEFAULT_BASE_URL = "https://mandrillapp.com/api/1.0"
PROVIDER = "mandrill"
SEND_EMAIL = "send_email"
LOOKUP = "lookup_sent"

#: rejects about the recipient: no provider should send to them
RECIPIENT_REJECTS = frozenset({"hard-bounce", "soft-bounce", "spam", "unsub", "custom", "invalid"})
#: rejects about the account: Mandrill will not send, another provider may
ACCOUNT_REJECTS = frozenset({"invalid-sender", "unsigned", "test-mode-limit", "rule"})
#: ``queued_reason`` values that mean the account sends nothing more for a while
_HOURLY_PAUSES = frozenset({"hourly-quota-exhausted", "sending-paused"})
_MONTHLY_PAUSES = frozenset(
    {
        "monthly-limit-reached",
        "free-trial-sends-exhausted",
        "sending-suspended",
        "account-suspended",
    }
)
#: Mandrill error names and the error each one is
_ERRORS_BY_NAME: Mapping[str, type[IntegrationError]] = {
    "Invalid_Key": AuthenticationError,
    "ValidationError": InvalidRequestError,
    "PaymentRequired": ProviderRefusedError,
    "Unknown_Subaccount": ProviderRefusedError,
    "RequestLimitExceeded": RateLimitedError,
}

__all__ = ["MandrillConnector", "MandrillSent", "mandrill_policy"]


def mandrill_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`MandrillConnector` (see the module docs)."""
    return Policy(
        PROVIDER,
        timeout=timeout,
        total_timeout=60.0,
        retry=Retry(attempts=5, backoff=Exponential(0.5, cap=10.0)),
        clock=clock,
    )


@dataclass(frozen=True, slots=True)
class MandrillSent:
    """Mandrill accepted the email: the ``_id`` of its first accepted recipient, that
    recipient's ``status`` (``sent``, ``queued``, ``scheduled``), its ``queued_reason``, the
    reconciliation key sent, and the number of recipients Mandrill rejected."""

    id: str
    idempotency_key: str
    status: str
    queued_reason: str | None = None
    rejected: int = 0


def _mandrill_error(detail: str | None) -> tuple[str | None, str | None]:
    """Mandrill's error ``name`` and ``message`` from an error body excerpt."""
    try:
        body = json.loads(detail or "")
    except ValueError:
        return None, None
    if not isinstance(body, dict) or body.get("status") != "error":
        return None, None
    name, message = body.get("name"), body.get("message")
    return (
        name if isinstance(name, str) else None,
        message if isinstance(message, str) else None,
    )


def _next_hour(now: float) -> float:
    return max(1.0, 3600.0 - now % 3600.0)


class MandrillConnector(HTTPConnector):
    """Mailchimp Transactional's API behind a :class:`~antifragile.ResilientClient` (module
    docs).

    *api_key* and *base_url* default to ``ANTIFRAGILE_MANDRILL_API_KEY`` and
    ``ANTIFRAGILE_MANDRILL_BASE_URL``; *policy* to :func:`mandrill_policy` on *clock* with
    *timeout* seconds per attempt. *client* is an ``httpx.AsyncClient`` to use (yours to close).
    """

    provider = PROVIDER

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        policy: Policy | None = None,
        timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        client: httpx.AsyncClient | None = None,
        quota_store: KeyValueStore | None = None,
    ) -> None:
        self._key = required_from(
            api_key, API_KEY_ENV, needs="Mandrill needs an API key", arg="api_key"
        )
        self.base_url = base_url_from(base_url, BASE_URL_ENV, DEFAULT_BASE_URL)
        self.policy = (
            policy if policy is not None else mandrill_policy(clock=clock, timeout=timeout)
        )
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=self.policy,
            timeout=timeout,
            client=client,
            secrets=[self._key],
            not_processed=mandrill_error_answer,
        )
        self.client.refine = self._refine
        self.clock = clock
        self._quota = QuotaPause(PROVIDER, clock=clock, kv=quota_store)

    @property
    def quota_paused_until(self) -> float | None:
        """Epoch seconds until which sends are paused by a spent quota or a paused
        account (``None``: they are not); shared by the processes of the registry's store
        when there is one."""
        return self._quota.until

    @quota_paused_until.setter
    def quota_paused_until(self, until: float | None) -> None:
        self._quota.until = until

    def _refine(self, error: IntegrationError, response: httpx.Response) -> IntegrationError:
        """Mandrill's error ``name`` decides the error, whatever the HTTP status."""
        name, message = _mandrill_error(response.text)
        if name is None:
            return error
        text = redact(f"{error.message}: {name}" + (f": {message}" if message else ""))
        kind = _ERRORS_BY_NAME.get(name)
        if kind is None or isinstance(error, kind):
            error.message = text
            error.args = (text,)
            return error
        refined = kind(
            text,
            provider=error.provider,
            operation=error.operation,
            status=error.status,
            request_id=error.request_id,
            replay_safe=True,  # Mandrill answered that it refused: nothing was sent
            attempts=error.attempts,
            detail=error.detail,
        )
        refined.give_up_reason = error.give_up_reason
        return refined

    def _paused(self) -> RateLimitedError | None:
        return paused_refusal(
            PROVIDER,
            SEND_EMAIL,
            self.quota_paused_until,
            self.clock.time(),
            "the account queues its sends (quota spent or sending paused)",
        )

    @masks_pii("sender", "to", "cc", "bcc", "reply_to")
    async def send_email(
        self,
        *,
        sender: str,
        to: str | Sequence[str],
        subject: str,
        idempotency_key: str,
        html: str | None = None,
        text: str | None = None,
        cc: str | Sequence[str] | None = None,
        bcc: str | Sequence[str] | None = None,
        reply_to: str | None = None,
        headers: Mapping[str, str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> MandrillSent:
        """Send one email (``POST /messages/send``), never twice for one *idempotency_key*.

        *sender* is ``"Name <a@b.example>"`` or a bare address; at least one of *html* and
        *text* is required. Raises :class:`~antifragile.connectors.OutcomeUnknownError` when
        Mandrill may have sent it, other :class:`~antifragile.IntegrationError` subclasses
        when it did not (see the module docs).
        """
        if html is None and text is None:
            raise ConfigurationError("an email needs html or text")
        await self._quota.sync()
        paused = self._paused()
        if paused is not None:
            raise paused
        key = idempotency_key_for("send-email", idempotency_key)
        name, address = parseaddr(sender)
        recipients = [
            {"email": parseaddr(a)[1] or a, "type": kind}
            for kind, value in (("to", to), ("cc", cc), ("bcc", bcc))
            if value is not None
            for a in ([value] if isinstance(value, str) else value)
        ]
        message: dict[str, Any] = {
            "subject": subject,
            "from_email": address or sender,
            "to": recipients,
            "metadata": {REF_ARG: correlation_for(key)},
            "preserve_recipients": False,
        }
        if name:
            message["from_name"] = name
        if html is not None:
            message["html"] = html
        if text is not None:
            message["text"] = text
        extra = dict(headers or {})
        if reply_to is not None:
            extra["Reply-To"] = reply_to
        if extra:
            message["headers"] = extra
        if tags:
            message["tags"] = list(tags)
        body = {"key": self._key, "message": message, "async": False}
        try:
            response = await self.client.post("/messages/send", json=body, operation=SEND_EMAIL)
        except IntegrationError as exc:
            raise outcome_unknown(exc, key) from exc
        sent = self._read(response, key)
        await self._quota.sync()  # a pause the answer announced stops the other processes too
        return sent

    def _read(self, response: httpx.Response, key: str) -> MandrillSent:
        """The accepted send in a 200 answer, or the error its recipients' statuses call for."""
        try:
            answer = response.json()
        except ValueError:
            answer = None
        entries = (
            [e for e in answer if isinstance(e, dict) and isinstance(e.get("status"), str)]
            if isinstance(answer, list)
            else []
        )
        if not entries:
            raise OutcomeUnknownError(
                f"Mandrill answered {response.status_code} without its recipient statuses; "
                f"outcome unknown, not sent again (reconcile with {key!r})",
                provider=PROVIDER,
                operation=SEND_EMAIL,
                status=response.status_code,
                replay_safe=False,
                detail=redact(response.text[:500]),
                reconcile_key=key,
            )
        accepted = [e for e in entries if e["status"] in ("sent", "queued", "scheduled")]
        refused = len(entries) - len(accepted)
        if not accepted:
            raise self._refused(entries, response.status_code)
        first = accepted[0]
        reason = next(
            (
                e["queued_reason"]
                for e in accepted
                if isinstance(e.get("queued_reason"), str)
                and e["queued_reason"] in _HOURLY_PAUSES | _MONTHLY_PAUSES
            ),
            None,
        )
        if reason is not None:
            now = self.clock.time()
            wait = _next_hour(now) if reason in _HOURLY_PAUSES else until_monthly_reset(now)
            self._quota.start(now + wait)
        queued = first.get("queued_reason")
        return MandrillSent(
            id=str(first.get("_id") or ""),
            idempotency_key=key,
            status=first["status"],
            queued_reason=queued if isinstance(queued, str) else None,
            rejected=refused,
        )

    @staticmethod
    def _refused(entries: Sequence[Mapping[str, Any]], status: int) -> IntegrationError:
        """The error of a send no recipient of which was accepted (reasons, never addresses)."""
        reasons = sorted(
            {
                str(e.get("reject_reason") or e["status"])
                for e in entries
                if e["status"] in ("rejected", "invalid")
            }
        )
        text = f"mandrill.send_email: no recipient accepted ({', '.join(reasons)})"
        where: dict[str, Any] = {
            "provider": PROVIDER,
            "operation": SEND_EMAIL,
            "status": status,
            "replay_safe": True,
        }
        if reasons and all(r in ACCOUNT_REJECTS for r in reasons):
            return ProviderRefusedError(text, **where)
        return InvalidRequestError(text, **where)

    async def lookup_sent(self, idempotency_key: str) -> bool | None:
        """Whether Mandrill has the message sent with *idempotency_key* (the caller's key, as
        given to :meth:`send_email`): ``True`` when ``messages/search`` finds its
        ``antifragile_ref`` metadata, ``None`` when it does not -- the message may not be
        indexed yet -- or the search fails."""
        key = idempotency_key_for("send-email", idempotency_key)
        query = f"u_{REF_ARG}:{correlation_for(key)}"
        body = {"key": self._key, "query": query, "limit": 1}
        try:
            response = await self.client.post(
                "/messages/search", json=body, operation=LOOKUP, replay_safe=True
            )
            found = response.json()
        except (IntegrationError, ValueError):
            return None
        return True if isinstance(found, list) and found else None

    def __repr__(self) -> str:
        return f"MandrillConnector(base_url={self.base_url!r})"
