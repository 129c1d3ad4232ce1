"""Inbound webhooks: signature verification (with the providers' published vectors), the
WhatsApp handshake, parsing into ``InboundEvent`` values, and robustness against any input."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import antifragile.sandbox
from antifragile.errors import AntifragileError, ErrorCode
from antifragile.inbound import (
    Channel,
    DeliveryStatus,
    EventKind,
    InboundEvent,
    MalformedPayloadError,
    SignatureError,
    WebhookError,
    parse_shopify,
    parse_twilio,
    parse_whatsapp,
    shopify_signature,
    twilio_body_hash,
    twilio_signature,
    verify_shopify,
    verify_twilio,
    verify_whatsapp,
    whatsapp_handshake,
    whatsapp_signature,
)
from antifragile.sandbox import (
    WebhookSender,
    twilio_inbound_message,
    whatsapp_status,
    whatsapp_text_message,
)

# -- published vectors --------------------------------------------------------------------------

# twilio/twilio-python tests/unit/test_request_validator.py
TWILIO_TOKEN = "12345"
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
TWILIO_EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
TWILIO_JSON_BODY = b'{"property": "value", "boolean": true}'
TWILIO_BODY_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"

# Shopify/shopify-app-js packages/apps/shopify-api/lib/webhooks/__tests__/validate.test.ts
SHOPIFY_SECRET = "test_secret_key"
SHOPIFY_BODY = b'{"foo": "bar"}'
SHOPIFY_EXPECTED = "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g="

# RFC 4231 test case 2 (HMAC-SHA256); Meta publishes no X-Hub-Signature-256 vector
RFC4231_KEY = "Jefe"
RFC4231_DATA = b"what do ya want for nothing?"
RFC4231_HEX = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_twilio_signature_matches_the_sdk_vector() -> None:
    """The Twilio signature of the SDK's example request is the SDK's published value, and
    verification accepts it."""
    assert twilio_signature(TWILIO_TOKEN, TWILIO_URL, TWILIO_PARAMS) == TWILIO_EXPECTED
    verify_twilio(TWILIO_URL, TWILIO_PARAMS, TWILIO_EXPECTED, [TWILIO_TOKEN])


def test_twilio_signature_sorts_repeated_values() -> None:
    """A parameter sent several times contributes each value, sorted (the SDK's vector)."""
    params = {"Sid": ["CA123"], "SidAccount": ["AC123"], "Digits": ["5678", "1234"]}
    assert twilio_signature(TWILIO_TOKEN, TWILIO_URL, params) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    verify_twilio(TWILIO_URL, params, "IK+Dwps556ElfBT0I3Rgjkr1wJU=", [TWILIO_TOKEN])


def test_twilio_repeated_identical_values_accept_both_signing_forms() -> None:
    """Signers differ on repeated identical values (kept or de-duplicated): both verify."""
    params = {"Digits": ["1", "1"]}
    deduped = twilio_signature(TWILIO_TOKEN, TWILIO_URL, params)
    kept = twilio_signature(TWILIO_TOKEN, TWILIO_URL + "Digits1Digits1")
    assert deduped != kept
    verify_twilio(TWILIO_URL, params, deduped, [TWILIO_TOKEN])
    verify_twilio(TWILIO_URL, params, kept, [TWILIO_TOKEN])


@pytest.mark.parametrize(
    ("url", "signature"),
    [
        # a non-default port is tried removed (signed without it)
        ("https://mycompany.com:1234/myapp.php?foo=1&bar=2", TWILIO_EXPECTED),
        # ... and as given
        ("http://mycompany.com:1234/myapp.php?foo=1&bar=2", "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
        # the default port is tried added (signed with :443 / :80)
        (TWILIO_URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),
        ("http://mycompany.com/myapp.php?foo=1&bar=2", "0ZXoZLH/DfblKGATFgpif+LLRf4="),
        # ... and removed when the request URL has it
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", TWILIO_EXPECTED),
    ],
)
def test_twilio_port_variants_match_the_sdk_vectors(url: str, signature: str) -> None:
    """Twilio signs with and without the port; each published variant verifies."""
    verify_twilio(url, TWILIO_PARAMS, signature, [TWILIO_TOKEN])


def test_twilio_json_body_is_checked_against_body_sha256() -> None:
    """A JSON delivery: the signature covers the URL with ``bodySHA256`` and no parameters,
    and the body must hash to that value (the SDK's vector)."""
    url = f"{TWILIO_URL}&bodySHA256={TWILIO_BODY_HASH}"
    assert twilio_body_hash(TWILIO_JSON_BODY) == TWILIO_BODY_HASH
    assert twilio_signature(TWILIO_TOKEN, url) == "a9nBmqA0ju/hNViExpshrM61xv4="
    verify_twilio(url, {}, "a9nBmqA0ju/hNViExpshrM61xv4=", [TWILIO_TOKEN], body=TWILIO_JSON_BODY)
    with pytest.raises(SignatureError, match="bodySHA256"):
        verify_twilio(url, {}, "a9nBmqA0ju/hNViExpshrM61xv4=", [TWILIO_TOKEN], body=b"{}")
    with pytest.raises(SignatureError):
        verify_twilio(url, {}, "a9nBmqA0ju/hNViExpshrM61xv4=", [TWILIO_TOKEN], body=None)
    with pytest.raises(SignatureError):
        verify_twilio(url, {}, "a9nBmqA0ju/hNViExpshrM61xv4=", ["other"], body=TWILIO_JSON_BODY)


def test_twilio_url_that_cannot_be_parsed_is_malformed() -> None:
    """A request URL with an impossible port or host is a 400, not a crash."""
    for url in ("https://example.com:99999/x", "https://[::1/x"):
        with pytest.raises(MalformedPayloadError):
            verify_twilio(url, {}, "c2ln", ["token"])


def test_shopify_signature_matches_the_sdk_vector() -> None:
    """The Shopify signature of the SDK's test body is the SDK's published value."""
    assert shopify_signature(SHOPIFY_SECRET, SHOPIFY_BODY) == SHOPIFY_EXPECTED
    verify_shopify(SHOPIFY_BODY, SHOPIFY_EXPECTED, [SHOPIFY_SECRET])
    with pytest.raises(SignatureError):
        verify_shopify(SHOPIFY_BODY + b" ", SHOPIFY_EXPECTED, [SHOPIFY_SECRET])


def test_whatsapp_signature_is_hex_hmac_sha256_with_prefix() -> None:
    """``sha256=`` + the lowercase hex HMAC-SHA256 (RFC 4231 vector); the hex is compared
    case-insensitively and the prefix is required."""
    expected = f"sha256={RFC4231_HEX}"
    assert whatsapp_signature(RFC4231_KEY, RFC4231_DATA) == expected
    verify_whatsapp(RFC4231_DATA, expected, [RFC4231_KEY])
    verify_whatsapp(RFC4231_DATA, f"SHA256={RFC4231_HEX.upper()}", [RFC4231_KEY])
    with pytest.raises(SignatureError, match="sha256="):
        verify_whatsapp(RFC4231_DATA, RFC4231_HEX, [RFC4231_KEY])


# -- rotation, missing and bad signatures -------------------------------------------------------


Verifier = Callable[[str | None, list[str]], None]


def _verifiers(body: bytes) -> dict[str, tuple[Callable[[str], str], Verifier]]:
    url = "https://hooks.example.com/twilio"
    params = {"Body": "hi"}
    return {
        "whatsapp": (
            lambda secret: whatsapp_signature(secret, body),
            lambda sig, secrets: verify_whatsapp(body, sig, secrets),
        ),
        "twilio": (
            lambda secret: twilio_signature(secret, url, params),
            lambda sig, secrets: verify_twilio(url, params, sig, secrets),
        ),
        "shopify": (
            lambda secret: shopify_signature(secret, body),
            lambda sig, secrets: verify_shopify(body, sig, secrets),
        ),
    }


PROVIDERS = ["whatsapp", "twilio", "shopify"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rotation_accepts_every_configured_secret(provider: str) -> None:
    """During a rotation both the old and the new secret verify; any other does not."""
    sign, verify = _verifiers(b'{"a":1}')[provider]
    secrets = ["old-secret-value", "new-secret-value"]
    verify(sign("old-secret-value"), secrets)
    verify(sign("new-secret-value"), secrets)
    with pytest.raises(SignatureError):
        verify(sign("third-secret-value"), secrets)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("signature", [None, "", "   "])
def test_missing_signature_is_refused_with_401(provider: str, signature: str | None) -> None:
    """No signature header: SIGNATURE_INVALID, HTTP 401, saying which header is missing."""
    _sign, verify = _verifiers(b"{}")[provider]
    with pytest.raises(SignatureError) as caught:
        verify(signature, ["secret"])
    assert caught.value.code == ErrorCode.SIGNATURE_INVALID
    assert caught.value.status == 401
    assert "missing" in str(caught.value)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_bad_signature_message_leaks_neither_secret_nor_signature(provider: str) -> None:
    """A wrong signature is a 401 whose message names no secret and no signature."""
    sign, verify = _verifiers(b'{"x":2}')[provider]
    presented = sign("attacker-key-123")
    with pytest.raises(SignatureError) as caught:
        verify(presented, ["configured-secret-xyz"])
    error = caught.value
    assert (error.code, error.status) == (ErrorCode.SIGNATURE_INVALID, 401)
    text = str(error) + json.dumps(error.to_dict())
    assert "configured-secret-xyz" not in text
    assert presented not in text
    assert presented.removeprefix("sha256=") not in text


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("secrets", [[], [""]])
def test_no_usable_secret_never_verifies(provider: str, secrets: list[str]) -> None:
    """Without a configured secret nothing verifies -- not even an HMAC made with an empty
    key, which anyone can compute."""
    sign, verify = _verifiers(b"{}")[provider]
    with pytest.raises(SignatureError):
        verify(sign(""), secrets)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("signature", ["sha256=\u00e9\u00e9", "\ud800", "sha256=\ud800"])
def test_non_ascii_or_surrogate_signatures_are_refused(provider: str, signature: str) -> None:
    """A signature with non-ASCII characters (even a lone surrogate) is a plain 401."""
    _sign, verify = _verifiers(b"{}")[provider]
    with pytest.raises(SignatureError):
        verify(signature, ["secret"])


def test_webhook_errors_are_antifragile_errors_that_pickle() -> None:
    """The errors sit in the project's tree, carry code and status, and survive pickling
    (jobs and processes move them)."""
    error = MalformedPayloadError("the WhatsApp body is not valid JSON")
    assert isinstance(error, WebhookError)
    assert isinstance(error, AntifragileError)
    assert (error.code, error.status, error.retryable) == (ErrorCode.MALFORMED_PAYLOAD, 400, False)
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.code, again.status) == (MalformedPayloadError, error.code, 400)
    assert error.to_dict() == {
        "code": "MALFORMED_PAYLOAD",
        "message": "the WhatsApp body is not valid JSON",
        "retryable": False,
    }


# -- the WhatsApp handshake ---------------------------------------------------------------------


def test_handshake_returns_the_challenge_for_any_configured_token() -> None:
    """``hub.mode=subscribe`` with a configured verify token: the challenge comes back."""
    assert whatsapp_handshake("subscribe", "new-token", "1158201444", ["old", "new-token"]) == (
        "1158201444"
    )


@pytest.mark.parametrize(
    ("mode", "token", "tokens"),
    [
        ("subscribe", "wrong-token", ["right-token"]),
        ("unsubscribe", "right-token", ["right-token"]),
        ("subscribe", "right-token", []),
        ("subscribe", "\ud800", ["right-token"]),
    ],
)
def test_handshake_refuses_wrong_tokens_with_403(mode: str, token: str, tokens: list[str]) -> None:
    """A wrong token or mode: FORBIDDEN, HTTP 403, and the token is not echoed."""
    with pytest.raises(SignatureError) as caught:
        whatsapp_handshake(mode, token, "challenge", tokens)
    assert (caught.value.code, caught.value.status) == (ErrorCode.FORBIDDEN, 403)
    assert "wrong-token" not in str(caught.value)
    assert "right-token" not in str(caught.value)


@pytest.mark.parametrize(
    ("mode", "token", "challenge"),
    [(None, "t", "c"), ("subscribe", None, "c"), ("subscribe", "t", None), ("", "t", "c")],
)
def test_handshake_missing_parameters_are_malformed(
    mode: str | None, token: str | None, challenge: str | None
) -> None:
    """A handshake without one of its parameters is a 400 naming the missing ones."""
    with pytest.raises(MalformedPayloadError, match=r"hub\.") as caught:
        whatsapp_handshake(mode, token, challenge, ["t"])
    assert caught.value.status == 400


# -- parsing: WhatsApp --------------------------------------------------------------------------


def _dump(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def _value(payload: Mapping[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = payload["entry"][0]["changes"][0]["value"]
    return value


def _roundtrips(event: InboundEvent) -> None:
    assert InboundEvent.from_json(json.loads(json.dumps(event.to_json()))) == event


def test_parse_whatsapp_documented_text_message() -> None:
    """The documentation's inbound text: one MESSAGE with the wamid, the phone number id as
    tenant, digits as sender, the text, the profile name and the timestamp."""
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": "106540352242922",
                            },
                            "contacts": [
                                {"profile": {"name": "Sheena Nelson"}, "wa_id": "16505551234"}
                            ],
                            "messages": [
                                {
                                    "from": "16505551234",
                                    "id": "wamid.HBgLMTY1",
                                    "timestamp": "1749416383",
                                    "type": "text",
                                    "text": {"body": "Does it come in another color?"},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    [event] = parse_whatsapp(_dump(body))
    assert event == InboundEvent(
        channel=Channel.WHATSAPP,
        event_id="wamid.HBgLMTY1",
        kind=EventKind.MESSAGE,
        tenant_key="106540352242922",
        sender="16505551234",
        text="Does it come in another color?",
        topic="text",
        occurred_at=1749416383.0,
        data={"profile_name": "Sheena Nelson"},
    )
    _roundtrips(event)


def test_parse_whatsapp_sandbox_message_and_statuses() -> None:
    """The sandbox's text message and status payloads parse; a status's id is
    ``{wamid}:{status}`` with the message id, status, recipient and errors in data."""
    [message] = parse_whatsapp(
        _dump(whatsapp_text_message(from_="447700900123", body="hello", message_id="wamid.A"))
    )
    assert (message.event_id, message.text, message.sender) == ("wamid.A", "hello", "447700900123")
    delivered = whatsapp_status(message_id="wamid.B", recipient_id="447700900123", timestamp=10)
    [status] = parse_whatsapp(_dump(delivered))
    assert status.kind is EventKind.STATUS
    assert (status.event_id, status.topic, status.occurred_at) == (
        "wamid.B:delivered",
        "delivered",
        10.0,
    )
    assert status.sender is None
    assert status.data == {
        "message_id": "wamid.B",
        "status": "delivered",
        "provider_status": "delivered",
        "correlation": None,
        "error_code": None,
        "recipient_id": "447700900123",
        "errors": [],
        "pricing": {"billable": True, "pricing_model": "CBP", "category": "service"},
        "conversation_origin": "service",
    }
    failed = whatsapp_status(
        message_id="wamid.B",
        recipient_id="447700900123",
        status="failed",
        errors=[
            {
                "code": 131026,
                "title": "Message undeliverable",
                "message": "Message undeliverable",
                "error_data": {"details": "Receiver incapable"},
                "href": "https://example.com",
            }
        ],
    )
    [failure] = parse_whatsapp(_dump(failed))
    assert failure.event_id == "wamid.B:failed"
    assert (failure.data["status"], failure.data["error_code"]) == ("failed", "131026")
    assert failure.data["errors"] == [
        {
            "code": 131026,
            "title": "Message undeliverable",
            "message": "Message undeliverable",
            "details": "Receiver incapable",
        }
    ]
    _roundtrips(failure)


def _with_messages(*messages: dict[str, Any], **value: Any) -> bytes:
    payload = whatsapp_text_message(from_="15551230000", body="x")
    _value(payload)["messages"] = list(messages)
    _value(payload).update(value)
    return _dump(payload)


def test_parse_whatsapp_non_text_types() -> None:
    """Other message types keep their type as topic: a caption or a chosen button's label
    becomes the text, media ids go into data, unknown types and fields are tolerated."""
    base = {"from": "+15551230000", "timestamp": "1"}
    body = _with_messages(
        {**base, "id": "w1", "type": "image", "image": {"id": "m1", "mime_type": "image/jpeg",
                                                         "caption": "this one", "sha256": "x"}},
        {**base, "id": "w2", "type": "audio", "audio": {"id": "m2", "mime_type": "audio/ogg"}},
        {**base, "id": "w3", "type": "interactive",
         "interactive": {"type": "button_reply", "button_reply": {"id": "b", "title": "Yes"}}},
        {**base, "id": "w4", "type": "button", "button": {"text": "Stop", "payload": "p"}},
        {**base, "id": "w5", "type": "hologram", "hologram": {"depth": 3}, "new_field": [1]},
        {**base, "id": "w6", "type": "unsupported",
         "errors": [{"code": 131051, "title": "Message type unknown"}]},
        {**base, "id": "w7", "type": "text", "text": {"body": "re"},
         "context": {"from": "15550783881", "id": "wamid.prev"}},
    )  # fmt: skip
    events = parse_whatsapp(body)
    assert [(e.event_id, e.topic, e.text) for e in events] == [
        ("w1", "image", "this one"),
        ("w2", "audio", None),
        ("w3", "interactive", "Yes"),
        ("w4", "button", "Stop"),
        ("w5", "hologram", None),
        ("w6", "unsupported", None),
        ("w7", "text", "re"),
    ]
    assert events[0].sender == "15551230000"  # the "+" is dropped
    assert events[0].data == {
        "profile_name": "Test User",
        "media_id": "m1",
        "mime_type": "image/jpeg",
        "sha256": "x",
    }
    assert events[2].data["reply_id"] == "b"  # the tapped button's id
    assert events[3].data["reply_id"] == "p"  # a template quick reply's payload
    assert events[5].data["errors"] == [{"code": 131051, "title": "Message type unknown"}]
    assert events[6].data["reply_to"] == "wamid.prev"
    for event in events:
        _roundtrips(event)


def test_parse_whatsapp_documented_interactive_replies_and_document() -> None:
    """The shapes of Meta's webhook reference for a tapped reply button, a picked list row
    (both with ``context`` naming the message that asked) and a document: the reply's id, the
    asking message, and the document's media id, type, hash and file name are kept."""
    asked = "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3N0EyQUJDMjFEQzZCQUMzODMA"
    base = {"from": "16505551234", "timestamp": "1749416383"}
    context = {"from": "15550783881", "id": asked}
    body = _with_messages(
        {**base, "id": "wamid.b1", "type": "interactive", "context": context,
         "interactive": {"type": "button_reply",
                         "button_reply": {"id": "size:2", "title": "Medium"}}},
        {**base, "id": "wamid.l1", "type": "interactive", "context": context,
         "interactive": {"type": "list_reply",
                         "list_reply": {"id": "slot:3", "title": "Tue am",
                                        "description": "Tuesday morning"}}},
        {**base, "id": "wamid.d1", "type": "document",
         "document": {"caption": "my quote", "filename": "quote.pdf",
                      "mime_type": "application/pdf", "sha256": "3f2a", "id": "1003383421387256"}},
    )  # fmt: skip
    button, row, document = parse_whatsapp(body)
    assert (button.text, button.data["reply_id"], button.data["reply_to"]) == (
        "Medium",
        "size:2",
        asked,
    )
    assert (row.text, row.data["reply_id"]) == ("Tue am", "slot:3")
    assert document.topic == "document"
    assert document.text == "my quote"
    assert {k: document.data[k] for k in ("media_id", "mime_type", "sha256", "filename")} == {
        "media_id": "1003383421387256",
        "mime_type": "application/pdf",
        "sha256": "3f2a",
        "filename": "quote.pdf",
    }


def test_parse_whatsapp_yields_nothing_without_messages() -> None:
    """Empty ``messages`` and other change fields give no events."""
    assert parse_whatsapp(_with_messages()) == []
    assert parse_whatsapp(_dump({"object": "whatsapp_business_account", "entry": []})) == []
    other = {"entry": [{"changes": [{"field": "account_update", "value": {"event": "X"}}]}]}
    assert parse_whatsapp(_dump(other)) == []


def test_parse_whatsapp_value_errors_are_failed_statuses_about_no_message() -> None:
    """``value.errors`` is a ``failed`` status without a message id, its code kept, its id
    the same for the same body (a redelivery is a duplicate) and different per error."""
    body = _with_messages(errors=[{"code": 131000, "title": "Something went wrong"}, {"code": 1}])
    first, second = parse_whatsapp(body)
    status = DeliveryStatus.from_event(first)
    assert (status.status, status.provider_status, status.error_code) == (
        "failed",
        "error",
        "131000",
    )
    assert status.provider_message_id is None
    assert first.event_id != second.event_id
    assert [e.event_id for e in parse_whatsapp(body)] == [first.event_id, second.event_id]
    _roundtrips(first)


def test_parse_whatsapp_several_entries_in_order() -> None:
    """Every entry, change, message and status becomes an event, in the body's order."""
    one = whatsapp_text_message(from_="1", body="a", message_id="w1", phone_number_id="P1")
    two = whatsapp_status(message_id="w0", recipient_id="2", status="read", phone_number_id="P2")
    body = {"entry": one["entry"] + two["entry"]}
    events = parse_whatsapp(_dump(body))
    assert [(e.event_id, e.tenant_key) for e in events] == [("w1", "P1"), ("w0:read", "P2")]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[]", "not a JSON object"),
        (b"{}", "entry"),
        (b'{"entry": {}}', "entry"),
        (b'{"entry": [1]}', "entry[0]"),
        (b'{"entry": [{"changes": [{"value": []}]}]}', "value"),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
        (b'{"entry": [{"changes": [{"value": {"messages": [{"id": "w"}]}}]}]}', "metadata"),
    ],
)
def test_parse_whatsapp_malformed_bodies(body: bytes, needle: str) -> None:
    """Bodies that are not the webhook's shape are a 400 saying what is wrong."""
    with pytest.raises(MalformedPayloadError) as caught:
        parse_whatsapp(body)
    assert needle in str(caught.value)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ({"from": "15551230000", "type": "text", "text": {"body": "x"}}, ".id"),
        ({"id": "w", "type": "text", "text": {"body": "x"}}, ".from"),
        ({"id": "w", "from": "15551230000", "type": "text"}, ".text"),
        ({"id": "w", "from": "15551230000", "type": "text", "text": {"body": 3}}, "body"),
        ({"id": "w", "from": "15551230000", "type": 5}, ".type"),
        ({"id": "w", "from": "15551230000", "type": "x", "timestamp": "soon"}, "timestamp"),
        ({"id": "w", "from": "15551230000", "type": "x", "timestamp": "9" * 400}, "timestamp"),
        ({"id": "w", "from": "15551230000", "type": "x", "errors": {}}, "errors"),
        ({"id": ["w"], "from": "15551230000", "type": "x"}, ".id"),
    ],
)
def test_parse_whatsapp_malformed_messages(message: dict[str, Any], needle: str) -> None:
    """A message without its ids or with wrong types is a 400; no phone number in the text."""
    with pytest.raises(MalformedPayloadError) as caught:
        parse_whatsapp(_with_messages(message))
    assert needle in str(caught.value)
    assert "15551230000" not in str(caught.value)


def test_parse_whatsapp_malformed_status() -> None:
    """A status without its id or status is a 400."""
    for status in ({"status": "read"}, {"id": "w"}, "read"):
        body = _dump({"entry": [{"changes": [{"value": {
            "metadata": {"phone_number_id": "1"}, "statuses": [status]}}]}]})  # fmt: skip
        with pytest.raises(MalformedPayloadError):
            parse_whatsapp(body)


# -- parsing: Twilio ----------------------------------------------------------------------------


def _form(params: Mapping[str, str]) -> dict[str, list[str]]:
    """Form parameters as a web framework hands them over (every value a list)."""
    return parse_qs(urlencode(params), keep_blank_values=True)


def test_parse_twilio_sms() -> None:
    """An inbound SMS: the MessageSid, digits for the sender, ``+E.164`` for the tenant."""
    params = twilio_inbound_message(
        from_="+14155550100", to="+14155550199", body="Price?", message_sid="SM1"
    )
    [event] = parse_twilio(_form(params))
    assert event == InboundEvent(
        channel=Channel.TWILIO,
        event_id="SM1",
        kind=EventKind.MESSAGE,
        tenant_key="+14155550199",
        sender="14155550100",
        text="Price?",
        topic="text",
        data={"account_sid": "AC" + "0" * 32, "num_media": 0},
    )
    _roundtrips(event)


def test_parse_twilio_whatsapp_strips_prefix_and_keeps_profile_name() -> None:
    """``whatsapp:`` numbers lose the prefix; ProfileName goes into data; plain string values
    are accepted as well as lists."""
    params = twilio_inbound_message(
        from_="whatsapp:+447700900123",
        to="whatsapp:+14155238886",
        body="hi",
        message_sid="SM2",
        profile_name="Ann",
    )
    [event] = parse_twilio(params)
    assert (event.sender, event.tenant_key) == ("447700900123", "+14155238886")
    assert event.data["profile_name"] == "Ann"


def test_parse_twilio_sms_sid_and_media() -> None:
    """SmsSid stands in for MessageSid; media without a body: no text, the media type as
    topic, the media listed in data."""
    params = {
        "SmsSid": "SM3",
        "From": "+15550001",
        "To": "+15550002",
        "Body": "",
        "NumMedia": "2",
        "MediaUrl0": "https://api.twilio.com/media/ME1",
        "MediaContentType0": "image/jpeg",
        "MediaUrl1": "https://api.twilio.com/media/ME2",
        "MediaContentType1": "application/pdf",
    }
    [event] = parse_twilio(_form(params))
    assert (event.event_id, event.text, event.topic) == ("SM3", None, "image")
    assert event.data["num_media"] == 2
    assert event.data["media"] == [
        {"url": "https://api.twilio.com/media/ME1", "content_type": "image/jpeg"},
        {"url": "https://api.twilio.com/media/ME2", "content_type": "application/pdf"},
    ]


def test_parse_twilio_status_callbacks() -> None:
    """MessageStatus without Body is a STATUS for a message the business sent: the tenant is
    the From number, the id ``{sid}:{status}``, the error code kept."""
    params = {
        "MessageSid": "SM4",
        "MessageStatus": "undelivered",
        "From": "whatsapp:+14155238886",
        "To": "whatsapp:+447700900123",
        "ErrorCode": "63016",
        "AccountSid": "AC1",
    }
    [event] = parse_twilio(_form(params))
    assert event.kind is EventKind.STATUS
    assert (event.event_id, event.topic, event.tenant_key) == (
        "SM4:undelivered",
        "undelivered",
        "+14155238886",
    )
    assert event.sender is None
    assert event.data == {
        "account_sid": "AC1",
        "message_id": "SM4",
        "status": "failed",
        "provider_status": "undelivered",
        "correlation": None,
        "error_code": "63016",
        "recipient_id": "447700900123",
        "errors": [{"code": "63016"}],
    }
    _roundtrips(event)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"From": "+1555", "To": "+1556", "Body": "x"}, "MessageSid"),
        ({"MessageSid": "SM", "To": "+1556", "Body": "x"}, "From"),
        ({"MessageSid": "SM", "From": "+1555", "Body": "x"}, "To"),
        ({"MessageSid": "SM", "From": "+1555", "To": "+1556", "NumMedia": "many"}, "NumMedia"),
        ({"MessageSid": "SM", "From": "+1555", "To": "+1556", "NumMedia": "-1"}, "NumMedia"),
        ({"MessageSid": "SM", "From": "+1555", "To": "+1556", "MessageStatus": " "}, "Status"),
        ({"MessageSid": [1], "From": "+1555", "To": "+1556"}, "MessageSid"),
    ],
)
def test_parse_twilio_malformed(params: Mapping[str, Any], needle: str) -> None:
    """Missing ids or unreadable counts are a 400 naming the parameter, never a phone number."""
    with pytest.raises(MalformedPayloadError) as caught:
        parse_twilio(params)
    assert needle in str(caught.value)
    assert "+1555" not in str(caught.value)


