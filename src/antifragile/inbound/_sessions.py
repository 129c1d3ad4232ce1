"""Conversation sessions: one contact going through a tenant's flow, and what follows it.

::

    sessions = Sessions(jobs, connectors, flows, tenants=tenants, replies=replies)
    turn = await sessions.handle(tenant, event)
    if turn is not None:                        # the flow answered
        await replies.reply(tenant, event, turn.reply)

**State.** One JSON record per contact and tenant in the key-value store beside the job queue,
under :meth:`Sessions.key_for` -- ``session:{tenant}:{sha256(phone)[:24]}``, so no key, job
payload or log line carries the phone number; the record itself holds it (a reply needs it)
and stays in the store. Every change is a compare-and-set on the record's version, retried on
a conflict, so two messages of one contact processed at once both count, and the status flags
the queue writes in the same record are never overwritten. Records expire ``retention``
seconds (30 days by default) after their last change.

Record fields: ``key``, ``tenant_id``, ``flow``, ``channel``, ``phone``, ``round`` (the
conversation's number), ``step`` (the question waiting for an answer), ``fields`` (the answers),
``progress_status`` (``new`` | ``in_progress`` | ``completed``), ``email_status``,
``shopify_status``, ``hubspot_status``, ``slack_status`` (``none`` | ``pending`` | ``sent`` |
``failed``, or ``skipped`` when the integration does not apply: no owner email, no email
collected, switched off, its provider not configured), ``nudge_sent``, ``summary_email_sent``,
``last_active``, ``created_at``, ``completed_at``, ``jobs`` (the integration jobs' ids),
``redrives`` and ``recent`` (the last events handled, so a message handled twice is answered
the same way and changes nothing).

**A turn.** The first message of a contact starts the tenant's flow (greeting and first
question); every later message answers the waiting question: a valid answer is stored and the
next question asked, an invalid one gets the step's error and the question again. After the
last answer the contact gets the flow's completion text and four durable jobs are enqueued in
one transaction, each with a :class:`~antifragile.jobs.StatusFlag` on the record and the
idempotency key ``{job}:{session key}:{round}``; their payload is the session key only:

=============================  =================  ==========================================
job                            flag               effect
=============================  =================  ==========================================
``sessions.summary_email``     ``email_status``   summary email to the tenant's owner (Resend,
                                                  template ``session_summary``); sets
                                                  ``summary_email_sent``
``sessions.shopify_customer``  ``shopify_status``  Shopify customer for the collected email
``sessions.hubspot_contact``   ``hubspot_status``  HubSpot contact for the collected email
``sessions.slack_message``     ``slack_status``   Slack message: the first name and a masked
                                                  phone number, nothing more
=============================  =================  ==========================================

The completion reply never waits for them: a provider that is down, or a queue that cannot
even take the jobs, leaves the flags at ``pending``/``failed``/``none`` and the sweep retries
later. When processing a message fails altogether, the pipeline answers with
:meth:`Sessions.graceful_reply`.

**Schedules** (declared on the jobs, run by the scheduler):

* ``sessions.nudge`` (every 15 minutes): a session in progress whose contact has not written
  for ``nudge_after`` seconds (2 hours by default) gets the flow's nudge once -- ``nudge_sent``
  is set by compare-and-set *before* the reply is enqueued, so two runs never both send it;
* ``sessions.sweep`` (every 10 minutes): for completed sessions, an integration whose flag
  says ``failed`` is **redriven** -- its dead job goes back to the queue with
  ``jobs.dlq.retry`` (same job, same idempotency key, so a provider that acted on an earlier
  attempt does not act twice) when it died of a failure a recovery may fix
  (:data:`~antifragile.jobs._app.RETRYABLE_CODES`), at most ``max_redrives`` times per
  integration; permanent failures and resolved jobs stay with the operator. Only when the job
  no longer exists (purged) is a new one enqueued, under the key
  ``{job}:{session key}:{round}.{n}``. An integration still at ``none`` a minute after
  completion (the jobs could not be enqueued) is enqueued with its original key.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from antifragile.connectors import DEFAULT_TEMPLATES, EmailTemplate, EmailTemplates
from antifragile.errors import AntifragileError, ConfigurationError, ErrorCode
from antifragile.inbound._flags import FeatureFlags
from antifragile.inbound._flows import DEFAULT_FLOWS, Flow, render
from antifragile.inbound._model import (
    DEFAULT_GRACEFUL_REPLY,
    Channel,
    EventKind,
    InboundEvent,
    Tenant,
)
from antifragile.inbound._replies import (
    ConnectorSource,
    Replies,
    kv_of,
    mask_phone,
    scrubbed,
    twilio_address,
)
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
from antifragile.policies import Clock, Retry
from antifragile.stores import KeyValueStore, Versioned

_log = logging.getLogger("antifragile.inbound.sessions")

#: key prefix of the session records
SESSION_PREFIX = "session:"
#: the integrations a completed session triggers, in order
INTEGRATIONS: tuple[str, ...] = ("email", "shopify", "hubspot", "slack")
#: the job of each integration
JOB_NAMES: Mapping[str, str] = {
    "email": "sessions.summary_email",
    "shopify": "sessions.shopify_customer",
    "hubspot": "sessions.hubspot_contact",
    "slack": "sessions.slack_message",
}
#: the feature flag that switches each integration on and off at run time
FLAG_NAMES: Mapping[str, str] = {
    "email": "summary_email",
    "shopify": "shopify_sync",
    "hubspot": "hubspot_sync",
    "slack": "slack_notify",
}
#: the provider each integration calls: not configured, the integration is skipped
PROVIDERS: Mapping[str, str] = {
    "email": "resend",
    "shopify": "shopify",
    "hubspot": "hubspot",
    "slack": "slack",
}
NUDGE_JOB = "sessions.nudge"
SWEEP_JOB = "sessions.sweep"
INTEGRATIONS_QUEUE = "integrations"

#: the email template of the owner's summary (override it in the store like any template)
SUMMARY_TEMPLATE = EmailTemplate(
    "session_summary",
    subject="{{ business }}: new {{ flow }} from {{ name }}",
    text=(
        "A contact just finished the {{ flow }} conversation.\n\n"
        "{% for label, value in answers %}{{ label }}: {{ value }}\n{% endfor %}"
        "Phone: {{ phone }}\n"
        "Channel: {{ channel }}\n"
        "Completed: {{ completed_at }}\n"
    ),
    html=(
        "<p>A contact just finished the {{ flow }} conversation.</p>\n<table>\n"
        '{% for label, value in answers %}<tr><th align="left">{{ label }}</th>'
        "<td>{{ value }}</td></tr>\n{% endfor %}"
        '<tr><th align="left">Phone</th><td>{{ phone }}</td></tr>\n'
        '<tr><th align="left">Channel</th><td>{{ channel }}</td></tr>\n'
        '<tr><th align="left">Completed</th><td>{{ completed_at }}</td></tr>\n</table>\n'
    ),
)

#: the sender of summary emails unless ``summary_sender=`` says otherwise
SUMMARY_SENDER_ENV = "ANTIFRAGILE_EMAIL_FROM"
DEFAULT_SUMMARY_SENDER = "Assistant <onboarding@resend.dev>"

DEFAULT_RETENTION = 30 * 24 * 3600.0
DEFAULT_NUDGE_AFTER = 2 * 3600.0
#: how long after completion an integration still at ``none`` is left alone by the sweep
ENQUEUE_GRACE = 60.0
_MAX_CAS = 20
_RECENT = 10
_SCAN_PAGE = 200
_HEX = "0123456789abcdef"

Effect = Callable[[JobContext, str], Awaitable[dict[str, Any]]]


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


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What a sweep did: dead jobs redriven, jobs enqueued anew, integrations left to an
    operator (permanent failures, too many redrives, resolved jobs)."""

    redriven: int = 0
    enqueued: int = 0
    left: int = 0


