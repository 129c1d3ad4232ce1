"""parse_rate_limit: Cal.com's named ``X-RateLimit-*-<Name>`` headers."""

from __future__ import annotations

import httpx
import pytest

from antifragile.http import parse_rate_limit

NOW = 1_700_000_000.0


def test_named_limit_is_read() -> None:
    """``-Limit-Default``/``-Remaining-Default``/``-Reset-Default`` (delta seconds) give the
    limit, what is left and when it resets; header names are case-insensitive."""
    headers = httpx.Headers(
        {
            "X-RateLimit-Limit-Default": "120",
            "X-RateLimit-Remaining-Default": "7",
            "X-RateLimit-Reset-Default": "42",
        }
    )
    info = parse_rate_limit(headers, NOW)
    assert (info.limit, info.remaining, info.reset_after) == (120.0, 7.0, 42.0)


def test_named_reset_may_be_an_epoch() -> None:
    """A named reset given as epoch seconds is the time until then."""
    headers = {"x-ratelimit-remaining-default": "0", "x-ratelimit-reset-default": str(NOW + 9)}
    assert parse_rate_limit(headers, NOW).reset_after == pytest.approx(9.0)


def test_the_tightest_named_limit_wins_and_a_429_waits_for_its_reset() -> None:
    """With several named limits the one with the least room left is reported; on a 429
    without Retry-After its reset is the wait."""
    headers = {
        "x-ratelimit-limit-default": "120",
        "x-ratelimit-remaining-default": "100",
        "x-ratelimit-reset-default": "60",
        "x-ratelimit-limit-burst": "10",
        "x-ratelimit-remaining-burst": "0",
        "x-ratelimit-reset-burst": "5",
    }
    info = parse_rate_limit(headers, NOW, status=429)
    assert (info.limit, info.remaining, info.reset_after, info.retry_after) == (10, 0, 5, 5)


def test_unnamed_headers_are_not_taken_for_named_ones() -> None:
    """Plain ``X-RateLimit-Reset`` stays the unnamed dialect; a named header without a number
    is ignored."""
    info = parse_rate_limit({"x-ratelimit-remaining": "3", "x-ratelimit-limit": "9"}, NOW)
    assert (info.limit, info.remaining) == (9.0, 3.0)
    assert not parse_rate_limit({"x-ratelimit-remaining-default": "soon"}, NOW)


def test_hubspot_interval_is_a_rolling_window_not_a_reset() -> None:
    """HubSpot's ``-Interval-Milliseconds`` is a rolling window (TEN_SECONDLY_ROLLING): it is
    read as ``window``, never as a time until a reset; a 429 without ``Retry-After`` waits one
    slot at the window's pace (``window / max``)."""
    headers = {
        "x-hubspot-ratelimit-max": "100",
        "x-hubspot-ratelimit-remaining": "0",
        "x-hubspot-ratelimit-interval-milliseconds": "10000",
    }
    info = parse_rate_limit(headers, NOW)
    assert (info.limit, info.remaining, info.window, info.reset_after) == (100, 0, 10.0, None)
    assert info.retry_after is None
    assert parse_rate_limit(headers, NOW, status=429).retry_after == pytest.approx(0.1)
    with_retry_after = {**headers, "retry-after": "3"}
    assert parse_rate_limit(with_retry_after, NOW, status=429).retry_after == 3.0
