"""Alerts' pure parts: the error-rate window of AlertsObserver, AlertConfig validation, the alert
texts (no personal data), and the ANTIFRAGILE_ALERT_* settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from antifragile import FakeClock
from antifragile.connectors import Connectors
from antifragile.errors import ConfigurationError
from antifragile.inbound import AlertConfig, Alerts, AlertsObserver
from antifragile.inbound._alerts import BREAKER_OPEN, DLQ_BACKLOG, ERROR_RATE, _top, render
from antifragile.jobs import Jobs
from antifragile.observability import AttemptFinished, BreakerTransition
from antifragile.service._alerts_api import alert_config
from antifragile.service._settings import Settings

OPS = "ops@acme.example"


def attempt(policy: str, code: str | None = None) -> AttemptFinished:
    return AttemptFinished(policy=policy, number=1, duration=0.01, code=code)


def test_observer_counts_attempts_and_failures_per_policy() -> None:
    """AttemptFinished events are counted per policy name, failures by error code; other
    events are ignored."""
    clock = FakeClock()
    observer = AlertsObserver(window=300, clock=clock)
    for code in (None, None, "TIMEOUT", "UPSTREAM_UNAVAILABLE", "TIMEOUT"):
        observer.on_event(attempt("shopify", code))
    observer.on_event(attempt("slack"))
    observer.on_event(
        BreakerTransition(policy="shopify", from_state="closed", to_state="open", reason="x")
    )
    rates = observer.rates()
    assert (rates["shopify"].calls, rates["shopify"].failures) == (5, 3)
    assert rates["shopify"].codes == {"TIMEOUT": 2, "UPSTREAM_UNAVAILABLE": 1}
    assert rates["shopify"].rate == pytest.approx(0.6)
    assert (rates["slack"].calls, rates["slack"].failures) == (1, 0)
    assert observer.rate("hubspot").calls == 0


def test_observer_window_slides() -> None:
    """Attempts older than the window drop out, bucket by bucket: after 150 s the first half
    is still counted, after the window has passed it is gone, codes included."""
    clock = FakeClock()
    observer = AlertsObserver(window=300, buckets=30, clock=clock)
    for _ in range(10):
        observer.record("p", "TIMEOUT")
    clock.advance(150)
    for _ in range(10):
        observer.record("p", None)
    assert (observer.rate("p").calls, observer.rate("p").failures) == (20, 10)
    clock.advance(160)  # the failures are 310 s old, the successes 160 s
    rate = observer.rate("p")
    assert (rate.calls, rate.failures, rate.codes) == (10, 0, {})
    clock.advance(300)
    assert observer.rate("p").calls == 0


def test_observer_rejects_a_bad_window() -> None:
    """A window of zero seconds or zero buckets is a configuration error."""
    with pytest.raises(ConfigurationError):
        AlertsObserver(window=0)
    with pytest.raises(ConfigurationError):
        AlertsObserver(buckets=0)


def test_config_validates_without_echoing_addresses() -> None:
    """Bad recipients, thresholds and windows are refused; the message counts the bad
    addresses and never shows them; the repr hides the recipients."""
    with pytest.raises(ConfigurationError) as bad:
        AlertConfig(email=("not-an-address-0123",))
    assert "not-an-address-0123" not in str(bad.value)
    with pytest.raises(ConfigurationError):
        AlertConfig(email=OPS)  # type: ignore[arg-type]
    for wrong in ({"dlq_threshold": 0}, {"error_rate": 0.0}, {"error_rate": 1.5}):
        with pytest.raises(ConfigurationError):
            AlertConfig(**wrong)
    with pytest.raises(ConfigurationError):
        AlertConfig(window=0.5)
    config = AlertConfig(slack=True, email=(f" {OPS} ",))
    assert config.email == (OPS,)
    assert config.channels == ("slack", "email")
    assert OPS not in repr(config)
    assert AlertConfig().channels == ()


def test_texts_hold_counts_and_codes_only() -> None:
    """Each condition's text names the condition, provider, counts and codes; a subject or
    code that is not a plain name is replaced, so nothing else can slip in."""
    dlq = render(
        DLQ_BACKLOG,
        "all",
        1_700_000_100,
        {"dead": 12, "threshold": 10, "queues": {"email": 12}, "codes": {"TIMEOUT": 12}},
    )
    assert "12 dead job(s)" in dlq
    assert "email=12" in dlq
    assert "TIMEOUT=12" in dlq
    assert "2023-11-14" in dlq
    rate = render(
        ERROR_RATE,
        "shopify",
        0,
        {"calls": 40, "failures": 30, "threshold": 0.5, "window": 300, "codes": {OPS: 3}},
    )
    assert "shopify: 30 of 40 attempts failed (75%) over the last 5 min" in rate
    assert OPS not in rate
    assert "?=3" in rate
    opened = render(BREAKER_OPEN, "+447700900123 x", 0, {"reason": "failure rate 60% >= 50%"})
    assert "447700900123" not in opened
    assert "failure rate 60% >= 50%" in opened


def test_settings_from_environment() -> None:
    """ANTIFRAGILE_ALERT_* land in the settings (recipients as secrets: never in the repr) and
    make the alert configuration."""
    settings = Settings.from_env(
        {
            "ANTIFRAGILE_ALERT_SLACK": "on",
            "ANTIFRAGILE_ALERT_EMAIL": f"{OPS}, oncall@acme.example",
            "ANTIFRAGILE_ALERT_DLQ_THRESHOLD": "25",
            "ANTIFRAGILE_ALERT_ERROR_RATE": "20%",
            "ANTIFRAGILE_ALERT_WINDOW": "30m",
        }
    )
    assert OPS not in repr(settings)
    config = alert_config(settings)
    assert config.slack is True
    assert config.email == (OPS, "oncall@acme.example")
    assert (config.dlq_threshold, config.error_rate, config.window) == (25, 0.2, 1800.0)
    defaults = alert_config(Settings.from_env({}))
    assert defaults.channels == ()
    assert (defaults.dlq_threshold, defaults.error_rate, defaults.window) == (10, 0.5, 900.0)
    assert Settings.from_env({"ANTIFRAGILE_ALERT_ERROR_RATE": "0.75"}).alert_error_rate == 0.75


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ANTIFRAGILE_ALERT_SLACK", "maybe"),
        ("ANTIFRAGILE_ALERT_DLQ_THRESHOLD", "0"),
        ("ANTIFRAGILE_ALERT_ERROR_RATE", "150%"),
        ("ANTIFRAGILE_ALERT_ERROR_RATE", "half"),
        ("ANTIFRAGILE_ALERT_WINDOW", "0"),
    ],
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    """A bad alert setting is a ConfigurationError naming its variable."""
    with pytest.raises(ConfigurationError) as bad:
        Settings.from_env({name: value})
    assert name in str(bad.value)


def test_settings_from_the_file(tmp_path: Path) -> None:
    """The ``[service]`` table takes the same settings (the recipients masked in the raw
    table kept on the settings)."""
    path = tmp_path / "service.toml"
    path.write_text(
        "[service]\n"
        "alert_slack = true\n"
        f'alert_email = ["{OPS}"]\n'
        'alert_error_rate = "60%"\n'
        'alert_window = "1h"\n',
        encoding="utf-8",
    )
    settings = Settings.from_env({}, config_path=path)
    config = alert_config(settings)
    assert (config.slack, config.email, config.error_rate, config.window) == (
        True,
        (OPS,),
        0.6,
        3600.0,
    )
    assert settings.service["alert_email"] == "***"


def test_notification_payloads_survive_any_queue_name(tmp_path: Path) -> None:
    """Queues and codes travel as ``[name, count]`` pairs, so a queue whose name looks like a
    credential (refused as a payload key) still makes a valid ``alerts.notify`` payload."""
    alerts = Alerts(Jobs(database_url=f"sqlite:///{tmp_path / 'a.db'}"), Connectors())
    details = {"dead": 3, "threshold": 1, "queues": [["api_key_rotation", 3]], "codes": []}
    job = alerts.notify_job.prepare(DLQ_BACKLOG, "all", 0, details)
    assert job.payload == {
        "condition": DLQ_BACKLOG,
        "subject": "all",
        "window_start": 0,
        "details": details,
    }
    assert "api_key_rotation=3" in render(DLQ_BACKLOG, "all", 0, details)
    assert _top({"B": 1, "A": 1, "C": 5}, 2) == [["C", 5], ["A", 1]]
