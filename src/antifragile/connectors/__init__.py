"""Connectors layer: one module per provider -- its operations, its default policy, and how it
stays exactly-once.

Each connector is configured from ``ANTIFRAGILE_<PROVIDER>_BASE_URL`` and its credentials (for
Resend: ``ANTIFRAGILE_RESEND_BASE_URL`` and ``ANTIFRAGILE_RESEND_API_KEY``), so any of them can
be pointed at the :class:`~antifragile.sandbox.ProviderSandbox` or any stand-in server.
"""

from antifragile.connectors._acuity import (
    AcuityConnector,
    Appointment,
    AvailableTime,
    acuity_policy,
)
from antifragile.connectors._calcom import Booking, CalComConnector, booking_link, calcom_policy
from antifragile.connectors._calendly import (
    CalendlyConnector,
    CalendlyEventType,
    SchedulingLink,
    calendly_policy,
)
from antifragile.connectors._correlation import REF_ARG, correlation_for, is_correlation
from antifragile.connectors._failover import ChainSent, EmailChain, EmailUnsettledError
from antifragile.connectors._hubspot import Contact, HubSpotConnector, hubspot_policy
from antifragile.connectors._mailchimp import (
    MailchimpConnector,
    Member,
    mailchimp_policy,
    subscriber_hash,
)
from antifragile.connectors._mandrill import MandrillConnector, MandrillSent, mandrill_policy
from antifragile.connectors._markup import ESCAPERS, MessageTemplate, escape_slack
from antifragile.connectors._messaging import DeliveryUnknownError
from antifragile.connectors._outcome import OutcomeUnknownError, ProviderRefusedError
from antifragile.connectors._overrides import (
    PolicyOverrides,
    apply_overrides,
    load_overrides,
    parse_overrides,
    policies_for,
    policy_for,
)
from antifragile.connectors._registry import PROVIDERS, Connectors
from antifragile.connectors._resend import (
    ResendConnector,
    SentEmail,
    idempotency_key_for,
    resend_policy,
)
from antifragile.connectors._sendgrid import SendGridConnector, SendGridSent, sendgrid_policy
from antifragile.connectors._shopify import (
    InventoryLevel,
    ShopifyConnector,
    ShopifyCustomer,
    ShopifyOrder,
    shopify_policy,
)
from antifragile.connectors._slack import SlackConnector, slack_policy
from antifragile.connectors._smtp import SMTPConnector, SMTPSent, message_id_for, smtp_policy
from antifragile.connectors._templates import (
    DEFAULT_TEMPLATES,
    EmailTemplate,
    EmailTemplates,
    RenderedEmail,
)
from antifragile.connectors._twilio import SentMessage, TwilioConnector, twilio_policy
from antifragile.connectors._whatsapp import (
    SentWhatsApp,
    WhatsAppConnector,
    WhatsAppMedia,
    WhatsAppTemplate,
    whatsapp_policy,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "ESCAPERS",
    "PROVIDERS",
    "REF_ARG",
    "AcuityConnector",
    "Appointment",
    "AvailableTime",
    "Booking",
    "CalComConnector",
    "CalendlyConnector",
    "CalendlyEventType",
    "ChainSent",
    "Connectors",
    "Contact",
    "DeliveryUnknownError",
    "EmailChain",
    "EmailTemplate",
    "EmailTemplates",
    "EmailUnsettledError",
    "HubSpotConnector",
    "InventoryLevel",
    "MailchimpConnector",
    "MandrillConnector",
    "MandrillSent",
    "Member",
    "MessageTemplate",
    "OutcomeUnknownError",
    "PolicyOverrides",
    "ProviderRefusedError",
    "RenderedEmail",
    "ResendConnector",
    "SMTPConnector",
    "SMTPSent",
    "SchedulingLink",
    "SendGridConnector",
    "SendGridSent",
    "SentEmail",
    "SentMessage",
    "SentWhatsApp",
    "ShopifyConnector",
    "ShopifyCustomer",
    "ShopifyOrder",
    "SlackConnector",
    "TwilioConnector",
    "WhatsAppConnector",
    "WhatsAppMedia",
    "WhatsAppTemplate",
    "acuity_policy",
    "apply_overrides",
    "booking_link",
    "calcom_policy",
    "calendly_policy",
    "correlation_for",
    "escape_slack",
    "hubspot_policy",
    "idempotency_key_for",
    "is_correlation",
    "load_overrides",
    "mailchimp_policy",
    "mandrill_policy",
    "message_id_for",
    "parse_overrides",
    "policies_for",
    "policy_for",
    "resend_policy",
    "sendgrid_policy",
    "shopify_policy",
    "slack_policy",
    "smtp_policy",
    "subscriber_hash",
    "twilio_policy",
    "whatsapp_policy",
]
