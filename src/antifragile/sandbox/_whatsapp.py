"""A WhatsApp Cloud API simulator: ``POST /{version}/{phone_number_id}/messages``.

* **Auth** -- ``Authorization: Bearer <access token>``. No bearer token is 401 with Graph code
  ``190``; a token outside ``access_tokens`` (when given) is 401 code ``190`` too.
* **Validation** -- a body that is not a JSON object, ``messaging_product`` other than
  ``"whatsapp"``, a missing ``to``, an unknown ``type``, a text without ``body`` or one longer
  than 4096 characters, or a template without ``name``/``language.code`` is 400 with Graph code
  ``100`` (invalid parameter). An unknown ``phone_number_id`` (when ``phone_number_ids`` is
  given) is 400 code ``100`` too.
* **Success** -- 200 ``{"messaging_product": "whatsapp", "contacts": [{"input", "wa_id"}],
  "messages": [{"id": "wamid...."}]}``; the message is recorded as an effect.
* **Errors** -- Graph's ``{"error": {"message", "type", "code", "error_subcode"?,
  "error_data": {"messaging_product", "details"}, "fbtrace_id"}}``.
* **Throttling** -- Cloud API refuses with error *codes*, not HTTP 429: ``130429`` (throughput,
  ``throughput`` messages per second per phone number), ``131056`` (pair rate: more than one
  message to the same recipient within ``pair_interval`` seconds) and ``80007`` (account
  level). The HTTP status of these answers is ``throttle_status`` (400 by default: integrators
  report 400, Meta's table was not confirmed). There is no ``Retry-After`` and no idempotency
  key: a repeated request sends the message again.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator

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

_TYPES = frozenset({"text", "template"})


def _trace() -> str:
    return secrets.token_urlsafe(16)


def _wamid() -> str:
    return "wamid." + secrets.token_urlsafe(36)


class WhatsAppSimulator(Simulator):
    """Cloud API's send-message endpoint with its auth, validation and throttling codes."""

    name = "whatsapp"

    def __init__(
        self,
        *,
        access_tokens: Iterable[str] | None = None,
        phone_number_ids: Iterable[str] | None = None,
        throughput: int = 80,
        pair_interval: float = 0.0,
        throttle_status: int = 400,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.access_tokens = None if access_tokens is None else frozenset(access_tokens)
        self.phone_number_ids = None if phone_number_ids is None else frozenset(phone_number_ids)
        self.throughput = throughput
        self.pair_interval = pair_interval
        self.throttle_status = throttle_status
        self._clock = clock
        self._lock = threading.Lock()
        self._window: float | None = None
        self._used = 0
        self._last_to: dict[tuple[str, str], float] = {}
        super().__init__()

    def routes(self) -> Iterable[Route]:
        return [Route("POST", "/{version}/{phone_number_id}/messages", self.send_message)]

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
        invalid = self._validate(body)
        if invalid is not None:
            return invalid
        to = str(body["to"]).lstrip("+")
        now = self._clock()
        with self._lock:
            if self.pair_interval > 0:
                last = self._last_to.get((phone, to))
                if last is not None and now - last < self.pair_interval:
                    return self.throttled(THROTTLE_PAIR)
                self._last_to[(phone, to)] = now
            message_id = _wamid()
            call.commit(message_id, body)
        return Reply(
            200,
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": body["to"], "wa_id": to}],
                "messages": [{"id": message_id}],
            },
        )
