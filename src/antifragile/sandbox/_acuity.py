"""An Acuity Scheduling API v1 simulator: availability, appointments, signed webhooks.

* **Auth** -- HTTP Basic, user = the numeric User ID, password = the API key; anything else is
  401 ``unauthorized``.
* **Errors** -- ``{"status_code", "message", "error"}``: ``bad_request`` 400, ``unauthorized``
  401, ``forbidden`` 403, ``not_found`` 404, ``method_not_allowed`` 405,
  ``too_many_requests`` 429, ``internal_error`` 5xx. A time that is not free is 400 with the
  error ``not_available`` (a simulator choice: the sources give no code for it).
* **Rate limit** -- ``rate_limit`` requests per second (10: Acuity's figure; its 20 concurrent
  connections are not simulated); past it, 429 ``too_many_requests`` "Rate limit reached."
  without a ``Retry-After`` (none is documented). A scripted 429 fault carries ``Retry-After``
  so that a client can be seen to honour one.
* **Availability** -- every weekday of the account's ``timezone``, ``hours`` (09:00 to 16:00 by
  default, on the hour), ``slots`` bookings per time: ``GET /availability/dates?month=
  &appointmentTypeID=`` -> ``[{"date"}]``; ``GET /availability/times?date=&appointmentTypeID=``
  -> ``[{"time": "...-0500", "slotsAvailable"}]``.
* **Appointments** -- ``POST /appointments`` (JSON ``datetime``, ``appointmentTypeID``,
  ``firstName``, ``lastName``, ``email``, ...) -> 200 the appointment (recorded as an effect);
  ``GET /appointments?email=&minDate=&maxDate=&appointmentTypeID=&canceled=``;
  ``GET /appointments/{id}``; ``PUT /appointments/{id}/cancel``.
* **Webhooks** -- to the sandbox's callback URL for ``acuity``, form-encoded ``action``
  (``scheduled``, ``canceled``), ``id``, ``calendarID``, ``appointmentTypeID`` -- the appointment
  itself is not in the body -- signed ``X-Acuity-Signature: base64(HMAC-SHA256(api_key, body))``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo

from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator
from antifragile.sandbox._status import RETRY_DELAYS, Notice
from antifragile.sandbox._window import FixedWindow

_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_MONTH = re.compile(r"^\d{4}-\d{2}$")

_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "Bad request."),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    429: ("too_many_requests", "Rate limit reached. Limit 10req/s and 20 concurrent connections."),
}


def acuity_signature(api_key: str, body: bytes) -> str:
    """``X-Acuity-Signature``: base64 HMAC-SHA256 of the body with the API key."""
    return base64.b64encode(hmac.new(api_key.encode(), body, hashlib.sha256).digest()).decode()


@dataclass(frozen=True, slots=True)
class AppointmentType:
    """An appointment type the simulator books: id, name, length (minutes), calendar."""

    id: int
    name: str = "Consultation"
    duration: int = 30
    calendar_id: int = 1


def _stamp(moment: datetime) -> str:
    """Acuity's time format: ``2026-12-01T09:00:00-0500``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S%z")


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class AcuitySimulator(Simulator):
    """Acuity Scheduling's API v1 for availability and appointments (see the module docs)."""

    name = "acuity"
    sends_webhooks = True
    settable = frozenset({"rate_limit", "slots"})

    def __init__(
        self,
        *,
        user_id: str = "1",
        api_key: str = "sandbox-acuity-key",
        appointment_types: Iterable[AppointmentType] | None = None,
        timezone: str = "America/New_York",
        hours: Iterable[int] = range(9, 17),
        slots: int = 1,
        rate_limit: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.user_id = user_id
        self.api_key = api_key
        types = list(appointment_types or [AppointmentType(1)])
        self.appointment_types: dict[int, AppointmentType] = {t.id: t for t in types}
        self.zone = ZoneInfo(timezone)
        self.hours = tuple(hours)
        self.slots = slots
        self.rate_limit = rate_limit
        self._clock = clock
        self._window = FixedWindow(rate_limit, 1.0, clock)
        self._lock = threading.Lock()
        self._ids = itertools.count(1001)
        self._appointments: dict[int, dict[str, Any]] = {}
        super().__init__()

    def routes(self) -> Iterable[Route]:
        return [
            Route("GET", "/availability/dates", self.dates),
            Route("GET", "/availability/times", self.times),
            Route("POST", "/appointments", self.create),
            Route("GET", "/appointments", self.list_appointments),
            Route("GET", "/appointments/{id}", self.get_appointment),
            Route("PUT", "/appointments/{id}/cancel", self.cancel),
        ]

    def configure(self, settings: Mapping[str, Any]) -> None:
        super().configure(settings)
        self._window = FixedWindow(self.rate_limit, 1.0, self._clock)

    def reset(self) -> None:
        self._window.reset()
        with self._lock:
            self._appointments.clear()
            self._ids = itertools.count(1001)

    # -- the provider's answers -----------------------------------------------------------------

    def error(self, status: int, message: str | None = None, code: str | None = None) -> Reply:
        default_code, default = _ERRORS.get(
            status,
            ("internal_error", "Internal server error.")
            if status >= 500
            else ("bad_request", "Bad request."),
        )
        return Reply(
            status,
            {"status_code": status, "message": message or default, "error": code or default_code},
        )

    def rate_limited(self, retry_after: float) -> Reply:
        return self.error(429).with_headers({"Retry-After": str(max(1, round(retry_after)))})

    def throttle(self, request: IncomingRequest) -> Reply | None:
        if self._window.take() is None:
            return None
        return self.error(429)

    def authenticate(self, request: IncomingRequest) -> Reply | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return self.error(401)
        try:
            user, _, key = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return self.error(401)
        ok = hmac.compare_digest(user.encode(), self.user_id.encode()) and hmac.compare_digest(
            key.encode(), self.api_key.encode()
        )
        return None if ok else self.error(401)

    # -- availability ---------------------------------------------------------------------------

    def _type(self, raw: Any) -> AppointmentType | Reply:
        try:
            type_id = int(raw)
        except (TypeError, ValueError):
            return self.error(400, "appointmentTypeID is required")
        found = self.appointment_types.get(type_id)
        return found if found is not None else self.error(400, "Invalid appointmentTypeID")

    def _free(self, day: date, type_id: int) -> list[tuple[datetime, int]]:
        if day.weekday() >= 5:
            return []
        free: list[tuple[datetime, int]] = []
        with self._lock:
            for hour in self.hours:
                moment = datetime(day.year, day.month, day.day, hour, tzinfo=self.zone)
                taken = sum(
                    1
                    for a in self._appointments.values()
                    if not a["canceled"] and _parse(a["datetime"]) == moment
                )
                if taken < self.slots:
                    free.append((moment, self.slots - taken))
        return free

    def dates(self, call: Call) -> Reply:
        query = {k: v[-1] for k, v in parse_qs(call.request.query).items()}
        kind = self._type(query.get("appointmentTypeID"))
        if isinstance(kind, Reply):
            return kind
        month = query.get("month", "")
        if not _MONTH.match(month):
            return self.error(400, "month must be YYYY-MM")
        first = date.fromisoformat(f"{month}-01")
        days = []
        day = first
        while day.month == first.month:
            if self._free(day, kind.id):
                days.append({"date": day.isoformat()})
            day += timedelta(days=1)
        return Reply(200, days)

    def times(self, call: Call) -> Reply:
        query = {k: v[-1] for k, v in parse_qs(call.request.query).items()}
        kind = self._type(query.get("appointmentTypeID"))
        if isinstance(kind, Reply):
            return kind
        try:
            day = date.fromisoformat(query.get("date", ""))
        except ValueError:
            return self.error(400, "date must be YYYY-MM-DD")
        return Reply(
            200,
            [{"time": _stamp(m), "slotsAvailable": n} for m, n in self._free(day, kind.id)],
        )

    # -- appointments ---------------------------------------------------------------------------

    def create(self, call: Call) -> Reply:
        try:
            body = call.json()
        except ValueError:
            return self.error(400, "Expected a JSON object.")
        if not isinstance(body, dict):
            return self.error(400, "Expected a JSON object.")
        kind = self._type(body.get("appointmentTypeID"))
        if isinstance(kind, Reply):
            return kind
        for name in ("firstName", "lastName", "email"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                return self.error(400, f"The field {name} is required.")
        if not _ADDRESS.match(body["email"]):
            return self.error(400, "The email address is not valid.")
        moment = _parse(body.get("datetime"))
        if moment is None:
            return self.error(400, "datetime must be ISO 8601 with an offset.")
        local = moment.astimezone(self.zone)
        if all(m != local for m, _ in self._free(local.date(), kind.id)):
            return self.error(400, "The time you've selected is not available.", "not_available")
        with self._lock:
            appointment_id = next(self._ids)
            end = local + timedelta(minutes=kind.duration)
            appointment = {
                "id": appointment_id,
                "firstName": body["firstName"],
                "lastName": body["lastName"],
                "email": body["email"],
                "phone": str(body.get("phone") or ""),
                "datetime": _stamp(local),
                "endTime": end.strftime("%-I:%M%p").lower(),
                "date": local.strftime("%B %-d, %Y"),
                "time": local.strftime("%-I:%M%p").lower(),
                "duration": str(kind.duration),
                "type": kind.name,
                "appointmentTypeID": kind.id,
                "calendarID": int(body.get("calendarID") or kind.calendar_id),
                "timezone": str(body.get("timezone") or self.zone.key),
                "canceled": False,
                "confirmationPage": f"https://app.acuityscheduling.com/schedule.php?id={appointment_id}",
                "forms": [],
                "datetimeCreated": _stamp(datetime.now(self.zone)),
            }
            self._appointments[appointment_id] = appointment
        call.commit(str(appointment_id), body)
        self._report("scheduled", appointment)
        return Reply(200, appointment)

    def list_appointments(self, call: Call) -> Reply:
        query = {k: v[-1] for k, v in parse_qs(call.request.query).items()}
        email = query.get("email", "").lower()
        try:
            low = date.fromisoformat(query["minDate"]) if "minDate" in query else None
            high = date.fromisoformat(query["maxDate"]) if "maxDate" in query else None
        except ValueError:
            return self.error(400, "minDate and maxDate are dates")
        canceled = query.get("canceled") == "true"
        type_id = query.get("appointmentTypeID")
        with self._lock:
            items = list(self._appointments.values())
        found = []
        for a in items:
            moment = _parse(a["datetime"])
            day = moment.date() if moment is not None else None
            if (
                (not email or a["email"].lower() == email)
                and (low is None or (day is not None and day >= low))
                and (high is None or (day is not None and day <= high))
                and a["canceled"] == canceled
                and (type_id is None or str(a["appointmentTypeID"]) == type_id)
            ):
                found.append(a)
        return Reply(200, found)

    def get_appointment(self, call: Call) -> Reply:
        found = self._find(call.params["id"])
        return Reply(200, found) if found is not None else self.error(404)

    def cancel(self, call: Call) -> Reply:
        with self._lock:
            found = self._find_locked(call.params["id"])
            if found is None:
                return self.error(404)
            was = found["canceled"]
            found["canceled"] = True
        if not was:
            call.commit(str(found["id"]), {"cancel": found["id"]})
            self._report("canceled", found)
        return Reply(200, found)

    def _find(self, raw: str) -> dict[str, Any] | None:
        with self._lock:
            return self._find_locked(raw)

    def _find_locked(self, raw: str) -> dict[str, Any] | None:
        try:
            return self._appointments.get(int(raw))
        except ValueError:
            return None

    # -- webhooks -------------------------------------------------------------------------------

    def _report(self, action: str, appointment: Mapping[str, Any]) -> None:
        hooks = self.webhooks
        if hooks is None:
            return
        url = hooks.url(self.name)
        fault = hooks.decide(self.name)
        message_id = str(appointment["id"])
        notices: list[Notice] = []
        if url:
            body = urlencode(
                {
                    "action": action,
                    "id": appointment["id"],
                    "calendarID": appointment["calendarID"],
                    "appointmentTypeID": appointment["appointmentTypeID"],
                }
            ).encode()
            notices.append(
                Notice(
                    self.name,
                    action,
                    message_id,
                    None,
                    url,
                    body,
                    "application/x-www-form-urlencoded",
                    self._sign,
                    RETRY_DELAYS[self.name],
                )
            )
        hooks.emit(
            self.name,
            message_id,
            None,
            notices,
            statuses=[action],
            fault=None if fault is not None and fault.kind == "undeliverable" else fault,
        )

    def _sign(self, body: bytes) -> dict[str, str]:
        return {"x-acuity-signature": acuity_signature(self.api_key, body)}