def _status_field(integration: str) -> str:
    return f"{integration}_status"


def _label(field: str) -> str:
    return field.replace("_", " ").strip().capitalize()


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


class Sessions:
    """Per-contact flow state, the integrations a completed flow triggers, nudges and sweeps
    (see the module docs).

    *flows* by name (a tenant's ``flow`` names one; :data:`~antifragile.inbound.DEFAULT_FLOWS`
    when empty); *tenants* by id (the jobs look the tenant up); *replies* sends nudges.
    Options: *nudge_after* (seconds of silence before the nudge), *retention* (seconds a
    record is kept after its last change), *integrations* (a subset of :data:`INTEGRATIONS`;
    the others are ``skipped``), *summary_sender* (the ``from`` of summary emails; default
    ``ANTIFRAGILE_EMAIL_FROM``), *templates* (email templates; by default the store's overrides
    over the package defaults plus :data:`SUMMARY_TEMPLATE`), *retry* (the integration jobs'
    policy), *flags* (feature flags switching integrations off at run time: ``summary_email``,
    ``shopify_sync``, ``hubspot_sync``, ``slack_notify``), *max_redrives* (sweep redrives per
    integration), *nudge_cron* and *sweep_cron*.
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
        clock: Clock | None = None,
        flags: FeatureFlags | None = None,
        nudge_after: float = DEFAULT_NUDGE_AFTER,
        retention: float = DEFAULT_RETENTION,
        integrations: Collection[str] = INTEGRATIONS,
        summary_sender: str | None = None,
        templates: EmailTemplates | None = None,
        retry: Retry = DEFAULT_JOB_RETRY,
        max_redrives: int = 3,
        nudge_cron: str = "*/15 * * * *",
        sweep_cron: str = "*/10 * * * *",
        kv: KeyValueStore | None = None,
    ) -> None:
        unknown = sorted(set(integrations) - set(INTEGRATIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown integration(s) {', '.join(unknown)}; one of {', '.join(INTEGRATIONS)}"
            )
        if not nudge_after > 0 or not retention > 0:
            raise ConfigurationError("nudge_after and retention must be > 0 seconds")
        if not isinstance(max_redrives, int) or max_redrives < 0:
            raise ConfigurationError(f"max_redrives must be an int >= 0, got {max_redrives!r}")
        self.jobs = jobs
        self.connectors = connectors
        self.flows: dict[str, Flow] = dict(flows or DEFAULT_FLOWS)
        self.tenants = tenants
        self.replies = replies
        self.clock = clock or jobs.clock
        self.nudge_after = float(nudge_after)
        self.retention = float(retention)
        self.integrations = frozenset(integrations)
        self.summary_sender = (
            summary_sender or os.environ.get(SUMMARY_SENDER_ENV) or DEFAULT_SUMMARY_SENDER
        )
        self._templates = templates
        self.max_redrives = max_redrives
        self._kv = kv
        self.flags = flags
        #: compare-and-set conflicts met (and retried) since this object was made
        self.conflicts = 0

        effects: dict[str, Effect] = {
            "email": self._summary_email,
            "shopify": self._shopify_customer,
            "hubspot": self._hubspot_contact,
            "slack": self._slack_message,
        }
        self.functions: dict[str, JobFunction[..., dict[str, Any]]] = {}
        for integration in INTEGRATIONS:
            self.functions[integration] = jobs.job(
                JOB_NAMES[integration],
                queue=INTEGRATIONS_QUEUE,
                retry=retry,
                provider="resend" if integration == "email" else integration,
            )(_job(effects[integration]))

        async def nudge(ctx: JobContext) -> dict[str, int]:
            """Nudge the contacts who stopped answering (once per session)."""
            return {"nudged": await self.nudge_inactive()}

        async def sweep(ctx: JobContext) -> dict[str, int]:
            """Retry the failed integrations of completed sessions."""
            report = await self.sweep()
            return {"redriven": report.redriven, "enqueued": report.enqueued, "left": report.left}

        nudge.__name__, sweep.__name__ = NUDGE_JOB, SWEEP_JOB
        self.nudge_schedule: Schedule = jobs.every(nudge_cron, name=NUDGE_JOB)(nudge)
        self.sweep_schedule: Schedule = jobs.every(sweep_cron, name=SWEEP_JOB)(sweep)

    # -- keys and records -------------------------------------------------------------------

    @staticmethod
    def key_for(tenant_id: str, phone: str) -> str:
        """The key of *phone*'s session with *tenant_id* (the phone only as a hash)."""
        digits = phone.removeprefix("whatsapp:").lstrip("+").strip()
        return f"{SESSION_PREFIX}{tenant_id}:{hashlib.sha256(digits.encode()).hexdigest()[:24]}"

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
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
    ) -> dict[str, Any] | None:
        """Apply *change* to the record at *key* by compare-and-set, retried on conflict.

        *change* gets a copy of the live record (``None`` when there is none) and returns the
        new record, or ``None`` to write nothing. Returns what was written (or ``None``).
        """
        kv = await self._store()
        for _ in range(_MAX_CAS):
            now = self.clock.time()
            current = await kv.get(key, now=now)
            value = current.value if current is not None else None
            record = dict(value) if isinstance(value, dict) else None
            new = change(record)
            if new is None:
                return None
            written = await kv.compare_and_set(
                key,
                new,
                expected_version=None if current is None else current.version,
                now=now,
                ttl=self.retention,
            )
            if written is not None:
                return new
            self.conflicts += 1
        raise SessionConflictError(f"session {key}: too many concurrent updates; try again")

    # -- a turn -----------------------------------------------------------------------------

    async def handle(self, tenant: Tenant, event: InboundEvent) -> SessionTurn | None:
        """Advance *event*'s sender through *tenant*'s flow; the turn to answer with.

        ``None`` when the flow has nothing to say: the tenant has no flow, the event is not a
        message with a sender on WhatsApp or Twilio, or the sender's session is completed --
        the intent pipeline answers those. Handling the same event twice answers the same way
        and changes nothing.
        """
        flow = self.flow_for(tenant)
        if flow is None or event.kind is not EventKind.MESSAGE or not event.sender:
            return None
        if event.channel not in (Channel.WHATSAPP, Channel.TWILIO):
            return None
        key = self.key_for(tenant.id, event.sender)
        outcome: list[SessionTurn | None] = [None]

        def change(record: dict[str, Any] | None) -> dict[str, Any] | None:
            new, turn = advance(record, flow, tenant, event, key=key, now=self.clock.time())
            outcome[0] = turn
            return new

        written = await self._update(key, change)
        turn = outcome[0]
        if turn is not None:
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
        if written is not None and turn is not None and turn.completed:
            await self._start_integrations(key, written)
        return turn

    # -- integrations -----------------------------------------------------------------------

    async def _applies(self, integration: str, record: Mapping[str, Any]) -> bool:
        if integration not in self.integrations:
            return False
        if self.flags is not None and not await self.flags.is_enabled(FLAG_NAMES[integration]):
            return False
        configured = getattr(self.connectors, "configured", None)
        if callable(configured) and not configured(PROVIDERS[integration]):
            return False  # its job could only die of CONFIGURATION
        if integration == "email":
            tenant = self.tenants.get(str(record.get("tenant_id")))
            return tenant is not None and bool(tenant.owner_email)
        if integration in ("shopify", "hubspot"):
            return bool(_email_of(record, self.flows.get(str(record.get("flow")))))
        return True

    def _prepare(
        self, integration: str, key: str, record: Mapping[str, Any], suffix: str
    ) -> NewJob:
        function = self.functions[integration]
        return function.configure(
            idempotency_key=f"{JOB_NAMES[integration]}:{key}:{record.get('round', 1)}{suffix}",
            status=StatusFlag(key, _status_field(integration)),
        ).prepare(session_key=key)

    async def _start_integrations(self, key: str, record: Mapping[str, Any]) -> None:
        """Enqueue the jobs of a completed session (one transaction); a failure is logged --
        the contact's reply does not depend on it, and the sweep enqueues them later."""
        wanted = [i for i in INTEGRATIONS if await self._applies(i, record)]
        skipped = {_status_field(i): "skipped" for i in INTEGRATIONS if i not in wanted}
        try:
            if skipped:
                kv = await self._store()
                await kv.merge(key, skipped, now=self.clock.time())
            batch = [self._prepare(i, key, record, "") for i in wanted]
            enqueued = await self.jobs.enqueue_many(batch)
            await self._record_jobs(key, dict(zip(wanted, (e.id for e in enqueued), strict=True)))
        except Exception as exc:
            _log.warning(
                "session %s: could not enqueue its integrations (the sweep will): %s",
                key,
                type(exc).__name__,
            )

    async def _record_jobs(self, key: str, ids: Mapping[str, str]) -> None:
        if not ids:
            return

        def change(record: dict[str, Any] | None) -> dict[str, Any] | None:
            if record is None:
                return None
            jobs = dict(record.get("jobs") or {})
            jobs.update(ids)
            return {**record, "jobs": jobs}

        await self._update(key, change)

    async def _session(self, key: str) -> tuple[dict[str, Any], Tenant, Flow | None] | None:
        record = await self.get(key)
        if record is None:
            _log.warning("session %s is gone (expired or reset): nothing to do", key)
            return None
        tenant = self.tenants.get(str(record.get("tenant_id")))
        if tenant is None:
            raise ConfigurationError(f"session {key}: its tenant is not configured")
        return record, tenant, self.flows.get(str(record.get("flow")))

    async def _merge(self, key: str, fields: dict[str, Any]) -> None:
        kv = await self._store()
        await kv.merge(key, fields, now=self.clock.time())

    async def _summary_email(self, ctx: JobContext, session_key: str) -> dict[str, Any]:
        found = await self._session(session_key)
        if found is None:
            return {"skipped": "session gone"}
        record, tenant, flow = found
        if not tenant.owner_email:
            return {"skipped": "no owner email"}
        fields = dict(record.get("fields") or {})
        order = [s.field for s in flow.steps] if flow is not None else []
        order += [f for f in fields if f not in order]
        phone = str(record.get("phone") or "")
        variables = {
            "business": tenant.name or tenant.id,
            "flow": record.get("flow") or "conversation",
            "name": _name_of(record) or "a new contact",
            "answers": [(_label(f), fields[f]) for f in order if f in fields],
            "phone": f"+{phone}" if phone.isdigit() else phone,
            "channel": record.get("channel") or "",
            "completed_at": _iso(record.get("completed_at")),
            "fields": fields,
        }
        email = await self._templates_for().render(SUMMARY_TEMPLATE.name, variables)
        with scrubbed(tenant.owner_email, *map(str, fields.values()), phone):
            sent = await self.connectors.resend.send_email(
                sender=self.summary_sender,
                to=tenant.owner_email,
                subject=email.subject,
                text=email.text,
                html=email.html,
                idempotency_key=ctx.idempotency_key,
            )
        await self._merge(session_key, {"summary_email_sent": True, "summary_email_id": sent.id})
        return {"email_id": sent.id}

    async def _shopify_customer(self, ctx: JobContext, session_key: str) -> dict[str, Any]:
        found = await self._session(session_key)
        if found is None:
            return {"skipped": "session gone"}
        record, _tenant, flow = found
        email = _email_of(record, flow)
        if not email:
            return {"skipped": "no email collected"}
        first, last = _split_name(_name_of(record))
        with scrubbed(email, first, last):
            customer = await self.connectors.shopify.create_customer(
                email=email,
                first_name=first or None,
                last_name=last or None,
                tags=["antifragile", str(record.get("flow") or "intake")],
            )
        await self._merge(session_key, {"shopify_customer_id": customer.id})
        return {"customer_id": customer.id, "found_existing": customer.found_existing}

    async def _hubspot_contact(self, ctx: JobContext, session_key: str) -> dict[str, Any]:
        found = await self._session(session_key)
        if found is None:
            return {"skipped": "session gone"}
        record, _tenant, flow = found
        email = _email_of(record, flow)
        if not email:
            return {"skipped": "no email collected"}
        first, last = _split_name(_name_of(record))
        properties = {"firstname": first, "lastname": last}
        phone = str(record.get("phone") or "")
        if phone:
            properties["phone"] = f"+{phone}" if phone.isdigit() else phone
        with scrubbed(email, first, last, phone):
            contact = await self.connectors.hubspot.create_contact(
                email, {k: v for k, v in properties.items() if v}
            )
        await self._merge(session_key, {"hubspot_contact_id": contact.id})
        return {"contact_id": contact.id, "created": contact.created}

    async def _slack_message(self, ctx: JobContext, session_key: str) -> dict[str, Any]:
        found = await self._session(session_key)
        if found is None:
            return {"skipped": "session gone"}
        record, tenant, _flow = found
        first, _last = _split_name(_name_of(record))
        text = (
            f"New {record.get('flow') or 'conversation'} completed for "
            f"{tenant.name or tenant.id}: {first or 'a contact'} "
            f"({mask_phone(str(record.get('phone') or ''))}) via {record.get('channel')}."
        )
        reference = await self.connectors.slack.post_message(text, reference=ctx.idempotency_key)
        return {"reference": reference}

    # -- reading and resetting --------------------------------------------------------------

    async def get(self, key: str) -> dict[str, Any] | None:
        """The session record at *key* (with every field, the phone included), or ``None``."""
        kv = await self._store()
        found = await kv.get(key, now=self.clock.time())
        return dict(found.value) if found is not None and isinstance(found.value, dict) else None

    async def reset(self, key: str) -> bool:
        """Start *key*'s session over: the contact's next message starts the flow again (a new
        round, so the integrations run again for it). Whether there was a session."""

        def change(record: dict[str, Any] | None) -> dict[str, Any] | None:
            if record is None:
                return None
            return _fresh(record, now=self.clock.time())

        return await self._update(key, change) is not None

    async def list(
        self,
        tenant_id: str | None = None,
        *,
        status: str | None = None,
        limit: int = 100,
        include_pii: bool = False,
    ) -> builtins.list[dict[str, Any]]:
        """Session records (of *tenant_id*, with ``progress_status`` *status*), at most
        *limit*, in key order. Without *include_pii* the phone is masked and the answers are
        left out (``fields`` lists the names of the collected fields only)."""
        if limit < 1:
            return []
        prefix = SESSION_PREFIX if tenant_id is None else f"{SESSION_PREFIX}{tenant_id}:"
        found: builtins.list[dict[str, Any]] = []
        async for entry in self._scan(prefix):
            record = entry.value
            if not isinstance(record, dict):
                continue
            if tenant_id is not None and record.get("tenant_id") != tenant_id:
                continue
            if status is not None and record.get("progress_status") != status:
                continue
            found.append(dict(record) if include_pii else public_view(record))
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

    async def _tenant_sessions(self) -> AsyncIterator[tuple[Tenant, dict[str, Any]]]:
        for tenant_id in sorted(self.tenants):
            tenant = self.tenants[tenant_id]
            async for entry in self._scan(f"{SESSION_PREFIX}{tenant_id}:"):
                if isinstance(entry.value, dict) and entry.value.get("tenant_id") == tenant_id:
                    yield tenant, dict(entry.value)

    # -- schedules --------------------------------------------------------------------------

    async def nudge_inactive(self) -> int:
        """Send the nudge to every session in progress whose contact has been silent for
        ``nudge_after`` seconds and has not been nudged; how many were nudged."""
        nudged = 0
        async for tenant, record in self._tenant_sessions():
            if not _wants_nudge(record, self.clock.time(), self.nudge_after):
                continue
            flow = self.flows.get(str(record.get("flow")))
            if flow is None:
                continue
            key = str(record["key"])
            claimed = await self._claim_nudge(key, record.get("round"))
            if claimed is None:
                continue  # answered, or nudged by another run meanwhile
            step = min(int(claimed.get("step", 0)), len(flow.steps) - 1)
            fields = dict(claimed.get("fields") or {})
            question = render(flow.steps[step].question, fields)
            text = render(flow.nudge, {**fields, "question": question})
            try:
                await self._send(tenant, claimed, text, key=f"nudge:{key}:{claimed.get('round')}")
            except Exception:
                # give the next run a chance: the nudge was not enqueued
                await self._merge(key, {"nudge_sent": False, "nudged_at": None})
                raise
            nudged += 1
        return nudged

    async def _claim_nudge(self, key: str, round_: Any) -> dict[str, Any] | None:
        """Set ``nudge_sent`` if the session still wants its nudge; the record, or ``None``."""

        def claim(current: dict[str, Any] | None) -> dict[str, Any] | None:
            now = self.clock.time()
            if current is None or not _wants_nudge(current, now, self.nudge_after):
                return None
            if current.get("round") != round_:
                return None
            return {**current, "nudge_sent": True, "nudged_at": now}

        return await self._update(key, claim)

    async def _send(self, tenant: Tenant, record: Mapping[str, Any], text: str, *, key: str) -> str:
        channel = Channel(str(record.get("channel")))
        phone = str(record.get("phone") or "")
        if channel is Channel.TWILIO:
            to = twilio_address(phone, {"whatsapp": bool(record.get("twilio_whatsapp"))})
        else:
            to = phone
        return await self.replies.send(tenant=tenant, channel=channel, to=to, text=text, key=key)

    async def sweep(self) -> SweepReport:
        """Retry the failed (or never enqueued) integrations of completed sessions, as the
        module docs describe; what was done."""
        redriven = enqueued = left = 0
        now = self.clock.time()
        async for _tenant, record in self._tenant_sessions():
            if record.get("progress_status") != "completed":
                continue
            key = str(record["key"])
            jobs = dict(record.get("jobs") or {})
            redrives = dict(record.get("redrives") or {})
            for integration in INTEGRATIONS:
                status = record.get(_status_field(integration), "none")
                if status == "none":
                    completed_at = float(record.get("completed_at") or 0.0)
                    if now - completed_at < ENQUEUE_GRACE:
                        continue
                    if not await self._applies(integration, record):
                        continue
                    new = self._prepare(integration, key, record, "")
                    (done,) = await self.jobs.enqueue_many([new])
                    await self._record_jobs(key, {integration: done.id})
                    enqueued += 1
                    continue
                if status != "failed":
                    continue
                count = int(redrives.get(integration, 0))
                if count >= self.max_redrives:
                    left += 1
                    continue
                job_id = jobs.get(integration)
                job = await self.jobs.get(job_id) if job_id else None
                if job is not None and job.state is JobState.DEAD:
                    if job.last_error_code not in RETRYABLE_CODES:
                        left += 1
                        continue
                    redriven += await self.jobs.dlq.retry([job.id])
                elif job is None:
                    new = self._prepare(integration, key, record, f".{count + 1}")
                    (done,) = await self.jobs.enqueue_many([new])
                    await self._record_jobs(key, {integration: done.id})
                    enqueued += 1
                else:
                    left += 1  # resolved by an operator, or running again already
                    continue
                redrives[integration] = count + 1
                await self._merge(key, {"redrives": dict(redrives)})
        if redriven or enqueued:
            _log.info("sweep: %d job(s) redriven, %d enqueued", redriven, enqueued)
        return SweepReport(redriven=redriven, enqueued=enqueued, left=left)


