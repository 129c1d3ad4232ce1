"""A Resend simulator: ``POST /emails`` as the provider answers it.

* **Auth** -- ``Authorization: Bearer re_...``. No bearer token, or one that is not a Resend key
  (``re_`` prefix), is 401 ``missing_api_key``; a well-formed key outside ``api_keys`` (when
  given) is 403 ``invalid_api_key``.
* **Validation** -- a body that is not a JSON object is 400 ``validation_error``; a missing
  ``from``, ``to`` or ``subject`` is 422 ``missing_required_field``; a bad sender is 422
  ``invalid_from_address``; bad recipients (more than 50, not addresses), ``template`` together
  with ``html``/``text``, or bad ``tags`` are 422 ``validation_error``.
* **Success** -- 200 ``{"id": "<uuid>"}``; the email is recorded as an effect.
* **Errors** -- ``{"statusCode", "name", "message"}``, ``name`` in snake case.
* **Rate limit** -- a fixed window of ``rate_limit`` requests per ``per`` seconds (Resend's
  default is 2 per second per team); every answer carries ``ratelimit-limit``,
  ``ratelimit-remaining`` and ``ratelimit-reset`` (seconds), and a refused request gets 429
  ``rate_limit_exceeded`` with ``retry-after``.
* **Quota** -- with ``daily_quota``, the emails beyond that many (until :meth:`reset`) get 429
  ``daily_quota_exceeded`` ("You have reached your daily email sending quota."), without
  ``retry-after`` (whether Resend sends one on quota errors is not documented).
* **Idempotency** -- ``Idempotency-Key`` (1 to 256 characters, else 400
  ``invalid_idempotency_key``) is kept for ``idempotency_ttl`` seconds (24 h): the same key with
  the same body gets the first answer again and sends nothing; the same key with another body is
  409 ``invalid_idempotent_request``.
* **Webhooks** -- once an email is sent (not for an idempotent replay), and when the sandbox has
  a callback URL for ``resend``: ``email.sent`` then ``email.delivered`` (``email.bounced``
  instead when the webhook faults make it undeliverable), ``{"type", "created_at", "data":
  {"email_id", "from", "to", "subject", "created_at", "tags": {name: value}}}``, signed the Svix
  way: ``svix-id`` (``msg_...``, the same on every retry), ``svix-timestamp`` (Unix seconds) and
  ``svix-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`` with
  :attr:`ResendSimulator.webhook_secret` (``whsec_<base64>``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator
from antifragile.sandbox._status import RETRY_DELAYS, Notice, svix_secret, svix_signature

_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_NAMED = re.compile(r"^[^<>]*<([^<>]+)>$")
_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

_NAMES: dict[int, tuple[str, str]] = {
    400: ("validation_error", "The request is invalid."),
    401: ("missing_api_key", "Missing API key in the authorization header."),
    403: ("invalid_api_key", "API key is invalid."),
    404: ("not_found", "The requested endpoint does not exist."),
    405: ("method_not_allowed", "Method is not allowed for the requested path."),
    409: ("invalid_idempotent_request", "Same idempotency key used with a different payload."),
    422: ("validation_error", "The request is invalid."),
    429: ("rate_limit_exceeded", "Too many requests."),
    500: ("application_error", "An unexpected error occurred."),
    502: ("internal_server_error", "An unexpected error occurred."),
    503: ("service_unavailable", "The service is temporarily unavailable."),
    504: ("internal_server_error", "An unexpected error occurred."),
}


def _address(value: str) -> str | None:
    """The bare address in ``a@b.c`` or ``Name <a@b.c>``; ``None`` when it is not one."""
    named = _NAMED.match(value.strip())
    bare = named.group(1).strip() if named else value.strip()
    return bare if _ADDRESS.match(bare) else None


def _fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class ResendSimulator(Simulator):
    """Resend's ``POST /emails`` with its auth, validation, rate limit and idempotency keys."""

    name = "resend"
    sends_webhooks = True

    def __init__(
        self,
        *,
        api_keys: Iterable[str] | None = None,
        rate_limit: int = 2,
        per: float = 1.0,
        idempotency_ttl: float = 24 * 3600.0,
        webhook_secret: str | None = None,
        daily_quota: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.webhook_secret = webhook_secret or svix_secret()
        self.api_keys = None if api_keys is None else frozenset(api_keys)
        self.rate_limit = rate_limit
        self.per = per
        self.idempotency_ttl = idempotency_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._window: float | None = None
        self._used = 0
        self._keys: dict[str, tuple[str, Reply, float]] = {}
        self.daily_quota = daily_quota
        self._sent_today = 0
        super().__init__()

    def routes(self) -> Iterable[Route]:
        return [Route("POST", "/emails", self.send_email)]

    def reset(self) -> None:
        with self._lock:
            self._window, self._used = None, 0
            self._keys.clear()
            self._sent_today = 0

    # -- the provider's answers -----------------------------------------------------------------

    def error(self, status: int, message: str | None = None, name: str | None = None) -> Reply:
        default_name, default_message = _NAMES.get(
            status,
            ("application_error", "An unexpected error occurred.")
            if status >= 500
            else ("validation_error", "The request is invalid."),
        )
        return Reply(
            status,
            {
                "statusCode": status,
                "name": name or default_name,
                "message": message or default_message,
            },
        )

    def rate_limited(self, retry_after: float) -> Reply:
        window = "second" if self.per == 1 else f"{self.per:g} seconds"
        reply = self.error(
            429, f"Too many requests. You can only make {self.rate_limit} requests per {window}."
        )
        return reply.with_headers({"retry-after": str(max(1, math.ceil(retry_after)))})

    def _window_state(self, now: float) -> tuple[int, float]:
        """Requests left in the current window and seconds until it resets (lock held)."""
        if self._window is None or now - self._window >= self.per:
            return self.rate_limit, self.per
        return max(0, self.rate_limit - self._used), self._window + self.per - now

    def decorate(self, request: IncomingRequest, reply: Reply) -> Reply:
        with self._lock:
            remaining, reset = self._window_state(self._clock())
        return reply.with_headers(
            {
                "ratelimit-limit": str(self.rate_limit),
                "ratelimit-remaining": str(remaining),
                "ratelimit-reset": str(max(1, math.ceil(reset))),
            }
        )

    def throttle(self, request: IncomingRequest) -> Reply | None:
        now = self._clock()
        with self._lock:
            if self._window is None or now - self._window >= self.per:
                self._window, self._used = now, 0
            if self._used < self.rate_limit:
                self._used += 1
                return None
            wait = self._window + self.per - now
        return self.rate_limited(wait)

    def authenticate(self, request: IncomingRequest) -> Reply | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key.startswith("re_"):
            return self.error(401)
        if self.api_keys is not None and key not in self.api_keys:
            return self.error(403)
        return None

    # -- POST /emails ---------------------------------------------------------------------------

    def _validate(self, body: Any) -> Reply | None:
        if not isinstance(body, dict):
            return self.error(400, "The request body must be a JSON object.")
        for required in ("from", "to", "subject"):
            if body.get(required) in (None, "", []):
                return self.error(
                    422, f"Missing `{required}` field.", name="missing_required_field"
                )
        sender = body["from"]
        if not isinstance(sender, str) or _address(sender) is None:
            return self.error(
                422,
                "Invalid `from` field. The email address needs to follow the "
                "`email@example.com` or `Name <email@example.com>` format.",
                name="invalid_from_address",
            )
        for field_name in ("to", "cc", "bcc", "reply_to"):
            value = body.get(field_name)
            if value is None:
                continue
            recipients = [value] if isinstance(value, str) else value
            if not isinstance(recipients, list) or not all(
                isinstance(r, str) and _address(r) is not None for r in recipients
            ):
                return self.error(422, f"Invalid `{field_name}` field.")
            if len(recipients) > 50:
                return self.error(422, f"Too many recipients in `{field_name}` (at most 50).")
        if not isinstance(body["subject"], str):
            return self.error(422, "Invalid `subject` field.")
        for text_field in ("html", "text"):
            if text_field in body and not isinstance(body[text_field], str):
                return self.error(422, f"Invalid `{text_field}` field.")
        if "template" in body and ("html" in body or "text" in body):
            return self.error(422, "`template` cannot be used with `html` or `text`.")
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(
            isinstance(t, dict)
            and isinstance(t.get("name"), str)
            and isinstance(t.get("value"), str)
            and _TAG.match(t["name"])
            and _TAG.match(t["value"])
            for t in tags
        ):
            return self.error(
                422,
                "Tags should only contain ASCII letters, numbers, underscores, or dashes.",
            )
        return None

    def send_email(self, call: Call) -> Reply:
        key = call.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 256:
            return self.error(
                400,
                "The key must be between 1-256 chars.",
                name="invalid_idempotency_key",
            )
        try:
            body = call.json()
        except ValueError:
            return self.error(400, "The request body is not valid JSON.")
        invalid = self._validate(body)
        if invalid is not None:
            return invalid
        fingerprint = _fingerprint(body)
        now = self._clock()
        with self._lock:
            if key is not None:
                seen = self._keys.get(key)
                if seen is not None and now - seen[2] < self.idempotency_ttl:
                    if seen[0] != fingerprint:
                        return self.error(
                            409,
                            "This idempotency key has already been used on a request that "
                            "had a different payload. Retrying this request is useless "
                            "without changing the idempotency key or payload.",
                            name="invalid_idempotent_request",
                        )
                    return seen[1]
            if self.daily_quota is not None and self._sent_today >= self.daily_quota:
                return self.error(
                    429,
                    "You have reached your daily email sending quota.",
                    name="daily_quota_exceeded",
                )
            self._sent_today += 1
            email_id = str(uuid.uuid4())
            reply = Reply(200, {"id": email_id})
            call.commit(email_id, body, key)
            if key is not None:
                self._keys[key] = (fingerprint, reply, now)
        self._report(email_id, body)
        return reply

    # -- webhooks -------------------------------------------------------------------------------

    def _report(self, email_id: str, body: dict[str, Any]) -> None:
        hooks = self.webhooks
        if hooks is None:
            return
        url = hooks.url(self.name)
        fault = hooks.decide(self.name)
        failed = fault is not None and fault.kind == "undeliverable"
        statuses = ["email.sent", "email.bounced" if failed else "email.delivered"]
        tags = {t["name"]: t["value"] for t in body.get("tags", [])}
        ref = tags.get("antifragile_ref")
        notices: list[Notice] = []
        if url:
            for status in statuses:
                payload = self.event(email_id, body, status, tags)
                msg_id = "msg_" + secrets.token_urlsafe(18)
                notices.append(
                    Notice(
                        self.name,
                        status,
                        email_id,
                        ref,
                        url,
                        json.dumps(payload, separators=(",", ":")).encode(),
                        "application/json",
                        functools.partial(self._sign, msg_id),
                        RETRY_DELAYS[self.name],
                    )
                )
        hooks.emit(
            self.name, email_id, ref, notices, statuses=statuses, fault=fault, error_code=None
        )

    def _sign(self, msg_id: str, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        return {
            "svix-id": msg_id,
            "svix-timestamp": timestamp,
            "svix-signature": svix_signature(self.webhook_secret, msg_id, timestamp, body),
        }

    @staticmethod
    def event(
        email_id: str, body: dict[str, Any], kind: str, tags: dict[str, str]
    ) -> dict[str, Any]:
        """The webhook event *kind* (``email.delivered``...) of the email *body*."""
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        to = body["to"]
        data: dict[str, Any] = {
            "email_id": email_id,
            "from": body["from"],
            "to": [to] if isinstance(to, str) else list(to),
            "subject": body["subject"],
            "created_at": now,
            "tags": tags,
        }
        if kind == "email.bounced":
            data["bounce"] = {
                "type": "Permanent",
                "subType": "General",
                "message": "The recipient's email provider sent a hard bounce.",
            }
        return {"type": kind, "created_at": now, "data": data}
