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

import typing as _typing

from antifragile.inbound._actions import (
    SUMMARY_TEMPLATE,
    ActionContext,
    Actions,
    Contact,
)
from antifragile.inbound._alerts import (
    AlertConfig,
    AlertFired,
    Alerts,
    AlertsObserver,
    ErrorRate,
)
from antifragile.inbound._bookings import BOOKING_STATUS, BookingStatuses
from antifragile.inbound._delivery import (
    CORRELATION_KEY,
    STATUS_RANK,
    STATUSES,
    DeliveryHook,
    DeliveryMatch,
    DeliveryStatus,
    DeliveryStatuses,
)
from antifragile.inbound._echo import ECHO_POLL, ECHO_WINDOWS, Echo, Echoes
from antifragile.inbound._flags import FeatureFlags
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
from antifragile.inbound._llm_intents import (
    LLMIntentClassifier,
    LLMIntentConfig,
    TenantClassifiers,
    mask_personal_data,
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
from antifragile.inbound._pipeline import CommerceContext
from antifragile.inbound._replies import (
    Replies,
)
from antifragile.inbound._scheduling_webhooks import (
    acuity_signature,
    calendly_signature,
    parse_acuity,
    parse_calendly,
    verify_acuity,
    verify_calendly,
)
from antifragile.inbound._session_record import RecentTurn, SessionRecord
from antifragile.inbound._sessions import (
    SessionConflictError,
    Sessions,
    SessionTurn,
)
from antifragile.inbound._status_webhooks import (
    calcom_signature,
    hubspot_signature,
    mandrill_signature,
    parse_calcom,
    parse_hubspot,
    parse_mandrill,
    parse_resend,
    parse_sendgrid,
    svix_signature,
    verify_calcom,
    verify_hubspot,
    verify_mandrill,
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
from antifragile.observability._moved import moved_attribute as _moved_attribute

#: names this package exported before 0.2 that are now internal (or live elsewhere); they keep
#: working, with a DeprecationWarning, until the release after
_MOVED: dict[str, tuple[str, str | None]] = {
    "DEFAULT_FLAGS": ("antifragile.inbound._flags", None),
    "ConnectorSource": ("antifragile.inbound._replies", None),
    "InboxEntryMissingError": ("antifragile.inbound._actions", None),
    "RegisteredAction": ("antifragile.inbound._actions", None),
    "SweepReport": ("antifragile.inbound._sessions", None),
    "mask_email": ("antifragile.observability._redaction", "antifragile.observability"),
    "mask_phone": ("antifragile.observability._redaction", "antifragile.observability"),
}


# hidden from type checkers: a name that is not declared above is an error for them
if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> _typing.Any:
        return _moved_attribute(__name__, name, _MOVED)


__all__ = [
    "BOOKING_STATUS",
    "CORRELATION_KEY",
    "DEFAULT_FLOW",
    "DEFAULT_FLOWS",
    "DEFAULT_GRACEFUL_REPLY",
    "DEFAULT_ON_COMPLETE",
    "DEFAULT_RULES",
    "ECHO_POLL",
    "ECHO_WINDOWS",
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
    "BookingStatuses",
    "Channel",
    "Classification",
    "Classifier",
    "CommerceContext",
    "Contact",
    "DeliveryHook",
    "DeliveryMatch",
    "DeliveryStatus",
    "DeliveryStatuses",
    "Echo",
    "Echoes",
    "ErrorRate",
    "EventKind",
    "FeatureFlags",
    "Flow",
    "FlowStep",
    "HandlerResult",
    "Handlers",
    "InboundEvent",
    "Intent",
    "InvalidTaskError",
    "KeywordClassifier",
    "LLMIntentClassifier",
    "LLMIntentConfig",
    "MalformedPayloadError",
    "MessageContext",
    "RecentTurn",
    "RegisteredHandler",
    "Replies",
    "SessionConflictError",
    "SessionRecord",
    "SessionTurn",
    "Sessions",
    "SignatureError",
    "TaskConflictError",
    "TaskNotFoundError",
    "Tasks",
    "Tenant",
    "TenantClassifiers",
    "WebhookError",
    "acuity_signature",
    "calcom_signature",
    "calendly_signature",
    "extract_entities",
    "find_emails",
    "flows_from_mapping",
    "hubspot_signature",
    "load_flows",
    "mandrill_signature",
    "mask_personal_data",
    "parse_acuity",
    "parse_calcom",
    "parse_calendly",
    "parse_flows",
    "parse_hubspot",
    "parse_mandrill",
    "parse_resend",
    "parse_sendgrid",
    "parse_shopify",
    "parse_twilio",
    "parse_whatsapp",
    "shopify_signature",
    "svix_signature",
    "twilio_body_hash",
    "twilio_signature",
    "verify_acuity",
    "verify_calcom",
    "verify_calendly",
    "verify_hubspot",
    "verify_mandrill",
    "verify_sendgrid",
    "verify_shopify",
    "verify_svix",
    "verify_twilio",
    "verify_whatsapp",
    "whatsapp_handshake",
    "whatsapp_signature",
]