# -- parsing: Shopify ---------------------------------------------------------------------------


def _shopify_headers(topic: str, **extra: str) -> dict[str, str]:
    return {
        "X-Shopify-Topic": topic,
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        "X-Shopify-Shop-Domain": "Example.myshopify.com",
        "X-Shopify-Event-Id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
        "X-Shopify-Triggered-At": "2024-01-02T03:04:05.000Z",
        "X-Shopify-API-Version": "2024-01",
        **extra,
    }


ORDER = {
    "id": 450789469,
    "name": "#1001",
    "email": "bob.norman@mail.example.com",
    "phone": "+557734881234",
    "total_price": "598.94",
    "currency": "USD",
    "customer": {
        "id": 207119551,
        "email": "bob.norman@mail.example.com",
        "phone": "+16136120707",
        "first_name": "Bob",
    },
    "billing_address": {"phone": "+1 555 555 5555", "address1": "Chestnut Street 92"},
    "line_items": [{"id": 1, "title": "IPod Nano", "price": "199.00", "quantity": 1}],
}


def test_parse_shopify_order_keeps_ids_and_amounts_only() -> None:
    """orders/create: the delivery id as event id, the shop as tenant, the order id, name,
    total and customer id in data -- and no e-mail address or phone number anywhere."""
    [event] = parse_shopify(_dump(ORDER), _shopify_headers("orders/create"))
    assert event.channel is Channel.SHOPIFY
    assert event.kind is EventKind.COMMERCE
    assert event.event_id == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    assert event.tenant_key == "example.myshopify.com"
    assert event.topic == "orders/create"
    assert event.occurred_at == 1704164645.0
    assert event.sender is None
    assert event.data == {
        "shopify_event_id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
        "triggered_at": "2024-01-02T03:04:05.000Z",
        "api_version": "2024-01",
        "resource_id": "450789469",
        "order_id": "450789469",
        "order_name": "#1001",
        "total": "598.94",
        "currency": "USD",
        "customer_id": "207119551",
    }
    dumped = json.dumps(event.to_json())
    for pii in ("@", "5577", "6136", "555 555", "Bob", "Chestnut"):
        assert pii not in dumped
    _roundtrips(event)


