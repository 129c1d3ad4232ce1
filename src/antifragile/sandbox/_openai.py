"""An OpenAI-compatible chat-completions simulator: ``POST /v1/chat/completions``.

* **Auth** -- ``Authorization: Bearer <key>``; a missing or different key (when ``api_key`` is
  given) is 401 ``invalid_api_key``.
* **Answers** -- a rule table: the first rule whose regular expression matches the last user
  message decides ``intent``, ``confidence`` and ``entities``; no match answers ``UNKNOWN``
  with confidence 0.2. A rule may instead give the raw ``content`` (garbage, to test
  validation). The answer is a ``chat.completion`` object whose message content is that JSON.
* **Validation** -- a body that is not a JSON object with ``model`` and a list of ``messages``
  is 400 ``invalid_request_error``.
* **Errors** -- ``{"error": {"message", "type", "param", "code"}}``. A ``rate_limited`` fault
  answers 429 ``rate_limit_exceeded`` with ``retry-after``; a 429 fault (``error`` or
  ``rate_limited``) with any ``code`` answers ``insufficient_quota``; so does every request once
  ``quota`` requests have been answered (a fault document may set ``simulators.openai.quota``).
* **Rate limits** -- every answer carries ``x-ratelimit-limit-requests``,
  ``x-ratelimit-remaining-requests``, ``x-ratelimit-reset-requests`` and the same three for
  ``-tokens``; the resets are durations as OpenAI writes them (``1s``, ``6m0s``, ``12ms``).
  The windows are a minute long: ``requests_per_minute`` requests and ``tokens_per_minute``
  tokens (a request counts its messages' characters / 4). A request past either limit is 429
  ``rate_limit_exceeded`` with ``retry-after`` (seconds) until the window ends.
* **Effects** -- every answered request is recorded (its JSON), so tests can see exactly what
  reached the model.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator

_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(frozen=True, slots=True)
class ChatRule:
    """*pattern* (a regular expression, case-insensitive) -> the classification answered."""

    pattern: str
    intent: str = "UNKNOWN"
    confidence: float = 0.9
    entities: Mapping[str, Any] = field(default_factory=dict)
    content: str | None = None  # raw message content instead of the JSON classification

    def answer(self) -> str:
        if self.content is not None:
            return self.content
        payload = {
            "intent": self.intent,
            "confidence": self.confidence,
            "entities": dict(self.entities),
        }
        return json.dumps(payload)


DEFAULT_CHAT_RULES: tuple[ChatRule, ...] = (
    ChatRule(r"\b(price|prices|how much|cost)\b", "PRICING_INQUIRY", 0.93),
    ChatRule(r"\b(order|buy)\b", "ORDER_REQUEST", 0.91),
    ChatRule(r"\b(broken|refund|complain)", "COMPLAINT", 0.9),
    ChatRule(r"\b(in stock|available)\b", "AVAILABILITY_INQUIRY", 0.88),
    ChatRule(r"\b(call|meeting|appointment)\b", "SCHEDULE_CALL", 0.87),
)


class OpenAISimulator(Simulator):
    """An OpenAI-compatible chat-completions API answering from a rule table."""

    name = "openai"

    def __init__(
        self,
        *,
        rules: Sequence[ChatRule] = DEFAULT_CHAT_RULES,
        api_key: str | None = None,
        quota: float = math.inf,
        requests_per_minute: int = 500,
        tokens_per_minute: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._window: float | None = None
        self._requests = 0
        self._tokens = 0
        self.rules = tuple(rules)
        self._compiled = [(re.compile(r.pattern, re.IGNORECASE), r) for r in self.rules]
        self.api_key = api_key
        self.quota = quota
        self._lock = threading.Lock()
        self._answered = 0
        super().__init__()

    #: a fault document's ``simulators.openai`` may change the requests the account can pay for
    settable = frozenset({"quota", "requests_per_minute", "tokens_per_minute"})

    def routes(self) -> Iterable[Route]:
        return [Route("POST", "/v1/chat/completions", self.chat_completions)]

    def reset(self) -> None:
        with self._lock:
            self._answered = 0
            self._window, self._requests, self._tokens = None, 0, 0

    # -- x-ratelimit-* --------------------------------------------------------------------------

    def _roll(self, now: float) -> float:
        """The start of the current one-minute window (a new one once the last has ended)."""
        if self._window is None or now - self._window >= 60.0:
            self._window, self._requests, self._tokens = now, 0, 0
        return self._window

    def _limit_headers(self, now: float) -> dict[str, str]:
        reset = _duration(self._roll(now) + 60.0 - now)
        return {
            "x-ratelimit-limit-requests": str(self.requests_per_minute),
            "x-ratelimit-remaining-requests": str(
                max(0, self.requests_per_minute - self._requests)
            ),
            "x-ratelimit-reset-requests": reset,
            "x-ratelimit-limit-tokens": str(self.tokens_per_minute),
            "x-ratelimit-remaining-tokens": str(max(0, self.tokens_per_minute - self._tokens)),
            "x-ratelimit-reset-tokens": reset,
        }

    def decorate(self, request: IncomingRequest, reply: Reply) -> Reply:
        with self._lock:
            computed = self._limit_headers(self._clock())
        return Reply(reply.status, reply.json, reply.body, {**computed, **reply.headers})

    # -- the provider's answers -----------------------------------------------------------------

    def error(self, status: int, message: str | None = None, code: str | None = None) -> Reply:
        kind, default_code = _TYPES.get(status, ("server_error", "server_error"))
        body = {
            "error": {
                "message": message or f"The server answered {status}.",
                "type": kind,
                "param": None,
                "code": code or (default_code if status != 500 else None),
            }
        }
        return Reply(status, body)

    def insufficient_quota(self) -> Reply:
        message = "You exceeded your current quota, please check your plan and billing details."
        error = {"message": message, "type": "insufficient_quota", "param": None}
        return Reply(429, {"error": {**error, "code": "insufficient_quota"}})

    def rate_limited(self, retry_after: float) -> Reply:
        reply = self.error(429, "Rate limit reached for requests.", "rate_limit_exceeded")
        return reply.with_headers({"retry-after": str(max(1, math.ceil(retry_after)))})

    def coded_error(self, status: int, code: int) -> Reply:
        return self.insufficient_quota() if status == 429 else self.error(status)

    def authenticate(self, request: IncomingRequest) -> Reply | None:
        given = request.headers.get("authorization", "")
        if not given.startswith("Bearer ") or (
            self.api_key is not None and given != f"Bearer {self.api_key}"
        ):
            return self.error(401, "Incorrect API key provided.", "invalid_api_key")
        return None

    def throttle(self, request: IncomingRequest) -> Reply | None:
        now = self._clock()
        tokens = max(1, len(request.body) // 4)
        with self._lock:
            if self._answered >= self.quota:
                return self.insufficient_quota()
            start = self._roll(now)
            over = (
                self._requests >= self.requests_per_minute
                or self._tokens + tokens > self.tokens_per_minute
            )
            if not over:
                self._requests += 1
                self._tokens += tokens
                return None
            wait = start + 60.0 - now
            headers = self._limit_headers(now)
        return self.rate_limited(wait).with_headers(headers)

    # -- POST /v1/chat/completions --------------------------------------------------------------

    def chat_completions(self, call: Call) -> Reply:
        try:
            body = call.json()
        except ValueError:
            return self.error(400, "We could not parse the JSON body of your request.")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return self.error(400, "you must provide a model parameter", "missing_model")
        if not isinstance(messages, list) or not messages:
            return self.error(400, "messages must be a non-empty array", "invalid_messages")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        text = str(users[-1].get("content", "")) if users else ""
        content = ChatRule("", "UNKNOWN", 0.2).answer()
        for pattern, rule in self._compiled:
            if pattern.search(text):
                content = rule.answer()
                break
        with self._lock:
            self._answered += 1
            number = self._answered
        completion_id = f"chatcmpl-sandbox{number:06d}"
        call.commit(completion_id, body)
        return Reply(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            },
        )


def _duration(seconds: float) -> str:
    """*seconds* as OpenAI writes a reset: ``12ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1.0:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60.0)
    if minutes:
        return f"{int(minutes)}m{rest:.0f}s"
    return f"{rest:.3g}s"
