"""Actions: every side effect -- of a handled message, or of a completed conversation flow.

There is one registry. An intent handler names actions, run as the steps of one durable saga
per handler; a flow names actions in ``on_complete``, each run as a durable job of its own with
a status flag on the session (:mod:`antifragile.inbound._sessions`,
:meth:`Actions.run_for_session`). An action reads what it is about alike in both:
:attr:`ActionContext.contact` (a message's sender, profile name and first email address, or a
session's phone and answers), and its error leaves with the personal data of its context
masked (:meth:`ActionContext.personal_data`), one way for both.

::

    actions = Actions(connectors, tenants=tenants)       # the built-in actions are registered

    @actions.action("create_lead", provider="hubspot", compensate=delete_lead)
    async def create_lead(ctx: ActionContext) -> dict[str, Any]:
        emails = find_emails(ctx.event.text)
        ...
        return {"lead_id": lead.id}                      # JSON, kept in the saga's results

    actions.declare(jobs, handlers)                      # in every process that runs workers
    await actions.start(jobs, handler, inbox_id=..., tenant_id=..., classification=...)

**One saga per handler.** :meth:`Actions.saga_for` declares (once per :class:`Jobs`, cached) the
saga ``actions.<handler name>`` whose steps are the handler's actions, in order, each with its
compensation. :meth:`Actions.start` enqueues a run with the data
``{"inbox_id", "tenant_id", "handler", "classification", "data"}`` -- the classification
without personal data (entities never hold any), ``data`` the handler's -- under the
idempotency key ``actions:<inbox id>``, so a message's actions run once however often it is
handled. The saga's result (:class:`~antifragile.jobs.SagaResult`) lists the actions executed,
the one that failed and the compensations run.

**A step** loads the message from the inbox (``jobs.queue.get_inbound``: personal data stays in
the inbox record, never in job payloads), finds its tenant and calls the action with an
:class:`ActionContext`; ``ctx.idempotency_key`` is the step's own (``saga:<job id>:<step>``),
handed to providers so that a step run twice has one effect. A provider's failure follows the
saga's rules: a transient one is retried with back-off (the saga job is rescheduled, no worker
waits), a permanent one -- or the retries running out -- compensates the steps before it. An
action whose *provider* is not configured is skipped (its result says so) rather than failed:
a missing integration must not undo the others.

**Built-in actions**

=========================  ========  =====================================================
``notify_sales``           slack     a Slack message: intent, confidence, masked phone,
                                     entities, a scrubbed excerpt, what earlier steps did
``create_order``           shopify   a Shopify draft order from the quantity in the message,
                                     reconciled by the step's key; compensation: delete it
``create_support_ticket``  --        a high-priority ``support_ticket`` task (kept even when
                                     a later step fails: a complaint stays recorded)
``flag_for_review``        --        a ``review`` task; compensation: cancel it
``send_email``             email     an email to the tenant's owner, with the message
``create_shopify_customer`` shopify  a Shopify customer from the contact's email
``create_hubspot_contact`` hubspot   a HubSpot contact from the contact's email
``send_summary_email``     email     the owner's summary (template ``session_summary``): a
                                     completed flow's answers, or the message
``notify_slack``           slack     a short Slack message: first name, masked phone
``book_call``              (see      a call through the tenant's scheduling provider
                           below)    (:func:`scheduling_provider`): Cal.com -- a booking when
                                     the message names a day, a time and an email (and an
                                     event type is configured), else the booking link;
                                     Calendly -- a single-use link sent to the contact;
                                     Acuity -- an appointment at the time named, else the
                                     next free times offered
``add_to_audience``        mailchimp the contact (email, first and last name) added to the
                                     tenant's Mailchimp audience, or updated there
=========================  ========  =====================================================

The email actions send through the tenant's email chain (``Tenant.email_chain``, else
``ANTIFRAGILE_EMAIL_CHAIN``) from the tenant's ``email_from`` (else the *email_sender*); a send
whose outcome is unknown at one provider is settled by that provider's status webhooks (its
echo, with *echoes*) or its own lookup (Mandrill) before another provider may send it.
``add_to_audience`` is not in a flow's default ``on_complete``: a flow names it to use it (its
status flag ``mailchimp_status``, feature ``mailchimp_sync``, job ``sessions.mailchimp_member``).

The last four are what a flow completes with by default: each registers the status flag, the
feature flag, the job name and the check (``applies``) its run as a flow's job uses
(``email_status``/``summary_email``/``sessions.summary_email``, ``shopify_status``/
``shopify_sync``/``sessions.shopify_customer``, ``hubspot_status``/``hubspot_sync``/
``sessions.hubspot_contact``, ``slack_status``/``slack_notify``/``sessions.slack_message``).

Every action declares what an unknown outcome calls for (*on_unknown*: ``reconcile`` -- look
it up by the action's key --, ``resend`` -- harmless or deduplicated by the provider --, or
``review`` -- a person decides, the default). It is recorded on the registration; an action
handles an unknown outcome itself, as below, and a job's retries follow its policy. Slack's
actions write a *sending* mark (``sending:<key>``) before they post, so a run killed in the
middle of the call is known to the next one: ``notify_slack`` (``resend``) posts again and says
so in its result (``repeat_of_unknown``), ``notify_sales`` opens a reconcile task. With
*echoes* (the service's actions have them), ``book_call`` waits for Cal.com's
``BOOKING_CREATED`` echoing the booking's key before it opens a task. ``book_call`` notes what
it arranged on the contact's session (``booking_status``: ``link_sent``, ``booked``), which the
provider's webhook then settles (:mod:`antifragile.inbound._bookings`); with *replies* (the
service's actions have them) it sends the contact Calendly's link, Acuity's free times or its
confirmation.

An outcome the provider leaves unknown becomes a task for a person instead of a retry that could
act twice: Slack may or may not have posted and cannot be asked. A Shopify draft order carries
the step's idempotency key as its ``antifragile-key`` note attribute, so after an ambiguous
failure the connector looks it up by that key (and sends it again only when it is absent); the
task is opened only when that lookup fails too.
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar, cast, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from antifragile.connectors import (
    DEFAULT_TEMPLATES,
    Booking,
    ChainSent,
    Connectors,
    EmailChain,
    EmailTemplate,
    EmailTemplates,
    EmailUnsettledError,
    MessageTemplate,
    OutcomeUnknownError,
    correlation_for,
    idempotency_key_for,
)
from antifragile.connectors._failover import chain_from
from antifragile.errors import (
    AntifragileError,
    ConfigurationError,
    ConflictError,
    ErrorCode,
    InvalidRequestError,
    TransientError,
)
from antifragile.inbound._bookings import SCHEDULING_PROVIDERS, remember_booking, settle_booking
from antifragile.inbound._echo import Echo, Echoes
from antifragile.inbound._flags import check_flag_name
from antifragile.inbound._flows import Flow
from antifragile.inbound._handlers import BookingSettings, Handlers, RegisteredHandler
from antifragile.inbound._hubspot_contacts import upsert_contact
from antifragile.inbound._intents import find_emails
from antifragile.inbound._model import Channel, Classification, EventKind, InboundEvent, Tenant
from antifragile.inbound._replies import Replies, mask_phone, scrub
from antifragile.inbound._session_record import SessionRecord
from antifragile.inbound._tasks import Tasks
from antifragile.jobs import Enqueued, JobContext, JobDeferred, Jobs, Saga, Step, StepContext
from antifragile.policies import Clock, Retry
from antifragile.stores import KeyValueStore

_logger = logging.getLogger("antifragile.inbound.actions")

EMAIL_FROM_ENV = "ANTIFRAGILE_EMAIL_FROM"
DEFAULT_EMAIL_FROM = "Assistant <assistant@antifragile.local>"
#: the queue the action sagas wait on
ACTIONS_QUEUE = "actions"
#: entity keys that are never copied out of a message (defence in depth: the classifier's
#: entities hold none, but a classification posted by an AI service might)
PII_ENTITIES = frozenset({"email", "emails", "phone", "phones", "name", "address"})

#: what an action does when a provider leaves its outcome unknown (the request may or may not
#: have acted): ``reconcile`` -- look the effect up at the provider by the action's key;
#: ``resend`` -- send again (harmless or deduplicated by the provider); ``review`` -- a person
#: decides (a task, or the dead-letter queue)
OnUnknown = Literal["reconcile", "resend", "review"]
ON_UNKNOWN: tuple[str, ...] = get_args(OnUnknown)

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

#: the Slack messages of ``notify_sales`` and ``notify_slack``: Slack ``mrkdwn`` templates, so
#: whatever a customer wrote (a profile name, the message) is escaped, never markup
SALES_SLACK = MessageTemplate(
    "notify_sales",
    "slack",
    "New {{ intent }} ({{ confidence }}) from {{ phone }} via {{ channel }} for {{ business }}"
    "{% if details %}\nDetails: {{ details }}{% endif %}"
    "{% if excerpt %}\nMessage: {{ excerpt }}{% endif %}"
    "{% for name, shown in results %}\n{{ name }}: {{ shown }}{% endfor %}"
    "\nInbox: {{ inbox_id }}",
)
CONTACT_SLACK = MessageTemplate(
    "notify_slack",
    "slack",
    "New {{ what }} for {{ business }}: {{ first_name }} ({{ phone }}) via {{ channel }}.",
)

_EMAIL_TEXT = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_NUMBER_TEXT = re.compile(r"\+?\d[\d\s().-]{5,}\d")


class InboxEntryMissingError(AntifragileError, LookupError):
    """The message a saga's actions are about is no longer in the inbox (purged)."""

    default_code = ErrorCode.NOT_FOUND


