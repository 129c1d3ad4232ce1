"""The scheduling providers' webhooks -- Calendly and Acuity: verify, then parse.

* **Calendly** -- ``Calendly-Webhook-Signature: t=<unix seconds>,v1=<hex>``, ``v1`` the
  HMAC-SHA256 of ``"<t>." + body`` with the subscription's signing key (:func:`verify_calendly`);
  ``t`` more than :data:`CALENDLY_TOLERANCE` (3 minutes, Calendly's example) from now, either
  way, is refused: a replay. :func:`parse_calendly` reads ``invitee.created`` /
  ``invitee.canceled``: the invitee URI is the provider id, ``{uri}:{event}`` the event id, and
  the ``utm_content`` of its ``tracking`` -- the correlation the scheduling link carried -- the
  correlation. The ``invitee.canceled`` half of a reschedule (``rescheduled: true``) says
  nothing about the booking as a whole (``other``): the ``invitee.created`` that follows does.
* **Acuity** -- ``X-Acuity-Signature``: base64 HMAC-SHA256 of the body with the account's API
  key (:func:`verify_acuity`); no timestamp. The form body names the appointment only
  (``action``, ``id``, ``calendarID``, ``appointmentTypeID``): :func:`parse_acuity` makes the
  appointment id the provider id and ``{id}:{action}`` the event id; the booking the id belongs
  to was recorded when it was made.

As for the other providers: several keys at once for rotation, constant-time comparison, only
:class:`~antifragile.inbound.WebhookError` raised, and events that keep ids and statuses, never
an email address or a name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from typing import Any

from antifragile.connectors._correlation import is_correlation
from antifragile.inbound._delivery import DeliveryStatus
from antifragile.inbound._model import Channel, InboundEvent
from antifragile.inbound._status_webhooks import _iso
from antifragile.inbound._webhooks import (
    MalformedPayloadError,
    SignatureError,
    _checked,
    _id,
    _load_json,
    _object,
    _presented,
    _usable,
    _utf8,
)

CALENDLY_SIGNATURE = "Calendly-Webhook-Signature"
#: how far Calendly's signed ``t`` may be from now, either way (seconds)
CALENDLY_TOLERANCE = 180.0
ACUITY_SIGNATURE = "X-Acuity-Signature"


# -- Calendly ------------------------------------------------------------------------------------


def calendly_signature(signing_key: str, timestamp: str, body: bytes) -> str:
    """The ``v1`` of ``Calendly-Webhook-Signature``: hex HMAC-SHA256 of ``"<t>." + body``."""
    signed = _utf8(timestamp) + b"." + body
    return hmac.new(_utf8(signing_key), signed, hashlib.sha256).hexdigest()


def verify_calendly(
    body: bytes, signature: str | None, signing_keys: Sequence[str], *, now: float
) -> None:
    """Check ``Calendly-Webhook-Signature`` (``t=...,v1=...``) against *body* with each of
    *signing_keys*; a ``t`` outside :data:`CALENDLY_TOLERANCE` of *now* is refused."""
    presented = _presented(signature, CALENDLY_SIGNATURE)
    usable = _usable(signing_keys, "Calendly signing key")
    timestamp: str | None = None
    candidates: list[str] = []
    for part in presented.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamp = value.strip()
        elif name == "v1" and value.strip():
            candidates.append(value.strip().lower())
    if timestamp is None or not candidates:
        raise SignatureError(f"the {CALENDLY_SIGNATURE} header has no t= or v1=")
    try:
        seconds = float(timestamp)
    except ValueError:
        raise SignatureError(f"the {CALENDLY_SIGNATURE} timestamp is not a number") from None
    if not math.isfinite(seconds) or abs(now - seconds) > CALENDLY_TOLERANCE:
        raise SignatureError(f"the {CALENDLY_SIGNATURE} timestamp is too old or in the future")
    matched = False
    for key in usable:
        expected = calendly_signature(key, timestamp, body).encode()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        raise SignatureError(f"the {CALENDLY_SIGNATURE} header does not match the body")


def _calendly_status(event: str, payload: Mapping[str, Any]) -> str:
    if event == "invitee.created":
        return "confirmed"
    if event == "invitee.canceled":
        return "other" if payload.get("rescheduled") is True else "cancelled"
    return "other"


def parse_calendly(body: bytes) -> list[InboundEvent]:
    """The event of a Calendly webhook: ``{"event", "created_at", "payload": {"uri",
    "status", "rescheduled", "tracking": {"utm_content", ...}, "scheduled_event": {...}}}``
    (see the module docs). A payload without an invitee URI (a routing form) gives no event."""
    root = _object(_load_json(body, "Calendly"), "the Calendly body")
    event = _id(root.get("event"), "event")
    payload = root.get("payload")
    if not isinstance(payload, dict) or not isinstance(payload.get("uri"), str):
        return []
    uri = _id(payload.get("uri"), "payload.uri")
    tracking = payload.get("tracking")
    ref = tracking.get("utm_content") if isinstance(tracking, dict) else None
    details: dict[str, Any] = {}
    scheduled = payload.get("scheduled_event")
    if isinstance(scheduled, dict):
        for name, kept_as in (
            ("uri", "event_uri"),
            ("start_time", "event_start_time"),
            ("event_type", "event_type"),
        ):
            if isinstance(scheduled.get(name), str):
                details[kept_as] = scheduled[name]
    if isinstance(payload.get("rescheduled"), bool):
        details["rescheduled"] = payload["rescheduled"]
    return _checked(
        [
            DeliveryStatus(
                provider=Channel.CALENDLY.value,
                event_id=f"{uri}:{event}",
                status=_calendly_status(event, payload),
                provider_status=event,
                provider_message_id=uri,
                correlation=ref if is_correlation(ref) else None,
                occurred_at=_iso(root.get("created_at")),
                details=details,
            ).event(Channel.CALENDLY, Channel.CALENDLY.value)
        ]
    )


# -- Acuity --------------------------------------------------------------------------------------


def acuity_signature(api_key: str, body: bytes) -> str:
    """``X-Acuity-Signature`` for *body*: base64 HMAC-SHA256 with the API key."""
    return base64.b64encode(hmac.new(_utf8(api_key), body, hashlib.sha256).digest()).decode()


def verify_acuity(body: bytes, signature: str | None, api_keys: Sequence[str]) -> None:
    """Check ``X-Acuity-Signature`` against *body* with each of *api_keys*."""
    presented = _presented(signature, ACUITY_SIGNATURE)
    usable = _usable(api_keys, "Acuity API key")
    matched = False
    for key in usable:
        matched |= hmac.compare_digest(acuity_signature(key, body).encode(), presented.encode())
    if not matched:
        raise SignatureError(f"the {ACUITY_SIGNATURE} header does not match the body")


_ACUITY_STATUSES = {
    "scheduled": "confirmed",
    "rescheduled": "confirmed",
    "canceled": "cancelled",
    "changed": "other",
}


def parse_acuity(params: Mapping[str, str]) -> list[InboundEvent]:
    """The event of an Acuity webhook's form *params* (see the module docs); an
    ``order.completed`` (no appointment) gives no event."""
    action = params.get("action")
    if not isinstance(action, str) or not action.strip():
        raise MalformedPayloadError("the Acuity webhook has no action")
    action = action.strip()
    if action not in _ACUITY_STATUSES:
        return []
    appointment = _id(params.get("id"), "id")
    if not appointment.isdigit():
        raise MalformedPayloadError("the Acuity appointment id is not a number")
    details = {
        name: params[name]
        for name in ("calendarID", "appointmentTypeID")
        if isinstance(params.get(name), str) and params[name].isdigit()
    }
    return _checked(
        [
            DeliveryStatus(
                provider=Channel.ACUITY.value,
                event_id=f"{appointment}:{action}",
                status=_ACUITY_STATUSES[action],
                provider_status=action,
                provider_message_id=appointment,
                details=details,
            ).event(Channel.ACUITY, Channel.ACUITY.value)
        ]
    )
