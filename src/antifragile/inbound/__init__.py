"""Inbound layer: verified, parsed provider events and what the service does with them.

Webhook deliveries from WhatsApp Cloud, Twilio and Shopify are verified and parsed into
:class:`InboundEvent` values (:mod:`antifragile.inbound._webhooks`), and so are the status webhooks
of SendGrid, Resend, Cal.com and HubSpot (:mod:`antifragile.inbound._status_webhooks`): every
status is a :class:`DeliveryStatus`, recorded on the outbound message by
:class:`DeliveryStatuses` (:mod:`antifragile.inbound._delivery`); the event model, tenants and
classifications live in :mod:`antifragile.inbound._model`. Conversation flows
(:mod:`antifragile.inbound._flows`) are run per contact by :class:`Sessions`
(:mod:`antifragile.inbound._sessions`), and answers go out as durable jobs through
:class:`Replies` (:mod:`antifragile.inbound._replies`).
"""

from antifragile.inbound._actions import (
    SUMMARY_TEMPLATE,
    ActionContext,
    Actions,
    Contact,
    InboxEntryMissingError,
    RegisteredAction,
)
from antifragile.inbound._alerts import (
    AlertConfig,
    AlertFired,
    Alerts,
    AlertsObserver,
    ErrorRate,
)
from antifragile.inbound._delivery import (
    CORRELATION_KEY,
    STATUS_RANK,
    STATUSES,
    DeliveryHook,
    DeliveryMatch,
    DeliveryStatus,
    DeliveryStatuses,
)
from antifragile.inbound._flags import DEFAULT_FLAGS, FeatureFlags
from antifragile.inbound._flows import (
    DEFAULT_FLOW,
    DEFAULT_FLOWS,
    DEFAULT_ON_COMPLETE,
    Flow,
    FlowStep,
    flows_from_mapping,
    load_flows,
    parse_flows,
)
from antifragile.inbound._handlers import (
    BookingSettings,
    HandlerResult,
    Handlers,
    MessageContext,
    RegisteredHandler,
)
from antifragile.inbound._intents import (
    DEFAULT_RULES,
    Classifier,
    KeywordClassifier,
    extract_entities,
    find_emails,
)
from antifragile.inbound._model import (
    DEFAULT_GRACEFUL_REPLY,
    Channel,
    Classification,
    EventKind,
    InboundEvent,
    Intent,
    Tenant,
)
from antifragile.inbound._replies import (
    ConnectorSource,
    Replies,
    mask_email,
    mask_phone,
)
from antifragile.inbound._session_record import RecentTurn, SessionRecord
from antifragile.inbound._sessions import (
    SessionConflictError,
    Sessions,
    SessionTurn,
    SweepReport,
)
from antifragile.inbound._status_webhooks import (
    calcom_signature,
    hubspot_signature,
    parse_calcom,
    parse_hubspot,
    parse_resend,
    parse_sendgrid,
    svix_signature,
    verify_calcom,
    verify_hubspot,
    verify_sendgrid,
    verify_svix,
)
from antifragile.inbound._tasks import (
    InvalidTaskError,
    TaskConflictError,
    TaskNotFoundError,
    Tasks,
)
from antifragile.inbound._webhooks import (
    MalformedPayloadError,
    SignatureError,
    WebhookError,
    parse_shopify,
    parse_twilio,
    parse_whatsapp,
    shopify_signature,
    twilio_body_hash,
    twilio_signature,
    verify_shopify,
    verify_twilio,
    verify_whatsapp,
    whatsapp_handshake,
    whatsapp_signature,
)

__all__ = [
    "CORRELATION_KEY",
    "DEFAULT_FLAGS",
    "DEFAULT_FLOW",
    "DEFAULT_FLOWS",
    "DEFAULT_GRACEFUL_REPLY",
    "DEFAULT_ON_COMPLETE",
    "DEFAULT_RULES",
    "STATUSES",
    "STATUS_RANK",
    "SUMMARY_TEMPLATE",
    "ActionContext",
    "Actions",
    "AlertConfig",
    "AlertFired",
    "Alerts",
    "AlertsObserver",
    "BookingSettings",
    "Channel",
    "Classification",
    "Classifier",
    "ConnectorSource",
    "Contact",
    "DeliveryHook",
    "DeliveryMatch",
    "DeliveryStatus",
    "DeliveryStatuses",
    "ErrorRate",
    "EventKind",
    "FeatureFlags",
    "Flow",
    "FlowStep",
    "HandlerResult",
    "Handlers",
    "InboundEvent",
    "InboxEntryMissingError",
    "Intent",
    "InvalidTaskError",
    "KeywordClassifier",
    "MalformedPayloadError",
    "MessageContext",
    "RecentTurn",
    "RegisteredAction",
    "RegisteredHandler",
    "Replies",
    "SessionConflictError",
    "SessionRecord",
    "SessionTurn",
    "Sessions",
    "SignatureError",
    "SweepReport",
    "TaskConflictError",
    "TaskNotFoundError",
    "Tasks",
    "Tenant",
    "WebhookError",
    "calcom_signature",
    "extract_entities",
    "find_emails",
    "flows_from_mapping",
    "hubspot_signature",
    "load_flows",
    "mask_email",
    "mask_phone",
    "parse_calcom",
    "parse_flows",
    "parse_hubspot",
    "parse_resend",
    "parse_sendgrid",
    "parse_shopify",
    "parse_twilio",
    "parse_whatsapp",
    "shopify_signature",
    "svix_signature",
    "twilio_body_hash",
    "twilio_signature",
    "verify_calcom",
    "verify_hubspot",
    "verify_sendgrid",
    "verify_shopify",
    "verify_svix",
    "verify_twilio",
    "verify_whatsapp",
    "whatsapp_handshake",
    "whatsapp_signature",
]
