"""Verifiers and parsers of the status webhooks (SendGrid, Resend/Svix, Cal.com, HubSpot), and the
forward-only rule of delivery statuses. Pure logic: the published test vectors of each
provider's own SDK, keys generated with ``cryptography``, no network."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from antifragile.errors import ErrorCode
from antifragile.inbound import (
    STATUS_RANK,
    Channel,
    DeliveryStatus,
    EventKind,
    InboundEvent,
    MalformedPayloadError,
    SignatureError,
    calcom_signature,
    hubspot_signature,
    parse_calcom,
    parse_hubspot,
    parse_resend,
    parse_sendgrid,
    parse_twilio,
    parse_whatsapp,
    svix_signature,
    verify_calcom,
    verify_hubspot,
    verify_sendgrid,
    verify_svix,
)
from antifragile.inbound._delivery import advance

# -- published vectors ----------------------------------------------------------------------------

# sendgrid/sendgrid-python test/unit/test_eventwebhook.py
SG_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw"
    "+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SG_SIGNATURE = (
    "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15Tlu"
    "LtEZtM="
)
SG_TIMESTAMP = "1600112502"
SG_PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": (
                    "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0"
                ),
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
).encode()

# the Standard Webhooks / Svix reference vector
SVIX_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SVIX_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SVIX_TIMESTAMP = "1614265330"
SVIX_BODY = b'{"test": 2432232314}'
SVIX_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# HubSpot/hubspot-api-python tests/spec/utils/test_signature.py (v3)
HS_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
HS_BODY = b"{'example_field':'example_value'}"
HS_URL = "https://www.example.com/webhook_uri"
HS_TIMESTAMP = "15000000"
HS_SIGNATURE = "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw="


def test_sendgrid_published_vector_verifies_and_a_changed_byte_does_not() -> None:
    """SendGrid's own SDK vector verifies at its time; another payload, timestamp or key
    does not (401 SIGNATURE_INVALID)."""
    now = float(SG_TIMESTAMP)
    verify_sendgrid(SG_PAYLOAD, SG_SIGNATURE, SG_TIMESTAMP, [SG_PUBLIC_KEY], now=now)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    other_b64 = base64.b64encode(
        other.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    for body, stamp, keys in (
        (b"payload", SG_TIMESTAMP, [SG_PUBLIC_KEY]),
        (SG_PAYLOAD, "1600112503", [SG_PUBLIC_KEY]),
        (SG_PAYLOAD, SG_TIMESTAMP, [other_b64]),
    ):
        with pytest.raises(SignatureError) as caught:
            verify_sendgrid(body, SG_SIGNATURE, stamp, keys, now=now)
        assert (caught.value.code, caught.value.status) == (ErrorCode.SIGNATURE_INVALID, 401)


def test_sendgrid_rotation_pem_staleness_and_missing_parts() -> None:
    """Any of several keys verifies (rotation), given as base64 DER or PEM; a timestamp more
    than 5 minutes away, a missing header, a non-base64 signature or no key is refused."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    body, stamp = b'[{"event":"delivered"}]', "1700000000"
    signature = base64.b64encode(
        key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    ).decode()
    verify_sendgrid(body, signature, stamp, [SG_PUBLIC_KEY, pem], now=1_700_000_100.0)
    refused: list[tuple[Any, ...]] = [
        (signature, stamp, [pem], 1_700_000_301.0),  # stale
        (signature, stamp, [pem], 1_699_999_699.0),  # from the future
        (None, stamp, [pem], 1_700_000_000.0),
        (signature, None, [pem], 1_700_000_000.0),
        ("not base64!", stamp, [pem], 1_700_000_000.0),
        (signature, stamp, [], 1_700_000_000.0),
        (signature, stamp, ["not a key"], 1_700_000_000.0),
    ]
    for sig, ts, keys, now in refused:
        with pytest.raises(SignatureError):
            verify_sendgrid(body, sig, ts, keys, now=now)


def test_svix_published_vector_and_several_signatures() -> None:
    """The reference vector signs to the published value and verifies; a header with several
    space-separated entries verifies when any matches; rotation: any secret may match."""
    assert svix_signature(SVIX_SECRET, SVIX_ID, SVIX_TIMESTAMP, SVIX_BODY) == SVIX_SIGNATURE
    now = float(SVIX_TIMESTAMP)
    verify_svix(SVIX_BODY, SVIX_ID, SVIX_TIMESTAMP, SVIX_SIGNATURE, [SVIX_SECRET], now=now)
    several = f"v1,bm9wZQ== v2,ignored {SVIX_SIGNATURE}"
    other = "whsec_" + base64.b64encode(b"another secret of 24 by").decode()
    verify_svix(SVIX_BODY, SVIX_ID, SVIX_TIMESTAMP, several, [other, SVIX_SECRET], now=now)


