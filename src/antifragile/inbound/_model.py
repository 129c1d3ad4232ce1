"""What the inbound side works with: a verified, parsed provider event, a tenant, a
classification.

Every webhook body a provider sends is verified, then parsed into one or more
:class:`InboundEvent` -- one per message, status update or commerce event it carries -- each with
the provider's own id for it (``event_id``: a WhatsApp ``wamid``, a Twilio ``MessageSid``, a
Shopify ``X-Shopify-Webhook-Id``, a SendGrid ``sg_event_id``, a Svix ``svix-id``...), which is
what deduplication keys on. A ``status`` event's ``data`` has one shape for every provider: read
it with :meth:`~antifragile.inbound.DeliveryStatus.from_event`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from antifragile.inbound._sealing import seal, sealing, unseal


class Channel(enum.StrEnum):
    """Where an inbound event came from (and where a reply to it goes)."""

    WHATSAPP = "whatsapp"
    TWILIO = "twilio"
    SHOPIFY = "shopify"
    # providers that only report on what was sent (status webhooks)
    SENDGRID = "sendgrid"
    RESEND = "resend"
    CALCOM = "calcom"
    CALENDLY = "calendly"
    ACUITY = "acuity"
    HUBSPOT = "hubspot"
    MANDRILL = "mandrill"
    API = "api"  # pre-classified messages posted to /v1/ai-results


class EventKind(enum.StrEnum):
    MESSAGE = "message"  # a customer's message (text, or another type with its ``topic``)
    STATUS = "status"  # a delivery status of something we sent (see DeliveryStatus)
    COMMERCE = "commerce"  # a Shopify topic: orders/create, customers/create, ...


@dataclass(frozen=True, slots=True)
class InboundEvent:
    """One event a provider delivered, verified and parsed.

    * ``event_id`` -- the provider's id of the event (dedup key, unique per ``channel``);
    * ``tenant_key`` -- whom it was sent to: the WhatsApp ``phone_number_id``, the Twilio
      ``To`` number (``whatsapp:`` prefix stripped, E.164 with ``+``), or the Shopify shop
      domain;
    * ``sender`` -- the customer's phone number, digits only with country code (no ``+``,
      no ``whatsapp:``), or ``None`` (Shopify);
    * ``text`` -- the message text, when there is one;
    * ``topic`` -- the message type (``text``, ``image``...), the status (``delivered``...) or
      the Shopify topic (``orders/create``);
    * ``occurred_at`` -- when the provider says it happened (epoch seconds), if it says;
    * ``data`` -- further JSON details (profile name, order id, the status's message id...).
    """

    channel: Channel
    event_id: str
    kind: EventKind
    tenant_key: str
    sender: str | None = None
    text: str | None = None
    topic: str | None = None
    occurred_at: float | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel.value,
            "event_id": self.event_id,
            "kind": self.kind.value,
            "tenant_key": self.tenant_key,
            "sender": self.sender,
            "text": self.text,
            "topic": self.topic,
            "occurred_at": self.occurred_at,
            "data": dict(self.data),
        }

    def to_sealed_json(self) -> dict[str, Any]:
        """:meth:`to_json` with the sender, the text and the data sealed when a data key is
        configured (:mod:`antifragile.inbound._sealing`): what the inbox stores."""
        data = self.to_json()
        if sealing():  # no data key (the common case): nothing to seal, one look-up
            for name in ("sender", "text", "data"):
                data[name] = seal(data[name])
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> InboundEvent:
        """The event of :meth:`to_json` or :meth:`to_sealed_json`."""
        return cls(
            channel=Channel(data["channel"]),
            event_id=str(data["event_id"]),
            kind=EventKind(data["kind"]),
            tenant_key=str(data["tenant_key"]),
            sender=unseal(data.get("sender")),
            text=unseal(data.get("text")),
            topic=data.get("topic"),
            occurred_at=data.get("occurred_at"),
            data=dict(unseal(data.get("data")) or {}),
        )


class Intent(enum.StrEnum):
    """The intents the default classifier and handlers know; users add their own as strings."""

    ORDER_REQUEST = "ORDER_REQUEST"
    PRICING_INQUIRY = "PRICING_INQUIRY"
    COMPLAINT = "COMPLAINT"
    AVAILABILITY_INQUIRY = "AVAILABILITY_INQUIRY"
    SCHEDULE_CALL = "SCHEDULE_CALL"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True)
class Classification:
    """An intent with a confidence in [0, 1], the entities found, and who decided
    (``source``: ``"keywords"`` for the default classifier, ``"ai"`` for posted results)."""

    intent: str
    confidence: float
    entities: Mapping[str, Any] = field(default_factory=dict)
    source: str = "keywords"

    def to_json(self) -> dict[str, Any]:
        return {
            "intent": self.intent,
            "confidence": self.confidence,
            "entities": dict(self.entities),
            "source": self.source,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Classification:
        return cls(
            intent=str(data["intent"]),
            confidence=float(data["confidence"]),
            entities=dict(data.get("entities") or {}),
            source=str(data.get("source", "keywords")),
        )


DEFAULT_GRACEFUL_REPLY = (
    "All set! We'll make sure the team receives your info shortly. Thanks for your patience."
)


@dataclass(frozen=True, slots=True)
class Tenant:
    """A business the service answers for, and how inbound events are routed to it.

    An event belongs to the tenant whose ``whatsapp_phone_number_id``, ``twilio_number`` or
    ``shop_domain`` equals its ``tenant_key``.

    ``whatsapp_template`` names the approved template (in ``whatsapp_template_language``)
    that WhatsApp Cloud messages fall back to outside the 24-hour customer-service window, and
    that nudges use; ``whatsapp_template_parameters`` are its body's parameters separated by
    ``|``, each of which may name ``{text}`` (the message that could not go out as it is) and,
    for nudges, the session's fields and ``{question}``.

    ``whatsapp_read_receipts`` is what the service does with each WhatsApp Cloud message it
    processes: ``"read"`` marks it read (blue ticks), ``"typing"`` also shows the typing
    indicator until the reply; unset (or ``"off"``), neither.

    ``whatsapp_media_download`` ``"on"`` downloads each image, document, audio, video or
    sticker a contact sends on WhatsApp Cloud (a durable job; see
    :mod:`antifragile.inbound._media`); unset (or ``"off"``), media are recorded only.
    """

    id: str
    name: str = ""
    whatsapp_phone_number_id: str | None = None
    twilio_number: str | None = None
    shop_domain: str | None = None
    owner_email: str | None = None
    flow: str | None = "intake"
    graceful_reply: str = DEFAULT_GRACEFUL_REPLY
    whatsapp_template: str | None = None
    whatsapp_template_language: str = "en_US"
    whatsapp_template_parameters: str = "{text}"
    whatsapp_read_receipts: str | None = None
    whatsapp_media_download: str | None = None
    #: the tenant's email providers in failover order (``"mandrill,smtp"``; the service's
    #: ``ANTIFRAGILE_EMAIL_CHAIN`` when unset), the ``from`` of its emails, and the Mailchimp
    #: audience its completed contacts join (``add_to_audience``)
    email_chain: str | None = None
    email_from: str | None = None
    mailchimp_list_id: str | None = None
    #: the scheduling provider ``book_call`` uses for this tenant (``calcom``, ``calendly``,
    #: ``acuity``; unset: the service's ``ANTIFRAGILE_BOOKING_PROVIDER``)
    booking_provider: str | None = None

    def matches(self, event: InboundEvent) -> bool:
        key = event.tenant_key
        if event.channel is Channel.WHATSAPP:
            return key == self.whatsapp_phone_number_id
        if event.channel is Channel.TWILIO:
            return key == self.twilio_number
        if event.channel is Channel.SHOPIFY:
            return key == self.shop_domain
        return key == self.id