def _job(effect: Effect) -> Effect:
    """A job function over a bound effect (a plain function, so the payload is read from its
    annotations)."""

    async def run(ctx: JobContext, session_key: str) -> dict[str, Any]:
        try:
            return await effect(ctx, session_key)
        except Exception as exc:
            _log.warning(
                "session integration failed",
                extra={
                    "session": session_key,
                    "integration": name,
                    "attempt": ctx.attempt,
                    "reason": getattr(exc, "code", None) or type(exc).__name__,
                },
            )
            raise

    name = getattr(effect, "__name__", "run").lstrip("_")
    run.__name__ = name
    return run


# -- pure logic: one turn, record shapes ------------------------------------------------------


def _new_record(
    key: str, tenant: Tenant, flow: Flow, event: InboundEvent, now: float
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "key": key,
        "tenant_id": tenant.id,
        "flow": flow.name,
        "channel": event.channel.value,
        "phone": event.sender,
        "round": 0,
        "created_at": now,
    }
    return _fresh(record, now=now)


def _fresh(record: Mapping[str, Any], *, now: float) -> dict[str, Any]:
    """*record* made a session that has not started: identity and round kept."""
    kept = {
        k: record[k]
        for k in (
            "key",
            "tenant_id",
            "flow",
            "channel",
            "phone",
            "round",
            "created_at",
            "twilio_whatsapp",
        )
        if k in record
    }
    return {
        **kept,
        "step": 0,
        "fields": {},
        "progress_status": "new",
        **{_status_field(i): "none" for i in INTEGRATIONS},
        "nudge_sent": False,
        "nudged_at": None,
        "summary_email_sent": False,
        "last_active": now,
        "completed_at": None,
        "jobs": {},
        "redrives": {},
        "recent": [],
    }


