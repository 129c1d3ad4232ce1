"""Acuity Scheduling API v1: availability and appointments, booked once, reconciled by look-up.

::

    async with AcuityConnector() as acuity:            # ANTIFRAGILE_ACUITY_* from the environment
        days = await acuity.available_dates(appointment_type_id=7, month="2026-12")
        times = await acuity.available_times(appointment_type_id=7, date=days[0])
        appointment = await acuity.create_appointment(
            datetime=times[0].time,
            appointment_type_id=7,
            first_name="Ada",
            last_name="Lovelace",
            email="ada@example.com",
            idempotency_key=f"book/{lead_id}",
        )

**Configuration.** ``ANTIFRAGILE_ACUITY_USER_ID`` (the numeric User ID) and
``ANTIFRAGILE_ACUITY_API_KEY`` are the HTTP Basic credentials; ``ANTIFRAGILE_ACUITY_BASE_URL``
the API's address (``https://acuityscheduling.com/api/v1`` when unset;
``{sandbox.url}/acuity`` for the sandbox). The API key also signs Acuity's webhooks.

**Default policy** (:func:`acuity_policy`): Acuity allows 10 requests per second and 20
concurrent connections, so a token bucket of 8 per second (burst 10) and a bulkhead of 10 calls
in flight stay under both; a 429 (``too_many_requests``, no ``Retry-After`` documented) is backed
off. Up to 5 attempts with exponential back-off from 0.5 s (capped at 10 s, full jitter); 10 s
per attempt, 60 s per call; a circuit breaker for the provider.

**Errors**: Acuity's ``{"status_code", "message", "error"}``; 401/403
:class:`~antifragile.AuthenticationError`, 400 :class:`~antifragile.InvalidRequestError` (a
validation message, or a time that is not available), 404 :class:`~antifragile.NotFoundError`,
429 :class:`~antifragile.RateLimitedError`; ``error`` and ``message`` are added to the message.

**Exactly once: look up, before booking and after an ambiguous failure.** Acuity takes no
idempotency key and a booking request is not sent again blindly. Every call first looks the
appointment up -- ``GET /appointments?email=&minDate=&maxDate=&appointmentTypeID=``, matching
the email and the start instant -- so a call run again (a job's retry, a run killed in the
middle of the request) finds what an earlier run booked (``reconciled``). When a request may
have reached Acuity without an answer (a reset, a timeout, a 5xx that is not Acuity's own error
body), it looks again: found, it is returned; absent, the request is sent again. If the slot is
then refused (400), our own earlier request may have taken it meanwhile, so it looks once more
before reporting the refusal. A look-up that fails for now (the breaker open, a 5xx) raises a
retryable :class:`~antifragile.UpstreamUnavailableError` -- safe, since the next call looks
first; one refused for good, or :data:`RECONCILE_ROUNDS` unsettled rounds, raise
:class:`OutcomeUnknownError` (not retryable) carrying ``create-appointment/<key>``. The slot
itself is the backstop: Acuity refuses a second booking of a time with no slot left.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime as DateTime
from typing import Any

import httpx

from antifragile.connectors._base import HTTPConnector, base_url_from, masks_pii, required_from
from antifragile.connectors._outcome import OutcomeUnknownError, outcome_unknown
from antifragile.connectors._resend import idempotency_key_for
from antifragile.connectors._scheduling import described, json_object
from antifragile.errors import (
    ConfigurationError,
    IntegrationError,
    InvalidRequestError,
    UpstreamUnavailableError,
)
from antifragile.http import ResilientClient
from antifragile.policies import (
    SYSTEM_CLOCK,
    Bulkhead,
    Clock,
    Exponential,
    Policy,
    Retry,
    TokenBucket,
)

BASE_URL_ENV = "ANTIFRAGILE_ACUITY_BASE_URL"
USER_ID_ENV = "ANTIFRAGILE_ACUITY_USER_ID"
API_KEY_ENV = "ANTIFRAGILE_ACUITY_API_KEY"
DEFAULT_BASE_URL = "https://acuityscheduling.com/api/v1"
PROVIDER = "acuity"
CREATE_APPOINTMENT = "create_appointment"
#: booking attempts (each after a look-up found nothing) before the outcome is left unknown
RECONCILE_ROUNDS = 3


def acuity_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`AcuityConnector` (see the module docs)."""
    return Policy(
        PROVIDER,
        timeout=timeout,
        total_timeout=60.0,
        retry=Retry(attempts=5, backoff=Exponential(0.5, cap=10.0)),
        rate=TokenBucket(8.0, burst=10.0, max_wait=30.0),
        bulkhead=Bulkhead(10, max_wait=30.0, name=PROVIDER),
        clock=clock,
    )


