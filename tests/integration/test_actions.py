"""Each default handler's actions, run as a saga through a real SQLite queue and a Worker
against the provider sandbox over real HTTP.

The message is recorded in the inbox first (the saga's data holds only its id, never the phone
number or the text); the sandbox's effect log is the ground truth for what each provider did,
and the saga's result says which actions ran, failed and were compensated. Time is a FakeClock:
back-offs and rate-limit waits advance it instead of sleeping.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from antifragile import FakeClock, InvalidRequestError
from antifragile.connectors import Connectors, correlation_for
from antifragile.inbound import (
    ActionContext,
    Actions,
    BookingSettings,
    Channel,
    Classification,
    DeliveryStatus,
    DeliveryStatuses,
    Echoes,
    EventKind,
    HandlerResult,
    Handlers,
    InboundEvent,
    KeywordClassifier,
    MessageContext,
    Tasks,
    Tenant,
    find_emails,
)
from antifragile.jobs import FINAL, Job, Jobs, JobState, NewInboxEntry, SagaResult, Worker
from antifragile.sandbox import (
    AcuitySimulator,
    CalComSimulator,
    CalendlySimulator,
    HubSpotSimulator,
    ProviderFault,
    ProviderSandbox,
    ResendSimulator,
    ShopifySimulator,
    SlackSimulator,
)
from antifragile.sandbox._calcom import EventType

SHOPIFY_TOKEN = "shpat_actions_token"
RESEND_KEY = "re_actions_key_123"
HUBSPOT_TOKEN = "pat-actions-token"
CAL_KEY = "cal_test_actionskey1"
HOOK = "T000/B000/XXXX"
GONE_HOOK = "T000/B000/GONE"
PHONE = "447700900123"
EMAIL = "ada@example.com"
GRAPHQL = "POST /admin/api/{version}/graphql.json"
DRAFTS = f"{GRAPHQL} draftOrderCreate"  # faults on one GraphQL operation
LIST_DRAFTS = f"{GRAPHQL} draftOrders"
TENANT = Tenant(
    "shop", name="Corner Shop", whatsapp_phone_number_id="1234", owner_email="owner@shop.example"
)
BOOKING = BookingSettings(username="alice", event_type_slug="intro", event_type_id=7)
CALENDLY_TOKEN = "calendly-actions-token"
ACUITY_KEY = "acuity-actions-key"


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    simulators = [
        ShopifySimulator(access_tokens=[SHOPIFY_TOKEN], bucket_size=100_000),
        SlackSimulator(hooks=[HOOK, GONE_HOOK], gone=[GONE_HOOK], rate=1000.0, burst=1000.0),
        ResendSimulator(api_keys=[RESEND_KEY], rate_limit=1000),
        HubSpotSimulator(tokens=[HUBSPOT_TOKEN]),
        CalComSimulator(api_keys=[CAL_KEY], event_types=[EventType(7, "intro", "alice")]),
        CalendlySimulator(tokens=[CALENDLY_TOKEN]),
        AcuitySimulator(user_id="1", api_key=ACUITY_KEY, timezone="UTC"),
    ]
    with ProviderSandbox(simulators) as running:
        yield running


def connectors_for(
    sandbox: ProviderSandbox, clock: FakeClock, *, hook: str = HOOK, without: str = ""
) -> Connectors:
    base_urls = {
        "shopify": sandbox.base_url("shopify"),
        "slack": f"{sandbox.base_url('slack')}/services/{hook}",
        "resend": sandbox.base_url("resend"),
        "hubspot": sandbox.base_url("hubspot"),
        "calcom": sandbox.base_url("calcom"),
        "calendly": sandbox.base_url("calendly"),
        "acuity": sandbox.base_url("acuity"),
    }
    options: dict[str, dict[str, Any]] = {
        "shopify": {"access_token": SHOPIFY_TOKEN},
        "resend": {"api_key": RESEND_KEY},
        "hubspot": {"access_token": HUBSPOT_TOKEN},
        "calcom": {"api_key": CAL_KEY},
        "calendly": {"token": CALENDLY_TOKEN},
        "acuity": {"user_id": "1", "api_key": ACUITY_KEY},
    }
    base_urls.pop(without, None)
    options.pop(without, None)
    return Connectors(base_urls=base_urls, options=options, clock=clock, timeout=5.0)


@pytest.fixture
async def connectors(
    sandbox: ProviderSandbox, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Connectors]:
    monkeypatch.delenv("ANTIFRAGILE_SLACK_WEBHOOK_URL", raising=False)
    built = connectors_for(sandbox, clock)
    yield built
    await built.aclose()


@pytest.fixture
async def jobs(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Jobs]:
    async with Jobs(database_url=f"sqlite:///{tmp_path / 'actions.db'}", clock=clock) as opened:
        yield opened


@pytest.fixture
def handlers() -> Handlers:
    registry = Handlers()
    registry.register_defaults(booking=BOOKING)
    return registry


@pytest.fixture
def actions(connectors: Connectors) -> Actions:
    return Actions(connectors, tenants={TENANT.id: TENANT}, booking=BOOKING)


class Run:
    """One message through the pieces the pipeline uses: record, classify, handle, start."""

    def __init__(self, jobs: Jobs, handlers: Handlers, actions: Actions, clock: FakeClock):
        self.jobs, self.handlers, self.actions, self.clock = jobs, handlers, actions, clock
        self.classifier = KeywordClassifier(clock=clock)
        self.count = 0

    async def record(self, event: InboundEvent) -> str:
        entry = NewInboxEntry(
            channel=event.channel.value,
            event_id=event.event_id,
            kind=event.kind.value,
            tenant_key=event.tenant_key,
            payload=event.to_json(),
            ttl=7 * 86400.0,
            job=None,
        )
        (recorded,) = await self.jobs.queue.record_inbound([entry], now=self.clock.time())
        return recorded.id

    async def message(
        self, text: str, *, handler: str | None = None, profile: str = "Ada"
    ) -> tuple[SagaResult, Job, HandlerResult, str]:
        job_id, answer, inbox_id = await self.begin(text, handler=handler, profile=profile)
        job = await self.settle(job_id)
        result = SagaResult.from_job(job)
        assert result is not None, job
        return result, job, answer, inbox_id

    async def begin(
        self, text: str, *, handler: str | None = None, profile: str = "Ada"
    ) -> tuple[str, HandlerResult, str]:
        """Record, classify and handle *text*; start its saga: the saga's job id."""
        self.count += 1
        event = InboundEvent(
            Channel.WHATSAPP,
            f"wamid.{self.count}",
            EventKind.MESSAGE,
            "1234",
            sender=PHONE,
            text=text,
            data={"profile_name": profile},
        )
        inbox_id = await self.record(event)
        classification = self.classifier.classify_text(text)
        chosen = self.handlers.get(handler) if handler else self.handlers.choose(classification)
        ctx = MessageContext(
            event=event,
            tenant=TENANT,
            classification=classification,
            inbox_id=inbox_id,
            jobs=self.jobs,
            connectors=self.actions.connectors,
            tasks=Tasks(self.jobs),
        )
        answer = await chosen.run(ctx)
        started = await self.actions.start(
            self.jobs,
            chosen,
            inbox_id=inbox_id,
            tenant_id=TENANT.id,
            classification=classification,
            data=answer.data,
        )
        assert started is not None
        return started.id, answer, inbox_id

    async def settle(self, job_id: str) -> Job:
        worker = Worker(self.jobs)
        for _ in range(30):
            await worker.run_until_idle()
            job = await self.jobs.get(job_id)
            assert job is not None
            if job.state in FINAL:
                return job
            self.clock.advance(600)
        raise AssertionError(f"the saga never finished: {job}")