def _scrub_text(text: str | None, *, limit: int = 200) -> str:
    """*text* without email addresses and phone-like numbers, cut to *limit* characters."""
    cleaned = _NUMBER_TEXT.sub("[number]", _EMAIL_TEXT.sub("[email]", text or ""))
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def public_classification(classification: Classification) -> dict[str, Any]:
    """The classification as JSON, without personal data in its entities."""
    data = classification.to_json()
    data["entities"] = {k: v for k, v in data["entities"].items() if k not in PII_ENTITIES}
    return data


@dataclass(frozen=True, slots=True)
class Contact:
    """Who an action is about, whatever started it: the *phone* (as the channel gave it),
    *name*, *email* (``None`` when none is known) and *channel*. From a message: the sender,
    the profile name and the first email address in the text; from a completed session: the
    phone, the name answer and the email answer."""

    phone: str
    name: str
    email: str | None
    channel: str

    @property
    def e164(self) -> str:
        """The phone as ``+digits`` when it is bare digits, else as it is."""
        return f"+{self.phone}" if self.phone.isdigit() else self.phone

    @property
    def first_name(self) -> str:
        return _split_name(self.name)[0]

    @property
    def last_name(self) -> str:
        return _split_name(self.name)[1]


def session_contact(record: SessionRecord, flow: Flow | None) -> Contact:
    """The contact of a completed session: its phone, the name answer, the email answer (the
    field of *flow*'s first ``email`` step, else ``email``)."""
    return Contact(
        phone=record.phone,
        name=_name_of(record.fields),
        email=_email_of(record.fields, flow),
        channel=record.channel,
    )


@dataclass(eq=False)
class ActionContext:
    """What an action knows: the step (of the saga, or of the action's own job), the message
    and its tenant, the classification, the handler's data, and the services.
    ``idempotency_key`` is the step's own; in a compensation, ``result`` is what the action
    returned.

    An action run on a flow's completion has the *session* record and its *flow*; its
    ``event`` is the contact's last message as the session knows it (sender and channel, no
    text) and its classification ``FLOW_COMPLETED``. :attr:`contact` reads either alike.
    """

    step: StepContext
    event: InboundEvent
    tenant: Tenant
    classification: Classification
    inbox_id: str
    data: dict[str, Any]
    connectors: Connectors
    tasks: Tasks
    booking: BookingSettings
    email_sender: str
    handler: str = ""
    session: SessionRecord | None = None
    flow: Flow | None = None
    templates: EmailTemplates | None = None
    remember_fields: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    echoes: Echoes | None = None
    replies: Replies | None = None

    @property
    def contact(self) -> Contact:
        """The person this action is about (see :class:`Contact`)."""
        if self.session is not None:
            return session_contact(self.session, self.flow)
        emails = find_emails(self.event.text)
        return Contact(
            phone=self.event.sender or "",
            name=_profile_name(self.event) or "",
            email=emails[0] if emails else None,
            channel=self.event.channel.value,
        )

    def personal_data(self) -> list[str]:
        """Every personal value this action may handle -- masked out of its errors."""
        values: list[str] = []
        phone = self.session.phone if self.session is not None else (self.event.sender or "")
        if phone:
            values += [phone, f"+{phone}"]
        if self.session is not None:
            values += [str(v) for v in self.session.fields.values()]
        else:
            values += [v for v in (_profile_name(self.event),) if v]
            values += find_emails(self.event.text)
        if self.tenant.owner_email:
            values.append(self.tenant.owner_email)
        return values

    async def remember(self, **fields: Any) -> None:
        """Keep *fields* (JSON, ids rather than personal data) on the session record of a
        completed flow, for the admin views; nothing for a message."""
        if self.remember_fields is not None:
            await self.remember_fields(fields)

    @property
    def idempotency_key(self) -> str:
        return self.step.idempotency_key

    @property
    def sender(self) -> str:
        """The ``from`` of this tenant's emails: its ``email_from``, else the service's."""
        return self.tenant.email_from or self.email_sender

    @property
    def clock(self) -> Clock:
        return self.step.clock

    @property
    def results(self) -> dict[str, Any]:
        """What the earlier actions returned, by name."""
        return self.step.results

    @property
    def result(self) -> Any:
        """In a compensation: what its action returned."""
        return self.step.results.get(self.step.step_name)

    @property
    def source(self) -> str:
        if self.session is not None:
            return f"session:{self.session.key}"
        return f"inbox:{self.inbox_id}"


