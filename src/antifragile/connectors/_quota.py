"""When a provider's quota resets: daily at midnight in a time zone, monthly on the 1st."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from datetime import time as dt_time

from antifragile.errors import RateLimitedError


def until_daily_reset(now: float, zone: tzinfo = UTC) -> float:
    """Seconds from *now* (epoch) to the next midnight in *zone* (at least 1)."""
    moment = datetime.fromtimestamp(now, tz=zone)
    midnight = datetime.combine(moment.date() + timedelta(days=1), dt_time(0), tzinfo=zone)
    return max(1.0, midnight.timestamp() - now)


def until_monthly_reset(now: float, zone: tzinfo = UTC) -> float:
    """Seconds from *now* (epoch) to the start of the next month in *zone* (at least 1)."""
    moment = datetime.fromtimestamp(now, tz=zone)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return max(1.0, datetime(year, month, 1, tzinfo=zone).timestamp() - now)


def paused_refusal(
    provider: str, operation: str, until: float | None, now: float, why: str
) -> RateLimitedError | None:
    """The refusal of a call while the provider's sends are paused until *until* (epoch;
    ``None`` or past: not paused): a local :class:`~antifragile.RateLimitedError` -- nothing
    was asked of the provider, so a job waiting here keeps its attempts."""
    if until is None or now >= until:
        return None
    return RateLimitedError(
        f"{provider}.{operation}: {why}; sends paused for {until - now:.0f} s",
        provider=provider,
        operation=operation,
        status=429,
        retry_after=until - now,
        replay_safe=True,
        local=True,
    )