def test_parse_shopify_guest_order_customers_inventory_and_other_topics() -> None:
    """A guest order has no customer id; customers/create keeps the customer id;
    inventory_levels/update the item, location and quantity; other topics the resource id."""
    guest = {**ORDER, "customer": None}
    [order] = parse_shopify(_dump(guest), _shopify_headers("orders/create"))
    assert order.data["customer_id"] is None
    customer = {"id": 706405506930370084, "email": "bob@example.com", "phone": "+13125551212"}
    [created] = parse_shopify(_dump(customer), _shopify_headers("customers/create"))
    assert created.data["customer_id"] == "706405506930370084"
    assert "email" not in json.dumps(created.to_json())
    level = {"inventory_item_id": 271878346596884015, "location_id": 24826418, "available": 6}
    [inventory] = parse_shopify(_dump(level), _shopify_headers("inventory_levels/update"))
    assert (
        inventory.data["inventory_item_id"],
        inventory.data["location_id"],
        inventory.data["available"],
    ) == ("271878346596884015", "24826418", 6)
    [product] = parse_shopify(_dump({"id": 7, "title": "x"}), _shopify_headers("products/update"))
    assert product.data["resource_id"] == "7"
    assert "title" not in product.data


def test_parse_shopify_headers_case_and_unprefixed_names() -> None:
    """Header names are case-insensitive and the unprefixed ``Shopify-*`` names work too; an
    unreadable trigger time is kept as text with no ``occurred_at``."""
    headers = {
        "shopify-topic": "customers/create",
        "SHOPIFY-WEBHOOK-ID": "d1",
        "shopify-shop-domain": "s.myshopify.com",
        "x-shopify-triggered-at": "yesterday",
    }
    [event] = parse_shopify(b'{"id": 1}', headers)
    assert (event.event_id, event.topic, event.tenant_key) == (
        "d1",
        "customers/create",
        "s.myshopify.com",
    )
    assert event.occurred_at is None
    assert event.data["triggered_at"] == "yesterday"
    assert event.data["shopify_event_id"] is None


