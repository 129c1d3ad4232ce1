"""Pure rules shared by the backends: token-bucket maths, argument checks, shallow merge.

Nothing here does I/O; a backend calls these inside its own atomic operation (a transaction,
a locked section), so every backend computes the same numbers the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from antifragile.errors import ConfigurationError
from antifragile.stores._protocols import (
    JSON,
    BreakerRecord,
    IdempotencyStatus,
    TokenGrant,
)

_SURROGATES = range(0xD800, 0xE000)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket's stored state: ``tokens`` at time ``stamp`` (epoch seconds)."""

    tokens: float
    stamp: float

    def level(self, now: float, rate: float, burst: float) -> float:
        """Tokens at *now*: negative while reservations are outstanding, at most *burst*."""
        level = self.tokens + (now - self.stamp) * rate
        return burst if level > burst else level


def check_rate(rate: float) -> None:
    if not rate > 0:
        raise ConfigurationError(f"rate must be > 0 tokens per second, got {rate!r}")


def take_tokens(
    bucket: Bucket | None,
    *,
    tokens: float,
    rate: float,
    burst: float,
    max_wait: float,
    now: float,
) -> tuple[TokenGrant, Bucket | None]:
    """The grant for a take, and the bucket to store (``None``: store nothing).

    A missing bucket is full. See :meth:`RateLimitStore.take` for the rule.
    """
    check_rate(rate)
    level = burst if bucket is None else bucket.level(now, rate, burst)
    if level >= tokens:
        return TokenGrant(True, 0.0), Bucket(level - tokens, now)
    wait = (tokens - level) / rate
    if wait > max_wait:
        return TokenGrant(False, wait), None
    return TokenGrant(True, wait), Bucket(level - tokens, now)


def pause_bucket(
    bucket: Bucket | None, *, seconds: float, rate: float, burst: float, now: float
) -> Bucket | None:
    """The bucket to store after a pause of *seconds* (``None``: nothing changes)."""
    check_rate(rate)
    if not seconds > 0:
        return None
    until = now + seconds
    level = burst if bucket is None else bucket.level(until, rate, burst)
    return Bucket(level if level < 1.0 else 1.0, until)


def refund_bucket(
    bucket: Bucket | None, *, tokens: float, rate: float, burst: float, now: float
) -> Bucket | None:
    """The bucket to store after *tokens* are given back (``None``: nothing changes).

    The level grows by *tokens*, never beyond *burst*, at ``now`` -- or at the end of a pause
    still under way (the stamp never moves back). A missing bucket is full already.
    """
    check_rate(rate)
    if bucket is None or not tokens > 0:
        return None
    at = now if now > bucket.stamp else bucket.stamp
    level = bucket.level(at, rate, burst) + tokens
    return Bucket(burst if level > burst else level, at)


def merge_fields(
    key: str, fields: dict[str, JSON], *, exists: bool, current: JSON = None
) -> dict[str, JSON]:
    """The live value *current* (when it *exists*) with *fields* merged in, shallowly."""
    if not exists:
        return dict(fields)
    if not isinstance(current, dict):
        raise ConfigurationError(
            f"cannot merge fields into key {key!r}: it holds a {type(current).__name__}, "
            "not a JSON object"
        )
    merged = dict(current)
    merged.update(fields)
    return merged


def check_fields(fields: Any) -> None:
    if not isinstance(fields, dict):
        raise ConfigurationError(f"merge takes a dict of fields, got {type(fields).__name__}")


def check_outcome(status: IdempotencyStatus) -> IdempotencyStatus:
    """The outcome *status* as a member; processing is not an outcome."""
    try:
        member = IdempotencyStatus(status)
    except ValueError:
        raise ConfigurationError(f"unknown idempotency status {status!r}") from None
    if member is IdempotencyStatus.PROCESSING:
        raise ConfigurationError("complete() stores an outcome: status must be succeeded or failed")
    return member


def check_breaker_names(expected: BreakerRecord, new: BreakerRecord) -> None:
    if expected.name != new.name:
        raise ConfigurationError(
            f"compare_and_set of breaker {expected.name!r} got a record named {new.name!r}"
        )


def check_window(window: int) -> None:
    if not window >= 1:
        raise ConfigurationError(f"window must be at least 1 second, got {window!r}")


def probe_key(name: str) -> str:
    """Where SQL backends count a breaker's half-open results: rows of the window table under
    the breaker's name and a unit separator (U+001F), which no breaker name written by hand
    contains (PostgreSQL text cannot hold a NUL)."""
    return f"{name}\x1fprobes"


def breaker_matches(current: BreakerRecord, expected: BreakerRecord) -> bool:
    """Whether *current* still is *expected* in the fields compare-and-set looks at."""
    return (
        current.state == expected.state
        and current.generation == expected.generation
        and current.probes_left == expected.probes_left
    )


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with *prefix* (code-point order),
    or ``None`` when there is none (the empty prefix, or only U+10FFFF characters).

    ``prefix <= key < prefix_end(prefix)`` is then exactly ``key.startswith(prefix)``, which a
    database answers from its index with no pattern syntax to escape.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            following = last + 1
            if following in _SURROGATES:
                following = _SURROGATES.stop
            chars.append(chr(following))
            return "".join(chars)
    return None
