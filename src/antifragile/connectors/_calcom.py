"""Cal.com API v2: create bookings, at most once, reconcilable; build booking links.

::

    async with CalComConnector() as cal:             # ANTIFRAGILE_CALCOM_* from the environment
        booking = await cal.create_booking(
            start="2026-12-01T10:00:00Z",
            event_type_id=42,
            attendee_name="Ada",
            attendee_email="ada@example.com",
            attendee_time_zone="Europe/London",
            idempotency_key=f"booking/{lead_id}",
        )
    link = booking_link("30min", "alice", name="Ada")  # no call: a URL to send the customer

**Configuration.** ``ANTIFRAGILE_CALCOM_API_KEY`` holds the API key (``cal_...``) and
``ANTIFRAGILE_CALCOM_BASE_URL`` the API's address (``https://api.cal.com`` when unset;
``{sandbox.url}/calcom`` for the sandbox). Arguments to :class:`CalComConnector` override both.
Every request sends ``cal-api-version`` (:data:`API_VERSION`, ``2024-08-13``): without it Cal.com
silently answers with an older version of the endpoint.

**Default policy** (:func:`calcom_policy`): Cal.com allows 120 requests per 60 s for an API key,
so a token bucket of 2 per second (burst 10) paces calls; a 429's ``Retry-After`` pauses it. Up
to 5 attempts with exponential back-off from 0.5 s (capped at 10 s, full jitter); 10 s per
attempt, 60 s per call; a circuit breaker for the provider.

**Errors**: 401/403 :class:`~antifragile.AuthenticationError`, 400/422
:class:`~antifragile.InvalidRequestError`, 404 :class:`~antifragile.NotFoundError` (unknown
event type), 409 :class:`~antifragile.ConflictError` (the slot is taken), 429
:class:`~antifragile.RateLimitedError`; Cal.com's ``error.code`` and ``error.message`` are added
to the message. A failure after the request may have reached Cal.com -- a 5xx, a reset, a
timeout, a 201 without a booking -- is :class:`OutcomeUnknownError`.

**Exactly once.** Cal.com has no idempotency key, so a booking request is never sent again once
Cal.com may have received it: refusals (429) and failures before sending are retried; an ambiguous
failure raises :class:`OutcomeUnknownError` (not retryable: a durable job stops on it rather than
book twice). Every booking carries the caller's key in ``metadata`` (``{"antifragile_key":
"create-booking/<key>"}``) and its correlation (``"antifragile_ref"``:
:func:`~antifragile.connectors.correlation_for` of that key), which Cal.com returns with the booking
and in its ``BOOKING_CREATED`` webhook: reconcile an unknown outcome by looking for the key there
(found: the booking exists; absent: book again with the same key). Cal.com also refuses a second
booking of the same slot for the same host, so a mistaken resend would meet a
:class:`~antifragile.ConflictError` rather than a double booking -- a backstop, not the strategy,
since it cannot tell our booking from someone else's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from antifragile.connectors._base import HTTPConnector, base_url_from, masks_pii, required_from
from antifragile.connectors._correlation import REF_ARG, correlation_for
from antifragile.connectors._outcome import (
    OutcomeUnknownError,
    calcom_error_answer,
    error_body,
    outcome_unknown,
)
from antifragile.connectors._resend import idempotency_key_for
from antifragile.errors import ConfigurationError, IntegrationError, redact
from antifragile.http import ResilientClient
from antifragile.policies import SYSTEM_CLOCK, Clock, Exponential, Policy, Retry, TokenBucket

BASE_URL_ENV = "ANTIFRAGILE_CALCOM_BASE_URL"
API_KEY_ENV = "ANTIFRAGILE_CALCOM_API_KEY"
DEFAULT_BASE_URL = "https://api.cal.com"
#: where public booking pages live (``booking_link``)
DEFAULT_PUBLIC_URL = "https://cal.com"
#: the ``cal-api-version`` every booking request sends
API_VERSION = "2024-08-13"
PROVIDER = "calcom"
CREATE_BOOKING = "create_booking"
KEY_ARG = "antifragile_key"


def calcom_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`CalComConnector` (see the module docs)."""
    return Policy(
        PROVIDER,
        timeout=timeout,
        total_timeout=60.0,
        retry=Retry(attempts=5, backoff=Exponential(0.5, cap=10.0)),
        rate=TokenBucket(2.0, burst=10.0, max_wait=30.0),
        clock=clock,
    )


@dataclass(frozen=True, slots=True)
class Booking:
    """A booking Cal.com created: ``id``, ``uid``, ``status``, ``start``/``end`` (UTC ISO),
    the reconciliation key sent, and Cal.com's whole ``data`` object."""

    id: int
    uid: str
    status: str
    start: str
    end: str
    idempotency_key: str
    data: Mapping[str, Any]


def booking_link(
    event_type_slug: str,
    username: str,
    *,
    public_url: str = DEFAULT_PUBLIC_URL,
    name: str | None = None,
    email: str | None = None,
    notes: str | None = None,
    day: date | None = None,
    month: str | None = None,
    duration: int | None = None,
    prefill: Mapping[str, str] | None = None,
) -> str:
    """The public booking page of *username*'s event type, prefilled; pure (no call).

    ``{public_url}/{username}/{event_type_slug}`` with ``name``, ``email``, ``notes``,
    ``date`` (*day*), ``month`` (``YYYY-MM``), ``duration`` and *prefill* (more booking
    fields) in the query when given.
    """
    if not event_type_slug or not username:
        raise ConfigurationError("a booking link needs an event type slug and a username")
    query: dict[str, str] = {}
    for key, value in (("name", name), ("email", email), ("notes", notes), ("month", month)):
        if value is not None:
            query[key] = value
    if day is not None:
        query["date"] = day.isoformat()
    if duration is not None:
        query["duration"] = str(duration)
    query.update(prefill or {})
    path = f"{quote(username, safe='')}/{quote(event_type_slug, safe='')}"
    url = f"{public_url.rstrip('/')}/{path}"
    return f"{url}?{urlencode(query)}" if query else url