@pytest.mark.parametrize(
    ("body", "headers", "needle"),
    [
        (b"{}", {"X-Shopify-Topic": "orders/create"}, "X-Shopify-Webhook-Id, X-Shopify-Shop"),
        (b"not json", _shopify_headers("orders/create"), "not valid JSON"),
        (b"\xc3\x28", _shopify_headers("orders/create"), "not UTF-8"),
        (b"[1]", _shopify_headers("orders/create"), "not a JSON object"),
        (b'{"name": "#1"}', _shopify_headers("orders/create"), "order's id"),
        (b'{"id": true}', _shopify_headers("orders/create"), "order's id"),
        (b'{"id": 1, "total_price": []}', _shopify_headers("orders/create"), "total_price"),
        (b'{"id": 1, "customer": 5}', _shopify_headers("orders/create"), "customer"),
        (b'{"email": "a@b.c"}', _shopify_headers("customers/create"), "customer's id"),
        (b'{"location_id": 1}', _shopify_headers("inventory_levels/update"), "inventory_item"),
        (
            b'{"location_id": 1, "inventory_item_id": 2, "available": "6"}',
            _shopify_headers("inventory_levels/update"),
            "available",
        ),
    ],
)
def test_parse_shopify_malformed(body: bytes, headers: dict[str, str], needle: str) -> None:
    """Missing headers, bodies that are not objects and missing ids are a 400."""
    with pytest.raises(MalformedPayloadError) as caught:
        parse_shopify(body, headers)
    assert needle in str(caught.value)
    assert "a@b.c" not in str(caught.value)


