"""SendGrid v3: send transactional email, at most once, reconcilable.

::

    async with SendGridConnector() as sendgrid:      # ANTIFRAGILE_SENDGRID_* from the environment
        sent = await sendgrid.send_email(
            sender="orders@shop.example",
            to="owner@shop.example",
            subject="New order",
            text="...",
            idempotency_key=f"order-summary/{order_id}",
        )

**Configuration.** ``ANTIFRAGILE_SENDGRID_API_KEY`` holds the API key (``SG....``) and
``ANTIFRAGILE_SENDGRID_BASE_URL`` the API's address (``https://api.sendgrid.com`` when unset;
``{sandbox.url}/sendgrid`` for the sandbox). Arguments to :class:`SendGridConnector` override
both.

**Default policy** (:func:`sendgrid_policy`): SendGrid does not publish the Mail Send limit, so a
token bucket of 100 requests per second (burst 100) adapts to the ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (epoch) headers of every answer. Up to 5
attempts with exponential back-off from 0.5 s (capped at 10 s, full jitter); a 429 waits until
``X-RateLimit-Reset``; 10 s per attempt, 60 s per call; a circuit breaker for the provider.

**Errors**: 401/403 :class:`~antifragile.AuthenticationError`, 400/413
:class:`~antifragile.InvalidRequestError` (SendGrid's ``errors[].message`` and ``field`` added
to the message), 429 :class:`~antifragile.RateLimitedError`; a failure that happened *before*
the request was sent (connection refused, circuit open) is retried or raised as it is; any
failure *after* it may have reached SendGrid -- a 5xx, a reset, a timeout, a 202 without
``X-Message-Id`` -- is :class:`OutcomeUnknownError`.

**Exactly once.** SendGrid has no idempotency key: the same request sent twice is two emails. So the
connector never sends a request again once SendGrid may have received it: a 429 (SendGrid refused
it) is retried, a failure before sending is retried, but an ambiguous failure raises
:class:`OutcomeUnknownError` -- not retryable, so a durable job parks it in the dead-letter queue
instead of sending again. Every request is tagged for reconciliation with the caller's key in
``custom_args`` (``{"antifragile_key": "send-email/<key>"}``) and its correlation
(``"antifragile_ref"``: :func:`~antifragile.connectors.correlation_for` of that key, no personal
data), which SendGrid merges into every Event Webhook event of the message: an
``OutcomeUnknownError`` is resolved by looking for that key among the events (``processed`` means it
was sent -- do nothing; no event within the webhook's delay means it was not -- send again with the
same key). The guarantee is therefore *at most once* automatically, *exactly once* after
reconciliation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from antifragile.connectors._base import HTTPConnector, base_url_from, masks_pii, required_from
from antifragile.connectors._correlation import REF_ARG, correlation_for
from antifragile.connectors._outcome import (
    OutcomeUnknownError,
    error_body,
    outcome_unknown,
    sendgrid_error_answer,
)
from antifragile.connectors._resend import idempotency_key_for
from antifragile.errors import ConfigurationError, IntegrationError, redact
from antifragile.http import ResilientClient
from antifragile.policies import SYSTEM_CLOCK, Clock, Exponential, Policy, Retry, TokenBucket

BASE_URL_ENV = "ANTIFRAGILE_SENDGRID_BASE_URL"
API_KEY_ENV = "ANTIFRAGILE_SENDGRID_API_KEY"
DEFAULT_BASE_URL = "https://api.sendgrid.com"
PROVIDER = "sendgrid"
SEND_EMAIL = "send_email"

#: the ``custom_args`` entry that carries the reconciliation key
KEY_ARG = "antifragile_key"

__all__ = ["OutcomeUnknownError", "SendGridConnector", "SendGridSent", "sendgrid_policy"]


def sendgrid_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`SendGridConnector` (see the module docs)."""
    return Policy(
        PROVIDER,
        timeout=timeout,
        total_timeout=60.0,
        retry=Retry(attempts=5, backoff=Exponential(0.5, cap=10.0)),
        rate=TokenBucket(100.0, burst=100.0, max_wait=10.0),
        clock=clock,
    )


@dataclass(frozen=True, slots=True)
class SendGridSent:
    """SendGrid accepted the email: its ``X-Message-Id`` and the reconciliation key sent."""

    message_id: str
    idempotency_key: str


def _sendgrid_errors(detail: str | None) -> str | None:
    """``message (field)`` of each entry of SendGrid's ``errors`` array, joined."""
    body = error_body(detail)
    errors = body.get("errors") if body is not None else None
    if not isinstance(errors, list):
        return None
    parts: list[str] = []
    for entry in errors:
        if not isinstance(entry, dict) or not isinstance(entry.get("message"), str):
            continue
        field = entry.get("field")
        has_field = isinstance(field, str) and field not in ("", "null")
        parts.append(f"{entry['message']} ({field})" if has_field else entry["message"])
    return "; ".join(parts) or None


