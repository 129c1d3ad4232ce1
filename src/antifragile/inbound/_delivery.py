"""Delivery statuses: what a provider reports about something we sent, and where it lands.

Every provider that reports on what it was asked to do sends status webhooks: WhatsApp
``statuses[]``, Twilio status callbacks, the SendGrid Event Webhook, Resend's (Svix) events,
Cal.com booking triggers, HubSpot subscription events. Each is parsed into an
:class:`~antifragile.inbound.InboundEvent` of kind ``status`` whose ``data`` has one shape for
every provider; :meth:`DeliveryStatus.from_event` reads it back as a typed value::

    DeliveryStatus(provider="whatsapp", event_id="wamid.X:read", status="read",
                   provider_status="read", provider_message_id="wamid.X",
                   correlation="7f3c...", error_code=None, occurred_at=1749416383.0)

``status`` is normalised (:data:`STATUSES`); ``provider_status`` is the provider's own word;
``correlation`` is the value the send carried and the provider echoes back -- WhatsApp
``biz_opaque_callback_data``, the ``ref`` query parameter of a Twilio
``StatusCallback`` URL, the ``antifragile_ref`` SendGrid ``custom_args`` entry, Resend tag and
Cal.com ``metadata`` entry (:data:`CORRELATION_KEY`).

:class:`DeliveryStatuses` records them (the ``inbound.process`` job calls
:meth:`DeliveryStatuses.record`):

* the status is kept under ``delivery:{provider}:{provider message id}`` (30 days), matched or
  not -- a status for a correlation nobody knows is recorded and counted
  (``antifragile_delivery_statuses_total{matched="false"}``), never an error;
* when it belongs to an outbound message record (``outmsg:{id}``, see
  :class:`~antifragile.inbound.Replies`) -- found by its correlation, or by the provider's message
  id once the send has returned -- the record's ``delivery_status`` moves **forward only**, by
  :data:`STATUS_RANK` (``read`` never goes back to ``delivered``; a late ``delivered`` only adds
  its time to ``delivery_times``). A status that arrives before the send returns waits under its
  provider id and is applied when the send records that id (:meth:`DeliveryStatuses.settle`);
* then every hook registered with :meth:`DeliveryStatuses.on_status` is called with the status
  and what it matched -- the place to settle a job whose outcome was unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from antifragile.connectors._correlation import REF_ARG, REF_QUERY
from antifragile.errors import ConfigurationError, TransientError
from antifragile.inbound._model import Channel, EventKind, InboundEvent
from antifragile.jobs import Jobs
from antifragile.observability import DeliveryStatusRecorded
from antifragile.policies import Clock
from antifragile.stores import KeyValueStore

_log = logging.getLogger("antifragile.inbound.delivery")

#: the name under which a send carries its correlation value (SendGrid ``custom_args``, Resend
#: tags, Cal.com ``metadata``); the Twilio ``StatusCallback`` URL carries it as ``ref=``
CORRELATION_KEY = REF_ARG
#: the query parameter of a Twilio ``StatusCallback`` URL that carries the correlation
CORRELATION_QUERY = REF_QUERY

#: normalised statuses, by how far along they say the message (or effect) is; a record never
#: moves to a lower rank. ``other`` (an event that says nothing about delivery: an unsubscribe,
#: a property change) is recorded but never changes a message's status.
STATUS_RANK: Mapping[str, int] = {
    "queued": 0,  # accepted, not yet sent on (Twilio queued/sending, SendGrid processed)
    "sent": 1,
    "deferred": 1,  # a temporary delivery delay (SendGrid deferred, Resend delivery_delayed)
    "delivered": 2,
    "confirmed": 2,  # the effect exists (a Cal.com booking, a HubSpot object created)
    "read": 3,  # read (WhatsApp, Twilio), opened or clicked (email)
    "complained": 3,  # marked as spam after delivery
    "failed": 4,
    "bounced": 4,
    "cancelled": 4,  # the effect was undone (booking cancelled, object deleted)
}
#: every normalised status
STATUSES: tuple[str, ...] = (*STATUS_RANK, "other")

#: key prefixes in the key-value store
DELIVERY_PREFIX = "delivery:"
OUTMSG_PREFIX = "outmsg:"
#: key prefix of the index from the correlation a reply carries to its record
OUTREF_PREFIX = "outref:"
BY_PROVIDER_PREFIX = "outmsg-by-provider:"
#: how long a status record is kept (seconds)
DELIVERY_RETENTION = 30 * 24 * 3600.0

_CAS_ATTEMPTS = 16


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """A provider's report on something sent (see the module docs)."""

    provider: str
    event_id: str
    status: str
    provider_status: str
    provider_message_id: str | None = None
    correlation: str | None = None
    error_code: str | None = None
    occurred_at: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        """How far along this status is (:data:`STATUS_RANK`; ``-1`` for ``other``)."""
        return STATUS_RANK.get(self.status, -1)

    def data(self) -> dict[str, Any]:
        """The ``data`` of the inbound event carrying this status (``details`` merged in)."""
        return {
            **dict(self.details),
            "message_id": self.provider_message_id,
            "status": self.status,
            "provider_status": self.provider_status,
            "correlation": self.correlation,
            "error_code": self.error_code,
        }

    def event(self, channel: Channel, tenant_key: str) -> InboundEvent:
        """This status as an inbound event (kind ``status``, the provider's status as topic)."""
        return InboundEvent(
            channel=channel,
            event_id=self.event_id,
            kind=EventKind.STATUS,
            tenant_key=tenant_key,
            topic=self.provider_status,
            occurred_at=self.occurred_at,
            data=self.data(),
        )

    @classmethod
    def from_event(cls, event: InboundEvent) -> DeliveryStatus:
        """The status an inbound ``status`` event carries."""
        data = dict(event.data)
        known = {"message_id", "status", "provider_status", "correlation", "error_code"}
        raw = str(data.get("provider_status") or event.topic or data.get("status") or "")
        status = str(data.get("status") or "other")
        return cls(
            provider=event.channel.value,
            event_id=event.event_id,
            status=status if status in STATUSES else "other",
            provider_status=raw,
            provider_message_id=_text(data.get("message_id")),
            correlation=_text(data.get("correlation")),
            error_code=_text(data.get("error_code")),
            occurred_at=event.occurred_at,
            details={k: v for k, v in data.items() if k not in known},
        )


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