def advance(
    record: Mapping[str, Any] | None,
    flow: Flow,
    tenant: Tenant,
    event: InboundEvent,
    *,
    key: str,
    now: float,
) -> tuple[dict[str, Any] | None, SessionTurn | None]:
    """One turn, without I/O: the new record (``None``: nothing to write) and the turn."""
    if record is not None:
        for seen in record.get("recent") or ():
            if isinstance(seen, dict) and seen.get("event_id") == event.event_id:
                return None, SessionTurn(
                    str(seen["reply"]), bool(seen["completed"]), key, int(seen["step"])
                )
        if record.get("progress_status") == "completed":
            return None, None
    if record is None or record.get("progress_status") not in ("in_progress",):
        base = _new_record(key, tenant, flow, event, now) if record is None else dict(record)
        new = _fresh(base, now=now)
        new.update(
            flow=flow.name,
            channel=event.channel.value,
            phone=event.sender,
            round=int(base.get("round") or 0) + 1,
            progress_status="in_progress",
            started_at=now,
        )
        if event.channel is Channel.TWILIO:
            new["twilio_whatsapp"] = twilio_address(str(event.sender), dict(event.data)).startswith(
                "whatsapp:"
            )
        question = render(flow.steps[0].question, {})
        turn = SessionTurn(f"{flow.greeting}\n\n{question}", False, key, 0)
        return _remember(new, event, turn), turn
    new = dict(record)
    fields = dict(record.get("fields") or {})
    step = int(record.get("step") or 0)
    new["last_active"] = now
    if step < len(flow.steps):
        current = flow.steps[step]
        value = current.check(event.text)
        if value is None:
            question = render(current.question, fields)
            turn = SessionTurn(f"{render(current.error, fields)}\n\n{question}", False, key, step)
            return _remember(new, event, turn), turn
        fields[current.field] = value
        step += 1
    new["fields"] = fields
    new["step"] = step
    if step < len(flow.steps):
        turn = SessionTurn(render(flow.steps[step].question, fields), False, key, step)
        return _remember(new, event, turn), turn
    new["step"] = len(flow.steps)
    new["progress_status"] = "completed"
    new["completed_at"] = now
    turn = SessionTurn(render(flow.completion, fields), True, key, len(flow.steps))
    return _remember(new, event, turn), turn


