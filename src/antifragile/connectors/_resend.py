"""Resend: send transactional email, exactly once.

::

    async with ResendConnector() as resend:          # ANTIFRAGILE_RESEND_* from the environment
        sent = await resend.send_email(
            sender="Shop <orders@shop.example>",
            to="owner@shop.example",
            subject="New order",
            text="...",
            idempotency_key=f"order-summary/{order_id}",
        )

**Configuration.** ``ANTIFRAGILE_RESEND_API_KEY`` holds the API key (``re_...``) and
``ANTIFRAGILE_RESEND_BASE_URL`` the API's address (``https://api.resend.com`` when unset; point
it at ``{sandbox.url}/resend`` or any stand-in server). Arguments to :class:`ResendConnector`
override both.

**Default policy** (:func:`resend_policy`): Resend allows 2 requests per second per team, so
a token bucket of 2 per second (burst 2) paces calls and adapts to the ``ratelimit-limit``,
``ratelimit-remaining`` and ``ratelimit-reset`` headers of every answer; a 429's
``retry-after`` pauses it. Up to 5 attempts with exponential back-off from 0.5 s (capped at
10 s, full jitter), ``retry-after`` honoured; 10 s per attempt, 60 s per call; a circuit
breaker for the provider.

**Errors** are the antifragile taxonomy: 401/403 :class:`~antifragile.AuthenticationError`,
400/422 :class:`~antifragile.InvalidRequestError`, 409 ``invalid_idempotent_request``
:class:`~antifragile.ConflictError`, 429 :class:`~antifragile.RateLimitedError`, 5xx
:class:`~antifragile.UpstreamUnavailableError`, lost connections and timeouts
:class:`~antifragile.NetworkError` / :class:`~antifragile.UpstreamTimeoutError`. Resend's error
``name`` is added to the message. A 409 ``concurrent_idempotent_requests`` (the first request
with this key is still in flight) is transient: it is raised as a
:class:`~antifragile.TransientError` so that a durable job tries again later. A 200 whose body
is not Resend's ``{"id": ...}`` is a transient :class:`~antifragile.UpstreamUnavailableError`.

**Exactly once.** Every ``send_email`` carries an ``Idempotency-Key`` derived from the
caller's key: ``send-email/<key>`` (or ``send-email/sha256:<hex>`` when that would not be a
printable ASCII header of at most 256 characters), so the same caller key always maps to the
same header. Resend keeps a key for 24 hours and answers a repeat of the same request with the
first answer (the same email id) without sending again. Because the key makes the request safe
to replay, an *ambiguous* failure -- the connection drops or times out after Resend may have
accepted the email -- is retried in-process with the same key, and a call that still fails
goes to the caller (a durable job retries it later, again with the same key: use the job's
``ctx.idempotency_key``). Every delivery of the request after the first is therefore absorbed
by Resend, and the email is sent once -- as long as the retries happen within 24 hours and the
payload is the same. A changed payload under the same key is refused with 409
(:class:`~antifragile.ConflictError`), never sent twice.

**Correlation.** Every email carries the tag ``antifragile_ref`` =
:func:`~antifragile.connectors.correlation_for` of its ``Idempotency-Key``, which Resend echoes
in the ``tags`` of each of its webhook events (``email.sent``, ``email.delivered``...).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from antifragile.connectors._base import HTTPConnector, base_url_from, masks_pii, required_from
from antifragile.connectors._correlation import REF_ARG, correlation_for
from antifragile.connectors._outcome import error_body, resend_error_answer
from antifragile.connectors._quota import (
    QuotaPause,
    paused_refusal,
    until_daily_reset,
    until_monthly_reset,
)
from antifragile.errors import (
    ConfigurationError,
    ConflictError,
    IntegrationError,
    RateLimitedError,
    TransientError,
    UpstreamUnavailableError,
    redact,
)
from antifragile.http import ResilientClient
from antifragile.policies import (
    SYSTEM_CLOCK,
    Clock,
    Exponential,
    Policy,
    Retry,
    TokenBucket,
)
from antifragile.stores import KeyValueStore

BASE_URL_ENV = "ANTIFRAGILE_RESEND_BASE_URL"
API_KEY_ENV = "ANTIFRAGILE_RESEND_API_KEY"
DEFAULT_BASE_URL = "https://api.resend.com"
PROVIDER = "resend"

#: the operation name in errors, events and the idempotency key
SEND_EMAIL = "send_email"

_MAX_KEY = 256


def resend_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`ResendConnector` (see the module docs)."""
    return Policy(
        PROVIDER,
        timeout=timeout,
        total_timeout=60.0,
        retry=Retry(attempts=5, backoff=Exponential(0.5, cap=10.0)),
        rate=TokenBucket(2.0, burst=2.0, max_wait=10.0),
        clock=clock,
    )