@dataclass(frozen=True, slots=True)
class DeliveryMatch:
    """What :meth:`DeliveryStatuses.record` did with a status.

    ``message_id`` is the outbound message it belongs to (``None``: unknown correlation, or
    not sent by :class:`~antifragile.inbound.Replies`); ``applied`` says whether it moved the
    message's ``delivery_status`` forward; ``delivery_status`` is the message's status after it.
    """

    message_id: str | None
    applied: bool = False
    delivery_status: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "applied": self.applied,
            "delivery_status": self.delivery_status,
        }


#: ``async def hook(status, match)``: called for every recorded status
DeliveryHook = Callable[[DeliveryStatus, DeliveryMatch], Awaitable[None]]
H = TypeVar("H", bound=DeliveryHook)


def status_key(provider: str, provider_message_id: str) -> str:
    """Where the statuses of one provider message are kept."""
    return f"{DELIVERY_PREFIX}{provider}:{provider_message_id}"


def provider_index_key(provider: str, provider_message_id: str) -> str:
    """Where the outbound message id of a provider's message id is kept."""
    return f"{BY_PROVIDER_PREFIX}{provider}:{provider_message_id}"


def advance(record: Mapping[str, Any], status: DeliveryStatus, now: float) -> dict[str, Any]:
    """*record*'s delivery fields after *status* -- forward only (see the module docs).

    ``delivery_status`` changes only to a status of a higher rank; ``delivery_times`` keeps the
    first time each status was reported (the provider's time when it gives one);
    ``delivery_error_code`` the error code of a failure; ``delivery_provider_message_id`` the
    provider's message id the first status named (what settles a send whose answer was lost).
    """
    current = record.get("delivery_status")
    current_rank = STATUS_RANK.get(str(current), -1) if current else -1
    times = dict(record.get("delivery_times") or {})
    update: dict[str, Any] = {}
    if status.status != "other" and status.status not in times:
        times[status.status] = status.occurred_at if status.occurred_at is not None else now
        update["delivery_times"] = times
    if (
        status.status != "other"
        and status.provider_message_id
        and not record.get("delivery_provider_message_id")
    ):
        # the send's answer may have been lost: the status names the provider's message
        update["delivery_provider_message_id"] = status.provider_message_id
    if status.rank > current_rank:
        update["delivery_status"] = status.status
        update["delivery_provider_status"] = status.provider_status
        update["delivery_updated_at"] = now
        if status.error_code is not None:
            update["delivery_error_code"] = status.error_code
    return update