@pytest.fixture
def run(jobs: Jobs, handlers: Handlers, actions: Actions, clock: FakeClock) -> Run:
    return Run(jobs, handlers, actions, clock)


def slack_texts(sandbox: ProviderSandbox) -> list[str]:
    return [str(e.data["text"]) for e in sandbox.effects("slack")]


def draft_effects(sandbox: ProviderSandbox, *, deleted: bool = False) -> list[Any]:
    """Draft orders created (or *deleted*) through the GraphQL Admin API: its effects hold
    the draft's fields, a delete's only its id."""
    return [
        e
        for e in sandbox.effects("shopify", GRAPHQL)
        if "draft_order" in e.data and ("line_items" not in e.data["draft_order"]) == deleted
    ]


def assert_no_pii(value: Any) -> None:
    dumped = json.dumps(value, default=str)
    assert PHONE not in dumped
    assert EMAIL not in dumped


async def test_order_request_notifies_sales_and_drafts_an_order(
    run: Run, sandbox: ProviderSandbox, jobs: Jobs
) -> None:
    """ORDER_REQUEST: a Slack message (intent, confidence, masked phone, quantity -- no phone
    number, no email) and a Shopify draft order for the quantity asked, carrying the step's
    idempotency key; the saga completes with both actions, and its payload holds no PII."""
    text = f"Hi, I'd like to order 3 boxes for tomorrow, write to {EMAIL}"
    result, job, answer, inbox_id = await run.message(text)

    assert job.state is JobState.SUCCEEDED
    assert job.name == "actions.order_request"
    assert result.status == "completed"
    assert result.executed == ("notify_sales", "create_order")
    assert answer.reply is not None
    assert "3 boxes" in answer.reply
    (posted,) = slack_texts(sandbox)
    assert "ORDER_REQUEST" in posted
    assert "+4477••••••23" in posted
    assert "3 boxes" in posted
    assert f"Inbox: {inbox_id}" in posted
    assert "[email]" in posted
    assert PHONE not in posted
    assert EMAIL not in posted
    (draft,) = draft_effects(sandbox)
    fields = draft.data["draft_order"]
    assert fields["line_items"] == [{"title": "Requested: boxes", "price": "0.00", "quantity": 3}]
    assert {"name": "antifragile-key", "value": f"saga:{job.id}:2"} in fields["note_attributes"]
    assert result.results["create_order"]["draft_order_id"] == int(draft.id)
    assert_no_pii(job.payload)
    assert_no_pii(job.result)


