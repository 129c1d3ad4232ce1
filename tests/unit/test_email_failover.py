"""The email chain's settings and its reading of each provider's failures."""

from __future__ import annotations

import pytest

from antifragile import (
    AuthenticationError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    InvalidRequestError,
    NetworkError,
    RateLimitedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from antifragile.connectors import EmailChain, OutcomeUnknownError
from antifragile.connectors._failover import (
    CHAIN_ENV,
    DEFAULT_SETTLE_WINDOW,
    chain_from,
    email_serving,
    settle_window_from,
    verdict,
)
from antifragile.connectors._outcome import error_body

RESEND_503 = '{"statusCode": 503, "name": "application_error", "message": "down"}'


def test_chain_setting_is_read_in_order_and_defaults_to_resend() -> None:
    assert chain_from(" Resend, sendgrid ,smtp") == ("resend", "sendgrid", "smtp")
    assert chain_from(None) == chain_from("") == ("resend",)
    with pytest.raises(ConfigurationError, match="twice"):
        chain_from("smtp,smtp")


def test_settle_window_setting() -> None:
    assert settle_window_from(None) == DEFAULT_SETTLE_WINDOW
    assert settle_window_from("30") == 30.0
    for bad in ("soon", "-1"):
        with pytest.raises(ConfigurationError):
            settle_window_from(bad)


@pytest.mark.parametrize(
    ("provider", "error", "expected"),
    [
        ("resend", CircuitOpenError("open", provider="resend"), "next"),
        ("resend", RateLimitedError("quota", status=429), "next"),
        ("resend", AuthenticationError("key", status=401), "next"),
        ("resend", UpstreamUnavailableError("5xx", status=503, detail=RESEND_503), "next"),
        ("resend", UpstreamUnavailableError("gateway", status=502, detail="<html>"), "unknown"),
        ("resend", UpstreamTimeoutError("ReadTimeout: late"), "unknown"),
        ("resend", NetworkError("ConnectError: refused"), "next"),
        ("resend", InvalidRequestError("bad from", status=422), "raise"),
        ("sendgrid", UpstreamUnavailableError("5xx", status=503), "next"),
        ("sendgrid", OutcomeUnknownError("lost", reconcile_key="k"), "unknown"),
        ("resend", UpstreamUnavailableError("no id", status=200, detail="{}"), "unknown"),
        ("resend", DeadlineExceededError("deadline passed"), "unknown"),
        ("resend", UpstreamTimeoutError("PoolTimeout: no connection"), "next"),
        ("smtp", NetworkError("ConnectError: refused", replay_safe=True), "next"),
        ("smtp", NetworkError("reset after DATA", replay_safe=False), "unknown"),
        ("mailbox", UpstreamUnavailableError("502", status=502, replay_safe=False), "unknown"),
        ("smtp", ConfigurationError("no host"), "next"),
        ("smtp", ValueError("a bug"), "raise"),
    ],
)
def test_verdict_of_each_failure(provider: str, error: Exception, expected: str) -> None:
    assert verdict(provider, error) == expected


@pytest.mark.parametrize(
    ("detail", "expected"),
    [
        (RESEND_503, {"statusCode": 503, "name": "application_error", "message": "down"}),
        ("<html><body>502 Bad Gateway</body></html>", None),
        ('{"cut short', None),
        ("[1, 2]", None),
        ("{}", None),
        (None, None),
    ],
)
def test_error_body_is_the_providers_json_object_only(
    detail: str | None, expected: dict[str, object] | None
) -> None:
    assert error_body(detail) == expected


def test_serving_entry_only_with_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHAIN_ENV, raising=False)
    assert email_serving(object()) is None
    monkeypatch.setenv(CHAIN_ENV, "resend")
    assert email_serving(None) is None


def test_a_chain_needs_a_provider() -> None:
    with pytest.raises(ConfigurationError):
        EmailChain({})