ActionFunction = Callable[[ActionContext], Awaitable[Any]]
A = TypeVar("A", bound=ActionFunction)
#: whether an action applies to a completed session's contact (``False``: ``skipped``)
Applies = Callable[[Tenant, Contact], bool]


@dataclass(frozen=True, slots=True)
class RegisteredAction:
    """An action as registered: its name, function, provider and compensation; and, for its
    run as a job of its own (a flow's completion), its status *flag* field on the session
    (default ``<name>_status``), the *feature* flag that switches it off, its *job* name
    (default ``actions.<name>``), whether it *applies* to a contact, and what it does with an
    unknown outcome (*on_unknown*)."""

    name: str
    fn: ActionFunction
    provider: str | None = None
    compensate: ActionFunction | None = None
    retry: Retry | None = None
    flag: str | None = None
    feature: str | None = None
    job: str | None = None
    applies: Applies | None = None
    on_unknown: OnUnknown = "review"

    @property
    def flag_field(self) -> str:
        """The status flag field on the session record."""
        return self.flag or f"{self.name}_status"

    @property
    def job_name(self) -> str:
        """The name of the action's own job."""
        return self.job or f"actions.{self.name}"


@dataclass(eq=False)
class _Declared:
    sagas: dict[str, Saga] = field(default_factory=dict)


