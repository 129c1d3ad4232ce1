"""One place that holds a connector per provider, built when first used.

::

    connectors = Connectors(clock=clock)                 # each one configured from the environment
    await connectors.slack.post_message("New order", reference="order/1")
    connectors.configured("shopify")                     # False when its settings are missing
    await connectors.aclose()                            # closes the connectors it built

    # tests and the sandbox: every provider pointed at one server
    connectors = Connectors(base_urls={"resend": sandbox.base_url("resend")},
                            options={"resend": {"api_key": "re_test"}})
    # or instances you built yourself (yours to close)
    connectors = Connectors(instances={"slack": my_slack})

A connector is built from the environment as documented in its module
(``ANTIFRAGILE_<PROVIDER>_BASE_URL`` and its credentials), with per-provider overrides:
*base_urls* (for Slack: the webhook URL; for SMTP: ``host:port``), *options* (keyword arguments
of the connector's constructor: ``{"shopify": {"access_token": ...}}``) and *policies* (a
:class:`~antifragile.Policy` per provider, e.g. from a TOML overrides file). Every connector built
here runs on *clock*. With a *store*, a connector built with its default policy gets a
:class:`~antifragile.SharedCircuitBreaker` named after the provider, so every process that
shares the store trips and recovers together -- and the workers, given :meth:`breakers`, defer
that provider's jobs while it is open.
The quota pauses of Resend, Mandrill and HubSpot (a spent sending quota or daily limit) are
shared through the store's key-value table too (``quota-pause:<provider>``), so one process's
429 stops the others' sends until the reset without a request each.

A provider whose settings are missing is not an error until it is used: ``connectors.shopify``
raises :class:`~antifragile.ConfigurationError` then, and :meth:`configured` tells beforehand.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from antifragile.connectors._acuity import AcuityConnector, acuity_policy
from antifragile.connectors._calcom import CalComConnector, calcom_policy
from antifragile.connectors._calendly import CalendlyConnector, calendly_policy
from antifragile.connectors._failover import (
    CHAIN_ENV,
    EmailChain,
    chain_from,
    email_chain_from_env,
)
from antifragile.connectors._hubspot import HubSpotConnector, hubspot_policy
from antifragile.connectors._mailchimp import MailchimpConnector, mailchimp_policy
from antifragile.connectors._mandrill import MandrillConnector, mandrill_policy
from antifragile.connectors._resend import ResendConnector, resend_policy
from antifragile.connectors._sendgrid import SendGridConnector, sendgrid_policy
from antifragile.connectors._shopify import ShopifyConnector, shopify_policy
from antifragile.connectors._slack import SlackConnector, slack_policy
from antifragile.connectors._smtp import HOST_ENV as SMTP_HOST_ENV
from antifragile.connectors._smtp import SMTPConnector, smtp_policy
from antifragile.connectors._twilio import TwilioConnector, twilio_policy
from antifragile.connectors._whatsapp import WhatsAppConnector, whatsapp_policy
from antifragile.errors import ConfigurationError
from antifragile.policies import SYSTEM_CLOCK, CircuitBreaker, Clock, Policy
from antifragile.stores import SharedCircuitBreaker, Store

_FACTORIES: Mapping[str, Callable[..., Any]] = {
    "whatsapp": WhatsAppConnector,
    "twilio": TwilioConnector,
    "shopify": ShopifyConnector,
    "hubspot": HubSpotConnector,
    "slack": SlackConnector,
    "resend": ResendConnector,
    "sendgrid": SendGridConnector,
    "smtp": SMTPConnector,
    "calcom": CalComConnector,
    "mandrill": MandrillConnector,
    "mailchimp": MailchimpConnector,
    "calendly": CalendlyConnector,
    "acuity": AcuityConnector,
}

# each connector's default policy, built here when its breaker is to be shared (the keyword
# arguments are those of the connector that concern the policy: clock and timeout)
_DEFAULT_POLICIES: Mapping[str, Callable[..., Policy]] = {
    "whatsapp": whatsapp_policy,
    "twilio": twilio_policy,
    "shopify": shopify_policy,
    "hubspot": hubspot_policy,
    "slack": slack_policy,
    "resend": resend_policy,
    "sendgrid": sendgrid_policy,
    "smtp": lambda *, clock, timeout=None: smtp_policy(clock=clock),
    "calcom": calcom_policy,
    "mandrill": mandrill_policy,
    "mailchimp": mailchimp_policy,
    "calendly": calendly_policy,
    "acuity": acuity_policy,
}

#: the providers a :class:`Connectors` knows, by name
PROVIDERS: tuple[str, ...] = tuple(_FACTORIES)

#: the providers whose connector pauses sends while a quota is spent (see ``QuotaPause``)
_QUOTA_PAUSED = frozenset({"resend", "mandrill", "hubspot"})


class Connectors:
    """A lazily built connector per provider (see the module docs).

    *instances* are connectors built by the caller (never closed here); *base_urls*, *options*
    and *policies* configure the ones built here; *clock* is theirs; *store* shares their
    breakers and quota pauses; *timeout* is the per-attempt timeout of their default policies.
    """

    def __init__(
        self,
        *,
        instances: Mapping[str, Any] | None = None,
        base_urls: Mapping[str, str] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        policies: Mapping[str, Policy] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        store: Store | None = None,
        timeout: float | None = None,
    ) -> None:
        for what, mapping in (
            ("instances", instances),
            ("base_urls", base_urls),
            ("options", options),
            ("policies", policies),
        ):
            unknown = set(mapping or {}) - set(_FACTORIES)
            if unknown:
                raise ConfigurationError(
                    f"Connectors {what}: unknown provider(s) {', '.join(sorted(unknown))}; "
                    f"known: {', '.join(PROVIDERS)}"
                )
        self._given: dict[str, Any] = dict(instances or {})
        self._base_urls = dict(base_urls or {})
        self._options = {k: dict(v) for k, v in (options or {}).items()}
        self._policies = dict(policies or {})
        self.clock = clock
        self.store = store
        self.timeout = timeout
        self._built: dict[str, Any] = {}
        self._email_chain: EmailChain | None = None
        self._email_chains: dict[tuple[str, ...], EmailChain] = {}
        #: the email chains tenants name (``Tenant.email_chain``), for :meth:`configured`
        self.tenant_email_chains: list[tuple[str, ...]] = []

    def __repr__(self) -> str:
        return f"Connectors(built={sorted(self._built)!r}, given={sorted(self._given)!r})"

    # -- building -------------------------------------------------------------------------------

    def _kwargs(self, provider: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"clock": self.clock}
        base_url = self._base_urls.get(provider)
        if base_url is not None:
            if provider == "slack":
                kwargs["webhook_url"] = base_url
            elif provider == "smtp":
                host, _, port = base_url.rpartition(":")
                if not host or not port.isdigit():
                    raise ConfigurationError("the SMTP base URL is host:port")
                kwargs["host"], kwargs["port"] = host, int(port)
            else:
                kwargs["base_url"] = base_url
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        policy = self._policies.get(provider)
        if policy is not None:
            kwargs["policy"] = policy
        kwargs.update(self._options.get(provider, {}))
        return kwargs

    def get(self, provider: str) -> Any:
        """The connector of *provider* (built now if needed); ConfigurationError when its
        settings are missing or the provider is unknown."""
        if provider in self._given:
            return self._given[provider]
        built = self._built.get(provider)
        if built is not None:
            return built
        factory = _FACTORIES.get(provider)
        if factory is None:
            raise ConfigurationError(
                f"no connector for provider {provider!r}; known: {', '.join(PROVIDERS)}"
            )
        kwargs = self._kwargs(provider)
        if self.store is not None and "policy" not in self._options.get(provider, {}):
            # before the connector is built, so it runs on the shared breaker from the start;
            # the default or overridden thresholds carry over
            policy = kwargs.get("policy")
            if policy is None:
                timeout = kwargs.get("timeout")
                policy = _DEFAULT_POLICIES[provider](
                    clock=kwargs["clock"], **({} if timeout is None else {"timeout": timeout})
                )
            kwargs["policy"] = self._share_breaker(provider, policy, self.store)
        if self.store is not None and provider in _QUOTA_PAUSED:
            kwargs.setdefault("quota_store", self.store.kv)  # one quota pause for all processes
        connector = factory(**kwargs)
        self._built[provider] = connector
        return connector

    def _share_breaker(self, provider: str, policy: Policy, store: Store) -> Policy:
        """*policy* with its process-local breaker replaced by one shared through *store*."""
        breaker = policy.breaker
        if not isinstance(breaker, CircuitBreaker) or isinstance(breaker, SharedCircuitBreaker):
            return policy
        shared = SharedCircuitBreaker.from_config(
            breaker.config, store, name=provider, clock=self.clock
        )
        return policy.replace(breaker=shared)

    def configured(self, provider: str) -> bool:
        """Whether *provider*'s connector exists or can be built (its settings are there);
        ``"email"``: whether a provider of the email chain can."""
        if provider in self._given or provider in self._built:
            return True
        if provider == "email":  # the email chain: any of its providers will do
            try:
                chain = chain_from(os.environ.get(CHAIN_ENV))
            except ConfigurationError:
                return False
            chains = [chain, *self.tenant_email_chains]
            return any(self.configured(p) for names in chains for p in names)
        if provider not in _FACTORIES:
            return False
        if provider == "smtp":  # an SMTP connector builds with defaults: require a host
            return bool(self._base_urls.get("smtp") or self._options.get("smtp") or _smtp_env())
        try:
            self.get(provider)
        except ConfigurationError:
            return False
        return True

    @property
    def built(self) -> dict[str, Any]:
        """The connectors in use so far (given or built), by provider."""
        return {**self._built, **self._given}

    def breakers(self) -> dict[str, CircuitBreaker]:
        """The circuit breakers of the connectors in use so far, by provider (for
        ``jobs.breakers``, so that workers defer a provider's jobs while it is open)."""
        found: dict[str, CircuitBreaker] = {}
        for provider, connector in self.built.items():
            policy = getattr(connector, "policy", None)
            breaker = getattr(policy, "breaker", None)
            if isinstance(breaker, CircuitBreaker):
                found[provider] = breaker
        return found

    def email_chain(self, providers: Sequence[str] | None = None) -> EmailChain:
        """The email providers in ``ANTIFRAGILE_EMAIL_CHAIN`` order (``resend`` alone when
        unset) -- or in *providers*' order (a tenant's own chain) --, built once each;
        unsettled sends kept in the store's key-value table when there is a store (see
        :mod:`antifragile.connectors._failover`)."""
        kv = self.store.kv if self.store is not None else None
        if providers:
            names = tuple(providers)
            chain = self._email_chains.get(names)
            if chain is None:
                chain = email_chain_from_env(self.get, kv=kv, clock=self.clock, providers=names)
                self._email_chains[names] = chain
            return chain
        if self._email_chain is None:
            self._email_chain = email_chain_from_env(self.get, kv=kv, clock=self.clock)
        return self._email_chain

    async def aclose(self) -> None:
        """Close the connectors built here (not the given ones); they are built anew if used
        again."""
        built, self._built = self._built, {}
        for connector in built.values():
            await connector.aclose()

    async def __aenter__(self) -> Connectors:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- typed access ---------------------------------------------------------------------------

    @property
    def whatsapp(self) -> WhatsAppConnector:
        return cast(WhatsAppConnector, self.get("whatsapp"))

    @property
    def twilio(self) -> TwilioConnector:
        return cast(TwilioConnector, self.get("twilio"))

    @property
    def shopify(self) -> ShopifyConnector:
        return cast(ShopifyConnector, self.get("shopify"))

    @property
    def hubspot(self) -> HubSpotConnector:
        return cast(HubSpotConnector, self.get("hubspot"))

    @property
    def slack(self) -> SlackConnector:
        return cast(SlackConnector, self.get("slack"))

    @property
    def resend(self) -> ResendConnector:
        return cast(ResendConnector, self.get("resend"))

    @property
    def sendgrid(self) -> SendGridConnector:
        return cast(SendGridConnector, self.get("sendgrid"))

    @property
    def smtp(self) -> SMTPConnector:
        return cast(SMTPConnector, self.get("smtp"))

    @property
    def calcom(self) -> CalComConnector:
        return cast(CalComConnector, self.get("calcom"))

    @property
    def mandrill(self) -> MandrillConnector:
        return cast(MandrillConnector, self.get("mandrill"))

    @property
    def mailchimp(self) -> MailchimpConnector:
        return cast(MailchimpConnector, self.get("mailchimp"))

    @property
    def calendly(self) -> CalendlyConnector:
        return cast(CalendlyConnector, self.get("calendly"))

    @property
    def acuity(self) -> AcuityConnector:
        return cast(AcuityConnector, self.get("acuity"))


def _smtp_env() -> bool:
    return bool(os.environ.get(SMTP_HOST_ENV))