# -- the sandbox's sender signs with the same maths ---------------------------------------------


def test_sandbox_reexports_the_one_implementation() -> None:
    """The sandbox's signature functions are the inbound ones, not copies."""
    assert antifragile.sandbox.whatsapp_signature is whatsapp_signature
    assert antifragile.sandbox.twilio_signature is twilio_signature
    assert antifragile.sandbox.shopify_signature is shopify_signature


@pytest.fixture
def captured() -> Iterator[tuple[WebhookSender, list[httpx.Request]]]:
    requests: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200)

    client = httpx.Client(transport=httpx.MockTransport(answer))
    with client, WebhookSender(client=client) as sender:
        yield sender, requests


def test_sandbox_deliveries_verify_and_parse(
    captured: tuple[WebhookSender, list[httpx.Request]],
) -> None:
    """What the sandbox sends -- WhatsApp, Twilio form and JSON, Shopify -- verifies against
    the same secrets and parses, exactly as it went over the wire."""
    sender, requests = captured
    sender.send_whatsapp(
        "http://127.0.0.1/wa", whatsapp_text_message(from_="1555", body="a"), app_secret="s1"
    )
    sender.send_twilio(
        "https://h.example/tw?x=1",
        twilio_inbound_message(from_="+1555", to="+1666", body="b"),
        auth_token="t1",
    )
    sender.send_twilio_json("https://h.example/tw?x=1", {"event": "x"}, auth_token="t1")
    sender.send_twilio_json("https://h.example/tw", {"event": "y"}, auth_token="t1")
    sender.send_shopify("http://127.0.0.1/shop", ORDER, secret="s2", webhook_id="d9")

    wa, tw_form, tw_json, tw_json_bare, shop = requests
    verify_whatsapp(wa.content, wa.headers.get("x-hub-signature-256"), ["s1"])
    assert [e.text for e in parse_whatsapp(wa.content)] == ["a"]

    form = parse_qs(tw_form.content.decode(), keep_blank_values=True)
    verify_twilio(str(tw_form.url), form, tw_form.headers.get("x-twilio-signature"), ["t1"])
    assert parse_twilio(form)[0].text == "b"

    for request in (tw_json, tw_json_bare):
        assert "bodySHA256=" in str(request.url)
        verify_twilio(
            str(request.url),
            {},
            request.headers.get("x-twilio-signature"),
            ["t1"],
            body=request.content,
        )
    assert str(tw_json_bare.url).startswith("https://h.example/tw?bodySHA256=")

    verify_shopify(shop.content, shop.headers.get("x-shopify-hmac-sha256"), ["s2"])
    assert parse_shopify(shop.content, dict(shop.headers))[0].event_id == "d9"


