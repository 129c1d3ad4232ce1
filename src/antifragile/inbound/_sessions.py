"""Conversation sessions: one contact going through a tenant's flow, and what follows it.

::

    sessions = Sessions(jobs, connectors, flows, tenants=tenants, replies=replies)
    turn = await sessions.handle(tenant, event)
    if turn is not None:                        # the flow answered
        await replies.reply(tenant, event, turn.reply)

**State.** One JSON record per contact and tenant in the key-value store beside the job queue,
under :meth:`Sessions.key_for` -- ``session:{tenant}:{hash(phone)[:24]}``, so no key, job
payload or log line carries the phone number; the record itself holds it (a reply needs it)
and stays in the store. The hash is an HMAC-SHA256 under the current data key when
``ANTIFRAGILE_DATA_KEYS`` is set -- a plain hash of a phone number could be matched against
guessed numbers by anyone who reads the store -- else a SHA-256. A contact's message looks
the session up under the current key, then under each older data key and unkeyed (records
written before the key, or before a rotation: :meth:`Sessions.keys_for`); a record found under
an older one is **moved** to the current key (written there, deleted from the old one), so a
rotation loses no conversation. A completed session whose actions still have jobs running or
failed (their payloads name the key) stays where it is until they are done.

Every change is a compare-and-set on the record's version, retried on
a conflict, so two messages of one contact processed at once both count, and the status flags
the queue writes in the same record are never overwritten. Records expire ``retention``
seconds (30 days by default) after their last change.

The record is a typed, frozen :class:`~antifragile.inbound.SessionRecord` (its stored JSON is
written and read only by its ``to_stored_json``/``from_json``; with a data key configured the
phone, the answers and the recent messages are stored encrypted): ``key``, ``tenant_id``, ``flow``,
``channel``, ``phone``, ``round`` (the conversation's number), ``step`` (the question waiting
for an answer), ``fields`` (the answers), ``progress_status`` (``new`` | ``in_progress`` |
``completed``), one status flag per action of the flow (``email_status``, ``shopify_status``,
``hubspot_status``, ``slack_status`` for the default ones: ``none`` | ``pending`` | ``sent`` |
``failed``, or ``skipped`` when the action does not apply), ``actions`` (what the completion
runs), ``jobs`` and ``redrives`` (by action name), ``nudge_sent``, ``last_active``,
``created_at``, ``completed_at``, and ``recent`` (the last events handled, so a message
handled twice is answered the same way and changes nothing). What an action remembers
(``summary_email_sent``, ``shopify_customer_id``...) is kept as it was written.

**A turn.** The first message of a contact starts the tenant's flow (greeting and first
question); every later message answers the waiting question: a valid answer is stored and the
next question asked, an invalid one gets the step's error and the question again. After the
last answer the contact gets the flow's completion text, and the flow's ``on_complete``
actions (:data:`~antifragile.inbound.DEFAULT_ON_COMPLETE` unless the flow names its own) are
started: each registered action (:class:`~antifragile.inbound.Actions`) runs as a durable job
of its own, with its :class:`~antifragile.jobs.StatusFlag` on the record and the idempotency
key ``{job}:{session key}:{round}``; its payload is the session key only. The built-in ones:

===========================  =============================  ==============  ================
action                       job                            flag            feature flag
===========================  =============================  ==============  ================
``send_summary_email``       ``sessions.summary_email``     ``email_status``   ``summary_email``
``create_shopify_customer``  ``sessions.shopify_customer``  ``shopify_status`` ``shopify_sync``
``create_hubspot_contact``   ``sessions.hubspot_contact``   ``hubspot_status`` ``hubspot_sync``
``notify_slack``             ``sessions.slack_message``     ``slack_status``   ``slack_notify``
===========================  =============================  ==============  ================

An action that does not apply is ``skipped`` and gets no job: its feature flag is off, its
provider is not configured, or its ``applies`` check says no (no owner email, no email
collected). Adding an integration is registering an action and naming it in a flow's
``on_complete``; nothing here changes.

**The reply with the turn.** The message pipeline asks for the turn with a reply key
(:meth:`Sessions.handle`): the record's change and the turn's reply -- its stored message, index
and send job (:meth:`~antifragile.inbound.Replies.prepare`) -- are then one transaction, so a
session never advances without its reply and a message costs one durable write for both.

**One transaction.** The record's completion -- the last answer, ``completed``, the flags
``pending``/``skipped``, the jobs' ids -- and the jobs themselves are written in one
transaction of the job database (:meth:`~antifragile.jobs.RecordQueue.save_and_enqueue`: the
records live in the key-value table beside the jobs). A worker that dies, or a database that
refuses the jobs, leaves the session where it was: the message's processing is retried and
its replay completes the session with its jobs. There is never a completed session without
them. (Records kept in another store, ``kv=``, cannot share the jobs' transaction: there the
record is written first with its flags ``none``, and the jobs are enqueued after it under
their idempotency keys; when that fails, the turn fails, and the replay of the message -- which
finds the turn done -- enqueues the actions whose flag still says ``none``.)

The completion reply never waits for the actions: a provider that is down leaves its flag
``pending``/``failed`` and the sweep retries later. When processing a message fails
altogether, the pipeline answers with :meth:`Sessions.graceful_reply`.

**Schedules** (declared on the jobs, run by the scheduler):

* ``sessions.nudge`` (every 15 minutes): a session in progress whose contact has not written
  for ``nudge_after`` seconds (2 hours by default) gets the flow's nudge once -- ``nudge_sent``
  is set by compare-and-set *before* the reply is enqueued, so two runs never both send it;
* ``sessions.sweep`` (every 10 minutes): for completed sessions, an action whose flag says
  ``failed`` is **redriven** -- its dead job goes back to the queue with
  ``jobs.dlq.retry`` (same job, same idempotency key, so a provider that acted on an earlier
  attempt does not act twice) when it died of a failure a recovery may fix
  (:data:`~antifragile.jobs._app.RETRYABLE_CODES`), at most ``max_redrives`` times per
  action; permanent failures and resolved jobs stay with the operator. Only when the job
  no longer exists (purged) is a new one enqueued, under the key
  ``{job}:{session key}:{round}.{n}``. An action still at ``none`` a minute after completion
  (records in another store whose jobs could not be enqueued) is enqueued with its original
  key.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from antifragile.connectors import DEFAULT_TEMPLATES, Connectors, EmailTemplates
from antifragile.errors import AntifragileError, ConfigurationError, ErrorCode
from antifragile.inbound._actions import (
    SUMMARY_TEMPLATE,
    Actions,
    RegisteredAction,
    session_contact,
)
from antifragile.inbound._flags import FeatureFlags
from antifragile.inbound._flows import (
    DEFAULT_FLOWS,
    DEFAULT_ON_COMPLETE,
    Flow,
    FlowStep,
    render,
)
from antifragile.inbound._model import (
    DEFAULT_GRACEFUL_REPLY,
    Channel,
    EventKind,
    InboundEvent,
    Tenant,
)
from antifragile.inbound._replies import (
    ConnectorSource,
    PreparedReply,
    Replies,
    is_record_queue,
    kv_of,
    mask_phone,
    twilio_address,
)
from antifragile.inbound._session_record import RecentTurn, SessionRecord
from antifragile.jobs import (
    DEFAULT_JOB_RETRY,
    JobContext,
    JobFunction,
    Jobs,
    JobState,
    NewJob,
    Schedule,
    StatusFlag,
)
from antifragile.jobs._app import RETRYABLE_CODES
from antifragile.observability._personal import lookup_hashes
from antifragile.policies import Clock, Retry
from antifragile.stores import KeyValueStore, Versioned

_log = logging.getLogger("antifragile.inbound.sessions")

#: key prefix of the session records
SESSION_PREFIX = "session:"
#: what the hash in a session's key is computed for (the domain of its HMAC)
SESSION_PURPOSE = "session"
NUDGE_JOB = "sessions.nudge"
SWEEP_JOB = "sessions.sweep"
#: the queue of the jobs a completed session's actions run as
INTEGRATIONS_QUEUE = "integrations"

#: the sender of summary emails unless ``summary_sender=`` says otherwise
SUMMARY_SENDER_ENV = "ANTIFRAGILE_EMAIL_FROM"
DEFAULT_SUMMARY_SENDER = "Assistant <onboarding@resend.dev>"

DEFAULT_RETENTION = 30 * 24 * 3600.0
DEFAULT_NUDGE_AFTER = 2 * 3600.0
#: how long after completion an action still at ``none`` is left alone by the sweep
ENQUEUE_GRACE = 60.0
_MAX_CAS = 20
_RECENT = 10
_SCAN_PAGE = 200
_HEX = "0123456789abcdef"


class SessionConflictError(AntifragileError):
    """A session record kept changing under this update (heavy contention); try again."""

    default_code = ErrorCode.CONFLICT
    default_retryable = True


@dataclass(frozen=True, slots=True)
class SessionTurn:
    """What the flow answers to one message: the *reply*, whether the flow is now *completed*,
    the session's key and the *step* whose question the reply asks (the number of steps once
    completed)."""

    reply: str
    completed: bool
    session_key: str
    step: int
    #: ``(id, label)`` of each option when the reply asks a ``choice`` question: sent as
    #: WhatsApp reply buttons or a list, whose tapped id comes back as the answer
    choices: tuple[tuple[str, str], ...] = ()
    #: the id of the reply written with the record (:meth:`Sessions.handle` with
    #: ``reply_key``), ``None`` when the reply is still to be sent
    reply_message: str | None = None


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What a sweep did: dead jobs redriven, jobs enqueued anew, integrations left to an
    operator (permanent failures, too many redrives, resolved jobs)."""

    redriven: int = 0
    enqueued: int = 0
    left: int = 0