def _address(value: str | Mapping[str, str]) -> dict[str, str]:
    if isinstance(value, str):
        return {"email": value}
    return dict(value)


def _addresses(value: str | Mapping[str, str] | Sequence[str | Mapping[str, str]]) -> list[Any]:
    if isinstance(value, str | Mapping):
        return [_address(value)]
    return [_address(v) for v in value]


Address = str | Mapping[str, str]


class SendGridConnector(HTTPConnector):
    """SendGrid's v3 Mail Send behind a :class:`~antifragile.ResilientClient` (module docs).

    *api_key* and *base_url* default to ``ANTIFRAGILE_SENDGRID_API_KEY`` and
    ``ANTIFRAGILE_SENDGRID_BASE_URL``; *policy* to :func:`sendgrid_policy` on *clock* with
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
    ) -> None:
        key = required_from(api_key, API_KEY_ENV, needs="SendGrid needs an API key", arg="api_key")
        self.base_url = base_url_from(base_url, BASE_URL_ENV, DEFAULT_BASE_URL)
        self.policy = (
            policy if policy is not None else sendgrid_policy(clock=clock, timeout=timeout)
        )
        self._auth = {"authorization": f"Bearer {key}"}
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=self.policy,
            timeout=timeout,
            client=client,
            secrets=[key],
            not_processed=sendgrid_error_answer,
        )

    @masks_pii("sender", "to", "cc", "bcc", "reply_to")
    async def send_email(
        self,
        *,
        sender: Address,
        to: Address | Sequence[Address],
        subject: str,
        idempotency_key: str,
        html: str | None = None,
        text: str | None = None,
        cc: Address | Sequence[Address] | None = None,
        bcc: Address | Sequence[Address] | None = None,
        reply_to: Address | None = None,
        headers: Mapping[str, str] | None = None,
        categories: Sequence[str] | None = None,
        custom_args: Mapping[str, str] | None = None,
    ) -> SendGridSent:
        """Send one email (``POST /v3/mail/send``), never twice for one *idempotency_key*.

        Addresses are ``"a@b.example"`` or ``{"email": ..., "name": ...}``; at least one of
        *html* and *text* is required. Raises :class:`OutcomeUnknownError` when SendGrid may
        have sent it (see the module docs), other :class:`~antifragile.IntegrationError`
        subclasses when it did not.
        """
        if html is None and text is None:
            raise ConfigurationError("an email needs html or text")
        key = idempotency_key_for("send-email", idempotency_key)
        person: dict[str, Any] = {"to": _addresses(to)}
        if cc is not None:
            person["cc"] = _addresses(cc)
        if bcc is not None:
            person["bcc"] = _addresses(bcc)
        content = [{"type": "text/plain", "value": text}] if text is not None else []
        if html is not None:
            content.append({"type": "text/html", "value": html})
        body: dict[str, Any] = {
            "personalizations": [person],
            "from": _address(sender),
            "subject": subject,
            "content": content,
            "custom_args": {**(custom_args or {}), KEY_ARG: key, REF_ARG: correlation_for(key)},
        }
        if reply_to is not None:
            body["reply_to"] = _address(reply_to)
        if headers:
            body["headers"] = dict(headers)
        if categories:
            body["categories"] = list(categories)
        try:
            response = await self.client.post(
                "/v3/mail/send", json=body, headers=self._auth, operation=SEND_EMAIL
            )
        except IntegrationError as exc:
            raise _mapped(exc, key) from exc
        message_id = response.headers.get("x-message-id")
        if not message_id:
            raise OutcomeUnknownError(
                f"SendGrid answered {response.status_code} without X-Message-Id; outcome "
                f"unknown, not sent again (reconcile with {key!r})",
                provider=PROVIDER,
                operation=SEND_EMAIL,
                status=response.status_code,
                replay_safe=False,
                detail=response.text[:500],
                reconcile_key=key,
            )
        return SendGridSent(message_id, key)

    def __repr__(self) -> str:
        return f"SendGridConnector(base_url={self.base_url!r})"


def _mapped(error: IntegrationError, key: str) -> IntegrationError:
    """SendGrid's messages added to *error*; an ambiguous failure made OutcomeUnknownError."""
    messages = _sendgrid_errors(error.detail)
    if messages is not None:
        text = redact(f"{error.message}: {messages}")
        error.message = text
        error.args = (text,)
    return outcome_unknown(error, key)
