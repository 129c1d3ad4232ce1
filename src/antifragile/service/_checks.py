"""What the service checks when it starts, before a customer can meet a configuration mistake.

* **Tenants and flows** (:func:`check_tenants`): every flow a tenant names exists -- a tenant
  whose ``flow`` is misspelt would otherwise start and never greet a new contact. The message
  names the tenant and the closest flow. (The placeholders of each flow's texts are checked
  when the flow is built: :class:`antifragile.inbound.Flow`.)
* **Variables** (:func:`unknown_variables`): an ``ANTIFRAGILE_*`` environment variable the
  service does not know is a warning naming the closest known one -- a misspelt variable is
  otherwise ignored without a word.
* **Secrets** (:func:`missing_secrets`): a channel that is set up without the secret its
  webhooks are verified with (WhatsApp without ``ANTIFRAGILE_WHATSAPP_APP_SECRET``, Twilio
  without ``ANTIFRAGILE_TWILIO_AUTH_TOKEN``, a tenant's shop without
  ``ANTIFRAGILE_SHOPIFY_WEBHOOK_SECRET``) is a warning at start and a ``missing`` entry in
  ``/health``, which makes the service ``degraded``: its inbound messages are refused.
* **Signed URLs** (:func:`unverifiable_webhooks`): Twilio and HubSpot sign the URL they called;
  with one of them set up and neither ``ANTIFRAGILE_PUBLIC_URL`` nor
  ``ANTIFRAGILE_ALLOWED_HOSTS``, that URL is not known (the client's ``Host`` must not decide
  it) and their webhooks are refused: a warning at start and ``public_url: missing`` in
  ``/health`` (``degraded``).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping
from email.utils import parseaddr
from typing import Any

from antifragile.connectors._failover import chain_from
from antifragile.errors import ConfigurationError
from antifragile.inbound._flows import Flow
from antifragile.inbound._model import Tenant
from antifragile.service._settings import ENVIRONMENT, PREFIX, Settings

__all__ = [
    "KNOWN_VARIABLES",
    "check_tenant_email",
    "check_tenants",
    "closest",
    "log_startup_warnings",
    "missing_secrets",
    "unknown_variables",
    "unverifiable_webhooks",
]

_log = logging.getLogger("antifragile.config")

#: the ``ANTIFRAGILE_*`` variables read outside the settings (connectors, commands, alerts,
#: tracing, the sandbox); the settings' own come from ``ENVIRONMENT``
_OTHER_VARIABLES = frozenset(
    {
        "ANTIFRAGILE_APP",
        "ANTIFRAGILE_CONFIG",
        "ANTIFRAGILE_URL",
        "ANTIFRAGILE_LOOP",
        "ANTIFRAGILE_LOG_FORMAT",
        "ANTIFRAGILE_LOG_LEVEL",
        "ANTIFRAGILE_METRICS_PORT",
        "ANTIFRAGILE_WORKER_METRICS_PORT",
        "ANTIFRAGILE_METRICS_TOKEN",
        "ANTIFRAGILE_OTEL_EXPORTER",
        "ANTIFRAGILE_EMAIL_FROM",
        "ANTIFRAGILE_DATA_KEYS",
        "ANTIFRAGILE_EMAIL_CHAIN",
        "ANTIFRAGILE_EMAIL_SETTLE_WINDOW",
        "ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN",
        "ANTIFRAGILE_WHATSAPP_BASE_URL",
        "ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID",
        "ANTIFRAGILE_TWILIO_ACCOUNT_SID",
        "ANTIFRAGILE_TWILIO_BASE_URL",
        "ANTIFRAGILE_SHOPIFY_ACCESS_TOKEN",
        "ANTIFRAGILE_SHOPIFY_API",
        "ANTIFRAGILE_SHOPIFY_BASE_URL",
        "ANTIFRAGILE_HUBSPOT_ACCESS_TOKEN",
        "ANTIFRAGILE_HUBSPOT_BASE_URL",
        "ANTIFRAGILE_SLACK_WEBHOOK_URL",
        "ANTIFRAGILE_RESEND_API_KEY",
        "ANTIFRAGILE_RESEND_BASE_URL",
        "ANTIFRAGILE_SENDGRID_API_KEY",
        "ANTIFRAGILE_SENDGRID_BASE_URL",
        "ANTIFRAGILE_SMTP_HOST",
        "ANTIFRAGILE_SMTP_PORT",
        "ANTIFRAGILE_SMTP_USERNAME",
        "ANTIFRAGILE_SMTP_PASSWORD",
        "ANTIFRAGILE_SMTP_STARTTLS",
        "ANTIFRAGILE_CALCOM_API_KEY",
        "ANTIFRAGILE_CALCOM_BASE_URL",
        "ANTIFRAGILE_CALCOM_EVENT_TYPE",
        "ANTIFRAGILE_CALCOM_EVENT_TYPE_ID",
        "ANTIFRAGILE_CALCOM_PUBLIC_URL",
        "ANTIFRAGILE_CALCOM_TIME_ZONE",
        "ANTIFRAGILE_CALCOM_USERNAME",
        "ANTIFRAGILE_CALENDLY_TOKEN",
        "ANTIFRAGILE_CALENDLY_BASE_URL",
        "ANTIFRAGILE_CALENDLY_EVENT_TYPE",
        "ANTIFRAGILE_ACUITY_USER_ID",
        "ANTIFRAGILE_ACUITY_API_KEY",
        "ANTIFRAGILE_ACUITY_BASE_URL",
        "ANTIFRAGILE_ACUITY_APPOINTMENT_TYPE_ID",
        "ANTIFRAGILE_BOOKING_PROVIDER",
        "ANTIFRAGILE_BOOKING_TIME_ZONE",
        "ANTIFRAGILE_SANDBOX_CALENDLY_SIGNING_KEY",
        "ANTIFRAGILE_SANDBOX_ACUITY_API_KEY",
        "ANTIFRAGILE_SANDBOX_CALCOM_WEBHOOK_SECRET",
        "ANTIFRAGILE_SANDBOX_HUBSPOT_CLIENT_SECRET",
        "ANTIFRAGILE_SANDBOX_MANDRILL_WEBHOOK_KEY",
        "ANTIFRAGILE_MANDRILL_API_KEY",
        "ANTIFRAGILE_MANDRILL_BASE_URL",
        "ANTIFRAGILE_MAILCHIMP_API_KEY",
        "ANTIFRAGILE_MAILCHIMP_BASE_URL",
        "ANTIFRAGILE_MAILCHIMP_LIST_ID",
        "ANTIFRAGILE_MAILCHIMP_STATUS_IF_NEW",
        "ANTIFRAGILE_SANDBOX_RESEND_WEBHOOK_SECRET",
        "ANTIFRAGILE_SANDBOX_TIME_SCALE",
        "ANTIFRAGILE_SANDBOX_WEBHOOK_URLS",
        "ANTIFRAGILE_SANDBOX_WHATSAPP_APP_SECRET",
    }
)

#: every ``ANTIFRAGILE_*`` variable something in the package reads (``<name>_FILE`` of each
#: is known too: the command line reads a secret from that file)
KNOWN_VARIABLES: frozenset[str] = frozenset(ENVIRONMENT.values()) | _OTHER_VARIABLES

#: a channel's webhook secret: (provider, the tenant field that routes it to a tenant, the
#: setting holding the secret, whether the provider's connector settings alone mean its
#: webhooks are expected -- a Shopify access token is for outbound calls only)
_CHANNEL_SECRETS = (
    ("whatsapp", "whatsapp_phone_number_id", "whatsapp_app_secrets", True),
    ("twilio", "twilio_number", "twilio_auth_tokens", True),
    ("shopify", "shop_domain", "shopify_webhook_secrets", False),
)


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like *name* (:func:`difflib.get_close_matches`), or ``None``."""
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