class Sessions:
    """Per-contact flow state, the actions a completed flow runs, nudges and sweeps (see the
    module docs).

    *flows* by name (a tenant's ``flow`` names one; :data:`~antifragile.inbound.DEFAULT_FLOWS`
    when empty); *tenants* by id (the jobs look the tenant up); *replies* sends nudges;
    *actions* is the registry the flows' ``on_complete`` names come from (default: a registry
    with the built-in actions over *connectors*). Options: *nudge_after* (seconds of silence
    before the nudge), *retention* (seconds a record is kept after its last change),
    *summary_sender* (the ``from`` of summary emails; default ``ANTIFRAGILE_EMAIL_FROM``),
    *templates* (email templates; by default the store's overrides over the package defaults
    plus :data:`~antifragile.inbound._actions.SUMMARY_TEMPLATE`), *retry* (the action jobs'
    policy, unless an action has its own), *flags* (feature flags switching actions off at run
    time), *max_redrives* (sweep redrives per action), *nudge_cron* and *sweep_cron*, *kv*
    (keep the records in another key-value store: see the module docs).
    Declares the jobs and schedules on *jobs* (one :class:`Sessions` per :class:`Jobs`).
    """

    def __init__(
        self,
        jobs: Jobs,
        connectors: ConnectorSource,
        flows: Mapping[str, Flow],
        *,
        tenants: Mapping[str, Tenant],
        replies: Replies,
        actions: Actions | None = None,
        clock: Clock | None = None,
        flags: FeatureFlags | None = None,
        nudge_after: float = DEFAULT_NUDGE_AFTER,
        retention: float = DEFAULT_RETENTION,
        summary_sender: str | None = None,
        templates: EmailTemplates | None = None,
        retry: Retry = DEFAULT_JOB_RETRY,
        max_redrives: int = 3,
        nudge_cron: str = "*/15 * * * *",
        sweep_cron: str = "*/10 * * * *",
        kv: KeyValueStore | None = None,
    ) -> None:
        if not nudge_after > 0 or not retention > 0:
            raise ConfigurationError("nudge_after and retention must be > 0 seconds")
        if not isinstance(max_redrives, int) or max_redrives < 0:
            raise ConfigurationError(f"max_redrives must be an int >= 0, got {max_redrives!r}")
        self.jobs = jobs
        self.connectors = connectors
        self.flows: dict[str, Flow] = dict(flows or DEFAULT_FLOWS)
        self.tenants = tenants
        self.replies = replies
        self.actions = (
            actions
            if actions is not None
            else Actions(cast(Connectors, connectors), tenants=tenants)
        )
        self.clock = clock or jobs.clock
        self.nudge_after = float(nudge_after)
        self.retention = float(retention)
        self.summary_sender = (
            summary_sender or os.environ.get(SUMMARY_SENDER_ENV) or DEFAULT_SUMMARY_SENDER
        )
        self._templates = templates
        self.retry = retry
        self.max_redrives = max_redrives
        self._kv = kv
        self.flags = flags
        #: compare-and-set conflicts met (and retried) since this object was made
        self.conflicts = 0
        #: the job of each action a flow completes with, by action name
        self.functions: dict[str, JobFunction[..., dict[str, Any]]] = {}
        self.declare(strict=False)

        async def nudge(ctx: JobContext) -> dict[str, int]:
            """Nudge the contacts who stopped answering (once per session)."""
            return {"nudged": await self.nudge_inactive()}

        async def sweep(ctx: JobContext) -> dict[str, int]:
            """Retry the failed actions of completed sessions."""
            report = await self.sweep()
            return {"redriven": report.redriven, "enqueued": report.enqueued, "left": report.left}

        nudge.__name__, sweep.__name__ = NUDGE_JOB, SWEEP_JOB
        self.nudge_schedule: Schedule = jobs.every(nudge_cron, name=NUDGE_JOB)(nudge)
        self.sweep_schedule: Schedule = jobs.every(sweep_cron, name=SWEEP_JOB)(sweep)

    # -- the actions' jobs ------------------------------------------------------------------

    def declare(self, *, strict: bool = True) -> builtins.list[str]:
        """Declare the job of every action a flow completes with (a worker process must,
        before it runs them); the action names. *strict*: an action no one registered is a
        ConfigurationError (else it is left for later, when it may be registered)."""
        names: builtins.list[str] = []
        for flow in self.flows.values():
            for name in flow.on_complete:
                if name not in self.actions.registry:
                    if strict:
                        raise ConfigurationError(
                            f"flow {flow.name!r} completes with the unknown action {name!r}; "
                            f"registered: {', '.join(sorted(self.actions.registry))}"
                        )
                    continue
                self._function(self.actions.registry[name])
                if name not in names:
                    names.append(name)
        return names

    def _function(self, action: RegisteredAction) -> JobFunction[..., dict[str, Any]]:
        """The job *action* runs as (declared on first use)."""
        function = self.functions.get(action.name)
        if function is not None:
            return function
        if self.flags is not None and action.feature is not None:
            # an action's feature flag is on until someone turns it off
            self.flags.defaults.setdefault(action.feature, True)
        sessions = self

        async def run(ctx: JobContext, session_key: str) -> dict[str, Any]:
            found = await sessions._session(session_key)
            if found is None:
                return {"skipped": "session gone"}
            record, tenant, flow = found

            async def remember(fields: dict[str, Any]) -> None:
                await sessions._merge(session_key, fields)

            try:
                result = await sessions.actions.run_for_session(
                    ctx,
                    action.name,
                    session=record,
                    tenant=tenant,
                    flow=flow,
                    templates=sessions._templates_for(),
                    email_sender=sessions.summary_sender,
                    remember=remember,
                )
            except Exception as exc:
                _log.warning(
                    "session action failed",
                    extra={
                        "session": session_key,
                        "action": action.name,
                        "attempt": ctx.attempt,
                        "reason": getattr(exc, "code", None) or type(exc).__name__,
                    },
                )
                raise
            return dict(result) if isinstance(result, Mapping) else {"result": result}

        run.__name__ = action.job_name
        function = self.jobs.job(
            action.job_name,
            queue=INTEGRATIONS_QUEUE,
            retry=action.retry or self.retry,
            provider=action.provider,
        )(run)
        self.functions[action.name] = function
        return function

    def _prepare(self, action: RegisteredAction, key: str, round_: int, suffix: str = "") -> NewJob:
        return (
            self._function(action)
            .configure(
                idempotency_key=f"{action.job_name}:{key}:{round_}{suffix}",
                status=StatusFlag(key, action.flag_field),
            )
            .prepare(session_key=key)
        )

    def _on_complete(self, flow: Flow | None, record: SessionRecord) -> builtins.list[str]:
        """The actions of *record*'s completion: those it recorded, else (a record written
        before they were) its flow's."""
        if record.actions:
            return builtins.list(record.actions)
        return builtins.list(flow.on_complete if flow is not None else DEFAULT_ON_COMPLETE)

    async def _applies(
        self, action: RegisteredAction, record: SessionRecord, tenant: Tenant, flow: Flow | None
    ) -> bool:
        if (
            self.flags is not None
            and action.feature is not None
            and not await self.flags.is_enabled(action.feature)
        ):
            return False
        configured = getattr(self.connectors, "configured", None)
        if action.provider is not None and callable(configured) and not configured(action.provider):
            return False  # its job could only die of CONFIGURATION
        if action.applies is not None:
            return action.applies(tenant, session_contact(record, flow))
        return True

    # -- keys and records -------------------------------------------------------------------

    @staticmethod
    def key_for(tenant_id: str, phone: str) -> str:
        """The key of *phone*'s session with *tenant_id* (the phone only as a hash: keyed with
        the current data key when one is configured)."""
        return Sessions.keys_for(tenant_id, phone)[0]

    @staticmethod
    def keys_for(tenant_id: str, phone: str) -> builtins.list[str]:
        """The keys *phone*'s session with *tenant_id* may be stored under, the current one
        first: one per data key, then the unkeyed one (see the module docs)."""
        digits = phone.removeprefix("whatsapp:").lstrip("+").strip()
        return [
            f"{SESSION_PREFIX}{tenant_id}:{digest[:24]}"
            for digest in lookup_hashes(SESSION_PURPOSE, digits)
        ]

    async def _locate(self, kv: KeyValueStore, tenant_id: str, phone: str) -> str:
        """The key the session of *phone* is at: the current one, unless it is only found
        under an older one -- then it is moved to the current key, or, while jobs of its
        actions may still name the old key, left there (and that key answered)."""
        current, *older = self.keys_for(tenant_id, phone)
        if not older:
            return current
        now = self.clock.time()
        if await kv.get(current, now=now) is not None:
            return current
        for old in older:
            found = await kv.get(old, now=now)
            record = _parse(found)
            if found is None or record is None:
                continue
            if not _movable(record):
                return old
            written = await kv.compare_and_set(
                current,
                record.replace(key=current).to_stored_json(),
                expected_version=None,
                now=now,
                ttl=self.retention,
            )
            if written is None:
                return current  # another message moved it (or started one) meanwhile
            if not await kv.delete(old, expected_version=found.version, now=now):
                # the old record changed meanwhile: keep it, drop the copy
                await kv.delete(current, expected_version=written.version, now=now)
                return old
            _log.info("session moved to its current key", extra={"session": current})
            return current
        return current

    async def _store(self) -> KeyValueStore:
        if self._kv is not None:
            return self._kv
        await self.jobs.open()
        return kv_of(self.jobs)

    def _templates_for(self) -> EmailTemplates:
        if self._templates is None:
            store = getattr(self.jobs.queue, "store", None)
            self._templates = EmailTemplates(
                store,
                defaults={**DEFAULT_TEMPLATES, SUMMARY_TEMPLATE.name: SUMMARY_TEMPLATE},
                clock=self.clock,
            )
        return self._templates

    def flow_for(self, tenant: Tenant) -> Flow | None:
        """The flow *tenant* runs, or ``None`` (no flow, or one that is not defined)."""
        if not tenant.flow:
            return None
        return self.flows.get(tenant.flow)

    def graceful_reply(self, tenant: Tenant) -> str:
        """What to answer when processing a message of *tenant*'s contact failed: the tenant's
        own graceful reply when it set one, else its flow's, else the default."""
        if tenant.graceful_reply and tenant.graceful_reply != DEFAULT_GRACEFUL_REPLY:
            return tenant.graceful_reply
        flow = self.flow_for(tenant)
        if flow is not None:
            return flow.graceful_reply
        return tenant.graceful_reply or DEFAULT_GRACEFUL_REPLY

    async def _update(
        self,
        key: str,
        change: Callable[[SessionRecord | None], SessionRecord | None],
    ) -> SessionRecord | None:
        """Apply *change* to the record at *key* by compare-and-set, retried on conflict.

        *change* gets the live record (``None`` when there is none) and returns the new
        record, or ``None`` to write nothing. Returns what was written (or ``None``).
        """
        kv = await self._store()
        for _ in range(_MAX_CAS):
            now = self.clock.time()
            current = await kv.get(key, now=now)
            new = change(_parse(current))
            if new is None:
                return None
            written = await kv.compare_and_set(
                key,
                new.to_stored_json(),
                expected_version=None if current is None else current.version,
                now=now,
                ttl=self.retention,
            )
            if written is not None:
                return new
            self.conflicts += 1
        raise SessionConflictError(f"session {key}: too many concurrent updates; try again")

    # -- a turn -----------------------------------------------------------------------------

    async def handle(
        self, tenant: Tenant, event: InboundEvent, *, reply_key: str | None = None
    ) -> SessionTurn | None:
        """Advance *event*'s sender through *tenant*'s flow; the turn to answer with.

        ``None`` when the flow has nothing to say: the tenant has no flow, the event is not a
        message with a sender on WhatsApp or Twilio, or the sender's session is completed --
        the intent pipeline answers those. Handling the same event twice answers the same way
        and changes nothing. The turn that completes the flow is written in the transaction
        that enqueues the flow's actions (see the module docs); when that fails, this raises
        and nothing of the turn is kept.

        With *reply_key*, the turn's reply (:meth:`~antifragile.inbound.Replies.reply` with
        that key) is written in the record's transaction too, when the records live beside
        the jobs and keep as long as the replies': the turn's ``reply_message`` is then its id,
        and there is never an advanced session without its reply. Otherwise (and for a message
        handled before) ``reply_message`` is ``None`` and the caller sends the reply.
        """
        flow = self.flow_for(tenant)
        if flow is None or event.kind is not EventKind.MESSAGE or not event.sender:
            return None
        if event.channel not in (Channel.WHATSAPP, Channel.TWILIO):
            return None
        flags = self._flag_fields(flow)
        kv = await self._store()
        key = await self._locate(kv, tenant.id, event.sender)
        for _ in range(_MAX_CAS):
            now = self.clock.time()
            current = await kv.get(key, now=now)
            record = _parse(current)
            new, turn = advance(record, flow, tenant, event, key=key, now=now, flags=flags)
            if new is None:
                if turn is not None and turn.completed and record is not None:
                    await self._enqueue_missing(record, tenant, flow)  # a replay
                break
            assert turn is not None  # a record to write always comes with its turn
            reply = self._reply_with(tenant, event, turn, reply_key)
            expected = None if current is None else current.version
            if turn.completed:
                written = await self._complete(kv, new, expected, tenant, flow, now, reply)
            elif reply is not None:
                written = await self._save(new, expected, now, reply)
            else:
                written = (
                    await kv.compare_and_set(
                        key,
                        new.to_stored_json(),
                        expected_version=expected,
                        now=now,
                        ttl=self.retention,
                    )
                    is not None
                )
            if written:
                if reply is not None:
                    turn = dataclasses.replace(turn, reply_message=reply.message_id)
                break
            self.conflicts += 1
        else:
            raise SessionConflictError(f"session {key}: too many concurrent updates; try again")
        if turn is not None and _log.isEnabledFor(logging.INFO):
            _log.info(
                "session completed" if turn.completed else "session advanced",
                extra={
                    "session": key,
                    "tenant": tenant.id,
                    "flow": flow.name,
                    "phone": mask_phone(event.sender),
                    "step": turn.step,
                },
            )
        return turn

    def _reply_with(
        self, tenant: Tenant, event: InboundEvent, turn: SessionTurn, reply_key: str | None
    ) -> PreparedReply | None:
        """The turn's reply, to be written with the record -- or ``None``: no *reply_key*, the
        records are kept in another store, the queue cannot write records with jobs, or the
        replies keep their records for another time than the sessions."""
        if reply_key is None or self._kv is not None or not turn.reply:
            return None
        if not is_record_queue(self.jobs.queue):
            return None
        if getattr(self.replies, "retention", None) != self.retention:
            return None
        return self.replies.prepare_reply(
            tenant, event, turn.reply, key=reply_key, choices=turn.choices
        )

    async def _save(
        self, new: SessionRecord, expected: int | None, now: float, reply: PreparedReply
    ) -> bool:
        """Write *new* with *reply* (its records and job) in one transaction; whether it was
        written (``False``: the record changed meanwhile, nothing was written)."""
        queue = self.jobs.queue
        assert is_record_queue(queue)
        saved = await queue.save_and_enqueue(
            new.key,
            new.to_stored_json(),
            expected_version=expected,
            jobs=[reply.job],
            now=now,
            ttl=self.retention,
            alongside=reply.entries,
        )
        if saved is None:
            return False
        self.replies.written(reply, saved[1])
        return True

    def _flag_fields(self, flow: Flow) -> tuple[str, ...]:
        registry = self.actions.registry
        return tuple(registry[n].flag_field for n in flow.on_complete if n in registry)

    async def _complete(
        self,
        kv: KeyValueStore,
        new: SessionRecord,
        expected: int | None,
        tenant: Tenant,
        flow: Flow,
        now: float,
        reply: PreparedReply | None = None,
    ) -> bool:
        """Write the completing record *new* with its actions' jobs (and *reply*, its records
        and job, when given); whether it was written (``False``: the record changed
        meanwhile, nothing was written)."""
        actions = [self.actions.get(name) for name in flow.on_complete]
        tenant = self.tenants.get(tenant.id) or tenant  # the one the jobs will find
        wanted = [a for a in actions if await self._applies(a, new, tenant, flow)]
        batch = [self._prepare(a, new.key, new.round) for a in wanted]
        queue = self.jobs.queue
        atomic = self._kv is None and is_record_queue(queue)
        flags = {a.flag_field: "skipped" for a in actions}
        flags.update({a.flag_field: "pending" if atomic else "none" for a in wanted})
        new = new.replace(
            actions=tuple(a.name for a in actions),
            flags={**new.flags, **flags},
            jobs={a.name: job.id for a, job in zip(wanted, batch, strict=True)} if atomic else {},
        )
        if atomic:
            assert is_record_queue(queue)
            saved = await queue.save_and_enqueue(
                new.key,
                new.to_stored_json(),
                expected_version=expected,
                jobs=batch if reply is None else [*batch, reply.job],
                now=now,
                ttl=self.retention,
                alongside=None if reply is None else reply.entries,
            )
            if saved is None:
                return False
            enqueued = saved[1][: len(batch)]
            if reply is not None:
                self.replies.written(reply, saved[1][len(batch) :])
            self.jobs.observed_enqueue(batch, [e.created for e in enqueued])
            moved = {
                a.name: e.id
                for a, e, job in zip(wanted, enqueued, batch, strict=True)
                if e.id != job.id  # the key named an existing job
            }
            await self._record_jobs(new.key, moved)
            return True
        written = await kv.compare_and_set(
            new.key, new.to_stored_json(), expected_version=expected, now=now, ttl=self.retention
        )
        if written is None:
            return False
        await self._enqueue(new.key, wanted, batch)
        return True

    async def _enqueue(
        self, key: str, actions: Sequence[RegisteredAction], batch: Sequence[NewJob]
    ) -> None:
        """Enqueue *batch* (the jobs of *actions*) and record their ids, the flags still at
        ``none`` made ``pending``."""
        if not batch:
            return
        enqueued = await self.jobs.enqueue_many(batch)
        await self._record_jobs(
            key,
            {a.name: e.id for a, e in zip(actions, enqueued, strict=True)},
            pending=[a.flag_field for a in actions],
        )

    async def _enqueue_missing(
        self, record: SessionRecord, tenant: Tenant, flow: Flow | None
    ) -> int:
        """Enqueue, under their original keys, the actions of completed *record* whose flag
        still says ``none`` (a completion written without its jobs); how many."""
        if record.progress_status != "completed":
            return 0
        missing = [
            self.actions.registry[n]
            for n in self._on_complete(flow, record)
            if n in self.actions.registry
            and record.flag(self.actions.registry[n].flag_field) == "none"
        ]
        wanted = [a for a in missing if await self._applies(a, record, tenant, flow)]
        await self._enqueue(
            record.key, wanted, [self._prepare(a, record.key, record.round) for a in wanted]
        )
        return len(wanted)

    async def _record_jobs(
        self, key: str, ids: Mapping[str, str], *, pending: Sequence[str] = ()
    ) -> None:
        if not ids and not pending:
            return

        def change(record: SessionRecord | None) -> SessionRecord | None:
            if record is None:
                return None
            flags = dict(record.flags)
            for name in pending:
                if flags.get(name, "none") == "none":
                    flags[name] = "pending"
            return record.replace(jobs={**record.jobs, **ids}, flags=flags)

        await self._update(key, change)

    async def _session(self, key: str) -> tuple[SessionRecord, Tenant, Flow | None] | None:
        record = await self.get(key)
        if record is None:
            _log.warning("session %s is gone (expired or reset): nothing to do", key)
            return None
        tenant = self.tenants.get(record.tenant_id)
        if tenant is None:
            raise ConfigurationError(f"session {key}: its tenant is not configured")
        return record, tenant, self.flows.get(record.flow)

    async def _merge(self, key: str, fields: dict[str, Any]) -> None:
        kv = await self._store()
        await kv.merge(key, fields, now=self.clock.time())

    # -- reading and resetting --------------------------------------------------------------

    async def get(self, key: str) -> SessionRecord | None:
        """The session record at *key* (with every field, the phone included), or ``None``."""
        kv = await self._store()
        return _parse(await kv.get(key, now=self.clock.time()))

    async def reset(self, key: str) -> bool:
        """Start *key*'s session over: the contact's next message starts the flow again (a new
        round, so the actions run again for it) and brings the phone number back; until then
        the record holds neither the answers nor the phone. Whether there was a session."""

        def change(record: SessionRecord | None) -> SessionRecord | None:
            if record is None:
                return None
            fresh = _fresh(record, now=self.clock.time(), flags=tuple(record.flags))
            return fresh.replace(phone="")

        return await self._update(key, change) is not None

    async def list(
        self,
        tenant_id: str | None = None,
        *,
        status: str | None = None,
        limit: int = 100,
        include_pii: bool = False,
    ) -> builtins.list[dict[str, Any]]:
        """Session records as JSON (of *tenant_id*, with ``progress_status`` *status*), at
        most *limit*, in key order. Without *include_pii* the phone is masked and the answers
        are left out (``fields`` lists the names of the collected fields only)."""
        if limit < 1:
            return []
        prefix = SESSION_PREFIX if tenant_id is None else f"{SESSION_PREFIX}{tenant_id}:"
        found: builtins.list[dict[str, Any]] = []
        async for entry in self._scan(prefix):
            record = _parse(entry)
            if record is None:
                continue
            if tenant_id is not None and record.tenant_id != tenant_id:
                continue
            if status is not None and record.progress_status != status:
                continue
            found.append(record.to_json() if include_pii else public_view(record))
            if len(found) >= limit:
                break
        return found

    async def _scan(self, prefix: str) -> AsyncIterator[Versioned]:
        """Every live entry under *prefix*, in key order, a bounded page at a time: a full page
        is split by the next hex digit of the key (session keys end in hex)."""
        kv = await self._store()
        page = await kv.scan(prefix, now=self.clock.time(), limit=_SCAN_PAGE)
        if len(page) < _SCAN_PAGE:
            for entry in page:
                yield entry
            return
        exact = await kv.get(prefix, now=self.clock.time())
        if exact is not None:
            yield exact
        if prefix == SESSION_PREFIX:
            children = [f"{SESSION_PREFIX}{t}:" for t in sorted(self.tenants)]
        else:
            children = [prefix + c for c in _HEX]
        for child in children:
            async for entry in self._scan(child):
                yield entry

    async def _tenant_sessions(self) -> AsyncIterator[tuple[Tenant, SessionRecord]]:
        for tenant_id in sorted(self.tenants):
            tenant = self.tenants[tenant_id]
            async for entry in self._scan(f"{SESSION_PREFIX}{tenant_id}:"):
                record = _parse(entry)
                if record is not None and record.tenant_id == tenant_id:
                    yield tenant, record

    # -- schedules --------------------------------------------------------------------------

    async def nudge_inactive(self) -> int:
        """Send the nudge to every session in progress whose contact has been silent for
        ``nudge_after`` seconds and has not been nudged; how many were nudged."""
        nudged = 0
        async for tenant, record in self._tenant_sessions():
            if not _wants_nudge(record, self.clock.time(), self.nudge_after):
                continue
            flow = self.flows.get(record.flow)
            if flow is None:
                continue
            claimed = await self._claim_nudge(record.key, record.round)
            if claimed is None:
                continue  # answered, or nudged by another run meanwhile
            step = min(claimed.step, len(flow.steps) - 1)
            fields = dict(claimed.fields)
            question = render(flow.steps[step].question, fields)
            values = {**fields, "question": question}
            text = render(flow.nudge, values)
            try:
                await self._send(
                    tenant, claimed, text, key=f"nudge:{record.key}:{claimed.round}", values=values
                )
            except Exception:
                # give the next run a chance: the nudge was not enqueued
                await self._merge(record.key, {"nudge_sent": False, "nudged_at": None})
                raise
            nudged += 1
        return nudged

    async def _claim_nudge(self, key: str, round_: int) -> SessionRecord | None:
        """Set ``nudge_sent`` if the session still wants its nudge; the record, or ``None``."""

        def claim(current: SessionRecord | None) -> SessionRecord | None:
            now = self.clock.time()
            if current is None or not _wants_nudge(current, now, self.nudge_after):
                return None
            if current.round != round_:
                return None
            return current.replace(nudge_sent=True, nudged_at=now)

        return await self._update(key, claim)

    async def _send(
        self,
        tenant: Tenant,
        record: SessionRecord,
        text: str,
        *,
        key: str,
        values: Mapping[str, Any],
    ) -> str:
        channel = Channel(record.channel)
        if channel is Channel.TWILIO:
            to = twilio_address(record.phone, {"whatsapp": bool(record.twilio_whatsapp)})
        else:
            to = record.phone
        # a nudge goes out as the tenant's WhatsApp template when it has one
        return await self.replies.send(
            tenant=tenant,
            channel=channel,
            to=to,
            text=text,
            key=key,
            last_inbound=record.last_active,
            template_only=True,
            values=values,
        )

    async def sweep(self) -> SweepReport:
        """Retry the failed (or never enqueued) actions of completed sessions, as the module
        docs describe; what was done."""
        redriven = enqueued = left = 0
        now = self.clock.time()
        async for tenant, record in self._tenant_sessions():
            if record.progress_status != "completed":
                continue
            key = record.key
            flow = self.flows.get(record.flow)
            redrives = dict(record.redrives)
            for name in self._on_complete(flow, record):
                action = self.actions.registry.get(name)
                if action is None:
                    continue
                status = record.flag(action.flag_field)
                if status == "none":
                    if now - (record.completed_at or 0.0) < ENQUEUE_GRACE:
                        continue
                    if not await self._applies(action, record, tenant, flow):
                        continue
                    await self._enqueue(key, [action], [self._prepare(action, key, record.round)])
                    enqueued += 1
                    continue
                if status != "failed":
                    continue
                count = redrives.get(name, 0)
                if count >= self.max_redrives:
                    left += 1
                    continue
                job_id = record.jobs.get(name)
                if job_id is None:  # not recorded: the job its original key names, if any
                    new = self._prepare(action, key, record.round)
                    (done,) = await self.jobs.enqueue_many([new])
                    await self._record_jobs(key, {name: done.id})
                    job_id = done.id
                    if done.created:
                        enqueued += 1
                        redrives[name] = count + 1
                        await self._merge(key, {"redrives": dict(redrives)})
                        continue
                job = await self.jobs.get(job_id)
                if job is not None and job.state is JobState.DEAD:
                    if job.last_error_code not in RETRYABLE_CODES:
                        left += 1
                        continue
                    redriven += await self.jobs.dlq.retry([job.id])
                elif job is None:
                    new = self._prepare(action, key, record.round, f".{count + 1}")
                    await self._enqueue(key, [action], [new])
                    enqueued += 1
                else:
                    left += 1  # resolved by an operator, or running again already
                    continue
                redrives[name] = count + 1
                await self._merge(key, {"redrives": dict(redrives)})
        if redriven or enqueued:
            _log.info("sweep: %d job(s) redriven, %d enqueued", redriven, enqueued)
        return SweepReport(redriven=redriven, enqueued=enqueued, left=left)


