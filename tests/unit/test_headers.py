"""Parsing of ``Retry-After`` and rate-limit reset headers into seconds to wait."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from antifragile import FakeClock
from antifragile.errors import parse_reset, parse_retry_after, retry_after_from_headers

NOW = FakeClock().time()  # a fixed wall-clock instant: 1_700_001_000.0


def _http_date(epoch: float) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5), ("0.25", 0.25), ("3600", 3600.0)],
)
def test_retry_after_delta_seconds(value: str, seconds: float) -> None:
    """Delta-seconds, integer or (as Shopify sends) float, are read as seconds."""
    assert parse_retry_after(value, NOW) == seconds


def test_retry_after_negative_delta_is_zero() -> None:
    """A negative delay means "now", never a negative wait."""
    assert parse_retry_after("-5", NOW) == 0.0


def test_retry_after_http_date_in_the_future() -> None:
    """An IMF-fixdate is turned into the seconds from *now* until then."""
    assert parse_retry_after(_http_date(NOW + 90), NOW) == pytest.approx(90.0)


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    """A date already passed means "try now"."""
    assert parse_retry_after(_http_date(NOW - 3600), NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        "Tue, 14 Nov 2023 22:31:30 GMT",  # IMF-fixdate
        "Tuesday, 14-Nov-23 22:31:30 GMT",  # obsolete RFC 850
        "Tue Nov 14 22:31:30 2023",  # obsolete asctime, GMT by definition
    ],
)
def test_retry_after_accepts_all_three_http_date_formats(value: str) -> None:
    """RFC 9110 requires recipients to accept the IMF, RFC 850 and asctime formats."""
    now = datetime(2023, 11, 14, 22, 30, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now) == pytest.approx(90.0)


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "12abc", "nan", "inf", "-inf", "Mon, 99 Foo 2023", "1,5"],
)
def test_retry_after_garbage_is_none(value: str | None) -> None:
    """Absent or unreadable values give ``None``: the caller falls back to its back-off."""
    assert parse_retry_after(value, NOW) is None


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_property_delta_seconds_round_trip(seconds: float) -> None:
    """Any non-negative number of seconds is read back exactly."""
    assert parse_retry_after(repr(seconds), NOW) == seconds


@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_property_http_dates_give_the_time_until_then(offset: int) -> None:
    """A date *offset* seconds away gives ``max(0, offset)`` seconds to wait."""
    assert parse_retry_after(_http_date(NOW + offset), NOW) == pytest.approx(max(0, offset))


def test_reset_delta_seconds() -> None:
    """A small reset value is seconds from now."""
    assert parse_reset("30", NOW) == 30.0
    assert parse_reset("0", NOW) == 0.0
    assert parse_reset("2.5", NOW) == 2.5


def test_reset_epoch_timestamp() -> None:
    """A value that can only be an epoch timestamp is read as one (SendGrid, GitHub)."""
    assert parse_reset(str(int(NOW) + 45), NOW) == 45.0


def test_reset_epoch_in_the_past_is_zero() -> None:
    """A reset time already passed means the window is open again."""
    assert parse_reset(str(int(NOW) - 45), NOW) == 0.0


def test_reset_http_date_and_garbage() -> None:
    """A date is accepted as well; garbage and absence give ``None``."""
    assert parse_reset(_http_date(NOW + 10), NOW) == pytest.approx(10.0)
    assert parse_reset("later", NOW) is None
    assert parse_reset(None, NOW) is None
    assert parse_reset("", NOW) is None


def test_headers_prefer_retry_after() -> None:
    """``Retry-After`` wins over any reset header."""
    headers = httpx.Headers({"Retry-After": "5", "RateLimit-Reset": "50"})
    assert retry_after_from_headers(headers, NOW) == 5.0


def test_headers_fall_back_to_reset_headers_in_order() -> None:
    """Without ``Retry-After``, the IETF ``RateLimit-Reset`` comes before ``X-RateLimit-Reset``."""
    both = httpx.Headers({"X-RateLimit-Reset": "40", "RateLimit-Reset": "20"})
    assert retry_after_from_headers(both, NOW) == 20.0
    legacy = httpx.Headers({"X-RateLimit-Reset": str(int(NOW) + 40)})
    assert retry_after_from_headers(legacy, NOW) == 40.0


def test_unreadable_retry_after_falls_back_to_reset() -> None:
    """A garbled ``Retry-After`` does not hide a readable reset header."""
    headers = httpx.Headers({"Retry-After": "whenever", "X-RateLimit-Reset": "12"})
    assert retry_after_from_headers(headers, NOW) == 12.0


def test_no_header_gives_none() -> None:
    """Nothing to go on gives ``None``."""
    assert retry_after_from_headers(httpx.Headers({"Content-Type": "text/plain"}), NOW) is None
    assert retry_after_from_headers({}, NOW) is None


def test_plain_mappings_need_lower_case_keys() -> None:
    """A plain dict works when its keys are lower-case, as documented."""
    assert retry_after_from_headers({"retry-after": "3"}, NOW) == 3.0
