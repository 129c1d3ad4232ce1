"""The provider webhook routes: ``/v1/webhooks/{whatsapp,twilio,shopify}`` and the status
webhooks ``/v1/webhooks/{sendgrid,resend,calcom,calendly,acuity,hubspot,mandrill}``.

Every delivery goes the same way, and nothing is recorded unless all of it succeeds:

1. **size** -- a ``Content-Length`` above ``ANTIFRAGILE_WEBHOOK_MAX_BYTES`` is refused at once
   (``413 PAYLOAD_TOO_LARGE``), and the body is read in chunks, refused as soon as it grows past
   the limit (a body sent without a length is never buffered whole);
2. **content type** -- JSON for all but Twilio, Mandrill and Acuity, a form (or JSON) for
   Twilio, a form for Mandrill and Acuity, else
   ``415 UNSUPPORTED_MEDIA_TYPE``;
3. **signature** -- checked over the raw bytes *before* anything is parsed; a missing, wrong or
   (SendGrid, Resend, Calendly, HubSpot) stale one is ``401 SIGNATURE_INVALID``. Twilio,
   HubSpot and Mandrill sign the URL they called: ``ANTIFRAGILE_PUBLIC_URL`` plus the path and
   query (Mandrill: ``ANTIFRAGILE_MANDRILL_WEBHOOK_URL`` when set), or the URL as received when
   its ``Host`` is one of ``ANTIFRAGILE_ALLOWED_HOSTS``; with neither set they are refused
   (``403 PUBLIC_URL_REQUIRED``) -- the client's ``Host`` never decides it;
4. **parse** into events (``400 MALFORMED_PAYLOAD`` when the body is not what the provider
   sends), then **record** them in the inbox with their processing jobs, in one transaction,
   deduplicated by the provider's event id -- a redelivery is answered 200 as a duplicate.

The answer is the envelope ``{"received": n, "recorded": [inbox ids], "duplicates": [inbox
ids]}`` -- except to Twilio, which expects TwiML: an empty ``<Response/>`` (``text/xml``), so
that it sends no reply of its own. The replies to customers go out through the job queue.

Before all of it, when the app has inbound limits (``app.state.limits``), the client address
takes a token (``429 RATE_LIMITED`` with ``Retry-After`` when it has none left).

This is the hot path of the service: :class:`WebhookFastPath` answers these POSTs in pure
ASGI, ahead of the framework's routing and dependency resolution; headers are read straight
from the scope, and no pydantic model touches the request or the response. The FastAPI routes
of the same paths do the same work through the same :class:`WebhookHandlers` and document it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.datastructures import URL
from starlette.types import ASGIApp, Receive, Scope, Send

from antifragile.errors import AntifragileError, ErrorCode, SuccessEnvelope
from antifragile.inbound._delivery import CORRELATION_QUERY
from antifragile.inbound._model import EventKind, InboundEvent
from antifragile.inbound._scheduling_webhooks import (
    ACUITY_SIGNATURE,
    CALENDLY_SIGNATURE,
    parse_acuity,
    parse_calendly,
    verify_acuity,
    verify_calendly,
)
from antifragile.inbound._status_webhooks import (
    CALCOM_SIGNATURE,
    HUBSPOT_SIGNATURE,
    HUBSPOT_TIMESTAMP,
    MANDRILL_SIGNATURE,
    SENDGRID_SIGNATURE,
    SENDGRID_TIMESTAMP,
    SVIX_ID,
    SVIX_SIGNATURE,
    SVIX_TIMESTAMP,
    parse_calcom,
    parse_hubspot,
    parse_mandrill,
    parse_resend,
    parse_sendgrid,
    verify_calcom,
    verify_hubspot,
    verify_mandrill,
    verify_sendgrid,
    verify_svix,
)
from antifragile.inbound._webhooks import (
    MalformedPayloadError,
    parse_shopify,
    parse_twilio,
    parse_whatsapp,
    verify_shopify,
    verify_twilio,
    verify_whatsapp,
    whatsapp_handshake,
)
from antifragile.observability import current_request_id
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.service._envelope import (
    ApiError,
    api_error_response,
    error_responses,
    ok_plain,
)
from antifragile.service._limits import limit_by_ip
from antifragile.service._settings import Settings
from antifragile.service._state import ServiceState

_log = logging.getLogger("antifragile.service.webhooks")
#: the code counted for an event dated before the inbox TTL
STALE_EVENT = "STALE_EVENT"

#: what Twilio is answered with: TwiML that sends nothing back on its own
EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'

PREFIX = "/v1/webhooks"

_CONTENT_TYPE = b"content-type"
_CONTENT_LENGTH = b"content-length"
_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_WHATSAPP_SIGNATURE = (b"x-hub-signature-256",)
_TWILIO_SIGNATURE = (b"x-twilio-signature",)
_SHOPIFY_SIGNATURE = (b"x-shopify-hmac-sha256", b"shopify-hmac-sha256")
_SENDGRID_SIGNATURE = (SENDGRID_SIGNATURE.lower().encode(),)
_SVIX_SIGNATURE = (SVIX_SIGNATURE.encode(),)
_CALCOM_SIGNATURE = (CALCOM_SIGNATURE.lower().encode(),)
_HUBSPOT_SIGNATURE = (HUBSPOT_SIGNATURE.lower().encode(),)
_MANDRILL_SIGNATURE = (MANDRILL_SIGNATURE.lower().encode(),)
_CALENDLY_SIGNATURE = (CALENDLY_SIGNATURE.lower().encode(),)
_ACUITY_SIGNATURE = (ACUITY_SIGNATURE.lower().encode(),)


class TwimlResponse(Response):
    """Twilio's answer: TwiML (documented as ``text/xml``, not JSON)."""

    media_type = "text/xml"