@pytest.mark.parametrize(
    ("msg_id", "timestamp", "signature", "now"),
    [
        (SVIX_ID, SVIX_TIMESTAMP, SVIX_SIGNATURE, float(SVIX_TIMESTAMP) + 301),
        (SVIX_ID, SVIX_TIMESTAMP, SVIX_SIGNATURE, float(SVIX_TIMESTAMP) - 301),
        ("msg_other", SVIX_TIMESTAMP, SVIX_SIGNATURE, float(SVIX_TIMESTAMP)),
        (None, SVIX_TIMESTAMP, SVIX_SIGNATURE, float(SVIX_TIMESTAMP)),
        (SVIX_ID, None, SVIX_SIGNATURE, float(SVIX_TIMESTAMP)),
        (SVIX_ID, "soon", SVIX_SIGNATURE, float(SVIX_TIMESTAMP)),
        (SVIX_ID, SVIX_TIMESTAMP, "v1,bm9wZQ==", float(SVIX_TIMESTAMP)),
        (SVIX_ID, SVIX_TIMESTAMP, SVIX_SIGNATURE.removeprefix("v1,"), float(SVIX_TIMESTAMP)),
        (SVIX_ID, SVIX_TIMESTAMP, None, float(SVIX_TIMESTAMP)),
    ],
    ids=[
        "stale",
        "future",
        "other id",
        "no id",
        "no timestamp",
        "bad timestamp",
        "forged",
        "no v1 prefix",
        "no signature",
    ],
)
def test_svix_refusals(
    msg_id: str | None, timestamp: str | None, signature: str | None, now: float
) -> None:
    """A stale or future timestamp (5-minute tolerance), another id, a missing part or a
    signature that matches no secret is 401."""
    with pytest.raises(SignatureError):
        verify_svix(SVIX_BODY, msg_id, timestamp, signature, [SVIX_SECRET], now=now)


def test_hubspot_published_vector_uri_decoding_and_window() -> None:
    """HubSpot's SDK vector signs to its published value and verifies at its time (the
    timestamp is in milliseconds); the URI's ``%3A``-style escapes are decoded before signing;
    a timestamp more than 5 minutes away, another method or another secret is refused."""
    assert hubspot_signature(HS_SECRET, "POST", HS_URL, HS_BODY, HS_TIMESTAMP) == HS_SIGNATURE
    now = int(HS_TIMESTAMP) / 1000.0
    verify_hubspot("POST", HS_URL, HS_BODY, HS_SIGNATURE, HS_TIMESTAMP, ["old", HS_SECRET], now=now)
    escaped = "https://www.example.com/webhook%3Auri?a=b%2Cc"
    plain = "https://www.example.com/webhook:uri?a=b,c"
    assert hubspot_signature(HS_SECRET, "POST", escaped, b"", "1") == hubspot_signature(
        HS_SECRET, "POST", plain, b"", "1"
    )
    for method, secrets, at in (
        ("POST", [HS_SECRET], now + 301),
        ("GET", [HS_SECRET], now),
        ("POST", ["other"], now),
    ):
        with pytest.raises(SignatureError):
            verify_hubspot(method, HS_URL, HS_BODY, HS_SIGNATURE, HS_TIMESTAMP, secrets, now=at)


def test_calcom_signature_rotation_and_no_secret() -> None:
    """``X-Cal-Signature-256`` is the hex HMAC-SHA256 of the body (any case); any secret of a
    rotation verifies; Cal.com's ``no-secret-provided`` and a forged value are refused."""
    body = b'{"triggerEvent":"BOOKING_CREATED"}'
    signature = calcom_signature("new", body)
    assert len(signature) == 64
    assert signature == signature.lower()
    verify_calcom(body, signature.upper(), ["old", "new"])
    for presented in ("no-secret-provided", calcom_signature("other", body), None, ""):
        with pytest.raises(SignatureError):
            verify_calcom(body, presented, ["old", "new"])


# -- parsing --------------------------------------------------------------------------------------


def _status(event: InboundEvent) -> DeliveryStatus:
    assert event.kind is EventKind.STATUS
    again = InboundEvent.from_json(json.loads(json.dumps(event.to_json())))
    assert again == event
    return DeliveryStatus.from_event(event)