def _calcom_error(detail: str | None) -> str | None:
    body = error_body(detail)
    error = body.get("error") if body is not None else None
    if not isinstance(error, dict):
        return None
    parts = [error.get(k) for k in ("code", "message")]
    return ": ".join(p for p in parts if isinstance(p, str)) or None


def _start(value: str | datetime) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ConfigurationError("a booking start needs a timezone (Cal.com takes UTC)")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CalComConnector(HTTPConnector):
    """Cal.com's API v2 behind a :class:`~antifragile.ResilientClient` (see the module docs).

    *api_key* and *base_url* default to ``ANTIFRAGILE_CALCOM_API_KEY`` and
    ``ANTIFRAGILE_CALCOM_BASE_URL``; *policy* to :func:`calcom_policy` on *clock* with
    *timeout* seconds per attempt. *client* is an ``httpx.AsyncClient`` to use (yours to close).
    """

    provider = PROVIDER

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        policy: Policy | None = None,
        timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        client: httpx.AsyncClient | None = None,
        api_version: str = API_VERSION,
    ) -> None:
        key = required_from(api_key, API_KEY_ENV, needs="Cal.com needs an API key", arg="api_key")
        self.base_url = base_url_from(base_url, BASE_URL_ENV, DEFAULT_BASE_URL)
        self.policy = policy if policy is not None else calcom_policy(clock=clock, timeout=timeout)
        self._headers = {"authorization": f"Bearer {key}", "cal-api-version": api_version}
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=self.policy,
            timeout=timeout,
            client=client,
            secrets=[key],
            not_processed=calcom_error_answer,
        )

    @masks_pii("attendee_email", "guests")
    async def create_booking(
        self,
        *,
        start: str | datetime,
        attendee_name: str,
        attendee_email: str,
        attendee_time_zone: str,
        idempotency_key: str,
        event_type_id: int | None = None,
        event_type_slug: str | None = None,
        username: str | None = None,
        attendee_language: str | None = None,
        guests: Sequence[str] | None = None,
        location: str | None = None,
        length_in_minutes: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Booking:
        """Book a slot (``POST /v2/bookings``), never twice for one *idempotency_key*.

        The event type is *event_type_id*, or *event_type_slug* with *username*; *start* is
        UTC (an aware ``datetime`` is converted). Raises :class:`OutcomeUnknownError` when
        Cal.com may have booked it (see the module docs).
        """
        if event_type_id is None and (event_type_slug is None or username is None):
            raise ConfigurationError("a booking needs event_type_id, or event_type_slug+username")
        key = idempotency_key_for("create-booking", idempotency_key)
        attendee: dict[str, Any] = {
            "name": attendee_name,
            "email": attendee_email,
            "timeZone": attendee_time_zone,
        }
        if attendee_language is not None:
            attendee["language"] = attendee_language
        body: dict[str, Any] = {
            "start": _start(start),
            "attendee": attendee,
            "metadata": {**(metadata or {}), KEY_ARG: key, REF_ARG: correlation_for(key)},
        }
        if event_type_id is not None:
            body["eventTypeId"] = event_type_id
        else:
            body["eventTypeSlug"] = event_type_slug
            body["username"] = username
        if guests is not None:
            body["guests"] = list(guests)
        if location is not None:
            body["location"] = location
        if length_in_minutes is not None:
            body["lengthInMinutes"] = length_in_minutes
        try:
            response = await self.client.post(
                "/v2/bookings", json=body, headers=self._headers, operation=CREATE_BOOKING
            )
        except IntegrationError as exc:
            raise _mapped(exc, key) from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("uid"), str):
            raise OutcomeUnknownError(
                f"Cal.com answered {response.status_code} without a booking; outcome unknown, "
                f"not sent again (reconcile with {key!r})",
                provider=PROVIDER,
                operation=CREATE_BOOKING,
                status=response.status_code,
                replay_safe=False,
                detail=response.text[:500],
                reconcile_key=key,
            )
        return Booking(
            id=int(data.get("id", 0)),
            uid=data["uid"],
            status=str(data.get("status", "")),
            start=str(data.get("start", "")),
            end=str(data.get("end", "")),
            idempotency_key=key,
            data=data,
        )

    def booking_link(self, event_type_slug: str, username: str, **options: Any) -> str:
        """:func:`booking_link` (pure, no call)."""
        return booking_link(event_type_slug, username, **options)

    def __repr__(self) -> str:
        return f"CalComConnector(base_url={self.base_url!r})"


def _mapped(error: IntegrationError, key: str) -> IntegrationError:
    """Cal.com's error code and message added to *error*; an ambiguous failure made unknown."""
    described = _calcom_error(error.detail)
    if described is not None:
        text = redact(f"{error.message}: {described}")
        error.message = text
        error.args = (text,)
    return outcome_unknown(error, key)
