"""A Cal.com API v2 simulator: ``POST /v2/bookings`` as the provider answers it.

* **Auth** -- ``Authorization: Bearer cal_...``; no bearer token, one that is not a Cal.com
  key (``cal_`` prefix) or a key outside ``api_keys`` (when given) is 401
  ``UnauthorizedException``.
* **Version** -- the ``cal-api-version`` header must be one of ``versions`` (``2024-08-13`` by
  default); without it, or with another value, the simulator answers 400 (the real API falls
  back to an older endpoint version, which a client must not rely on).
* **Validation** -- 400 ``BadRequestException``: a body that is not a JSON object, ``start``
  that is not an ISO 8601 UTC time, no event type (``eventTypeId`` or ``eventTypeSlug`` +
  ``username``), an ``attendee`` without ``name``, a valid ``email`` and ``timeZone``. An event
  type the simulator does not know is 404 ``NotFoundException``; a start already booked for
  that event type is 409 ``ConflictException`` (a simulator choice: the real API refuses a taken
  slot, with a status the sources do not pin down).
* **Success** -- 201 ``{"status": "success", "data": {id, uid, title, hosts, status:
  "accepted", start, end, duration, eventTypeId, attendees, location, metadata, createdAt}}``;
  the booking is recorded as an effect whose ``idempotency_key`` is ``metadata.antifragile_key``
  when present (Cal.com has no idempotency key of its own).
* **Errors** -- ``{"status": "error", "timestamp", "path", "error": {"code", "message"}}``.
* **Rate limit** -- ``rate_limit`` requests per ``per`` seconds (120 per 60 s, Cal.com's figure
  for API keys); every answer carries ``X-RateLimit-Limit-Default``,
  ``X-RateLimit-Remaining-Default`` and ``X-RateLimit-Reset-Default`` (seconds); a refused
  request gets 429 ``ThrottlerException`` with ``Retry-After``.
* **Webhook** -- once a booking is made, and when the sandbox has a callback URL for
  ``calcom``: ``{"triggerEvent": "BOOKING_CREATED", "createdAt", "payload": {title, startTime,
  endTime, organizer, attendees, uid, bookingId, status: "ACCEPTED", metadata, location}}``,
  the booking's ``metadata`` (and so its correlation) included, signed ``X-Cal-Signature-256:
  <hex HMAC-SHA256(webhook_secret, body)>`` (the literal ``no-secret-provided`` without a
  secret).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator
from antifragile.sandbox._status import RETRY_DELAYS, Notice, calcom_signature

_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
PATH = "/v2/bookings"
#: the ``metadata`` entry that carries the sender's idempotency key
KEY_ARG = "antifragile_key"

_CODES: dict[int, tuple[str, str]] = {
    400: ("BadRequestException", "Bad request."),
    401: ("UnauthorizedException", "Invalid access token."),
    403: ("ForbiddenException", "Forbidden."),
    404: ("NotFoundException", "Not found."),
    405: ("MethodNotAllowedException", "Method not allowed."),
    409: ("ConflictException", "Conflict."),
    429: ("ThrottlerException", "Too many requests."),
    500: ("InternalServerErrorException", "Internal server error."),
    503: ("ServiceUnavailableException", "Service unavailable."),
}


@dataclass(frozen=True, slots=True)
class EventType:
    """An event type the simulator can book: its id, slug, owner's username and length."""

    id: int
    slug: str
    username: str
    length: int = 30
    title: str = "Meeting"


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.utcoffset() != timedelta(0):
        return None
    return parsed.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class CalComSimulator(Simulator):
    """Cal.com's ``POST /v2/bookings`` with its auth, version header, validation and limit."""

    name = "calcom"
    sends_webhooks = True

    def __init__(
        self,
        *,
        webhook_secret: str | None = None,
        api_keys: Iterable[str] | None = None,
        event_types: Iterable[EventType] | None = None,
        versions: Iterable[str] = ("2024-08-13",),
        rate_limit: int = 120,
        per: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_keys = None if api_keys is None else frozenset(api_keys)
        self.webhook_secret = webhook_secret
        types = list(event_types or [EventType(1, "30min", "alice")])
        self.event_types: Mapping[int, EventType] = {t.id: t for t in types}
        self.versions = frozenset(versions)
        self.rate_limit = rate_limit
        self.per = per
        self._clock = clock
        self._lock = threading.Lock()
        self._window: float | None = None
        self._used = 0
        self._ids = itertools.count(1)
        self._taken: set[tuple[int, str]] = set()
        super().__init__()

    def routes(self) -> Iterable[Route]:
        return [Route("POST", PATH, self.create_booking)]

    def reset(self) -> None:
        with self._lock:
            self._window, self._used = None, 0
            self._ids = itertools.count(1)
            self._taken.clear()

    # -- the provider's answers -----------------------------------------------------------------

    def error(
        self,
        status: int,
        message: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Reply:
        code, default = _CODES.get(
            status,
            ("InternalServerErrorException", "Internal server error.")
            if status >= 500
            else ("BadRequestException", "Bad request."),
        )
        error: dict[str, Any] = {"code": code, "message": message or default}
        if details:
            error["details"] = dict(details)
        timestamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return Reply(
            status, {"status": "error", "timestamp": timestamp, "path": PATH, "error": error}
        )

    def rate_limited(self, retry_after: float) -> Reply:
        seconds = str(max(1, math.ceil(retry_after)))
        reply = self.error(429, "ThrottlerException: Too Many Requests")
        return reply.with_headers(
            {
                "Retry-After": seconds,
                "X-RateLimit-Remaining-Default": "0",
                "X-RateLimit-Reset-Default": seconds,
            }
        )

    def decorate(self, request: IncomingRequest, reply: Reply) -> Reply:
        now = self._clock()
        with self._lock:
            if self._window is None or now - self._window >= self.per:
                remaining, reset = self.rate_limit, self.per
            else:
                remaining = max(0, self.rate_limit - self._used)
                reset = self._window + self.per - now
        computed = {
            "X-RateLimit-Limit-Default": str(self.rate_limit),
            "X-RateLimit-Remaining-Default": str(remaining),
            "X-RateLimit-Reset-Default": str(max(1, math.ceil(reset))),
        }
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
        if scheme.lower() != "bearer" or not key.startswith("cal_"):
            return self.error(401)
        if self.api_keys is not None and key not in self.api_keys:
            return self.error(401)
        return None

    # -- POST /v2/bookings ----------------------------------------------------------------------

    def _event_type(self, body: Mapping[str, Any]) -> EventType | Reply:
        type_id = body.get("eventTypeId")
        if type_id is not None:
            if not isinstance(type_id, int) or isinstance(type_id, bool):
                return self.error(400, "eventTypeId must be an integer.")
            found = self.event_types.get(type_id)
            if found is None:
                return self.error(404, f"Event type with id={type_id} was not found.")
            return found
        slug, username = body.get("eventTypeSlug"), body.get("username")
        if not isinstance(slug, str) or not isinstance(username, str):
            return self.error(
                400, "Either eventTypeId or eventTypeSlug with username must be provided."
            )
        for event_type in self.event_types.values():
            if event_type.slug == slug and event_type.username == username:
                return event_type
        return self.error(404, f"Event type {slug!r} of user {username!r} was not found.")

    def create_booking(self, call: Call) -> Reply:
        version = call.headers.get("cal-api-version")
        if version not in self.versions:
            return self.error(
                400,
                f"The cal-api-version header must be one of {sorted(self.versions)}.",
                {"header": "cal-api-version", "received": version},
            )
        try:
            body = call.json()
        except ValueError:
            return self.error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return self.error(400, "The request body must be a JSON object.")
        start = _utc(body.get("start"))
        if start is None:
            return self.error(400, "start must be an ISO 8601 date in UTC.", {"field": "start"})
        event_type = self._event_type(body)
        if isinstance(event_type, Reply):
            return event_type
        attendee = body.get("attendee")
        if not isinstance(attendee, dict):
            return self.error(400, "attendee is required.", {"field": "attendee"})
        for field_name in ("name", "email", "timeZone"):
            if not isinstance(attendee.get(field_name), str) or not attendee[field_name]:
                return self.error(
                    400, f"attendee.{field_name} is required.", {"field": f"attendee.{field_name}"}
                )
        if not _ADDRESS.match(attendee["email"]):
            return self.error(400, "attendee.email must be an email.", {"field": "attendee.email"})
        metadata = body.get("metadata", {})
        if not isinstance(metadata, dict):
            return self.error(400, "metadata must be an object.", {"field": "metadata"})
        length = body.get("lengthInMinutes", event_type.length)
        if not isinstance(length, int) or isinstance(length, bool) or length <= 0:
            return self.error(400, "lengthInMinutes must be a positive integer.")
        slot = (event_type.id, _iso(start))
        with self._lock:
            if slot in self._taken:
                return self.error(409, "The host already has a booking at this time.")
            self._taken.add(slot)
            booking_id = next(self._ids)
        uid = secrets.token_urlsafe(16)
        data = {
            "id": booking_id,
            "uid": uid,
            "title": f"{event_type.title} between {event_type.username} and {attendee['name']}",
            "hosts": [{"id": 1, "name": event_type.username, "username": event_type.username}],
            "status": "accepted",
            "start": _iso(start),
            "end": _iso(start + timedelta(minutes=length)),
            "duration": length,
            "eventTypeId": event_type.id,
            "attendees": [
                {
                    "name": attendee["name"],
                    "email": attendee["email"],
                    "timeZone": attendee["timeZone"],
                    "language": attendee.get("language", "en"),
                    "absent": False,
                }
            ],
            "location": body.get("location"),
            "metadata": metadata,
            "absentHost": False,
            "createdAt": _iso(datetime.now(UTC)),
        }
        key = metadata.get(KEY_ARG)
        call.commit(uid, body, key if isinstance(key, str) else None)
        self._report(data)
        return Reply(201, {"status": "success", "data": data})

    # -- webhook --------------------------------------------------------------------------------

    def _report(self, data: dict[str, Any]) -> None:
        hooks = self.webhooks
        if hooks is None:
            return
        url = hooks.url(self.name)
        fault = hooks.decide(self.name)
        ref = data["metadata"].get("antifragile_ref")
        correlation = ref if isinstance(ref, str) else None
        notices: list[Notice] = []
        if url:
            body = json.dumps(self.booking_created(data), separators=(",", ":")).encode()
            notices.append(
                Notice(
                    self.name,
                    "BOOKING_CREATED",
                    data["uid"],
                    correlation,
                    url,
                    body,
                    "application/json",
                    self._sign,
                    RETRY_DELAYS[self.name],
                )
            )
        hooks.emit(
            self.name,
            data["uid"],
            correlation,
            notices,
            statuses=["BOOKING_CREATED"],
            fault=None if fault is not None and fault.kind == "undeliverable" else fault,
        )

    def _sign(self, body: bytes) -> dict[str, str]:
        return {"x-cal-signature-256": calcom_signature(self.webhook_secret, body)}

    @staticmethod
    def booking_created(data: Mapping[str, Any]) -> dict[str, Any]:
        """The ``BOOKING_CREATED`` webhook of the booking *data* (Cal.com's default body)."""
        host = data["hosts"][0]
        return {
            "triggerEvent": "BOOKING_CREATED",
            "createdAt": _iso(datetime.now(UTC)),
            "payload": {
                "title": data["title"],
                "startTime": data["start"],
                "endTime": data["end"],
                "organizer": {"name": host["name"], "username": host["username"]},
                "attendees": [
                    {"name": a["name"], "email": a["email"], "timeZone": a["timeZone"]}
                    for a in data["attendees"]
                ],
                "uid": data["uid"],
                "bookingId": data["id"],
                "eventTypeId": data["eventTypeId"],
                "status": "ACCEPTED",
                "metadata": data["metadata"],
                "location": data["location"],
            },
        }