def test_parse_sendgrid_batch() -> None:
    """Each Event Webhook entry is a status: ``sg_event_id`` as id, the ``X-Message-Id`` part
    of ``sg_message_id`` as provider id, the ``antifragile_ref`` custom arg as correlation,
    normalised (processed -> queued, open -> read, bounce -> bounced with its SMTP status);
    no email address is kept."""
    body = json.dumps(
        [
            {"event": "processed", "sg_event_id": "e1", "sg_message_id": "M1.filter",
             "email": "a@example.com", "timestamp": 1700000000, "antifragile_ref": "k1"},
            {"event": "open", "sg_event_id": "e2", "sg_message_id": "M1.filter",
             "email": "a@example.com", "antifragile_ref": "k1"},
            {"event": "bounce", "sg_event_id": "e3", "sg_message_id": "M2.x", "type": "blocked",
             "status": "5.1.1", "reason": "no such user a@example.com"},
            {"event": "group_unsubscribe", "sg_event_id": "e4"},
        ]
    ).encode()  # fmt: skip
    events = parse_sendgrid(body)
    statuses = [_status(e) for e in events]
    assert [(s.event_id, s.status, s.provider_status) for s in statuses] == [
        ("e1", "queued", "processed"),
        ("e2", "read", "open"),
        ("e3", "bounced", "bounce"),
        ("e4", "other", "group_unsubscribe"),
    ]
    assert (statuses[0].provider_message_id, statuses[0].correlation) == ("M1", "k1")
    assert statuses[0].occurred_at == 1700000000.0
    assert (statuses[2].error_code, statuses[2].details["bounce_type"]) == ("5.1.1", "blocked")
    assert all(e.channel is Channel.SENDGRID for e in events)
    assert "example.com" not in json.dumps([e.to_json() for e in events])


def test_parse_resend_event_and_tags_in_both_shapes() -> None:
    """A Resend ``email.*`` event is one status with the ``svix-id`` as id, ``email_id`` as
    provider id and the ``antifragile_ref`` tag (object or ``[{name, value}]``) as correlation;
    other types give nothing."""
    for tags in ({"antifragile_ref": "k9"}, [{"name": "antifragile_ref", "value": "k9"}]):
        body = json.dumps(
            {"type": "email.bounced", "created_at": "2026-01-01T00:00:00.000Z",
             "data": {"email_id": "em_1", "to": ["a@example.com"], "tags": tags,
                      "bounce": {"type": "Permanent", "subType": "General"}}}
        ).encode()  # fmt: skip
        [event] = parse_resend(body, "msg_1")
        status = _status(event)
        assert (status.event_id, status.status, status.provider_message_id) == (
            "msg_1",
            "bounced",
            "em_1",
        )
        assert (status.correlation, status.error_code) == ("k9", "General")
        assert status.occurred_at == 1767225600.0
        assert "example.com" not in json.dumps(event.to_json())
    contact = json.dumps({"type": "contact.created", "data": {"id": "c1"}}).encode()
    assert parse_resend(contact, "msg_2") == []


def test_parse_calcom_booking_triggers() -> None:
    """A booking trigger is a status of the booking ``uid`` (id ``{uid}:{trigger}``), its
    ``antifragile_ref`` metadata the correlation; created is ``confirmed``, cancelled
    ``cancelled``; a trigger without a booking gives nothing; attendees are not kept."""
    body = json.dumps(
        {"triggerEvent": "BOOKING_CANCELLED", "createdAt": "2026-01-01T00:00:00Z",
         "payload": {"uid": "bk1", "bookingId": 7, "status": "CANCELLED",
                     "metadata": {"antifragile_ref": "create-booking/lead/1"},
                     "attendees": [{"email": "ada@example.com", "name": "Ada"}]}}
    ).encode()  # fmt: skip
    [event] = parse_calcom(body)
    status = _status(event)
    assert (status.event_id, status.status, status.correlation) == (
        "bk1:BOOKING_CANCELLED",
        "cancelled",
        "create-booking/lead/1",
    )
    assert status.details["booking_id"] == 7
    assert "Ada" not in json.dumps(event.to_json())
    assert parse_calcom(b'{"triggerEvent": "PING", "payload": {}}') == []