class Actions:
    """The registry of actions, and the sagas that run them (see the module docs).

    *connectors* reach the providers; *tasks* keep task records (default: the store of the
    jobs a saga runs on); *tenants* (by id; a live mapping is fine) give ``send_email`` its
    owner address; *booking* configures ``book_call`` (default: from the environment);
    *email_sender* is the ``from`` of emails (``ANTIFRAGILE_EMAIL_FROM``); *queue* and
    *step_retry* are the sagas'; *skip_unconfigured* skips (rather than fails) an action whose
    provider is not configured. *builtins* registers the built-in actions. *echoes*, when set,
    lets an action whose outcome is unknown wait for the provider's status webhook
    (``book_call``: Cal.com's ``BOOKING_CREATED``) before it asks a person.
    """

    def __init__(
        self,
        connectors: Connectors,
        *,
        tasks: Tasks | None = None,
        tenants: Mapping[str, Tenant] | None = None,
        booking: BookingSettings | None = None,
        email_sender: str | None = None,
        queue: str = ACTIONS_QUEUE,
        step_retry: Retry | None = None,
        skip_unconfigured: bool = True,
        builtins: bool = True,
        echoes: Echoes | None = None,
    ) -> None:
        self.connectors = connectors
        self.echoes = echoes
        #: sends ``book_call``'s links and confirmations to the contact (the service sets it)
        self.replies: Replies | None = None
        self.tasks = tasks
        self.tenants: Mapping[str, Tenant] = tenants if tenants is not None else {}
        self.booking = booking if booking is not None else BookingSettings.from_env()
        self.email_sender = email_sender or os.environ.get(EMAIL_FROM_ENV) or DEFAULT_EMAIL_FROM
        self.queue = queue
        self.step_retry = step_retry
        self.skip_unconfigured = skip_unconfigured
        self.registry: dict[str, RegisteredAction] = {}
        self._declared: weakref.WeakKeyDictionary[Jobs, _Declared] = weakref.WeakKeyDictionary()
        if builtins:
            _register_builtins(self)

    def __repr__(self) -> str:
        return f"Actions({sorted(self.registry)!r})"

    # -- registering ----------------------------------------------------------------------------

    def register(
        self,
        name: str,
        fn: ActionFunction,
        *,
        provider: str | None = None,
        compensate: ActionFunction | None = None,
        retry: Retry | None = None,
        replace: bool = False,
        flag: str | None = None,
        feature: str | None = None,
        job: str | None = None,
        applies: Applies | None = None,
        on_unknown: OnUnknown = "review",
    ) -> RegisteredAction:
        """Register *fn* as the action *name* (``replace=True`` to override one); the other
        options are :class:`RegisteredAction`'s."""
        if not name or not isinstance(name, str):
            raise ConfigurationError("an action needs a non-empty name")
        if name in self.registry and not replace:
            raise ConfigurationError(
                f"an action named {name!r} is already registered (replace=True overrides it)"
            )
        if retry is not None and not isinstance(retry, Retry):
            raise ConfigurationError(f"action {name!r}: retry must be a Retry")
        if on_unknown not in ON_UNKNOWN:
            raise ConfigurationError(
                f"action {name!r}: on_unknown is one of {', '.join(ON_UNKNOWN)}, not {on_unknown!r}"
            )
        if feature is not None:
            check_flag_name(feature)
        if flag is not None and (not flag.endswith("_status") or flag == "progress_status"):
            raise ConfigurationError(
                f"action {name!r}: a status flag field ends in '_status' (got {flag!r})"
            )
        action = RegisteredAction(
            name,
            fn,
            provider,
            compensate,
            retry,
            flag=flag,
            feature=feature,
            job=job,
            applies=applies,
            on_unknown=on_unknown,
        )
        self.registry[name] = action
        return action

    def action(
        self,
        name: str,
        *,
        provider: str | None = None,
        compensate: ActionFunction | None = None,
        retry: Retry | None = None,
        replace: bool = False,
        flag: str | None = None,
        feature: str | None = None,
        job: str | None = None,
        applies: Applies | None = None,
        on_unknown: OnUnknown = "review",
    ) -> Callable[[A], A]:
        """Decorator: ``@actions.action("create_lead", provider="hubspot", compensate=undo)``
        on an ``async def action(ctx: ActionContext)``; the function is returned unchanged."""

        def decorate(fn: A) -> A:
            self.register(
                name,
                fn,
                provider=provider,
                compensate=compensate,
                retry=retry,
                replace=replace,
                flag=flag,
                feature=feature,
                job=job,
                applies=applies,
                on_unknown=on_unknown,
            )
            return fn

        return decorate

    # -- sagas ----------------------------------------------------------------------------------

    @staticmethod
    def saga_name(handler: RegisteredHandler) -> str:
        return f"actions.{handler.name}"

    def saga_for(self, jobs: Jobs, handler: RegisteredHandler) -> Saga:
        """The saga of *handler*'s actions on *jobs* (declared on first use, then cached)."""
        declared = self._declared.setdefault(jobs, _Declared())
        name = self.saga_name(handler)
        saga = declared.sagas.get(name)
        if saga is not None:
            return saga
        if not handler.actions:
            raise ConfigurationError(f"handler {handler.name!r} has no actions: no saga to run")
        missing = [a for a in handler.actions if a not in self.registry]
        if missing:
            raise ConfigurationError(
                f"handler {handler.name!r} names unknown action(s) {', '.join(missing)}; "
                f"registered: {', '.join(sorted(self.registry))}"
            )
        if name in jobs.registry:
            raise ConfigurationError(
                f"a job named {name!r} is already declared on these jobs by something else "
                "(one Actions per Jobs declares the action sagas)"
            )
        steps = [self._step(self.registry[a]) for a in handler.actions]
        saga = jobs.saga(name, steps=steps, queue=self.queue, step_retry=self.step_retry)
        declared.sagas[name] = saga
        return saga

    def declare(self, jobs: Jobs, handlers: Handlers | Iterable[RegisteredHandler]) -> list[Saga]:
        """Declare the sagas of every handler that has actions (a worker process must, before
        it runs them)."""
        listed = handlers.all() if isinstance(handlers, Handlers) else list(handlers)
        return [self.saga_for(jobs, h) for h in listed if h.actions]

    @staticmethod
    def saga_data(
        *,
        inbox_id: str,
        tenant_id: str,
        classification: Classification,
        handler: str = "",
        data: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The data of an action saga (no personal data; see the module docs)."""
        return {
            "inbox_id": inbox_id,
            "tenant_id": tenant_id,
            "handler": handler,
            "classification": public_classification(classification),
            "data": dict(data or {}),
        }

    async def start(
        self,
        jobs: Jobs,
        handler: RegisteredHandler,
        *,
        inbox_id: str,
        tenant_id: str,
        classification: Classification,
        data: Mapping[str, Any] | None = None,
        connection: Any = None,
    ) -> Enqueued | None:
        """Enqueue the saga of *handler*'s actions for the message *inbox_id* (once per
        message: key ``actions:<inbox id>``); ``None`` when the handler has no actions."""
        if not handler.actions:
            return None
        saga = self.saga_for(jobs, handler)
        payload = self.saga_data(
            inbox_id=inbox_id,
            tenant_id=tenant_id,
            classification=classification,
            handler=handler.name,
            data=data,
        )
        return await saga.start(
            payload, idempotency_key=f"actions:{inbox_id}", connection=connection
        )

    # -- running a step -------------------------------------------------------------------------

    def _step(self, action: RegisteredAction) -> Step:
        async def run(ctx: StepContext, data: Any) -> Any:
            if (
                action.provider is not None
                and self.skip_unconfigured
                and not self.connectors.configured(action.provider)
            ):
                return {"skipped": f"{action.provider} is not configured"}
            return await _call(action.fn, await self._context(ctx, data))

        run.__name__ = action.name
        undo: Callable[[StepContext, Any], Awaitable[Any]] | None = None
        compensate = action.compensate
        if compensate is not None:

            async def undo_step(ctx: StepContext, data: Any) -> Any:
                result = ctx.results.get(ctx.step_name)
                if isinstance(result, Mapping) and "skipped" in result:
                    return {"skipped": "the action was skipped"}
                return await _call(compensate, await self._context(ctx, data))

            undo_step.__name__ = f"undo_{action.name}"
            undo = undo_step
        return Step(run, compensate=undo, name=action.name, retry=action.retry)

    async def _context(self, ctx: StepContext, data: Any) -> ActionContext:
        if not isinstance(data, Mapping) or not isinstance(data.get("inbox_id"), str):
            raise ConfigurationError("an action saga's data must name its inbox_id")
        inbox_id = data["inbox_id"]
        entry = await ctx.jobs.queue.get_inbound(inbox_id)
        if entry is None:
            raise InboxEntryMissingError(f"inbox entry {inbox_id} is gone (purged?)")
        event = InboundEvent.from_json(entry.payload)
        tenant_id = str(data.get("tenant_id") or "")
        tenant = self.tenants.get(tenant_id) or Tenant(id=tenant_id)
        raw = data.get("classification")
        classification = (
            Classification.from_json(raw)
            if isinstance(raw, Mapping)
            else Classification("UNKNOWN", 0.0)
        )
        return ActionContext(
            step=ctx,
            event=event,
            tenant=tenant,
            classification=classification,
            inbox_id=inbox_id,
            data=dict(data.get("data") or {}),
            connectors=self.connectors,
            tasks=self.tasks if self.tasks is not None else Tasks(ctx.jobs, clock=ctx.clock),
            booking=self.booking,
            email_sender=self.email_sender,
            handler=str(data.get("handler") or ""),
            echoes=self.echoes,
            replies=self.replies,
        )

    def get(self, name: str) -> RegisteredAction:
        """The action *name* (ConfigurationError naming the registered ones when unknown)."""
        action = self.registry.get(name)
        if action is None:
            raise ConfigurationError(
                f"unknown action {name!r}; registered: {', '.join(sorted(self.registry))}"
            )
        return action

    async def run_for_session(
        self,
        ctx: JobContext,
        name: str,
        *,
        session: SessionRecord,
        tenant: Tenant,
        flow: Flow | None,
        templates: EmailTemplates | None = None,
        email_sender: str | None = None,
        remember: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> Any:
        """Run the action *name* for a completed *session*, as the body of its own job
        (*ctx*): the job's idempotency key is the action's."""
        action = self.get(name)
        step = StepContext(
            job=ctx.job,
            jobs=ctx.jobs,
            clock=ctx.clock,
            worker=ctx.worker,
            logger=ctx.logger,
            state_data=ctx.state_data,
            step=1,
            step_name=name,
            step_key=ctx.idempotency_key,
            step_attempt=ctx.attempt,
            checkpoint=ctx.save_progress,
        )
        recent = session.recent[-1].event_id if session.recent else session.key
        channel = Channel(session.channel) if session.channel in _CHANNELS else Channel.API
        event = InboundEvent(
            channel, recent, EventKind.MESSAGE, session.tenant_id, sender=session.phone
        )
        action_ctx = ActionContext(
            step=step,
            event=event,
            tenant=tenant,
            classification=Classification("FLOW_COMPLETED", 1.0, source="flow"),
            inbox_id="",
            data={},
            connectors=self.connectors,
            tasks=self.tasks if self.tasks is not None else Tasks(ctx.jobs, clock=ctx.clock),
            booking=self.booking,
            email_sender=email_sender or self.email_sender,
            session=session,
            flow=flow,
            templates=templates,
            remember_fields=remember,
            echoes=self.echoes,
            replies=self.replies,
        )
        return await _call(action.fn, action_ctx)


_CHANNELS = frozenset(c.value for c in Channel)


async def _call(fn: ActionFunction, ctx: ActionContext) -> Any:
    """Run an action; its error leaves with the personal data of its context masked (the
    saga or the job keeps errors in its history and the dead-letter queue)."""
    try:
        return await fn(ctx)
    except Exception as exc:
        scrub(exc, ctx.personal_data())
        raise


# -- the built-in actions -----------------------------------------------------------------------


def _describe(ctx: ActionContext) -> str:
    entities = ctx.classification.entities
    parts: list[str] = []
    if entities.get("quantity"):
        parts.append(f"{entities['quantity']} {entities.get('unit', '')}".strip())
    if entities.get("amount") is not None:
        parts.append(f"{entities['amount']} {entities.get('currency', '')}".strip())
    when = " ".join(str(entities[k]) for k in ("date", "time") if entities.get(k))
    if when:
        parts.append(when)
    return ", ".join(parts)


def _masked(event: InboundEvent) -> str:
    return mask_phone(event.sender) or "unknown"


def _profile_name(event: InboundEvent) -> str | None:
    for key in ("profile_name", "name", "ProfileName"):
        value = event.data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


#: key prefix of the mark a Slack post writes before its call (see :func:`_begin_post`)
SENDING_PREFIX = "sending:"
#: how long a post's mark is kept (seconds)
SENDING_RETENTION = 7 * 24 * 3600.0


def _post_kv(ctx: ActionContext) -> KeyValueStore | None:
    kv = getattr(getattr(ctx.step.jobs.queue, "store", None), "kv", None)
    return kv if isinstance(kv, KeyValueStore) else None


async def _begin_post(ctx: ActionContext) -> float | None:
    """Mark the action's post as in flight (``sending:<its key>``); the time an earlier run
    marked it -- that run stopped in the middle of the call, so the post may exist -- else
    ``None``. Slack's incoming webhooks take no key and offer no lookup: the mark is how a run
    killed mid-call is known at all."""
    kv = _post_kv(ctx)
    if kv is None:
        return None
    now = ctx.clock.time()
    key = SENDING_PREFIX + ctx.idempotency_key
    found = await kv.get(key, now=now)
    value = found.value if found is not None and isinstance(found.value, dict) else {}
    earlier = value.get("since")
    await kv.set(key, {"since": now}, now=now, ttl=SENDING_RETENTION)
    return float(earlier) if isinstance(earlier, int | float) else None


async def _end_post(ctx: ActionContext) -> None:
    """The post's outcome is known (or handed to a person): its mark goes."""
    kv = _post_kv(ctx)
    if kv is not None:
        await kv.delete(SENDING_PREFIX + ctx.idempotency_key, now=ctx.clock.time())