# -- pure logic: one turn, record shapes ------------------------------------------------------


def _movable(record: SessionRecord) -> bool:
    """Whether *record* may move to another key: no job of its actions is still to run or to
    be redriven (a ``pending`` or ``failed`` flag: their payloads and status flags name the
    key)."""
    return not any(value in ("pending", "failed") for value in record.flags.values())


def _parse(entry: Versioned | None) -> SessionRecord | None:
    if entry is None or not isinstance(entry.value, dict):
        return None
    return SessionRecord.from_json(entry.value)


def _fresh(record: SessionRecord, *, now: float, flags: Sequence[str]) -> SessionRecord:
    """*record* made a session that has not started: identity, round and creation kept,
    every flag in *flags* at ``none``."""
    return SessionRecord(
        key=record.key,
        tenant_id=record.tenant_id,
        flow=record.flow,
        channel=record.channel,
        phone=record.phone,
        round=record.round,
        created_at=record.created_at,
        twilio_whatsapp=record.twilio_whatsapp,
        flags=dict.fromkeys(flags, "none"),
        last_active=now,
    )


def advance(
    record: SessionRecord | None,
    flow: Flow,
    tenant: Tenant,
    event: InboundEvent,
    *,
    key: str,
    now: float,
    flags: Sequence[str] = (),
) -> tuple[SessionRecord | None, SessionTurn | None]:
    """One turn, without I/O: the new record (``None``: nothing to write) and the turn. A new
    round starts with every flag in *flags* (those of the flow's actions) at ``none``."""
    if record is not None:
        for seen in record.recent:
            if seen.event_id == event.event_id:
                return None, _turn(flow, seen.reply, seen.completed, key, seen.step)
        if record.progress_status == "completed":
            return None, None
    if record is None or record.progress_status != "in_progress":
        base = record or SessionRecord(
            key=key,
            tenant_id=tenant.id,
            flow=flow.name,
            channel=event.channel.value,
            phone=str(event.sender),
            created_at=now,
        )
        twilio = None
        if event.channel is Channel.TWILIO:
            twilio = twilio_address(str(event.sender), dict(event.data)).startswith("whatsapp:")
        new = _fresh(base, now=now, flags=flags).replace(
            flow=flow.name,
            channel=event.channel.value,
            phone=str(event.sender),
            round=base.round + 1,
            progress_status="in_progress",
            started_at=now,
            twilio_whatsapp=twilio if twilio is not None else base.twilio_whatsapp,
        )
        question = render(flow.steps[0].question, {})
        turn = _turn(flow, f"{flow.greeting}\n\n{question}", False, key, 0)
        return _remember(new, event, turn), turn
    fields = dict(record.fields)
    step = record.step
    new = record.replace(last_active=now)
    if step < len(flow.steps):
        current = flow.steps[step]
        value = current.check(_answer(current, event))
        if value is None:
            question = render(current.question, fields)
            reply = f"{render(current.error, fields)}\n\n{question}"
            turn = _turn(flow, reply, False, key, step)
            return _remember(new, event, turn), turn
        fields[current.field] = value
        step += 1
    new = new.replace(fields=fields, step=step)
    if step < len(flow.steps):
        turn = _turn(flow, render(flow.steps[step].question, fields), False, key, step)
        return _remember(new, event, turn), turn
    new = new.replace(step=len(flow.steps), progress_status="completed", completed_at=now)
    turn = SessionTurn(render(flow.completion, fields), True, key, len(flow.steps))
    return _remember(new, event, turn), turn