async def test_the_same_message_runs_its_actions_once(
    run: Run, handlers: Handlers, actions: Actions, jobs: Jobs, sandbox: ProviderSandbox
) -> None:
    """Starting the actions of one inbox entry again (a redelivered job) enqueues nothing new:
    the saga's idempotency key is the inbox id."""
    _, job, _, inbox_id = await run.message("How much is the price?")
    again = await actions.start(
        jobs,
        handlers.get("pricing_inquiry"),
        inbox_id=inbox_id,
        tenant_id=TENANT.id,
        classification=Classification("PRICING_INQUIRY", 0.9),
    )
    assert again is not None
    assert (again.id, again.created) == (job.id, False)
    assert len(sandbox.effects("slack")) == 1


async def test_pricing_inquiry_notifies_sales(run: Run, sandbox: ProviderSandbox) -> None:
    """PRICING_INQUIRY: one Slack message with the amount the customer mentioned."""
    result, _, _, _ = await run.message("How much does it cost? Is $25 possible?")
    assert result.executed == ("notify_sales",)
    (posted,) = slack_texts(sandbox)
    assert "PRICING_INQUIRY" in posted
    assert "25.0 USD" in posted


async def test_complaint_opens_a_support_ticket_and_notifies_sales(
    run: Run, sandbox: ProviderSandbox, jobs: Jobs
) -> None:
    """COMPLAINT: a high-priority support ticket (a task in the store, no phone number in it)
    and a Slack message that names the ticket."""
    result, _, _, inbox_id = await run.message("My order arrived broken, I want a refund")
    assert result.executed == ("create_support_ticket", "notify_sales")
    task_id = result.results["create_support_ticket"]["task_id"]
    task = await Tasks(jobs).get(task_id)
    assert task is not None
    assert (task["type"], task["priority"], task["status"]) == ("support_ticket", "high", "open")
    assert task["source"] == f"inbox:{inbox_id}"
    assert_no_pii(task)
    (posted,) = slack_texts(sandbox)
    assert f"task_id={task_id}" in posted