async def notify_sales(ctx: ActionContext) -> dict[str, Any]:
    c = ctx.classification
    results = []
    for name, result in ctx.results.items():
        if isinstance(result, Mapping):
            shown = {k: v for k, v in result.items() if k in _SHOWN_RESULTS and v is not None}
            if shown:
                results.append((name, ", ".join(f"{k}={v}" for k, v in shown.items())))
    text = SALES_SLACK.render(
        {
            "intent": c.intent,
            "confidence": f"{c.confidence:.0%}",
            "phone": _masked(ctx.event),
            "channel": ctx.event.channel.value,
            "business": ctx.tenant.name or ctx.tenant.id,
            "details": _describe(ctx),
            "excerpt": _scrub_text(ctx.event.text),
            "results": results,
            "inbox_id": ctx.inbox_id,
        }
    )
    try:
        if await _begin_post(ctx) is not None:
            # an earlier run stopped in the middle of the call: the post may exist
            raise OutcomeUnknownError(
                "an earlier run stopped while posting to Slack", provider="slack"
            )
        reference = await ctx.connectors.slack.post_message(text, reference=ctx.idempotency_key)
        await _end_post(ctx)
    except OutcomeUnknownError:
        # it may be in the channel: posting again could show it twice; a person decides
        task = await ctx.tasks.create(
            type="reconcile",
            title=f"Check Slack for the {c.intent} notification of inbox {ctx.inbox_id}",
            source=ctx.source,
            key=f"{ctx.idempotency_key}:unknown",
        )
        await _end_post(ctx)
        return {"posted": "unknown", "task_id": task["id"]}
    return {"posted": True, "reference": reference}


_SHOWN_RESULTS = frozenset({"draft_order_id", "name", "task_id", "booking_uid", "link", "start"})


async def create_order(ctx: ActionContext) -> dict[str, Any]:
    entities = ctx.classification.entities
    quantity = entities.get("quantity")
    unit = entities.get("unit")
    items = entities.get("items") or (
        [{"quantity": quantity, "unit": unit}] if isinstance(quantity, int) else []
    )
    lines = [
        {
            "title": f"Requested: {item.get('unit') or 'item'}",
            "price": "0.00",
            "quantity": int(item.get("quantity") or 1),
        }
        for item in items
        if isinstance(item, Mapping)
    ] or [{"title": "Requested by message", "price": "0.00", "quantity": 1}]
    try:
        draft = await ctx.connectors.shopify.create_draft_order(
            lines,
            note=f"Requested via {ctx.event.channel.value}; inbox {ctx.inbox_id}",
            reconcile_key=ctx.idempotency_key,
        )
    except OutcomeUnknownError:
        task = await ctx.tasks.create(
            type="reconcile",
            title=(
                f"Check whether a draft order with note attribute antifragile-key = "
                f"{ctx.idempotency_key} exists (inbox {ctx.inbox_id})"
            ),
            priority="high",
            source=ctx.source,
            key=f"{ctx.idempotency_key}:unknown",
        )
        return {"outcome": "unknown", "task_id": task["id"]}
    # REST's ``id`` is the number; the GraphQL Admin API's is a global id, its number
    # ``legacyResourceId``
    number = draft.get("legacyResourceId", draft.get("id"))
    draft_id = int(number) if isinstance(number, int | str) and str(number).isdigit() else None
    return {"draft_order_id": draft_id, "name": draft.get("name")}


async def undo_create_order(ctx: ActionContext) -> dict[str, Any]:
    result = ctx.result if isinstance(ctx.result, Mapping) else {}
    draft_id = result.get("draft_order_id")
    if isinstance(draft_id, int):
        deleted = await ctx.connectors.shopify.delete_draft_order(draft_id)
        return {"deleted": deleted, "draft_order_id": draft_id}
    # the outcome was unknown: whoever reconciles it must cancel rather than keep it
    task = await ctx.tasks.create(
        type="cancel_draft_order",
        title=f"Cancel the draft order of inbox {ctx.inbox_id} if it exists",
        priority="high",
        source=ctx.source,
        key=ctx.idempotency_key,
    )
    return {"task_id": task["id"]}


async def create_support_ticket(ctx: ActionContext) -> dict[str, Any]:
    task = await ctx.tasks.create(
        type="support_ticket",
        title=(
            f"Complaint via {ctx.event.channel.value} from {_masked(ctx.event)} "
            f"(inbox {ctx.inbox_id})"
        ),
        priority="high",
        source=ctx.source,
        key=ctx.idempotency_key,
    )
    return {"task_id": task["id"]}


async def flag_for_review(ctx: ActionContext) -> dict[str, Any]:
    c = ctx.classification
    task = await ctx.tasks.create(
        type="review",
        title=(
            f"Review a {c.intent} message ({c.confidence:.0%}) via {ctx.event.channel.value} "
            f"from {_masked(ctx.event)} (inbox {ctx.inbox_id})"
        ),
        source=ctx.source,
        key=ctx.idempotency_key,
    )
    return {"task_id": task["id"]}


async def undo_flag_for_review(ctx: ActionContext) -> dict[str, Any]:
    result = ctx.result if isinstance(ctx.result, Mapping) else {}
    task_id = result.get("task_id")
    if isinstance(task_id, str) and await ctx.tasks.get(task_id) is not None:
        await ctx.tasks.update(task_id, status="cancelled")
    return {"cancelled": task_id}


#: the provider of the email actions: the email chain (``ANTIFRAGILE_EMAIL_CHAIN``), whose own
#: providers' breakers it reads -- so a worker never holds an email back for the primary's breaker
EMAIL = "email"


