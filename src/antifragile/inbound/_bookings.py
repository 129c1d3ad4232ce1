"""Booking statuses: where a call the assistant arranged stands, on the contact's session.

``book_call`` (:mod:`antifragile.inbound._actions`) arranges a call through the tenant's
scheduling provider -- a Cal.com booking or booking link, a single-use Calendly link, an Acuity
appointment -- and notes what it did on the contact's session record, in its
``booking_status`` field. The provider's webhook then settles it: Cal.com's
``BOOKING_CREATED``/``BOOKING_CANCELLED``, Calendly's ``invitee.created``/``invitee.canceled``,
Acuity's ``scheduled``/``canceled``. The status only moves forward (:data:`BOOKING_RANK`):

==============  ===========================================================================
``link_sent``   the customer got a link to book through (Calendly; Cal.com without a time)
``booked``      the call is booked (by the action, or by the customer through the link)
``cancelled``   it was cancelled
==============  ===========================================================================

**Finding the session.** A webhook names the booking, not the conversation. When ``book_call``
arranges one it writes an index under ``bookref:`` -- by the correlation its link or booking
carries (Calendly ``utm_content``, Cal.com ``metadata``), and by the provider's id once known
(an Acuity appointment id, whose webhook carries nothing else) -- pointing at the session's
key. :class:`BookingStatuses` is a hook of :class:`~antifragile.inbound.DeliveryStatuses`: every
scheduling status recorded looks the index up and settles the session (compare-and-set on the
record, so it never overwrites what the session's own turns write). A status that matches no
index is left alone: it was not arranged by the assistant.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from antifragile.inbound._delivery import DeliveryMatch, DeliveryStatus, DeliveryStatuses
from antifragile.policies import Clock
from antifragile.stores import KeyValueStore

_log = logging.getLogger("antifragile.inbound.bookings")

#: the session field that says where the contact's call stands
BOOKING_STATUS = "booking_status"
#: the booking statuses, by how far along they are (a session never moves back)
BOOKING_RANK: Mapping[str, int] = {"link_sent": 1, "booked": 2, "cancelled": 3}
#: the providers whose statuses settle bookings
SCHEDULING_PROVIDERS: tuple[str, ...] = ("calcom", "calendly", "acuity")
#: key prefix of the index from a booking's correlation (or provider id) to its session
BOOKREF_PREFIX = "bookref:"
#: how long the index is kept (seconds): a link may be used weeks after it was sent
BOOKREF_RETENTION = 60 * 24 * 3600.0
_CAS_ATTEMPTS = 16

#: what a normalised delivery status says of a booking
_SETTLES = {"confirmed": "booked", "cancelled": "cancelled"}


def bookref_key(
    provider: str, *, correlation: str | None = None, provider_id: str | None = None
) -> str:
    """The index entry of a booking, by *correlation* or by *provider*'s id."""
    if correlation:
        return f"{BOOKREF_PREFIX}ref:{correlation}"
    return f"{BOOKREF_PREFIX}{provider}:{provider_id}"


async def remember_booking(
    kv: KeyValueStore,
    session_key: str,
    provider: str,
    *,
    now: float,
    correlation: str | None = None,
    provider_id: str | None = None,
) -> None:
    """Index the booking (by *correlation* and/or *provider_id*) to *session_key*."""
    keys = [bookref_key(provider, correlation=correlation)] if correlation else []
    if provider_id:
        keys.append(bookref_key(provider, provider_id=provider_id))
    for key in keys:
        await kv.set(
            key, {"session": session_key, "provider": provider}, now=now, ttl=BOOKREF_RETENTION
        )


async def settle_booking(kv: KeyValueStore, session_key: str, status: str, *, now: float) -> bool:
    """Move the session's ``booking_status`` forward to *status* (never back); whether it
    changed. A session that does not exist is left alone."""
    rank = BOOKING_RANK[status]
    for _ in range(_CAS_ATTEMPTS):
        current = await kv.get(session_key, now=now)
        if current is None or not isinstance(current.value, dict):
            return False
        was = current.value.get(BOOKING_STATUS)
        if isinstance(was, str) and BOOKING_RANK.get(was, 0) >= rank:
            return False
        ttl = None if current.expires_at is None else max(1.0, current.expires_at - now)
        written = await kv.compare_and_set(
            session_key,
            {**current.value, BOOKING_STATUS: status},
            expected_version=current.version,
            now=now,
            ttl=ttl,
        )
        if written is not None:
            return True
    _log.warning("booking status of %s not settled: the session kept changing", session_key)
    return False


class BookingStatuses:
    """Settles sessions' ``booking_status`` from the scheduling providers' statuses recorded by
    *deliveries* (see the module docs); registers itself as one of its hooks."""

    def __init__(self, deliveries: DeliveryStatuses, *, clock: Clock | None = None) -> None:
        self.deliveries = deliveries
        self.clock = clock or deliveries.clock
        #: sessions settled since this object was made
        self.settled = 0
        deliveries.on_status(self.heard)

    async def heard(self, status: DeliveryStatus, match: DeliveryMatch) -> None:
        settles = _SETTLES.get(status.status)
        if settles is None or status.provider not in SCHEDULING_PROVIDERS:
            return
        kv = self.deliveries._kv()
        now = self.clock.time()
        keys = []
        if status.correlation:
            keys.append(bookref_key(status.provider, correlation=status.correlation))
        if status.provider_message_id:
            keys.append(bookref_key(status.provider, provider_id=status.provider_message_id))
        for key in keys:
            found = await kv.get(key, now=now)
            value = found.value if found is not None else None
            if isinstance(value, dict) and isinstance(value.get("session"), str):
                if await settle_booking(kv, value["session"], settles, now=now):
                    self.settled += 1
                return
