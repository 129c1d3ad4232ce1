"""Per-provider policy overrides from TOML: parsing, validation and their effect on policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from antifragile import (
    Bulkhead,
    CircuitBreaker,
    ConfigurationError,
    Exponential,
    FakeClock,
    Policy,
    Retry,
    TokenBucket,
)
from antifragile.connectors import (
    PROVIDERS,
    PolicyOverrides,
    ShopifyConnector,
    apply_overrides,
    load_overrides,
    parse_overrides,
    policies_for,
    policy_for,
    shopify_policy,
)

TOML = """
[service]
public_url = "https://assistant.example.com"

[providers.shopify]
timeout = 5
attempts = 8
backoff_base = 1.0
backoff_cap = 20
rate_per_second = 4.0
rate_burst = 80

[providers.slack]
breaker_failure_rate = 0.8
breaker_window = 40
breaker_open_duration = 60.0
bulkhead = 2

[providers.smtp]
breaker = false
total_timeout = 120
"""


def test_a_toml_file_gives_validated_overrides_per_provider(tmp_path: Path) -> None:
    """``load_overrides`` reads the ``[providers.<name>]`` tables of a TOML file (other tables
    ignored) into PolicyOverrides, integers accepted where seconds or rates are floats."""
    path = tmp_path / "antifragile.toml"
    path.write_text(TOML)
    overrides = load_overrides(path)
    assert set(overrides) == {"shopify", "slack", "smtp"}
    assert overrides["shopify"] == PolicyOverrides(
        timeout=5.0,
        attempts=8,
        backoff_base=1.0,
        backoff_cap=20.0,
        rate_per_second=4.0,
        rate_burst=80.0,
    )
    assert overrides["smtp"].to_dict() == {"total_timeout": 120.0, "breaker": False}


def test_overrides_change_only_what_they_name(tmp_path: Path) -> None:
    """``policy_for`` is the provider's default policy with the overrides applied: Shopify's
    attempts, back-off, timeout and token bucket change; its retry predicate, jitter and
    ``Retry-After`` handling and its breaker stay the defaults; the clock is the one given."""
    path = tmp_path / "antifragile.toml"
    path.write_text(TOML)
    clock = FakeClock()
    policy = policy_for("shopify", load_overrides(path), clock=clock)
    default = shopify_policy(clock=clock)
    assert policy.name == "shopify"
    assert policy.timeout == 5.0
    assert policy.total_timeout == default.total_timeout
    assert policy.retry is not None
    assert default.retry is not None
    assert policy.retry.attempts == 8
    assert policy.retry.backoff == Exponential(1.0, cap=20.0)
    assert policy.retry.respect_retry_after is default.retry.respect_retry_after
    assert isinstance(policy.rate, TokenBucket)
    assert (policy.rate.rate, policy.rate.burst) == (4.0, 80.0)
    assert default.rate is not None
    assert policy.rate.max_wait == default.rate.max_wait
    assert isinstance(policy.breaker, CircuitBreaker)
    assert policy.breaker.config == CircuitBreaker().config
    assert policy.clock is clock


def test_breaker_and_bulkhead_overrides() -> None:
    """Breaker overrides build a breaker with those settings (the others kept); ``breaker =
    false`` removes it; ``bulkhead`` adds one; a provider without overrides keeps its default
    policy."""
    overrides = parse_overrides(
        {
            "providers": {
                "slack": {
                    "breaker_failure_rate": 0.8,
                    "breaker_window": 40,
                    "breaker_open_duration": 60,
                    "bulkhead": 2,
                },
                "smtp": {"breaker": False},
            }
        }
    )
    slack = policy_for("slack", overrides)
    assert slack.breaker is not None
    assert slack.breaker.config.failure_rate == 0.8
    assert slack.breaker.config.window == 40
    assert slack.breaker.config.open_duration == 60.0
    assert slack.breaker.config.minimum_calls == CircuitBreaker().config.minimum_calls
    assert isinstance(slack.bulkhead, Bulkhead)
    assert slack.bulkhead.max_concurrent == 2
    assert policy_for("smtp", overrides).breaker is None
    untouched = policy_for("hubspot", overrides)
    assert untouched.retry is not None
    assert untouched.retry.attempts == 5
    assert set(policies_for(overrides)) == {"slack", "smtp"}


def test_apply_overrides_to_any_policy_keeps_its_untouched_strategies() -> None:
    """``apply_overrides`` returns a new policy; strategies the overrides do not touch are
    the original's objects (their state is shared); a policy without retry or rate limit
    gains one when the overrides ask for it."""
    bare = Policy("custom", retry=None, breaker=None, budget=None)
    made = apply_overrides(bare, PolicyOverrides(attempts=3, rate_per_second=2.0))
    assert made is not bare
    assert made.retry is not None
    assert made.retry.attempts == 3
    assert made.rate is not None
    assert made.rate.rate == 2.0
    assert made.breaker is None
    base = Policy("custom", retry=Retry(attempts=2))
    changed = apply_overrides(base, PolicyOverrides(timeout=1.5))
    assert changed.timeout == 1.5
    assert changed.breaker is base.breaker
    assert changed.retry is base.retry
    assert changed.budget is base.budget


def test_a_connector_takes_the_overridden_policy() -> None:
    """Every connector accepts ``policy=``: the overridden policy is the one its calls use."""
    policy = policy_for("shopify", {"shopify": PolicyOverrides(attempts=2)})
    connector = ShopifyConnector("shpat_x", base_url="http://127.0.0.1:9", policy=policy)
    assert connector.policy is policy


def test_every_known_provider_has_a_default_policy() -> None:
    """Overrides may name each provider the connectors registry knows, and only those."""
    for provider in PROVIDERS:
        assert isinstance(policy_for(provider), Policy)
    with pytest.raises(ConfigurationError, match="unknown provider"):
        parse_overrides({"providers": {"mailgun": {"attempts": 2}}})
    with pytest.raises(ConfigurationError, match="no connector"):
        policy_for("mailgun")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"retries": 3}, "unknown policy override"),
        ({"attempts": 0}, "attempts must be an integer >= 1"),
        ({"attempts": 2.5}, "attempts must be an integer >= 1"),
        ({"attempts": True}, "attempts must be an integer >= 1"),
        ({"timeout": -1}, "timeout must be a number > 0"),
        ({"timeout": "10s"}, "timeout must be a number > 0"),
        ({"rate_burst": 0.5}, "rate_burst must be a number >= 1"),
        ({"breaker_failure_rate": 1.5}, r"breaker_failure_rate must be within \(0, 1\]"),
        ({"breaker": "no"}, "breaker must be true or false"),
        ({"breaker": False, "breaker_window": 10}, "breaker = false"),
        ({"backoff_base": 5, "backoff_cap": 1}, "backoff_cap"),
        ({"bulkhead": 0}, "bulkhead must be an integer >= 1"),
    ],
)
def test_bad_overrides_are_configuration_errors_naming_the_key(
    table: dict[str, object], message: str
) -> None:
    """An unknown key or a bad value is a ConfigurationError that names the provider's table
    (``providers.shopify``) and says what is valid."""
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_overrides({"providers": {"shopify": table}})
    assert "providers.shopify" in str(caught.value)


def test_a_burst_without_a_rate_on_a_policy_without_rate_limit_is_refused() -> None:
    """``rate_burst`` alone cannot give a rate limit to a policy that has none."""
    with pytest.raises(ConfigurationError, match="rate_burst needs rate_per_second"):
        apply_overrides(Policy("bare"), PolicyOverrides(rate_burst=5))


def test_unreadable_or_invalid_files_are_configuration_errors(tmp_path: Path) -> None:
    """A missing file or TOML that does not parse is a ConfigurationError naming the file;
    ``providers`` that is not a table is refused."""
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_overrides(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[providers.shopify\nattempts = 2")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_overrides(broken)
    with pytest.raises(ConfigurationError, match="must be a table"):
        parse_overrides({"providers": {"shopify": 3}})
    assert load_overrides(_write(tmp_path / "empty.toml", "")) == {}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