def _email_chain(ctx: ActionContext) -> EmailChain:
    """The tenant's email chain (``Tenant.email_chain``), else the connectors' one
    (``ANTIFRAGILE_EMAIL_CHAIN``); Resend alone, its unknown sends kept in the jobs' store, for
    connectors without one. With *echoes*, a send left unknown is settled by its provider's
    status webhooks."""
    own = ctx.tenant.email_chain
    build = getattr(ctx.connectors, "email_chain", None)
    if callable(build):
        chain = cast(EmailChain, build(chain_from(own)) if own else build())
    else:
        chain = EmailChain({"resend": ctx.connectors.resend}, kv=_post_kv(ctx), clock=ctx.clock)
    if chain.reconcile is None and ctx.echoes is not None:
        chain.reconcile = _echo_reconcile(ctx.echoes)
    return chain


def _echo_reconcile(echoes: Echoes) -> Callable[[str, str], Awaitable[bool | None]]:
    """A chain's *reconcile* from the providers' status webhooks: a send whose correlation
    (``send-email/<key>``'s) came back ``sent``, ``delivered``, ``read`` -- or ``bounced``: it
    went out -- is settled as sent; no echo yet is no answer."""

    async def reconcile(provider: str, key: str) -> bool | None:
        echo = await echoes.check(idempotency_key_for("send-email", key), provider)
        return True if echo.state in ("confirmed", "failed") else None

    return reconcile


#: the longest an email job waits before it asks again whether an unknown send is settled
UNSETTLED_RECHECK = 30.0


async def _send_through_chain(ctx: ActionContext, **email: Any) -> ChainSent:
    """Send *email* through the chain under the action's key; while an earlier send's outcome
    is unknown the job is deferred (no attempt counted) and asks again."""
    try:
        return await _email_chain(ctx).send_email(**email, idempotency_key=ctx.idempotency_key)
    except EmailUnsettledError as exc:
        wait = min(exc.retry_after or UNSETTLED_RECHECK, UNSETTLED_RECHECK)
        raise JobDeferred(str(exc), delay=wait) from exc


async def send_email(ctx: ActionContext) -> dict[str, Any]:
    owner = ctx.tenant.owner_email
    if not owner:
        return {"skipped": "the tenant has no owner email"}
    c = ctx.classification
    sender = f"+{ctx.event.sender}" if ctx.event.sender else "unknown"
    body = "\n".join(
        [
            f"A {c.intent} message ({c.confidence:.0%}) arrived via {ctx.event.channel.value}.",
            f"From: {sender}"
            + (f" ({_profile_name(ctx.event)})" if _profile_name(ctx.event) else ""),
            f"Details: {_describe(ctx) or '-'}",
            "",
            ctx.event.text or "(no text)",
            "",
            f"Inbox: {ctx.inbox_id}",
        ]
    )
    sent = await _send_through_chain(
        ctx,
        sender=ctx.sender,
        to=owner,
        subject=f"[{ctx.tenant.name or ctx.tenant.id}] New {c.intent} message",
        text=body,
    )
    return {"email_id": sent.id, "provider": sent.provider}


async def create_shopify_customer(ctx: ActionContext) -> dict[str, Any]:
    contact = ctx.contact
    if not contact.email:
        return {"skipped": "no email collected" if ctx.session else "no email in the message"}
    tag = ctx.session.flow if ctx.session is not None else contact.channel
    customer = await ctx.connectors.shopify.create_customer(
        email=contact.email,
        first_name=contact.first_name or None,
        last_name=contact.last_name or None,
        phone=contact.e164 or None,
        tags=["antifragile", tag or "intake"],
    )
    await ctx.remember(shopify_customer_id=customer.id)
    return {"customer_id": customer.id, "found_existing": customer.found_existing}


async def create_hubspot_contact(ctx: ActionContext) -> dict[str, Any]:
    contact = ctx.contact
    if not contact.email:
        return {"skipped": "no email collected" if ctx.session else "no email in the message"}
    properties = {
        "firstname": contact.first_name,
        "lastname": contact.last_name,
        "phone": contact.e164,
    }
    # contacts due at once (a backlog after an outage) share one batch upsert by email
    created = await upsert_contact(
        ctx.connectors.hubspot, contact.email, {k: v for k, v in properties.items() if v}
    )
    await ctx.remember(hubspot_contact_id=created.id)
    return {"contact_id": created.id, "created": created.created}


async def send_summary_email(ctx: ActionContext) -> dict[str, Any]:
    """The owner's summary (template ``session_summary``): a completed session's answers in
    the flow's order, or a message's text."""
    owner = ctx.tenant.owner_email
    if not owner:
        return {"skipped": "no owner email"}
    contact = ctx.contact
    record = ctx.session
    if record is not None:
        order = [s.field for s in ctx.flow.steps] if ctx.flow is not None else []
        order += [f for f in record.fields if f not in order]
        answers = [(_label(f), record.fields[f]) for f in order if f in record.fields]
        flow = record.flow or "conversation"
        completed = record.completed_at
    else:
        answers = [("Message", ctx.event.text or "")]
        flow = ctx.classification.intent
        completed = ctx.clock.time()
    variables = {
        "business": ctx.tenant.name or ctx.tenant.id,
        "flow": flow,
        "name": contact.name or "a new contact",
        "answers": answers,
        "phone": contact.e164,
        "channel": contact.channel,
        "completed_at": _iso(completed),
        "fields": dict(record.fields) if record is not None else {},
    }
    templates = ctx.templates or EmailTemplates(
        None, defaults={**DEFAULT_TEMPLATES, SUMMARY_TEMPLATE.name: SUMMARY_TEMPLATE}
    )
    email = await templates.render(SUMMARY_TEMPLATE.name, variables)
    sent = await _send_through_chain(
        ctx,
        sender=ctx.sender,
        to=owner,
        subject=email.subject,
        text=email.text,
        html=email.html,
    )
    await ctx.remember(
        summary_email_sent=True, summary_email_id=sent.id, summary_email_provider=sent.provider
    )
    return {"email_id": sent.id, "provider": sent.provider}


async def notify_slack(ctx: ActionContext) -> dict[str, Any]:
    """A short Slack message: what happened, the first name and the masked phone, nothing
    more."""
    contact = ctx.contact
    what = (
        f"{ctx.session.flow or 'conversation'} completed"
        if ctx.session is not None
        else f"{ctx.classification.intent} message"
    )
    text = CONTACT_SLACK.render(
        {
            "what": what,
            "business": ctx.tenant.name or ctx.tenant.id,
            "first_name": contact.first_name or "a contact",
            "phone": mask_phone(contact.phone),
            "channel": contact.channel,
        }
    )
    earlier = await _begin_post(ctx)
    if earlier is not None:
        # on_unknown=resend: an internal ping is posted again, and says it may be a repeat
        _logger.warning(
            "notify_slack %s: an earlier run stopped mid-post (at %.3f); posting again",
            ctx.idempotency_key,
            earlier,
        )
    try:
        reference = await ctx.connectors.slack.post_message(text, reference=ctx.idempotency_key)
    except OutcomeUnknownError as exc:
        # the mark stays: the next run posts again and says so
        raise TransientError(
            "Slack may or may not have posted (the answer was lost); posted again on the next "
            "run (on_unknown=resend)",
            provider="slack",
            operation="post_message",
        ) from exc
    await _end_post(ctx)
    if earlier is not None:
        return {"reference": reference, "repeat_of_unknown": earlier}
    return {"reference": reference}


