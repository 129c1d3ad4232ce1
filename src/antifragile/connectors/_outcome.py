"""The error of a call whose outcome is unknown, for providers without idempotency keys.

When a provider cannot deduplicate a repeated request (SendGrid, SMTP, Cal.com), a request that
reached it and then failed without a clear answer -- the connection dropped, the attempt timed
out, a gateway answered a bodiless or HTML 502/504 -- may or may not have taken effect. A 5xx in
the provider's *own* error format is a clear answer: the provider failed the request as a whole
and did not act on it, so it is retried (the ``*_error_answer`` rules below, one per provider,
given to each connector's :class:`~antifragile.ResilientClient` as ``not_processed=``).

Sending an unknown outcome again could duplicate the effect, so the connectors never do: they
raise :class:`OutcomeUnknownError` instead, carrying the key the request was tagged with, for
reconciliation (the provider's event webhook, activity log or the recipient's Message-ID). It is
not retryable: a durable job stops on it (dead-letter queue) rather than sending again.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from antifragile.errors import (
    DeadlineExceededError,
    ErrorCode,
    IntegrationError,
    NetworkError,
    PermanentError,
    RateLimitedError,
    TransientError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)


class OutcomeUnknownError(PermanentError):
    """The request reached the provider, which may have acted; it was **not** sent again.

    ``reconcile_key`` is the key the request carried (SendGrid ``custom_args``, an SMTP
    ``Message-ID``, Cal.com booking ``metadata``): look it up before deciding to send again.
    """

    default_code = ErrorCode.UPSTREAM_ERROR

    def __init__(self, message: str, *, reconcile_key: str | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.reconcile_key = reconcile_key


class ProviderRefusedError(PermanentError):
    """The provider refused the request for reasons of its own -- the account, its plan, its
    sending domain -- not because of the request: trying again there will not help, another
    provider may act on it (an email chain moves on)."""


def ambiguous(error: IntegrationError) -> bool:
    """Whether *error* leaves the request's outcome unknown: a transient failure after the
    request may have been handled (``replay_safe`` false). Rate limits, refusals before
    sending and permanent 4xx answers are not."""
    return not (error.replay_safe or isinstance(error, PermanentError) or not error.retryable)


def outcome_unknown(error: IntegrationError, reconcile_key: str) -> IntegrationError:
    """*error* as an :class:`OutcomeUnknownError` when it is :func:`ambiguous`, else *error*
    itself."""
    if not ambiguous(error):
        return error
    unknown = OutcomeUnknownError(
        f"outcome unknown, not sent again (reconcile with {reconcile_key!r}): {error.message}",
        provider=error.provider,
        operation=error.operation,
        status=error.status,
        request_id=error.request_id,
        replay_safe=False,
        attempts=error.attempts,
        detail=error.detail,
        reconcile_key=reconcile_key,
    )
    unknown.give_up_reason = error.give_up_reason
    return unknown


# transport failures raised before any byte of the request was written (errors/_classify.py
# names the error after them)
_NOT_SENT = ("ConnectError", "ConnectTimeout", "PoolTimeout", "ConnectionRefusedError")


def may_have_acted(error: BaseException, *, keyed: bool) -> bool:
    """Whether the provider may have acted on a request that failed with *error*.

    *keyed*: the provider deduplicates a repeated request by its idempotency key, so the
    request was sent as ``replay_safe`` and that flag says nothing of what happened: the
    error's kind does. A lost answer (a timeout, a dropped connection, a passed deadline after
    the request went out) or a 5xx that is not in the provider's own error format (a gateway's
    page, a 200 without the expected body) may hide an effect. Without a key the connector
    has said so itself (:class:`OutcomeUnknownError`, or an :func:`ambiguous` error).
    """
    if isinstance(error, OutcomeUnknownError):
        return True
    if not isinstance(error, TransientError) or isinstance(error, RateLimitedError):
        return False
    if error.message.startswith(_NOT_SENT):
        return False
    if not keyed:
        return ambiguous(error)
    if isinstance(error, UpstreamUnavailableError):
        server = error.status is not None and error.status >= 500
        return not (server and error_body(error.detail) is not None)
    return isinstance(error, UpstreamTimeoutError | NetworkError | DeadlineExceededError)


def error_body(detail: str | None) -> dict[str, Any] | None:
    """An error's body excerpt as the JSON object the provider answered, or ``None`` when it
    is not one (no body, a gateway's HTML page, cut short)."""
    if not detail:
        return None
    try:
        body = json.loads(detail)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) and body else None