def check_tenants(tenants: Iterable[Tenant], flows: Mapping[str, Flow]) -> None:
    """Raise :class:`~antifragile.ConfigurationError` when a tenant names a flow that does not
    exist (the message names the tenant, the flow and the closest existing one)."""
    for tenant in tenants:
        if not tenant.flow or tenant.flow in flows:  # none or "": the tenant runs no flow
            continue
        suggestion = closest(tenant.flow, flows)
        hint = f"did you mean {suggestion!r}? " if suggestion else ""
        raise ConfigurationError(
            f"tenant {tenant.id!r} names the flow {tenant.flow!r}, which does not exist; "
            f"{hint}define [flows.{tenant.flow}] or set the tenant's flow to one of: "
            f"{', '.join(sorted(flows)) or 'none'}"
        )


def check_tenant_email(tenants: Iterable[Tenant]) -> None:
    """Raise :class:`~antifragile.ConfigurationError` when a tenant's email settings are
    wrong: an ``email_chain`` naming a provider twice or one that cannot send email, an
    ``email_from`` that is not an address, an empty ``mailchimp_list_id``."""
    for tenant in tenants:
        where = f"tenant {tenant.id!r}"
        if tenant.email_chain is not None:
            if not tenant.email_chain.strip():
                raise ConfigurationError(f"{where}: email_chain is empty (unset it instead)")
            try:
                chain_from(tenant.email_chain)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{where}: email_chain: {exc.message}") from None
        if tenant.email_from is not None and "@" not in parseaddr(tenant.email_from)[1]:
            raise ConfigurationError(
                f'{where}: email_from is not an email address ("Name <a@b.example>" or a@b.example)'
            )
        if tenant.mailchimp_list_id is not None and not tenant.mailchimp_list_id.strip():
            raise ConfigurationError(f"{where}: mailchimp_list_id is empty (unset it instead)")


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """The ``ANTIFRAGILE_*`` variables of *environ* nothing reads, each with the closest known
    name (or ``None``), sorted by name."""
    found: list[tuple[str, str | None]] = []
    for name in sorted(environ):
        if not name.startswith(PREFIX):
            continue
        base = name.removesuffix("_FILE")
        if name in KNOWN_VARIABLES or base in KNOWN_VARIABLES:
            continue
        # compared without the prefix all of them share (which would make anything similar)
        suffixes = {known.removeprefix(PREFIX): known for known in KNOWN_VARIABLES}
        match = closest(base.removeprefix(PREFIX), suffixes)
        found.append((name, suffixes[match] if match else None))
    return found