async def test_availability_inquiry_is_flagged_for_review(
    run: Run, sandbox: ProviderSandbox, jobs: Jobs
) -> None:
    """AVAILABILITY_INQUIRY: a review task, no provider call."""
    result, _, _, _ = await run.message("Do you have the blue one in stock?")
    assert result.executed == ("flag_for_review",)
    (task,) = await Tasks(jobs).list(status="open")
    assert task["type"] == "review"
    assert "AVAILABILITY_INQUIRY" in task["title"]
    assert sandbox.effects() == []


async def test_schedule_call_books_the_slot_named_and_replies_with_the_link(
    run: Run, sandbox: ProviderSandbox
) -> None:
    """SCHEDULE_CALL with a day, a time and an email: a Cal.com booking for that slot (its
    metadata carries the step's key); the reply holds the booking link; sales are told the
    booking."""
    result, job, answer, _ = await run.message(f"Can we schedule a call tomorrow at 3pm? {EMAIL}")
    assert result.executed == ("book_call", "notify_sales")
    assert answer.reply is not None
    assert "https://cal.com/alice/intro" in answer.reply
    (booking,) = sandbox.effects("calcom")
    assert booking.data["start"] == "2023-11-15T15:00:00Z"
    assert booking.data["eventTypeId"] == 7
    assert booking.data["attendee"]["email"] == EMAIL
    assert booking.idempotency_key == f"create-booking/saga:{job.id}:1"
    assert result.results["book_call"]["booking_uid"]
    (posted,) = slack_texts(sandbox)
    assert "booking_uid=" in posted


async def test_schedule_call_without_a_time_gives_the_link_only(
    run: Run, sandbox: ProviderSandbox
) -> None:
    """SCHEDULE_CALL without a slot: no booking, the action returns the booking link."""
    result, _, _, _ = await run.message("Can we book a call?")
    assert result.results["book_call"] == {"link": "https://cal.com/alice/intro"}
    assert sandbox.effects("calcom") == []


@pytest.fixture
def run_with(
    jobs: Jobs, handlers: Handlers, connectors: Connectors, clock: FakeClock
) -> Callable[..., Run]:
    """A :class:`Run` whose tenant books with *provider* (and *booking* settings)."""

    def make(provider: str, booking: BookingSettings = BOOKING) -> Run:
        tenant = dataclasses.replace(TENANT, booking_provider=provider)
        actions = Actions(connectors, tenants={TENANT.id: tenant}, booking=booking)
        return Run(jobs, handlers, actions, clock)

    return make


async def test_schedule_call_through_calendly_makes_one_single_use_link(
    run_with: Callable[..., Run], sandbox: ProviderSandbox
) -> None:
    """With Calendly as the tenant's provider, SCHEDULE_CALL makes one single-use link for the
    contact (carrying the step key's correlation); the saga keeps the link without its prefill
    (no email); no Cal.com booking is made."""
    result, job, _, _ = await run_with("calendly").message(
        f"Can we schedule a call tomorrow at 3pm? {EMAIL}"
    )
    outcome = result.results["book_call"]
    assert outcome["provider"] == "calendly"
    (link,) = sandbox.effects("calendly", "POST /scheduling_links")
    assert outcome["link"] == f"{sandbox.base_url('calendly')}/d/{link.id}"
    assert outcome["correlation"] == correlation_for(f"scheduling-link/saga:{job.id}:1")
    assert EMAIL not in json.dumps(job.result)  # the prefilled link is not kept
    assert sandbox.effects("calcom") == []


async def test_schedule_call_through_acuity_books_the_time_named(
    run_with: Callable[..., Run], sandbox: ProviderSandbox
) -> None:
    """With Acuity, SCHEDULE_CALL naming a day, a time and an email books that appointment
    once; without a time it books nothing and offers the next free times."""
    run = run_with("acuity", dataclasses.replace(BOOKING, acuity_appointment_type_id=1))
    result, _, _, _ = await run.message(f"Can we schedule a call tomorrow at 3pm? {EMAIL}")
    outcome = result.results["book_call"]
    (appointment,) = sandbox.effects("acuity", "POST /appointments")
    assert appointment.data["datetime"] == "2023-11-15T15:00:00+00:00"
    assert appointment.data["email"] == EMAIL
    assert outcome["appointment_id"] == int(appointment.id)
    offered, _, _, _ = await run.message("Can we book a call?")
    assert offered.results["book_call"]["booked"] is False
    assert len(offered.results["book_call"]["options"]) == 3
    assert len(sandbox.effects("acuity", "POST /appointments")) == 1