def _turn(flow: Flow, reply: str, completed: bool, key: str, step: int) -> SessionTurn:
    """The turn whose *reply* asks step *step*: with its choices when it is a ``choice``."""
    choices: tuple[tuple[str, str], ...] = ()
    if not completed and step < len(flow.steps):
        current = flow.steps[step]
        choices = tuple((choice_id(current, i), o) for i, o in enumerate(current.options, 1))
    return SessionTurn(reply, completed, key, step, choices)


def choice_id(step: FlowStep, number: int) -> str:
    """The id the button or row of option *number* (from 1) of *step* carries."""
    return f"{step.field}:{number}"


def _answer(step: FlowStep, event: InboundEvent) -> str | None:
    """The answer *event* gives to *step*: the option of a tapped button or picked row of this
    step (its id), else the message's text (typed, or the button's label)."""
    reply_id = event.data.get("reply_id")
    if step.options and isinstance(reply_id, str):
        field, _, number = reply_id.rpartition(":")
        if field == step.field and number.isdigit():
            return number
    return event.text


def _remember(record: SessionRecord, event: InboundEvent, turn: SessionTurn) -> SessionRecord:
    seen = RecentTurn(event.event_id, turn.reply, turn.completed, turn.step)
    return record.replace(recent=(*record.recent, seen)[-_RECENT:])


def _wants_nudge(record: SessionRecord, now: float, after: float) -> bool:
    if record.progress_status != "in_progress" or record.nudge_sent:
        return False
    return now - record.last_active >= after


def public_view(record: SessionRecord) -> dict[str, Any]:
    """A session record fit for an admin listing: the phone masked, the answers reduced to the
    names of the collected fields, the recent replies left out."""
    view = {k: v for k, v in record.to_json().items() if k not in ("phone", "fields", "recent")}
    view["phone"] = mask_phone(record.phone)
    view["fields"] = sorted(record.fields)
    return view