def idempotency_key_for(operation: str, key: str) -> str:
    """The ``Idempotency-Key`` sent for the caller's *key* of *operation*; always the same.

    ``<operation>/<key>`` when it is printable ASCII of at most 256 characters, otherwise
    ``<operation>/sha256:<hex of the key>``.
    """
    if not key:
        raise ConfigurationError("an idempotency key must not be empty")
    derived = f"{operation}/{key}"
    if len(derived) <= _MAX_KEY and derived.isascii() and derived.isprintable():
        return derived
    return f"{operation}/sha256:{hashlib.sha256(key.encode()).hexdigest()}"


@dataclass(frozen=True, slots=True)
class SentEmail:
    """Resend accepted the email: its ``id``, and the ``Idempotency-Key`` that was sent."""

    id: str
    idempotency_key: str


def _resend_error(detail: str | None) -> tuple[str | None, str | None]:
    """Resend's error ``name`` and ``message`` from an error body excerpt."""
    body = error_body(detail)
    if body is None:
        return None, None
    name, message = body.get("name"), body.get("message")
    return (
        name if isinstance(name, str) else None,
        message if isinstance(message, str) else None,
    )


def _mapped(error: IntegrationError) -> IntegrationError:
    """*error* with Resend's error name in its message; a transient 409 made transient."""
    name, message = _resend_error(error.detail)
    if name is None:
        return error
    text = redact(f"{error.message}: {name}" + (f": {message}" if message else ""))
    if isinstance(error, ConflictError) and name == "concurrent_idempotent_requests":
        transient = TransientError(
            text,
            provider=error.provider,
            operation=error.operation,
            status=error.status,
            code=error.code,
            request_id=error.request_id,
            replay_safe=True,
            attempts=error.attempts,
            detail=error.detail,
        )
        transient.give_up_reason = error.give_up_reason
        return transient
    error.message = text
    error.args = (text,)
    return error


#: Resend's quota errors (HTTP 429): a plan's sending quota, not a burst to wait out
QUOTAS: dict[str, Callable[[float], float]] = {
    "daily_quota_exceeded": until_daily_reset,
    "monthly_quota_exceeded": until_monthly_reset,
}


