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
* **Batch upsert and search** -- ``POST .../contacts/batch/upsert`` with up to 100 inputs
  ``{"idProperty": "email", "id": <email>, "properties"}`` updates or creates each contact
  (200 ``{"status": "COMPLETE", "results": [{..., "new"}]}``; more inputs, another
  ``idProperty`` or a repeated email is 400); ``POST .../contacts/search`` with ``EQ``
  filters answers ``{"total", "results"}``.
* **Errors** -- ``{"status": "error", "message", "correlationId", "category"}``; a body that is
  not a JSON object, or properties that are not strings, is 400 ``VALIDATION_ERROR``.
* **Rate limit** -- a rolling window of ``burst`` requests per ``interval`` seconds (100 per
  10 s for Free/Starter apps); every answer carries ``X-HubSpot-RateLimit-Max``,
  ``-Remaining`` and ``-Interval-Milliseconds``. A refused request gets 429 with
  ``errorType: "RATE_LIMIT"`` and ``policyName: "TEN_SECONDLY_ROLLING"``. Whether HubSpot adds
  ``Retry-After`` to it is not documented: ``retry_after_header`` chooses (off by default).
  A daily limit of ``daily_limit`` requests (250,000 by default) is announced on every answer
  (``X-HubSpot-RateLimit-Daily``, ``-Daily-Remaining``); once spent, every request is 429 with
  ``policyName: "DAILY"`` ("You have reached your daily limit.") until :meth:`reset`.
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


#: the inputs one batch request may carry
BATCH_LIMIT = 100


def _equal(held: Any, value: str) -> bool:
    return isinstance(held, str) and held.casefold() == value.casefold()


def _limit_reply(policy_name: str, what: str) -> Reply:
    """HubSpot's 429 for the limit *policy_name*."""
    return Reply(
        429,
        {
            "status": "error",
            "message": f"You have reached your {what}.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy_name,
            "requestId": str(uuid.uuid4()),
        },
    )


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
        daily_limit: int = 250_000,
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
        self.daily_limit = daily_limit
        self._daily_used = 0
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
            Route("POST", CONTACTS + "/batch/upsert", self.batch_upsert),
            Route("POST", CONTACTS + "/search", self.search_contacts),
            Route("PATCH", CONTACTS + "/{id}", self.update_contact),
            Route("GET", CONTACTS + "/{id}", self.read_contact),
        ]

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()
            self._daily_used = 0
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
        reply = _limit_reply("TEN_SECONDLY_ROLLING", "ten_secondly_rolling limit")
        if self.retry_after_header:
            reply = reply.with_headers({"retry-after": str(max(1, math.ceil(retry_after)))})
        return reply

    def daily_limited(self) -> Reply:
        """The 429 of a spent daily limit (``policyName: "DAILY"``, no ``Retry-After``)."""
        return _limit_reply("DAILY", "daily limit")

    def _expire(self, now: float) -> None:
        """Drop hits older than the rolling window (lock held)."""
        while self._hits and now - self._hits[0] >= self.interval:
            self._hits.popleft()

    def decorate(self, request: IncomingRequest, reply: Reply) -> Reply:
        with self._lock:
            self._expire(self._clock())
            remaining = max(0, self.burst - len(self._hits))
            daily_remaining = max(0, self.daily_limit - self._daily_used)
        return reply.with_headers(
            {
                "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
                "X-HubSpot-RateLimit-Daily-Remaining": str(daily_remaining),
                "X-HubSpot-RateLimit-Max": str(self.burst),
                "X-HubSpot-RateLimit-Remaining": str(remaining),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(round(self.interval * 1000)),
            }
        )

    def throttle(self, request: IncomingRequest) -> Reply | None:
        now = self._clock()
        with self._lock:
            self._expire(now)
            if self._daily_used >= self.daily_limit:
                return self.daily_limited()
            if len(self._hits) < self.burst:
                self._hits.append(now)
                self._daily_used += 1
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

    def _upsert_inputs(self, call: Call) -> list[tuple[str, dict[str, str]]] | Reply:
        try:
            body = call.json()
        except ValueError:
            return self.error(400)
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not inputs:
            return self.error(400, "The request body must have a non-empty list of inputs.")
        if len(inputs) > BATCH_LIMIT:
            return self.error(400, f"Batch input limit is {BATCH_LIMIT}; got {len(inputs)}.")
        parsed: list[tuple[str, dict[str, str]]] = []
        for item in inputs:
            if not isinstance(item, dict) or item.get("idProperty") != "email":
                return self.error(400, "Each input needs idProperty 'email' (others not played).")
            email, properties = item.get("id"), item.get("properties", {})
            if not isinstance(email, str) or "@" not in email:
                return self.error(400, "Each input needs its email as id.")
            if not isinstance(properties, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in properties.items()
            ):
                return self.error(400, "Property values were not valid: values must be strings.")
            parsed.append((email.strip().lower(), dict(properties)))
        if len({email for email, _ in parsed}) != len(parsed):
            return self.error(400, "Duplicate IDs found in batch input.")
        return parsed

    def batch_upsert(self, call: Call) -> Reply:
        """``POST .../contacts/batch/upsert`` by ``idProperty: "email"``: each input updates
        the contact with that email or creates it (``new``)."""
        inputs = self._upsert_inputs(call)
        if isinstance(inputs, Reply):
            return inputs
        started = _stamp(time.time())
        results: list[dict[str, Any]] = []
        created: list[str] = []
        with self._lock:
            for email, properties in inputs:
                contact_id = self._by_email.get(email)
                new = contact_id is None
                if contact_id is None:
                    contact_id = str(self._next_id)
                    self._next_id += 1
                    self._contacts[contact_id] = {
                        "properties": {"createdate": started, "hs_object_id": contact_id},
                        "createdAt": started,
                    }
                    self._by_email[email] = contact_id
                    created.append(contact_id)
                record = self._contacts[contact_id]
                record["properties"].update(properties)
                record["properties"].update({"email": email, "lastmodifieddate": started})
                record["updatedAt"] = started
                call.commit(contact_id, {"properties": dict(properties), "new": new})
                results.append({**self._object(contact_id), "new": new})
        for contact_id in created:
            self._report(contact_id)
        return Reply(
            200,
            {
                "status": "COMPLETE",
                "results": results,
                "startedAt": started,
                "completedAt": _stamp(time.time()),
            },
        )

    def search_contacts(self, call: Call) -> Reply:
        """``POST .../contacts/search``: ``EQ`` filters (AND within a group, OR across
        groups), ``limit`` at most 100."""
        try:
            body = call.json()
        except ValueError:
            return self.error(400)
        groups = body.get("filterGroups", []) if isinstance(body, dict) else None
        limit = body.get("limit", 10) if isinstance(body, dict) else None
        if not isinstance(groups, list) or not isinstance(limit, int) or not 0 < limit <= 100:
            return self.error(400, "filterGroups must be a list and limit 1 to 100.")
        wanted: list[list[tuple[str, str]]] = []
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list) or not all(
                isinstance(f, dict) and f.get("operator") == "EQ" for f in filters
            ):
                return self.error(400, "Only EQ filters are played by the sandbox.")
            wanted.append([(str(f.get("propertyName")), str(f.get("value"))) for f in filters])
        with self._lock:
            found = [
                self._object(contact_id)
                for contact_id, record in self._contacts.items()
                if not wanted
                or any(
                    all(_equal(record["properties"].get(name), value) for name, value in group)
                    for group in wanted
                )
            ]
        return Reply(200, {"total": len(found), "results": found[:limit]})

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