def acuity_error_answer(response: httpx.Response) -> bool:
    """Acuity's own error body ``{"status_code": <int>, "message", "error"}``: a 5xx in it says
    Acuity failed the request as a whole."""
    body = json_object(response)
    return (
        body is not None
        and isinstance(body.get("status_code"), int)
        and isinstance(body.get("error"), str)
    )


@dataclass(frozen=True, slots=True)
class AvailableTime:
    """A bookable time: ``time`` (ISO 8601 with offset) and ``slots_available``."""

    time: str
    slots_available: int


@dataclass(frozen=True, slots=True)
class Appointment:
    """An appointment: ``id``, ``datetime``/``end_time`` as Acuity gives them, its type and
    calendar, whether it was ``canceled``, whether this call found it by look-up rather than
    booked it (``reconciled``), the key, and Acuity's whole object."""

    id: int
    datetime: str
    end_time: str
    appointment_type_id: int
    calendar_id: int
    canceled: bool
    reconciled: bool
    idempotency_key: str
    data: Mapping[str, Any]


def _instant(value: Any) -> DateTime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = DateTime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _described(error: IntegrationError) -> IntegrationError:
    return described(error, ("error", "message"))


def _appointment(data: Mapping[str, Any], key: str, *, reconciled: bool) -> Appointment:
    return Appointment(
        id=int(data.get("id") or 0),
        datetime=str(data.get("datetime", "")),
        end_time=str(data.get("endTime", "")),
        appointment_type_id=int(data.get("appointmentTypeID") or 0),
        calendar_id=int(data.get("calendarID") or 0),
        canceled=bool(data.get("canceled", False)),
        reconciled=reconciled,
        idempotency_key=key,
        data=data,
    )