# -- robustness: any input gives events or a WebhookError ---------------------------------------

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


def _whatsapp_bodies(noise: bool) -> st.SearchStrategy[Any]:
    """Bodies of the webhook's shape; with *noise*, any node may be replaced by any JSON."""

    def either(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(good, json_values) if noise else good

    def some(element: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return either(st.lists(element, min_size=0 if noise else 1, max_size=2))

    message = st.fixed_dictionaries(
        {
            "id": either(st.text(min_size=1, max_size=8)),
            "from": either(st.from_regex(r"\+?[0-9]{3,12}", fullmatch=True)),
            "type": either(st.sampled_from(["text", "image", "interactive", "button", "x"])),
            "timestamp": either(st.integers(0, 2**40).map(str)),
            "text": either(st.fixed_dictionaries({"body": either(st.text(max_size=8))})),
        },
        optional={
            "image": either(st.fixed_dictionaries({"id": json_values, "caption": json_values})),
            "interactive": json_values,
            "button": either(st.fixed_dictionaries({"text": json_values})),
            "context": json_values,
            "errors": some(json_values),
        },
    )
    status = st.fixed_dictionaries(
        {
            "id": either(st.text(min_size=1, max_size=8)),
            "status": either(st.sampled_from(["sent", "delivered", "read", "failed"])),
        },
        optional={
            "recipient_id": json_values,
            "timestamp": either(st.integers(0, 2**40)),
            "errors": some(either(st.dictionaries(st.text(max_size=6), json_values))),
        },
    )
    value = st.fixed_dictionaries(
        {
            "metadata": either(
                st.fixed_dictionaries({"phone_number_id": either(st.text(min_size=1))})
            ),
            "contacts": either(
                st.lists(st.fixed_dictionaries({"wa_id": json_values, "profile": json_values}))
            ),
            "messages": some(message),
            "statuses": some(status),
        }
    )
    change = st.fixed_dictionaries({"field": either(st.just("messages")), "value": either(value)})
    entry = st.fixed_dictionaries({"changes": some(change)})
    return st.fixed_dictionaries({"entry": some(entry)})


bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    _whatsapp_bodies(noise=False).map(lambda v: json.dumps(v).encode()),
    _whatsapp_bodies(noise=True).map(lambda v: json.dumps(v).encode()),
)
header_names = st.sampled_from(
    [
        "X-Shopify-Topic",
        "x-shopify-webhook-id",
        "X-Shopify-Shop-Domain",
        "X-Shopify-Triggered-At",
        "x-shopify-event-id",
        "Shopify-Topic",
    ]
)
header_values = st.one_of(
    st.sampled_from(["orders/create", "customers/create", "inventory_levels/update", "d1"]),
    st.text(max_size=12),
)
signatures = st.none() | st.text(max_size=40)
secret_lists = st.lists(st.text(max_size=8), max_size=3)
form_names = st.sampled_from(
    ["MessageSid", "SmsSid", "From", "To", "Body", "NumMedia", "MessageStatus", "MediaUrl0"]
) | st.text(max_size=6)
form_params = st.dictionaries(
    form_names, st.text(max_size=8) | st.lists(st.text(max_size=8), max_size=2), max_size=6
)
urls = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda host, port, query: f"https://{host}{port}/hook{query}",
        st.text(max_size=10),
        st.sampled_from(["", ":443", ":80", ":", ":99999", ":x"]),
        st.sampled_from(["", "?a=1", "?bodySHA256=00", "?bodySHA256="]),
    ),
)


