"""The message pipeline: what happens to a recorded inbound event.

A webhook's events are verified, deduplicated and recorded (the inbox) before the provider gets
its 200; each recorded event is then processed by one durable job, ``inbound.process``, which
runs :meth:`MessagePipeline.process`::

    load the event from the inbox
      -> a delivery status: recorded on the outbound message (DeliveryStatuses), done
      -> validate (a message needs a sender)
      -> resolve the tenant (WhatsApp phone-number id / Twilio number / shop domain)
      -> per-sender rate limit
      -> a WhatsApp medium, for a tenant that asks: its download (a durable job of its own)
      -> classify (pluggable; pre-classified results posted to /v1/ai-results skip this)
      -> the tenant's conversation flow, while the sender is in one
         otherwise the intent handler chosen by intent, priority and minimum confidence
      -> the handler's actions, started as one saga (a durable job of their own)
      -> a reply to the sender (a durable job of its own)

The job's result (:class:`PipelineResult`) says what was decided: the intent and confidence,
the handler, the saga job running the actions, the reply job. Everything that talks to a
provider runs as its own job, so a provider that is down delays an effect, never the reply; when
the pipeline itself fails, the sender still gets a graceful reply (the tenant's own text when it
sets one, else its conversation flow's, else the default).

Job payloads hold only the inbox id: the message text and the phone number stay in the inbox
record (and the session), never in a job, a dead-letter entry or a log line.

A customer's messages are processed one at a time, in the order they were recorded: each
message's job carries the ordering key :func:`sender_ordering_key` (a hash of the tenant and the
sender), and the job queue starts a key's job only once the key's earlier jobs finished --
across workers and processes, and when a worker dies holding one (its replay comes first).
Different customers' messages run concurrently.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from antifragile.errors import AntifragileError, PermanentError
from antifragile.inbound._delivery import DeliveryStatus, DeliveryStatuses
from antifragile.inbound._model import (
    DEFAULT_GRACEFUL_REPLY,
    Channel,
    Classification,
    EventKind,
    InboundEvent,
    Intent,
    Tenant,
)
from antifragile.jobs import JobContext, Jobs
from antifragile.observability import IntentDetected, current_request_id
from antifragile.observability._personal import current_lookup_hash, lookup_hashes
from antifragile.policies import SYSTEM_CLOCK, Clock

_log = logging.getLogger("antifragile.inbound")

#: the job that processes one recorded inbound event
PROCESS_JOB = "inbound.process"


#: what the hash in a sender's ordering key is computed for (the domain of its HMAC)
ORDERING_PURPOSE = "ordering"


def sender_ordering_key(tenant_id: str, sender: str) -> str:
    """The ordering key of a sender's messages to *tenant_id*: a hash (never the phone number
    itself), so that a job, a log line or the dead-letter queue can show it -- keyed with the
    current data key when one is configured, so that it cannot be matched against guessed
    numbers. (A key rotation starts new ordering keys: the messages of a sender in flight
    across it are ordered among themselves on each side of it.) The first of
    :func:`sender_ordering_keys`, computed alone."""
    text = f"{tenant_id}\x00{sender}"
    return f"inbound:{current_lookup_hash(ORDERING_PURPOSE, text)[:32]}"


def sender_ordering_keys(tenant_id: str, sender: str) -> list[str]:
    """Every ordering key *sender*'s jobs may carry, the current one first: under each data
    key, then unkeyed (what erasure looks for)."""
    text = f"{tenant_id}\x00{sender}"
    return [f"inbound:{digest[:32]}" for digest in lookup_hashes(ORDERING_PURPOSE, text)]


class SenderLimiter(Protocol):
    """Decides whether a sender may be answered now (inbound rate limiting per sender).

    A limiter that also has ``async def aallow_sender(tenant_id, sender) -> bool`` (as
    :class:`~antifragile.service.InboundLimits` does, sharing its buckets between processes
    through a store) is asked through that instead.
    """

    def allow_sender(self, tenant_id: str, sender: str) -> bool: ...


CommerceHandler = Callable[["CommerceContext"], Awaitable[None]]
_C = TypeVar("_C", bound=CommerceHandler)


@dataclass(frozen=True, slots=True)
class CommerceContext:
    """What a handler of a Shopify topic receives."""

    event: InboundEvent
    tenant: Tenant
    inbox_id: str
    jobs: Jobs


@dataclass(slots=True)
class PipelineResult:
    """What processing one inbound event decided (the ``inbound.process`` job's result).

    ``status``: ``replied`` (a reply was queued), ``handled`` (handled, nothing to answer),
    ``status_recorded`` (a delivery status; ``delivery`` says what it matched),
    ``commerce_recorded`` (a Shopify event),
    ``rate_limited``, ``unknown_tenant``, ``invalid`` or ``missing`` (the inbox entry expired
    before it was processed).
    """

    inbox_id: str
    status: str
    channel: str | None = None
    kind: str | None = None
    tenant: str | None = None
    intent: str | None = None
    confidence: float | None = None
    classified_by: str | None = None
    handler: str | None = None
    actions: tuple[str, ...] = ()
    actions_job: str | None = None
    reply_message: str | None = None
    session_step: int | None = None
    session_completed: bool = False
    graceful: bool = False
    detail: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "inbox_id": self.inbox_id,
            "status": self.status,
            "channel": self.channel,
            "kind": self.kind,
            "tenant": self.tenant,
            "intent": self.intent,
            "confidence": self.confidence,
            "classified_by": self.classified_by,
            "handler": self.handler,
            "actions": list(self.actions),
            "actions_job": self.actions_job,
            "reply_message": self.reply_message,
            "session_step": self.session_step,
            "session_completed": self.session_completed,
            "graceful": self.graceful,
            "detail": self.detail,
            **self.extra,
        }


def resolve_tenant(tenants: Sequence[Tenant], event: InboundEvent) -> Tenant | None:
    """The tenant *event* was sent to: the first whose routing key matches; with one tenant that
    names no routing key at all, that tenant (a single-business install)."""
    for tenant in tenants:
        if tenant.matches(event):
            return tenant
    if len(tenants) == 1:
        only = tenants[0]
        if not (only.whatsapp_phone_number_id or only.twilio_number or only.shop_domain):
            return only
    if event.channel is Channel.API:
        for tenant in tenants:
            if tenant.id == event.tenant_key:
                return tenant
    return None


class MessagePipeline:
    """Processes recorded inbound events; see the module docs.

    The parts are the assistant's: a classifier, the handler and action registries, the
    sessions, the replies, the tasks, the connectors and the feature flags. They are typed
    loosely here (``Any``) so that each can be replaced by a user's own with the same methods.
    """

    def __init__(
        self,
        jobs: Jobs,
        *,
        tenants: Sequence[Tenant],
        classifier: Any,
        handlers: Any,
        actions: Any,
        sessions: Any,
        replies: Any,
        tasks: Any,
        connectors: Any,
        limiter: SenderLimiter | None = None,
        clock: Clock = SYSTEM_CLOCK,
        deliveries: DeliveryStatuses | None = None,
        media: Any = None,
    ) -> None:
        self.jobs = jobs
        #: downloads inbound WhatsApp media for the tenants that ask (a
        #: :class:`~antifragile.inbound._media.MediaDownloads`; ``None``: never)
        self.media = media
        self.tenants = list(tenants)
        self.classifier = classifier
        self.handlers = handlers
        self.actions = actions
        self.sessions = sessions
        self.replies = replies
        self.tasks = tasks
        self.connectors = connectors
        self.limiter = limiter
        self.clock = clock
        #: records delivery statuses (status events) on the outbound messages
        self.deliveries = (
            deliveries
            if deliveries is not None
            else getattr(replies, "deliveries", None) or DeliveryStatuses(jobs, clock=clock)
        )
        self._commerce: dict[str, list[CommerceHandler]] = {}

    # -- registration -------------------------------------------------------------------------

    def on_event(self, topic: str) -> Callable[[_C], _C]:
        """Register ``async def f(ctx: CommerceContext)`` for a Shopify topic
        (``orders/create``, ``customers/create``, ``inventory_levels/update``...); the function
        is returned unchanged."""

        def register(fn: _C) -> _C:
            self._commerce.setdefault(topic, []).append(fn)
            return fn

        return register

    # -- processing ---------------------------------------------------------------------------

    async def process(self, ctx: JobContext, inbox_id: str) -> PipelineResult:
        """Process the inbox entry *inbox_id* (the body of the ``inbound.process`` job)."""
        entry = await self.jobs.queue.get_inbound(inbox_id)
        if entry is None:
            return PipelineResult(inbox_id, "missing", detail="the inbox entry has expired")
        event = InboundEvent.from_json(entry.payload)
        result = PipelineResult(
            inbox_id, "handled", channel=event.channel.value, kind=event.kind.value
        )
        if event.kind is EventKind.STATUS:
            # about something we sent, whichever tenant sent it: recorded in any case
            match = await self.deliveries.record(DeliveryStatus.from_event(event))
            result.status = "status_recorded"
            result.extra["delivery"] = match.to_json()
            return result
        tenant = resolve_tenant(self.tenants, event)
        if tenant is None:
            _log.warning(
                "inbound event for no known tenant",
                extra={"channel": event.channel.value, "inbox_id": inbox_id},
            )
            result.status = "unknown_tenant"
            return result
        result.tenant = tenant.id
        if event.kind is EventKind.COMMERCE:
            for handler in self._commerce.get(event.topic or "", ()):
                await handler(CommerceContext(event, tenant, inbox_id, self.jobs))
            result.status = "commerce_recorded"
            return result
        if not event.sender:
            result.status = "invalid"
            result.detail = "a message without a sender"
            return result
        if self.limiter is not None and not await self._allow_sender(tenant.id, event.sender):
            result.status = "rate_limited"
            return result
        await self._acknowledge(event, tenant)
        if self.media is not None:
            media_job = await self.media.enqueue(event, tenant, inbox_id)
            if media_job is not None:
                result.extra["media_job"] = media_job
        try:
            await self._converse(ctx, event, tenant, inbox_id, result)
        except Exception as exc:
            if ctx.attempt < ctx.job.max_attempts and not isinstance(exc, PermanentError):
                raise  # retried; the sender is answered when it works, or at the last attempt
            _log.warning(
                "processing failed; answering with the graceful reply",
                extra={"inbox_id": inbox_id, "error": type(exc).__name__},
            )
            result.graceful = True
            result.detail = type(exc).__name__
            text = self.graceful_reply(tenant)
            result.reply_message = await self._reply(tenant, event, inbox_id, text)
            result.status = "replied"
        return result

    def graceful_reply(self, tenant: Tenant) -> str:
        """What *tenant*'s contact is told when processing their message fails for good: the
        sessions' choice when they make one (the tenant's own text, else its flow's), else the
        tenant's graceful reply."""
        choose = getattr(self.sessions, "graceful_reply", None)
        if callable(choose):
            text = choose(tenant)
            if isinstance(text, str) and text.strip():
                return text
        return tenant.graceful_reply or DEFAULT_GRACEFUL_REPLY

    async def _allow_sender(self, tenant_id: str, sender: str) -> bool:
        limiter = self.limiter
        assert limiter is not None
        shared = getattr(limiter, "aallow_sender", None)
        if shared is not None:  # the buckets every process shares
            return bool(await shared(tenant_id, sender))
        return limiter.allow_sender(tenant_id, sender)

    async def _converse(
        self,
        ctx: JobContext,
        event: InboundEvent,
        tenant: Tenant,
        inbox_id: str,
        result: PipelineResult,
    ) -> None:
        classification = await self._classify(event, tenant.id)
        if self.jobs.observer is not None:
            self.jobs.observer.on_event(
                IntentDetected(
                    policy=tenant.id,
                    operation=event.channel.value,
                    request_id=current_request_id(),
                    intent=classification.intent,
                    confidence=classification.confidence,
                    source=classification.source,
                )
            )
        result.intent = classification.intent
        result.confidence = classification.confidence
        result.classified_by = classification.source
        reply: str | None = None
        choices: tuple[tuple[str, str], ...] = ()
        turn = None
        if self.sessions is not None and event.channel is not Channel.API:
            turn = await self._session_turn(tenant, event, inbox_id)
        if turn is not None:
            reply, choices = turn.reply, turn.choices
            result.handler = "session"
            result.session_step = turn.step
            result.session_completed = turn.completed
            written = getattr(turn, "reply_message", None)
            if written:  # the reply was written with the session's record
                result.reply_message = written
                result.status = "replied"
                reply = None
        else:
            handler = self.handlers.choose(classification)
            result.handler = handler.name
            session = None
            message_ctx = self._message_context(
                event, tenant, classification, inbox_id, session=session
            )
            outcome = await handler.fn(message_ctx)
            reply, data = _unpack(outcome)
            enqueued = await self.actions.start(
                self.jobs,
                handler,
                inbox_id=inbox_id,
                tenant_id=tenant.id,
                classification=classification,
                data=data,
            )
            if enqueued is not None:
                result.actions = tuple(handler.actions)
                result.actions_job = enqueued.id
        if reply:
            result.reply_message = await self._reply(tenant, event, inbox_id, reply, choices)
            result.status = "replied"

    async def _session_turn(self, tenant: Tenant, event: InboundEvent, inbox_id: str) -> Any:
        """The sessions' turn for *event*; the built-in sessions write its reply with the
        session's record (one transaction), others are only asked for the turn."""
        from antifragile.inbound._sessions import Sessions

        if isinstance(self.sessions, Sessions):
            return await self.sessions.handle(tenant, event, reply_key=_reply_key(inbox_id))
        return await self.sessions.handle(tenant, event)

    def _message_context(
        self,
        event: InboundEvent,
        tenant: Tenant,
        classification: Classification,
        inbox_id: str,
        *,
        session: Mapping[str, Any] | None,
    ) -> Any:
        from antifragile.inbound._handlers import MessageContext

        return MessageContext(
            event=event,
            tenant=tenant,
            classification=classification,
            inbox_id=inbox_id,
            jobs=self.jobs,
            connectors=self.connectors,
            tasks=self.tasks,
            session=session,
        )

    async def _classify(self, event: InboundEvent, tenant_id: str) -> Classification:
        given = event.data.get("classification") if event.data else None
        if isinstance(given, Mapping):
            return Classification.from_json({**given, "source": given.get("source", "ai")})
        if not event.text:
            return Classification(Intent.UNKNOWN.value, 0.0, source="none")
        for_tenant = getattr(self.classifier, "classify_for", None)  # per-tenant classifiers
        if callable(for_tenant):
            chosen: Classification = await for_tenant(tenant_id, event.text)
            return chosen
        classification: Classification = await self.classifier.classify(event.text)
        return classification

    async def _acknowledge(self, event: InboundEvent, tenant: Tenant) -> None:
        """Mark a WhatsApp Cloud message read (and show the typing indicator) as the tenant's
        ``whatsapp_read_receipts`` says; a failure is logged and changes nothing else."""
        mode = (tenant.whatsapp_read_receipts or "off").strip().lower()
        if event.channel is not Channel.WHATSAPP or mode not in ("read", "typing"):
            return
        try:
            await self.connectors.whatsapp.mark_read(event.event_id, typing=mode == "typing")
        except AntifragileError as exc:
            _log.warning(
                "could not mark a WhatsApp message read",
                extra={"tenant": tenant.id, "error": type(exc).__name__},
            )

    async def _reply(
        self,
        tenant: Tenant,
        event: InboundEvent,
        inbox_id: str,
        text: str,
        choices: tuple[tuple[str, str], ...] = (),
    ) -> str:
        key = _reply_key(inbox_id)
        if event.channel is Channel.API:
            channel = Channel(str(event.data.get("reply_channel") or Channel.WHATSAPP.value))
            assert event.sender is not None
            sent: str = await self.replies.send(
                tenant=tenant, channel=channel, to=event.sender, text=text, key=key
            )
            return sent
        message_id: str = await self.replies.reply(tenant, event, text, key=key, choices=choices)
        return message_id


def _reply_key(inbox_id: str) -> str:
    """The idempotency key of the reply to the inbox entry *inbox_id*: one reply per message."""
    return f"reply:{inbox_id}"


def _unpack(outcome: Any) -> tuple[str | None, dict[str, Any]]:
    if outcome is None:
        return None, {}
    if isinstance(outcome, str):
        return outcome, {}
    return getattr(outcome, "reply", None), dict(getattr(outcome, "data", None) or {})
