"""Handlers: what the assistant does with a classified message -- a reply, and actions.

::

    handlers = Handlers()
    handlers.register_defaults()                 # the six intents of Intent, with replies

    @handlers.on_message("ORDER_REQUEST", min_confidence=0.8, priority=10,
                         actions=["notify_sales", "create_order"])
    async def big_order(ctx: MessageContext) -> HandlerResult:
        return HandlerResult(reply="Thanks! We're on it.", data={"rush": True})

    handler = handlers.choose(classification)    # a RegisteredHandler, never None
    result = await handler.run(ctx)              # HandlerResult(reply, data)

**Choice.** :meth:`Handlers.choose` takes the handlers registered for the classification's
intent (or for ``"*"``, any intent) whose ``min_confidence`` is at most its confidence, and picks
the one with the highest ``priority``; on a tie, the one registered first. When none fits, the
handlers for ``UNKNOWN`` are asked the same way (their ``min_confidence`` ignored), and when
there are none, the built-in fallback answers: a polite reply and the ``flag_for_review``
action, so that no message goes unanswered or unseen.

**A handler** is an ``async def handler(ctx: MessageContext)`` returning a
:class:`HandlerResult`, a reply string, or ``None`` (no reply). Its ``actions`` -- names of
:class:`~antifragile.inbound.Actions` -- run afterwards as one saga
(:meth:`~antifragile.inbound.Actions.saga_for`), with ``HandlerResult.data`` in the saga's data:
keep personal data out of it (job payloads never hold any; actions read the message from the
inbox record).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from antifragile.connectors import booking_link
from antifragile.connectors._calcom import DEFAULT_PUBLIC_URL
from antifragile.errors import ConfigurationError
from antifragile.inbound._model import Classification, InboundEvent, Intent, Tenant

if TYPE_CHECKING:
    from antifragile.connectors import Connectors
    from antifragile.inbound._tasks import Tasks
    from antifragile.jobs import Jobs

#: the intent a handler registered for ``"*"`` answers to: any
ANY_INTENT = "*"

FALLBACK_NAME = "fallback"
FALLBACK_REPLY = "Thanks for your message! A member of our team will get back to you shortly."

USERNAME_ENV = "ANTIFRAGILE_CALCOM_USERNAME"
EVENT_TYPE_ENV = "ANTIFRAGILE_CALCOM_EVENT_TYPE"
EVENT_TYPE_ID_ENV = "ANTIFRAGILE_CALCOM_EVENT_TYPE_ID"
PUBLIC_URL_ENV = "ANTIFRAGILE_CALCOM_PUBLIC_URL"
TIME_ZONE_ENV = "ANTIFRAGILE_CALCOM_TIME_ZONE"
#: which scheduling provider ``book_call`` uses (a tenant's ``booking_provider`` wins)
PROVIDER_ENV = "ANTIFRAGILE_BOOKING_PROVIDER"
#: the time zone of the times customers name (wins over ``ANTIFRAGILE_CALCOM_TIME_ZONE``)
BOOKING_TIME_ZONE_ENV = "ANTIFRAGILE_BOOKING_TIME_ZONE"
CALENDLY_EVENT_TYPE_ENV = "ANTIFRAGILE_CALENDLY_EVENT_TYPE"
ACUITY_TYPE_ENV = "ANTIFRAGILE_ACUITY_APPOINTMENT_TYPE_ID"


@dataclass(frozen=True, slots=True)
class BookingSettings:
    """Where customers book calls: a Cal.com user's event type, a Calendly event type or an
    Acuity appointment type.

    *provider* is the scheduling provider ``book_call`` uses (``calcom``, ``calendly`` or
    ``acuity``; ``None``: the first configured, Cal.com first). Cal.com: *username* and
    *event_type_slug* make the public booking link (:meth:`link`, no network); *event_type_id*
    is what ``book_call`` books through the API when the message names a day and a time.
    Calendly: *calendly_event_type* is the URI of the event type single-use links are made for
    (``None``: the token's user's first active one). Acuity: *acuity_appointment_type_id* is
    the appointment type booked. *time_zone* is the one the customer's day and time are in.
    """

    username: str | None = None
    event_type_slug: str = "30min"
    event_type_id: int | None = None
    public_url: str = DEFAULT_PUBLIC_URL
    time_zone: str = "UTC"
    provider: str | None = None
    calendly_event_type: str | None = None
    acuity_appointment_type_id: int | None = None

    @classmethod
    def from_env(cls) -> BookingSettings:
        """From ``ANTIFRAGILE_CALCOM_USERNAME``, ``_EVENT_TYPE`` (slug), ``_EVENT_TYPE_ID``,
        ``_PUBLIC_URL`` and ``_TIME_ZONE``, ``ANTIFRAGILE_BOOKING_PROVIDER`` and
        ``_TIME_ZONE``, ``ANTIFRAGILE_CALENDLY_EVENT_TYPE`` and
        ``ANTIFRAGILE_ACUITY_APPOINTMENT_TYPE_ID`` (each optional)."""
        raw_id = _number_env(EVENT_TYPE_ID_ENV)
        acuity_type = _number_env(ACUITY_TYPE_ENV)
        provider = (os.environ.get(PROVIDER_ENV) or "").strip().lower() or None
        if provider is not None and provider not in ("calcom", "calendly", "acuity"):
            raise ConfigurationError(f"{PROVIDER_ENV} is calcom, calendly or acuity")
        return cls(
            username=os.environ.get(USERNAME_ENV) or None,
            event_type_slug=os.environ.get(EVENT_TYPE_ENV) or "30min",
            event_type_id=raw_id,
            public_url=os.environ.get(PUBLIC_URL_ENV) or DEFAULT_PUBLIC_URL,
            time_zone=os.environ.get(BOOKING_TIME_ZONE_ENV)
            or os.environ.get(TIME_ZONE_ENV)
            or "UTC",
            provider=provider,
            calendly_event_type=os.environ.get(CALENDLY_EVENT_TYPE_ENV) or None,
            acuity_appointment_type_id=acuity_type,
        )

    def link(self, **prefill: str) -> str | None:
        """The public booking page (prefilled with *prefill*), or ``None`` without a
        username."""
        if not self.username:
            return None
        return booking_link(
            self.event_type_slug, self.username, public_url=self.public_url, prefill=prefill
        )


@dataclass(eq=False)
class MessageContext:
    """What a handler knows: the event, its tenant and classification, the inbox record's id,
    and the services (jobs, connectors, tasks); *session* is the sender's conversation state,
    when a flow keeps one."""

    event: InboundEvent
    tenant: Tenant
    classification: Classification
    inbox_id: str
    jobs: Jobs
    connectors: Connectors
    tasks: Tasks
    session: Mapping[str, Any] | None = None


@dataclass(slots=True)
class HandlerResult:
    """A handler's answer: the *reply* to send (``None``: none) and *data* for its actions'
    saga (JSON, no personal data)."""

    reply: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


HandlerFunction = Callable[[MessageContext], Awaitable[HandlerResult | str | None]]
H = TypeVar("H", bound=HandlerFunction)


@dataclass(frozen=True, slots=True)
class RegisteredHandler:
    """A handler as registered: its *name* (unique; the saga of its actions is
    ``actions.<name>``), the intents it answers, its threshold, priority and actions."""

    name: str
    intents: frozenset[str]
    fn: HandlerFunction
    min_confidence: float = 0.0
    priority: int = 0
    actions: tuple[str, ...] = ()
    order: int = 0

    def accepts(self, classification: Classification) -> bool:
        return (
            classification.intent in self.intents or ANY_INTENT in self.intents
        ) and self.min_confidence <= classification.confidence

    async def run(self, ctx: MessageContext) -> HandlerResult:
        """Call the handler; its answer as a :class:`HandlerResult`."""
        answer = await self.fn(ctx)
        if answer is None:
            return HandlerResult()
        if isinstance(answer, str):
            return HandlerResult(reply=answer)
        if isinstance(answer, HandlerResult):
            return answer
        raise ConfigurationError(
            f"handler {self.name!r} returned {type(answer).__name__}; "
            "expected HandlerResult, str or None"
        )


async def _fallback(ctx: MessageContext) -> HandlerResult:
    return HandlerResult(reply=FALLBACK_REPLY)


class Handlers:
    """The registry of message handlers (see the module docs)."""

    def __init__(self) -> None:
        self._handlers: list[RegisteredHandler] = []
        self.fallback = RegisteredHandler(
            name=FALLBACK_NAME,
            intents=frozenset({Intent.UNKNOWN.value}),
            fn=_fallback,
            actions=("flag_for_review",),
            order=-1,
        )

    def __repr__(self) -> str:
        return f"Handlers({[h.name for h in self._handlers]!r})"

    def __iter__(self) -> Iterator[RegisteredHandler]:
        return iter(self.all())

    def all(self) -> list[RegisteredHandler]:
        """Every handler, the built-in fallback included, in registration order."""
        return [*self._handlers, self.fallback]

    def get(self, name: str) -> RegisteredHandler:
        for handler in self.all():
            if handler.name == name:
                return handler
        raise ConfigurationError(f"no handler named {name!r}")

    def register(
        self,
        fn: HandlerFunction,
        intent: str | Sequence[str],
        *,
        min_confidence: float = 0.0,
        priority: int = 0,
        actions: Sequence[str] = (),
        name: str | None = None,
    ) -> RegisteredHandler:
        """Register *fn* (what :meth:`on_message` does); the registered handler."""
        intents = frozenset([intent] if isinstance(intent, str) else [str(i) for i in intent])
        if not intents or not all(intents):
            raise ConfigurationError("a handler needs at least one non-empty intent")
        if isinstance(min_confidence, bool) or not 0.0 <= min_confidence <= 1.0:
            raise ConfigurationError(f"min_confidence must be within [0, 1], got {min_confidence}")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ConfigurationError(f"priority must be an int, got {priority!r}")
        if isinstance(actions, str):
            raise ConfigurationError("actions is a list of action names, not a str")
        handler_name = name or getattr(fn, "__name__", None)
        if not handler_name:
            raise ConfigurationError("cannot name this handler: pass name=")
        if any(h.name == handler_name for h in self.all()):
            raise ConfigurationError(f"a handler named {handler_name!r} is already registered")
        registered = RegisteredHandler(
            name=handler_name,
            intents=frozenset(str(i) for i in intents),
            fn=fn,
            min_confidence=float(min_confidence),
            priority=priority,
            actions=tuple(actions),
            order=len(self._handlers),
        )
        self._handlers.append(registered)
        return registered

    def on_message(
        self,
        intent: str | Sequence[str],
        *,
        min_confidence: float = 0.0,
        priority: int = 0,
        actions: Sequence[str] = (),
        name: str | None = None,
    ) -> Callable[[H], H]:
        """Decorator: ``@handlers.on_message("ORDER_REQUEST", min_confidence=0.7)`` on an
        ``async def handler(ctx: MessageContext)``; the function is returned unchanged."""

        def decorate(fn: H) -> H:
            self.register(
                fn,
                intent,
                min_confidence=min_confidence,
                priority=priority,
                actions=actions,
                name=name,
            )
            return fn

        return decorate

    def _best(self, intent: str, confidence: float) -> RegisteredHandler | None:
        probe = Classification(intent, confidence)
        fitting = [h for h in self._handlers if h.accepts(probe)]
        if not fitting:
            return None
        return min(fitting, key=lambda h: (-h.priority, h.order))

    def choose(self, classification: Classification) -> RegisteredHandler:
        """The handler for *classification* (see the module docs); never ``None``."""
        chosen = self._best(classification.intent, classification.confidence)
        if chosen is None:
            chosen = self._best(Intent.UNKNOWN.value, 1.0)
        return chosen or self.fallback

    def register_defaults(self, *, booking: BookingSettings | None = None) -> None:
        """Register a handler, with a reply and actions, for each intent of
        :class:`~antifragile.inbound.Intent`:

        ======================  ============================================
        ORDER_REQUEST           notify_sales, create_order
        PRICING_INQUIRY         notify_sales
        COMPLAINT               create_support_ticket, notify_sales
        AVAILABILITY_INQUIRY    flag_for_review
        SCHEDULE_CALL           book_call, notify_sales (the reply carries the booking link)
        UNKNOWN                 flag_for_review
        ======================  ============================================

        *booking* (default :meth:`BookingSettings.from_env`) makes the booking link.
        """
        settings = booking if booking is not None else BookingSettings.from_env()
        for handler_name, intent, fn, actions in _defaults(settings):
            self.register(fn, intent, actions=actions, name=handler_name)


def _order_reply(ctx: MessageContext) -> str:
    entities = ctx.classification.entities
    quantity, unit = entities.get("quantity"), entities.get("unit")
    what = f" for {quantity} {unit}" if quantity and unit else ""
    return (
        f"Thanks for your order request{what}! Our sales team has it and will confirm the "
        "details with you shortly."
    )


def _number_env(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if raw and not raw.isdigit():
        raise ConfigurationError(f"{name} must be a number")
    return int(raw) if raw else None


def booking_reply(settings: BookingSettings) -> str:
    """The reply to a request for a call: the booking link when there is one (Calendly's
    single-use link follows in a message of its own)."""
    if settings.provider == "calendly":
        return "Happy to set up a call! I'm sending you a link to pick a time."
    if settings.provider == "acuity":
        return "Happy to set up a call! I'll confirm the time with you here."
    link = settings.link()
    if link is None:
        return "Happy to set up a call! Our team will reach out shortly to find a time."
    return f"Happy to set up a call! Pick a time that suits you here: {link}"


def _defaults(
    settings: BookingSettings,
) -> list[tuple[str, str, HandlerFunction, tuple[str, ...]]]:
    async def order_request(ctx: MessageContext) -> HandlerResult:
        return HandlerResult(reply=_order_reply(ctx))

    async def pricing_inquiry(ctx: MessageContext) -> HandlerResult:
        return HandlerResult(
            reply="Thanks for asking about pricing! Our sales team will send you a quote shortly."
        )

    async def complaint(ctx: MessageContext) -> HandlerResult:
        return HandlerResult(
            reply=(
                "We're sorry to hear that. We've opened a support ticket and someone from our "
                "team will contact you as soon as possible."
            )
        )

    async def availability_inquiry(ctx: MessageContext) -> HandlerResult:
        return HandlerResult(
            reply="Thanks for asking! We're checking availability and will get back to you soon."
        )

    async def schedule_call(ctx: MessageContext) -> HandlerResult:
        link = settings.link()
        return HandlerResult(reply=booking_reply(settings), data={"booking_link": link})

    async def unknown(ctx: MessageContext) -> HandlerResult:
        return HandlerResult(reply=FALLBACK_REPLY)

    return [
        ("order_request", Intent.ORDER_REQUEST, order_request, ("notify_sales", "create_order")),
        ("pricing_inquiry", Intent.PRICING_INQUIRY, pricing_inquiry, ("notify_sales",)),
        ("complaint", Intent.COMPLAINT, complaint, ("create_support_ticket", "notify_sales")),
        (
            "availability_inquiry",
            Intent.AVAILABILITY_INQUIRY,
            availability_inquiry,
            ("flag_for_review",),
        ),
        ("schedule_call", Intent.SCHEDULE_CALL, schedule_call, ("book_call", "notify_sales")),
        ("unknown", Intent.UNKNOWN, unknown, ("flag_for_review",)),
    ]
