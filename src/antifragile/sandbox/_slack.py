"""A Slack incoming-webhook simulator: ``POST /services/T.../B.../X...``.

* **Auth** -- the URL is the secret. With ``hooks`` given, only those paths
  (``"T000/B000/XXXX"``) are known; any other is 403 ``invalid_token``. Without ``hooks``,
  every path shaped ``T.../B.../...`` is accepted. Hooks in ``gone`` answer 404
  ``channel_not_found`` (their channel was deleted).
* **Validation** -- a body that is not a JSON object is 400 ``invalid_payload``; an object
  without ``text`` (and without ``blocks`` or ``attachments``) is 400 ``no_text``.
* **Success** -- 200, ``text/plain`` body ``ok``; the message is recorded as an effect.
* **Errors** -- a plain-text error string, never JSON.
* **Rate limit** -- about one message per second per hook: a token bucket of ``rate`` per
  second with ``burst`` tokens; a refused post gets 429 with ``Retry-After`` in whole seconds.
  Both can change while the sandbox runs: ``{"simulators": {"slack": {"burst": 5}}}`` in a fault
  document (file or ``PUT /_sandbox/faults``), or ``antifragile sandbox --slack-burst``.
* **Idempotency** -- none: posting the same message twice shows it twice.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable

from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator

_TEXT = {"content-type": "text/plain; charset=utf-8"}

_ERRORS: dict[int, str] = {
    400: "invalid_payload",
    403: "invalid_token",
    404: "no_service",
    405: "invalid_method",
    410: "channel_is_archived",
    429: "rate_limited",
}


def _hook(path: str) -> str:
    """``T000/B000/XXXX`` from the sandbox path ``/slack/services/T000/B000/XXXX``."""
    return path.lstrip("/").partition("/")[2].strip("/").removeprefix("services/")


class SlackSimulator(Simulator):
    """Slack's incoming webhooks: plain-text answers, ~1 message per second, no idempotency."""

    name = "slack"

    def __init__(
        self,
        *,
        hooks: Iterable[str] | None = None,
        gone: Iterable[str] = (),
        rate: float = 1.0,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hooks = None if hooks is None else frozenset(h.strip("/") for h in hooks)
        self.gone = frozenset(h.strip("/") for h in gone)
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._count = 0
        super().__init__()

    #: a fault document's ``simulators.slack`` may change the pace and the burst allowance
    settable = frozenset({"rate", "burst"})

    def routes(self) -> Iterable[Route]:
        return [Route("POST", "/services/{team}/{bot}/{secret}", self.post_message)]

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._count = 0

    # -- the provider's answers -----------------------------------------------------------------

    def error(self, status: int, message: str | None = None) -> Reply:
        text = message or _ERRORS.get(status, "internal_error" if status >= 500 else "invalid")
        return Reply(status, body=text.encode(), headers=_TEXT)

    def rate_limited(self, retry_after: float) -> Reply:
        reply = self.error(429, "rate_limited")
        return reply.with_headers({"retry-after": str(max(1, math.ceil(retry_after)))})

    def throttle(self, request: IncomingRequest) -> Reply | None:
        hook = _hook(request.path)
        now = self._clock()
        with self._lock:
            tokens, stamp = self._buckets.get(hook, (self.burst, now))
            tokens = min(self.burst, tokens + (now - stamp) * self.rate)
            if tokens >= 1.0:
                self._buckets[hook] = (tokens - 1.0, now)
                return None
            self._buckets[hook] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        return self.rate_limited(wait)

    def authenticate(self, request: IncomingRequest) -> Reply | None:
        hook = _hook(request.path)
        parts = hook.split("/")
        shaped = len(parts) == 3 and parts[0].startswith("T") and parts[1].startswith("B")
        if shaped and hook in self.gone:
            return self.error(404, "channel_not_found")
        if not shaped or (self.hooks is not None and hook not in self.hooks):
            return self.error(403, "invalid_token")
        return None

    # -- POST /services/{team}/{bot}/{secret} -------------------------------------------------

    def post_message(self, call: Call) -> Reply:
        try:
            body = call.json()
        except ValueError:
            return self.error(400, "invalid_payload")
        if not isinstance(body, dict):
            return self.error(400, "invalid_payload")
        text = body.get("text")
        if text is not None and not isinstance(text, str):
            return self.error(400, "invalid_payload")
        if not text and not body.get("blocks") and not body.get("attachments"):
            return self.error(400, "no_text")
        with self._lock:
            self._count += 1
            message_id = f"{call.params['team']}-{self._count}"
        call.commit(message_id, body)
        return Reply(200, body=b"ok", headers=_TEXT)