async def add_to_audience(ctx: ActionContext) -> dict[str, Any]:
    """The contact added to (or updated in) the tenant's Mailchimp audience: the email and the
    first and last names, nothing more; new members get the connector's ``status_if_new``."""
    contact = ctx.contact
    if not contact.email:
        return {"skipped": "no email collected" if ctx.session else "no email in the message"}
    mailchimp = ctx.connectors.mailchimp
    audience = ctx.tenant.mailchimp_list_id or mailchimp.list_id
    if not audience:
        return {"skipped": "no Mailchimp audience (list id) for this tenant"}
    names = {"FNAME": contact.first_name, "LNAME": contact.last_name}
    member = await mailchimp.upsert_member(
        contact.email, list_id=audience, merge_fields={k: v for k, v in names.items() if v}
    )
    await ctx.remember(mailchimp_member_id=member.id)
    return {"member_id": member.id, "list_id": member.list_id, "status": member.status}


def _has_owner_email(tenant: Tenant, contact: Contact) -> bool:
    return bool(tenant.owner_email)


def _has_email(tenant: Tenant, contact: Contact) -> bool:
    return bool(contact.email)


def _label(field: str) -> str:
    return field.replace("_", " ").strip().capitalize()


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _email_of(fields: Mapping[str, str], flow: Flow | None) -> str | None:
    name = flow.field_of("email") if flow is not None else None
    value = fields.get(name or "email") or fields.get("email")
    return str(value) if value else None


def _name_of(fields: Mapping[str, str]) -> str:
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


def _start_utc(day: str, time: str, zone: str) -> str | None:
    try:
        local = datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=ZoneInfo(zone))
    except (ValueError, ZoneInfoNotFoundError):
        return None
    return local.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduling_provider(ctx: ActionContext) -> str | None:
    """The scheduling provider ``book_call`` uses for *ctx*: the tenant's ``booking_provider``,
    else the service's (``ANTIFRAGILE_BOOKING_PROVIDER``), else the first of Cal.com, Calendly
    and Acuity that is configured; ``None`` when the one named (or every one) is not."""
    named = ctx.tenant.booking_provider or ctx.booking.provider
    if named:
        if named not in SCHEDULING_PROVIDERS:
            raise ConfigurationError(
                f"booking provider {named!r} is not one of {', '.join(SCHEDULING_PROVIDERS)}"
            )
        return named if named == "calcom" or ctx.connectors.configured(named) else None
    for provider in ("calendly", "acuity"):
        if ctx.connectors.configured(provider) and not ctx.connectors.configured("calcom"):
            return provider
    return "calcom"


def _requested_slot(ctx: ActionContext) -> tuple[str | None, str | None]:
    """The day and time the contact asked for: the message's entities, or a completed
    session's ``date`` and ``time`` answers."""
    if ctx.session is not None:
        fields = ctx.session.fields
        return fields.get("date") or None, fields.get("time") or None
    entities = ctx.classification.entities
    day, time = entities.get("date"), entities.get("time")
    return (day if isinstance(day, str) else None, time if isinstance(time, str) else None)


def _session_key(ctx: ActionContext) -> str | None:
    """The key of the contact's session with the tenant (whether or not one exists)."""
    if ctx.session is not None:
        return ctx.session.key
    phone = ctx.contact.phone
    if not phone:
        return None
    from antifragile.inbound._sessions import Sessions  # _sessions imports this module

    return Sessions.key_for(ctx.tenant.id, phone)


async def _note_booking(
    ctx: ActionContext,
    provider: str,
    status: str,
    *,
    correlation: str | None = None,
    provider_id: str | None = None,
) -> None:
    """Index the booking to the contact's session and move its ``booking_status``."""
    kv = _post_kv(ctx)
    key = _session_key(ctx)
    if kv is None or key is None:
        return
    now = ctx.clock.time()
    await remember_booking(
        kv, key, provider, now=now, correlation=correlation, provider_id=provider_id
    )
    await settle_booking(kv, key, status, now=now)


async def _tell(ctx: ActionContext, text: str, suffix: str) -> str | None:
    """Send *text* to the contact on their channel (once per action run and *suffix*); the
    message id, or ``None`` when there is no way to reach them here."""
    contact = ctx.contact
    if ctx.replies is None or not contact.phone:
        return None
    if contact.channel not in (Channel.WHATSAPP.value, Channel.TWILIO.value):
        return None
    try:
        return await ctx.replies.send(
            tenant=ctx.tenant,
            channel=Channel(contact.channel),
            to=contact.phone,
            text=text,
            key=f"{ctx.idempotency_key}:{suffix}",
        )
    except ConfigurationError as exc:  # the tenant cannot send on that channel
        _logger.warning("book_call could not message the contact: %s", exc.message)
        return None


async def book_call(ctx: ActionContext) -> dict[str, Any]:
    """Arrange a call through the tenant's scheduling provider (:func:`scheduling_provider`):
    a Calendly single-use link sent to the contact, an Acuity appointment booked (or free
    times offered), a Cal.com booking (or its booking link)."""
    provider = scheduling_provider(ctx)
    if provider == "calendly":
        return await _book_calendly(ctx)
    if provider == "acuity":
        return await _book_acuity(ctx)
    if provider is None:
        return {"skipped": "no scheduling provider is configured"}
    return await _book_calcom(ctx)


async def _book_calendly(ctx: ActionContext) -> dict[str, Any]:
    calendly = ctx.connectors.calendly
    event_type = ctx.booking.calendly_event_type
    if not event_type:
        active = [t for t in await calendly.event_types() if t.active]
        if not active:
            raise ConfigurationError("the Calendly user has no active event type")
        event_type = active[0].uri
    contact = ctx.contact
    # safe to repeat: an unsent single-use link books nothing (see the connector)
    link = await calendly.create_scheduling_link(
        event_type=event_type,
        idempotency_key=ctx.idempotency_key,
        name=contact.name or None,
        email=contact.email,
    )
    await _note_booking(ctx, "calendly", "link_sent", correlation=link.correlation)
    sent = await _tell(
        ctx, f"Here is your link to pick a time for our call: {link.booking_url}", "link"
    )
    # the result is kept with the job: the link without the prefill (no name, no email)
    return {
        "provider": "calendly",
        "link": link.raw_url,
        "correlation": link.correlation,
        "link_message": sent,
    }


