"""Calendly and Acuity webhook verification and parsing, and the booking status rules.

Signatures are made here with hmac from the providers' published schemes, not with the
verifiers under test; the booking statuses run on the in-memory key-value store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from antifragile.inbound import (
    MalformedPayloadError,
    SignatureError,
    parse_acuity,
    parse_calendly,
    verify_acuity,
    verify_calendly,
)
from antifragile.inbound._bookings import BOOKING_STATUS, settle_booking
from antifragile.stores import open_store

NOW = 1_800_000_000.0
REF = "af_" + "1" * 32


def _calendly(key: str, t: int, body: bytes) -> str:
    v1 = hmac.new(key.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={v1}"


def _invitee(event: str, **payload: Any) -> bytes:
    body = {
        "event": event,
        "created_at": "2027-01-05T14:00:00.000000Z",
        "payload": {
            "uri": "https://api.calendly.com/scheduled_events/E/invitees/I",
            "email": "ada@example.com",
            "name": "Ada",
            "tracking": {"utm_content": REF, "utm_source": None},
            "scheduled_event": {"uri": "https://api.calendly.com/scheduled_events/E"},
            **payload,
        },
    }
    return json.dumps(body).encode()


def test_calendly_signature_rotation_tolerance_and_refusals() -> None:
    """A ``t=,v1=`` header made with any configured key verifies; a ``t`` more than 3 minutes
    away (either way), a forged digest, a header without ``v1`` or ``t``, none at all, or no key
    configured is a SignatureError."""
    body = _invitee("invitee.created")
    verify_calendly(body, _calendly("new", int(NOW), body), ["old", "new"], now=NOW)
    verify_calendly(body, _calendly("old", int(NOW) - 170, body), ["old", "new"], now=NOW)
    for header in (
        _calendly("new", int(NOW) - 200, body),
        _calendly("new", int(NOW) + 200, body),
        _calendly("other", int(NOW), body),
        f"t={int(NOW)}",
        "v1=abc",
        "t=soon,v1=abc",
        None,
        "",
    ):
        with pytest.raises(SignatureError):
            verify_calendly(body, header, ["old", "new"], now=NOW)
    with pytest.raises(SignatureError):
        verify_calendly(body, _calendly("new", int(NOW), body), [], now=NOW)


def test_parse_calendly_invitee_events() -> None:
    """``invitee.created`` is ``confirmed``, ``invitee.canceled`` ``cancelled`` -- but the
    half of a reschedule is ``other``; the invitee URI is the provider id, ``uri:event`` the
    event id, ``tracking.utm_content`` the correlation (only when it has a correlation's
    shape); no name or email is kept."""
    (created,) = parse_calendly(_invitee("invitee.created"))
    assert (
        created.event_id == "https://api.calendly.com/scheduled_events/E/invitees/I:invitee.created"
    )
    assert created.data["status"] == "confirmed"
    assert created.data["correlation"] == REF
    assert "ada@example.com" not in json.dumps(created.to_json())
    (cancelled,) = parse_calendly(_invitee("invitee.canceled"))
    assert cancelled.data["status"] == "cancelled"
    (moved,) = parse_calendly(_invitee("invitee.canceled", rescheduled=True))
    assert moved.data["status"] == "other"
    (stranger,) = parse_calendly(_invitee("invitee.created", tracking={"utm_content": "ad-7"}))
    assert stranger.data["correlation"] is None
    routing = json.dumps({"event": "routing_form_submission.created", "payload": {}}).encode()
    assert parse_calendly(routing) == []
    for garbage in (b"[]", b"{", json.dumps({"payload": {}}).encode()):
        with pytest.raises(MalformedPayloadError):
            parse_calendly(garbage)


def test_acuity_signature_and_parse() -> None:
    """``X-Acuity-Signature`` is base64 HMAC-SHA256 of the body with the API key (any of
    several); an action about an appointment is a status keyed ``id:action``; an order is no
    event; a body without an action or with a non-numeric id is malformed."""
    body = b"action=scheduled&id=42&calendarID=3&appointmentTypeID=7"
    digest = hmac.new(b"key-2", body, hashlib.sha256).digest()
    verify_acuity(body, base64.b64encode(digest).decode(), ["key-1", "key-2"])
    for bad in (base64.b64encode(b"x" * 32).decode(), None, ""):
        with pytest.raises(SignatureError):
            verify_acuity(body, bad, ["key-1", "key-2"])
    (event,) = parse_acuity({"action": "scheduled", "id": "42", "calendarID": "3"})
    assert event.event_id == "42:scheduled"
    assert event.data["status"] == "confirmed"
    assert event.data["message_id"] == "42"
    assert event.data["calendarID"] == "3"
    assert parse_acuity({"action": "canceled", "id": "42"})[0].data["status"] == "cancelled"
    assert parse_acuity({"action": "changed", "id": "42"})[0].data["status"] == "other"
    assert parse_acuity({"action": "order.completed", "id": "9"}) == []
    for params in ({"id": "42"}, {"action": "scheduled", "id": "4x"}, {"action": "scheduled"}):
        with pytest.raises(MalformedPayloadError):
            parse_acuity(params)


async def test_booking_status_moves_forward_only() -> None:
    """``booking_status`` goes ``link_sent`` -> ``booked`` -> ``cancelled`` and never back; a
    session that does not exist is left alone; the record's other fields are kept."""
    store = await open_store("memory://")
    try:
        kv = store.kv
        await kv.set("session:t:1", {"phone": "sealed", "email_status": "sent"}, now=NOW, ttl=60)
        assert await settle_booking(kv, "session:t:1", "link_sent", now=NOW)
        assert await settle_booking(kv, "session:t:1", "booked", now=NOW)
        assert not await settle_booking(kv, "session:t:1", "link_sent", now=NOW)
        assert not await settle_booking(kv, "session:t:1", "booked", now=NOW)
        assert await settle_booking(kv, "session:t:1", "cancelled", now=NOW)
        found = await kv.get("session:t:1", now=NOW)
        assert found is not None
        assert found.value == {
            "phone": "sealed",
            "email_status": "sent",
            BOOKING_STATUS: "cancelled",
        }
        assert found.expires_at is not None
        assert not await settle_booking(kv, "session:t:missing", "booked", now=NOW)
    finally:
        await store.close()
