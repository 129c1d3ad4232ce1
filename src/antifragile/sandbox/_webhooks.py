"""The inbound side: send correctly signed provider webhooks to a URL.

A :class:`WebhookSender` POSTs the deliveries WhatsApp Cloud, Twilio and Shopify make to an
application's endpoint, signed the way each provider signs them, so a receiver's verification,
parsing and deduplication can be tested over real HTTP:

* **WhatsApp Cloud** -- JSON, ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw
  body)>``; :func:`whatsapp_text_message`, :func:`whatsapp_interactive_reply`,
  :func:`whatsapp_media_message` and :func:`whatsapp_status` build the payloads.
* **Twilio** -- form-encoded, ``X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + each
  parameter name sorted, followed by its sorted values))``; :func:`twilio_inbound_message`
  builds the parameters. A JSON delivery (:meth:`WebhookSender.send_twilio_json`) adds
  ``bodySHA256=<hex SHA-256 of the body>`` to the URL and is signed over that URL alone.
* **Shopify** -- JSON, ``X-Shopify-Hmac-Sha256: base64(HMAC-SHA256(client secret, raw body))``
  with ``X-Shopify-Topic``, ``X-Shopify-Webhook-Id`` (the delivery id, to deduplicate on) and
  ``X-Shopify-Shop-Domain``, ``X-Shopify-API-Version``, ``X-Shopify-Triggered-At``,
  ``X-Shopify-Event-Id``.

Each ``send_*`` returns a :class:`Delivery`: what was sent and the receiver's answer. A
delivery can be sent again as is with :meth:`WebhookSender.redeliver` (providers retry, so
receivers must deduplicate).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

import httpx

from antifragile.inbound import shopify_signature as shopify_signature
from antifragile.inbound import twilio_body_hash
from antifragile.inbound import twilio_signature as twilio_signature
from antifragile.inbound import whatsapp_signature as whatsapp_signature

FormParams = Mapping[str, str | Sequence[str]]


# -- signatures ---------------------------------------------------------------------------------

# The signing maths lives in antifragile.inbound, one implementation for the verifier and the
# sender; the sandbox re-exports it under the same names.


def _pairs(params: FormParams) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        values = [value] if isinstance(value, str) else list(value)
        pairs.extend((name, v) for v in values)
    return pairs


def _with_body_hash(url: str, body: bytes) -> str:
    """*url* with the ``bodySHA256`` query parameter of a JSON delivery of *body*."""
    separator = "&" if urlsplit(url).query else ("" if url.endswith("?") else "?")
    return f"{url}{separator}bodySHA256={twilio_body_hash(body)}"


# -- payloads -----------------------------------------------------------------------------------


def _wamid() -> str:
    return "wamid." + secrets.token_urlsafe(36)


DISPLAY_PHONE_NUMBER = "15550783881"


def _whatsapp_envelope(
    value: dict[str, Any],
    *,
    waba_id: str = "102290129340398",
    phone_number_id: str = "106540352242922",
    display_phone_number: str = DISPLAY_PHONE_NUMBER,
) -> dict[str, Any]:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": display_phone_number,
            "phone_number_id": phone_number_id,
        },
        **value,
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"field": "messages", "value": value}]}],
    }


def _whatsapp_inbound(
    from_: str,
    kind: str,
    content: dict[str, Any],
    *,
    context_id: str | None = None,
    name: str = "Test User",
    message_id: str | None = None,
    timestamp: int | None = None,
    **envelope: str,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "from": from_,
        "id": message_id or _wamid(),
        "timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "type": kind,
        kind: content,
    }
    if context_id is not None:
        business = envelope.get("display_phone_number", DISPLAY_PHONE_NUMBER)
        message["context"] = {"from": business, "id": context_id}
    return _whatsapp_envelope(
        {"contacts": [{"profile": {"name": name}, "wa_id": from_}], "messages": [message]},
        **envelope,
    )


def whatsapp_text_message(
    *,
    from_: str,
    body: str,
    name: str = "Test User",
    message_id: str | None = None,
    timestamp: int | None = None,
    waba_id: str = "102290129340398",
    phone_number_id: str = "106540352242922",
    display_phone_number: str = "15550783881",
) -> dict[str, Any]:
    """The ``messages`` webhook of an inbound text from *from_* (a ``wa_id``)."""
    return _whatsapp_inbound(
        from_,
        "text",
        {"body": body},
        name=name,
        message_id=message_id,
        timestamp=timestamp,
        waba_id=waba_id,
        phone_number_id=phone_number_id,
        display_phone_number=display_phone_number,
    )


def whatsapp_interactive_reply(
    *,
    from_: str,
    reply_id: str,
    title: str,
    kind: str = "button_reply",
    context_id: str | None = None,
    description: str | None = None,
    **message: Any,
) -> dict[str, Any]:
    """The ``messages`` webhook of a contact tapping a reply button (*kind*
    ``button_reply``) or picking a list row (``list_reply``, with its *description*) of the
    message *context_id*: ``{"type": "interactive", "interactive": {"type": kind, kind:
    {"id", "title"}}}``. *message* takes ``name``, ``message_id``, ``timestamp``, ``waba_id``,
    ``phone_number_id`` and ``display_phone_number`` as :func:`whatsapp_text_message` does."""
    if kind not in ("button_reply", "list_reply"):
        raise ValueError("kind is button_reply or list_reply")
    chosen: dict[str, Any] = {"id": reply_id, "title": title}
    if description is not None and kind == "list_reply":
        chosen["description"] = description
    content = {"type": kind, kind: chosen}
    return _whatsapp_inbound(from_, "interactive", content, context_id=context_id, **message)


def whatsapp_media_message(
    *,
    from_: str,
    media_id: str,
    kind: str = "image",
    mime_type: str = "image/jpeg",
    sha256: str | None = None,
    caption: str | None = None,
    filename: str | None = None,
    **message: Any,
) -> dict[str, Any]:
    """The ``messages`` webhook of a contact's ``image``, ``document``, ``audio``, ``video``
    or ``sticker`` (*kind*): ``{kind: {"id", "mime_type", "sha256", "caption"?,
    "filename"?}}``; *message* as for :func:`whatsapp_interactive_reply`. Store the bytes with
    :meth:`~antifragile.sandbox.WhatsAppSimulator.add_media` for *media_id*."""
    content: dict[str, Any] = {"id": media_id, "mime_type": mime_type}
    if sha256 is not None:
        content["sha256"] = sha256
    if caption is not None:
        content["caption"] = caption
    if filename is not None:
        content["filename"] = filename
    return _whatsapp_inbound(from_, kind, content, **message)


def whatsapp_status(
    *,
    message_id: str,
    recipient_id: str,
    status: str = "delivered",
    timestamp: int | None = None,
    errors: Sequence[Mapping[str, Any]] = (),
    waba_id: str = "102290129340398",
    phone_number_id: str = "106540352242922",
    display_phone_number: str = "15550783881",
) -> dict[str, Any]:
    """The ``statuses`` webhook for the sent message *message_id* (``sent``, ``delivered``,
    ``read`` or ``failed`` -- with *errors*)."""
    entry: dict[str, Any] = {
        "id": message_id,
        "status": status,
        "timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "recipient_id": recipient_id,
    }
    if status != "failed":
        entry["conversation"] = {
            "id": secrets.token_hex(16),
            "origin": {"type": "service"},
        }
        entry["pricing"] = {"billable": True, "pricing_model": "CBP", "category": "service"}
    if errors:
        entry["errors"] = [dict(e) for e in errors]
    return _whatsapp_envelope(
        {"statuses": [entry]},
        waba_id=waba_id,
        phone_number_id=phone_number_id,
        display_phone_number=display_phone_number,
    )


def twilio_inbound_message(
    *,
    from_: str,
    to: str,
    body: str,
    account_sid: str = "AC" + "0" * 32,
    message_sid: str | None = None,
    profile_name: str | None = None,
) -> dict[str, str]:
    """The form parameters of Twilio's inbound-message webhook (``whatsapp:`` numbers add
    ``ProfileName`` and ``WaId``)."""
    sid = message_sid or "SM" + secrets.token_hex(16)
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "To": to,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "ApiVersion": "2010-04-01",
    }
    if from_.startswith("whatsapp:"):
        params["WaId"] = from_.removeprefix("whatsapp:").lstrip("+")
        params["ProfileName"] = profile_name or "Test User"
    return params


# -- the sender ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook delivery: where, what (the exact bytes and headers) and the answer."""

    provider: str
    url: str
    body: bytes
    headers: Mapping[str, str]
    status: int
    response: bytes = b""
    extra: Mapping[str, Any] = field(default_factory=dict)