def _remember(record: dict[str, Any], event: InboundEvent, turn: SessionTurn) -> dict[str, Any]:
    recent = [r for r in (record.get("recent") or []) if isinstance(r, dict)]
    recent.append(
        {
            "event_id": event.event_id,
            "reply": turn.reply,
            "completed": turn.completed,
            "step": turn.step,
        }
    )
    record["recent"] = recent[-_RECENT:]
    return record


def _wants_nudge(record: Mapping[str, Any], now: float, after: float) -> bool:
    if record.get("progress_status") != "in_progress" or record.get("nudge_sent"):
        return False
    last = record.get("last_active")
    return isinstance(last, int | float) and now - float(last) >= after


def _email_of(record: Mapping[str, Any], flow: Flow | None) -> str | None:
    fields = record.get("fields") or {}
    name = flow.field_of("email") if flow is not None else None
    value = fields.get(name or "email") or fields.get("email")
    return str(value) if value else None


def _name_of(record: Mapping[str, Any]) -> str:
    fields = record.get("fields") or {}
    for name in ("name", "full_name", "first_name"):
        value = fields.get(name)
        if value:
            return str(value)
    return ""


def _split_name(name: str) -> tuple[str, str]:
    parts = name.split()
    if not parts:
        return "", ""
    return parts[0], " ".join(parts[1:])


def public_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """A session record fit for an admin listing: the phone masked, the answers reduced to the
    names of the collected fields, the recent replies left out."""
    view = {k: v for k, v in record.items() if k not in ("phone", "fields", "recent")}
    view["phone"] = mask_phone(str(record.get("phone") or ""))
    view["fields"] = sorted((record.get("fields") or {}).keys())
    return view