def _only_webhook_errors(call: Callable[[], object]) -> None:
    refused: WebhookError | None = None
    try:
        call()
    except WebhookError as error:
        refused = error
    if refused is not None:
        assert refused.status in (400, 401, 403)
        assert refused.code in {"MALFORMED_PAYLOAD", "SIGNATURE_INVALID", "FORBIDDEN"}


@settings(FAST, max_examples=80)
@given(body=bodies)
def test_parse_whatsapp_any_body(body: bytes) -> None:
    """Any bytes, any JSON, any near-miss of the webhook's shape: events or a WebhookError,
    and every event serialises."""

    def call() -> None:
        for event in parse_whatsapp(body):
            json.dumps(event.to_json())

    _only_webhook_errors(call)


@FAST
@given(body=bodies, headers=st.dictionaries(header_names | st.text(max_size=8), header_values))
def test_parse_shopify_any_body_and_headers(body: bytes, headers: dict[str, str]) -> None:
    """Any body with any headers: an event or a WebhookError."""

    def call() -> None:
        for event in parse_shopify(body, headers):
            json.dumps(event.to_json())

    _only_webhook_errors(call)


@FAST
@given(params=form_params)
def test_parse_twilio_any_params(params: dict[str, Any]) -> None:
    """Any form parameters: an event or a WebhookError."""

    def call() -> None:
        for event in parse_twilio(params):
            json.dumps(event.to_json())

    _only_webhook_errors(call)


@FAST
@given(
    body=st.binary(max_size=64) | st.none(),
    url=urls,
    params=form_params,
    signature=signatures,
    secrets=secret_lists,
)
def test_verify_any_input(
    body: bytes | None, url: str, params: dict[str, Any], signature: str | None, secrets: list[str]
) -> None:
    """Every verifier, fed anything, succeeds or raises a WebhookError."""
    raw = body or b""
    _only_webhook_errors(lambda: verify_whatsapp(raw, signature, secrets))
    _only_webhook_errors(lambda: verify_shopify(raw, signature, secrets))
    _only_webhook_errors(lambda: verify_twilio(url, params, signature, secrets, body=body))


@FAST
@given(
    mode=st.none() | st.sampled_from(["subscribe"]) | st.text(max_size=6),
    token=st.none() | st.text(max_size=6),
    challenge=st.none() | st.text(max_size=6),
    tokens=secret_lists,
)
def test_handshake_any_input(
    mode: str | None, token: str | None, challenge: str | None, tokens: list[str]
) -> None:
    """The handshake, fed anything, returns the challenge or raises a WebhookError."""
    _only_webhook_errors(lambda: whatsapp_handshake(mode, token, challenge, tokens))