async def _book_acuity(ctx: ActionContext) -> dict[str, Any]:
    acuity = ctx.connectors.acuity
    type_id = ctx.booking.acuity_appointment_type_id
    if type_id is None:
        raise ConfigurationError(
            "book_call with Acuity needs ANTIFRAGILE_ACUITY_APPOINTMENT_TYPE_ID"
        )
    contact = ctx.contact
    day, time = _requested_slot(ctx)
    zone = ctx.booking.time_zone
    start = _start_local(day, time, zone) if day and time else None
    if start is None or not contact.email:
        # nothing to book yet: offer the next free times
        today = datetime.fromtimestamp(ctx.clock.time(), ZoneInfo(zone)).date()
        options: list[str] = []
        for month in (today.strftime("%Y-%m"), _next_month(today)):
            for free_day in await acuity.available_dates(
                appointment_type_id=type_id, month=month, timezone=zone
            ):
                if free_day < today.isoformat():
                    continue
                times = await acuity.available_times(
                    appointment_type_id=type_id, date=free_day, timezone=zone
                )
                options += [t.time for t in times[: 3 - len(options)]]
                if len(options) >= 3:
                    break
            if len(options) >= 3:
                break
        if options:
            await _tell(
                ctx,
                "Happy to set up a call! Free times: "
                + ", ".join(_shown(t) for t in options)
                + ". Reply with the day and time that suits you.",
                "options",
            )
        return {"provider": "acuity", "booked": False, "options": options}
    first, last = _split_name(contact.name or "Customer")
    try:
        appointment = await acuity.create_appointment(
            datetime=start,
            appointment_type_id=type_id,
            first_name=first or "Customer",
            last_name=last or "-",
            email=contact.email,
            idempotency_key=ctx.idempotency_key,
            timezone=zone,
        )
    except InvalidRequestError as exc:  # the time is not free (or not valid)
        return {"provider": "acuity", "booked": False, "reason": exc.message[:200]}
    except OutcomeUnknownError as exc:
        task = await ctx.tasks.create(
            type="reconcile",
            title=(
                f"Check Acuity for an appointment at {start} ({exc.reconcile_key}, {ctx.source})"
            ),
            priority="high",
            source=ctx.source,
            key=f"{ctx.idempotency_key}:unknown",
        )
        return {"provider": "acuity", "outcome": "unknown", "task_id": task["id"]}
    await _note_booking(ctx, "acuity", "booked", provider_id=str(appointment.id))
    await _tell(ctx, f"Your call is booked for {_shown(appointment.datetime)}.", "booked")
    return {
        "provider": "acuity",
        "appointment_id": appointment.id,
        "start": appointment.datetime,
        "reconciled": appointment.reconciled,
    }


def _start_local(day: str, time: str, zone: str) -> str | None:
    """*day* and *time* in *zone* as ISO 8601 with its offset (Acuity's form)."""
    try:
        local = datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=ZoneInfo(zone))
    except (ValueError, ZoneInfoNotFoundError):
        return None
    return local.isoformat()


def _next_month(day: date) -> str:
    return (day.replace(day=28) + timedelta(days=4)).strftime("%Y-%m")


def _shown(stamp: str) -> str:
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    return moment.strftime("%a %d %b %H:%M")


async def _book_calcom(ctx: ActionContext) -> dict[str, Any]:
    link = ctx.booking.link()
    emails = find_emails(ctx.event.text) if ctx.session is None else []
    if ctx.session is not None and ctx.contact.email:
        emails = [ctx.contact.email]
    day, time = _requested_slot(ctx)
    settings = ctx.booking
    can_book = settings.event_type_id is not None or settings.username is not None
    if not (can_book and emails and isinstance(day, str) and isinstance(time, str)):
        return {"link": link}
    if not ctx.connectors.configured("calcom"):
        return {"link": link}
    start = _start_utc(day, time, settings.time_zone)
    if start is None:
        return {"link": link}

    async def create() -> Booking:
        return await ctx.connectors.calcom.create_booking(
            start=start,
            attendee_name=ctx.contact.name or "Customer",
            attendee_email=emails[0],
            attendee_time_zone=settings.time_zone,
            idempotency_key=ctx.idempotency_key,
            event_type_id=settings.event_type_id,
            event_type_slug=None
            if settings.event_type_id is not None
            else settings.event_type_slug,
            username=None if settings.event_type_id is not None else settings.username,
        )

    reference = f"create-booking/{ctx.idempotency_key}"
    try:
        if ctx.echoes is not None:
            # a lost answer waits (deferred) for Cal.com's BOOKING_CREATED carrying its key
            outcome = await ctx.echoes.send_once(
                ctx.idempotency_key, "calcom", create, reference=reference
            )
            if isinstance(outcome, Echo):
                await _note_booking(ctx, "calcom", "booked", correlation=correlation_for(reference))
                return {
                    "link": link,
                    "booking_uid": outcome.provider_message_id,
                    "outcome": "confirmed by Cal.com",
                }
            booking = outcome
        else:
            booking = await create()
    except ConflictError:  # the slot is taken: the customer picks another with the link
        return {"link": link, "booked": False, "reason": "slot taken"}
    except OutcomeUnknownError as exc:
        task = await ctx.tasks.create(
            type="reconcile",
            title=(
                f"Check Cal.com for a booking with metadata {exc.reconcile_key} "
                f"(inbox {ctx.inbox_id})"
            ),
            priority="high",
            source=ctx.source,
            key=f"{ctx.idempotency_key}:unknown",
        )
        return {"link": link, "outcome": "unknown", "task_id": task["id"]}
    await _note_booking(ctx, "calcom", "booked", correlation=correlation_for(reference))
    return {"link": link, "booking_uid": booking.uid, "start": booking.start}


def _register_builtins(actions: Actions) -> None:
    actions.register("notify_sales", notify_sales, provider="slack")
    actions.register(
        "create_order",
        create_order,
        provider="shopify",
        compensate=undo_create_order,
        on_unknown="reconcile",
    )
    actions.register("create_support_ticket", create_support_ticket)
    actions.register("flag_for_review", flag_for_review, compensate=undo_flag_for_review)
    actions.register("send_email", send_email, provider=EMAIL, on_unknown="resend")
    actions.register(
        "create_shopify_customer",
        create_shopify_customer,
        provider="shopify",
        flag="shopify_status",
        feature="shopify_sync",
        job="sessions.shopify_customer",
        applies=_has_email,
        on_unknown="reconcile",
    )
    actions.register(
        "create_hubspot_contact",
        create_hubspot_contact,
        provider="hubspot",
        flag="hubspot_status",
        feature="hubspot_sync",
        job="sessions.hubspot_contact",
        applies=_has_email,
        on_unknown="reconcile",
    )
    actions.register("book_call", book_call, on_unknown="reconcile")
    actions.register(
        "send_summary_email",
        send_summary_email,
        provider=EMAIL,
        flag="email_status",
        feature="summary_email",
        job="sessions.summary_email",
        applies=_has_owner_email,
        on_unknown="resend",
    )
    actions.register(
        "add_to_audience",
        add_to_audience,
        provider="mailchimp",
        flag="mailchimp_status",
        feature="mailchimp_sync",
        job="sessions.mailchimp_member",
        applies=_has_email,
        on_unknown="resend",  # a PUT by the subscriber hash: sending it again is harmless
    )
    actions.register(
        "notify_slack",
        notify_slack,
        provider="slack",
        flag="slack_status",
        feature="slack_notify",
        job="sessions.slack_message",
        on_unknown="resend",
    )