def test_parse_hubspot_batch() -> None:
    """Each subscription event is a status with ``eventId`` as id, ``objectId`` as provider
    id, ``portalId`` as tenant key; creation is ``confirmed``, property values not kept."""
    body = json.dumps(
        [
            {"eventId": 100, "subscriptionType": "contact.creation", "objectId": 5,
             "portalId": 62515, "occurredAt": 1700000000000, "attemptNumber": 0},
            {"eventId": 101, "subscriptionType": "contact.propertyChange", "objectId": 5,
             "portalId": 62515, "propertyName": "email", "propertyValue": "a@example.com"},
        ]
    ).encode()  # fmt: skip
    first, second = (_status(e) for e in parse_hubspot(body))
    assert (first.event_id, first.status, first.provider_message_id) == ("100", "confirmed", "5")
    assert first.occurred_at == 1700000000.0
    assert second.status == "other"
    assert "example.com" not in json.dumps([e.to_json() for e in parse_hubspot(body)])
    assert parse_hubspot(body)[0].tenant_key == "62515"


@pytest.mark.parametrize(
    ("parse", "body"),
    [
        (parse_sendgrid, b"{not json"),
        (parse_sendgrid, b'{"event": "delivered"}'),
        (parse_sendgrid, b'[{"event": "delivered"}]'),
        (parse_sendgrid, b"[1]"),
        (lambda b: parse_resend(b, "msg"), b'{"type": "email.sent"}'),
        (lambda b: parse_resend(b, "msg"), b'{"type": "email.sent", "data": {}}'),
        (lambda b: parse_resend(b, "msg"), b"[]"),
        (parse_calcom, b'{"payload": {"uid": "x"}}'),
        (parse_calcom, b"\xff"),
        (parse_hubspot, b'[{"eventId": 1}]'),
        (parse_hubspot, b'{"eventId": 1}'),
        (
            parse_hubspot,
            b'[{"eventId": "a\\u0000", "subscriptionType": "contact.creation"}]',
        ),
    ],
)
def test_garbage_is_malformed(parse: Any, body: bytes) -> None:
    """A body that is not the provider's shape, or lacks an event's id or type, is 400."""
    with pytest.raises(MalformedPayloadError) as caught:
        parse(body)
    assert caught.value.status == 400


# -- forward only ---------------------------------------------------------------------------------


def _s(status: str, at: float = 1.0, code: str | None = None) -> DeliveryStatus:
    return DeliveryStatus("whatsapp", f"w:{status}", status, status, "w", error_code=code,
                          occurred_at=at)  # fmt: skip


def test_statuses_never_move_a_message_backwards() -> None:
    """Whatever order statuses arrive in -- read before delivered, a duplicate, a late sent --
    the message ends at the furthest one, and each status's first time is kept."""
    record: dict[str, Any] = {}
    for status in (_s("read", 3.0), _s("delivered", 2.0), _s("read", 9.0), _s("sent", 1.0)):
        record.update(advance(record, status, now=10.0))
    assert record["delivery_status"] == "read"
    assert record["delivery_times"] == {"read": 3.0, "delivered": 2.0, "sent": 1.0}
    assert advance(record, _s("delivered", 5.0), now=10.0) == {}
    failed = advance(record, _s("failed", 11.0, code="131026"), now=12.0)
    assert (failed["delivery_status"], failed["delivery_error_code"]) == ("failed", "131026")
    assert advance({"delivery_status": "failed"}, _s("other"), now=1.0) == {}
    assert STATUS_RANK["read"] > STATUS_RANK["delivered"] > STATUS_RANK["sent"]


def test_whatsapp_and_twilio_statuses_carry_their_correlation() -> None:
    """A WhatsApp status's ``biz_opaque_callback_data`` and a Twilio status callback's
    ``ref`` URL parameter become the correlation; Twilio's statuses are
    normalised (``sending`` -> queued, ``undelivered`` -> failed with its ErrorCode)."""
    body = {
        "entry": [
            {
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": {"phone_number_id": "P1"},
                            "statuses": [
                                {"id": "wamid.1", "status": "read", "timestamp": "5",
                                 "recipient_id": "447700900123",
                                 "biz_opaque_callback_data": "outmsg-id-1"}
                            ],
                        },
                    }
                ]
            }
        ]
    }  # fmt: skip
    [event] = parse_whatsapp(json.dumps(body).encode())
    status = _status(event)
    assert (status.provider_message_id, status.status, status.correlation) == (
        "wamid.1",
        "read",
        "outmsg-id-1",
    )
    base = {"MessageSid": "SM1", "From": "+15550001111", "To": "+447700900123"}
    sending = _status(parse_twilio({**base, "MessageStatus": "sending"}, correlation="k")[0])
    assert (sending.status, sending.correlation) == ("queued", "k")
    failed = parse_twilio({**base, "MessageStatus": "undelivered", "ErrorCode": "30008"})
    assert (_status(failed[0]).status, _status(failed[0]).error_code) == ("failed", "30008")
    assert _status(failed[0]).correlation is None
