"""What a :class:`~antifragile.sandbox.FlakyServer` does with a request: faults, chaos, phases.

A :class:`Fault` is one scripted answer (or non-answer). :class:`Chaos` draws a fault at random
for each request, with fixed probabilities. :class:`Quota` is the provider's own rate limit,
which refuses requests with 429 once a client sends too many. A :class:`Phase` applies one of
these to every request that arrives within a window of time after the server started, so a
whole incident -- a burst of 503s, a quota squeeze, an outage, a recovery -- plays as a
timeline.
"""

from __future__ import annotations

import http
import json as _json
import math
import random
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from antifragile.errors import ConfigurationError

FaultKind = Literal["ok", "status", "rate_limited", "slow", "reset", "hang", "malformed"]

Headers = tuple[tuple[str, str], ...]

_JSON_TYPE = ("content-type", "application/json")


def _merged(base: Iterable[tuple[str, str]], headers: Mapping[str, str] | None) -> Headers:
    """*base* with *headers* over it: one entry per name (compared case-insensitively), each
    name written as its provider writes it (``X-Shopify-Shop-Api-Call-Limit``)."""
    merged = {name.lower(): (name, value) for name, value in base}
    for name, value in (headers or {}).items():
        merged[name.lower()] = (name, value)
    return tuple(merged.values())


def _headers(headers: Mapping[str, str] | None, *extra: tuple[str, str]) -> Headers:
    return _merged(extra, headers)


def _json_body(value: Any) -> bytes:
    return _json.dumps(value, separators=(",", ":")).encode()


def seconds_text(seconds: float) -> str:
    """Seconds as a header value: ``"2"``, ``"1.5"``, ``"0.125"`` (milliseconds at most)."""
    return format(seconds, ".3f").rstrip("0").rstrip(".")