class WebhookResult(BaseModel):
    received: int
    recorded: list[str]
    duplicates: list[str]
    #: events the provider dated more than ``ANTIFRAGILE_INBOX_TTL`` ago: not recorded (their
    #: dedup record may be gone, so they would be processed again)
    stale: int = 0


WebhookEnvelope = SuccessEnvelope[WebhookResult]


_ERRORS = error_responses(400, 401, 413, 415, 429, 500, 503)
_ACCEPTED: dict[int | str, dict[str, Any]] = {
    200: {"model": WebhookEnvelope, "description": "Verified and recorded (or a duplicate)"},
    **_ERRORS,
}


def _body_doc(media_type: str, header: str, description: str) -> dict[str, Any]:
    return {
        "parameters": [
            {
                "name": header,
                "in": "header",
                "required": True,
                "description": description,
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {media_type: {"schema": {"type": "object", "additionalProperties": True}}},
        },
    }


# -- reading the request ------------------------------------------------------------------------


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, ErrorCode.PAYLOAD_TOO_LARGE, f"the body is larger than the limit of {limit} bytes"
    )


def _scan(
    scope: Mapping[str, Any], signature_names: Sequence[bytes]
) -> tuple[str, int | None, str | None]:
    """The content type (lowercase, no parameters), the content length and the signature
    header (the first of *signature_names* present), in one pass over the raw headers."""
    content_type = ""
    length: bytes | None = None
    signature: bytes | None = None
    for name, value in scope["headers"]:
        if name == _CONTENT_TYPE:
            content_type = value.decode("latin-1").partition(";")[0].strip().lower()
        elif name == _CONTENT_LENGTH:
            length = value
        elif signature is None and name in signature_names:
            signature = value
    size: int | None = None
    if length is not None:
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            raise ApiError(400, ErrorCode.BAD_REQUEST, "the Content-Length header is not valid")
    return content_type, size, None if signature is None else signature.decode("latin-1")


