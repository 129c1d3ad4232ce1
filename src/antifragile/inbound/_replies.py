"""Replies to contacts, sent by durable jobs: a reply survives a provider outage and a restart.

::

    replies = Replies(jobs, connectors)
    message_id = await replies.send(
        tenant=tenant, channel=Channel.WHATSAPP, to="447700900123", text="Thanks!",
        key=f"reply:{event.event_id}",
    )
    await replies.reply(tenant, event, "Thanks!")     # the same, addressed from the event

:meth:`Replies.send` keeps the message -- channel, tenant, recipient, text -- in the store's
key-value table under ``outmsg:{id}`` (for ``retention`` seconds, 30 days by default) and
enqueues the job ``replies.send`` (queue ``replies``, provider ``whatsapp`` or ``twilio`` so
that the provider's circuit breaker defers it) whose payload is only the message id: the phone
number and the text never enter a job payload, a job's history or the dead-letter queue. The
record, the index its status webhooks find it by (``outref:``) and the job are written in one
transaction (:meth:`Replies.write`); :meth:`Replies.prepare` makes a reply without writing it, so
that a session writes it in the transaction of its own record.

**Once per key.** The message id is derived from *key* (and the tenant), and the job carries
*key* as its idempotency key: sending with the same key again stores and enqueues nothing new,
so a message handler that runs twice replies once.

**Never twice blindly.** Neither WhatsApp Cloud nor Twilio deduplicates a send. The job marks
the record ``sending_since`` before it calls the provider and clears it once the outcome is
known. When the outcome stays unknown -- the connector raises
:class:`~antifragile.connectors.DeliveryUnknownError` (the answer was lost), or a run finds the
mark still set (the previous run was killed or timed out in the middle of the call) -- the job
does not send again and does not hold a worker either: it **waits for the echo**
(:mod:`antifragile.inbound._echo`). The record says ``awaiting_since`` (and the correlation the
provider will echo, ``correlation``); the job is deferred (no attempt counted) and looks again
every ``poll`` seconds. A ``sent``/``delivered``/``read`` status that finds the record settles
the reply as sent (the status's message id becomes ``provider_message_id``); a ``failed`` one
sends it again, or fails it for good when its error code says it can never be delivered
(WhatsApp ``131026``...); nothing within the provider's window (``windows``, 10 minutes by
default) -- Twilio's message list is looked up, then the channel's ``on_unknown`` decides:
``review`` (the default) puts the job in the dead-letter queue with
:class:`~antifragile.connectors.OutcomeUnknownError` and the message id as its reconcile key,
``resend`` sends again.

The record's ``status`` is a :class:`~antifragile.jobs.StatusFlag` the queue keeps in step with
the job (``pending``, ``sent``, ``failed``); the job adds ``provider``,
``provider_message_id`` (the ``wamid`` or ``SM...`` sid), ``provider_status`` and ``sent_at``.

**Delivery.** What the provider later reports -- ``sent``, ``delivered``, ``read``, ``failed`` in
its status webhooks -- lands in the record's ``delivery_status`` (forward only),
``delivery_times`` and ``delivery_error_code`` (see :class:`~antifragile.inbound.DeliveryStatuses`).
Once the send returns, the job notes the provider's message id so that the statuses find the
record, including those that arrived before the answer did.

**Operators.** :meth:`Replies.recent` lists the records; :meth:`Replies.force` clears the marks
of a reply whose outcome is unknown so that its job sends it again ("send anyway");
:meth:`Replies.wait_again` starts a fresh wait for its echo; :meth:`Replies.mark_sent` records
that an operator knows it arrived. With *tasks*, a reply the customer will not get -- its job
dead-lettered, or a ``failed`` status that is permanent or comes after the job finished --
becomes one task (``reply_failed``, key ``reply-failed:{id}``; :meth:`Replies.follow_up`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeGuard, cast

from antifragile.connectors import (
    HubSpotConnector,
    OutcomeUnknownError,
    ResendConnector,
    SentWhatsApp,
    ShopifyConnector,
    SlackConnector,
    TwilioConnector,
    WhatsAppConnector,
    WhatsAppTemplate,
)
from antifragile.connectors._correlation import correlation_for
from antifragile.connectors._whatsapp import OUTSIDE_WINDOW
from antifragile.errors import (
    AntifragileError,
    ConfigurationError,
    IntegrationError,
    PermanentError,
)
from antifragile.inbound._delivery import (
    OUTREF_PREFIX,
    DeliveryMatch,
    DeliveryStatus,
    DeliveryStatuses,
)
from antifragile.inbound._echo import (
    CONFIRMED,
    ECHO_POLL,
    FAILED,
    echo_window,
    failure_is_permanent,
)
from antifragile.inbound._flows import render
from antifragile.inbound._model import Channel, InboundEvent, Tenant
from antifragile.inbound._sealing import MESSAGE_FIELDS, open_fields, seal_fields
from antifragile.inbound._tasks import Tasks
from antifragile.jobs import (
    Enqueued,
    JobContext,
    JobDeferred,
    JobFunction,
    Jobs,
    NewJob,
    RecordQueue,
    StatusFlag,
)
from antifragile.jobs._policy import decide_failure
from antifragile.observability._redaction import MASK
from antifragile.observability._redaction import mask_email as mask_email  # imported from here too
from antifragile.observability._redaction import mask_phone as mask_phone
from antifragile.policies import Clock, Exponential, Retry
from antifragile.stores import KeyValueStore

_log = logging.getLogger("antifragile.inbound.replies")

#: key prefix of the stored outbound messages
OUTMSG_PREFIX = "outmsg:"
#: the job that sends a reply
SEND_JOB = "replies.send"
#: the queue replies wait in
REPLIES_QUEUE = "replies"
#: how long an outbound message record is kept (seconds)
DEFAULT_RETENTION = 30 * 24 * 3600.0
#: a reply is worth little when hours late: 8 attempts over about two hours at most
REPLY_RETRY = Retry(attempts=8, backoff=Exponential(5.0, cap=1800.0))
#: what a reply whose outcome stayed unknown past its window does, per channel
REPLY_ON_UNKNOWN: Mapping[str, str] = {"whatsapp": "review", "twilio": "review"}
#: the fields a failed status left, cleared before the reply is sent again
_DELIVERY_FIELDS = (
    "delivery_status",
    "delivery_provider_status",
    "delivery_error_code",
    "delivery_provider_message_id",
    "delivery_updated_at",
    "delivery_times",
)

_MASK = MASK


def _code(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return str(code) if code else type(exc).__name__


def correlation_index_key(message_id: str) -> str:
    """Where the index from the correlation a reply carries to its record is kept."""
    return OUTREF_PREFIX + correlation_for(message_id)


class ConnectorSource(Protocol):
    """What replies and sessions need of the connectors registry
    (:class:`~antifragile.connectors.Connectors` provides it; any object with these
    attributes does)."""

    @property
    def whatsapp(self) -> WhatsAppConnector: ...
    @property
    def twilio(self) -> TwilioConnector: ...
    @property
    def resend(self) -> ResendConnector: ...
    @property
    def shopify(self) -> ShopifyConnector: ...
    @property
    def hubspot(self) -> HubSpotConnector: ...
    @property
    def slack(self) -> SlackConnector: ...


def scrub(error: BaseException, values: Iterable[str | None]) -> None:
    """Replace personal *values* (phone numbers, emails, names) in *error*'s message and
    detail with masks, in place, so that a job's history and the dead-letter queue never keep
    them."""
    if not isinstance(error, AntifragileError):
        return
    replacements: list[tuple[str, str]] = []
    for value in values:
        if not value or len(value) < 3:
            continue
        masked = mask_email(value) if "@" in value else mask_phone(value)
        if not any(c.isdigit() for c in value) and "@" not in value:
            masked = _MASK * 3
        replacements.append((value, masked))
        digits = "".join(c for c in value if c.isdigit())
        if "@" not in value and len(digits) >= 7 and digits != value:
            replacements.append((digits, mask_phone(digits)))
    replacements.sort(key=lambda pair: -len(pair[0]))

    def clean(text: str) -> str:
        for value, masked in replacements:
            text = text.replace(value, masked)
        return text

    message = clean(error.message)
    error.message = message
    error.args = (message, *error.args[1:]) if error.args else (message,)
    if isinstance(error, IntegrationError) and error.detail is not None:
        error.detail = clean(error.detail)
    for name in ("to", "fields"):
        if hasattr(error, name):
            setattr(error, name, None if name == "to" else {})


@contextmanager
def scrubbed(*values: str | None) -> Iterator[None]:
    """Re-raise any error raised inside with *values* masked (see :func:`scrub`)."""
    try:
        yield
    except BaseException as exc:
        scrub(exc, values)
        raise


@dataclass(frozen=True, slots=True)
class PreparedReply:
    """A reply ready to be written (:meth:`Replies.prepare`): its *message_id*, the key-value
    *entries* to create -- the message's record first, then its correlation index --, the
    *job* that sends it, and the recipient *to* (for the log, masked)."""

    message_id: str
    entries: Mapping[str, Any]
    job: NewJob
    to: str


#: whether instances of a class are a runtime-checked protocol, by protocol and class (the
#: check looks for every method by name: too slow for each message)
_KINDS: dict[tuple[type, type], bool] = {}


def is_kind(value: object, protocol: type) -> bool:
    """``isinstance(value, protocol)`` for a runtime-checkable *protocol*, answered once per
    class of *value*."""
    key = (protocol, type(value))
    known = _KINDS.get(key)
    if known is None:
        known = _KINDS[key] = isinstance(value, protocol)
    return known


def is_record_queue(queue: object) -> TypeGuard[RecordQueue]:
    """Whether *queue* writes records and jobs in one transaction (:class:`RecordQueue`)."""
    return is_kind(queue, RecordQueue)


def kv_of(jobs: Jobs) -> KeyValueStore:
    """The key-value store beside the queue of *jobs* (where status flags land)."""
    kv = getattr(getattr(jobs.queue, "store", None), "kv", None)
    if not is_kind(kv, KeyValueStore):
        raise ConfigurationError(
            "replies and sessions keep their records in the key-value store beside the job "
            "queue; this queue has none"
        )
    return cast(KeyValueStore, kv)


def _template_fallback(record: Mapping[str, Any], code: str | None) -> bool:
    """Whether a WhatsApp failure with *code* is the closed window (``131047``) of a reply
    that has a template and was not sent as one: it is sent again as the template."""
    return (
        code == str(OUTSIDE_WINDOW)
        and record.get("channel") == Channel.WHATSAPP.value
        and bool(record.get("template"))
        and not record.get("template_only")
    )


def whatsapp_template_for(tenant: Tenant, values: Mapping[str, Any]) -> WhatsAppTemplate | None:
    """*tenant*'s WhatsApp template with its parameters rendered from *values* (``{text}``,
    session fields...), or ``None`` when the tenant has none."""
    if not tenant.whatsapp_template:
        return None
    raw = tenant.whatsapp_template_parameters
    parameters = tuple(render(p, values) for p in raw.split("|")) if raw else ()
    return WhatsAppTemplate(
        tenant.whatsapp_template, tenant.whatsapp_template_language or "en_US", parameters
    )


def twilio_address(sender: str, data: Any) -> str:
    """Where a reply to a Twilio contact goes: ``whatsapp:+E164`` when the message came in
    over WhatsApp (the event's ``data`` has ``from`` with that prefix, or ``whatsapp: true``),
    else ``+E164`` (SMS)."""
    raw = data.get("from") if isinstance(data, dict) else None
    whatsapp = isinstance(data, dict) and bool(data.get("whatsapp"))
    if isinstance(raw, str) and raw.startswith("whatsapp:"):
        whatsapp = True
    digits = sender.lstrip("+")
    return f"whatsapp:+{digits}" if whatsapp else f"+{digits}"


class Replies:
    """Durable replies over WhatsApp Cloud or Twilio (see the module docs).

    Declares the job ``replies.send`` on *jobs* (one :class:`Replies` per :class:`Jobs`);
    *connectors* provides ``whatsapp`` and ``twilio``. *clock* defaults to the jobs' clock;
    *retention* is how long a message record is kept (seconds); *retry* the job's policy;
    *deliveries* the delivery statuses' recorder (a new one by default). *windows* (seconds per
    channel), *on_unknown* (``review`` or ``resend`` per channel) and *poll* (seconds) tune the
    wait for the echo of a send whose outcome is unknown (see the module docs).
    """

    def __init__(
        self,
        jobs: Jobs,
        connectors: ConnectorSource,
        *,
        clock: Clock | None = None,
        retention: float = DEFAULT_RETENTION,
        retry: Retry = REPLY_RETRY,
        deliveries: DeliveryStatuses | None = None,
        windows: Mapping[str, float] | None = None,
        on_unknown: Mapping[str, str] | None = None,
        poll: float = ECHO_POLL,
        tasks: Tasks | None = None,
    ) -> None:
        if not retention > 0:
            raise ConfigurationError(f"retention must be > 0 seconds, got {retention!r}")
        if not poll > 0:
            raise ConfigurationError(f"poll must be > 0 seconds, got {poll!r}")
        policies = {**REPLY_ON_UNKNOWN, **(on_unknown or {})}
        for channel, policy in policies.items():
            if policy not in ("review", "resend"):
                raise ConfigurationError(
                    f"on_unknown of {channel!r} replies is review or resend, not {policy!r}"
                )
        #: per channel, how long an unknown outcome waits for the echo (seconds)
        self.windows = {c: echo_window(c, windows) for c in ("whatsapp", "twilio")}
        #: per channel, what an outcome still unknown after its window does
        self.on_unknown = policies
        self.poll = float(poll)
        self.jobs = jobs
        self.connectors = connectors
        self.clock = clock or jobs.clock
        self.retention = float(retention)
        #: where the provider's delivery statuses are recorded (see the module docs)
        self.deliveries = (
            deliveries if deliveries is not None else DeliveryStatuses(jobs, clock=self.clock)
        )

        #: where a reply the customer will not get becomes a task to follow up (``None``: no
        #: tasks)
        self.tasks = tasks
        # failed statuses: the template fallback (131047), and tasks to follow up
        self.deliveries.on_status(self._on_status)

        async def send_reply(ctx: JobContext, message_id: str) -> dict[str, Any]:
            """Send a stored reply (``outmsg:{message_id}``) through its provider."""
            try:
                return await self._deliver(message_id)
            except Exception as exc:
                if self.tasks is not None and self._dies(ctx, retry, exc):
                    await self.follow_up(message_id, f"the reply could not be sent ({_code(exc)})")
                raise

        self.job: JobFunction[..., dict[str, Any]] = jobs.job(
            SEND_JOB, queue=REPLIES_QUEUE, retry=retry, timeout=60.0
        )(send_reply)

    def _dies(self, ctx: JobContext, retry: Retry, exc: BaseException) -> bool:
        """Whether this failure puts the job in the dead-letter queue (the worker's rule)."""
        decision = decide_failure(
            retry,
            exc,
            attempt=ctx.attempt,
            max_attempts=ctx.job.max_attempts,
            now=self.clock.time(),
            created_at=ctx.job.created_at,
        )
        return decision.kind == "dead"

    async def _on_status(self, status: DeliveryStatus, match: DeliveryMatch) -> None:
        """A ``failed`` status the customer is left with becomes a task: the failure is
        permanent (its code says sending again cannot deliver it), or the reply's job is done
        and nothing will send it again."""
        if match.message_id is None or status.status != "failed":
            return
        record = await self.get(match.message_id)
        if record is None:
            return
        if _template_fallback(record, status.error_code):
            if record.get("status") == "sent" and not self.unknown_outcome(record):
                await self._resend_as_template(match.message_id, record)
            return  # a job still waiting for its echo sends the template itself
        if self.tasks is None:
            return
        permanent = failure_is_permanent(status.provider, status.error_code)
        finished = record.get("status") == "sent" and not self.unknown_outcome(record)
        if permanent or finished:
            code = status.error_code or status.provider_status or "failed"
            await self.follow_up(match.message_id, f"{status.provider} reported it failed ({code})")

    async def _resend_as_template(self, message_id: str, record: Mapping[str, Any]) -> str:
        """Send a reply that failed with ``131047`` (the window had closed) again, as its
        tenant's template: a new message, once (key ``template:{message_id}``)."""
        keep = ("channel", "tenant_id", "to", "from", "text", "last_inbound", "template")
        fields = {k: record.get(k) for k in keep}
        prepared = self._prepare(
            {**fields, "choices": None, "template_only": True}, f"template:{message_id}"
        )
        new_id = await self.write(prepared)
        await kv_of(self.jobs).merge(
            OUTMSG_PREFIX + message_id, {"resent_as": new_id}, now=self.clock.time()
        )
        _log.info("reply %s failed outside the window; sent again as %s", message_id, new_id)
        return new_id

    async def follow_up(self, message_id: str, why: str) -> dict[str, Any] | None:
        """Create the task to follow up with the customer of a reply they will not get (once
        per message: the task's key is ``reply-failed:{message_id}``); ``None`` without
        tasks."""
        if self.tasks is None:
            return None
        record = await self.get(message_id) or {}
        to = str(record.get("to") or "")
        who = mask_phone(to.removeprefix("whatsapp:")) if to else "a contact"
        task = await self.tasks.create(
            type="reply_failed",
            title=f"Follow up with {who}: {why} (message {message_id})",
            priority="high",
            source=f"{OUTMSG_PREFIX}{message_id}",
            key=f"reply-failed:{message_id}",
        )
        await kv_of(self.jobs).merge(
            OUTMSG_PREFIX + message_id, {"task_id": task["id"]}, now=self.clock.time()
        )
        return task

    @staticmethod
    def message_id(tenant_id: str, key: str) -> str:
        """The id of the message sent with *key* for *tenant_id* (the same for the same key)."""
        return hashlib.sha256(f"{tenant_id}\x00{key}".encode()).hexdigest()[:32]

    async def send(
        self,
        *,
        tenant: Tenant,
        channel: Channel,
        to: str,
        text: str,
        key: str,
        choices: Sequence[tuple[str, str]] = (),
        last_inbound: float | None = None,
        template_only: bool = False,
        values: Mapping[str, Any] | None = None,
    ) -> str:
        """Store the reply and enqueue its job; the message id (see the module docs and
        :meth:`prepare`, which takes the same arguments)."""
        prepared = self.prepare(
            tenant=tenant,
            channel=channel,
            to=to,
            text=text,
            key=key,
            choices=choices,
            last_inbound=last_inbound,
            template_only=template_only,
            values=values,
        )
        return await self.write(prepared)

    def prepare(
        self,
        *,
        tenant: Tenant,
        channel: Channel,
        to: str,
        text: str,
        key: str,
        choices: Sequence[tuple[str, str]] = (),
        last_inbound: float | None = None,
        template_only: bool = False,
        values: Mapping[str, Any] | None = None,
    ) -> PreparedReply:
        """The reply :meth:`send` stores and enqueues, not written yet: :meth:`write` writes
        it, or a session writes it in the transaction of its own record.

        *to* is the recipient as the provider takes it (WhatsApp: digits with country code;
        Twilio: ``+E164`` or ``whatsapp:+E164``); *key* makes the send happen once.
        *choices* (``(id, label)`` pairs) make a WhatsApp Cloud reply ask with reply buttons
        or a list (:meth:`~antifragile.connectors.WhatsAppConnector.send_choice`); Twilio
        sends the text alone.

        **The 24-hour window.** When *tenant* has a ``whatsapp_template``, a WhatsApp Cloud
        reply goes out as that template (its parameters rendered from *values* and ``{text}``)
        when *last_inbound* (the contact's last message, epoch seconds) is 24 hours old or
        more, when *template_only* (a nudge), or when Cloud API refuses the free-form message
        with ``131047`` (:meth:`~antifragile.connectors.WhatsAppConnector.send_within_window`).
        """
        channel = Channel(channel)
        if channel not in (Channel.WHATSAPP, Channel.TWILIO):
            raise ConfigurationError(f"replies go over whatsapp or twilio, not {channel.value}")
        if not key:
            raise ConfigurationError("a reply needs a key (it makes the send happen once)")
        if not to or not text or not text.strip():
            raise ConfigurationError("a reply needs a recipient and a text")
        sender: str | None = None
        template: WhatsAppTemplate | None = None
        if channel is Channel.TWILIO:
            if to.isdigit():
                to = f"+{to}"  # an inbound sender (digits only) made E.164
            if not tenant.twilio_number:
                raise ConfigurationError(
                    f"tenant {tenant.id!r} has no twilio_number to send a Twilio reply from"
                )
            sender = tenant.twilio_number
            if to.startswith("whatsapp:") and not sender.startswith("whatsapp:"):
                sender = f"whatsapp:{sender}"
        else:
            to = to.lstrip("+")
            sender = tenant.whatsapp_phone_number_id
            template = whatsapp_template_for(tenant, {**(values or {}), "text": text})
        fields = {
            "channel": channel.value,
            "tenant_id": tenant.id,
            "to": to,
            "from": sender,
            "text": text,
            "choices": [list(choice) for choice in choices] if choices else None,
            "last_inbound": last_inbound,
            "template_only": template_only,
            "template": None if template is None else template.to_json(),
        }
        return self._prepare(fields, key)

    def _prepare(self, fields: Mapping[str, Any], key: str) -> PreparedReply:
        """The message (*fields*: channel, tenant, recipient, text...) under the id of *key*,
        its correlation index and its job."""
        tenant_id, channel = str(fields["tenant_id"]), Channel(fields["channel"])
        message_id = self.message_id(tenant_id, key)
        record = {"id": message_id, **fields, "status": "new", "created_at": self.clock.time()}
        new = self.job.configure(
            idempotency_key=key,
            status=StatusFlag(OUTMSG_PREFIX + message_id, "status"),
        ).prepare(message_id=message_id)
        # the provider echoes correlation_for(message_id) in its status webhooks: an index from
        # that correlation back to the message lets a status find it before the send returns
        return PreparedReply(
            message_id,
            {
                # the recipient and the text sealed with a data key
                OUTMSG_PREFIX + message_id: seal_fields(record, MESSAGE_FIELDS),
                correlation_index_key(message_id): {"message_id": message_id},
            },
            replace(new, provider=channel.value),
            str(fields["to"]),
        )

    async def write(self, prepared: PreparedReply) -> str:
        """Store a reply made by :meth:`prepare` and enqueue its job, once per key (a second write
        with its key changes nothing); the message id. On a queue that writes records and jobs
        together (:class:`~antifragile.jobs.RecordQueue`), the record, its index and the job
        are one transaction."""
        await self.jobs.open()
        now = self.clock.time()
        (record_key, record), *others = prepared.entries.items()
        queue = self.jobs.queue
        if is_record_queue(queue):
            saved = await queue.save_and_enqueue(
                record_key,
                record,
                expected_version=None,
                jobs=[prepared.job],
                now=now,
                ttl=self.retention,
                alongside=dict(others),
            )
            if saved is not None:
                self.written(prepared, saved[1])
                return prepared.message_id
        # stored before (a second send with the key): keep the first record, and enqueue
        # under the key (the job the first send enqueued, when there was one)
        kv = kv_of(self.jobs)
        for entry_key, value in prepared.entries.items():
            await kv.compare_and_set(
                entry_key, value, expected_version=None, now=now, ttl=self.retention
            )
        self.written(prepared, await self.jobs.enqueue_many([prepared.job]))
        return prepared.message_id

    def written(self, prepared: PreparedReply, enqueued: Sequence[Enqueued]) -> None:
        """Note that *prepared* was written (its job *enqueued*): observed and logged."""
        created = [e.created for e in enqueued]
        self.jobs.observed_enqueue([prepared.job], created)
        if any(created) and _log.isEnabledFor(logging.INFO):
            _log.info("reply %s to %s enqueued", prepared.message_id, mask_phone(prepared.to))

    async def reply(
        self,
        tenant: Tenant,
        event: InboundEvent,
        text: str,
        *,
        key: str | None = None,
        choices: Sequence[tuple[str, str]] = (),
    ) -> str:
        """Reply to the sender of *event* on its channel (see :meth:`send`); *key* defaults to
        ``reply:{channel}:{event_id}`` -- one reply per inbound event."""
        return await self.write(self.prepare_reply(tenant, event, text, key=key, choices=choices))

    def prepare_reply(
        self,
        tenant: Tenant,
        event: InboundEvent,
        text: str,
        *,
        key: str | None = None,
        choices: Sequence[tuple[str, str]] = (),
    ) -> PreparedReply:
        """The reply :meth:`reply` writes, not written yet (see :meth:`prepare`)."""
        if not event.sender:
            raise ConfigurationError("this event has no sender to reply to")
        if event.channel is Channel.TWILIO:
            to = twilio_address(event.sender, dict(event.data))
        else:
            to = event.sender.lstrip("+")
        return self.prepare(
            tenant=tenant,
            channel=event.channel,
            to=to,
            text=text,
            key=key or f"reply:{event.channel.value}:{event.event_id}",
            choices=choices,
            last_inbound=event.occurred_at,
        )

    async def get(self, message_id: str) -> dict[str, Any] | None:
        """The stored message (with its status and provider id), or ``None``."""
        await self.jobs.open()
        found = await kv_of(self.jobs).get(OUTMSG_PREFIX + message_id, now=self.clock.time())
        if found is None or not isinstance(found.value, dict):
            return None
        return open_fields(found.value, MESSAGE_FIELDS)

    async def recent(
        self,
        *,
        tenant_id: str | None = None,
        status: str | None = None,
        delivery_status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        scan_limit: int = 5000,
    ) -> list[dict[str, Any]]:
        """Stored messages matching every filter given, the most recent first; at most *limit*
        after skipping *offset*. Reads at most *scan_limit* records."""
        await self.jobs.open()
        found = await kv_of(self.jobs).scan(OUTMSG_PREFIX, now=self.clock.time(), limit=scan_limit)
        records = [
            open_fields(item.value, MESSAGE_FIELDS)
            for item in found
            if isinstance(item.value, dict)
        ]
        records = [
            record
            for record in records
            if (tenant_id is None or record.get("tenant_id") == tenant_id)
            and (status is None or record.get("status") == status)
            and (delivery_status is None or record.get("delivery_status") == delivery_status)
        ]
        records.sort(key=lambda record: -float(record.get("created_at") or 0.0))
        return records[offset : offset + limit]

    @staticmethod
    def unknown_outcome(record: Mapping[str, Any]) -> bool:
        """Whether *record* is a reply whose send may have happened (a ``sending_since`` or
        ``awaiting_since`` mark is set and no provider message id is known)."""
        marked = record.get("sending_since") is not None or record.get("awaiting_since") is not None
        return marked and not record.get("provider_message_id")

    async def force(self, message_id: str, *, by: str) -> dict[str, Any]:
        """Let the reply be sent again although its earlier send may have happened ("send
        anyway"): its ``sending_since``/``awaiting_since`` marks are cleared, and who asked
        when is noted (``forced_by``, ``forced_at``). The record after the change."""
        await self.jobs.open()
        kv = kv_of(self.jobs)
        now = self.clock.time()
        changes = {
            "sending_since": None,
            "awaiting_since": None,
            **dict.fromkeys(_DELIVERY_FIELDS),
            "forced_by": by,
            "forced_at": now,
        }
        merged = await kv.merge(OUTMSG_PREFIX + message_id, changes, now=now)
        _log.info("reply %s: sending again, asked by %s", message_id, by)
        return open_fields(merged.value, MESSAGE_FIELDS) if isinstance(merged.value, dict) else {}

    async def wait_again(self, message_id: str) -> None:
        """Start a fresh wait for the echo of a reply whose outcome is unknown (its window
        counts from now): a retried job waits and looks up again instead of failing at once."""
        await self.jobs.open()
        now = self.clock.time()
        await kv_of(self.jobs).merge(
            OUTMSG_PREFIX + message_id,
            {"awaiting_since": now, "correlation": correlation_for(message_id)},
            now=now,
        )

    async def mark_sent(self, message_id: str, *, by: str) -> dict[str, Any]:
        """Record that an operator knows the reply reached the customer: its status flag
        ``sent``, the marks cleared, who and when noted (``marked_sent_by``,
        ``marked_sent_at``). The record after the change."""
        await self.jobs.open()
        kv = kv_of(self.jobs)
        now = self.clock.time()
        changes = {
            "status": "sent",
            "sending_since": None,
            "awaiting_since": None,
            "marked_sent_by": by,
            "marked_sent_at": now,
        }
        merged = await kv.merge(OUTMSG_PREFIX + message_id, changes, now=now)
        _log.info("reply %s: marked as sent by %s", message_id, by)
        return open_fields(merged.value, MESSAGE_FIELDS) if isinstance(merged.value, dict) else {}

    # -- the job ----------------------------------------------------------------------------

    async def _deliver(self, message_id: str) -> dict[str, Any]:
        kv = kv_of(self.jobs)
        key = OUTMSG_PREFIX + message_id
        now = self.clock.time()
        found = await kv.get(key, now=now)
        if found is None or not isinstance(found.value, dict):
            _log.warning("reply %s: its record is gone (expired?); nothing to send", message_id)
            return {"status": "expired"}
        record = open_fields(found.value, MESSAGE_FIELDS)
        if record.get("provider_message_id"):
            provider_id = str(record["provider_message_id"])
            await self.deliveries.settle(message_id, str(record["channel"]), provider_id)
            return {"status": "sent", "provider_message_id": provider_id}
        channel = Channel(record["channel"])
        to, text = str(record["to"]), str(record["text"])
        if record.get("sending_since") is not None:
            settled = await self._unknown(kv, message_id, record, channel)
            if settled is not None:
                return settled
            again = await kv.get(key, now=self.clock.time())  # as _unknown left it
            if again is not None and isinstance(again.value, dict):
                record = open_fields(again.value, MESSAGE_FIELDS)
        now = self.clock.time()
        await kv.merge(key, {"sending_since": now, "awaiting_since": None}, now=now)
        try:
            with scrubbed(to, to.removeprefix("whatsapp:")):
                if channel is Channel.TWILIO:
                    sent_twilio = await self.connectors.twilio.send_message(
                        to, text, from_=record.get("from"), reference=message_id
                    )
                    provider_id, provider_status = sent_twilio.sid, sent_twilio.status
                else:
                    sent_whatsapp = await self._send_whatsapp(record, message_id)
                    provider_id, provider_status = sent_whatsapp.id, "accepted"
        except OutcomeUnknownError as exc:
            # the provider may have acted: keep the mark and wait for its status webhooks
            since = self.clock.time()
            await kv.merge(
                key,
                {"awaiting_since": since, "correlation": correlation_for(message_id)},
                now=since,
            )
            raise self._waiting(message_id, since, since, channel) from exc
        except IntegrationError as exc:
            # refused or not sent: a later run may send it
            await kv.merge(
                key, {"sending_since": None, "error_code": exc.code}, now=self.clock.time()
            )
            raise
        except ConfigurationError:
            await kv.merge(key, {"sending_since": None}, now=self.clock.time())
            raise
        return await self._sent(kv, message_id, channel, provider_id, provider_status)

    async def _send_whatsapp(self, record: Mapping[str, Any], message_id: str) -> SentWhatsApp:
        """Send the stored WhatsApp Cloud reply: a choice, a text, or the tenant's template
        outside the customer-service window (see :meth:`send`)."""
        to, text = str(record["to"]), str(record["text"])
        choices = record.get("choices") or ()
        ids, labels = zip(*choices, strict=True) if choices else ((), ())
        stored = record.get("template")
        template = None if stored is None else WhatsAppTemplate.from_json(stored)
        last = record.get("last_inbound")
        return await self.connectors.whatsapp.send_within_window(
            to,
            text,
            template,
            last_inbound=None if last is None else float(last),
            template_only=bool(record.get("template_only")),
            options=labels,
            ids=ids or None,
            reference=message_id,
        )

    async def _sent(
        self,
        kv: KeyValueStore,
        message_id: str,
        channel: Channel,
        provider_id: str | None,
        provider_status: str,
    ) -> dict[str, Any]:
        """Record that the reply was sent (answered, echoed or found) and settle its statuses."""
        done = self.clock.time()
        await kv.merge(
            OUTMSG_PREFIX + message_id,
            {
                "sending_since": None,
                "awaiting_since": None,
                "provider": channel.value,
                "provider_message_id": provider_id,
                "provider_status": provider_status,
                "sent_at": done,
                "error_code": None,
            },
            now=done,
        )
        if provider_id:
            # statuses find the record by the provider's id; any that came early apply now
            await self.deliveries.settle(message_id, channel.value, provider_id)
        _log.info("reply %s sent (%s %s)", message_id, channel.value, provider_id)
        return {"status": "sent", "provider_message_id": provider_id, "how": provider_status}

    def _waiting(self, message_id: str, since: float, now: float, channel: Channel) -> JobDeferred:
        window_ends = since + self.windows[channel.value]
        delay = max(0.0, min(self.poll, window_ends - now))
        return JobDeferred(
            f"reply {message_id}: awaiting echo of {correlation_for(message_id)} since {since:.3f}",
            delay=delay,
        )

    async def _unknown(
        self, kv: KeyValueStore, message_id: str, record: dict[str, Any], channel: Channel
    ) -> dict[str, Any] | None:
        """Settle a reply whose outcome is unknown from what its record holds: the result when it
        was sent, ``None`` to send it again; raises :class:`~antifragile.jobs.JobDeferred` while
        it waits for the echo, :class:`~antifragile.errors.PermanentError` when it failed for
        good, :class:`~antifragile.connectors.OutcomeUnknownError` when it stays unknowable."""
        key = OUTMSG_PREFIX + message_id
        provider = channel.value
        now = self.clock.time()
        status = record.get("delivery_status")
        if status in CONFIRMED:
            provider_id = record.get("delivery_provider_message_id")
            return await self._sent(
                kv, message_id, channel, str(provider_id) if provider_id else None, "echoed"
            )
        clear = {"sending_since": None, "awaiting_since": None}
        if status in FAILED:
            code = record.get("delivery_error_code")
            code = None if code is None else str(code)
            if _template_fallback(record, code):
                # the window had closed: the same reply goes again, as the tenant's template
                fallback = {**clear, **dict.fromkeys(_DELIVERY_FIELDS), "template_only": True}
                await kv.merge(key, {**fallback, "error_code": code}, now=now)
                _log.info("reply %s: failed outside the window; sending the template", message_id)
                return None
            if failure_is_permanent(provider, code):
                await kv.merge(key, {**clear, "error_code": code}, now=now)
                raise PermanentError(
                    f"reply {message_id}: {provider} reported it failed with code {code}; "
                    "sending it again cannot deliver it",
                    provider=provider,
                    operation="send_reply",
                    code="DELIVERY_FAILED",
                    detail=f"error code {code}",
                )
            # failed and worth another try: the old statuses go, the reply is sent again
            await kv.merge(
                key, {**clear, **dict.fromkeys(_DELIVERY_FIELDS), "error_code": code}, now=now
            )
            _log.info("reply %s: %s reported failure %s; sending again", message_id, provider, code)
            return None
        since = float(record.get("awaiting_since") or record["sending_since"])
        if now < since + self.windows[provider]:
            if record.get("awaiting_since") is None:
                # a run stopped in the middle of the call: its echo is awaited from then on
                await kv.merge(
                    key,
                    {"awaiting_since": since, "correlation": correlation_for(message_id)},
                    now=now,
                )
            raise self._waiting(message_id, since, now, channel)
        if channel is Channel.TWILIO:
            to, text = str(record["to"]), str(record["text"])
            with scrubbed(to, to.removeprefix("whatsapp:")):
                found = await self.connectors.twilio.find_sent(
                    to, text, from_=record.get("from"), since=float(record["sending_since"])
                )
            if found is not None:
                return await self._sent(kv, message_id, channel, found.sid, found.status)
        if self.on_unknown.get(provider, "review") == "resend":
            await kv.merge(key, clear, now=now)
            _log.info("reply %s: no echo within its window; sending again", message_id)
            return None
        raise OutcomeUnknownError(
            f"reply {message_id}: no status from {provider} within "
            f"{self.windows[provider]:.0f} s of a send whose answer was lost; it may have been "
            "sent, so it is not sent again",
            provider=provider,
            operation="send_reply",
            replay_safe=False,
            reconcile_key=message_id,
        )
