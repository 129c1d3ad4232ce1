"""The sandbox's webhook sender against tiny verifying receivers, over real HTTP.

Each receiver recomputes the provider's signature from what it received and compares it with
``hmac.compare_digest``, as an application must; a forged or re-keyed delivery is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from urllib.parse import parse_qsl

import pytest

from antifragile.sandbox import (
    Fault,
    FlakyServer,
    IncomingRequest,
    WebhookSender,
    twilio_inbound_message,
    twilio_signature,
    whatsapp_status,
    whatsapp_text_message,
)

APP_SECRET = "meta-app-secret"
AUTH_TOKEN = "twilio-auth-token"
SHOPIFY_SECRET = "shopify-client-secret"


class Receiver:
    """A verifying endpoint: 200 for a genuine delivery (each seen id counted once), 403 for a
    bad signature."""

    def __init__(self, verify: Callable[[IncomingRequest, str], tuple[bool, list[str]]]) -> None:
        self.verify = verify
        self.server = FlakyServer(handler=self.handle)
        self.seen: list[str] = []
        self.refused = 0
        self._lock = threading.Lock()

    def handle(self, request: IncomingRequest) -> Fault:
        url = self.server.url + request.path + (f"?{request.query}" if request.query else "")
        ok, ids = self.verify(request, url)
        with self._lock:
            if not ok:
                self.refused += 1
                return Fault.status(403, json={"error": "bad signature"})
            for delivery_id in ids:
                if delivery_id not in self.seen:
                    self.seen.append(delivery_id)
        return Fault.ok(200, body=b"")


def verify_whatsapp(request: IncomingRequest, url: str) -> tuple[bool, list[str]]:
    header = request.headers.get("x-hub-signature-256", "")
    expected = "sha256=" + hmac.new(APP_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(header, expected):
        return False, []
    value = json.loads(request.body)["entry"][0]["changes"][0]["value"]
    ids = [m["id"] for m in value.get("messages", [])]
    ids += [f"{s['id']}:{s['status']}" for s in value.get("statuses", [])]
    return True, ids


def verify_twilio(request: IncomingRequest, url: str) -> tuple[bool, list[str]]:
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(request.body.decode(), keep_blank_values=True):
        params.setdefault(name, []).append(value)
    data = url
    for name in sorted(params):
        for value in sorted(set(params[name])):
            data += name + value
    digest = hmac.new(AUTH_TOKEN.encode(), data.encode(), hashlib.sha1).digest()
    expected = base64.b64encode(digest).decode()
    if not hmac.compare_digest(request.headers.get("x-twilio-signature", ""), expected):
        return False, []
    return True, params.get("MessageSid", [])


def verify_shopify(request: IncomingRequest, url: str) -> tuple[bool, list[str]]:
    digest = hmac.new(SHOPIFY_SECRET.encode(), request.body, hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode()
    if not hmac.compare_digest(request.headers.get("x-shopify-hmac-sha256", ""), expected):
        return False, []
    return True, [request.headers["x-shopify-webhook-id"]]


@pytest.fixture
def sender() -> Iterator[WebhookSender]:
    with WebhookSender() as running:
        yield running


def receiver(verify: Callable[[IncomingRequest, str], tuple[bool, list[str]]]) -> Receiver:
    return Receiver(verify)


def test_whatsapp_text_message_is_signed_with_x_hub_signature_256(sender: WebhookSender) -> None:
    """A WhatsApp inbound-text delivery carries ``sha256=<hex HMAC-SHA256(app secret, raw
    body)>``: the receiver verifies it, a redelivery is deduplicated on the message id, and a
    delivery signed with another secret is refused."""
    endpoint = receiver(verify_whatsapp)
    with endpoint.server:
        url = endpoint.server.url + "/webhooks/whatsapp"
        payload = whatsapp_text_message(from_="16505551234", body="Another color?")
        delivery = sender.send_whatsapp(url, payload, app_secret=APP_SECRET)
        assert delivery.status == 200
        assert sender.redeliver(delivery).status == 200
        forged = sender.send_whatsapp(url, payload, app_secret="not-the-secret")
        assert forged.status == 403
    message = payload["entry"][0]["changes"][0]["value"]["messages"][0]
    assert endpoint.seen == [message["id"]]
    assert endpoint.refused == 1
    assert delivery.headers["x-hub-signature-256"].startswith("sha256=")
    assert message["timestamp"].isdigit()
    assert payload["object"] == "whatsapp_business_account"


def test_whatsapp_status_payloads_verify_and_carry_the_status(sender: WebhookSender) -> None:
    """Status deliveries (``sent``, ``delivered``, ``read``, ``failed`` with errors) are signed
    and shaped as ``value.statuses[]``; each (id, status) is one distinct event."""
    endpoint = receiver(verify_whatsapp)
    wamid = "wamid.test-1"
    with endpoint.server:
        url = endpoint.server.url + "/webhooks/whatsapp"
        for status in ("sent", "delivered", "read"):
            payload = whatsapp_status(message_id=wamid, recipient_id="16505551234", status=status)
            assert sender.send_whatsapp(url, payload, app_secret=APP_SECRET).status == 200
        failed = whatsapp_status(
            message_id="wamid.test-2",
            recipient_id="16505551234",
            status="failed",
            errors=[{"code": 131026, "title": "Message undeliverable"}],
        )
        assert sender.send_whatsapp(url, failed, app_secret=APP_SECRET).status == 200
    assert endpoint.seen == [
        f"{wamid}:sent",
        f"{wamid}:delivered",
        f"{wamid}:read",
        "wamid.test-2:failed",
    ]
    entry = failed["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert entry["errors"][0]["code"] == 131026


def test_twilio_signature_matches_the_published_validator_example() -> None:
    """The signature of Twilio's documented example request (auth token ``12345``, URL
    ``https://mycompany.com/myapp.php?foo=1&bar=2`` and five form parameters), and of the same
    URL with a repeated parameter, equal the values in Twilio's SDK validator tests."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Digits": "1234",
        "From": "+14158675309",
        "To": "+18005551212",
        "Caller": "+14158675309",
    }
    assert twilio_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = {"Sid": "CA123", "SidAccount": "AC123", "Digits": ["5678", "1234"]}
    assert twilio_signature("12345", url, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_twilio_inbound_message_is_signed_over_url_and_sorted_params(
    sender: WebhookSender,
) -> None:
    """A Twilio inbound message (SMS and WhatsApp) is form-encoded and its X-Twilio-Signature
    verifies over the full URL (query included) and the sorted parameters; a wrong token is
    refused; a redelivery is deduplicated on MessageSid."""
    endpoint = receiver(verify_twilio)
    with endpoint.server:
        url = endpoint.server.url + "/webhooks/twilio?tenant=1&b=2"
        sms = twilio_inbound_message(from_="+15557654321", to="+15551234567", body="STOP & go")
        delivery = sender.send_twilio(url, sms, auth_token=AUTH_TOKEN)
        assert delivery.status == 200
        assert delivery.headers["content-type"] == "application/x-www-form-urlencoded"
        assert sender.redeliver(delivery).status == 200
        whatsapp = twilio_inbound_message(
            from_="whatsapp:+15557654321", to="whatsapp:+15551234567", body="hola"
        )
        assert whatsapp["WaId"] == "15557654321"
        assert sender.send_twilio(url, whatsapp, auth_token=AUTH_TOKEN).status == 200
        assert sender.send_twilio(url, sms, auth_token="wrong").status == 403
    assert endpoint.seen == [sms["MessageSid"], whatsapp["MessageSid"]]
    assert endpoint.refused == 1


def test_shopify_webhook_is_signed_with_base64_hmac_and_topic_headers(
    sender: WebhookSender,
) -> None:
    """A Shopify delivery carries X-Shopify-Hmac-Sha256 (base64 HMAC-SHA256 of the raw body),
    X-Shopify-Topic and X-Shopify-Webhook-Id; a redelivery keeps the webhook id and is
    deduplicated on it; another secret is refused."""
    endpoint = receiver(verify_shopify)
    order = {"id": 820982911946154508, "email": "jon@example.com", "total_price": "9.99"}
    with endpoint.server:
        url = endpoint.server.url + "/webhooks/shopify"
        delivery = sender.send_shopify(url, order, secret=SHOPIFY_SECRET, topic="orders/create")
        assert delivery.status == 200
        assert sender.redeliver(delivery).status == 200
        other = sender.send_shopify(url, order, secret=SHOPIFY_SECRET)
        assert other.status == 200
        assert sender.send_shopify(url, order, secret="wrong").status == 403
    assert delivery.headers["x-shopify-topic"] == "orders/create"
    assert endpoint.seen == [
        delivery.headers["x-shopify-webhook-id"],
        other.headers["x-shopify-webhook-id"],
    ]
    assert len(sender.sent("shopify")) == 4