async def read_body(receive: Receive, limit: int, length: int | None) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed *limit* bytes."""
    if length is not None and length > limit:
        raise _too_large(limit)
    message = await receive()
    if message["type"] != "http.request":
        raise ApiError(400, ErrorCode.BAD_REQUEST, "the client disconnected")
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise _too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ApiError(400, ErrorCode.BAD_REQUEST, "the client disconnected")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _unsupported(content_type: str, expected: str) -> ApiError:
    shown = content_type[:100] or "none"
    return ApiError(
        415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"content type {shown!r} is not {expected}"
    )


def signed_url(scope: Scope, public_url: str | None) -> str:
    """The URL a provider called, as it signed it: *public_url* + the path and query when a
    public URL is configured, else the URL as this server received it."""
    if not public_url:
        return str(URL(scope=scope))
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope["path"]
    query = scope.get("query_string", b"")
    url = public_url.rstrip("/") + path
    return f"{url}?{query.decode('latin-1')}" if query else url


def _accepted(events: int, recorded: list[Any]) -> JSONResponse:
    created: list[str] = []
    duplicates: list[str] = []
    for item in recorded:
        (created if item.created else duplicates).append(item.id)
    stale = events - len(recorded)  # one record per event, but for the stale ones
    return ok_plain(
        {"received": events, "recorded": created, "duplicates": duplicates, "stale": stale}
    )


def _form(body: bytes) -> dict[str, list[str]]:
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def _json_params(body: bytes) -> dict[str, list[str]]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # too deep: RecursionError
        raise MalformedPayloadError("the Twilio body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise MalformedPayloadError("the Twilio body is not a JSON object")
    params: dict[str, list[str]] = {}
    try:
        for name, value in data.items():
            items = value if isinstance(value, list) else [value]
            params[str(name)] = ["" if v is None else str(v) for v in items]
    except RecursionError as exc:  # str() of a deeply nested value
        raise MalformedPayloadError("the Twilio body nests values too deeply") from exc
    return params


_SHOPIFY_HEADERS = {
    b"x-shopify-topic": "x-shopify-topic",
    b"x-shopify-webhook-id": "x-shopify-webhook-id",
    b"x-shopify-shop-domain": "x-shopify-shop-domain",
    b"x-shopify-api-version": "x-shopify-api-version",
    b"x-shopify-triggered-at": "x-shopify-triggered-at",
    b"x-shopify-event-id": "x-shopify-event-id",
    # the newer "events" deliveries use the same names without the X- prefix
    b"shopify-topic": "x-shopify-topic",
    b"shopify-webhook-id": "x-shopify-webhook-id",
    b"shopify-shop-domain": "x-shopify-shop-domain",
    b"shopify-api-version": "x-shopify-api-version",
    b"shopify-triggered-at": "x-shopify-triggered-at",
    b"shopify-event-id": "x-shopify-event-id",
}


def _shopify_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = _SHOPIFY_HEADERS.get(name)
        if key is not None and key not in found:
            found[key] = value.decode("utf-8", "replace")
    return found


def _header(scope: Mapping[str, Any], name: str) -> str | None:
    """The first value of the (lower-case) header *name*, or ``None``."""
    wanted = name.lower().encode("latin-1")
    for key, value in scope["headers"]:
        if key == wanted:
            text: str = value.decode("latin-1")
            return text
    return None


def _query_value(scope: Mapping[str, Any], name: str) -> str | None:
    query = scope.get("query_string", b"")
    if not query:
        return None
    values = parse_qs(query.decode("latin-1"), keep_blank_values=False).get(name)
    return values[0] if values else None


# -- the handlers -------------------------------------------------------------------------------

_Handler = Callable[["WebhookHandlers", Scope, Receive], Awaitable[Response]]


def _counted(channel: str) -> Callable[[_Handler], _Handler]:
    """Count the deliveries a handler refuses (by error code) in the metrics."""

    def wrap(handler: _Handler) -> _Handler:
        @functools.wraps(handler)
        async def counted(self: WebhookHandlers, scope: Scope, receive: Receive) -> Response:
            try:
                return await handler(self, scope, receive)
            except (ApiError, AntifragileError) as exc:
                self.rejected(channel, exc)
                raise

        return counted

    return wrap


class WebhookHandlers:
    """The deliveries' handling, on the raw ASGI scope and receive channel: shared by the
    documented FastAPI routes and the fast path (:class:`WebhookFastPath`).

    Secrets are read once, here. When ``app_state.limits`` holds an
    :class:`~antifragile.service.InboundLimits`, each delivery first takes a token from its
    client address's limit (429 ``RATE_LIMITED`` with ``Retry-After`` when none is left).
    """

    def __init__(
        self, state: ServiceState, app_state: Any = None, *, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        settings = state.settings
        self.state = state
        self.app_state = app_state
        #: the time signed timestamps are checked against
        self.clock = clock
        self.limit = settings.webhook_max_bytes
        self.public_url = settings.public_url
        self.inbox_ttl = settings.inbox_ttl
        #: the hosts a URL-signed delivery (Twilio, HubSpot) may name without a public URL
        self.allowed_hosts = frozenset(
            h.lower() for h in getattr(settings, "allowed_hosts", ()) or ()
        )
        self.whatsapp_secrets = Settings.reveal(settings.whatsapp_app_secrets)
        self.verify_tokens = Settings.reveal(settings.whatsapp_verify_tokens)
        self.twilio_tokens = Settings.reveal(settings.twilio_auth_tokens)
        self.shopify_secrets = Settings.reveal(settings.shopify_webhook_secrets)
        self.sendgrid_keys = tuple(settings.sendgrid_webhook_public_keys)
        self.resend_secrets = Settings.reveal(settings.resend_webhook_secrets)
        self.calcom_secrets = Settings.reveal(settings.calcom_webhook_secrets)
        self.hubspot_secrets = Settings.reveal(settings.hubspot_webhook_secrets)
        self.mandrill_keys = Settings.reveal(getattr(settings, "mandrill_webhook_keys", ()))
        self.mandrill_url: str | None = getattr(settings, "mandrill_webhook_url", None)
        self.calendly_keys = Settings.reveal(settings.calendly_webhook_signing_keys)
        self.acuity_keys = Settings.reveal(settings.acuity_webhook_keys)
        #: POST handlers by path, for the fast path
        self.by_path = {
            f"{PREFIX}/whatsapp": self.whatsapp,
            f"{PREFIX}/twilio": self.twilio,
            f"{PREFIX}/shopify": self.shopify,
            f"{PREFIX}/sendgrid": self.sendgrid,
            f"{PREFIX}/resend": self.resend,
            f"{PREFIX}/calcom": self.calcom,
            f"{PREFIX}/calendly": self.calendly,
            f"{PREFIX}/acuity": self.acuity,
            f"{PREFIX}/hubspot": self.hubspot,
            f"{PREFIX}/mandrill": self.mandrill,
        }

    def _signed_url(self, scope: Scope) -> str:
        """The URL a Twilio or HubSpot signature covers: the public URL's when configured;
        else the received one, whose ``Host`` must be one of ``ANTIFRAGILE_ALLOWED_HOSTS``
        (``401 SIGNATURE_INVALID`` otherwise). With neither configured the URL is not known --
        the client's ``Host`` would decide it -- and the delivery is refused
        (``403 PUBLIC_URL_REQUIRED``)."""
        if self.public_url:
            return signed_url(scope, self.public_url)
        if not self.allowed_hosts:
            raise ApiError(
                403,
                ErrorCode.PUBLIC_URL_REQUIRED,
                "the URL this webhook's signature covers is not configured: set "
                "ANTIFRAGILE_PUBLIC_URL (or ANTIFRAGILE_ALLOWED_HOSTS)",
            )
        host = (_header(scope, "host") or "").lower()
        if host not in self.allowed_hosts and host.rsplit(":", 1)[0] not in self.allowed_hosts:
            raise ApiError(
                401,
                ErrorCode.SIGNATURE_INVALID,
                "the request's Host is not one of ANTIFRAGILE_ALLOWED_HOSTS",
            )
        return signed_url(scope, None)

    async def _check_ip(self, scope: Scope) -> None:
        limits = getattr(self.app_state, "limits", None)
        if limits is None:
            return
        client = scope.get("client")
        wait = await limits.check_ip(client[0] if client else "unknown")
        if wait > 0.0:
            raise ApiError(
                429,
                ErrorCode.RATE_LIMITED,
                "too many requests from this address; retry later",
                retryable=True,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    async def _ingest(self, events: list[InboundEvent]) -> list[Any]:
        assistant = self.state.require_assistant()
        events = self._fresh(events, assistant)
        if not events:
            return []
        recorded = list(await assistant.ingest(events, request_id=current_request_id()))
        metrics = getattr(assistant, "metrics", None)
        if metrics is not None:  # counters only: the hot path
            new = sum(1 for item in recorded if item.created)
            metrics.inbound(events[0].channel.value, received=new, duplicates=len(recorded) - new)
        return recorded

    def _fresh(self, events: list[InboundEvent], assistant: Any) -> list[InboundEvent]:
        """*events* without the customer messages dated more than the inbox TTL ago: a replay
        of signed bytes once their dedup record expired would be processed (answered) again.
        Each one left out is counted (``antifragile_inbound_rejected_total{code=
        "STALE_EVENT"}``) and logged. Delivery statuses only ever move a reply forward, and the
        status webhooks that sign a timestamp refuse old ones themselves."""
        clock = getattr(assistant, "clock", self.clock)
        oldest = clock.time() - self.inbox_ttl
        fresh = [
            e
            for e in events
            if e.kind is not EventKind.MESSAGE or e.occurred_at is None or e.occurred_at >= oldest
        ]
        if len(fresh) < len(events):
            stale = len(events) - len(fresh)
            _log.warning(
                "%d %s event(s) dated before the inbox TTL ignored", stale, events[0].channel.value
            )
            metrics = getattr(assistant, "metrics", None)
            if metrics is not None:
                for _ in range(stale):
                    metrics.rejected(events[0].channel.value, STALE_EVENT)
        return fresh

    def rejected(self, channel: str, exc: ApiError | AntifragileError) -> None:
        """Count a refused delivery (``antifragile_inbound_rejected_total``)."""
        metrics = getattr(self.state.assistant, "metrics", None)
        if metrics is not None:
            metrics.rejected(channel, exc.code)

    @_counted("whatsapp")
    async def whatsapp(self, scope: Scope, receive: Receive) -> Response:
        await self._check_ip(scope)
        content_type, length, signature = _scan(scope, _WHATSAPP_SIGNATURE)
        if content_type != _JSON:
            raise _unsupported(content_type, _JSON)
        body = await read_body(receive, self.limit, length)
        verify_whatsapp(body, signature, self.whatsapp_secrets)
        events = parse_whatsapp(body)
        return _accepted(len(events), await self._ingest(events))

    @_counted("twilio")
    async def twilio(self, scope: Scope, receive: Receive) -> Response:
        await self._check_ip(scope)
        content_type, length, signature = _scan(scope, _TWILIO_SIGNATURE)
        if content_type not in (_FORM, _JSON):
            raise _unsupported(content_type, f"{_FORM} or {_JSON}")
        url = self._signed_url(scope)
        body = await read_body(receive, self.limit, length)
        if content_type == _FORM:
            params = _form(body)
            verify_twilio(url, params, signature, self.twilio_tokens)
        else:
            verify_twilio(url, {}, signature, self.twilio_tokens, body=body)
            params = _json_params(body)
        events = parse_twilio(params, correlation=_query_value(scope, CORRELATION_QUERY))
        await self._ingest(events)
        return Response(EMPTY_TWIML, media_type="text/xml")

    @_counted("shopify")
    async def shopify(self, scope: Scope, receive: Receive) -> Response:
        await self._check_ip(scope)
        content_type, length, signature = _scan(scope, _SHOPIFY_SIGNATURE)
        if content_type != _JSON:
            raise _unsupported(content_type, _JSON)
        body = await read_body(receive, self.limit, length)
        verify_shopify(body, signature, self.shopify_secrets)
        events = parse_shopify(body, _shopify_headers(scope))
        return _accepted(len(events), await self._ingest(events))

    async def _json_body(
        self, scope: Scope, receive: Receive, signature_names: Sequence[bytes]
    ) -> tuple[bytes, str | None]:
        await self._check_ip(scope)
        content_type, length, signature = _scan(scope, signature_names)
        if content_type != _JSON:
            raise _unsupported(content_type, _JSON)
        return await read_body(receive, self.limit, length), signature

    @_counted("sendgrid")
    async def sendgrid(self, scope: Scope, receive: Receive) -> Response:
        body, signature = await self._json_body(scope, receive, _SENDGRID_SIGNATURE)
        verify_sendgrid(
            body,
            signature,
            _header(scope, SENDGRID_TIMESTAMP),
            self.sendgrid_keys,
            now=self.clock.time(),
        )
        events = parse_sendgrid(body)
        return _accepted(len(events), await self._ingest(events))

    @_counted("resend")
    async def resend(self, scope: Scope, receive: Receive) -> Response:
        body, signature = await self._json_body(scope, receive, _SVIX_SIGNATURE)
        msg_id = _header(scope, SVIX_ID)
        verify_svix(
            body,
            msg_id,
            _header(scope, SVIX_TIMESTAMP),
            signature,
            self.resend_secrets,
            now=self.clock.time(),
        )
        assert msg_id is not None  # verify_svix refuses a delivery without it
        events = parse_resend(body, msg_id.strip())
        return _accepted(len(events), await self._ingest(events))

    @_counted("calcom")
    async def calcom(self, scope: Scope, receive: Receive) -> Response:
        body, signature = await self._json_body(scope, receive, _CALCOM_SIGNATURE)
        verify_calcom(body, signature, self.calcom_secrets)
        events = parse_calcom(body)
        return _accepted(len(events), await self._ingest(events))

    @_counted("calendly")
    async def calendly(self, scope: Scope, receive: Receive) -> Response:
        body, signature = await self._json_body(scope, receive, _CALENDLY_SIGNATURE)
        verify_calendly(body, signature, self.calendly_keys, now=self.clock.time())
        events = parse_calendly(body)
        return _accepted(len(events), await self._ingest(events))

    @_counted("acuity")
    async def acuity(self, scope: Scope, receive: Receive) -> Response:
        await self._check_ip(scope)
        content_type, length, signature = _scan(scope, _ACUITY_SIGNATURE)
        if content_type != _FORM:
            raise _unsupported(content_type, _FORM)
        body = await read_body(receive, self.limit, length)
        verify_acuity(body, signature, self.acuity_keys)
        events = parse_acuity({k: v[-1] for k, v in _form(body).items() if v})
        return _accepted(len(events), await self._ingest(events))

    @_counted("hubspot")
    async def hubspot(self, scope: Scope, receive: Receive) -> Response:
        body, signature = await self._json_body(scope, receive, _HUBSPOT_SIGNATURE)
        verify_hubspot(
            scope["method"],
            self._signed_url(scope),
            body,
            signature,
            _header(scope, HUBSPOT_TIMESTAMP),
            self.hubspot_secrets,
            now=self.clock.time(),
        )
        events = parse_hubspot(body)
        return _accepted(len(events), await self._ingest(events))

    @_counted("mandrill")
    async def mandrill(self, scope: Scope, receive: Receive) -> Response:
        await self._check_ip(scope)
        content_type, length, signature = _scan(scope, _MANDRILL_SIGNATURE)
        if content_type != _FORM:
            raise _unsupported(content_type, _FORM)
        body = await read_body(receive, self.limit, length)
        params = _form(body)
        url = self.mandrill_url or self._signed_url(scope)
        verify_mandrill(url, params, signature, self.mandrill_keys)
        events = parse_mandrill(params)
        return _accepted(len(events), await self._ingest(events))


class WebhookFastPath:
    """Pure ASGI: answers ``POST /v1/webhooks/<provider>`` straight from the handlers,
    skipping the framework's routing and dependency machinery (the webhook path is the
    service's hot path). Anything else -- and these paths under a ``root_path`` -- goes on
    to the app, whose routes of the same paths do the same work (and document it in OpenAPI).

    Errors answer the same envelopes as the app's exception handlers; an unexpected exception
    propagates to :class:`RequestContextMiddleware` (500 ``INTERNAL``). Router dependencies are
    not applied here: the IP limit is checked by the handlers themselves.
    """

    def __init__(self, app: ASGIApp, handlers: WebhookHandlers) -> None:
        self.app = app
        self.by_path = handlers.by_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.by_path.get(scope["path"])
            if handler is not None:
                try:
                    response = await handler(scope, receive)
                except (ApiError, AntifragileError) as exc:
                    response = api_error_response(exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- the routes ---------------------------------------------------------------------------------


def webhooks_router(handlers: WebhookHandlers) -> APIRouter:
    """The webhook routes (documented in OpenAPI) doing the work of *handlers*."""
    router = APIRouter(prefix=PREFIX, tags=["webhooks"])
    verify_tokens = handlers.verify_tokens

    @router.get(
        "/whatsapp",
        summary="WhatsApp subscription handshake",
        # the verify token can be guessed only as fast as the per-IP limit allows
        dependencies=[Depends(limit_by_ip)],
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {}}, "description": "The hub.challenge, echoed"},
            **error_responses(400, 403, 429, 500),
        },
    )
    async def whatsapp_verify(request: Request) -> Response:
        """Answer Meta's ``hub.mode=subscribe`` check with ``hub.challenge`` when
        ``hub.verify_token`` is one of ``ANTIFRAGILE_WHATSAPP_VERIFY_TOKEN``."""
        query = request.query_params
        challenge = whatsapp_handshake(
            query.get("hub.mode"),
            query.get("hub.verify_token"),
            query.get("hub.challenge"),
            verify_tokens,
        )
        return PlainTextResponse(challenge, headers={"X-Content-Type-Options": "nosniff"})

    @router.post(
        "/whatsapp",
        summary="WhatsApp Cloud API webhook",
        responses=_ACCEPTED,
        openapi_extra=_body_doc(
            _JSON, "X-Hub-Signature-256", "sha256=<hex HMAC-SHA256 of the body, app secret>"
        ),
    )
    async def whatsapp(request: Request) -> Response:
        """Verify ``X-Hub-Signature-256``, then record the messages and statuses."""
        return await handlers.whatsapp(request.scope, request.receive)

    @router.post(
        "/twilio",
        summary="Twilio messaging webhook",
        response_class=TwimlResponse,
        responses={
            200: {"content": {"text/xml": {}}, "description": "Recorded: an empty TwiML answer"},
            **_ERRORS,
        },
        openapi_extra=_body_doc(
            _FORM,
            "X-Twilio-Signature",
            "base64 HMAC-SHA1 of the URL and the sorted parameters, auth token",
        ),
    )
    async def twilio(request: Request) -> Response:
        """Verify ``X-Twilio-Signature`` over the URL Twilio called, then record the message
        or status; answered with an empty TwiML ``<Response/>``."""
        return await handlers.twilio(request.scope, request.receive)

    @router.post(
        "/shopify",
        summary="Shopify webhook",
        responses=_ACCEPTED,
        openapi_extra=_body_doc(
            _JSON, "X-Shopify-Hmac-Sha256", "base64 HMAC-SHA256 of the body, client secret"
        ),
    )
    async def shopify(request: Request) -> Response:
        """Verify ``X-Shopify-Hmac-Sha256``, then record the event (deduplicated on
        ``X-Shopify-Webhook-Id``)."""
        return await handlers.shopify(request.scope, request.receive)

    @router.post(
        "/sendgrid",
        summary="SendGrid Event Webhook (delivery statuses)",
        responses=_ACCEPTED,
        openapi_extra=_body_doc(
            _JSON,
            SENDGRID_SIGNATURE,
            f"base64 ECDSA P-256 signature of {SENDGRID_TIMESTAMP} + the body",
        ),
    )
    async def sendgrid(request: Request) -> Response:
        """Verify the Event Webhook's ECDSA signature (timestamp within 5 minutes), then record
        each event as a delivery status (deduplicated on ``sg_event_id``)."""
        return await handlers.sendgrid(request.scope, request.receive)

    @router.post(
        "/resend",
        summary="Resend webhook (Svix; delivery statuses)",
        responses=_ACCEPTED,
        openapi_extra=_body_doc(
            _JSON, "svix-signature", "v1,<base64 HMAC-SHA256 of svix-id.svix-timestamp.body>"
        ),
    )
    async def resend(request: Request) -> Response:
        """Verify the Svix signature (``svix-id``, ``svix-timestamp`` within 5 minutes), then
        record the ``email.*`` event as a delivery status (deduplicated on ``svix-id``)."""
        return await handlers.resend(request.scope, request.receive)

    @router.post(
        "/calcom",
        summary="Cal.com webhook (booking statuses)",
        responses=_ACCEPTED,
        openapi_extra=_body_doc(
            _JSON, CALCOM_SIGNATURE, "hex HMAC-SHA256 of the body, subscription secret"
        ),
    )
    async def calcom(request: Request) -> Response:
        """Verify ``X-Cal-Signature-256``, then record the booking trigger as a status
        (deduplicated on the booking uid and trigger)."""
        return await handlers.calcom(request.scope, request.receive)

    @router.post(
        "/calendly",
        summary="Calendly webhook (invitee.created / invitee.canceled)",
        responses=_ACCEPTED,
        openapi_extra=_body_doc(
            _JSON,
            CALENDLY_SIGNATURE,
            "t=<unix seconds>,v1=<hex HMAC-SHA256 of t.body, signing key>",
        ),
    )
    async def calendly(request: Request) -> Response:
        """Verify ``Calendly-Webhook-Signature`` (``t`` within 3 minutes), then record the
        invitee event as a booking status (deduplicated on the invitee URI and event)."""
        return await handlers.calendly(request.scope, request.receive)

    @router.post(
        "/acuity",
        summary="Acuity Scheduling webhook (appointment scheduled / canceled)",
        responses=_ACCEPTED,
        openapi_extra=_body_doc(
            _FORM, ACUITY_SIGNATURE, "base64 HMAC-SHA256 of the body, the account's API key"
        ),
    )
    async def acuity(request: Request) -> Response:
        """Verify ``X-Acuity-Signature``, then record the appointment action as a booking
        status (deduplicated on the appointment id and action)."""
        return await handlers.acuity(request.scope, request.receive)

    @router.post(
        "/hubspot",
        summary="HubSpot webhook (v3 signature; object statuses)",
        responses=_ACCEPTED,
        openapi_extra=_body_doc(
            _JSON,
            HUBSPOT_SIGNATURE,
            "base64 HMAC-SHA256 of method + URI + body + timestamp, client secret",
        ),
    )
    async def hubspot(request: Request) -> Response:
        """Verify ``X-HubSpot-Signature-v3`` (timestamp within 5 minutes), then record each
        subscription event (deduplicated on ``eventId``)."""
        return await handlers.hubspot(request.scope, request.receive)

    @router.head(
        "/mandrill",
        summary="Mandrill webhook check",
        response_class=Response,
        responses={
            200: {"description": "The URL answers (Mandrill checks it when added)"},
            **error_responses(500),
        },
    )
    async def mandrill_check() -> Response:
        """Answer the ``HEAD`` request Mandrill sends when the webhook is added."""
        return Response(status_code=200)

    @router.post(
        "/mandrill",
        summary="Mandrill (Mailchimp Transactional) webhook (delivery statuses)",
        responses=_ACCEPTED,
        openapi_extra=_body_doc(
            _FORM,
            MANDRILL_SIGNATURE,
            "base64 HMAC-SHA1 of the webhook URL and the sorted POST fields, webhook key",
        ),
    )
    async def mandrill(request: Request) -> Response:
        """Verify ``X-Mandrill-Signature`` over the webhook's URL and ``mandrill_events``, then
        record each event as a delivery status (deduplicated on message id, event and time)."""
        return await handlers.mandrill(request.scope, request.receive)

    return router
