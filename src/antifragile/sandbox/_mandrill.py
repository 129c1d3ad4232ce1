"""A Mailchimp Transactional (Mandrill) simulator: ``messages/send`` and ``messages/search``.

* **Auth** -- the API key travels in the JSON body as ``key``. No key, or one outside
  ``api_keys`` (when given), is 401 ``Invalid_Key`` (``{"status": "error", "code": -1, "name":
  "Invalid_Key", "message": "Invalid API key"}``).
* **Validation** -- a body that is not a JSON object, no ``message``, no ``to`` recipient, an
  address that is not one, no ``from_email``, or neither ``html`` nor ``text`` is 400
  ``ValidationError`` (code -2).
* **Success** -- 200 with one entry per recipient ``{"email", "status", "reject_reason",
  "queued_reason"?, "_id"}``. A recipient on the simulator's rejection list
  (:meth:`MandrillSimulator.reject`) is ``rejected`` with its reason and ``_id``, a malformed one
  ``invalid``; the others are ``sent`` -- or ``queued`` with :attr:`MandrillSimulator.queued_reason`
  when one is set (``hourly-quota-exhausted``...). A send with at least one accepted recipient
  is recorded as an effect whose ``idempotency_key`` is the ``antifragile_ref`` of its
  ``metadata`` (Mandrill itself has no idempotency: a repeated request sends again).
* **Errors** -- ``{"status": "error", "code", "name", "message"}``: 400 ``ValidationError``,
  401 ``Invalid_Key``, 402 ``PaymentRequired`` (10), 404 ``Unknown_Subaccount`` (12), 429
  ``RequestLimitExceeded``, 500 ``GeneralError`` (-1), 503 ``ServiceUnavailable``; a fault with
  a ``code`` sets the body's code.
* **Search** -- ``POST /messages/search`` ``{"key", "query", "limit"?}`` finds the messages
  whose metadata matches ``u_<field>:<value>`` (or whose recipient is the query), newest first,
  ``[{"_id", "ts", "email", "state", "metadata", ...}]``; it allows ``search_limit`` calls per
  minute (20, as Mandrill enforces since 2023-04-10), then 429 ``RequestLimitExceeded``.
* **Webhooks** -- once a send is accepted, and when the sandbox has a callback URL for
  ``mandrill``: a form POST (``application/x-www-form-urlencoded``) with one field,
  ``mandrill_events``, a JSON array of events ``{"event", "ts", "_id", "msg": {"_id", "ts",
  "email", "sender", "subject", "state", "tags", "metadata"}}`` -- ``send`` for each accepted
  recipient (then ``hard_bounce`` when the webhook faults make it undeliverable) -- signed with
  ``X-Mandrill-Signature``: base64 HMAC-SHA1 with :attr:`MandrillSimulator.webhook_key` over the
  callback URL followed by each POST field's name and value, names sorted.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

from antifragile.inbound import mandrill_signature as mandrill_signature
from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator
from antifragile.sandbox._status import Notice

_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_QUERY = re.compile(r"^u_([A-Za-z0-9_]+):(\S+)$")

#: the metadata key that carries the sender's correlation
REF_ARG = "antifragile_ref"
#: seconds between failed webhook deliveries (Mandrill's schedule is not documented)
RETRY_DELAYS: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0, 10800.0, 21600.0)

#: the recipient reject reasons Mandrill answers with
REJECT_REASONS = frozenset(
    {
        "hard-bounce",
        "soft-bounce",
        "spam",
        "unsub",
        "custom",
        "invalid-sender",
        "invalid",
        "test-mode-limit",
        "unsigned",
        "rule",
    }
)

_ERRORS: dict[int, tuple[int, str, str]] = {
    400: (-2, "ValidationError", "Validation error"),
    401: (-1, "Invalid_Key", "Invalid API key"),
    402: (10, "PaymentRequired", "This feature is only available for accounts with a balance."),
    404: (12, "Unknown_Subaccount", "No subaccount exists with the id given"),
    429: (-1, "RequestLimitExceeded", "Request rate limit exceeded. Retry after a brief delay."),
    500: (
        -1,
        "GeneralError",
        "An unknown error occurred processing your request. Please try again later.",
    ),
    503: (-1, "ServiceUnavailable", "The service is unavailable. Please try again later."),
}


class MandrillSimulator(Simulator):
    """Mandrill's ``messages/send`` and ``messages/search`` with its key-in-body auth,
    per-recipient statuses, error bodies and signed webhooks."""

    name = "mandrill"
    sends_webhooks = True
    settable = frozenset({"search_limit"})

    def __init__(
        self,
        *,
        api_keys: Iterable[str] | None = None,
        webhook_key: str | None = None,
        search_limit: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_keys = None if api_keys is None else frozenset(api_keys)
        #: the key the webhooks are signed with (configure the receiver with it)
        self.webhook_key = webhook_key or secrets.token_urlsafe(16)
        self.search_limit = search_limit
        #: the ``queued_reason`` of accepted recipients (``None``: they are ``sent``)
        self.queued_reason: str | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._rejects: dict[str, str] = {}
        self._messages: list[dict[str, Any]] = []
        self._searches: list[float] = []
        super().__init__()

    def routes(self) -> Iterable[Route]:
        return [
            Route("POST", "/messages/send", self.send),
            Route("POST", "/messages/search", self.search),
        ]

    def reset(self) -> None:
        with self._lock:
            self._rejects.clear()
            self._messages.clear()
            self._searches.clear()
            self.queued_reason = None

    def reject(self, address: str, reason: str = "hard-bounce") -> None:
        """Put *address* on the rejection list: sends to it are ``rejected`` with *reason*."""
        if reason not in REJECT_REASONS:
            raise ValueError(f"reason is one of {', '.join(sorted(REJECT_REASONS))}")
        with self._lock:
            self._rejects[address.lower()] = reason

    # -- the provider's answers -----------------------------------------------------------------

    def error(self, status: int, message: str | None = None) -> Reply:
        code, name, text = _ERRORS.get(status, _ERRORS[500] if status >= 500 else _ERRORS[400])
        return Reply(
            status, {"status": "error", "code": code, "name": name, "message": message or text}
        )

    def coded_error(self, status: int, code: int) -> Reply:
        reply = self.error(status)
        return Reply(status, {**reply.json, "code": code})

    def rate_limited(self, retry_after: float) -> Reply:
        return self.error(429)

    def authenticate(self, request: IncomingRequest) -> Reply | None:
        try:
            body = request.json()
        except ValueError:
            return self.error(400, "You must specify a key value")
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key:
            return self.error(401, "You must specify a key value")
        if self.api_keys is not None and key not in self.api_keys:
            return self.error(401)
        return None

    # -- POST /messages/send ----------------------------------------------------------------------

    def _problem(self, message: Any) -> str | None:
        if not isinstance(message, dict):
            return "Validation error: {'message':['Please enter an array']}"
        to = message.get("to")
        if not isinstance(to, list) or not to:
            return "Validation error: {'message':{'to':['Please enter an array']}}"
        if not all(isinstance(r, dict) and isinstance(r.get("email"), str) for r in to):
            return "Validation error: {'message':{'to':['An email address is required']}}"
        sender = message.get("from_email")
        if not isinstance(sender, str) or not _ADDRESS.match(sender):
            return "Validation error: {'message':{'from_email':['An email address is required']}}"
        if not isinstance(message.get("html"), str) and not isinstance(message.get("text"), str):
            return "Validation error: {'message':['html or text is required']}"
        return None

    def send(self, call: Call) -> Reply:
        body = call.json()
        message = body.get("message")
        problem = self._problem(message)
        if problem is not None:
            return self.error(400, problem)
        metadata = message.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        now = self._clock()
        results: list[dict[str, Any]] = []
        accepted: list[dict[str, Any]] = []
        with self._lock:
            for recipient in message["to"]:
                email = recipient["email"]
                entry: dict[str, Any] = {"email": email, "_id": secrets.token_hex(16)}
                reason = self._rejects.get(email.lower())
                if not _ADDRESS.match(email):
                    entry.update(status="invalid", reject_reason=None)
                elif reason is not None:
                    entry.update(status="rejected", reject_reason=reason)
                else:
                    status = "queued" if self.queued_reason else "sent"
                    entry.update(status=status, reject_reason=None)
                    if self.queued_reason:
                        entry["queued_reason"] = self.queued_reason
                    record = {
                        "_id": entry["_id"],
                        "ts": int(now),
                        "email": email,
                        "sender": message["from_email"],
                        "subject": message.get("subject", ""),
                        "state": status,
                        "tags": list(message.get("tags") or []),
                        "metadata": dict(metadata),
                    }
                    self._messages.append(record)
                    accepted.append(record)
                results.append(entry)
        if accepted:
            ref = metadata.get(REF_ARG)
            call.commit(accepted[0]["_id"], message, ref if isinstance(ref, str) else None)
            self._report(accepted)
        return Reply(200, results)

    # -- POST /messages/search --------------------------------------------------------------------

    def search(self, call: Call) -> Reply:
        now = self._clock()
        with self._lock:
            self._searches = [t for t in self._searches if now - t < 60.0]
            if len(self._searches) >= self.search_limit:
                return self.error(429)
            self._searches.append(now)
            messages = list(self._messages)
        body = call.json()
        query = body.get("query") if isinstance(body.get("query"), str) else "*"
        limit = body.get("limit") if isinstance(body.get("limit"), int) else 100
        match = _QUERY.match(query.strip())
        found = [
            m
            for m in reversed(messages)
            if query.strip() in ("", "*")
            or (match is not None and str(m["metadata"].get(match.group(1))) == match.group(2))
            or m["email"].lower() == query.strip().lower()
        ]
        return Reply(200, found[: max(0, limit)])

    # -- webhooks -----------------------------------------------------------------------------

    def _report(self, accepted: list[dict[str, Any]]) -> None:
        hooks = self.webhooks
        if hooks is None:
            return
        url = hooks.url(self.name)
        fault = hooks.decide(self.name)
        failed = fault is not None and fault.kind == "undeliverable"
        statuses = ["send", "hard_bounce"] if failed else ["send"]
        first = accepted[0]
        ref = first["metadata"].get(REF_ARG)
        correlation = ref if isinstance(ref, str) else None
        notices: list[Notice] = []
        if url:
            for i, event in enumerate(statuses):
                events = [self.event(event, m, m["ts"] + i) for m in accepted]
                params = {"mandrill_events": json.dumps(events, separators=(",", ":"))}
                notices.append(
                    Notice(
                        self.name,
                        event,
                        first["_id"],
                        correlation,
                        url,
                        urlencode(params).encode(),
                        "application/x-www-form-urlencoded",
                        self._signer(url, params),
                        RETRY_DELAYS,
                    )
                )
        hooks.emit(
            self.name,
            first["_id"],
            correlation,
            notices,
            statuses=statuses,
            fault=fault,
            error_code=(fault.code if fault is not None else None) or 550 if failed else None,
        )

    def _signer(self, url: str, params: Mapping[str, str]) -> Callable[[bytes], dict[str, str]]:
        signature = mandrill_signature(self.webhook_key, url, params)
        return lambda body: {"X-Mandrill-Signature": signature}

    @staticmethod
    def event(kind: str, message: Mapping[str, Any], ts: int) -> dict[str, Any]:
        """One webhook event of *kind* about the sent *message* (as :meth:`search` lists it)."""
        state = {"send": "sent", "hard_bounce": "bounced", "soft_bounce": "soft-bounced"}.get(
            kind, message["state"]
        )
        msg = {**message, "state": state, "ts": message["ts"]}
        if kind == "hard_bounce":
            msg.update(bounce_description="bad_mailbox", diag="smtp;550 5.1.1 unknown user")
        return {"event": kind, "ts": ts, "_id": message["_id"], "msg": msg}