async def test_unknown_messages_are_flagged_for_review(run: Run, jobs: Jobs) -> None:
    """UNKNOWN: a review task that names the intent and the inbox entry."""
    result, job, answer, inbox_id = await run.message("hello there")
    assert job.name == "actions.unknown"
    assert result.executed == ("flag_for_review",)
    (task,) = await Tasks(jobs).list()
    assert task["source"] == f"inbox:{inbox_id}"
    assert answer.reply


async def test_contact_actions_create_the_customer_contact_and_owner_email(
    run: Run, handlers: Handlers, sandbox: ProviderSandbox
) -> None:
    """send_email, create_shopify_customer and create_hubspot_contact use the email in the
    stored message: one Resend email to the tenant's owner (Idempotency-Key from the step),
    one Shopify customer, one HubSpot contact."""

    @handlers.on_message(
        "LEAD",
        actions=["send_email", "create_shopify_customer", "create_hubspot_contact"],
        name="lead",
    )
    async def lead(ctx: MessageContext) -> str:
        return "Thanks!"

    result, job, _, _ = await run.message(f"I'm interested, reach me at {EMAIL}", handler="lead")
    assert result.status == "completed", result
    (email,) = sandbox.effects("resend")
    assert email.data["to"] == ["owner@shop.example"]
    assert email.idempotency_key == f"send-email/saga:{job.id}:1"
    assert EMAIL in email.data["text"]
    (customer,) = sandbox.effects("shopify", "POST /admin/api/{version}/graphql.json")
    assert customer.data["customer"]["email"] == EMAIL
    assert customer.data["customer"]["phone"] == f"+{PHONE}"
    (contact,) = sandbox.effects("hubspot")
    assert contact.data["properties"]["email"] == EMAIL
    assert result.results["create_hubspot_contact"]["created"] is True


async def test_the_actions_a_flow_completes_with_run_from_a_handler_too(
    run: Run, handlers: Handlers, sandbox: ProviderSandbox
) -> None:
    """One registry serves both: ``send_summary_email`` and ``notify_slack`` -- what a
    completed flow runs -- named by an intent handler run as its saga's steps, on the
    message: the owner's summary email carries the message, the Slack post only the first
    name and the masked phone."""

    @handlers.on_message("LEAD", actions=["send_summary_email", "notify_slack"], name="lead2")
    async def lead(ctx: MessageContext) -> str:
        return "Thanks!"

    result, job, _, _ = await run.message(f"Ada Byron here, reach me at {EMAIL}", handler="lead2")
    assert result.status == "completed", result
    (email,) = sandbox.effects("resend")
    assert email.data["to"] == ["owner@shop.example"]
    assert email.idempotency_key == f"send-email/saga:{job.id}:1"
    assert "Message: Ada Byron here" in email.data["text"]
    assert f"+{PHONE}" in email.data["text"]
    (post,) = slack_texts(sandbox)
    assert post.startswith("New UNKNOWN message for Corner Shop: Ada (+4477")
    assert_no_pii(post)


SLACK_MARKUP = "<!channel> <!here> <https://evil.example|your refund> & <@U123>"


async def test_customer_text_reaches_slack_as_text_never_as_markup(
    run: Run, handlers: Handlers, sandbox: ProviderSandbox
) -> None:
    """Mentions and links typed by a customer -- in the message and in the profile name --
    are posted to Slack escaped (``&lt;!channel&gt;``): no ping, no link, no mention; the
    business's own text around them is unchanged."""
    await run.message(f"How much does it cost? {SLACK_MARKUP}")

    @handlers.on_message("LEAD", actions=["notify_slack"], name="lead_markup")
    async def lead(ctx: MessageContext) -> str:
        return "Thanks!"

    await run.message("hello", handler="lead_markup", profile="<!channel> Eve")
    sales, contact = slack_texts(sandbox)
    assert sales.startswith("New PRICING_INQUIRY (")
    assert "Message: How much does it cost? &lt;!channel&gt; &lt;!here&gt; " in sales
    assert "&lt;https://evil.example|your refund&gt; &amp; &lt;@U123&gt;" in sales
    assert contact.startswith("New UNKNOWN message for Corner Shop: &lt;!channel&gt; (+4477")
    for posted in (sales, contact):
        assert "<!" not in posted
        assert "<http" not in posted
        assert "<@" not in posted


