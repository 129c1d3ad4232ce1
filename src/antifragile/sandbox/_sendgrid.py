"""A SendGrid v3 simulator: ``POST /v3/mail/send`` as the provider answers it.

* **Auth** -- ``Authorization: Bearer SG....``. No bearer token, one that is not a SendGrid
  key (``SG.`` prefix), or a key outside ``api_keys`` (when given) is 401 with
  ``authorization required``.
* **Validation** -- 400 with one entry per problem found first: a body that is not a JSON
  object, no ``personalizations`` (or more than 1000), a personalization without ``to``, an
  address that is not one, more than 1000 recipients in all, an address repeated across
  ``to``/``cc``/``bcc`` of a personalization, no ``from``, no subject (top level or in every
  personalization) unless ``template_id``, no ``content`` unless ``template_id``, empty content,
  ``text/html`` before ``text/plain``.
* **Success** -- 202 with an empty body and an ``X-Message-Id`` header; the email is recorded as
  an effect whose ``idempotency_key`` is the ``antifragile_key`` of ``custom_args`` when the
  request carries one (SendGrid itself has no idempotency: a repeated request sends again).
* **Errors** -- ``{"errors": [{"message", "field", "help"}]}``.
* **Rate limit** -- a fixed window of ``rate_limit`` requests per ``per`` seconds; every answer
  carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (Unix epoch
  seconds); a refused request gets 429 ``too many requests`` (no ``Retry-After``: the reset
  header says when).
* **Event Webhook** -- once an email is accepted, and when the sandbox has a callback URL for
  ``sendgrid``: a POST per status, each a JSON array of one event per recipient --
  ``processed`` then ``delivered`` (``bounce`` instead when the webhook faults make it
  undeliverable) -- with ``email``, ``timestamp``, ``event``, ``smtp-id``, ``sg_event_id``,
  ``sg_message_id`` (``<X-Message-Id>.filter...``), ``category`` and the request's
  ``custom_args`` merged in as top-level fields (reserved names are not overridden). Signed
  ECDSA P-256 over ``timestamp + body``: ``X-Twilio-Email-Event-Webhook-Signature`` (base64
  DER) and ``X-Twilio-Email-Event-Webhook-Timestamp``, with a key pair made by the simulator;
  configure the receiver with :attr:`SendGridSimulator.event_webhook_public_key`.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator
from antifragile.sandbox._status import RETRY_DELAYS, EventWebhookKey, Notice

_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_HELP = "https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors"
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

#: the key of ``custom_args`` that carries the sender's idempotency key
KEY_ARG = "antifragile_key"
#: the key of ``custom_args`` that carries the sender's correlation
REF_ARG = "antifragile_ref"
#: event fields ``custom_args`` never override
_RESERVED = frozenset(
    {"email", "timestamp", "event", "smtp-id", "sg_event_id", "sg_message_id", "category"}
)

_MESSAGES: dict[int, str] = {
    400: "Bad Request",
    401: "authorization required",
    403: "access forbidden",
    404: "not found",
    405: "method not allowed",
    413: "payload too large",
    429: "too many requests",
}


def _message_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(22))


def _problem(message: str, field: str | None) -> dict[str, Any]:
    return {"message": message, "field": field, "help": _HELP}


class SendGridSimulator(Simulator):
    """SendGrid's ``POST /v3/mail/send`` with its auth, validation and rate-limit headers."""

    name = "sendgrid"
    sends_webhooks = True

    def __init__(
        self,
        *,
        api_keys: Iterable[str] | None = None,
        rate_limit: int = 600,
        per: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_keys = None if api_keys is None else frozenset(api_keys)
        self.rate_limit = rate_limit
        self.per = per
        self._clock = clock
        self._lock = threading.Lock()
        self._window: float | None = None
        self._used = 0
        self.event_webhook_key = EventWebhookKey()
        super().__init__()

    @property
    def event_webhook_public_key(self) -> str:
        """The Event Webhook's verification key: base64 DER SubjectPublicKeyInfo (P-256)."""
        return self.event_webhook_key.public_key

    def routes(self) -> Iterable[Route]:
        return [Route("POST", "/v3/mail/send", self.send_mail)]

    def reset(self) -> None:
        with self._lock:
            self._window, self._used = None, 0

    # -- the provider's answers -----------------------------------------------------------------

    def error(self, status: int, message: str | None = None, field: str | None = None) -> Reply:
        text = message or _MESSAGES.get(
            status, "internal server error" if status >= 500 else "Bad Request"
        )
        return Reply(status, {"errors": [_problem(text, field)]})

    def rate_limited(self, retry_after: float) -> Reply:
        reset = math.ceil(self._clock() + retry_after)
        reply = Reply(429, {"errors": [{"field": None, "message": "too many requests"}]})
        return reply.with_headers(
            {
                "X-RateLimit-Limit": str(self.rate_limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset),
            }
        )

    def decorate(self, request: IncomingRequest, reply: Reply) -> Reply:
        now = self._clock()
        with self._lock:
            if self._window is None or now - self._window >= self.per:
                remaining, reset = self.rate_limit, now + self.per
            else:
                remaining = max(0, self.rate_limit - self._used)
                reset = self._window + self.per
        computed = {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset)),
        }
        # a reply that set its own (a 429) keeps them
        return Reply(reply.status, reply.json, reply.body, {**computed, **reply.headers})

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
        if scheme.lower() != "bearer" or not key.startswith("SG."):
            return self.error(401)
        if self.api_keys is not None and key not in self.api_keys:
            return self.error(
                401, "The provided authorization grant is invalid, expired, or revoked"
            )
        return None

    # -- POST /v3/mail/send ---------------------------------------------------------------------

    def _validate(self, body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, dict):
            return [_problem("The request body must be a JSON object.", None)]
        problems: list[dict[str, Any]] = []
        templated = isinstance(body.get("template_id"), str)
        people = body.get("personalizations")
        if not isinstance(people, list) or not people:
            problems.append(_problem("The personalizations field is required.", "personalizations"))
            people = []
        elif len(people) > 1000:
            problems.append(
                _problem("You may not have more than 1000 personalizations.", "personalizations")
            )
        total = 0
        for i, person in enumerate(people):
            where = f"personalizations.{i}"
            if not isinstance(person, dict):
                problems.append(_problem("A personalization is an object.", where))
                continue
            seen: set[str] = set()
            if not isinstance(person.get("to"), list) or not person["to"]:
                problems.append(_problem("The to array is required.", f"{where}.to"))
            for kind in ("to", "cc", "bcc"):
                entries = person.get(kind, [])
                if not isinstance(entries, list):
                    problems.append(_problem(f"The {kind} field is a list.", f"{where}.{kind}"))
                    continue
                for j, entry in enumerate(entries):
                    email = entry.get("email") if isinstance(entry, dict) else None
                    if not isinstance(email, str) or not _ADDRESS.match(email):
                        problems.append(
                            _problem(
                                "Does not contain a valid address.", f"{where}.{kind}.{j}.email"
                            )
                        )
                        continue
                    if email.lower() in seen:
                        problems.append(
                            _problem(
                                "Each email address in the personalization block should be "
                                "unique between to, cc, and bcc.",
                                f"{where}.{kind}.{j}.email",
                            )
                        )
                    seen.add(email.lower())
                    total += 1
            if not templated and not body.get("subject") and not person.get("subject"):
                problems.append(_problem("The subject is required.", "subject"))
        if total > 1000:
            problems.append(
                _problem("The total number of recipients must be 1000 or less.", "personalizations")
            )
        sender = body.get("from")
        email = sender.get("email") if isinstance(sender, dict) else None
        if not isinstance(email, str) or not _ADDRESS.match(email):
            problems.append(_problem("The from email does not contain a valid address.", "from"))
        content = body.get("content")
        if content is None:
            if not templated:
                problems.append(_problem("The content field is required.", "content"))
        elif not isinstance(content, list) or not content:
            problems.append(_problem("The content field is a non-empty list.", "content"))
        else:
            types: list[str] = []
            for k, part in enumerate(content):
                ok = (
                    isinstance(part, dict)
                    and isinstance(part.get("type"), str)
                    and isinstance(part.get("value"), str)
                    and part["value"] != ""
                )
                if not ok:
                    problems.append(
                        _problem(
                            "The content value must be a string at least one character in length.",
                            f"content.{k}.value",
                        )
                    )
                    continue
                types.append(part["type"])
            plain_late = (
                "text/html" in types
                and "text/plain" in types
                and types.index("text/html") < types.index("text/plain")
            )
            if plain_late:
                problems.append(
                    _problem(
                        "If present, text/plain content must be first, followed by text/html.",
                        "content",
                    )
                )
        return problems

    def send_mail(self, call: Call) -> Reply:
        try:
            body = call.json()
        except ValueError:
            return self.error(400, "Bad Request: the body is not valid JSON.")
        problems = self._validate(body)
        if problems:
            return Reply(400, {"errors": problems})
        custom = body.get("custom_args")
        key = custom.get(KEY_ARG) if isinstance(custom, dict) else None
        message_id = _message_id()
        call.commit(message_id, body, key if isinstance(key, str) else None)
        self._report(message_id, body)
        return Reply(202, headers={"X-Message-Id": message_id})

    # -- Event Webhook --------------------------------------------------------------------------

    def _report(self, message_id: str, body: dict[str, Any]) -> None:
        hooks = self.webhooks
        if hooks is None:
            return
        url = hooks.url(self.name)
        fault = hooks.decide(self.name)
        failed = fault is not None and fault.kind == "undeliverable"
        code = ((fault.code if fault is not None else None) or 550) if failed else None
        statuses = ["processed", "bounce" if failed else "delivered"]
        custom = body.get("custom_args")
        custom = custom if isinstance(custom, dict) else {}
        ref = custom.get(REF_ARG)
        correlation = ref if isinstance(ref, str) else None
        notices: list[Notice] = []
        if url:
            start = int(time.time())
            for i, status in enumerate(statuses):
                events = self.events(message_id, body, status, start + i, code)
                notices.append(
                    Notice(
                        self.name,
                        status,
                        message_id,
                        correlation,
                        url,
                        json.dumps(events, separators=(",", ":")).encode(),
                        "application/json",
                        self.event_webhook_key.headers,
                        RETRY_DELAYS[self.name],
                    )
                )
        hooks.emit(
            self.name,
            message_id,
            correlation,
            notices,
            statuses=statuses,
            fault=fault,
            error_code=code,
        )

    @staticmethod
    def events(
        message_id: str, body: dict[str, Any], event: str, timestamp: int, code: int | None = None
    ) -> list[dict[str, Any]]:
        """The Event Webhook events of *event* for every recipient of the email *body*."""
        custom = body.get("custom_args")
        custom = custom if isinstance(custom, dict) else {}
        out: list[dict[str, Any]] = []
        for n, person in enumerate(body.get("personalizations", [])):
            for kind in ("to", "cc", "bcc"):
                for entry in person.get(kind, []):
                    item: dict[str, Any] = {
                        "email": entry["email"],
                        "timestamp": timestamp,
                        "event": event,
                        "smtp-id": f"<{message_id}@sandbox.sendgrid.net>",
                        "sg_event_id": secrets.token_urlsafe(16),
                        "sg_message_id": f"{message_id}.filter0001.{n}.0",
                    }
                    if body.get("categories"):
                        item["category"] = body["categories"]
                    if event == "bounce":
                        item.update(
                            {
                                "reason": f"{code or 550} 5.1.1 The email account does not exist.",
                                "status": "5.1.1",
                                "type": "bounce",
                            }
                        )
                    elif event == "delivered":
                        item["response"] = "250 OK"
                    for name, value in custom.items():
                        if name not in _RESERVED and name not in item:
                            item[name] = value
                    out.append(item)
        return out
