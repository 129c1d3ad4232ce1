"""Inbound webhooks: verify a provider's signature, then parse the body into events.

Three providers deliver to the service, each signing its deliveries its own way:

* **WhatsApp Cloud** -- ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``
  (:func:`verify_whatsapp`), plus the ``GET`` subscription handshake
  (:func:`whatsapp_handshake`); :func:`parse_whatsapp` reads the ``messages``, ``statuses``
  and ``errors`` of every ``entry[].changes[].value``.
* **Twilio** -- ``X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + each parameter name
  sorted, followed by its sorted values))`` (:func:`verify_twilio`). Twilio signs sometimes
  with the default port in the URL and sometimes without, so both forms are tried. A JSON
  delivery instead carries ``bodySHA256=<hex SHA-256 of the body>`` in its URL: the signature
  covers the URL alone and the body must hash to that value. :func:`parse_twilio` reads an
  inbound message or a status callback from the form parameters.
* **Shopify** -- ``X-Shopify-Hmac-Sha256: base64(HMAC-SHA256(client secret, raw body))``
  (:func:`verify_shopify`); :func:`parse_shopify` reads the topic, delivery id and shop from the
  headers and keeps only ids and amounts from the body (no e-mail addresses or phone numbers).

The providers that only report on what was sent -- SendGrid, Resend, Cal.com, HubSpot -- are
verified and parsed in :mod:`antifragile.inbound._status_webhooks`; every status, whoever sent
it, is a :class:`~antifragile.inbound.DeliveryStatus` carried by a ``status`` event.

Every function takes several secrets at once, so a secret can be rotated without dropping
deliveries, and compares with :func:`hmac.compare_digest`. Whatever the input, the only
exceptions raised are :class:`WebhookError` subclasses, each with a stable ``code`` and the HTTP
``status`` to answer with::

    WebhookError (AntifragileError)        code               status
    ├── SignatureError                     SIGNATURE_INVALID  401  missing or wrong signature
    │                                      FORBIDDEN          403  wrong handshake verify token
    └── MalformedPayloadError              MALFORMED_PAYLOAD  400  not the JSON/fields expected

An event carrying text no store can hold -- a NUL character, or an unpaired surrogate from a
lone ``\\ud800`` JSON escape -- is refused as malformed too, rather than failing when recorded.
Messages never contain a secret, a signature or a phone number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

from antifragile.errors import AntifragileError, ErrorCode
from antifragile.inbound._delivery import DeliveryStatus
from antifragile.inbound._model import Channel, EventKind, InboundEvent

#: Form parameters: each name with one value or several.
FormParams = Mapping[str, str | Sequence[str]]

_DEFAULT_PORTS = {"https": 443, "http": 80}


# -- errors -------------------------------------------------------------------------------------


class WebhookError(AntifragileError):
    """A webhook delivery was refused; ``status`` is the HTTP status to answer with."""

    default_code: ClassVar[ErrorCode] = ErrorCode.MALFORMED_PAYLOAD
    default_status: ClassVar[int] = 400

    status: int

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message, code=code, retryable=False)
        self.status = self.default_status if status is None else status


class SignatureError(WebhookError):
    """The signature is missing or matches none of the configured secrets (401); a handshake
    with the wrong verify token is refused with code ``FORBIDDEN`` (403)."""

    default_code = ErrorCode.SIGNATURE_INVALID
    default_status = 401


class MalformedPayloadError(WebhookError):
    """The body or its parameters are not what the provider sends (400)."""

    default_code = ErrorCode.MALFORMED_PAYLOAD
    default_status = 400


# -- signing maths ------------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    # a lone surrogate (from a lenient decoder) must not raise: it can only fail to match
    return text.encode("utf-8", "surrogatepass")


def whatsapp_signature(app_secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256`` for *body*: ``sha256=`` and the lowercase hex HMAC-SHA256."""
    digest = hmac.new(_utf8(app_secret), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _values(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _twilio_message(url: str, params: FormParams | None, *, dedupe: bool = True) -> str:
    parts = [url]
    for name in sorted((params or {}).keys()):
        values = _values((params or {})[name])
        for item in sorted(set(values) if dedupe else values):
            parts.append(name + item)
    return "".join(parts)


#: the HMAC digests Twilio signs webhooks with: SHA-1, and SHA-256 alongside it
TWILIO_ALGORITHMS = ("sha1", "sha256")


def _twilio_digest(auth_token: str, message: str, algorithm: str = "sha1") -> str:
    digest = hmac.new(_utf8(auth_token), _utf8(message), algorithm).digest()
    return base64.b64encode(digest).decode()


def twilio_signature(
    auth_token: str, url: str, params: FormParams | None = None, *, algorithm: str = "sha1"
) -> str:
    """``X-Twilio-Signature`` for a request to *url* (as requested, query included) with the
    form *params*: base64 HMAC (SHA-1, or SHA-256 with ``algorithm="sha256"``) over the URL
    followed by every parameter's name and value, names sorted, a name's values sorted and
    de-duplicated. A JSON delivery is signed over its URL alone (which carries
    ``bodySHA256``): pass no *params*."""
    if algorithm not in TWILIO_ALGORITHMS:
        raise ValueError(f"algorithm is one of {TWILIO_ALGORITHMS}")
    return _twilio_digest(auth_token, _twilio_message(url, params), algorithm)


def shopify_signature(secret: str, body: bytes) -> str:
    """``X-Shopify-Hmac-Sha256`` for *body*: the base64 HMAC-SHA256."""
    digest = hmac.new(_utf8(secret), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def twilio_body_hash(body: bytes) -> str:
    """The ``bodySHA256`` query value of a JSON delivery: the hex SHA-256 of *body*."""
    return hashlib.sha256(body).hexdigest()


# -- verification -------------------------------------------------------------------------------


def _usable(secrets: Sequence[str], what: str) -> list[str]:
    if isinstance(secrets, str):  # a lone string is a Sequence[str] of its characters
        secrets = [secrets]
    usable = [s for s in secrets if isinstance(s, str) and s]
    if not usable:
        raise SignatureError(f"no {what} is configured to verify this delivery")
    return usable


def _presented(signature: str | None, header: str) -> str:
    if signature is None or not signature.strip():
        raise SignatureError(f"the {header} header is missing")
    presented = signature.strip()
    if not presented.isascii():
        raise SignatureError(f"the {header} header does not match")
    return presented


def _equal(expected: str, presented: str) -> bool:
    return hmac.compare_digest(expected.encode("ascii"), presented.encode("ascii"))


def verify_whatsapp(body: bytes, signature: str | None, app_secrets: Sequence[str]) -> None:
    """Check ``X-Hub-Signature-256`` (*signature*) against *body* with each of *app_secrets*;
    raise :class:`SignatureError` unless one matches."""
    header = "X-Hub-Signature-256"
    presented = _presented(signature, header)
    secrets = _usable(app_secrets, "WhatsApp app secret")
    prefix, _, digest = presented.partition("=")
    if prefix.lower() != "sha256" or not digest:
        raise SignatureError(f"the {header} header is not of the form sha256=<hex>")
    presented = f"sha256={digest.lower()}"
    matched = False
    for secret in secrets:
        matched |= _equal(whatsapp_signature(secret, body), presented)
    if not matched:
        raise SignatureError(f"the {header} header does not match the body")


def verify_shopify(body: bytes, signature: str | None, secrets: Sequence[str]) -> None:
    """Check ``X-Shopify-Hmac-Sha256`` (*signature*) against *body* with each of *secrets*;
    raise :class:`SignatureError` unless one matches."""
    header = "X-Shopify-Hmac-Sha256"
    presented = _presented(signature, header)
    usable = _usable(secrets, "Shopify webhook secret")
    matched = False
    for secret in usable:
        matched |= _equal(shopify_signature(secret, body), presented)
    if not matched:
        raise SignatureError(f"the {header} header does not match the body")


def _url_variants(url: str) -> list[str]:
    """*url* as given, without its port, and with the scheme's default port when it has none
    (Twilio's signatures are inconsistent about the port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MalformedPayloadError("the request URL is not a valid URL") from exc
    variants = [url]
    if parts.netloc:
        host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc.rstrip(":")
        if host != parts.netloc:
            variants.append(urlunsplit(parts._replace(netloc=host)))
        default = _DEFAULT_PORTS.get(parts.scheme.lower())
        if port is None and default is not None:
            variants.append(urlunsplit(parts._replace(netloc=f"{host}:{default}")))
    return list(dict.fromkeys(variants))


def _has_duplicates(params: FormParams) -> bool:
    return any(len(set(vs)) != len(vs) for vs in (_values(v) for v in params.values()))


def verify_twilio(
    url: str,
    params: FormParams,
    signature: str | None,
    auth_tokens: Sequence[str],
    *,
    body: bytes | None = None,
) -> None:
    """Check ``X-Twilio-Signature`` (*signature*) for a request to *url* (the full URL Twilio
    requested, query included) with the form *params*, with each of *auth_tokens*.

    The signature is base64 HMAC-SHA1 or, alongside it, HMAC-SHA256 over the same text (told
    apart by its length). The URL is tried as given, without its port and with the default
    port (``:443``/``:80``).
    When the URL carries ``bodySHA256`` (a JSON delivery), the signature covers the URL alone
    and the SHA-256 hex of *body* must equal that value. Raise :class:`SignatureError` unless
    everything matches.
    """
    header = "X-Twilio-Signature"
    presented = _presented(signature, header)
    tokens = _usable(auth_tokens, "Twilio auth token")
    variants = _url_variants(url)
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    body_ok = True
    if "bodySHA256" in query:
        expected_hash = query["bodySHA256"][0].strip().lower()
        if body is None or not expected_hash.isascii():
            body_ok = False
        else:
            body_ok = _equal(twilio_body_hash(body), expected_hash)
        messages = [_twilio_message(v, None) for v in variants]
    else:
        messages = [_twilio_message(v, params) for v in variants]
        if _has_duplicates(params):  # some signers keep repeated values: accept both forms
            messages += [_twilio_message(v, params, dedupe=False) for v in variants]
    # the digest's length tells the algorithm: 28 base64 characters for SHA-1, 44 for SHA-256
    algorithm = "sha256" if len(presented) > 28 else "sha1"
    matched = False
    for token in tokens:
        for message in messages:
            matched |= _equal(_twilio_digest(token, message, algorithm), presented)
    if not matched:
        raise SignatureError(f"the {header} header does not match the request")
    if not body_ok:
        raise SignatureError("the body does not match the bodySHA256 of the signed URL")


def whatsapp_handshake(
    mode: str | None, token: str | None, challenge: str | None, verify_tokens: Sequence[str]
) -> str:
    """Answer the WhatsApp subscription ``GET`` (``hub.mode``, ``hub.verify_token``,
    ``hub.challenge``): the challenge to echo back when the mode is ``subscribe`` and the token
    is one of *verify_tokens*; :class:`MalformedPayloadError` (400) when a parameter is missing,
    :class:`SignatureError` with code ``FORBIDDEN`` (403) otherwise."""
    if not mode or not token or not challenge:
        given = (("hub.mode", mode), ("hub.verify_token", token), ("hub.challenge", challenge))
        missing = ", ".join(name for name, value in given if not value)
        raise MalformedPayloadError(f"the handshake lacks {missing}")
    if mode != "subscribe":
        raise SignatureError(
            "the handshake mode is not 'subscribe'", code=ErrorCode.FORBIDDEN, status=403
        )
    if isinstance(verify_tokens, str):
        verify_tokens = [verify_tokens]
    presented = _utf8(token)
    matched = False
    for expected in verify_tokens:
        if isinstance(expected, str) and expected:
            matched |= hmac.compare_digest(_utf8(expected), presented)
    if not matched:
        raise SignatureError(
            "the handshake verify token is not the configured one",
            code=ErrorCode.FORBIDDEN,
            status=403,
        )
    return challenge


# -- parsing helpers ----------------------------------------------------------------------------


def _load_json(body: bytes, what: str) -> Any:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise MalformedPayloadError(f"the {what} body is not bytes")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPayloadError(f"the {what} body is not UTF-8") from exc
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedPayloadError(f"the {what} body is not valid JSON") from exc


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise MalformedPayloadError(f"{where} is not a JSON object")
    return value


def _list(value: Any, where: str, *, required: bool = False) -> list[Any]:
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise MalformedPayloadError(f"{where} is not a list")
    return value


def _id(value: Any, where: str) -> str:
    """A required identifier: a non-empty string, or an integer (Shopify ids)."""
    if isinstance(value, bool):
        raise MalformedPayloadError(f"{where} is not an id")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise MalformedPayloadError(f"{where} is missing or not an id")


def _optional_id(value: Any, where: str) -> str | None:
    return None if value is None else _id(value, where)


def _optional_str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise MalformedPayloadError(f"{where} is not a string")


def _epoch(value: Any, where: str) -> float | None:
    """A Unix timestamp given as a string of seconds (WhatsApp) or a number."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            return float(int(value.strip()))
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    except (ValueError, OverflowError) as exc:
        raise MalformedPayloadError(f"{where} is not a Unix timestamp") from exc
    raise MalformedPayloadError(f"{where} is not a Unix timestamp")


def _digits(address: str) -> str:
    """A phone number as digits only: no ``whatsapp:`` prefix, no ``+``, no spaces."""
    bare = address.strip()
    if bare.lower().startswith("whatsapp:"):
        bare = bare[len("whatsapp:") :]
    return bare.strip().lstrip("+").replace(" ", "")


def _e164(address: str) -> str:
    """A number as ``+E.164`` (the ``whatsapp:`` prefix stripped, the ``+`` kept)."""
    bare = address.strip()
    if bare.lower().startswith("whatsapp:"):
        bare = bare[len("whatsapp:") :]
    return bare.strip().replace(" ", "")


def _storable(value: Any, where: str) -> None:
    """Refuse text no store can hold: a NUL character (PostgreSQL text and jsonb refuse it) or
    an unpaired surrogate (a lone ``\\ud800`` escape in JSON: not encodable as UTF-8)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise MalformedPayloadError(f"{where} holds a NUL character")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise MalformedPayloadError(f"{where} holds an unpaired surrogate") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _storable(key, where)
            _storable(item, where)
    elif isinstance(value, list | tuple):
        for item in value:
            _storable(item, where)


def _checked(events: list[InboundEvent]) -> list[InboundEvent]:
    """*events*, once every text they carry is known to be storable (see :func:`_storable`)."""
    for event in events:
        for name in ("event_id", "tenant_key", "sender", "text", "topic", "data"):
            _storable(getattr(event, name), f"the event's {name}")
    return events


# -- WhatsApp -----------------------------------------------------------------------------------


def _whatsapp_text(kind: str, message: Mapping[str, Any], where: str) -> str | None:
    """The text a message carries: a text's body, a media caption, a button's label."""
    if kind == "text":
        text = _object(message.get("text"), f"{where}.text")
        body = text.get("body")
        if not isinstance(body, str):
            raise MalformedPayloadError(f"{where}.text.body is not a string")
        return body
    content = message.get(kind)
    if not isinstance(content, dict):
        return None
    if kind == "button":
        label = content.get("text")
        return label if isinstance(label, str) else None
    if kind == "interactive":
        for reply in ("button_reply", "list_reply"):
            chosen = content.get(reply)
            if isinstance(chosen, dict) and isinstance(chosen.get("title"), str):
                title: str = chosen["title"]
                return title
        return None
    caption = content.get("caption")
    return caption if isinstance(caption, str) else None


def _whatsapp_reply_id(kind: str, content: Any) -> str | None:
    """The machine-readable id of a tapped button or picked row: an interactive reply's
    ``id``, a template quick-reply button's ``payload``."""
    if not isinstance(content, dict):
        return None
    if kind == "button":
        payload = content.get("payload")
        return payload if isinstance(payload, str) and payload else None
    if kind == "interactive":
        for reply in ("button_reply", "list_reply"):
            chosen = content.get(reply)
            if isinstance(chosen, dict) and isinstance(chosen.get("id"), str) and chosen["id"]:
                value: str = chosen["id"]
                return value
    return None


def _whatsapp_message(
    message: Any, where: str, tenant_key: str, names: Mapping[str, str]
) -> InboundEvent:
    message = _object(message, where)
    event_id = _id(message.get("id"), f"{where}.id")
    sender = _digits(_id(message.get("from"), f"{where}.from"))
    kind = message.get("type", "unknown")
    if not isinstance(kind, str) or not kind:
        raise MalformedPayloadError(f"{where}.type is not a string")
    data: dict[str, Any] = {}
    name = names.get(sender)
    if name is not None:
        data["profile_name"] = name
    content = message.get(kind)
    if isinstance(content, dict):
        if isinstance(content.get("id"), str):
            data["media_id"] = content["id"]
        for key in ("mime_type", "sha256", "filename"):
            if isinstance(content.get(key), str):
                data[key] = content[key]
    reply_id = _whatsapp_reply_id(kind, content)
    if reply_id is not None:
        data["reply_id"] = reply_id
    context = message.get("context")
    if isinstance(context, dict) and isinstance(context.get("id"), str):
        data["reply_to"] = context["id"]
    errors = _errors(message.get("errors"), f"{where}.errors")
    if errors:
        data["errors"] = errors
    return InboundEvent(
        channel=Channel.WHATSAPP,
        event_id=event_id,
        kind=EventKind.MESSAGE,
        tenant_key=tenant_key,
        sender=sender,
        text=_whatsapp_text(kind, message, where),
        topic=kind,
        occurred_at=_epoch(message.get("timestamp"), f"{where}.timestamp"),
        data=data,
    )


def _errors(value: Any, where: str) -> list[dict[str, Any]]:
    """Provider error objects, reduced to their code, title, message and details."""
    errors: list[dict[str, Any]] = []
    for item in _list(value, where):
        if not isinstance(item, dict):
            raise MalformedPayloadError(f"{where} holds something other than objects")
        error: dict[str, Any] = {}
        code = item.get("code")
        if isinstance(code, int | str) and not isinstance(code, bool):
            error["code"] = code
        for key in ("title", "message"):
            if isinstance(item.get(key), str):
                error[key] = item[key]
        details = item.get("error_data")
        if isinstance(details, dict) and isinstance(details.get("details"), str):
            error["details"] = details["details"]
        errors.append(error)
    return errors


#: WhatsApp's statuses, normalised (see antifragile.inbound DeliveryStatus)
_WHATSAPP_STATUSES = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}


def _error_code(errors: list[dict[str, Any]]) -> str | None:
    code = errors[0].get("code") if errors else None
    return None if code is None else str(code)


def _whatsapp_status(status: Any, where: str, tenant_key: str) -> InboundEvent:
    status = _object(status, where)
    message_id = _id(status.get("id"), f"{where}.id")
    state = _id(status.get("status"), f"{where}.status")
    recipient = _optional_id(status.get("recipient_id"), f"{where}.recipient_id")
    errors = _errors(status.get("errors"), f"{where}.errors")
    correlation = _optional_str(
        status.get("biz_opaque_callback_data"), f"{where}.biz_opaque_callback_data"
    )
    details: dict[str, Any] = {
        "recipient_id": None if recipient is None else _digits(recipient),
        "errors": errors,
    }
    pricing = status.get("pricing")
    if isinstance(pricing, dict):
        details["pricing"] = {
            k: pricing[k]
            for k in ("billable", "pricing_model", "category", "type")
            if isinstance(pricing.get(k), str | bool)
        }
    conversation = status.get("conversation")
    if isinstance(conversation, dict):
        origin = conversation.get("origin")
        if isinstance(origin, dict) and isinstance(origin.get("type"), str):
            details["conversation_origin"] = origin["type"]
    return DeliveryStatus(
        provider=Channel.WHATSAPP.value,
        event_id=f"{message_id}:{state}",
        status=_WHATSAPP_STATUSES.get(state.lower(), "other"),
        provider_status=state,
        provider_message_id=message_id,
        correlation=correlation or None,
        error_code=_error_code(errors),
        occurred_at=_epoch(status.get("timestamp"), f"{where}.timestamp"),
        details=details,
    ).event(Channel.WHATSAPP, tenant_key)


def _whatsapp_value_errors(
    errors: list[dict[str, Any]], where: str, tenant_key: str, body: bytes
) -> list[InboundEvent]:
    """``value.errors``: errors of the account or the webhook, about no one message -- each a
    ``failed`` status without a message id, so that it is recorded and counted. Its id is
    derived from the body (a redelivery of the same body is a duplicate)."""
    if not errors:  # the common case: no hash of the body to take
        return []
    digest = hashlib.sha256(body).hexdigest()[:24]
    return [
        DeliveryStatus(
            provider=Channel.WHATSAPP.value,
            event_id=f"error:{digest}:{where}[{i}]",
            status="failed",
            provider_status="error",
            error_code=None if error.get("code") is None else str(error["code"]),
            details={"errors": [error]},
        ).event(Channel.WHATSAPP, tenant_key)
        for i, error in enumerate(errors)
    ]


def _profile_names(contacts: Any, where: str) -> dict[str, str]:
    names: dict[str, str] = {}
    for i, contact in enumerate(_list(contacts, where)):
        contact = _object(contact, f"{where}[{i}]")
        wa_id = contact.get("wa_id")
        profile = contact.get("profile")
        if isinstance(wa_id, str) and isinstance(profile, dict):
            name = profile.get("name")
            if isinstance(name, str):
                names[_digits(wa_id)] = name
    return names


def parse_whatsapp(body: bytes) -> list[InboundEvent]:
    """The events of a WhatsApp Cloud API webhook *body*: one per message (``text`` and every
    other type, its type as ``topic``), one per status update (a ``status`` event: its
    ``biz_opaque_callback_data`` as correlation, the first error's code, the pricing) and one
    per ``value.errors`` entry (a ``failed`` status about no message), in order.

    Changes other than ``messages`` and unknown fields are ignored; a body without messages or
    statuses gives no events. Raise :class:`MalformedPayloadError` when the body is not the
    webhook's JSON shape or an event lacks its ids.
    """
    payload = _object(_load_json(body, "WhatsApp"), "the WhatsApp body")
    events: list[InboundEvent] = []
    for e, entry in enumerate(_list(payload.get("entry"), "entry", required=True)):
        entry = _object(entry, f"entry[{e}]")
        for c, change in enumerate(_list(entry.get("changes"), f"entry[{e}].changes")):
            where = f"entry[{e}].changes[{c}]"
            change = _object(change, where)
            field = change.get("field")
            if field is not None and field != "messages":
                continue  # account, template and other notifications are not events here
            value = _object(change.get("value"), f"{where}.value")
            messages = _list(value.get("messages"), f"{where}.value.messages")
            statuses = _list(value.get("statuses"), f"{where}.value.statuses")
            errors = _errors(value.get("errors"), f"{where}.value.errors")
            if not messages and not statuses and not errors:
                continue
            if messages or statuses or value.get("metadata") is not None:
                metadata = _object(value.get("metadata"), f"{where}.value.metadata")
                tenant_key = _id(
                    metadata.get("phone_number_id"), f"{where}.value.metadata.phone_number_id"
                )
            else:  # an account-level error: the business account's id
                tenant_key = _id(entry.get("id"), f"entry[{e}].id")
            names = _profile_names(value.get("contacts"), f"{where}.value.contacts")
            for m, message in enumerate(messages):
                where_m = f"{where}.value.messages[{m}]"
                events.append(_whatsapp_message(message, where_m, tenant_key, names))
            for s, status in enumerate(statuses):
                where_s = f"{where}.value.statuses[{s}]"
                events.append(_whatsapp_status(status, where_s, tenant_key))
            events.extend(_whatsapp_value_errors(errors, f"{where}.value.errors", tenant_key, body))
    return _checked(events)


# -- Twilio -------------------------------------------------------------------------------------


def _param(params: FormParams, name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        values = list(value)
    except TypeError as exc:
        raise MalformedPayloadError(f"the {name} parameter is not a string") from exc
    if not values:
        return None
    if not isinstance(values[0], str):
        raise MalformedPayloadError(f"the {name} parameter is not a string")
    return values[0]


def _required_param(params: FormParams, *names: str) -> str:
    for name in names:
        value = _param(params, name)
        if value is not None and value.strip():
            return value.strip()
    raise MalformedPayloadError(f"the {' or '.join(names)} parameter is missing")


def _media_topic(content_type: str | None) -> str:
    major = (content_type or "").partition("/")[0].lower()
    return major if major in {"image", "audio", "video"} else "document"


#: Twilio's message statuses, normalised (see antifragile.inbound DeliveryStatus)
_TWILIO_STATUSES = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "partially_delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}


def parse_twilio(params: FormParams, *, correlation: str | None = None) -> list[InboundEvent]:
    """The event of a Twilio messaging webhook, from its form *params*: an inbound message
    (``MessageSid``/``SmsSid``, ``From``, ``To``, ``Body``, ``NumMedia``...) or, when
    ``MessageStatus`` is present and ``Body`` is not, a status callback for a message sent
    (*correlation*: the ``ref`` query parameter of the ``StatusCallback`` URL the
    send gave, which Twilio calls back).

    Numbers lose their ``whatsapp:`` prefix: the sender becomes digits only, the tenant key
    (the business's number) stays ``+E.164``. Raise :class:`MalformedPayloadError` when a
    required parameter is missing or malformed.
    """
    if not isinstance(params, Mapping):
        raise MalformedPayloadError("the Twilio parameters are not a mapping")
    sid = _required_param(params, "MessageSid", "SmsSid", "SmsMessageSid")
    from_ = _required_param(params, "From")
    to = _required_param(params, "To")
    data: dict[str, Any] = {}
    account = _param(params, "AccountSid")
    if account:
        data["account_sid"] = account
    status = _param(params, "MessageStatus")
    body = _param(params, "Body")
    if status is not None and body is None:
        state = status.strip()
        if not state:
            raise MalformedPayloadError("the MessageStatus parameter is empty")
        errors: list[dict[str, Any]] = []
        code = _param(params, "ErrorCode")
        if code:
            error: dict[str, Any] = {"code": code}
            message = _param(params, "ErrorMessage")
            if message:
                error["message"] = message
            errors.append(error)
        data.update({"recipient_id": _digits(to), "errors": errors})
        return _checked(
            [
                DeliveryStatus(
                    provider=Channel.TWILIO.value,
                    event_id=f"{sid}:{state}",
                    status=_TWILIO_STATUSES.get(state.lower(), "other"),
                    provider_status=state,
                    provider_message_id=sid,
                    correlation=correlation or None,
                    error_code=code or None,
                    details=data,
                ).event(Channel.TWILIO, _e164(from_))  # about a message the business sent
            ]
        )
    raw_count = (_param(params, "NumMedia") or "0").strip()
    if not raw_count.isascii() or not raw_count.isdigit() or len(raw_count) > 3:
        raise MalformedPayloadError("the NumMedia parameter is not a small whole number")
    num_media = int(raw_count)
    media = []
    for i in range(num_media):
        url = _param(params, f"MediaUrl{i}")
        if url:
            media.append({"url": url, "content_type": _param(params, f"MediaContentType{i}")})
    data["num_media"] = num_media
    if media:
        data["media"] = media
    profile_name = _param(params, "ProfileName")
    if profile_name:
        data["profile_name"] = profile_name
    if num_media:
        topic = _media_topic(_param(params, "MediaContentType0"))
    elif _param(params, "Latitude") is not None:
        topic = "location"
    else:
        topic = "text"
    return _checked(
        [
            InboundEvent(
                channel=Channel.TWILIO,
                event_id=sid,
                kind=EventKind.MESSAGE,
                tenant_key=_e164(to),
                sender=_digits(from_),
                text=body if body else None,
                topic=topic,
                data=data,
            )
        ]
    )


# -- Shopify ------------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A Shopify header, by its ``X-Shopify-`` name or the newer unprefixed one."""
    for key in (name, name.removeprefix("x-")):
        value = headers.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _amount(value: Any, where: str) -> str | None:
    """A money amount, kept as the provider's decimal string."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise MalformedPayloadError(f"{where} is not an amount")


def _triggered_at(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
        return None  # an unreadable time is kept as text in data, not a reason to refuse


def _shopify_data(topic: str, resource: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Ids and amounts of the resource, per topic -- never e-mail addresses or phone numbers."""
    if topic.startswith("orders/"):
        order_id = _id(resource.get("id"), "the order's id")
        yield "resource_id", order_id
        yield "order_id", order_id
        yield "order_name", _optional_str(resource.get("name"), "the order's name")
        yield "total", _amount(resource.get("total_price"), "the order's total_price")
        yield "currency", _optional_str(resource.get("currency"), "the order's currency")
        customer = resource.get("customer")
        customer_id = None
        if customer is not None:
            customer_id = _optional_id(
                _object(customer, "the order's customer").get("id"), "the order's customer id"
            )
        yield "customer_id", customer_id
    elif topic.startswith("customers/"):
        customer_id = _id(resource.get("id"), "the customer's id")
        yield "resource_id", customer_id
        yield "customer_id", customer_id
    elif topic.startswith("inventory_levels/"):
        yield (
            "inventory_item_id",
            _id(resource.get("inventory_item_id"), "the inventory level's inventory_item_id"),
        )
        yield "location_id", _id(resource.get("location_id"), "the inventory level's location_id")
        available = resource.get("available")
        if available is not None and (
            isinstance(available, bool) or not isinstance(available, int)
        ):
            raise MalformedPayloadError("the inventory level's available is not a whole number")
        yield "available", available
    else:
        resource_id = resource.get("id")
        if resource_id is not None:
            yield "resource_id", _id(resource_id, "the resource's id")


def parse_shopify(body: bytes, headers: Mapping[str, str]) -> list[InboundEvent]:
    """The event of a Shopify webhook: its topic (``X-Shopify-Topic``), delivery id
    (``X-Shopify-Webhook-Id``, the event id) and shop (``X-Shopify-Shop-Domain``, the tenant key)
    from *headers*; ``X-Shopify-Event-Id``, ``X-Shopify-Triggered-At`` and the resource's ids and
    amounts (order id, name, total, customer id; customer id; inventory item, location and
    available quantity) in ``data``. Personal details in the body are not copied.

    Raise :class:`MalformedPayloadError` when a header is missing, the body is not a JSON
    object, or a topic's ids are missing or malformed.
    """
    try:
        lowered = {str(k).lower(): v for k, v in headers.items()}
    except (AttributeError, TypeError) as exc:
        raise MalformedPayloadError("the Shopify headers are not a mapping") from exc
    topic = _header(lowered, "x-shopify-topic")
    webhook_id = _header(lowered, "x-shopify-webhook-id")
    shop = _header(lowered, "x-shopify-shop-domain")
    if topic is None or webhook_id is None or shop is None:
        given = (
            ("X-Shopify-Topic", topic),
            ("X-Shopify-Webhook-Id", webhook_id),
            ("X-Shopify-Shop-Domain", shop),
        )
        missing = ", ".join(name for name, value in given if value is None)
        raise MalformedPayloadError(f"the Shopify delivery lacks {missing}")
    resource = _object(_load_json(body, "Shopify"), "the Shopify body")
    triggered_at = _header(lowered, "x-shopify-triggered-at")
    data: dict[str, Any] = {
        "shopify_event_id": _header(lowered, "x-shopify-event-id"),
        "triggered_at": triggered_at,
        "api_version": _header(lowered, "x-shopify-api-version"),
    }
    data.update(_shopify_data(topic, resource))
    return _checked(
        [
            InboundEvent(
                channel=Channel.SHOPIFY,
                event_id=webhook_id,
                kind=EventKind.COMMERCE,
                tenant_key=shop.lower(),
                topic=topic,
                occurred_at=_triggered_at(triggered_at),
                data=data,
            )
        ]
    )