async def test_a_step_failing_for_good_compensates_the_order(
    jobs: Jobs, handlers: Handlers, clock: FakeClock, sandbox: ProviderSandbox
) -> None:
    """create_order then notify_sales, with the Slack channel gone (404, permanent): the draft
    order is deleted again (compensation), and the saga's result lists the executed action,
    the failed one with its code, and the compensation."""

    @handlers.on_message("ORDER_REQUEST", priority=5, actions=["create_order", "notify_sales"])
    async def order_then_notify(ctx: MessageContext) -> str:
        return "ok"

    connectors = connectors_for(sandbox, clock, hook=GONE_HOOK)
    try:
        actions = Actions(connectors, tenants={TENANT.id: TENANT}, booking=BOOKING)
        result, job, _, _ = await Run(jobs, handlers, actions, clock).message(
            "I want to order 2 boxes"
        )
    finally:
        await connectors.aclose()

    assert job.state is JobState.SUCCEEDED
    assert result.status == "compensated"
    assert result.executed == ("create_order",)
    assert result.failed is not None
    assert (result.failed.name, result.failed.code) == ("notify_sales", "NOT_FOUND")
    assert result.compensated == ("create_order",)
    (draft,) = draft_effects(sandbox)
    (deleted,) = draft_effects(sandbox, deleted=True)
    assert deleted.id == draft.id
    assert sandbox.effects("slack") == []


async def test_an_unconfigured_provider_is_skipped_not_failed(
    jobs: Jobs, handlers: Handlers, clock: FakeClock, sandbox: ProviderSandbox
) -> None:
    """Without Slack settings, notify_sales is skipped (its result says why) and the order
    is still drafted: a missing integration does not undo the others."""
    connectors = connectors_for(sandbox, clock, without="slack")
    try:
        actions = Actions(connectors, tenants={TENANT.id: TENANT}, booking=BOOKING)
        result, _, _, _ = await Run(jobs, handlers, actions, clock).message("order 4 boxes")
    finally:
        await connectors.aclose()
    assert result.status == "completed"
    assert result.results["notify_sales"] == {"skipped": "slack is not configured"}
    assert len(draft_effects(sandbox)) == 1


async def test_an_ambiguous_draft_order_is_reconciled_by_its_key(
    run: Run, sandbox: ProviderSandbox, jobs: Jobs
) -> None:
    """Shopify creates the draft order but the answer is lost: the action looks the draft up
    by the step's reconcile key (a note attribute) and returns it -- exactly one draft order,
    no second POST that could draft it twice, and no task for a person."""
    sandbox.faults("shopify", DRAFTS, script=[ProviderFault.ambiguous()])
    result, job, _, _ = await run.message("I want to order 5 boxes")
    assert result.status == "completed"
    outcome = result.results["create_order"]
    assert "outcome" not in outcome
    drafts = draft_effects(sandbox)
    assert len(drafts) == 1
    simulator = sandbox.simulator("shopify")
    assert isinstance(simulator, ShopifySimulator)
    (draft,) = simulator.draft_orders
    assert outcome["draft_order_id"] == draft["id"]
    assert {"name": "antifragile-key", "value": f"saga:{job.id}:2"} in draft["note_attributes"]
    assert await Tasks(jobs).list() == []