class DeliveryStatuses:
    """Records delivery statuses on the outbound message records (see the module docs).

    *jobs* gives the key-value store beside the queue and the observer (metrics); *clock* the
    time. Hooks registered with :meth:`on_status` run after each status is recorded.
    """

    def __init__(self, jobs: Jobs, *, clock: Clock | None = None) -> None:
        self.jobs = jobs
        self.clock = clock or jobs.clock
        self._hooks: list[DeliveryHook] = []

    def on_status(self, hook: H) -> H:
        """Register ``async def hook(status: DeliveryStatus, match: DeliveryMatch)``, called
        after every status is recorded (usable as a decorator). A hook that raises makes the
        processing job fail and retry: hooks must be idempotent."""
        self._hooks.append(hook)
        return hook

    def _kv(self) -> KeyValueStore:
        kv = getattr(getattr(self.jobs.queue, "store", None), "kv", None)
        if not isinstance(kv, KeyValueStore):
            raise ConfigurationError(
                "delivery statuses are kept in the key-value store beside the job queue; this "
                "queue has none"
            )
        return kv

    async def record(self, status: DeliveryStatus) -> DeliveryMatch:
        """Keep *status*, apply it to its outbound message if there is one, call the hooks."""
        kv = self._kv()
        now = self.clock.time()
        reference = status.provider_message_id or status.correlation
        if reference is not None:
            # kept first: a send that returns after this finds it (see settle)
            await kv.merge(
                status_key(status.provider, reference),
                {
                    f"{status.provider_status or status.status}": {
                        "status": status.status,
                        "at": status.occurred_at if status.occurred_at is not None else now,
                        "error_code": status.error_code,
                        "event_id": status.event_id,
                        "correlation": status.correlation,
                    }
                },
                now=now,
                ttl=DELIVERY_RETENTION,
            )
        message_id = await self._find(kv, status, now)
        match = DeliveryMatch(None)
        if message_id is not None:
            match = await self._apply(kv, message_id, status)
        observer = self.jobs.observer
        if observer is not None:
            observer.on_event(
                DeliveryStatusRecorded(
                    policy=status.provider,
                    operation=status.status,
                    matched=match.message_id is not None,
                )
            )
        if match.message_id is None:
            _log.info(
                "delivery status for no known message",
                extra={"provider": status.provider, "status": status.status},
            )
        for hook in self._hooks:
            await hook(status, match)
        return match

    async def settle(self, message_id: str, provider: str, provider_message_id: str) -> None:
        """Note that the outbound message *message_id* is the provider's *provider_message_id*
        and apply the statuses that arrived before the send returned (called by
        :class:`~antifragile.inbound.Replies` once the provider answered)."""
        kv = self._kv()
        now = self.clock.time()
        await kv.set(
            provider_index_key(provider, provider_message_id),
            {"message_id": message_id},
            now=now,
            ttl=DELIVERY_RETENTION,
        )
        early = await kv.get(status_key(provider, provider_message_id), now=now)
        if early is None or not isinstance(early.value, dict):
            return
        for raw, seen in early.value.items():
            if not isinstance(seen, dict):
                continue
            status = DeliveryStatus(
                provider=provider,
                event_id=str(seen.get("event_id") or ""),
                status=str(seen.get("status") or "other"),
                provider_status=str(raw),
                provider_message_id=provider_message_id,
                correlation=_text(seen.get("correlation")),
                error_code=_text(seen.get("error_code")),
                occurred_at=seen.get("at") if isinstance(seen.get("at"), int | float) else None,
            )
            await self._apply(kv, message_id, status)

    async def _find(self, kv: KeyValueStore, status: DeliveryStatus, now: float) -> str | None:
        if status.correlation:
            found = await kv.get(OUTMSG_PREFIX + status.correlation, now=now)
            if found is not None and isinstance(found.value, dict):
                return status.correlation
            # a reply carries correlation_for(its message id): the index leads back to it
            indexed = await kv.get(OUTREF_PREFIX + status.correlation, now=now)
            if indexed is not None and isinstance(indexed.value, dict):
                message_id = indexed.value.get("message_id")
                if isinstance(message_id, str) and message_id:
                    return message_id
        if status.provider_message_id:
            index = await kv.get(
                provider_index_key(status.provider, status.provider_message_id), now=now
            )
            if index is not None and isinstance(index.value, dict):
                message_id = index.value.get("message_id")
                if isinstance(message_id, str) and message_id:
                    return message_id
        return None

    async def _apply(
        self, kv: KeyValueStore, message_id: str, status: DeliveryStatus
    ) -> DeliveryMatch:
        """Move the message's delivery fields forward, atomically (compare-and-set)."""
        key = OUTMSG_PREFIX + message_id
        for _ in range(_CAS_ATTEMPTS):
            now = self.clock.time()
            found = await kv.get(key, now=now)
            if found is None or not isinstance(found.value, dict):
                return DeliveryMatch(None)
            record = found.value
            update = advance(record, status, now)
            current = update.get("delivery_status", record.get("delivery_status"))
            if not update:
                return DeliveryMatch(message_id, False, current)
            ttl = None if found.expires_at is None else max(1.0, found.expires_at - now)
            written = await kv.compare_and_set(
                key, {**record, **update}, expected_version=found.version, now=now, ttl=ttl
            )
            if written is not None:
                return DeliveryMatch(message_id, "delivery_status" in update, current)
        raise TransientError(f"the record of message {message_id} kept changing; retried later")
