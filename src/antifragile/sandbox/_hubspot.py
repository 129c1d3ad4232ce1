"""A HubSpot CRM v3 simulator: contacts created and updated as the provider answers.

* **Auth** -- ``Authorization: Bearer <private app token>``. No bearer token is 401
  ``INVALID_AUTHENTICATION``; a token outside ``tokens`` (when given) is 401 too.
* **Create** -- ``POST /crm/v3/objects/contacts`` with ``{"properties": {...}}`` (string
  values) is 201 with a ``SimplePublicObject`` (``id``, ``properties`` with ``createdate``,
  ``lastmodifieddate`` and ``hs_object_id``, ``createdAt``, ``updatedAt``, ``archived``); the
  contact is recorded as an effect. The email is the natural key (compared case-insensitively):
  a second contact with the same email is 409 ``CONFLICT`` whose ``message`` names the existing
  contact -- ``"Contact already exists. Existing ID: N"`` -- and nothing is created.
* **Update** -- ``PATCH /crm/v3/objects/contacts/{id}`` merges the properties and answers 200
  with the contact; an unknown id is 404 ``OBJECT_NOT_FOUND``; an email taken by another
  contact is 409. ``GET /crm/v3/objects/contacts/{id}`` reads a contact.
* **Errors** -- ``{"status": "error", "message", "correlationId", "category"}``; a body that is
  not a JSON object, or properties that are not strings, is 400 ``VALIDATION_ERROR``.
* **Rate limit** -- a rolling window of ``burst`` requests per ``interval`` seconds (100 per
  10 s for Free/Starter apps); every answer carries ``X-HubSpot-RateLimit-Max``,
  ``-Remaining`` and ``-Interval-Milliseconds``. A refused request gets 429 with
  ``errorType: "RATE_LIMIT"`` and ``policyName: "TEN_SECONDLY_ROLLING"``. Whether HubSpot adds
  ``Retry-After`` to it is not documented: ``retry_after_header`` chooses (off by default).
* **Webhooks** -- once a contact is created, and when the sandbox has a callback URL for
  ``hubspot``: a JSON array with one ``contact.creation`` event (``eventId``,
  ``subscriptionId``, ``portalId``, ``appId``, ``occurredAt`` in ms, ``subscriptionType``,
  ``attemptNumber`` -- 0, then 1, 2... on retries --, ``objectId``, ``changeFlag: "CREATED"``,
  ``changeSource``), signed ``X-HubSpot-Signature-v3: base64(HMAC-SHA256(client_secret,
  "POST" + URL + body + timestamp))`` with ``X-HubSpot-Request-Timestamp`` (ms). Up to 10
  retries; an answer 400, 401, 403, 404 or 405 is not retried.
"""

from __future__ import annotations

import collections
import functools
import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator
from antifragile.sandbox._status import RETRY_DELAYS, Notice, hubspot_signature

#: answers HubSpot does not retry a webhook after
_FINAL = frozenset({400, 401, 403, 404, 405})

CONTACTS = "/crm/v3/objects/contacts"

_CATEGORIES: dict[int, tuple[str, str]] = {
    400: ("VALIDATION_ERROR", "Invalid input JSON on line 1."),
    401: (
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found or not valid for this request.",
    ),
    403: ("MISSING_SCOPES", "This app lacks the scopes this request needs."),
    404: ("OBJECT_NOT_FOUND", "Resource not found."),
    405: ("VALIDATION_ERROR", "Method not allowed for this resource."),
    409: ("CONFLICT", "Conflict."),
    429: ("RATE_LIMITS", "You have reached your ten_secondly_rolling limit."),
}


