"""A Twilio Messaging simulator: ``/2010-04-01/Accounts/{AccountSid}/Messages.json``.

* **Auth** -- HTTP Basic ``AccountSid:AuthToken``. No or malformed credentials, or a pair not
  in ``credentials`` (when given), are 401 with Twilio code ``20003``; credentials for another
  account than the path's are 403 code ``20003`` too.
* **Validation** -- the body is ``application/x-www-form-urlencoded``. A missing ``To`` is 400
  code ``21604``; no ``From`` nor ``MessagingServiceSid`` is 400 ``21603``; no ``Body``,
  ``MediaUrl`` nor ``ContentSid`` is 400 ``21602``; a ``To`` that is not ``+E.164`` (or
  ``whatsapp:+E.164``) is 400 ``21211``; a ``Body`` over 1600 characters is 400 ``21617``;
  a WhatsApp ``From`` with an SMS ``To`` (or the reverse) is 400 ``21910``.
* **Create** -- ``POST``: **201** with the Message resource: ``sid`` ``SM...``, ``status``
  ``queued`` (``accepted`` with a Messaging Service), ``direction`` ``outbound-api`` and the
  rest of its fields; the message is recorded as an effect.
* **Message log** -- ``GET`` on the same path lists the account's messages, newest first, in
  Twilio's page shape (``{"messages": [...], "page", "page_size", "start", "end", "uri",
  "first_page_uri", "next_page_uri", "previous_page_uri"}``), filtered by ``To``, ``From`` and
  ``DateSent`` (``YYYY-MM-DD``; ``DateSent<`` on or before, ``DateSent>`` on or after), paged
  by ``PageSize`` (1..1000, 50 by default) and ``Page``. A created message is logged as sent at
  once (``status`` ``sent``, ``date_sent`` its creation time), although the create's own answer
  says ``queued`` -- so a client can look a message up after losing the create's answer.
* **Errors** -- the 2010 API's ``{"code", "message", "more_info", "status"}``.
* **Rate limit** -- at most ``concurrency`` requests per second (a stand-in for Twilio's
  unpublished concurrency limit); a refused request gets 429 code ``20429``, not processed.
  ``Retry-After`` is sent only when ``send_retry_after`` (not documented for this API).
* **Idempotency** -- none: a repeated request sends the message again.
* **Status callbacks** -- once a message is created, to its ``StatusCallback`` (or, without
  one, the sandbox's callback URL for ``twilio``): form POSTs with ``MessageSid``,
  ``MessageStatus`` (``sent``, ``delivered``, and ``read`` on WhatsApp; ``sent`` then
  ``undelivered`` with ``ErrorCode`` ``30003`` when the webhook faults make it undeliverable),
  ``AccountSid``, ``From``, ``To``, ``ApiVersion``, signed ``X-Twilio-Signature`` with the auth
  token the request was made with, over the URL as given (its ``#`` connection overrides
  removed). No callback for the initial ``queued``. Retries follow the URL's connection
  overrides (``#rc=1&rp=ct`` by default: once, on a connection failure only).
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs, urlencode

from antifragile.inbound import twilio_signature
from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator
from antifragile.sandbox._status import Notice, twilio_notice_target

#: the ``ErrorCode`` of an undelivered message (unreachable destination handset)
UNDELIVERED = 30003

#: the longest message body Twilio accepts
MAX_BODY = 1600

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_ACCOUNT = re.compile(r"^AC[0-9a-f]{32}$")

_MESSAGES: dict[int, tuple[int, str]] = {
    400: (21600, "The request is invalid."),
    401: (20003, "Authenticate"),
    403: (20003, "Permission Denied"),
    404: (20404, "The requested resource was not found"),
    405: (20004, "Method not allowed"),
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    503: (20503, "Service Unavailable"),
}


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _address(value: str) -> tuple[str, str] | None:
    """``("sms" | "whatsapp", "+E164")`` for *value*; ``None`` when it is not a number."""
    channel, _, number = value.partition(":") if value.startswith("whatsapp:") else ("", "", value)
    if not _E164.match(number):
        return None
    return ("whatsapp" if channel else "sms", number)


def _signed(token: str, url: str, params: dict[str, str], body: bytes) -> dict[str, str]:
    return {"x-twilio-signature": twilio_signature(token, url, params)}


def _credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep and user and password else None


class TwilioSimulator(Simulator):
    """Twilio's Messages resource (create) with its auth, validation and 20429 refusals."""

    name = "twilio"
    sends_webhooks = True

    def __init__(
        self,
        *,
        credentials: Mapping[str, str] | None = None,
        concurrency: int = 100,
        send_retry_after: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.credentials = None if credentials is None else dict(credentials)
        self.concurrency = concurrency
        self.send_retry_after = send_retry_after
        self._clock = clock
        self._lock = threading.Lock()
        self._window: float | None = None
        self._used = 0
        self._messages: list[tuple[int, float, dict[str, Any]]] = []
        self._order = itertools.count()
        super().__init__()

    def routes(self) -> Iterable[Route]:
        return [
            Route("POST", "/2010-04-01/Accounts/{AccountSid}/Messages.json", self.create_message),
            Route("GET", "/2010-04-01/Accounts/{AccountSid}/Messages.json", self.list_messages),
        ]

    def reset(self) -> None:
        with self._lock:
            self._window, self._used = None, 0
            self._messages.clear()

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message created so far, oldest first (as the message log lists them)."""
        with self._lock:
            return [dict(m) for _, _, m in self._messages]

    # -- the provider's answers -----------------------------------------------------------------

    def error(self, status: int, message: str | None = None, code: int | None = None) -> Reply:
        default_code, default_message = _MESSAGES.get(
            status, (20500, "Internal Server Error") if status >= 500 else (21600, "Bad request")
        )
        code = code or default_code
        return Reply(
            status,
            {
                "code": code,
                "message": message or default_message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
        )

    def rate_limited(self, retry_after: float) -> Reply:
        reply = self.error(429, "Too Many Requests", code=20429)
        if self.send_retry_after:
            reply = reply.with_headers({"retry-after": str(max(1, round(retry_after)))})
        return reply

    def throttle(self, request: IncomingRequest) -> Reply | None:
        now = self._clock()
        with self._lock:
            if self._window is None or now - self._window >= 1.0:
                self._window, self._used = now, 0
            if self._used < self.concurrency:
                self._used += 1
                return None
            wait = self._window + 1.0 - now
        return self.rate_limited(wait)

    def authenticate(self, request: IncomingRequest) -> Reply | None:
        pair = _credentials(request.headers.get("authorization", ""))
        if pair is None:
            return self.error(401)
        if self.credentials is not None and self.credentials.get(pair[0]) != pair[1]:
            return self.error(401)
        return None

    # -- POST /2010-04-01/Accounts/{AccountSid}/Messages.json -----------------------------------

    def _validate(self, form: dict[str, str]) -> Reply | None:
        to = form.get("To")
        if not to:
            return self.error(400, "A 'To' phone number is required.", code=21604)
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return self.error(400, "A 'From' phone number is required.", code=21603)
        if not any(form.get(name) for name in ("Body", "MediaUrl", "ContentSid")):
            return self.error(
                400, "A text message body or media urls must be specified.", code=21602
            )
        target = _address(to)
        if target is None:
            return self.error(400, f"The 'To' number {to} is not a valid phone number.", code=21211)
        sender = form.get("From")
        if sender:
            source = _address(sender)
            if source is None:
                return self.error(
                    400, f"The 'From' number {sender} is not a valid phone number.", code=21212
                )
            if source[0] != target[0]:
                return self.error(400, "'From' and 'To' must be on the same channel.", code=21910)
        if len(form.get("Body", "")) > MAX_BODY:
            return self.error(
                400, f"The message body exceeds the {MAX_BODY} character limit.", code=21617
            )
        return None

    def _account(self, call: Call) -> Reply | None:
        """The refusal of a request for another account or a malformed SID, else ``None``."""
        account = call.params["AccountSid"]
        pair = _credentials(call.headers.get("authorization", ""))
        if pair is not None and pair[0].startswith("AC") and pair[0] != account:
            return self.error(403)
        if not _ACCOUNT.match(account):
            return self.error(
                404,
                f"The requested resource /2010-04-01/Accounts/{account}/Messages.json "
                "was not found",
            )
        return None

    def create_message(self, call: Call) -> Reply:
        account = call.params["AccountSid"]
        refused = self._account(call)
        if refused is not None:
            return refused
        try:
            parsed = parse_qs(
                call.request.body.decode(), keep_blank_values=True, strict_parsing=False
            )
        except UnicodeDecodeError:
            return self.error(400, "The request body is not form-encoded.")
        form = {name: values[-1] for name, values in parsed.items()}
        invalid = self._validate(form)
        if invalid is not None:
            return invalid
        sid = _sid("SM")
        created = time.time()
        now = formatdate(created, usegmt=True)
        body = form.get("Body", "")
        service = form.get("MessagingServiceSid")
        message: dict[str, Any] = {
            "account_sid": account,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": service,
            "num_media": "1" if form.get("MediaUrl") else "0",
            "num_segments": str(max(1, -(-len(body) // 153) if len(body) > 160 else 1)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service and not form.get("From") else "queued",
            "subresource_uris": {
                "media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json"
            },
            "to": form["To"],
            "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
        }
        call.commit(sid, form)
        logged = {**message, "status": "sent", "date_sent": now}
        with self._lock:
            self._messages.append((next(self._order), created, logged))
        pair = _credentials(call.headers.get("authorization", ""))
        self._report(message, form, pair[1] if pair else "")
        return Reply(201, message)

    # -- status callbacks -----------------------------------------------------------------------

    def _report(self, message: dict[str, Any], form: dict[str, str], token: str) -> None:
        hooks = self.webhooks
        if hooks is None:
            return
        url = form.get("StatusCallback") or hooks.url(self.name)
        fault = hooks.decide(self.name)
        failed = fault is not None and fault.kind == "undeliverable"
        code = ((fault.code if fault is not None else None) or UNDELIVERED) if failed else None
        whatsapp = str(message["to"]).startswith("whatsapp:")
        statuses = (
            ["sent", "undelivered"]
            if failed
            else ["sent", "delivered", *(["read"] if whatsapp else [])]
        )
        notices: list[Notice] = []
        correlation = None
        if url:
            target, delays, on_status = twilio_notice_target(url)
            query = parse_qs(target.partition("?")[2])
            correlation = query["ref"][-1] if "ref" in query else None
            for status in statuses:
                params = self.callback_params(message, status, code)
                notices.append(
                    Notice(
                        self.name,
                        status,
                        message["sid"],
                        correlation,
                        target,
                        urlencode(params).encode(),
                        "application/x-www-form-urlencoded",
                        functools.partial(_signed, token, target, params),
                        delays,
                        on_status,
                    )
                )
        hooks.emit(
            self.name,
            message["sid"],
            correlation,
            notices,
            statuses=statuses,
            fault=fault,
            error_code=code,
        )

    @staticmethod
    def callback_params(
        message: dict[str, Any], status: str, code: int | None = None
    ) -> dict[str, str]:
        """The form parameters of the status callback reporting *status* for *message*."""
        params = {
            "MessageSid": message["sid"],
            "SmsSid": message["sid"],
            "MessageStatus": status,
            "SmsStatus": status,
            "AccountSid": message["account_sid"],
            "To": message["to"],
            "ApiVersion": "2010-04-01",
        }
        if message.get("from"):
            params["From"] = message["from"]
        if message.get("messaging_service_sid"):
            params["MessagingServiceSid"] = message["messaging_service_sid"]
        if status in ("failed", "undelivered"):
            params["ErrorCode"] = str(code or UNDELIVERED)
        return params

    # -- GET /2010-04-01/Accounts/{AccountSid}/Messages.json ------------------------------------

    def list_messages(self, call: Call) -> Reply:
        account = call.params["AccountSid"]
        refused = self._account(call)
        if refused is not None:
            return refused
        args = {k: v[-1] for k, v in parse_qs(call.request.query, keep_blank_values=True).items()}
        bounds: dict[str, date] = {}
        for name in ("DateSent", "DateSent<", "DateSent>"):
            if name in args:
                try:
                    bounds[name] = date.fromisoformat(args[name])
                except ValueError:
                    return self.error(
                        400, f"{name} must be a date in YYYY-MM-DD format.", code=20001
                    )
        try:
            size = int(args.get("PageSize", "50"))
            page = int(args.get("Page", "0"))
        except ValueError:
            return self.error(400, "PageSize and Page must be integers.", code=20001)
        if not 1 <= size <= 1000 or page < 0:
            return self.error(400, "PageSize must be within 1 and 1000.", code=20001)
        with self._lock:
            logged = sorted(self._messages, key=lambda entry: entry[0], reverse=True)
        found: list[dict[str, Any]] = []
        for _, created, message in logged:
            if message["account_sid"] != account:
                continue
            if "To" in args and message["to"] != args["To"]:
                continue
            if "From" in args and message["from"] != args["From"]:
                continue
            day = datetime.fromtimestamp(created, UTC).date()
            if "DateSent" in bounds and day != bounds["DateSent"]:
                continue
            if "DateSent<" in bounds and day > bounds["DateSent<"]:
                continue
            if "DateSent>" in bounds and day < bounds["DateSent>"]:
                continue
            found.append(dict(message))
        chunk = found[page * size : (page + 1) * size]
        uri = f"/2010-04-01/Accounts/{account}/Messages.json"
        more = (page + 1) * size < len(found)
        return Reply(
            200,
            {
                "messages": chunk,
                "page": page,
                "page_size": size,
                "start": page * size,
                "end": page * size + max(0, len(chunk) - 1),
                "uri": f"{uri}?PageSize={size}&Page={page}",
                "first_page_uri": f"{uri}?PageSize={size}&Page=0",
                "next_page_uri": f"{uri}?PageSize={size}&Page={page + 1}" if more else None,
                "previous_page_uri": (
                    f"{uri}?PageSize={size}&Page={page - 1}" if page > 0 else None
                ),
            },
        )