class WebhookSender:
    """POSTs signed webhooks (blocking). *client* is an ``httpx.Client`` to use (yours)."""

    def __init__(self, *, timeout: float = 5.0, client: httpx.Client | None = None) -> None:
        self._own = client is None
        self.client = client if client is not None else httpx.Client(timeout=timeout)
        self.deliveries: list[Delivery] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self.client.close()

    def _post(
        self,
        provider: str,
        url: str,
        body: bytes,
        headers: dict[str, str],
        extra: Mapping[str, Any] | None = None,
    ) -> Delivery:
        response = self.client.post(url, content=body, headers=headers)
        delivery = Delivery(
            provider, url, body, headers, response.status_code, response.content, extra or {}
        )
        self.deliveries.append(delivery)
        return delivery

    def redeliver(self, delivery: Delivery) -> Delivery:
        """Send *delivery* again, byte for byte (a provider's retry)."""
        return self._post(
            delivery.provider, delivery.url, delivery.body, dict(delivery.headers), delivery.extra
        )

    def send_whatsapp(self, url: str, payload: Mapping[str, Any], *, app_secret: str) -> Delivery:
        """POST the Cloud API webhook *payload* to *url*, signed with *app_secret*."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "x-hub-signature-256": whatsapp_signature(app_secret, body),
        }
        return self._post("whatsapp", url, body, headers)

    def send_twilio(
        self, url: str, params: FormParams, *, auth_token: str, algorithm: str = "sha1"
    ) -> Delivery:
        """POST the form *params* to *url*, signed with *auth_token* over *url* as given
        (HMAC-SHA1, or HMAC-SHA256 with ``algorithm="sha256"``)."""
        body = urlencode(_pairs(params)).encode()
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": twilio_signature(auth_token, url, params, algorithm=algorithm),
        }
        return self._post("twilio", url, body, headers)

    def send_twilio_json(
        self, url: str, payload: Mapping[str, Any], *, auth_token: str
    ) -> Delivery:
        """POST the JSON *payload* to *url* the way Twilio delivers JSON bodies: the URL gains
        ``bodySHA256=<hex SHA-256 of the body>`` and the signature covers that URL alone."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        signed_url = _with_body_hash(url, body)
        headers = {
            "content-type": "application/json",
            "x-twilio-signature": twilio_signature(auth_token, signed_url),
        }
        return self._post("twilio", signed_url, body, headers)

    def send_shopify(
        self,
        url: str,
        payload: Mapping[str, Any],
        *,
        secret: str,
        topic: str = "orders/create",
        shop_domain: str = "example.myshopify.com",
        api_version: str = "2024-01",
        webhook_id: str | None = None,
        event_id: str | None = None,
    ) -> Delivery:
        """POST the Shopify webhook *payload* for *topic* to *url*, signed with *secret*."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "x-shopify-topic": topic,
            "x-shopify-hmac-sha256": shopify_signature(secret, body),
            "x-shopify-shop-domain": shop_domain,
            "x-shopify-api-version": api_version,
            "x-shopify-webhook-id": webhook_id or str(uuid.uuid4()),
            "x-shopify-event-id": event_id or str(uuid.uuid4()),
            "x-shopify-triggered-at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        return self._post("shopify", url, body, headers)

    def sent(self, provider: str | None = None) -> list[Delivery]:
        return [d for d in self.deliveries if provider is None or d.provider == provider]