# -- "not processed": a 5xx that carries the provider's own error body ---------------------------
#
# A provider that answers a 5xx in its own documented error format has looked at the request and
# failed it as a whole: nothing was done, so it is retried like any transient failure. An outcome
# is unknown only when the answer is lost after the request was sent (a reset, a read timeout) or
# when what comes back is not the provider speaking -- a bodiless or HTML 502/504 from a gateway in
# front of it, which may have lost the provider's real answer. Each rule below reads one
# provider's error format (see docs/providers/<name>.md for the rule and its source).

_MAX_RULE_BODY = 64 * 1024


def _json_of(response: httpx.Response) -> Any:
    """The response's JSON body, or ``None`` when it is not (small) JSON."""
    content = response.content
    if not content or len(content) > _MAX_RULE_BODY:
        return None
    text = content.lstrip()
    if not text.startswith((b"{", b"[")):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def graph_error_answer(response: httpx.Response) -> bool:
    """WhatsApp Cloud (Graph API): ``{"error": {"message", "type", "code": <int>, ...}}``."""
    body = _json_of(response)
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and _number(error.get("code"))


def twilio_error_answer(response: httpx.Response) -> bool:
    """Twilio: the 2010 API's ``{"code", "message", "more_info", "status"}``, the newer
    RFC 9457 ``{"type", "title", "status", "code", ...}``, or ``{"errors": [{"code", ...}]}``."""
    body = _json_of(response)
    if not isinstance(body, dict):
        return False
    if _number(body.get("code")) and (_text(body.get("message")) or _text(body.get("title"))):
        return True
    errors = body.get("errors")
    return isinstance(errors, list) and any(
        isinstance(e, dict) and _number(e.get("code")) for e in errors
    )


def sendgrid_error_answer(response: httpx.Response) -> bool:
    """SendGrid v3: ``{"errors": [{"message", "field", "help"}], "id"?}``."""
    body = _json_of(response)
    errors = body.get("errors") if isinstance(body, dict) else None
    return (
        isinstance(errors, list)
        and bool(errors)
        and all(isinstance(e, dict) and _text(e.get("message")) for e in errors)
    )


def resend_error_answer(response: httpx.Response) -> bool:
    """Resend: ``{"statusCode", "name": "<snake_case type>", "message"}``."""
    body = _json_of(response)
    return (
        isinstance(body, dict)
        and _text(body.get("name"))
        and _text(body.get("message"))
        and _number(body.get("statusCode"))
    )


def hubspot_error_answer(response: httpx.Response) -> bool:
    """HubSpot CRM v3: ``{"status": "error", "message", "correlationId", "category", ...}``."""
    body = _json_of(response)
    return (
        isinstance(body, dict)
        and body.get("status") == "error"
        and _text(body.get("message"))
        and (_text(body.get("correlationId")) or _text(body.get("category")))
    )


def shopify_error_answer(response: httpx.Response) -> bool:
    """Shopify Admin REST: ``{"errors": "<text>" | {field: [messages]}}`` (or the OAuth-style
    ``{"error": ..., "error_description": ...}``)."""
    body = _json_of(response)
    if not isinstance(body, dict):
        return False
    errors = body.get("errors")
    if _text(errors) or (isinstance(errors, dict | list) and errors):
        return True
    return _text(body.get("error"))


def calcom_error_answer(response: httpx.Response) -> bool:
    """Cal.com v2: ``{"status": "error", "timestamp", "path", "error": {"code", "message"}}``."""
    body = _json_of(response)
    if not isinstance(body, dict) or body.get("status") != "error":
        return False
    error = body.get("error")
    return isinstance(error, dict) and (_text(error.get("code")) or _text(error.get("message")))


_SLACK_TOKEN = re.compile(r"[a-z][a-z0-9_]{1,63}")


def slack_error_answer(response: httpx.Response) -> bool:
    """Slack: an incoming webhook's plain-text error string (``invalid_payload``,
    ``internal_error``...), or the Web API's ``{"ok": false, "error": "<string>"}``."""
    content = response.content
    if not content or len(content) > 256:
        return False
    body = _json_of(response)
    if body is not None:
        return isinstance(body, dict) and body.get("ok") is False and _text(body.get("error"))
    if "html" in response.headers.get("content-type", "").lower():
        return False
    try:
        text = content.decode("ascii").strip()
    except UnicodeDecodeError:
        return False
    return _SLACK_TOKEN.fullmatch(text) is not None


def mandrill_error_answer(response: httpx.Response) -> bool:
    """Mailchimp Transactional (Mandrill): ``{"status": "error", "code": <int>, "name",
    "message"}``."""
    body = _json_of(response)
    return (
        isinstance(body, dict)
        and body.get("status") == "error"
        and _text(body.get("name"))
        and _number(body.get("code"))
    )
