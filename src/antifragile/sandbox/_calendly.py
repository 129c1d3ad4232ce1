"""A Calendly API v2 simulator: event types, single-use scheduling links, the booking page, the
invitee webhooks.

* **Auth** -- ``Authorization: Bearer <token>``; none, or one outside ``tokens`` (when given), is
  401 ``Unauthenticated``.
* **Errors** -- ``{"title", "message", "details"?: [{"parameter", "message"}]}`` (``Invalid
  Argument`` 400, ``Unauthenticated`` 401, ``Permission Denied`` 403, ``Resource Not Found``
  404, ``Too Many Requests`` 429, ``Internal Server Error`` 5xx).
* **Rate limit** -- ``rate_limit`` requests per ``per`` seconds (500 per minute: Calendly's figure
  for a user of a paid plan); every answer carries ``X-RateLimit-Limit``,
  ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (seconds until the window resets); past it,
  429 with those headers (Calendly documents no ``Retry-After``).
* **API** -- ``GET /users/me``; ``GET /event_types?user=``; ``POST /scheduling_links`` with
  ``max_event_count`` 1, ``owner`` (an event type URI) and ``owner_type: "EventType"`` -> 201
  ``{"resource": {"booking_url", "owner", "owner_type"}}`` (recorded as an effect);
  ``GET /scheduled_events?user=&invitee_email=``; ``GET /scheduled_events/{uuid}/invitees``;
  ``POST /scheduled_events/{uuid}/cancellation``.
* **The booking page** -- ``POST /d/{code}`` stands for a customer booking through the link
  ``{sandbox}/calendly/d/{code}``: a JSON body ``{"name", "email", "start_time"}`` and the
  link's query (UTM parameters, prefill). It books once: a used or unknown link is 404
  (a simulator choice). The booking is an effect (``POST /d/{code}``) whose id is the invitee
  URI.
* **Webhooks** -- ``invitee.created`` (and ``invitee.canceled`` on a cancellation) to the
  sandbox's callback URL for ``calendly``: ``{"event", "created_at", "created_by", "payload":
  {uri, email, name, status, rescheduled, timezone, event, scheduled_event{...}, tracking{utm_*},
  cancel_url, reschedule_url, questions_and_answers}}`` with ``Calendly-Webhook-Signature:
  t=<unix>,v1=<hex HMAC-SHA256(signing_key, "t.body")>``, signed afresh at each attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator
from antifragile.sandbox._status import RETRY_DELAYS, Notice
from antifragile.sandbox._window import FixedWindow

API = "https://api.calendly.com"
USER_URI = f"{API}/users/AAAAAAAAAAAAAAAA"
ORGANIZATION_URI = f"{API}/organizations/AAAAAAAAAAAAAAAA"
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
#: the UTM parameters a booking page keeps as the invitee's ``tracking``
UTM = ("utm_campaign", "utm_source", "utm_medium", "utm_content", "utm_term")

_TITLES: dict[int, tuple[str, str]] = {
    400: ("Invalid Argument", "The supplied parameters are invalid."),
    401: ("Unauthenticated", "The access token is invalid"),
    403: ("Permission Denied", "You do not have permission to access this resource."),
    404: ("Resource Not Found", "The server could not find the requested resource."),
    405: ("Method Not Allowed", "The method is not allowed for this resource."),
    429: ("Too Many Requests", "You have exceeded the rate limit."),
}


def calendly_signature(signing_key: str, timestamp: str, body: bytes) -> str:
    """``Calendly-Webhook-Signature``: ``t=<timestamp>,v1=<hex HMAC-SHA256(signing_key,
    "<timestamp>." + body)>``."""
    signed = timestamp.encode() + b"." + body
    digest = hmac.new(signing_key.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True, slots=True)
class CalendlyEventTypeSpec:
    """An event type the simulator offers: its uuid, name, slug and length (minutes)."""

    uuid: str
    name: str = "30 Minute Meeting"
    slug: str = "30min"
    duration: int = 30

    @property
    def uri(self) -> str:
        return f"{API}/event_types/{self.uuid}"


@dataclass(slots=True)
class _Link:
    code: str
    owner: str
    max_events: int
    used: int = 0


@dataclass(slots=True)
class _Booking:
    event_uuid: str
    invitee_uuid: str
    event_type: CalendlyEventTypeSpec
    name: str
    email: str
    start: datetime
    tracking: dict[str, str | None]
    status: str = "active"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def event_uri(self) -> str:
        return f"{API}/scheduled_events/{self.event_uuid}"

    @property
    def invitee_uri(self) -> str:
        return f"{self.event_uri}/invitees/{self.invitee_uuid}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


class CalendlySimulator(Simulator):
    """Calendly's API v2 for scheduling links, and its booking page (see the module docs)."""

    name = "calendly"
    sends_webhooks = True
    settable = frozenset({"rate_limit", "per"})

    def __init__(
        self,
        *,
        signing_key: str = "sandbox-calendly-signing-key",
        tokens: Iterable[str] | None = None,
        event_types: Iterable[CalendlyEventTypeSpec] | None = None,
        rate_limit: int = 500,
        per: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.signing_key = signing_key
        self.tokens = None if tokens is None else frozenset(tokens)
        types = list(event_types or [CalendlyEventTypeSpec("BBBBBBBBBBBBBBBB")])
        self.event_types: dict[str, CalendlyEventTypeSpec] = {t.uri: t for t in types}
        self.rate_limit = rate_limit
        self.per = per
        self._window = FixedWindow(rate_limit, per, clock)
        self._lock = threading.Lock()
        self._links: dict[str, _Link] = {}
        self._bookings: dict[str, _Booking] = {}
        super().__init__()

    def routes(self) -> Iterable[Route]:
        return [
            Route("GET", "/users/me", self.users_me),
            Route("GET", "/event_types", self.list_event_types),
            Route("POST", "/scheduling_links", self.create_link),
            Route("GET", "/scheduled_events", self.list_events),
            Route("GET", "/scheduled_events/{uuid}/invitees", self.list_invitees),
            Route("POST", "/scheduled_events/{uuid}/cancellation", self.cancel),
            Route("POST", "/d/{code}", self.book),
        ]

    def configure(self, settings: Mapping[str, Any]) -> None:
        super().configure(settings)
        self._window = FixedWindow(self.rate_limit, self.per, self._window._clock)

    def reset(self) -> None:
        self._window.reset()
        with self._lock:
            self._links.clear()
            self._bookings.clear()

    # -- the provider's answers -----------------------------------------------------------------

    def error(
        self, status: int, message: str | None = None, details: list[dict[str, str]] | None = None
    ) -> Reply:
        title, default = _TITLES.get(
            status,
            ("Internal Server Error", "The server encountered an unexpected condition.")
            if status >= 500
            else ("Invalid Argument", "The supplied parameters are invalid."),
        )
        body: dict[str, Any] = {"title": title, "message": message or default}
        if details:
            body["details"] = details
        return Reply(status, body)

    def rate_limited(self, retry_after: float) -> Reply:
        seconds = str(max(1, int(-(-retry_after // 1))))
        return self.error(429).with_headers(
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": seconds}
        )

    def decorate(self, request: IncomingRequest, reply: Reply) -> Reply:
        remaining, reset = self._window.state()
        computed = {
            "X-RateLimit-Limit": str(self._window.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
        }
        return Reply(reply.status, reply.json, reply.body, {**computed, **reply.headers})

    def throttle(self, request: IncomingRequest) -> Reply | None:
        if "/d/" in request.path:
            return None  # the booking page is the customer's, not an API call
        wait = self._window.take()
        return None if wait is None else self.rate_limited(wait)

    def authenticate(self, request: IncomingRequest) -> Reply | None:
        if "/d/" in request.path:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self.error(401)
        if self.tokens is not None and token not in self.tokens:
            return self.error(401)
        return None

    # -- the API --------------------------------------------------------------------------------

    def users_me(self, call: Call) -> Reply:
        return Reply(
            200,
            {
                "resource": {
                    "uri": USER_URI,
                    "name": "Sandbox Host",
                    "slug": "sandbox-host",
                    "scheduling_url": "https://calendly.com/sandbox-host",
                    "timezone": "UTC",
                    "current_organization": ORGANIZATION_URI,
                }
            },
        )

    def list_event_types(self, call: Call) -> Reply:
        query = {k: v[-1] for k, v in parse_qs(call.request.query).items()}
        if "user" not in query and "organization" not in query:
            return self.error(
                400, details=[{"parameter": "user", "message": "user or organization required"}]
            )
        collection = [
            {
                "uri": t.uri,
                "name": t.name,
                "slug": t.slug,
                "duration": t.duration,
                "active": True,
                "kind": "solo",
                "scheduling_url": f"https://calendly.com/sandbox-host/{t.slug}",
                "profile": {"type": "User", "owner": USER_URI, "name": "Sandbox Host"},
            }
            for t in self.event_types.values()
        ]
        return Reply(200, {"collection": collection, "pagination": _page(len(collection))})

    def create_link(self, call: Call) -> Reply:
        try:
            body = call.json()
        except ValueError:
            return self.error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return self.error(400, "The request body must be a JSON object.")
        owner, owner_type, count = (
            body.get("owner"),
            body.get("owner_type"),
            body.get("max_event_count"),
        )
        if owner_type != "EventType":
            return self.error(
                400, details=[{"parameter": "owner_type", "message": "must be EventType"}]
            )
        if not isinstance(count, int) or isinstance(count, bool) or count != 1:
            return self.error(
                400, details=[{"parameter": "max_event_count", "message": "must be 1"}]
            )
        if not isinstance(owner, str) or owner not in self.event_types:
            return self.error(
                400, details=[{"parameter": "owner", "message": "is not a valid event type"}]
            )
        code = secrets.token_hex(8)
        with self._lock:
            self._links[code] = _Link(code, owner, count)
        call.commit(code, body)
        host = call.headers.get("host", "127.0.0.1")
        booking_url = f"http://{host}/{self.name}/d/{code}"
        return Reply(
            201,
            {"resource": {"booking_url": booking_url, "owner": owner, "owner_type": "EventType"}},
        )

    def list_events(self, call: Call) -> Reply:
        query = {k: v[-1] for k, v in parse_qs(call.request.query).items()}
        if "user" not in query and "organization" not in query:
            return self.error(
                400, details=[{"parameter": "user", "message": "user or organization required"}]
            )
        email = query.get("invitee_email")
        with self._lock:
            found = [
                b for b in self._bookings.values() if email is None or b.email == email.lower()
            ]
        collection = [self._event(b) for b in found]
        return Reply(200, {"collection": collection, "pagination": _page(len(collection))})

    def list_invitees(self, call: Call) -> Reply:
        event_uuid = call.params["uuid"]
        with self._lock:
            found = [b for b in self._bookings.values() if b.event_uuid == event_uuid]
        if not found:
            return self.error(404)
        collection = [self._invitee(b) for b in found]
        return Reply(200, {"collection": collection, "pagination": _page(len(collection))})

    def cancel(self, call: Call) -> Reply:
        event_uuid = call.params["uuid"]
        try:
            body = call.json() if call.request.body else {}
        except ValueError:
            return self.error(400, "The request body is not valid JSON.")
        reason = body.get("reason") if isinstance(body, dict) else None
        with self._lock:
            found = [b for b in self._bookings.values() if b.event_uuid == event_uuid]
            if not found:
                return self.error(404)
            booking = found[0]
            if booking.status == "canceled":
                return self.error(403, "Event is already canceled")
            booking.status = "canceled"
            booking.extra["cancellation"] = {
                "canceled_by": "Sandbox Host",
                "reason": reason if isinstance(reason, str) else None,
                "canceler_type": "host",
            }
        call.commit(booking.invitee_uri, {"cancel": event_uuid})
        self._report("invitee.canceled", booking)
        return Reply(
            201,
            {"resource": {**booking.extra["cancellation"], "created_at": _iso(datetime.now(UTC))}},
        )

    # -- the booking page -----------------------------------------------------------------------

    def book(self, call: Call) -> Reply:
        code = call.params["code"]
        query = {k: v[-1] for k, v in parse_qs(call.request.query).items()}
        try:
            body = call.json() if call.request.body else {}
        except ValueError:
            return self.error(400, "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return self.error(400, "The request body must be a JSON object.")
        name = body.get("name") or query.get("name")
        email = body.get("email") or query.get("email")
        try:
            start = datetime.fromisoformat(str(body.get("start_time", "")).replace("Z", "+00:00"))
        except ValueError:
            start = None
        if not isinstance(name, str) or not isinstance(email, str) or not _ADDRESS.match(email):
            return self.error(400, "name and a valid email are required")
        if start is None or start.tzinfo is None:
            return self.error(400, "start_time must be an ISO 8601 time with an offset")
        with self._lock:
            link = self._links.get(code)
            if link is None or link.used >= link.max_events:
                return self.error(404, "This link is no longer valid.")
            link.used += 1
            booking = _Booking(
                event_uuid=uuid.uuid4().hex.upper()[:16],
                invitee_uuid=uuid.uuid4().hex.upper()[:16],
                event_type=self.event_types[link.owner],
                name=name,
                email=email.lower(),
                start=start,
                tracking={k: query.get(k) for k in UTM} | {"salesforce_uuid": None},
            )
            self._bookings[booking.invitee_uuid] = booking
        call.commit(booking.invitee_uri, {"link": code, "start_time": _iso(start)})
        self._report("invitee.created", booking)
        return Reply(200, {"resource": self._invitee(booking)})

    # -- resources ------------------------------------------------------------------------------

    def _event(self, booking: _Booking) -> dict[str, Any]:
        end = booking.start + timedelta(minutes=booking.event_type.duration)
        return {
            "uri": booking.event_uri,
            "name": booking.event_type.name,
            "status": booking.status,
            "start_time": _iso(booking.start),
            "end_time": _iso(end),
            "event_type": booking.event_type.uri,
            "location": {"type": "custom", "location": "sandbox"},
            "invitees_counter": {"total": 1, "active": int(booking.status == "active"), "limit": 1},
            "event_memberships": [{"user": USER_URI}],
        }

    def _invitee(self, booking: _Booking) -> dict[str, Any]:
        invitee: dict[str, Any] = {
            "uri": booking.invitee_uri,
            "email": booking.email,
            "name": booking.name,
            "status": booking.status,
            "timezone": "UTC",
            "event": booking.event_uri,
            "rescheduled": False,
            "tracking": dict(booking.tracking),
            "questions_and_answers": [],
            "cancel_url": f"https://calendly.com/cancellations/{booking.invitee_uuid}",
            "reschedule_url": f"https://calendly.com/reschedulings/{booking.invitee_uuid}",
            "created_at": _iso(booking.start),
        }
        if "cancellation" in booking.extra:
            invitee["cancellation"] = booking.extra["cancellation"]
        return invitee

    # -- webhooks -------------------------------------------------------------------------------

    def _report(self, event: str, booking: _Booking) -> None:
        hooks = self.webhooks
        if hooks is None:
            return
        url = hooks.url(self.name)
        fault = hooks.decide(self.name)
        ref = booking.tracking.get("utm_content")
        correlation = ref if isinstance(ref, str) else None
        notices: list[Notice] = []
        if url:
            payload = {**self._invitee(booking), "scheduled_event": self._event(booking)}
            body = {
                "event": event,
                "created_at": _iso(datetime.now(UTC)),
                "created_by": USER_URI,
                "payload": payload,
            }
            notices.append(
                Notice(
                    self.name,
                    event,
                    booking.invitee_uri,
                    correlation,
                    url,
                    json.dumps(body, separators=(",", ":")).encode(),
                    "application/json",
                    self._sign,
                    RETRY_DELAYS[self.name],
                    final_statuses=frozenset({410}),
                )
            )
        hooks.emit(
            self.name,
            booking.invitee_uri,
            correlation,
            notices,
            statuses=[event],
            fault=None if fault is not None and fault.kind == "undeliverable" else fault,
        )

    def _sign(self, body: bytes) -> dict[str, str]:
        timestamp = str(int(time.time()))
        return {"calendly-webhook-signature": calendly_signature(self.signing_key, timestamp, body)}


def _page(count: int) -> dict[str, Any]:
    return {
        "count": count,
        "next_page": None,
        "previous_page": None,
        "next_page_token": None,
        "previous_page_token": None,
    }
