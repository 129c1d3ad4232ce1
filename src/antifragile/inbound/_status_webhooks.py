"""Status webhooks of the providers that only report on what was sent: verify, then parse.

Each signs its deliveries its own way:

* **SendGrid Event Webhook** -- ``X-Twilio-Email-Event-Webhook-Signature``: base64 DER ECDSA
  P-256/SHA-256 signature over ``X-Twilio-Email-Event-Webhook-Timestamp`` + the raw body, checked
  with the account's verification public key (base64 DER SubjectPublicKeyInfo, or PEM)
  (:func:`verify_sendgrid`); :func:`parse_sendgrid` reads the batch of events.
* **Resend** (Svix) -- ``svix-signature``: space-separated ``v1,<base64 HMAC-SHA256>`` entries over
  ``{svix-id}.{svix-timestamp}.{body}``, keyed by the base64 secret after ``whsec_``
  (:func:`verify_svix`); :func:`parse_resend` reads the ``email.*`` event.
* **Cal.com** -- ``X-Cal-Signature-256``: lowercase hex HMAC-SHA256 of the body with the
  subscription's secret (:func:`verify_calcom`); :func:`parse_calcom` reads the booking trigger.
* **Mandrill** (Mailchimp Transactional) -- ``X-Mandrill-Signature``: base64 HMAC-SHA1 with the
  webhook's key over the webhook's URL (exactly as configured at Mandrill) followed by each POST
  field's name and value, names sorted (:func:`verify_mandrill`); :func:`parse_mandrill` reads
  the ``mandrill_events`` batch.
* **HubSpot** (v3) -- ``X-HubSpot-Signature-v3``: base64 HMAC-SHA256 with the app's client
  secret over method + URI + body + ``X-HubSpot-Request-Timestamp`` (milliseconds)
  (:func:`verify_hubspot`); :func:`parse_hubspot` reads the batch of subscription events.

As for the messaging webhooks (:mod:`antifragile.inbound._webhooks`): several secrets (or keys) at
once for rotation, constant-time comparison, only :class:`~antifragile.inbound.WebhookError`
raised. The schemes with a timestamp refuse one more than :data:`TOLERANCE` (5 minutes) away
from now, either way (401). Events keep ids, statuses and error codes, never an email address,
a name or a property value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from antifragile.inbound._delivery import CORRELATION_KEY, DeliveryStatus
from antifragile.inbound._model import Channel, InboundEvent
from antifragile.inbound._webhooks import (
    FormParams,
    MalformedPayloadError,
    SignatureError,
    _checked,
    _equal,
    _id,
    _list,
    _load_json,
    _object,
    _presented,
    _twilio_digest,
    _twilio_message,
    _usable,
    _utf8,
)

#: how far a signed timestamp may be from now, either way (seconds)
TOLERANCE = 300.0

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


def _timestamp(value: str | None, header: str, now: float, *, millis: bool = False) -> str:
    """The signed timestamp *value* as given, once known to be within :data:`TOLERANCE`."""
    if value is None or not value.strip():
        raise SignatureError(f"the {header} header is missing")
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        raise SignatureError(f"the {header} header is not a timestamp") from None
    if not math.isfinite(number):
        raise SignatureError(f"the {header} header is not a timestamp")
    seconds = number / 1000.0 if millis else number
    if abs(now - seconds) > TOLERANCE:
        raise SignatureError(f"the {header} timestamp is too old or in the future")
    return text


# -- SendGrid ------------------------------------------------------------------------------------


def _public_key(text: str) -> ec.EllipticCurvePublicKey | None:
    raw = text.strip()
    try:
        if raw.startswith("-----BEGIN"):
            key = load_pem_public_key(raw.encode("ascii"))
        else:
            key = load_der_public_key(base64.b64decode(raw, validate=True))
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None


def verify_sendgrid(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    public_keys: Sequence[str],
    *,
    now: float,
) -> None:
    """Check the SendGrid Event Webhook *signature* over *timestamp* + *body* with each of
    *public_keys* (base64 DER or PEM, P-256); refuse a timestamp more than 5 minutes from *now*.
    Raise :class:`~antifragile.inbound.SignatureError` unless one key verifies it."""
    presented = _presented(signature, SENDGRID_SIGNATURE)
    keys = _usable(public_keys, "SendGrid verification public key")
    signed_at = _timestamp(timestamp, SENDGRID_TIMESTAMP, now)
    try:
        der = base64.b64decode(presented, validate=True)
    except (ValueError, binascii.Error):
        raise SignatureError(f"the {SENDGRID_SIGNATURE} header is not base64") from None
    message = signed_at.encode("ascii") + body
    matched = False
    for text in keys:
        key = _public_key(text)
        if key is None:
            continue
        try:
            key.verify(der, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        matched = True
    if not matched:
        raise SignatureError(f"the {SENDGRID_SIGNATURE} header does not match the body")


#: SendGrid events, normalised
_SENDGRID_STATUSES = {
    "processed": "queued",
    "deferred": "deferred",
    "delivered": "delivered",
    "open": "read",
    "click": "read",
    "bounce": "bounced",
    "blocked": "bounced",
    "dropped": "failed",
    "spamreport": "complained",
}


def _sendgrid_event(item: Any, where: str) -> InboundEvent:
    event = _object(item, where)
    event_id = _id(event.get("sg_event_id"), f"{where}.sg_event_id")
    kind = _id(event.get("event"), f"{where}.event")
    sg_message_id = event.get("sg_message_id")
    message_id = None
    if isinstance(sg_message_id, str) and sg_message_id.strip():
        # the X-Message-Id of the send is the part before the first dot
        message_id = sg_message_id.strip().split(".", 1)[0]
    correlation = event.get(CORRELATION_KEY)  # custom_args arrive as top-level fields
    timestamp = event.get("timestamp")
    occurred = (
        float(timestamp)
        if isinstance(timestamp, int | float) and not isinstance(timestamp, bool)
        else None
    )
    details: dict[str, Any] = {}
    if isinstance(sg_message_id, str):
        details["sg_message_id"] = sg_message_id
    if isinstance(event.get("type"), str):
        details["bounce_type"] = event["type"]
    smtp_status = event.get("status")
    code = smtp_status if isinstance(smtp_status, str) and smtp_status else None
    status = _SENDGRID_STATUSES.get(kind.lower(), "other")
    return DeliveryStatus(
        provider=Channel.SENDGRID.value,
        event_id=event_id,
        status=status,
        provider_status=kind,
        provider_message_id=message_id,
        correlation=str(correlation) if isinstance(correlation, str | int) else None,
        error_code=code if status in ("bounced", "failed", "deferred") else None,
        occurred_at=occurred,
        details=details,
    ).event(Channel.SENDGRID, Channel.SENDGRID.value)


def parse_sendgrid(body: bytes) -> list[InboundEvent]:
    """The events of a SendGrid Event Webhook *body* (a JSON array): one ``status`` event per
    entry, its ``sg_event_id`` as event id, ``sg_message_id`` (to its first dot: the send's
    ``X-Message-Id``) as the provider message id, the ``antifragile_ref`` custom arg as
    correlation. Email addresses, reasons and URLs are not kept."""
    events = _list(_load_json(body, "SendGrid"), "the SendGrid body", required=True)
    return _checked([_sendgrid_event(item, f"[{i}]") for i, item in enumerate(events)])


# -- Resend (Svix) -------------------------------------------------------------------------------

SVIX_ID = "svix-id"
SVIX_TIMESTAMP = "svix-timestamp"
SVIX_SIGNATURE = "svix-signature"


def _svix_key(secret: str) -> bytes:
    raw = secret.strip().removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except (ValueError, binascii.Error):
        return _utf8(raw)  # not base64: the secret's own bytes (never matches a real one)


def svix_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """One ``svix-signature`` entry, ``v1,<base64 HMAC-SHA256>``, for a ``whsec_`` *secret*."""
    content = _utf8(f"{msg_id}.{timestamp}.") + body
    digest = hmac.new(_svix_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_svix(
    body: bytes,
    msg_id: str | None,
    timestamp: str | None,
    signature: str | None,
    secrets: Sequence[str],
    *,
    now: float,
) -> None:
    """Check a Svix delivery (Resend): ``svix-signature`` holds space-separated ``v1,<sig>``
    entries, any of which may match any of *secrets*; ``svix-timestamp`` must be within 5
    minutes of *now*. Raise :class:`~antifragile.inbound.SignatureError` otherwise."""
    presented = _presented(signature, SVIX_SIGNATURE)
    usable = _usable(secrets, "Resend webhook secret")
    if msg_id is None or not msg_id.strip():
        raise SignatureError(f"the {SVIX_ID} header is missing")
    signed_at = _timestamp(timestamp, SVIX_TIMESTAMP, now)
    entries = [part for part in presented.split(" ") if part.startswith("v1,")]
    expected = [svix_signature(secret, msg_id.strip(), signed_at, body) for secret in usable]
    matched = False
    for entry in entries:
        for candidate in expected:
            matched |= hmac.compare_digest(candidate.encode(), entry.encode("ascii", "replace"))
    if not matched:
        raise SignatureError(f"the {SVIX_SIGNATURE} header does not match the body")


_RESEND_STATUSES = {
    "email.scheduled": "queued",
    "email.sent": "sent",
    "email.delivered": "delivered",
    "email.delivery_delayed": "deferred",
    "email.opened": "read",
    "email.clicked": "read",
    "email.bounced": "bounced",
    "email.complained": "complained",
    "email.failed": "failed",
}


def _resend_tag(tags: Any) -> str | None:
    """The ``antifragile_ref`` tag, from tags given as an object or as ``[{name, value}]``."""
    if isinstance(tags, dict):
        value = tags.get(CORRELATION_KEY)
        return value if isinstance(value, str) and value else None
    if isinstance(tags, list):
        for tag in tags:
            if isinstance(tag, dict) and tag.get("name") == CORRELATION_KEY:
                value = tag.get("value")
                return value if isinstance(value, str) and value else None
    return None


def _iso(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def parse_resend(body: bytes, msg_id: str) -> list[InboundEvent]:
    """The event of a Resend webhook: ``{"type": "email.delivered", "created_at", "data":
    {"email_id", "tags", ...}}``, its ``svix-id`` *msg_id* as event id, ``email_id`` as the
    provider message id, the ``antifragile_ref`` tag as correlation. Events other than
    ``email.*`` (contacts, domains) give no event."""
    payload = _object(_load_json(body, "Resend"), "the Resend body")
    kind = _id(payload.get("type"), "type")
    if not kind.startswith("email."):
        return []
    data = _object(payload.get("data"), "data")
    email_id = _id(data.get("email_id"), "data.email_id")
    details: dict[str, Any] = {}
    bounce = data.get("bounce")
    code = None
    if isinstance(bounce, dict):
        for key in ("type", "subType"):
            if isinstance(bounce.get(key), str):
                details[f"bounce_{key.lower()}"] = bounce[key]
        code = details.get("bounce_subtype") or details.get("bounce_type")
    failed = data.get("failed")
    if isinstance(failed, dict) and isinstance(failed.get("reason"), str):
        code = failed["reason"]
    return _checked(
        [
            DeliveryStatus(
                provider=Channel.RESEND.value,
                event_id=msg_id,
                status=_RESEND_STATUSES.get(kind, "other"),
                provider_status=kind,
                provider_message_id=email_id,
                correlation=_resend_tag(data.get("tags")),
                error_code=code,
                occurred_at=_iso(payload.get("created_at")),
                details=details,
            ).event(Channel.RESEND, Channel.RESEND.value)
        ]
    )


# -- Cal.com -------------------------------------------------------------------------------------

CALCOM_SIGNATURE = "X-Cal-Signature-256"


def calcom_signature(secret: str, body: bytes) -> str:
    """``X-Cal-Signature-256`` for *body*: the lowercase hex HMAC-SHA256."""
    return hmac.new(_utf8(secret), body, hashlib.sha256).hexdigest()


def verify_calcom(body: bytes, signature: str | None, secrets: Sequence[str]) -> None:
    """Check ``X-Cal-Signature-256`` against *body* with each of *secrets* (Cal.com sends the
    literal ``no-secret-provided`` when the subscription has no secret: refused)."""
    presented = _presented(signature, CALCOM_SIGNATURE).lower()
    usable = _usable(secrets, "Cal.com webhook secret")
    matched = False
    for secret in usable:
        matched |= hmac.compare_digest(calcom_signature(secret, body).encode(), presented.encode())
    if not matched:
        raise SignatureError(f"the {CALCOM_SIGNATURE} header does not match the body")


_CALCOM_STATUSES = {
    "BOOKING_REQUESTED": "queued",
    "BOOKING_CREATED": "confirmed",
    "BOOKING_RESCHEDULED": "confirmed",
    "BOOKING_PAID": "confirmed",
    "BOOKING_CANCELLED": "cancelled",
    "BOOKING_REJECTED": "cancelled",
}


def parse_calcom(body: bytes) -> list[InboundEvent]:
    """The event of a Cal.com webhook: ``{"triggerEvent", "createdAt", "payload": {"uid",
    "bookingId", "status", "metadata", ...}}``, ``{uid}:{triggerEvent}`` as event id, the
    booking ``uid`` as provider id, the ``antifragile_ref`` metadata entry as correlation. A
    trigger about no booking (no ``uid``: a ping, an out-of-office entry) gives no event.
    Attendees, organiser and responses are not kept."""
    payload = _object(_load_json(body, "Cal.com"), "the Cal.com body")
    trigger = _id(payload.get("triggerEvent"), "triggerEvent")
    booking = payload.get("payload")
    if not isinstance(booking, dict) or booking.get("uid") in (None, ""):
        return []
    uid = _id(booking.get("uid"), "payload.uid")
    metadata = booking.get("metadata")
    correlation = metadata.get(CORRELATION_KEY) if isinstance(metadata, dict) else None
    details: dict[str, Any] = {}
    if isinstance(booking.get("bookingId"), int) and not isinstance(booking["bookingId"], bool):
        details["booking_id"] = booking["bookingId"]
    if isinstance(booking.get("status"), str):
        details["booking_status"] = booking["status"]
    return _checked(
        [
            DeliveryStatus(
                provider=Channel.CALCOM.value,
                event_id=f"{uid}:{trigger}",
                status=_CALCOM_STATUSES.get(trigger.upper(), "other"),
                provider_status=trigger,
                provider_message_id=uid,
                correlation=str(correlation) if isinstance(correlation, str | int) else None,
                occurred_at=_iso(payload.get("createdAt")),
                details=details,
            ).event(Channel.CALCOM, Channel.CALCOM.value)
        ]
    )


# -- HubSpot -------------------------------------------------------------------------------------

HUBSPOT_SIGNATURE = "X-HubSpot-Signature-v3"
HUBSPOT_TIMESTAMP = "X-HubSpot-Request-Timestamp"

#: the escapes HubSpot decodes in the request URI before signing it
_HUBSPOT_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}


def hubspot_uri(uri: str) -> str:
    """*uri* as HubSpot signs it: the escapes of ``: / ? @ ! $ ' ( ) * , ;`` decoded."""
    out = []
    i = 0
    while i < len(uri):
        chunk = uri[i : i + 3]
        decoded = _HUBSPOT_DECODED.get(chunk.upper()) if chunk.startswith("%") else None
        if decoded is not None:
            out.append(decoded)
            i += 3
        else:
            out.append(uri[i])
            i += 1
    return "".join(out)


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """``X-HubSpot-Signature-v3``: base64 HMAC-SHA256 of method + URI + body + timestamp."""
    message = _utf8(method.upper() + hubspot_uri(uri)) + body + _utf8(timestamp)
    digest = hmac.new(_utf8(secret), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_hubspot(
    method: str,
    uri: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    secrets: Sequence[str],
    *,
    now: float,
) -> None:
    """Check ``X-HubSpot-Signature-v3`` for a *method* request to *uri* (the full URL HubSpot
    called) with *body*, with each of *secrets* (the app's client secret); the timestamp
    (milliseconds) must be within 5 minutes of *now*."""
    presented = _presented(signature, HUBSPOT_SIGNATURE)
    usable = _usable(secrets, "HubSpot client secret")
    signed_at = _timestamp(timestamp, HUBSPOT_TIMESTAMP, now, millis=True)
    matched = False
    for secret in usable:
        expected = hubspot_signature(secret, method, uri, body, signed_at)
        matched |= hmac.compare_digest(expected.encode(), presented.encode("ascii", "replace"))
    if not matched:
        raise SignatureError(f"the {HUBSPOT_SIGNATURE} header does not match the request")


def _hubspot_status(subscription: str) -> str:
    action = subscription.rsplit(".", 1)[-1].lower()
    if action == "creation":
        return "confirmed"
    if action == "deletion":
        return "cancelled"
    return "other"


def _hubspot_event(item: Any, where: str) -> InboundEvent:
    event = _object(item, where)
    event_id = _id(event.get("eventId"), f"{where}.eventId")
    subscription = _id(event.get("subscriptionType"), f"{where}.subscriptionType")
    object_id = event.get("objectId")
    portal = event.get("portalId")
    occurred = event.get("occurredAt")
    details: dict[str, Any] = {}
    for key in ("subscriptionId", "attemptNumber", "changeSource", "changeFlag", "propertyName"):
        if isinstance(event.get(key), str | int) and not isinstance(event.get(key), bool):
            details[key] = event[key]
    return DeliveryStatus(
        provider=Channel.HUBSPOT.value,
        event_id=event_id,
        status=_hubspot_status(subscription),
        provider_status=subscription,
        provider_message_id=None if object_id is None else _id(object_id, f"{where}.objectId"),
        occurred_at=(
            occurred / 1000.0
            if isinstance(occurred, int | float) and not isinstance(occurred, bool)
            else None
        ),
        details=details,
    ).event(
        Channel.HUBSPOT,
        _id(portal, f"{where}.portalId") if portal is not None else Channel.HUBSPOT.value,
    )


def parse_hubspot(body: bytes) -> list[InboundEvent]:
    """The events of a HubSpot webhook *body* (a JSON array of subscription events): one per
    entry, its ``eventId`` as event id, the ``objectId`` as provider id, the ``portalId`` as
    tenant key; ``*.creation`` is ``confirmed``, ``*.deletion`` ``cancelled``, the rest
    ``other``. Property values are not kept."""
    events = _list(_load_json(body, "HubSpot"), "the HubSpot body", required=True)
    return _checked([_hubspot_event(item, f"[{i}]") for i, item in enumerate(events)])


# -- Mandrill (Mailchimp Transactional) ----------------------------------------------------------

MANDRILL_SIGNATURE = "X-Mandrill-Signature"
#: the one POST field of a Mandrill webhook: a JSON array of events
MANDRILL_EVENTS = "mandrill_events"


def mandrill_signature(key: str, url: str, params: FormParams) -> str:
    """``X-Mandrill-Signature`` for a POST of the form *params* to *url*: base64 HMAC-SHA1 with
    the webhook's *key* over the URL followed by each field's name and value, names sorted."""
    return _twilio_digest(key, _twilio_message(url, params), "sha1")


def verify_mandrill(
    url: str, params: FormParams, signature: str | None, keys: Sequence[str]
) -> None:
    """Check ``X-Mandrill-Signature`` for a delivery to *url* (the webhook's URL exactly as
    configured at Mandrill) with the form *params*, with each of *keys*; raise
    :class:`~antifragile.inbound.SignatureError` unless one matches. (Mandrill signs no
    timestamp: a replay is caught by the deduplication of its events.)"""
    presented = _presented(signature, MANDRILL_SIGNATURE)
    usable = _usable(keys, "Mandrill webhook key")
    matched = False
    for key in usable:
        matched |= _equal(mandrill_signature(key, url, params), presented)
    if not matched:
        raise SignatureError(f"the {MANDRILL_SIGNATURE} header does not match the request")


_MANDRILL_STATUSES = {
    "send": "sent",
    "deferral": "deferred",
    "hard_bounce": "bounced",
    "soft_bounce": "bounced",
    "open": "read",
    "click": "read",
    "spam": "complained",
    "reject": "failed",
}


def _mandrill_event(item: Any, where: str) -> InboundEvent | None:
    event = _object(item, where)
    message = event.get("msg")
    if not isinstance(message, dict) and "type" in event:
        return None  # a sync event (whitelist, blacklist: ``type``, ``action``) is about no send
    kind = _id(event.get("event"), f"{where}.event")
    if kind == "inbound" or not isinstance(message, dict):
        if kind == "inbound":
            return None  # an inbound email: not a status of something sent
        raise MalformedPayloadError(f"{where}.msg is not a JSON object")
    message_id = _id(message.get("_id", event.get("_id")), f"{where}.msg._id")
    ts = event.get("ts")
    occurred = float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None
    metadata = message.get("metadata")
    correlation = metadata.get(CORRELATION_KEY) if isinstance(metadata, dict) else None
    details: dict[str, Any] = {}
    if isinstance(message.get("state"), str):
        details["state"] = message["state"]
    code = message.get("bounce_description")
    status = _MANDRILL_STATUSES.get(kind.lower(), "other")
    return DeliveryStatus(
        provider=Channel.MANDRILL.value,
        event_id=f"{message_id}:{kind}:{ts if occurred is not None else ''}",
        status=status,
        provider_status=kind,
        provider_message_id=message_id,
        correlation=str(correlation) if isinstance(correlation, str | int) else None,
        error_code=code if isinstance(code, str) and status in ("bounced", "failed") else None,
        occurred_at=occurred,
        details=details,
    ).event(Channel.MANDRILL, Channel.MANDRILL.value)


def parse_mandrill(params: FormParams) -> list[InboundEvent]:
    """The events of a Mandrill webhook's form *params*: ``mandrill_events``, a JSON array of
    ``{"event", "ts", "_id", "msg": {"_id", "state", "metadata", ...}}``, one ``status`` event
    each, ``{_id}:{event}:{ts}`` as event id (Mandrill gives events no id of their own), the
    message ``_id`` as the provider message id, the ``antifragile_ref`` metadata entry as
    correlation. Sync events (no ``msg``) give no event; an empty array (Mandrill's check of a
    new webhook) gives none. Addresses, subjects, URLs and user agents are not kept."""
    raw = params.get(MANDRILL_EVENTS)
    values = [raw] if isinstance(raw, str) else list(raw or [])
    if len(values) != 1:
        raise MalformedPayloadError(f"the Mandrill body has no single {MANDRILL_EVENTS} field")
    events = _list(_load_json(_utf8(values[0]), "Mandrill"), MANDRILL_EVENTS, required=True)
    found = [_mandrill_event(item, f"[{i}]") for i, item in enumerate(events)]
    return _checked([e for e in found if e is not None])
