"""Parsing of the headers that tell a client when to come back.

``Retry-After`` (RFC 9110 §10.2.3) is either delta-seconds or an HTTP-date; some providers
(Shopify) send a float. Reset headers come in two dialects: the IETF ``RateLimit`` draft's
``ratelimit-reset`` is delta-seconds, while ``X-RateLimit-Reset`` is an epoch timestamp at
SendGrid and GitHub and delta-seconds elsewhere; a value that can only be an epoch (after 2001)
is read as one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

#: values above this are epoch timestamps, not delta-seconds (2001-09-09)
_EPOCH_THRESHOLD = 1_000_000_000.0


def _number(value: str) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if math.isnan(number) or math.isinf(number):
        return None
    return number


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait according to a ``Retry-After`` value; ``None`` when absent or unreadable.

    *now* is the current wall-clock epoch time, used for the HTTP-date form. Past dates and
    negative numbers give ``0.0``.
    """
    if not value:
        return None
    number = _number(value)
    if number is not None:
        return max(0.0, number)
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT, the asctime form says so implicitly
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def parse_reset(value: str | None, now: float) -> float | None:
    """Seconds until a rate-limit window resets, from a ``*-reset`` header value."""
    if not value:
        return None
    number = _number(value)
    if number is None:
        return parse_retry_after(value, now)
    if number > _EPOCH_THRESHOLD:
        return max(0.0, number - now)
    return max(0.0, number)


_RESET_HEADERS = ("ratelimit-reset", "x-ratelimit-reset")


def retry_after_from_headers(headers: Mapping[str, str], now: float) -> float | None:
    """When to try again, from ``Retry-After`` or, failing that, a rate-limit reset header.

    *headers* must be a case-insensitive mapping (``httpx.Headers``) or have lower-case keys.
    """
    delay = parse_retry_after(headers.get("retry-after"), now)
    if delay is not None:
        return delay
    for name in _RESET_HEADERS:
        delay = parse_reset(headers.get(name), now)
        if delay is not None:
            return delay
    return None
