"""The Connectors registry: lazy building from settings, what counts as configured, given
instances left alone, shared breakers with a store, and closing only what it built."""

from __future__ import annotations

import pytest

from antifragile import ConfigurationError, FakeClock, Policy, SharedCircuitBreaker
from antifragile.connectors import (
    PROVIDERS,
    Connectors,
    ResendConnector,
    ShopifyConnector,
    SlackConnector,
)
from antifragile.stores._memory import MemoryStore

ENV = (
    "ANTIFRAGILE_RESEND_API_KEY",
    "ANTIFRAGILE_SHOPIFY_ACCESS_TOKEN",
    "ANTIFRAGILE_SHOPIFY_BASE_URL",
    "ANTIFRAGILE_SLACK_WEBHOOK_URL",
    "ANTIFRAGILE_SMTP_HOST",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


async def test_connectors_are_built_once_when_first_used(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """A property builds its connector from the environment on first use, on the registry's
    clock, and returns the same instance afterwards."""
    monkeypatch.setenv("ANTIFRAGILE_RESEND_API_KEY", "re_from_env_123")
    connectors = Connectors(clock=clock)
    assert connectors.built == {}
    resend = connectors.resend
    assert isinstance(resend, ResendConnector)
    assert connectors.resend is resend
    assert resend.policy.clock is clock
    assert set(connectors.built) == {"resend"}
    await connectors.aclose()


async def test_missing_settings_are_an_error_only_when_used() -> None:
    """Without settings a provider is not configured; using it is a ConfigurationError that
    names the missing variable. Unknown providers are refused."""
    connectors = Connectors()
    assert not connectors.configured("shopify")
    assert not connectors.configured("smtp")
    assert not connectors.configured("fax")
    with pytest.raises(ConfigurationError, match="ANTIFRAGILE_SHOPIFY_ACCESS_TOKEN"):
        _ = connectors.shopify
    with pytest.raises(ConfigurationError, match="no connector"):
        connectors.get("fax")
    with pytest.raises(ConfigurationError, match="unknown provider"):
        Connectors(base_urls={"fax": "http://x"})


async def test_base_urls_options_and_policies_configure_the_built_ones() -> None:
    """base_urls (Slack: the webhook URL; SMTP: host:port), options (constructor arguments)
    and policies are passed to the connectors built."""
    policy = Policy("shopify")
    connectors = Connectors(
        base_urls={
            "shopify": "http://127.0.0.1:9/shopify/",
            "slack": "http://127.0.0.1:9/slack/services/T/B/X",
            "smtp": "mail.local:2525",
        },
        options={"shopify": {"access_token": "shpat_x"}},
        policies={"shopify": policy},
        timeout=3.0,
    )
    shopify = connectors.shopify
    assert isinstance(shopify, ShopifyConnector)
    assert shopify.base_url == "http://127.0.0.1:9/shopify"
    assert shopify.policy is policy
    assert isinstance(connectors.slack, SlackConnector)
    assert connectors.configured("smtp")
    assert (connectors.smtp.host, connectors.smtp.port) == ("mail.local", 2525)
    assert set(connectors.breakers()) >= {"shopify", "slack"}
    await connectors.aclose()
    assert connectors.built == {}


async def test_given_instances_are_used_and_never_closed() -> None:
    """An instance passed in (a stand-in with the same methods is fine) is returned as is,
    counts as configured, and aclose() leaves it open: it is the caller's."""

    class StandIn:
        closed = False

        async def aclose(self) -> None:
            self.closed = True

    mine = StandIn()
    connectors = Connectors(instances={"resend": mine})
    assert connectors.get("resend") is mine
    assert connectors.configured("resend")
    await connectors.aclose()
    assert connectors.get("resend") is mine
    assert not mine.closed


async def test_a_store_gives_default_policies_a_shared_breaker(clock: FakeClock) -> None:
    """With a store, a connector built with its default policy gets a SharedCircuitBreaker
    named after the provider; breakers() lists it for the workers."""
    store = MemoryStore(clock=clock)
    await store.open()
    connectors = Connectors(
        options={"resend": {"api_key": "re_shared_key_1"}}, store=store, clock=clock
    )
    breaker = connectors.resend.policy.breaker
    assert isinstance(breaker, SharedCircuitBreaker)
    assert breaker.key == "resend"
    assert connectors.breakers() == {"resend": breaker}
    await connectors.aclose()
    await store.close()


def test_every_provider_has_a_typed_property() -> None:
    """Each known provider is reachable as a property of the same name."""
    for provider in PROVIDERS:
        assert isinstance(getattr(Connectors, provider), property), provider


async def test_the_email_chain_is_configured_when_one_of_its_providers_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``configured("email")`` -- the email actions' provider -- asks the chain's providers;
    the chain is built once, in the setting's order."""
    monkeypatch.setenv("ANTIFRAGILE_EMAIL_CHAIN", "resend,sendgrid")
    assert not Connectors().configured("email")
    connectors = Connectors(options={"sendgrid": {"api_key": "SG.x"}})
    assert connectors.configured("email")
    monkeypatch.setenv("ANTIFRAGILE_EMAIL_CHAIN", "smtp,smtp")
    assert not Connectors().configured("email")
    monkeypatch.setenv("ANTIFRAGILE_EMAIL_CHAIN", "sendgrid")
    chain = connectors.email_chain()
    assert chain.names == ("sendgrid",)
    assert connectors.email_chain() is chain
    await connectors.aclose()


async def test_a_tenants_own_chain_is_built_once_and_counts_as_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``email_chain(providers)`` builds a tenant's chain once per provider list; its providers
    make ``configured("email")`` true even when the service's chain has none configured; a
    chain naming a provider that sends no email is refused."""
    monkeypatch.delenv("ANTIFRAGILE_EMAIL_CHAIN", raising=False)
    monkeypatch.delenv("ANTIFRAGILE_RESEND_API_KEY", raising=False)
    connectors = Connectors(options={"mandrill": {"api_key": "md-x"}})
    assert not connectors.configured("email")
    connectors.tenant_email_chains = [("mandrill", "smtp")]
    assert connectors.configured("email")
    chain = connectors.email_chain(("mandrill", "smtp"))
    assert chain.names == ("mandrill", "smtp")
    assert connectors.email_chain(("mandrill", "smtp")) is chain
    assert connectors.email_chain(("mandrill",)) is not chain
    monkeypatch.setenv("ANTIFRAGILE_EMAIL_CHAIN", "mandrill,slack")
    with pytest.raises(ConfigurationError, match="slack cannot send email"):
        connectors.email_chain()
    await connectors.aclose()