def reason_phrase(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown Status"


@dataclass(frozen=True, slots=True)
class Fault:
    """One scripted behaviour of the server for one request; build it with the class methods.

    ============================  =================================================================
    ``Fault.ok()``                answers (200 by default) with the given body or JSON
    ``Fault.status(503)``         answers with that status and a small JSON error body
    ``Fault.rate_limited(1.5)``   429 with ``Retry-After`` in delta-seconds (or an HTTP-date)
    ``Fault.slow(0.5, then)``     waits, then behaves as *then* (``Fault.ok()`` by default)
    ``Fault.reset()``             closes the TCP connection with a reset, sending no response
    ``Fault.hang()``              never answers; the connection stays open until the client
                                  leaves or the server stops
    ``Fault.malformed()``         200 whose ``application/json`` body is not valid JSON
    ============================  =================================================================
    """

    kind: FaultKind
    code: int | None = None
    body: bytes = b""
    headers: Headers = ()
    seconds: float = 0.0
    then: Fault | None = None
    retry_after: float | None = None
    http_date: bool = False

    @property
    def final(self) -> Fault:
        """The fault that finally answers (*then* of a slow fault, itself otherwise)."""
        fault = self
        while fault.kind == "slow":
            fault = fault.then or Fault.ok()
        return fault

    def with_headers(self, headers: Mapping[str, str]) -> Fault:
        """A copy that answers with *headers* too (a slow fault passes them to *then*)."""
        if self.kind == "slow":
            return replace(self, then=(self.then or Fault.ok()).with_headers(headers))
        if self.kind in ("reset", "hang"):
            return self
        return replace(self, headers=_merged(self.headers, headers))

    @property
    def answers(self) -> bool:
        """Whether the client gets an HTTP response at all."""
        return self.final.kind not in ("reset", "hang")

    # -- constructors ---------------------------------------------------------------------------

    @classmethod
    def ok(
        cls,
        status: int = 200,
        json: Any = None,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """A normal answer: *json* (serialised, ``application/json``) or raw *body* bytes."""
        if json is not None:
            return cls("ok", status, _json_body(json), _headers(headers, _JSON_TYPE))
        return cls("ok", status, body, _headers(headers))

    @classmethod
    def status(cls, code: int, json: Any = None, headers: Mapping[str, str] | None = None) -> Fault:
        """Answer with status *code*; *json* defaults to ``{"error": {"status", "message"}}``."""
        if not 200 <= code <= 599:
            raise ConfigurationError(f"a final HTTP status is within [200, 599], got {code!r}")
        if json is None:
            json = {"error": {"status": code, "message": reason_phrase(code)}}
        return cls("status", code, _json_body(json), _headers(headers, _JSON_TYPE))

    @classmethod
    def rate_limited(
        cls,
        retry_after: float | None = 1,
        http_date: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """429 Too Many Requests with ``Retry-After`` (none when *retry_after* is ``None``).

        The header holds delta-seconds, or with *http_date* an HTTP-date computed when the
        response is sent, rounded up to the next whole second.
        """
        if retry_after is not None and not retry_after >= 0:
            raise ConfigurationError(f"retry_after must be >= 0 seconds, got {retry_after!r}")
        json = {"error": {"status": 429, "message": "Too Many Requests"}}
        return cls(
            "rate_limited",
            429,
            _json_body(json),
            _headers(headers, _JSON_TYPE),
            retry_after=None if retry_after is None else float(retry_after),
            http_date=http_date,
        )

    @classmethod
    def slow(cls, seconds: float, then: Fault | None = None) -> Fault:
        """Wait *seconds* before behaving as *then* (``Fault.ok()`` when omitted)."""
        if not seconds >= 0:
            raise ConfigurationError(f"seconds must be >= 0, got {seconds!r}")
        return cls("slow", None, seconds=float(seconds), then=then or cls.ok())

    @classmethod
    def reset(cls) -> Fault:
        """Drop the connection with a TCP reset (``SO_LINGER`` 0) instead of answering."""
        return cls("reset")

    @classmethod
    def hang(cls) -> Fault:
        """Read the request and never answer."""
        return cls("hang")

    @classmethod
    def malformed(cls) -> Fault:
        """200 with an ``application/json`` body that does not parse."""
        return cls("malformed", 200, b'{"id": 1, "status": "ok",', (_JSON_TYPE,))

    @staticmethod
    def repeat(fault: Fault, n: int) -> list[Fault]:
        """*n* copies of *fault*, to put in a script: ``[*Fault.repeat(503s, 3), Fault.ok()]``."""
        if n < 0:
            raise ConfigurationError(f"n must be >= 0, got {n!r}")
        return [fault] * n

    def __repr__(self) -> str:
        if self.kind == "slow":
            return f"Fault.slow({self.seconds:g}, then={self.then!r})"
        if self.kind in ("ok", "status"):
            return f"Fault.{self.kind}({self.code})"
        if self.kind == "rate_limited":
            return f"Fault.rate_limited({self.retry_after}, http_date={self.http_date})"
        return f"Fault.{self.kind}()"


@dataclass(frozen=True)
class Chaos:
    """Draws a fault per request: 503, 429 (with ``Retry-After``), slow, reset, or none.

    One outcome is drawn per request, so the probabilities must add up to at most 1; with the
    remaining probability the request gets no fault (the server's default answers).
    *seed* makes the draws reproducible; :meth:`restart` starts the sequence over.
    """

    p_503: float = 0.0
    p_429: float = 0.0
    p_slow: float = 0.0
    slow_seconds: float = 0.2
    p_reset: float = 0.0
    retry_after: float = 1.0
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        probabilities = (self.p_503, self.p_429, self.p_slow, self.p_reset)
        if not all(0.0 <= p <= 1.0 for p in probabilities) or sum(probabilities) > 1.0 + 1e-9:
            raise ConfigurationError(
                "chaos probabilities must each be within [0, 1] and add up to at most 1"
            )
        if not self.slow_seconds >= 0 or not self.retry_after >= 0:
            raise ConfigurationError("slow_seconds and retry_after must be >= 0 seconds")
        object.__setattr__(self, "_rng", random.Random(self.seed))
        object.__setattr__(self, "_lock", threading.Lock())

    def restart(self) -> None:
        """Start the sequence of draws over (from *seed*; a fresh random one without it)."""
        with self._lock:
            self._rng.seed(self.seed)

    def pick(self) -> Fault | None:
        """The fault for the next request, or ``None`` for a normal answer (thread-safe)."""
        with self._lock:
            u = self._rng.random()
        if u < self.p_503:
            return Fault.status(503)
        u -= self.p_503
        if u < self.p_429:
            return Fault.rate_limited(self.retry_after)
        u -= self.p_429
        if u < self.p_slow:
            return Fault.slow(self.slow_seconds)
        u -= self.p_slow
        if u < self.p_reset:
            return Fault.reset()
        return None


class Quota:
    """The provider's own rate limit: at most *limit* requests per *per* seconds.

    Windows are fixed: a request opens one when none is open, and it closes *per* seconds
    later. A request within the limit gets the server's default answer; one beyond it gets 429
    with ``Retry-After`` set to the time left in the window. Every answer carries the IETF
    draft headers ``RateLimit-Limit``, ``RateLimit-Remaining`` and ``RateLimit-Reset``
    (delta-seconds), so a client can slow down before it is refused. Thread-safe.
    """

    def __init__(self, limit: int, per: float = 1.0) -> None:
        if not isinstance(limit, int) or limit < 0:
            raise ConfigurationError(f"limit must be an int >= 0, got {limit!r}")
        if not per > 0:
            raise ConfigurationError(f"per must be > 0 seconds, got {per!r}")
        self.limit = limit
        self.per = float(per)
        self._lock = threading.Lock()
        self._opened: float | None = None
        self._used = 0

    def restart(self) -> None:
        """Forget the current window."""
        with self._lock:
            self._opened, self._used = None, 0

    def pick(self, default: Fault) -> Fault:
        """*default* with rate-limit headers, or a 429 when the window's quota is used up."""
        now = time.monotonic()
        with self._lock:
            if self._opened is None or now - self._opened >= self.per:
                self._opened, self._used = now, 0
            left = max(0.001, math.ceil((self._opened + self.per - now) * 1000) / 1000)
            allowed = self._used < self.limit
            if allowed:
                self._used += 1
            remaining = self.limit - self._used
        headers = {
            "ratelimit-limit": str(self.limit),
            "ratelimit-remaining": str(remaining),
            "ratelimit-reset": seconds_text(left),
        }
        if allowed:
            return default.with_headers(headers)
        return Fault.rate_limited(left, headers=headers)

    def __repr__(self) -> str:
        return f"Quota({self.limit}, per={self.per:g})"


Behaviour = Fault | Chaos | Quota


@dataclass(frozen=True, slots=True)
class Phase:
    """From *start* to *end* seconds after the server started, *behaviour* answers requests.

    *behaviour* is a :class:`Fault` (every request gets it), a :class:`Chaos` mix (a draw per
    request; no fault means the server's default answers) or a :class:`Quota`. ``end=None``
    lasts until the server stops. Requests answered during a phase are recorded with its
    *name*.
    """

    start: float
    end: float | None
    behaviour: Behaviour
    name: str = ""

    def __post_init__(self) -> None:
        if not self.start >= 0 or (self.end is not None and not self.end > self.start):
            raise ConfigurationError(
                f"a phase needs 0 <= start < end, got start={self.start!r}, end={self.end!r}"
            )

    @classmethod
    def outage(cls, start: float, end: float | None, fault: Fault | None = None) -> Phase:
        """The provider is down between *start* and *end*: every request gets *fault* (503)."""
        return cls(start, end, fault or Fault.status(503), "outage")

    def covers(self, elapsed: float) -> bool:
        return self.start <= elapsed and (self.end is None or elapsed < self.end)

    def pick(self, default: Fault) -> Fault:
        """What answers a request arriving during this phase; *default* is the server's."""
        behaviour = self.behaviour
        if isinstance(behaviour, Chaos):
            return behaviour.pick() or default
        if isinstance(behaviour, Quota):
            return behaviour.pick(default)
        return behaviour