def missing_secrets(settings: Settings, tenants: Iterable[Tenant], connectors: Any) -> list[str]:
    """The variables of the webhook secrets a configured channel lacks: the channel is
    configured when a tenant is routed through it (or, for WhatsApp and Twilio, when its
    connector has its settings)."""
    tenant_list = list(tenants)
    missing: list[str] = []
    for provider, routing_field, secret_field, by_connector in _CHANNEL_SECRETS:
        if getattr(settings, secret_field):
            continue
        routed = any(getattr(tenant, routing_field) for tenant in tenant_list)
        built = by_connector and connectors is not None and connectors.configured(provider)
        if routed or built:
            missing.append(ENVIRONMENT[secret_field])
    return missing


def unverifiable_webhooks(
    settings: Settings, tenants: Iterable[Tenant], connectors: Any
) -> list[str]:
    """The providers whose webhooks sign the URL they called (Twilio, HubSpot) that are set up
    -- their secret is set, or (Twilio) a tenant is routed through it or its connector is
    configured -- while the service knows no URL to check them over (neither
    ``ANTIFRAGILE_PUBLIC_URL`` nor ``ANTIFRAGILE_ALLOWED_HOSTS``): their webhooks are refused."""
    if getattr(settings, "public_url", None) or getattr(settings, "allowed_hosts", ()):
        return []
    found: list[str] = []
    routed = any(getattr(tenant, "twilio_number", None) for tenant in tenants)
    built = connectors is not None and connectors.configured("twilio")
    if getattr(settings, "twilio_auth_tokens", ()) or routed or built:
        found.append("twilio")
    if getattr(settings, "hubspot_webhook_secrets", ()):
        found.append("hubspot")
    return found


def log_startup_warnings(
    environ: Mapping[str, str], settings: Settings, tenants: Iterable[Tenant], connectors: Any
) -> None:
    """Log (logger ``antifragile.config``, level warning) each unknown variable and each
    missing secret (see the module docs)."""
    tenant_list = list(tenants)
    for name, suggestion in unknown_variables(environ):
        hint = f"; did you mean {suggestion}?" if suggestion else ""
        _log.warning(
            "unknown variable %s is ignored%s",
            name,
            hint,
            extra={"variable": name, "suggestion": suggestion},
        )
    for variable in missing_secrets(settings, tenant_list, connectors):
        _log.warning(
            "%s is not set: the channel's webhooks cannot be verified and are refused; "
            "set it (or %s_FILE)",
            variable,
            variable,
            extra={"variable": variable},
        )
    providers = unverifiable_webhooks(settings, tenant_list, connectors)
    if providers:
        _log.warning(
            "ANTIFRAGILE_PUBLIC_URL is not set: %s webhooks sign the URL they called and are "
            "refused (403 PUBLIC_URL_REQUIRED); set it (or ANTIFRAGILE_ALLOWED_HOSTS)",
            " and ".join(p.capitalize().replace("Hubspot", "HubSpot") for p in providers),
            extra={"variable": "ANTIFRAGILE_PUBLIC_URL", "providers": providers},
        )