def _stamp(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class HubSpotSimulator(Simulator):
    """HubSpot's contacts endpoints with its auth, errors, 409 on email and burst limit."""

    name = "hubspot"
    sends_webhooks = True

    def __init__(
        self,
        *,
        client_secret: str = "sandbox-client-secret",
        portal_id: int = 12345678,
        app_id: int = 987654,
        tokens: Iterable[str] | None = None,
        burst: int = 100,
        interval: float = 10.0,
        retry_after_header: bool = False,
        first_id: int = 100_001,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens = None if tokens is None else frozenset(tokens)
        self.client_secret = client_secret
        self.portal_id = portal_id
        self.app_id = app_id
        self._events = itertools.count(1)
        self.burst = burst
        self.interval = interval
        self.retry_after_header = retry_after_header
        self.first_id = first_id
        self._clock = clock
        self._lock = threading.Lock()
        self._hits: collections.deque[float] = collections.deque()
        self._next_id = first_id
        self._contacts: dict[str, dict[str, Any]] = {}
        self._by_email: dict[str, str] = {}
        super().__init__()

    def routes(self) -> Iterable[Route]:
        return [
            Route("POST", CONTACTS, self.create_contact),
            Route("PATCH", CONTACTS + "/{id}", self.update_contact),
            Route("GET", CONTACTS + "/{id}", self.read_contact),
        ]

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()
            self._next_id = self.first_id
            self._contacts.clear()
            self._by_email.clear()

    @property
    def contacts(self) -> dict[str, dict[str, Any]]:
        """The contacts held, by id (copies)."""
        with self._lock:
            return {k: dict(v) for k, v in self._contacts.items()}

    # -- the provider's answers -----------------------------------------------------------------

    def error(self, status: int, message: str | None = None, category: str | None = None) -> Reply:
        default_category, default_message = _CATEGORIES.get(
            status,
            ("INTERNAL_ERROR", "An internal error occurred.")
            if status >= 500
            else ("VALIDATION_ERROR", "The request is invalid."),
        )
        return Reply(
            status,
            {
                "status": "error",
                "message": message or default_message,
                "correlationId": str(uuid.uuid4()),
                "category": category or default_category,
            },
        )

    def rate_limited(self, retry_after: float) -> Reply:
        reply = Reply(
            429,
            {
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()),
                "policyName": "TEN_SECONDLY_ROLLING",
                "requestId": str(uuid.uuid4()),
            },
        )
        if self.retry_after_header:
            reply = reply.with_headers({"retry-after": str(max(1, math.ceil(retry_after)))})
        return reply

    def _expire(self, now: float) -> None:
        """Drop hits older than the rolling window (lock held)."""
        while self._hits and now - self._hits[0] >= self.interval:
            self._hits.popleft()

    def decorate(self, request: IncomingRequest, reply: Reply) -> Reply:
        with self._lock:
            self._expire(self._clock())
            remaining = max(0, self.burst - len(self._hits))
        return reply.with_headers(
            {
                "x-hubspot-ratelimit-max": str(self.burst),
                "x-hubspot-ratelimit-remaining": str(remaining),
                "x-hubspot-ratelimit-interval-milliseconds": str(round(self.interval * 1000)),
            }
        )

    def throttle(self, request: IncomingRequest) -> Reply | None:
        now = self._clock()
        with self._lock:
            self._expire(now)
            if len(self._hits) < self.burst:
                self._hits.append(now)
                return None
            wait = self._hits[0] + self.interval - now
        return self.rate_limited(wait)

    def authenticate(self, request: IncomingRequest) -> Reply | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self.error(401)
        if self.tokens is not None and token not in self.tokens:
            return self.error(
                401, "The OAuth token used to make this call expired or is not valid."
            )
        return None

    # -- contacts -------------------------------------------------------------------------------

    def _properties(self, call: Call) -> dict[str, str] | Reply:
        try:
            body = call.json()
        except ValueError:
            return self.error(400)
        if not isinstance(body, dict):
            return self.error(400, "The request body must be a JSON object.")
        properties = body.get("properties", {})
        if not isinstance(properties, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in properties.items()
        ):
            return self.error(400, "Property values were not valid: values must be strings.")
        return dict(properties)

    def _object(self, contact_id: str) -> dict[str, Any]:
        record = self._contacts[contact_id]
        return {
            "id": contact_id,
            "properties": dict(record["properties"]),
            "createdAt": record["createdAt"],
            "updatedAt": record["updatedAt"],
            "archived": False,
        }

    def _conflict(self, existing: str) -> Reply:
        return self.error(409, f"Contact already exists. Existing ID: {existing}")

    def create_contact(self, call: Call) -> Reply:
        properties = self._properties(call)
        if isinstance(properties, Reply):
            return properties
        email = properties.get("email", "").strip().lower()
        if email:
            properties["email"] = email
        now = _stamp(time.time())
        with self._lock:
            existing = self._by_email.get(email) if email else None
            if existing is not None:
                return self._conflict(existing)
            contact_id = str(self._next_id)
            self._next_id += 1
            properties.update(
                {"createdate": now, "lastmodifieddate": now, "hs_object_id": contact_id}
            )
            self._contacts[contact_id] = {
                "properties": properties,
                "createdAt": now,
                "updatedAt": now,
            }
            if email:
                self._by_email[email] = contact_id
            call.commit(contact_id, {"properties": dict(properties)})
            reply = Reply(201, self._object(contact_id))
        self._report(contact_id)
        return reply

    # -- webhooks -------------------------------------------------------------------------------

    def _report(self, contact_id: str) -> None:
        hooks = self.webhooks
        if hooks is None:
            return
        url = hooks.url(self.name)
        fault = hooks.decide(self.name)
        notices: list[Notice] = []
        if url:
            event = self.creation_event(contact_id)
            notices.append(
                Notice(
                    self.name,
                    "contact.creation",
                    contact_id,
                    None,
                    url,
                    json.dumps([event], separators=(",", ":")).encode(),
                    "application/json",
                    functools.partial(self._sign, url),
                    RETRY_DELAYS[self.name],
                    render=functools.partial(self._render, event),
                    final_statuses=_FINAL,
                )
            )
        hooks.emit(
            self.name,
            contact_id,
            None,
            notices,
            statuses=["contact.creation"],
            fault=None if fault is not None and fault.kind == "undeliverable" else fault,
        )

    @staticmethod
    def _render(event: dict[str, Any], attempt: int) -> bytes:
        return json.dumps([{**event, "attemptNumber": attempt}], separators=(",", ":")).encode()

    def _sign(self, url: str, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time() * 1000))
        return {
            "x-hubspot-signature-v3": hubspot_signature(
                self.client_secret, "POST", url, body, timestamp
            ),
            "x-hubspot-request-timestamp": timestamp,
        }

    def creation_event(self, contact_id: str) -> dict[str, Any]:
        """The ``contact.creation`` event of *contact_id* (attempt 0)."""
        return {
            "eventId": next(self._events),
            "subscriptionId": 234567,
            "portalId": self.portal_id,
            "appId": self.app_id,
            "occurredAt": int(time.time() * 1000),
            "subscriptionType": "contact.creation",
            "attemptNumber": 0,
            "objectId": int(contact_id),
            "changeFlag": "CREATED",
            "changeSource": "INTEGRATION",
        }

    def update_contact(self, call: Call) -> Reply:
        properties = self._properties(call)
        if isinstance(properties, Reply):
            return properties
        contact_id = call.params["id"]
        now = _stamp(time.time())
        with self._lock:
            record = self._contacts.get(contact_id)
            if record is None:
                return self.error(404)
            email = properties.get("email", "").strip().lower()
            if email:
                properties["email"] = email
                owner = self._by_email.get(email)
                if owner is not None and owner != contact_id:
                    return self._conflict(owner)
                old = record["properties"].get("email")
                if old and old != email:
                    self._by_email.pop(old, None)
                self._by_email[email] = contact_id
            record["properties"].update(properties)
            record["properties"]["lastmodifieddate"] = now
            record["updatedAt"] = now
            call.commit(contact_id, {"properties": properties})
            return Reply(200, self._object(contact_id))

    def read_contact(self, call: Call) -> Reply:
        with self._lock:
            if call.params["id"] not in self._contacts:
                return self.error(404)
            return Reply(200, self._object(call.params["id"]))
