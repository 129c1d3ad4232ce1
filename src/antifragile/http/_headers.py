"""Reading providers' rate-limit headers into one :class:`~antifragile.RateLimitInfo`.

Dialects understood (header names are case-insensitive):

=====================================  ============================================================
``X-Shopify-Shop-Api-Call-Limit``      ``used/size`` of Shopify's leaky bucket
``RateLimit-Limit/-Remaining/-Reset``  IETF draft (Resend); reset in delta-seconds
``RateLimit`` / ``RateLimit-Policy``   IETF draft 7+ structured fields (``r=``, ``t=``, ``q=``)
``X-RateLimit-Limit/-Remaining/-Reset`` SendGrid, GitHub, many others; reset epoch or delta
``X-RateLimit-Limit-<Name>`` ...       named limits (Cal.com: ``-Limit-Default``,
                                       ``-Remaining-Default``, ``-Reset-Default``); each name is
                                       one limit; reset epoch or delta, as above
``X-HubSpot-RateLimit-*``              ``-Max``, ``-Remaining``, ``-Interval-Milliseconds`` (a
                                       *rolling* window: ``window``, no reset moment), and
                                       ``-Daily``/``-Daily-Remaining``
``Retry-After``                        delta-seconds, float, or HTTP-date
=====================================  ============================================================

When several are present, the one with the least room left wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from antifragile.errors import parse_reset, parse_retry_after
from antifragile.policies import RateLimitInfo

_PARAM = re.compile(r"\b([a-z]+)\s*=\s*\"?([0-9.]+)")
# a named limit's header: x-ratelimit-{limit,remaining,reset}-<name> (Cal.com)
_NAMED = re.compile(r"x-ratelimit-(limit|remaining|reset)-([a-z0-9_.-]+)")


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip().split(",")[0])
    except ValueError:
        return None


def _structured(value: str | None) -> dict[str, float]:
    """Parameters of an IETF structured ``RateLimit`` field: ``"default";r=50;t=30``."""
    if not value:
        return {}
    return {k: float(v) for k, v in _PARAM.findall(value.replace(";", " ").replace(",", " "))}


def _candidates(headers: Mapping[str, str], now: float) -> list[RateLimitInfo]:
    found: list[RateLimitInfo] = []
    shopify = headers.get("x-shopify-shop-api-call-limit")
    if shopify and "/" in shopify:
        used, _, size = shopify.partition("/")
        u, s = _float(used), _float(size)
        if u is not None and s:
            found.append(RateLimitInfo(limit=s, remaining=max(0.0, s - u)))
    for prefix in ("ratelimit", "x-ratelimit"):
        limit = _float(headers.get(f"{prefix}-limit"))
        remaining = _float(headers.get(f"{prefix}-remaining"))
        if limit is not None or remaining is not None:
            found.append(
                RateLimitInfo(
                    limit=limit,
                    remaining=remaining,
                    reset_after=parse_reset(headers.get(f"{prefix}-reset"), now),
                )
            )
    named: dict[str, dict[str, str]] = {}
    for name, value in headers.items():
        match = _NAMED.fullmatch(name.lower())
        if match is not None:
            named.setdefault(match.group(2), {})[match.group(1)] = value
    for limits in named.values():
        limit = _float(limits.get("limit"))
        remaining = _float(limits.get("remaining"))
        if limit is not None or remaining is not None:
            found.append(
                RateLimitInfo(
                    limit=limit,
                    remaining=remaining,
                    reset_after=parse_reset(limits.get("reset"), now),
                )
            )
    fields = _structured(headers.get("ratelimit"))
    if "r" in fields or "remaining" in fields:
        policy = _structured(headers.get("ratelimit-policy"))
        found.append(
            RateLimitInfo(
                limit=policy.get("q", fields.get("limit")),
                remaining=fields.get("r", fields.get("remaining")),
                reset_after=fields.get("t", fields.get("reset")),
            )
        )
    hub_max = _float(headers.get("x-hubspot-ratelimit-max"))
    hub_remaining = _float(headers.get("x-hubspot-ratelimit-remaining"))
    if hub_max is not None or hub_remaining is not None:
        interval = _float(headers.get("x-hubspot-ratelimit-interval-milliseconds"))
        # HubSpot's interval is a rolling window (TEN_SECONDLY_ROLLING): a slot comes free
        # whenever a request leaves it, so the interval is no time to wait for a reset
        found.append(
            RateLimitInfo(
                limit=hub_max,
                remaining=hub_remaining,
                window=None if not interval else interval / 1000.0,
            )
        )
    daily_remaining = _float(headers.get("x-hubspot-ratelimit-daily-remaining"))
    if daily_remaining is not None:
        found.append(
            RateLimitInfo(
                limit=_float(headers.get("x-hubspot-ratelimit-daily")), remaining=daily_remaining
            )
        )
    return found


def _room(info: RateLimitInfo) -> float:
    if info.remaining is None:
        return float("inf")
    if info.limit:
        return info.remaining / info.limit
    return info.remaining


def parse_rate_limit(headers: Mapping[str, str], now: float, *, status: int = 200) -> RateLimitInfo:
    """What *headers* say about the provider's rate limit; empty when they say nothing.

    ``Retry-After`` is read on 429 and 503 responses (on others it has other meanings).
    """
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(headers.get("retry-after"), now)
    found = _candidates(headers, now)
    if not found:
        return RateLimitInfo(retry_after=retry_after)
    tightest = min(found, key=_room)
    if retry_after is None and status == 429:
        if tightest.reset_after is not None:
            retry_after = tightest.reset_after
        elif tightest.window and tightest.limit:  # a rolling window: one slot at its pace
            retry_after = tightest.window / tightest.limit
    return RateLimitInfo(
        limit=tightest.limit,
        remaining=tightest.remaining,
        reset_after=tightest.reset_after,
        retry_after=retry_after,
        window=tightest.window,
    )