class AcuityConnector(HTTPConnector):
    """Acuity Scheduling's API v1 behind a :class:`~antifragile.ResilientClient` (see the
    module docs).

    *user_id* and *api_key* default to ``ANTIFRAGILE_ACUITY_USER_ID`` and
    ``ANTIFRAGILE_ACUITY_API_KEY``, *base_url* to ``ANTIFRAGILE_ACUITY_BASE_URL``; *policy* to
    :func:`acuity_policy` on *clock* with *timeout* seconds per attempt. *client* is an
    ``httpx.AsyncClient`` to use (yours to close).
    """

    provider = PROVIDER

    def __init__(
        self,
        user_id: str | None = None,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        policy: Policy | None = None,
        timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        user = required_from(
            user_id, USER_ID_ENV, needs="Acuity needs a user id", arg="user_id"
        ).strip()
        key = required_from(api_key, API_KEY_ENV, needs="Acuity needs an API key", arg="api_key")
        self.base_url = base_url_from(base_url, BASE_URL_ENV, DEFAULT_BASE_URL)
        self.policy = policy if policy is not None else acuity_policy(clock=clock, timeout=timeout)
        token = base64.b64encode(f"{user}:{key}".encode()).decode()
        self._headers = {"authorization": f"Basic {token}"}
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=self.policy,
            timeout=timeout,
            client=client,
            secrets=[key, token],
            not_processed=acuity_error_answer,
        )

    async def _get(self, path: str, operation: str, params: Mapping[str, Any]) -> Any:
        try:
            response = await self.client.get(
                path,
                params={k: str(v) for k, v in params.items() if v is not None},
                headers=self._headers,
                operation=operation,
            )
        except IntegrationError as exc:
            raise _described(exc) from exc
        try:
            return response.json()
        except ValueError:
            raise UpstreamUnavailableError(
                f"Acuity answered {response.status_code} with a body that is not JSON",
                provider=PROVIDER,
                operation=operation,
                status=response.status_code,
            ) from None

    async def available_dates(
        self,
        *,
        appointment_type_id: int,
        month: str,
        calendar_id: int | None = None,
        timezone: str | None = None,
    ) -> list[str]:
        """The days of *month* (``YYYY-MM``) with a free time (``GET /availability/dates``)."""
        body = await self._get(
            "/availability/dates",
            "available_dates",
            {
                "month": month,
                "appointmentTypeID": appointment_type_id,
                "calendarID": calendar_id,
                "timezone": timezone,
            },
        )
        items = body if isinstance(body, list) else []
        return [str(i["date"]) for i in items if isinstance(i, dict) and "date" in i]

    async def available_times(
        self,
        *,
        appointment_type_id: int,
        date: str,
        calendar_id: int | None = None,
        timezone: str | None = None,
    ) -> list[AvailableTime]:
        """The free times of *date* (``YYYY-MM-DD``; ``GET /availability/times``)."""
        body = await self._get(
            "/availability/times",
            "available_times",
            {
                "date": date,
                "appointmentTypeID": appointment_type_id,
                "calendarID": calendar_id,
                "timezone": timezone,
            },
        )
        items = body if isinstance(body, list) else []
        return [
            AvailableTime(str(i["time"]), int(i.get("slotsAvailable") or 0))
            for i in items
            if isinstance(i, dict) and isinstance(i.get("time"), str)
        ]

    async def get_appointment(self, appointment_id: int | str) -> Appointment:
        """The appointment *appointment_id* (``GET /appointments/{id}``)."""
        body = await self._get(f"/appointments/{appointment_id}", "get_appointment", {})
        if not isinstance(body, dict):
            raise UpstreamUnavailableError(
                "Acuity's appointment is not an object", provider=PROVIDER
            )
        return _appointment(body, "", reconciled=False)

    @masks_pii("email")
    async def find_appointment(
        self, *, email: str, datetime: str, appointment_type_id: int | None = None
    ) -> Appointment | None:
        """The appointment of *email* starting at the instant *datetime* (ISO 8601 with an
        offset), if Acuity has one (``GET /appointments?email=&minDate=&maxDate=``)."""
        wanted = _instant(datetime)
        if wanted is None:
            raise ConfigurationError("an appointment time is ISO 8601 with an offset")
        day = wanted.date().isoformat()
        body = await self._get(
            "/appointments",
            "find_appointment",
            {
                "email": email,
                "minDate": day,
                "maxDate": day,
                "appointmentTypeID": appointment_type_id,
                "max": 100,
            },
        )
        for item in body if isinstance(body, list) else []:
            if (
                isinstance(item, dict)
                and str(item.get("email", "")).lower() == email.lower()
                and _instant(item.get("datetime")) == wanted
                and not item.get("canceled", False)
            ):
                return _appointment(item, "", reconciled=True)
        return None

    @masks_pii("email", "first_name", "last_name", "phone")
    async def create_appointment(
        self,
        *,
        datetime: str,
        appointment_type_id: int,
        first_name: str,
        last_name: str,
        email: str,
        idempotency_key: str,
        phone: str | None = None,
        calendar_id: int | None = None,
        timezone: str | None = None,
        fields: Sequence[Mapping[str, Any]] | None = None,
    ) -> Appointment:
        """Book *datetime* (ISO 8601 with an offset) for *email* (``POST /appointments``),
        never twice for one *idempotency_key*: an ambiguous failure is settled by look-up (see
        the module docs); :class:`OutcomeUnknownError` when it cannot be."""
        if _instant(datetime) is None:
            raise ConfigurationError("an appointment time is ISO 8601 with an offset")
        key = idempotency_key_for("create-appointment", idempotency_key)
        body: dict[str, Any] = {
            "datetime": datetime,
            "appointmentTypeID": appointment_type_id,
            "firstName": first_name,
            "lastName": last_name,
            "email": email,
        }
        for name, value in (("phone", phone), ("calendarID", calendar_id), ("timezone", timezone)):
            if value is not None:
                body[name] = value
        if fields is not None:
            body["fields"] = [dict(f) for f in fields]
        # look before booking: a call run again (a job's retry, a run killed mid-request) finds
        # the appointment an earlier run made; a failing look-up sends nothing
        found = await self.find_appointment(
            email=email, datetime=datetime, appointment_type_id=appointment_type_id
        )
        if found is not None:
            return _appointment(found.data, key, reconciled=True)
        unknown: IntegrationError | None = None
        for _ in range(RECONCILE_ROUNDS):
            try:
                response = await self.client.post(
                    "/appointments", json=body, headers=self._headers, operation=CREATE_APPOINTMENT
                )
            except IntegrationError as exc:
                error = outcome_unknown(_described(exc), key)
                refused_after_unknown = unknown is not None and isinstance(
                    error, InvalidRequestError
                )
                if not isinstance(error, OutcomeUnknownError) and not refused_after_unknown:
                    raise error from exc
                # it may exist (or, refused now, our earlier request may have taken the slot)
                found = await self._look_up(email, datetime, appointment_type_id, key)
                if found is not None:
                    return found
                if refused_after_unknown:
                    raise error from exc
                unknown = error
                continue
            data = json_object(response)
            if data is not None and isinstance(data.get("id"), int):
                return _appointment(data, key, reconciled=False)
            found = await self._look_up(email, datetime, appointment_type_id, key)
            if found is not None:
                return found
            unknown = UpstreamUnavailableError(
                f"Acuity answered {response.status_code} without an appointment",
                provider=PROVIDER,
                operation=CREATE_APPOINTMENT,
                status=response.status_code,
                replay_safe=False,
            )
        raise OutcomeUnknownError(
            f"Acuity's appointment could not be settled after {RECONCILE_ROUNDS} rounds "
            f"(reconcile {key!r} by email and time): {unknown}",
            provider=PROVIDER,
            operation=CREATE_APPOINTMENT,
            replay_safe=False,
            reconcile_key=key,
        )

    async def _look_up(
        self, email: str, datetime: str, appointment_type_id: int, key: str
    ) -> Appointment | None:
        try:
            found = await self.find_appointment(
                email=email, datetime=datetime, appointment_type_id=appointment_type_id
            )
        except IntegrationError as exc:
            if not exc.retryable:
                raise OutcomeUnknownError(
                    f"outcome unknown and the look-up was refused (reconcile {key!r} by email "
                    f"and time): {exc.message}",
                    provider=PROVIDER,
                    operation=CREATE_APPOINTMENT,
                    replay_safe=False,
                    reconcile_key=key,
                ) from exc
            # the next call looks the appointment up before it books: safe to call again
            raise UpstreamUnavailableError(
                f"outcome unknown and the look-up failed for now ({exc.message}); call again "
                "later: it looks the appointment up first",
                provider=PROVIDER,
                operation=CREATE_APPOINTMENT,
                replay_safe=True,
            ) from exc
        if found is None:
            return None
        return _appointment(found.data, key, reconciled=True)

    async def cancel_appointment(self, appointment_id: int | str) -> Appointment:
        """Cancel *appointment_id* (``PUT /appointments/{id}/cancel``; idempotent)."""
        try:
            response = await self.client.put(
                f"/appointments/{appointment_id}/cancel",
                json={},
                headers=self._headers,
                operation="cancel_appointment",
            )
        except IntegrationError as exc:
            raise _described(exc) from exc
        data = json_object(response)
        if data is None:
            raise UpstreamUnavailableError(
                "Acuity's cancellation answer is not an appointment", provider=PROVIDER
            )
        return _appointment(data, "", reconciled=False)

    def __repr__(self) -> str:
        return f"AcuityConnector(base_url={self.base_url!r})"