async def test_an_ambiguous_draft_order_that_cannot_be_looked_up_becomes_a_reconcile_task(
    run: Run, sandbox: ProviderSandbox, jobs: Jobs
) -> None:
    """Shopify creates the draft order, the answer is lost and looking it up fails too (the
    draft-order list answers 503): the action does not send it again (that could draft it
    twice) but opens a high-priority task to check, naming the reconcile key; the saga
    completes."""
    sandbox.faults("shopify", DRAFTS, script=[ProviderFault.ambiguous()])
    sandbox.faults("shopify", LIST_DRAFTS, chaos=[(1.0, ProviderFault.error(503))])
    result, job, _, _ = await run.message("I want to order 5 boxes")
    assert result.status == "completed"
    outcome = result.results["create_order"]
    assert outcome["outcome"] == "unknown"
    assert len(draft_effects(sandbox)) == 1
    task = await Tasks(jobs).get(outcome["task_id"])
    assert task is not None
    assert (task["type"], task["priority"]) == ("reconcile", "high")
    assert f"saga:{job.id}:2" in task["title"]


async def test_delete_draft_order_deletes_once(
    connectors: Connectors, sandbox: ProviderSandbox
) -> None:
    """The compensation's connector call: deleting a draft order is True once, then False
    (Shopify no longer knows it), with one recorded effect."""
    draft = await connectors.shopify.create_draft_order([{"title": "x", "price": "1.00"}])
    assert await connectors.shopify.delete_draft_order(draft["id"]) is True
    assert await connectors.shopify.delete_draft_order(draft["id"]) is False
    assert len(draft_effects(sandbox, deleted=True)) == 1


async def test_action_errors_leave_without_personal_data(
    run: Run, handlers: Handlers, actions: Actions
) -> None:
    """When an action fails for good with the customer's email and phone in its error (a
    provider echoing them back), the error kept in the saga's result and the job's history
    has them masked."""

    @actions.action("echoing")
    async def echoing(ctx: ActionContext) -> None:
        raise InvalidRequestError(f"refused {find_emails(ctx.event.text)[0]} / +{PHONE}")

    @handlers.on_message("LEAD", actions=["echoing"], name="lead_only")
    async def lead_only(ctx: MessageContext) -> None:
        return None

    result, job, _, _ = await run.message(f"Contact me: {EMAIL}", handler="lead_only")
    assert result.status == "compensated"
    assert result.failed is not None
    assert result.failed.code == "VALIDATION"
    assert "a•••@example.com" in result.failed.error
    assert_no_pii(result.to_json())
    assert_no_pii(list(job.history))


async def test_an_unknown_booking_waits_for_cal_com_to_confirm_it(
    run: Run, sandbox: ProviderSandbox, jobs: Jobs, clock: FakeClock
) -> None:
    """With echoes, a booking whose answer is lost does not open a task at once: the saga is
    deferred (no attempt spent) until Cal.com's ``BOOKING_CREATED`` carrying the booking's
    correlation says it exists; then the action returns that booking -- one booking, no task,
    no second request."""
    deliveries = DeliveryStatuses(jobs, clock=clock)
    run.actions.echoes = Echoes(deliveries)
    sandbox.faults("calcom", "POST /v2/bookings", script=[ProviderFault.ambiguous()])
    job_id, _, _ = await run.begin(f"Can we schedule a call tomorrow at 3pm? {EMAIL}")
    worker = Worker(jobs)
    await worker.run_until_idle()
    waiting = await jobs.get(job_id)
    assert waiting is not None
    assert (waiting.state, waiting.attempts) == (JobState.QUEUED, 0)
    (booking,) = sandbox.effects("calcom")
    correlation = correlation_for(f"create-booking/saga:{job_id}:1")
    assert booking.data["metadata"]["antifragile_ref"] == correlation
    created = DeliveryStatus(
        "calcom",
        f"{booking.id}:BOOKING_CREATED",
        "confirmed",
        "BOOKING_CREATED",
        provider_message_id=str(booking.id),
        correlation=correlation,
    )
    await deliveries.record(created)
    await deliveries.record(created)  # a redelivery changes nothing
    job = await run.settle(job_id)
    result = SagaResult.from_job(job)
    assert result is not None
    assert result.executed == ("book_call", "notify_sales")
    assert result.results["book_call"]["booking_uid"] == str(booking.id)
    assert result.results["book_call"]["outcome"] == "confirmed by Cal.com"
    assert len(sandbox.effects("calcom")) == 1
    assert await Tasks(jobs).list(status="open") == []