class ResendConnector(HTTPConnector):
    """Resend's API behind a :class:`~antifragile.ResilientClient` (see the module docs).

    *api_key* and *base_url* default to ``ANTIFRAGILE_RESEND_API_KEY`` and
    ``ANTIFRAGILE_RESEND_BASE_URL``; *policy* to :func:`resend_policy` on *clock* with
    *timeout* seconds per attempt. *client* is an ``httpx.AsyncClient`` to use (yours to
    close).
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
        key = required_from(api_key, API_KEY_ENV, needs="Resend needs an API key", arg="api_key")
        self.base_url = base_url_from(base_url, BASE_URL_ENV, DEFAULT_BASE_URL)
        self.policy = policy if policy is not None else resend_policy(clock=clock, timeout=timeout)
        self._auth = {"authorization": f"Bearer {key}"}
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=self.policy,
            timeout=timeout,
            client=client,
            secrets=[key],
            not_processed=resend_error_answer,
        )
        self.client.refine = self._refine
        self.clock = clock
        self._quota = QuotaPause(PROVIDER, clock=clock, kv=quota_store)

    @property
    def quota_paused_until(self) -> float | None:
        """Epoch seconds until which sends are paused by a spent quota (``None``: they are
        not); shared by the processes of the registry's store when there is one."""
        return self._quota.until

    @quota_paused_until.setter
    def quota_paused_until(self, until: float | None) -> None:
        self._quota.until = until

    def _refine(self, error: IntegrationError, response: httpx.Response) -> IntegrationError:
        """A quota 429 (``daily_quota_exceeded``, ``monthly_quota_exceeded``) pauses sends
        until the quota resets: its ``Retry-After`` when Resend sends one, else the next
        midnight UTC (daily) or the 1st of next month (monthly)."""
        if not isinstance(error, RateLimitedError):
            return error
        name, _ = _resend_error(response.text)
        until_reset = QUOTAS.get(name or "")
        if until_reset is None:
            return error
        now = self.clock.time()
        wait = error.retry_after if "retry-after" in response.headers else None
        if wait is None or wait <= 0:
            wait = until_reset(now)
        error.retry_after = wait
        self._quota.start(now + wait)
        if self.policy.rate is not None:
            self.policy.rate.pause(wait)
        return error

    def _paused(self) -> RateLimitedError | None:
        """The refusal of a send while a spent quota pauses sends (nothing is sent)."""
        return paused_refusal(
            PROVIDER,
            SEND_EMAIL,
            self.quota_paused_until,
            self.clock.time(),
            "the sending quota is spent until it resets",
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
        reply_to: str | Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        scheduled_at: str | None = None,
    ) -> SentEmail:
        """Send one email (``POST /emails``), exactly once per *idempotency_key*.

        *sender* is Resend's ``from`` (``"Name <a@b.example>"`` or a bare address); at least
        one of *html* and *text* is required. Raises an :class:`~antifragile.IntegrationError`
        subclass when Resend does not accept the email (see the module docs).
        """
        if html is None and text is None:
            raise ConfigurationError("an email needs html or text")
        await self._quota.sync()
        paused = self._paused()
        if paused is not None:
            raise paused
        key = idempotency_key_for("send-email", idempotency_key)
        body: dict[str, Any] = {"from": sender, "to": _listed(to), "subject": subject}
        optional: dict[str, Any] = {
            "html": html,
            "text": text,
            "cc": None if cc is None else _listed(cc),
            "bcc": None if bcc is None else _listed(bcc),
            "reply_to": None if reply_to is None else _listed(reply_to),
            "headers": None if headers is None else dict(headers),
            "tags": [
                *({"name": k, "value": v} for k, v in (tags or {}).items() if k != REF_ARG),
                {"name": REF_ARG, "value": correlation_for(key)},
            ],
            "scheduled_at": scheduled_at,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        try:
            response = await self.client.post(
                "/emails",
                json=body,
                headers=self._auth,
                idempotency_key=key,
                operation=SEND_EMAIL,
            )
        except IntegrationError as exc:
            await self._quota.sync()  # a quota 429 pauses the other processes too
            mapped = _mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        email_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(email_id, str) or not email_id:
            raise UpstreamUnavailableError(
                "Resend answered 200 without an email id (malformed body)",
                provider=PROVIDER,
                operation=SEND_EMAIL,
                status=response.status_code,
                request_id=response.request.headers.get("x-request-id"),
                replay_safe=True,
                detail=response.text[:500],
            )
        return SentEmail(email_id, key)

    def __repr__(self) -> str:
        return f"ResendConnector(base_url={self.base_url!r})"


def _listed(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
