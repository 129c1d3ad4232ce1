"""A WhatsApp Cloud API simulator: ``POST /{version}/{phone_number_id}/messages``.

* **Auth** -- ``Authorization: Bearer <access token>``. No bearer token is 401 with Graph code
  ``190``; a token outside ``access_tokens`` (when given) is 401 code ``190`` too.
* **Validation** -- a body that is not a JSON object, ``messaging_product`` other than
  ``"whatsapp"``, a missing ``to``, an unknown ``type``, a text without ``body`` or one longer
  than 4096 characters, a template without ``name``/``language.code``, or an ``interactive``
  message (reply buttons, list) over Cloud API's limits (see
  :mod:`antifragile.sandbox._whatsapp_payloads`) is 400 with Graph code ``100`` (invalid
  parameter). An unknown ``phone_number_id`` (when ``phone_number_ids`` is
  given) is 400 code ``100`` too.
* **Success** -- 200 ``{"messaging_product": "whatsapp", "contacts": [{"input", "wa_id"}],
  "messages": [{"id": "wamid...."}]}``; the message is recorded as an effect.
* **Errors** -- Graph's ``{"error": {"message", "type", "code", "error_subcode"?,
  "error_data": {"messaging_product", "details"}, "fbtrace_id"}}``.
* **Throttling** -- Cloud API refuses with error *codes*, not HTTP 429: ``130429`` (throughput,
  ``throughput`` messages per second per phone number), ``131056`` (pair rate: more than one
  message to the same recipient within ``pair_interval`` seconds) and ``80007`` (account
  level); a fault with a ``code`` (``{"kind": "error", "status": 400, "code": 80007}`` in a
  fault file) plays any Graph code. The HTTP status of these answers is ``throttle_status``
  (400 by default: integrators report 400, Meta's table was not confirmed). There is no
  ``Retry-After`` and no idempotency key: a repeated request sends the message again.
* **Media and receipts** -- ``image``, ``document``, ``audio``, ``video`` and ``sticker``
  messages by ``link`` (http/https) or ``id`` (one stored with :meth:`add_media`), a caption
  at most 1024 characters (image, document, video), a ``filename`` only on a document; a
  mark-as-read body (``{"status": "read", "message_id", "typing_indicator"?: {"type":
  "text"}}``) answers ``{"success": true}`` and is kept in ``read_receipts``. The media
  endpoint ``GET /{version}/{media_id}`` answers ``{"url", "mime_type", "sha256",
  "file_size", "id"}`` (``file_size`` a string, as Cloud API sends it), the URL serving the
  bytes to the same bearer token for ``media_url_ttl`` seconds (300, Cloud API's 5 minutes;
  then 404 code ``100``). Faults on ``GET /_media/{media_id}`` script the download.
* **Window and templates** -- with ``window`` (seconds; ``24 * 3600`` as Cloud API), a
  free-form message (anything but a template) to a contact who has not written within it
  (:meth:`WhatsAppSimulator.customer_wrote`) is 400 code ``131047``; with ``templates``
  (``{name: {language: body parameter count}}``) a template send is checked: an unknown
  name or language is 404 code ``132001``, another number of body parameters 400 ``132000``,
  a template in ``paused_templates`` 400 ``132015``.
* **Status webhooks** -- once a message is accepted, and when the sandbox has a callback URL
  for ``whatsapp``: ``statuses[]`` webhooks ``sent``, ``delivered`` and (with ``read``)
  ``read``, or a ``failed`` status with ``errors[{code: 131026, ...}]`` when the webhook faults
  make it undeliverable; each echoes the message's ``biz_opaque_callback_data`` and is signed
  ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app_secret, body)>``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

from antifragile.inbound import whatsapp_signature
from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator
from antifragile.sandbox._status import RETRY_DELAYS, Notice
from antifragile.sandbox._whatsapp_payloads import (
    interactive_problem,
    media_problem,
    template_problem,
)

#: the error of an undeliverable message in a ``failed`` status
UNDELIVERABLE = 131026

#: a free-form message outside the customer-service window
REENGAGEMENT = 131047

#: the longest text body Cloud API accepts
MAX_TEXT = 4096

#: Graph error codes that mean "slow down" rather than "this request is wrong"
THROTTLE_THROUGHPUT = 130429
THROTTLE_PAIR = 131056
THROTTLE_ACCOUNT = 80007

_THROTTLE_TEXT: dict[int, tuple[str, str]] = {
    THROTTLE_THROUGHPUT: (
        "(#130429) Rate limit hit",
        "Cloud API message throughput has been reached.",
    ),
    THROTTLE_PAIR: (
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    ),
    THROTTLE_ACCOUNT: (
        "(#80007) Rate limit issues",
        "The WhatsApp Business Account has reached its rate limit.",
    ),
}

_MEDIA = frozenset({"image", "document", "audio", "video", "sticker"})
_TYPES = frozenset({"text", "template", "interactive"}) | _MEDIA


def _trace() -> str:
    return secrets.token_urlsafe(16)


def _wamid() -> str:
    return "wamid." + secrets.token_urlsafe(36)


class WhatsAppSimulator(Simulator):
    """Cloud API's send-message endpoint with its auth, validation and throttling codes."""

    name = "whatsapp"
    sends_webhooks = True

    def __init__(
        self,
        *,
        app_secret: str = "sandbox-app-secret",
        read: bool = True,
        waba_id: str = "102290129340398",
        display_phone_number: str = "15550783881",
        access_tokens: Iterable[str] | None = None,
        phone_number_ids: Iterable[str] | None = None,
        throughput: int = 80,
        pair_interval: float = 0.0,
        throttle_status: int = 400,
        window: float | None = None,
        templates: Mapping[str, Mapping[str, int]] | None = None,
        paused_templates: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
        media_url_ttl: float = 300.0,
    ) -> None:
        self.access_tokens = None if access_tokens is None else frozenset(access_tokens)
        self.phone_number_ids = None if phone_number_ids is None else frozenset(phone_number_ids)
        self.throughput = throughput
        self.pair_interval = pair_interval
        self.throttle_status = throttle_status
        self.app_secret = app_secret
        self.read = read
        self.waba_id = waba_id
        self.display_phone_number = display_phone_number
        self._clock = clock
        self._lock = threading.Lock()
        self._window: float | None = None
        self._used = 0
        self._last_to: dict[tuple[str, str], float] = {}
        self.window = window
        self.templates = None if templates is None else {k: dict(v) for k, v in templates.items()}
        self.paused_templates = frozenset(paused_templates)
        self._inbound: dict[str, float] = {}
        self._media: dict[str, tuple[bytes, str]] = {}
        self.media_url_ttl = media_url_ttl
        #: download URLs handed out: nonce -> (media id, when it stops working)
        self._media_urls: dict[str, tuple[str, float]] = {}
        #: ``(message_id, typing)`` of each mark-as-read request, in order
        self.read_receipts: list[tuple[str, bool]] = []
        super().__init__()

    def routes(self) -> Iterable[Route]:
        return [
            Route("POST", "/{version}/{phone_number_id}/messages", self.send_message),
            Route("POST", "/_sandbox/customers/{wa_id}", self._customer_route),
            Route("GET", "/_media/{media_id}", self._media_download),
            Route("GET", "/{version}/{media_id}", self._media_info),
        ]

    def add_media(self, content: bytes, mime_type: str = "image/jpeg") -> str:
        """Store a medium (as a contact's upload would be) and return its media id, for an
        inbound webhook (:func:`~antifragile.sandbox.whatsapp_media_message`)."""
        media_id = str(secrets.randbelow(10**15) + 10**15)
        with self._lock:
            self._media[media_id] = (content, mime_type)
        return media_id

    def _media_info(self, call: Call) -> Reply:
        media_id = call.params["media_id"]
        with self._lock:
            found = self._media.get(media_id)
        if found is None:
            return self.graph_error(
                400,
                100,
                f"Unsupported get request. Object with ID '{media_id}' does not exist.",
                type="GraphMethodException",
                subcode=33,
            )
        content, mime = found
        host = call.headers.get("host", "127.0.0.1")
        nonce = secrets.token_urlsafe(12)
        with self._lock:
            self._media_urls[nonce] = (media_id, self._clock() + self.media_url_ttl)
        return Reply(
            200,
            {
                "messaging_product": "whatsapp",
                "url": f"http://{host}/{self.name}/_media/{media_id}?mid={nonce}",
                "mime_type": mime,
                "sha256": hashlib.sha256(content).hexdigest(),
                "file_size": str(len(content)),
                "id": media_id,
            },
        )

    def _media_download(self, call: Call) -> Reply:
        media_id = call.params["media_id"]
        nonce = parse_qs(call.request.query).get("mid", [""])[-1]
        with self._lock:
            issued = self._media_urls.get(nonce)
            live = issued is not None and issued[0] == media_id and self._clock() < issued[1]
            found = self._media.get(media_id) if live else None
        if found is None:
            return self.graph_error(404, 100, "Media not found.")
        content, mime = found
        return Reply(200, body=content, headers={"content-type": mime})

    def _mark_read(self, body: dict[str, Any]) -> Reply:
        message_id = body.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            return self._invalid("The parameter message_id is required.")
        typing = body.get("typing_indicator")
        if typing is not None and typing != {"type": "text"}:
            return self._invalid("typing_indicator must be {'type': 'text'}.")
        with self._lock:
            self.read_receipts.append((message_id, typing is not None))
        return Reply(200, {"success": True})

    def customer_wrote(self, wa_id: str, *, ago: float = 0.0) -> None:
        """Record that *wa_id* last wrote *ago* seconds ago: it opens (or, 24 hours old,
        closes) the customer-service window free-form messages need when ``window`` is set.
        Over HTTP: ``POST /whatsapp/_sandbox/customers/{wa_id}`` with ``{"ago": seconds}``."""
        with self._lock:
            self._inbound[wa_id.lstrip("+")] = self._clock() - ago

    def _customer_route(self, call: Call) -> Reply:
        try:
            body = call.json() if call.request.body else {}
            ago = float(body.get("ago", 0.0)) if isinstance(body, dict) else None
        except (TypeError, ValueError):
            ago = None
        if ago is None:
            return self._invalid('The body is {"ago": <seconds>}.')
        self.customer_wrote(call.params["wa_id"], ago=ago)
        return Reply(200, {"success": True})

    def _window_closed(self, to: str) -> bool:
        if self.window is None:
            return False
        with self._lock:
            last = self._inbound.get(to)
        return last is None or self._clock() - last >= self.window

    def reset(self) -> None:
        with self._lock:
            self._window, self._used = None, 0
            self._last_to.clear()

    # -- the provider's answers -----------------------------------------------------------------

    def graph_error(
        self,
        status: int,
        code: int,
        message: str,
        *,
        details: str | None = None,
        type: str = "OAuthException",
        subcode: int | None = None,
    ) -> Reply:
        """A Graph API error body with *code* (and WhatsApp's ``error_data``)."""
        error: dict[str, Any] = {"message": message, "type": type, "code": code}
        if subcode is not None:
            error["error_subcode"] = subcode
        error["error_data"] = {"messaging_product": "whatsapp", "details": details or message}
        error["fbtrace_id"] = _trace()
        return Reply(status, {"error": error})

    def throttled(self, code: int = THROTTLE_THROUGHPUT) -> Reply:
        """The refusal for throttling *code* (130429, 131056 or 80007)."""
        message, details = _THROTTLE_TEXT.get(
            code, (f"(#{code}) Rate limit hit", "Rate limit hit.")
        )
        return self.graph_error(self.throttle_status, code, message, details=details)

    def coded_error(self, status: int, code: int) -> Reply:
        """A Graph error with *code* (a fault's ``code``: ``80007``, ``131056``, ``131047``...):
        a throttling code under ``throttle_status`` when the fault says 429."""
        if code in _THROTTLE_TEXT:
            message, details = _THROTTLE_TEXT[code]
            answer = self.throttle_status if status == 429 else status
            return self.graph_error(answer, code, message, details=details)
        return self.graph_error(status, code, f"(#{code}) Error {code}")

    def error(self, status: int, message: str | None = None) -> Reply:
        if status == 401:
            return self.graph_error(401, 190, message or "Invalid OAuth access token.")
        if status == 429:
            return self.throttled()
        if status >= 500:
            return self.graph_error(
                status, 2, message or "Service temporarily unavailable", type="OAuthException"
            )
        return self.graph_error(
            status, 100, message or "Invalid parameter", details=message or "Invalid parameter"
        )

    def rate_limited(self, retry_after: float) -> Reply:
        # Cloud API sends no Retry-After: a throughput refusal, whatever the wait
        return self.throttled(THROTTLE_THROUGHPUT)

    def throttle(self, request: IncomingRequest) -> Reply | None:
        now = self._clock()
        with self._lock:
            if self._window is None or now - self._window >= 1.0:
                self._window, self._used = now, 0
            if self._used >= self.throughput:
                return self.throttled(THROTTLE_THROUGHPUT)
            self._used += 1
        return None

    def authenticate(self, request: IncomingRequest) -> Reply | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return self.graph_error(
                401, 190, "An access token is required to request this resource."
            )
        if self.access_tokens is not None and token not in self.access_tokens:
            return self.graph_error(
                401, 190, "Invalid OAuth access token - Cannot parse access token"
            )
        return None

    # -- POST /{version}/{phone_number_id}/messages ---------------------------------------------

    def _invalid(self, details: str) -> Reply:
        return self.graph_error(400, 100, "(#100) Invalid parameter", details=details)

    def _validate(self, body: Any) -> Reply | None:
        if not isinstance(body, dict):
            return self._invalid("The request body must be a JSON object.")
        if body.get("messaging_product") != "whatsapp":
            return self._invalid("The parameter messaging_product is required.")
        to = body.get("to")
        if not isinstance(to, str) or not to.lstrip("+").isdigit():
            return self._invalid("The parameter to is required.")
        kind = body.get("type", "text")
        if kind not in _TYPES:
            return self._invalid(f"Unsupported message type {kind!r}.")
        if kind == "text":
            text = body.get("text")
            content = text.get("body") if isinstance(text, dict) else None
            if not isinstance(content, str) or not content:
                return self._invalid("The parameter text['body'] is required.")
            if len(content) > MAX_TEXT:
                return self._invalid(
                    f"Param text['body'] must be at most {MAX_TEXT} characters long."
                )
        elif kind == "interactive":
            problem = interactive_problem(body.get("interactive"))
            if problem is not None:
                return self._invalid(problem)
        elif kind in _MEDIA:
            problem = media_problem(kind, body.get(kind), self._media)
            if problem is not None:
                return self._invalid(problem)
        else:
            template = body.get("template")
            language = template.get("language") if isinstance(template, dict) else None
            if (
                not isinstance(template, dict)
                or not isinstance(template.get("name"), str)
                or not isinstance(language, dict)
                or not isinstance(language.get("code"), str)
            ):
                return self._invalid("The parameter template['name'] and language are required.")
        return None

    def _policy(self, body: dict[str, Any], to: str) -> Reply | None:
        """A template send checked against ``templates``; a free-form one against the
        customer-service ``window`` (``131047``)."""
        if body.get("type") == "template":
            if self.templates is None:
                return None
            problem = template_problem(body["template"], self.templates, self.paused_templates)
            if problem is None:
                return None
            (code, status, message), details = problem
            return self.graph_error(status, code, message, details=details)
        if self._window_closed(to):
            return self.graph_error(
                400,
                REENGAGEMENT,
                "(#131047) Re-engagement message",
                details="Message failed to send because more than 24 hours have passed since "
                "the customer last replied to this number.",
            )
        return None

    def send_message(self, call: Call) -> Reply:
        phone = call.params["phone_number_id"]
        if self.phone_number_ids is not None and phone not in self.phone_number_ids:
            return self.graph_error(
                400,
                100,
                f"Unsupported post request. Object with ID '{phone}' does not exist.",
                type="GraphMethodException",
                subcode=33,
            )
        try:
            body = call.json()
        except ValueError:
            return self._invalid("The request body is not valid JSON.")
        if isinstance(body, dict) and body.get("status") == "read":
            return self._mark_read(body)
        invalid = self._validate(body)
        if invalid is not None:
            return invalid
        to = str(body["to"]).lstrip("+")
        refused = self._policy(body, to)
        if refused is not None:
            return refused
        now = self._clock()
        with self._lock:
            if self.pair_interval > 0:
                last = self._last_to.get((phone, to))
                if last is not None and now - last < self.pair_interval:
                    return self.throttled(THROTTLE_PAIR)
                self._last_to[(phone, to)] = now
            message_id = _wamid()
            call.commit(message_id, body)
        correlation = body.get("biz_opaque_callback_data")
        self._report(phone, to, message_id, correlation if isinstance(correlation, str) else None)
        return Reply(
            200,
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body["to"], "wa_id": to}],
                "messages": [{"id": message_id}],
            },
        )

    # -- status webhooks ------------------------------------------------------------------------

    def _report(self, phone: str, to: str, message_id: str, correlation: str | None) -> None:
        hooks = self.webhooks
        if hooks is None:
            return
        url = hooks.url(self.name)
        fault = hooks.decide(self.name)
        failed = fault is not None and fault.kind == "undeliverable"
        code = ((fault.code if fault is not None else None) or UNDELIVERABLE) if failed else None
        statuses = ["failed"] if failed else ["sent", "delivered", *(["read"] if self.read else [])]
        notices: list[Notice] = []
        if url:
            start = int(time.time())
            for i, status in enumerate(statuses):
                body = self.status_body(phone, to, message_id, status, start + i, correlation, code)
                notices.append(
                    Notice(
                        self.name,
                        status,
                        message_id,
                        correlation,
                        url,
                        body,
                        "application/json",
                        self._sign,
                        RETRY_DELAYS[self.name],
                    )
                )
        hooks.emit(
            self.name,
            message_id,
            correlation,
            notices,
            statuses=statuses,
            fault=fault,
            error_code=code,
        )

    def _sign(self, body: bytes) -> dict[str, str]:
        return {"x-hub-signature-256": whatsapp_signature(self.app_secret, body)}

    def status_body(
        self,
        phone: str,
        to: str,
        message_id: str,
        status: str,
        timestamp: int,
        correlation: str | None,
        code: int | None = None,
    ) -> bytes:
        """The ``statuses`` webhook of *message_id* (Cloud API's shape), as sent."""
        entry: dict[str, Any] = {
            "id": message_id,
            "status": status,
            "timestamp": str(timestamp),
            "recipient_id": to,
        }
        if correlation is not None:
            entry["biz_opaque_callback_data"] = correlation
        if status == "failed":
            entry["errors"] = [
                {
                    "code": code or UNDELIVERABLE,
                    "title": "Message undeliverable",
                    "message": "Message undeliverable",
                    "error_data": {"details": "Message failed to send."},
                }
            ]
        else:
            entry["pricing"] = {
                "billable": True,
                "pricing_model": "PMP",
                "type": "free_customer_service",
                "category": "service",
            }
        payload = {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": self.waba_id,
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": self.display_phone_number,
                                    "phone_number_id": phone,
                                },
                                "statuses": [entry],
                            },
                        }
                    ],
                }
            ],
        }
        return json.dumps(payload, separators=(",", ":")).encode()
