"""Local stand-ins for the providers antifragile talks to, with faults on cue.

:class:`FlakyServer` is a real HTTP/1.1 server on ``127.0.0.1`` whose answers are scripted per
request (:class:`Fault`), drawn at random (:class:`Chaos`), limited by a provider-side rate
limit (:class:`Quota`) or played as a timeline (:class:`Phase`). Tests, the demo and the
benchmarks use it to make a provider fail the way providers do: 5xx bursts, 429 with
``Retry-After``, slow answers, resets, hangs and outages.

:class:`ProviderSandbox` serves provider simulators (:class:`ResendSimulator`, ...) on one such
server, each under its own path prefix, with a fault engine per provider and endpoint
(:class:`ProviderFault`, :class:`FaultPlan`) -- including the *ambiguous* failure, where the
provider acts and the answer is lost -- and a record of every side effect it accepted.

:class:`SMTPSandbox` (a mail server on ``127.0.0.1``) is imported on first use: it needs
``aiosmtpd``, which the ``sandbox`` extra installs.
"""

import importlib as _importlib
import typing as _typing

from antifragile.sandbox._acuity import AcuitySimulator, acuity_signature
from antifragile.sandbox._calcom import CalComSimulator
from antifragile.sandbox._calendly import CalendlySimulator, calendly_signature
from antifragile.sandbox._engine import WEBHOOKS, FaultPlan, ProviderFault, ProviderFaultKind
from antifragile.sandbox._faults import Chaos, Fault, FaultKind, Phase, Quota
from antifragile.sandbox._hubspot import HubSpotSimulator
from antifragile.sandbox._mailchimp import MailchimpSimulator
from antifragile.sandbox._mandrill import MandrillSimulator, mandrill_signature
from antifragile.sandbox._openai import DEFAULT_CHAT_RULES, ChatRule, OpenAISimulator
from antifragile.sandbox._resend import ResendSimulator
from antifragile.sandbox._sandbox import ProviderSandbox
from antifragile.sandbox._sendgrid import SendGridSimulator
from antifragile.sandbox._server import (
    FlakyServer,
    IncomingRequest,
    RecordedRequest,
    RequestHandler,
)
from antifragile.sandbox._shopify import ShopifySimulator
from antifragile.sandbox._simulator import Call, Effect, Reply, Route, Simulator
from antifragile.sandbox._slack import SlackSimulator
from antifragile.sandbox._status import (
    RETRY_DELAYS,
    DeliveryStatus,
    EventWebhookKey,
    StatusWebhooks,
    WebhookAttempt,
    calcom_signature,
    hubspot_signature,
    svix_signature,
)
from antifragile.sandbox._twilio import TwilioSimulator
from antifragile.sandbox._webhooks import (
    Delivery,
    WebhookSender,
    shopify_signature,
    twilio_inbound_message,
    twilio_signature,
    whatsapp_interactive_reply,
    whatsapp_media_message,
    whatsapp_signature,
    whatsapp_status,
    whatsapp_text_message,
)
from antifragile.sandbox._whatsapp import WhatsAppSimulator

if _typing.TYPE_CHECKING:
    from antifragile.sandbox._smtp import SMTPSandbox


# hidden from type checkers: a name that is not declared above is an error for them
if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> _typing.Any:
        if name != "SMTPSandbox":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = _importlib.import_module("antifragile.sandbox._smtp").SMTPSandbox
        globals()[name] = value
        return value


__all__ = [
    "DEFAULT_CHAT_RULES",
    "RETRY_DELAYS",
    "WEBHOOKS",
    "AcuitySimulator",
    "CalComSimulator",
    "CalendlySimulator",
    "Call",
    "Chaos",
    "ChatRule",
    "Delivery",
    "DeliveryStatus",
    "Effect",
    "EventWebhookKey",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "FlakyServer",
    "HubSpotSimulator",
    "IncomingRequest",
    "MailchimpSimulator",
    "MandrillSimulator",
    "OpenAISimulator",
    "Phase",
    "ProviderFault",
    "ProviderFaultKind",
    "ProviderSandbox",
    "Quota",
    "RecordedRequest",
    "Reply",
    "RequestHandler",
    "ResendSimulator",
    "Route",
    "SMTPSandbox",
    "SendGridSimulator",
    "ShopifySimulator",
    "Simulator",
    "SlackSimulator",
    "StatusWebhooks",
    "TwilioSimulator",
    "WebhookAttempt",
    "WebhookSender",
    "WhatsAppSimulator",
    "acuity_signature",
    "calcom_signature",
    "calendly_signature",
    "hubspot_signature",
    "mandrill_signature",
    "shopify_signature",
    "svix_signature",
    "twilio_inbound_message",
    "twilio_signature",
    "whatsapp_interactive_reply",
    "whatsapp_media_message",
    "whatsapp_signature",
    "whatsapp_status",
    "whatsapp_text_message",
]
