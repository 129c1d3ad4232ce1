"""Sessions, the intake flow and replies on a real SQLite queue, with every provider behind the
sandbox over real HTTP and a FakeClock for time (nudges, retry back-offs).

The sandbox's effect log is the ground truth for "what happened at the provider": one email,
one customer, one contact, one Slack post, one WhatsApp message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from antifragile import (
    CircuitBreaker,
    ConfigurationError,
    FakeClock,
    InvalidRequestError,
    PermanentError,
    StoreUnavailableError,
)
from antifragile.connectors import (
    Connectors,
    HubSpotConnector,
    ResendConnector,
    ShopifyConnector,
    SlackConnector,
    TwilioConnector,
    WhatsAppConnector,
    correlation_for,
)
from antifragile.connectors._slack import WEBHOOK_URL_ENV as SLACK_WEBHOOK_URL_ENV
from antifragile.inbound import (
    DEFAULT_FLOW,
    DEFAULT_GRACEFUL_REPLY,
    DEFAULT_ON_COMPLETE,
    ActionContext,
    Actions,
    Channel,
    EventKind,
    Flow,
    FlowStep,
    InboundEvent,
    Replies,
    SessionRecord,
    Sessions,
    SessionTurn,
    Tenant,
)
from antifragile.inbound._flags import FeatureFlags
from antifragile.inbound._pipeline import PROCESS_JOB, MessagePipeline
from antifragile.jobs import (
    Job,
    JobContext,
    JobFilter,
    Jobs,
    JobState,
    NewInboxEntry,
    Worker,
    new_job_id,
)
from antifragile.observability import mask_phone
from antifragile.policies import Constant, Policy, Retry
from antifragile.sandbox import (
    HubSpotSimulator,
    ProviderFault,
    ProviderSandbox,
    ResendSimulator,
    SendGridSimulator,
    ShopifySimulator,
    Simulator,
    SlackSimulator,
    TwilioSimulator,
    WhatsAppSimulator,
)
from antifragile.stores import KeyValueStore, Versioned, open_store

#: the checkout, where ``python -m tests.integration._session_turn`` runs
ROOT = Path(__file__).resolve().parents[2]
WA_TOKEN = "EAAG-test-token"
PHONE_ID = "106540352242922"
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-auth-token"
RESEND_KEY = "re_test_key_12345"
SHOPIFY_TOKEN = "shpat_test_token"
HUBSPOT_TOKEN = "pat-test-token"
HOOK = "T0001/B0001/sEcReTtOkEn1234"

CONTACT = "447700900123"
OWNER = "owner@acme.example"
CUSTOMERS = "POST /admin/api/{version}/graphql.json"  # customerCreate and the lookup

TENANT = Tenant(
    "acme",
    name="Acme Bakery",
    whatsapp_phone_number_id=PHONE_ID,
    twilio_number="+15550001111",
    owner_email=OWNER,
)

ANSWERS = ["Ada Lovelace", "ada@example.com", "A cake for 20 people", "weekday mornings"]


@dataclass
class Providers:
    """The connectors, pointed at the sandbox (what the connectors registry provides)."""

    whatsapp: WhatsAppConnector
    twilio: TwilioConnector
    resend: ResendConnector
    shopify: ShopifyConnector
    hubspot: HubSpotConnector
    slack: SlackConnector

    async def aclose(self) -> None:
        for connector in (
            self.whatsapp,
            self.twilio,
            self.resend,
            self.shopify,
            self.hubspot,
            self.slack,
        ):
            await connector.aclose()


@dataclass
class World:
    clock: FakeClock
    sandbox: ProviderSandbox
    jobs: Jobs
    replies: Replies
    sessions: Sessions
    worker: Worker
    counter: list[int] = field(default_factory=lambda: [0])

    def event(
        self, text: str | None, *, sender: str = CONTACT, channel: Channel = Channel.WHATSAPP
    ) -> InboundEvent:
        self.counter[0] += 1
        tenant_key = PHONE_ID if channel is Channel.WHATSAPP else "+15550001111"
        return InboundEvent(
            channel,
            f"wamid.{self.counter[0]}",
            EventKind.MESSAGE,
            tenant_key,
            sender=sender,
            text=text,
        )

    async def say(self, text: str | None, **options: Any) -> SessionTurn:
        turn = await self.sessions.handle(TENANT, self.event(text, **options))
        assert turn is not None
        return turn

    async def complete(self, sender: str = CONTACT) -> SessionTurn:
        turn = await self.say("Hello", sender=sender)
        for answer in ANSWERS:
            turn = await self.say(answer, sender=sender)
        assert turn.completed
        return turn

    async def record(self, sender: str = CONTACT) -> dict[str, Any]:
        """The session record in its stored shape (what the admin API shows)."""
        found = await self.sessions.get(Sessions.key_for(TENANT.id, sender))
        assert found is not None
        return found.to_json()

    async def all_jobs(self, name: str | None = None) -> list[Job]:
        return await self.jobs.find(JobFilter(name=name), limit=1000)

    def effects(self, provider: str) -> list[Any]:
        return self.sandbox.effects(provider)


def no_retry(name: str, clock: FakeClock) -> Policy:
    """One attempt per call, no breaker: the job's retries are what the tests watch."""
    return Policy(
        name, timeout=5.0, retry=Retry(attempts=1), breaker=None, budget=None, clock=clock
    )


def simulators(whatsapp: WhatsAppSimulator | None = None) -> list[Simulator]:
    """The simulators of every provider a session uses (*whatsapp* instead of the default)."""
    default = WhatsAppSimulator(
        access_tokens=[WA_TOKEN], phone_number_ids=[PHONE_ID], throughput=10**6
    )
    return [
        whatsapp or default,
        TwilioSimulator(credentials={TWILIO_SID: TWILIO_TOKEN}, concurrency=10**6),
        ResendSimulator(api_keys=[RESEND_KEY], rate_limit=10**6),
        ShopifySimulator(access_tokens=[SHOPIFY_TOKEN], bucket_size=10**6),
        HubSpotSimulator(tokens=[HUBSPOT_TOKEN], burst=10**6),
        SlackSimulator(hooks=[HOOK], rate=1e6, burst=1e6),
    ]


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    with ProviderSandbox(simulators()) as running:
        yield running


@pytest.fixture
async def providers(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Providers]:
    made = Providers(
        whatsapp=WhatsAppConnector(
            WA_TOKEN,
            phone_number_id=PHONE_ID,
            base_url=sandbox.base_url("whatsapp"),
            policy=no_retry("whatsapp", clock),
            clock=clock,
        ),
        twilio=TwilioConnector(
            TWILIO_SID,
            TWILIO_TOKEN,
            base_url=sandbox.base_url("twilio"),
            policy=no_retry("twilio", clock),
            clock=clock,
        ),
        resend=ResendConnector(
            RESEND_KEY, base_url=sandbox.base_url("resend"), policy=no_retry("resend", clock)
        ),
        shopify=ShopifyConnector(
            SHOPIFY_TOKEN, base_url=sandbox.base_url("shopify"), policy=no_retry("shopify", clock)
        ),
        hubspot=HubSpotConnector(
            HUBSPOT_TOKEN, base_url=sandbox.base_url("hubspot"), policy=no_retry("hubspot", clock)
        ),
        slack=SlackConnector(
            f"{sandbox.base_url('slack')}/services/{HOOK}", policy=no_retry("slack", clock)
        ),
    )
    yield made
    await made.aclose()


def build(
    tmp_path: Path,
    clock: FakeClock,
    sandbox: ProviderSandbox,
    providers: Providers,
    *,
    flows: dict[str, Flow] | None = None,
    kv: KeyValueStore | None = None,
    name: str = "sessions.db",
    tenant: Tenant = TENANT,
    with_flags: bool = False,
    actions: Actions | None = None,
) -> World:
    jobs = Jobs(database_url=f"sqlite:///{tmp_path / name}", clock=clock)
    replies = Replies(jobs, providers)
    sessions = Sessions(
        jobs,
        providers,
        flows or {"intake": DEFAULT_FLOW},
        tenants={tenant.id: tenant},
        replies=replies,
        retry=Retry(attempts=2, backoff=Constant(30.0)),
        kv=kv,
        flags=FeatureFlags(jobs, clock=clock) if with_flags else None,
        actions=actions,
    )
    worker = jobs.worker(concurrency=4, lease=60.0, heartbeat=20.0)
    return World(clock, sandbox, jobs, replies, sessions, worker)


async def process_once(
    world: World, providers: Providers, classifier: Any, text: str
) -> tuple[Job, MessagePipeline]:
    """One WhatsApp message of ``CONTACT`` through the ``inbound.process`` job (one attempt) of
    a pipeline with *classifier* and the world's sessions: the finished job, and the pipeline."""
    pipeline = MessagePipeline(
        world.jobs,
        tenants=[TENANT],
        classifier=classifier,
        handlers=None,
        actions=None,
        sessions=world.sessions,
        replies=world.replies,
        tasks=None,
        connectors=providers,
        clock=world.clock,
    )

    @world.jobs.job(name=PROCESS_JOB, queue="inbound", retry=Retry(attempts=1))
    async def process(ctx: JobContext, inbox_id: str) -> dict[str, Any]:
        return (await pipeline.process(ctx, inbox_id)).to_json()

    async with world.jobs:
        event = world.event(text)
        entry_id = new_job_id()
        await world.jobs.queue.record_inbound(
            [
                NewInboxEntry(
                    channel=event.channel.value,
                    event_id=event.event_id,
                    kind=event.kind.value,
                    tenant_key=event.tenant_key,
                    payload=event.to_json(),
                    ttl=3600.0,
                    job=process.prepare(entry_id),
                    id=entry_id,
                )
            ],
            now=world.clock.time(),
        )
        await world.worker.run_until_idle()
        (job,) = await world.all_jobs(PROCESS_JOB)
    return job, pipeline


@pytest.fixture
async def world(
    tmp_path: Path, clock: FakeClock, sandbox: ProviderSandbox, providers: Providers
) -> AsyncIterator[World]:
    made = build(tmp_path, clock, sandbox, providers)
    async with made.jobs:
        yield made


async def test_full_intake_runs_four_jobs_with_one_effect_each(world: World) -> None:
    """A whole conversation: greeting and first question, an invalid email re-asked, the
    completion text; then four durable jobs (payload: the session key only) whose effects
    happen once at the providers, and whose status flags end ``sent``."""
    first = await world.say("Hello")
    assert first.reply.startswith(DEFAULT_FLOW.greeting)
    assert first.reply.endswith(DEFAULT_FLOW.steps[0].question)
    assert (first.step, first.completed) == (0, False)
    turn = await world.say("Ada Lovelace")
    assert turn.reply == "Thanks, Ada Lovelace! What's the best email address to reach you?"
    invalid = await world.say("ada at example dot com")
    assert invalid.step == 1
    assert invalid.reply.startswith(DEFAULT_FLOW.steps[1].error)
    assert invalid.reply.endswith("What's the best email address to reach you?")
    for answer in ANSWERS[1:]:
        turn = await world.say(answer)
    assert turn.completed
    assert turn.reply.startswith("Thank you, Ada Lovelace!")
    assert turn.step == len(DEFAULT_FLOW.steps)

    key = turn.session_key
    assert CONTACT not in key
    typed = await world.sessions.get(key)
    assert typed is not None
    assert (typed.progress_status, typed.round, typed.phone) == ("completed", 1, CONTACT)
    assert typed.actions == DEFAULT_ON_COMPLETE
    assert typed.flag("email_status") == "pending"
    with pytest.raises(dataclasses.FrozenInstanceError):
        typed.step = 0  # type: ignore[misc]
    assert SessionRecord.from_json(typed.to_json()) == typed
    record = await world.record()
    assert record["progress_status"] == "completed"
    assert record["fields"] == dict(
        zip(["name", "email", "need", "contact_time"], ANSWERS, strict=True)
    )
    assert {record[f"{i}_status"] for i in ("email", "shopify", "hubspot", "slack")} == {"pending"}
    queued = await world.all_jobs()
    assert sorted(j.name for j in queued) == [
        "sessions.hubspot_contact",
        "sessions.shopify_customer",
        "sessions.slack_message",
        "sessions.summary_email",
    ]
    for job in queued:
        assert job.payload == {"session_key": key}
        assert job.idempotency_key == f"{job.name}:{key}:1"
        assert set(record["jobs"].values()) >= {job.id}
    assert CONTACT not in json.dumps([j.payload for j in queued])

    await world.worker.run_until_idle()
    assert {j.state for j in await world.all_jobs()} == {JobState.SUCCEEDED}
    record = await world.record()
    for integration in ("email", "shopify", "hubspot", "slack"):
        assert record[f"{integration}_status"] == "sent"
    assert record["summary_email_sent"] is True

    (email,) = world.effects("resend")
    assert email.data["to"] == [OWNER]
    assert "Ada Lovelace" in email.data["subject"]
    assert "ada@example.com" in email.data["text"]
    assert "+447700900123" in email.data["text"]
    (customer,) = world.effects("shopify")
    assert customer.data["customer"]["email"] == "ada@example.com"
    assert customer.data["customer"]["first_name"] == "Ada"
    assert record["shopify_customer_id"] == int(customer.id)
    (contact,) = world.effects("hubspot")
    assert contact.data["properties"]["email"] == "ada@example.com"
    (post,) = world.effects("slack")
    assert "Ada" in post.data["text"]
    assert mask_phone(CONTACT) in post.data["text"]
    for secret in ("Lovelace", "ada@example.com", CONTACT, "cake"):
        assert secret not in post.data["text"]

    # the completed contact is the intent pipeline's; the last message handled again changes
    # nothing and enqueues nothing
    assert await world.sessions.handle(TENANT, world.event("one more thing")) is None
    replay = InboundEvent(
        Channel.WHATSAPP,
        f"wamid.{world.counter[0] - 1}",
        EventKind.MESSAGE,
        PHONE_ID,
        sender=CONTACT,
        text=ANSWERS[-1],
    )
    assert await world.sessions.handle(TENANT, replay) == turn
    assert len(await world.all_jobs()) == 4


async def test_shopify_down_marks_failed_and_the_sweep_redrives_after_recovery(
    world: World,
) -> None:
    """With Shopify answering 503, the contact still gets the completion text; the Shopify job
    retries (``pending``), then dies (``failed``) while the other integrations are ``sent``.
    After Shopify recovers, the sweep redrives the dead job (same job, same key): ``sent``,
    and exactly one customer exists."""
    world.sandbox.faults("shopify", CUSTOMERS, chaos=[(1.0, ProviderFault.error(503))])
    turn = await world.complete()
    assert turn.reply.startswith("Thank you, Ada Lovelace!")

    await world.worker.run_until_idle()
    record = await world.record()
    assert record["shopify_status"] == "pending"
    assert {record[f"{i}_status"] for i in ("email", "hubspot", "slack")} == {"sent"}
    world.clock.advance(60)
    await world.worker.run_until_idle()
    record = await world.record()
    assert record["shopify_status"] == "failed"
    (dead,) = await world.jobs.dlq.list()
    assert dead.last_error_code == "UPSTREAM_UNAVAILABLE"
    assert "ada@example.com" not in (dead.last_error or "")

    # still down: the sweep redrives once more, and it dies again
    report = await world.sessions.sweep()
    assert report.redriven == 1
    await world.worker.run_until_idle()
    world.clock.advance(60)
    await world.worker.run_until_idle()
    assert (await world.record())["shopify_status"] == "failed"

    world.sandbox.clear_faults("shopify")
    report = await world.sessions.sweep()
    assert report.redriven == 1
    record = await world.record()
    assert record["shopify_status"] == "pending"
    await world.worker.run_until_idle()
    record = await world.record()
    assert record["shopify_status"] == "sent"
    assert record["redrives"] == {"create_shopify_customer": 2}
    (job,) = await world.all_jobs("sessions.shopify_customer")
    assert job.id == record["jobs"]["create_shopify_customer"]
    assert job.state is JobState.SUCCEEDED
    assert len(world.effects("shopify")) == 1
    assert len(world.effects("resend")) == 1
    assert (await world.sessions.sweep()).redriven == 0


async def test_sweep_leaves_permanent_failures_to_an_operator(world: World) -> None:
    """A job that died of a permanent error (Shopify 422) is not redriven by the sweep."""
    world.sandbox.faults("shopify", CUSTOMERS, chaos=[(1.0, ProviderFault.error(422))])
    await world.complete()
    await world.worker.run_until_idle()
    assert (await world.record())["shopify_status"] == "failed"
    report = await world.sessions.sweep()
    assert (report.redriven, report.left) == (0, 1)


async def test_records_in_another_store_get_their_jobs_from_the_replay_or_the_sweep(
    tmp_path: Path,
    clock: FakeClock,
    sandbox: ProviderSandbox,
    providers: Providers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Records kept in a store of their own cannot share the jobs' transaction: the
    completion is written first, its flags ``none``; when the queue then refuses the jobs the
    turn fails, and the replay of the same message enqueues them under their original keys.
    A second contact's completion whose replay never comes is enqueued by the sweep once a
    minute has passed. Every effect happens once."""
    records = await open_store(f"sqlite:///{tmp_path / 'records.db'}", clock=clock)
    world = build(tmp_path, clock, sandbox, providers, kv=records.kv)

    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailableError("the database is down")

    try:
        async with world.jobs:
            await world.say("Hello")
            for answer in ANSWERS[:-1]:
                await world.say(answer)
            last = world.event(ANSWERS[-1])
            with monkeypatch.context() as patch:
                patch.setattr(world.jobs, "enqueue_many", refuse)
                with pytest.raises(StoreUnavailableError):
                    await world.sessions.handle(TENANT, last)
            record = await world.record()
            assert record["progress_status"] == "completed"
            assert record["shopify_status"] == "none"
            assert await world.all_jobs() == []

            turn = await world.sessions.handle(TENANT, last)  # the replay
            assert turn is not None
            assert turn.completed
            assert len(await world.all_jobs()) == 4
            assert await world.sessions.handle(TENANT, last) == turn  # nothing more
            assert len(await world.all_jobs()) == 4

            other = "15551234567"
            with monkeypatch.context() as patch:
                patch.setattr(world.jobs, "enqueue_many", refuse)
                with pytest.raises(StoreUnavailableError):
                    await world.complete(sender=other)
            assert (await world.sessions.sweep()).enqueued == 0  # too early
            world.clock.advance(120)
            assert (await world.sessions.sweep()).enqueued == 4
            assert (await world.sessions.sweep()).enqueued == 0
            await world.worker.run_until_idle()
            jobs = await world.all_jobs()
            assert len(jobs) == 8
            assert {j.state for j in jobs} == {JobState.SUCCEEDED}
            assert all(j.idempotency_key and j.idempotency_key.endswith(":1") for j in jobs)
            assert len(world.effects("slack")) == len(world.effects("resend")) == 2
    finally:
        await records.close()


async def test_nudge_is_sent_once_after_two_hours_of_silence(world: World) -> None:
    """A contact who stops answering gets one nudge (the waiting question again) after two
    hours, through the scheduled job; later runs, and later silences, send nothing more."""
    await world.say("Hello")
    await world.say("Ada Lovelace")
    world.clock.advance(3600)
    assert await world.sessions.nudge_inactive() == 0
    world.clock.advance(3601)
    result = await world.sessions.nudge_schedule.function.run_inline(tick=0)
    assert result == {"nudged": 1}
    assert await world.sessions.nudge_inactive() == 0
    record = await world.record()
    assert record["nudge_sent"] is True

    await world.worker.run_until_idle()
    (message,) = world.effects("whatsapp")
    assert message.data["to"] == CONTACT
    assert message.data["text"]["body"] == (
        "Just checking in -- are you still there? "
        "Thanks, Ada Lovelace! What's the best email address to reach you?"
    )
    (job,) = await world.all_jobs("replies.send")
    assert CONTACT not in json.dumps(job.payload)

    await world.say("ada@example.com")
    world.clock.advance(3 * 3600)
    assert await world.sessions.nudge_inactive() == 0
    await world.worker.run_until_idle()
    assert len(world.effects("whatsapp")) == 1


async def test_completed_sessions_are_never_nudged(world: World) -> None:
    """Only sessions in progress are nudged."""
    await world.complete()
    world.clock.advance(5 * 3600)
    assert await world.sessions.nudge_inactive() == 0


class RacingKV:
    """The real store, except that the first ``get`` of two callers waits for the other, so
    both read the same version before either writes -- the race, every time."""

    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv
        self.barrier = asyncio.Barrier(2)
        self.racing = True

    async def get(self, key: str, *, now: float) -> Versioned | None:
        found = await self.kv.get(key, now=now)
        if self.racing:
            await self.barrier.wait()
            self.racing = False
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)


async def test_concurrent_answers_of_one_contact_are_both_kept(
    tmp_path: Path, clock: FakeClock, sandbox: ProviderSandbox, providers: Providers
) -> None:
    """Two messages of one contact handled at the same moment, both having read the same
    version: one compare-and-set loses, is retried on the new record, and both answers are
    stored (no lost update)."""
    flow = Flow("intake", tuple(FlowStep(f"q{n}", f"Question {n}?") for n in range(4)))
    world = build(tmp_path, clock, sandbox, providers, flows={"intake": flow}, name="race.db")
    async with world.jobs:
        await world.say("Hello")
        world.sessions._kv = RacingKV(_queue_kv(world.jobs))
        turns = await asyncio.gather(world.say("red"), world.say("blue"))
        assert sorted(t.step for t in turns) == [1, 2]
        assert world.sessions.conflicts >= 1
        record = await world.record()
        assert record["step"] == 2
        assert sorted(record["fields"].values()) == ["blue", "red"]

        # and many at once, without the barrier
        world.sessions._kv = None
        world.sessions.flows["intake"] = Flow(
            "intake", tuple(FlowStep(f"q{n}", f"Q{n}?") for n in range(12))
        )
        await world.sessions.reset(Sessions.key_for(TENANT.id, CONTACT))
        await world.say("start")
        answers = [f"answer {n}" for n in range(10)]
        await asyncio.gather(*(world.say(a) for a in answers))
        record = await world.record()
        assert record["step"] == 10
        assert sorted(record["fields"].values()) == sorted(answers)


def _queue_kv(jobs: Jobs) -> KeyValueStore:
    kv = jobs.queue.store.kv
    assert isinstance(kv, KeyValueStore)
    return kv


async def test_replies_go_out_through_the_whatsapp_simulator_once_per_key(world: World) -> None:
    """A reply is stored (``outmsg:{id}``), sent by a durable job whose payload is only the
    id, and recorded with the provider's message id; the same key sends nothing more."""
    event = world.event("Hello")
    turn = await world.sessions.handle(TENANT, event)
    assert turn is not None
    message_id = await world.replies.reply(TENANT, event, turn.reply)
    assert await world.replies.reply(TENANT, event, turn.reply) == message_id
    (job,) = await world.all_jobs("replies.send")
    assert job.payload == {"message_id": message_id}
    assert (job.queue, job.provider) == ("replies", "whatsapp")
    stored = await world.replies.get(message_id)
    assert stored is not None
    assert stored["to"] == CONTACT
    assert stored["status"] == "pending"

    await world.worker.run_until_idle()
    (sent,) = world.effects("whatsapp")
    assert sent.data["to"] == CONTACT
    assert sent.data["text"]["body"] == turn.reply
    stored = await world.replies.get(message_id)
    assert stored is not None
    assert stored["status"] == "sent"
    assert stored["provider_message_id"] == sent.id
    assert stored["sending_since"] is None


async def test_twilio_replies_go_from_the_tenant_number(world: World) -> None:
    """A contact who wrote over Twilio is answered over Twilio, from the tenant's number, to
    the sender's E.164 number."""
    event = world.event("Hello", channel=Channel.TWILIO)
    turn = await world.sessions.handle(TENANT, event)
    assert turn is not None
    assert turn.step == 0
    message_id = await world.replies.reply(TENANT, event, turn.reply)
    await world.worker.run_until_idle()
    (sent,) = world.effects("twilio")
    assert sent.data["To"] == "+447700900123"
    assert sent.data["From"] == TENANT.twilio_number
    stored = await world.replies.get(message_id)
    assert stored is not None
    assert stored["provider_message_id"] == sent.id


async def test_a_reply_whose_delivery_is_unknown_is_not_sent_again(world: World) -> None:
    """WhatsApp dropping the connection after the request was written may have sent the
    message: the job is deferred, not failed -- it awaits the echo of its correlation without
    counting an attempt; with no status within WhatsApp's 10-minute window it goes to the
    dead-letter queue for review (the flag says ``failed``, the error masks the phone), and a
    blind redrive does not send it either."""
    world.sandbox.faults(
        "whatsapp", "POST /{version}/{phone_number_id}/messages", script=[ProviderFault.reset()]
    )
    message_id = await world.replies.send(
        tenant=TENANT, channel=Channel.WHATSAPP, to=CONTACT, text="Hi!", key="k1"
    )
    await world.worker.run_until_idle()
    assert await world.jobs.dlq.list() == []
    (waiting,) = await world.all_jobs("replies.send")
    assert (waiting.state, waiting.attempts) == (JobState.QUEUED, 0)
    stored = await world.replies.get(message_id)
    assert stored is not None
    assert stored["status"] == "pending"
    assert stored["awaiting_since"] == stored["sending_since"]
    assert stored["correlation"] == correlation_for(message_id)
    world.clock.advance(599.0)  # within the window: it keeps waiting
    await world.worker.run_until_idle()
    assert await world.jobs.dlq.list() == []
    world.clock.advance(2.0)  # past it: nothing came back, a person decides
    await world.worker.run_until_idle()
    (dead,) = await world.jobs.dlq.list()
    assert dead.attempts == 1
    assert dead.last_error_code == "UPSTREAM_ERROR"
    assert CONTACT not in (dead.last_error or "")
    assert "Hi!" not in (dead.last_error or "")
    stored = await world.replies.get(message_id)
    assert stored is not None
    assert stored["status"] == "failed"
    assert stored["sending_since"] is not None  # to be reconciled: it may have gone out
    # a blind redrive does not send it either: the mark says it may have gone out
    await world.jobs.dlq.retry([dead.id])
    await world.worker.run_until_idle()
    job = await world.jobs.get(dead.id)
    assert job is not None
    assert job.state is JobState.DEAD
    assert world.effects("whatsapp") == []  # never sent blindly


async def test_a_reply_refused_with_a_graph_503_is_sent_once(world: World) -> None:
    """WhatsApp answering 503 with Graph's error body (``code 2``: not processed) is retried
    like any transient failure -- the job tries again after its back-off -- and the reply goes
    out once: the record holds its ``wamid``, no ``sending_since`` mark is left behind, and
    nothing reaches the dead-letter queue."""
    world.sandbox.faults(
        "whatsapp", "POST /{version}/{phone_number_id}/messages", script=[ProviderFault.error(503)]
    )
    message_id = await world.replies.send(
        tenant=TENANT, channel=Channel.WHATSAPP, to=CONTACT, text="Hi!", key="k2"
    )
    await world.worker.run_until_idle()
    assert world.effects("whatsapp") == []
    waiting = await world.replies.get(message_id)
    assert waiting is not None
    assert waiting["sending_since"] is None  # refused, not maybe-sent: a later run may send
    world.clock.advance(60.0)  # past the job's retry back-off
    await world.worker.run_until_idle()
    (sent,) = world.effects("whatsapp")
    stored = await world.replies.get(message_id)
    assert stored is not None
    assert stored["provider_message_id"] == sent.id
    assert stored["sending_since"] is None
    assert stored["status"] == "sent"
    assert await world.jobs.dlq.list() == []


async def test_graceful_reply_and_sessions_without_a_flow(world: World) -> None:
    """The graceful reply is the tenant's own when set, else its flow's; a tenant without a
    flow, a status event and a Shopify event are not the flow's business (``None``)."""
    assert world.sessions.graceful_reply(TENANT) == DEFAULT_FLOW.graceful_reply
    own = Tenant("b", graceful_reply="We'll be right with you.")
    assert world.sessions.graceful_reply(own) == "We'll be right with you."
    none = Tenant("c", flow=None)
    assert world.sessions.graceful_reply(none) == DEFAULT_GRACEFUL_REPLY
    assert await world.sessions.handle(none, world.event("Hello")) is None
    status = InboundEvent(Channel.WHATSAPP, "s1", EventKind.STATUS, PHONE_ID, sender=CONTACT)
    assert await world.sessions.handle(TENANT, status) is None


class _BrokenClassifier:
    """A classifier that always fails for good: the pipeline must answer gracefully."""

    async def classify(self, text: str) -> Any:
        raise PermanentError("the classifier is broken")


async def test_the_pipeline_answers_a_failure_with_the_flow_graceful_reply(
    tmp_path: Path, clock: FakeClock, sandbox: ProviderSandbox, providers: Providers
) -> None:
    """When processing a message fails for good, the ``inbound.process`` job answers the
    contact with the graceful reply of the tenant's flow (the tenant sets none of its own),
    sent once through the WhatsApp simulator; a tenant's own text wins over the flow's."""
    flow_text = "Sorry -- the bakery team will call you back today."
    flow = dataclasses.replace(DEFAULT_FLOW, graceful_reply=flow_text)
    world = build(tmp_path, clock, sandbox, providers, flows={"intake": flow})
    job, pipeline = await process_once(world, providers, _BrokenClassifier(), "Hello")
    assert job.state is JobState.SUCCEEDED
    assert job.result is not None
    assert (job.result["status"], job.result["graceful"]) == ("replied", True)
    (sent,) = world.effects("whatsapp")
    assert sent.data["to"] == CONTACT
    assert sent.data["text"]["body"] == flow_text
    own = Tenant("b", graceful_reply="We'll be right with you.")
    assert pipeline.graceful_reply(own) == "We'll be right with you."


async def test_list_get_and_reset(world: World) -> None:
    """``list`` masks the phone and leaves the answers out; ``reset`` starts the contact over
    in a new round, whose integration jobs get new keys."""
    await world.complete()
    await world.say("Hi", sender="15551234567")
    listed = await world.sessions.list(TENANT.id)
    assert len(listed) == 2
    assert all("\u2022" in item["phone"] for item in listed)
    assert {tuple(item["fields"]) for item in listed} == {
        ("contact_time", "email", "name", "need"),
        (),
    }
    assert CONTACT not in json.dumps(listed)
    assert len(await world.sessions.list(status="completed")) == 1
    assert len(await world.sessions.list(limit=1)) == 1

    key = Sessions.key_for(TENANT.id, CONTACT)
    assert await world.sessions.reset(key)
    assert not await world.sessions.reset(Sessions.key_for(TENANT.id, "1"))
    record = await world.record()
    assert (record["progress_status"], record["round"], record["fields"]) == ("new", 1, {})
    await world.complete()
    record = await world.record()
    assert record["round"] == 2
    keys = sorted(j.idempotency_key or "" for j in await world.all_jobs("sessions.slack_message"))
    assert keys == [f"sessions.slack_message:{key}:1", f"sessions.slack_message:{key}:2"]


async def test_integrations_that_do_not_apply_are_skipped(
    tmp_path: Path, clock: FakeClock, sandbox: ProviderSandbox, providers: Providers
) -> None:
    """No owner email: no summary email; a feature flag switched off: no Slack post. Their
    flags say ``skipped`` and no job is enqueued for them."""
    world = build(
        tmp_path,
        clock,
        sandbox,
        providers,
        tenant=Tenant("acme", whatsapp_phone_number_id=PHONE_ID),
        with_flags=True,
    )
    async with world.jobs:
        assert world.sessions.flags is not None
        await world.sessions.flags.set("slack_notify", False)
        await world.complete()
        await world.worker.run_until_idle()
        record = await world.record()
        assert (record["email_status"], record["slack_status"]) == ("skipped", "skipped")
        assert (record["shopify_status"], record["hubspot_status"]) == ("sent", "sent")
        assert sorted(j.name for j in await world.all_jobs()) == [
            "sessions.hubspot_contact",
            "sessions.shopify_customer",
        ]
        world.clock.advance(3600)
        assert (await world.sessions.sweep()).enqueued == 0
        assert world.effects("slack") == []
        assert world.effects("resend") == []


async def test_an_integration_whose_provider_is_not_configured_is_skipped(
    tmp_path: Path,
    clock: FakeClock,
    sandbox: ProviderSandbox,
    providers: Providers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the connectors registry and no Slack webhook configured, a completed session's
    ``slack_status`` says ``skipped`` -- no job is enqueued, none dies with CONFIGURATION --
    while the configured providers run as usual; the sweep enqueues nothing for it later."""
    monkeypatch.delenv(SLACK_WEBHOOK_URL_ENV, raising=False)
    registry = Connectors(
        instances={
            "whatsapp": providers.whatsapp,
            "twilio": providers.twilio,
            "resend": providers.resend,
            "shopify": providers.shopify,
            "hubspot": providers.hubspot,
        },
        clock=clock,
    )
    assert not registry.configured("slack")
    world = build(tmp_path, clock, sandbox, cast(Providers, registry))
    async with world.jobs:
        await world.complete()
        await world.worker.run_until_idle()
        record = await world.record()
        assert record["slack_status"] == "skipped"
        assert {record[f"{i}_status"] for i in ("email", "shopify", "hubspot")} == {"sent"}
        assert "notify_slack" not in record["jobs"]
        assert "sessions.slack_message" not in {j.name for j in await world.all_jobs()}
        assert await world.jobs.dlq.list() == []
        world.clock.advance(3600)
        assert (await world.sessions.sweep()).enqueued == 0
    await registry.aclose()


def test_schedules_are_declared_on_the_jobs(world: World) -> None:
    """The nudge runs every 15 minutes and the sweep every 10, as periodic jobs of the queue."""
    assert world.sessions.nudge_schedule.name == "sessions.nudge"
    assert world.sessions.nudge_schedule.expression == "*/15 * * * *"
    assert world.sessions.sweep_schedule.name == "sessions.sweep"
    assert world.sessions.sweep_schedule.expression == "*/10 * * * *"
    assert {"sessions.nudge", "sessions.sweep", "replies.send"} <= set(world.jobs.registry)


def _hold_job_inserts(database: Path, *, on: bool) -> None:
    """Make every INSERT into the job table fail (a database trigger), or stop doing so: the
    enqueue of the completion's jobs fails inside the database, where a crash would cut it."""
    import sqlite3

    conn = sqlite3.connect(database)
    try:
        if on:
            conn.execute(
                "CREATE TRIGGER hold_jobs BEFORE INSERT ON antifragile_jobs "
                "BEGIN SELECT RAISE(ABORT, 'job inserts are held up'); END"
            )
        else:
            conn.execute("DROP TRIGGER hold_jobs")
        conn.commit()
    finally:
        conn.close()


async def test_a_completion_whose_jobs_cannot_be_enqueued_is_not_recorded_and_its_replay_enqueues(
    tmp_path: Path, world: World
) -> None:
    """The last answer is stored and the session completed in the same transaction as the
    enqueue of its action jobs: when the enqueue fails (job inserts held up in the database),
    the turn fails and nothing of it is kept -- no session completed without jobs. The replay
    of the same event (the ``inbound.process`` job's retry) completes the session and enqueues
    the four jobs, with no sweep."""
    await world.say("Hello")
    for answer in ANSWERS[:-1]:
        await world.say(answer)
    last = world.event(ANSWERS[-1])
    _hold_job_inserts(tmp_path / "sessions.db", on=True)
    with pytest.raises(Exception, match="held up"):
        await world.sessions.handle(TENANT, last)
    record = await world.record()
    assert record["progress_status"] == "in_progress"
    assert await world.all_jobs() == []

    _hold_job_inserts(tmp_path / "sessions.db", on=False)
    turn = await world.sessions.handle(TENANT, last)  # the replay
    assert turn is not None
    assert turn.completed
    record = await world.record()
    assert record["progress_status"] == "completed"
    assert sorted(j.name for j in await world.all_jobs()) == [
        "sessions.hubspot_contact",
        "sessions.shopify_customer",
        "sessions.slack_message",
        "sessions.summary_email",
    ]
    await world.worker.run_until_idle()
    assert len(world.effects("hubspot")) == 1


async def test_a_turn_is_written_with_its_reply_or_not_at_all(tmp_path: Path, world: World) -> None:
    """With a reply key, a turn and its reply -- the stored message, its correlation index and
    its send job -- are one transaction: when the job cannot be inserted, neither the session
    nor the message is kept. The replay writes both; handling the event once more writes
    nothing, and the customer gets one message."""
    first = world.event("Hello")
    message_id = Replies.message_id(TENANT.id, "reply:first")
    kv = _queue_kv(world.jobs)
    _hold_job_inserts(tmp_path / "sessions.db", on=True)
    with pytest.raises(Exception, match="held up"):
        await world.sessions.handle(TENANT, first, reply_key="reply:first")
    assert await world.sessions.get(Sessions.key_for(TENANT.id, CONTACT)) is None
    assert await world.replies.get(message_id) is None
    assert await kv.scan("outref:", now=world.clock.time()) == []
    assert await world.all_jobs() == []

    _hold_job_inserts(tmp_path / "sessions.db", on=False)
    turn = await world.sessions.handle(TENANT, first, reply_key="reply:first")  # the replay
    assert turn is not None
    assert turn.reply_message == message_id
    record = await world.record()
    assert (record["progress_status"], record["step"]) == ("in_progress", 0)
    stored = await world.replies.get(message_id)
    assert stored is not None
    assert (stored["text"], stored["status"]) == (turn.reply, "pending")
    assert len(await kv.scan("outref:", now=world.clock.time())) == 1
    (job,) = await world.all_jobs("replies.send")
    assert job.idempotency_key == "reply:first"

    again = await world.sessions.handle(TENANT, first, reply_key="reply:first")
    assert again is not None
    assert (again.reply, again.reply_message) == (turn.reply, None)  # answered before
    assert len(await world.all_jobs("replies.send")) == 1
    await world.worker.run_until_idle()
    assert len(world.effects("whatsapp")) == 1
    assert (await world.replies.get(message_id) or {}).get("status") == "sent"


async def test_an_integration_is_one_action_registration(
    tmp_path: Path, clock: FakeClock, sandbox: ProviderSandbox, providers: Providers
) -> None:
    """A user's action, registered once with its status flag, feature flag, job name, check
    and unknown-outcome policy and named in a flow's ``on_complete``, runs on completion as
    its own durable job (payload: the session key) beside a built-in one, with nothing in
    the sessions naming it. It sees the contact as the session knows it; an error it raises
    reaches the dead-letter queue with the contact's answers and phone masked, and its flag
    says ``failed``. A flow naming an action no one registered fails ``declare()``."""
    actions = Actions(cast(Connectors, providers), tenants={TENANT.id: TENANT})
    seen: list[tuple[str | None, str, str]] = []

    @actions.action(
        "create_lead",
        flag="lead_status",
        feature="lead_sync",
        job="crm.lead",
        applies=lambda tenant, contact: contact.email is not None,
        on_unknown="reconcile",
    )
    async def create_lead(ctx: ActionContext) -> None:
        seen.append((ctx.contact.email, ctx.idempotency_key, ctx.source))
        raise InvalidRequestError(f"refused {ctx.contact.email} / {ctx.contact.e164}")

    assert actions.registry["create_lead"].on_unknown == "reconcile"
    flow = dataclasses.replace(DEFAULT_FLOW, on_complete=("create_lead", "notify_slack"))
    world = build(tmp_path, clock, sandbox, providers, flows={"intake": flow}, actions=actions)
    assert set(world.sessions.declare()) == {"create_lead", "notify_slack"}
    async with world.jobs:
        turn = await world.complete()
        key = turn.session_key
        record = await world.record()
        assert (record["lead_status"], record["slack_status"]) == ("pending", "pending")
        assert "email_status" not in record
        (lead,) = await world.all_jobs("crm.lead")
        assert (lead.queue, lead.payload) == ("integrations", {"session_key": key})
        assert lead.idempotency_key == f"crm.lead:{key}:1"
        await world.worker.run_until_idle()
        record = await world.record()
        assert (record["lead_status"], record["slack_status"]) == ("failed", "sent")
        assert seen == [("ada@example.com", f"crm.lead:{key}:1", f"session:{key}")]
        (dead,) = await world.jobs.dlq.list()
        for personal in ("ada@example.com", CONTACT):
            assert personal not in (dead.last_error or "")
        assert "a•••@example.com" in (dead.last_error or "")
        assert len(world.effects("slack")) == 1

    broken = dataclasses.replace(DEFAULT_FLOW, on_complete=("no_such_action",))
    other = build(tmp_path, clock, sandbox, providers, flows={"intake": broken}, name="b.db")
    with pytest.raises(ConfigurationError, match="no_such_action"):
        other.sessions.declare()


async def test_on_postgres_a_held_up_job_insert_keeps_the_session_as_it_was(
    postgres_url: str, clock: FakeClock, sandbox: ProviderSandbox, providers: Providers
) -> None:
    """The same on PostgreSQL: while job inserts are refused (a trigger), the completing
    answer fails and the session stays in progress with no job; once they are accepted, the
    replay of the answer completes the session with its four jobs in one transaction."""
    import psycopg

    from antifragile.jobs._postgres import PostgresJobQueue
    from antifragile.stores._postgres import PostgresStore

    schema = f"sessions_{new_job_id()[-12:]}"
    store = PostgresStore(postgres_url, schema=schema, clock=clock, drop_schema_on_close=True)
    await store.open()
    try:
        jobs = Jobs(queue=PostgresJobQueue(store), clock=clock)
        replies = Replies(jobs, providers)
        sessions = Sessions(
            jobs, providers, {"intake": DEFAULT_FLOW}, tenants={TENANT.id: TENANT}, replies=replies
        )
        world = World(clock, sandbox, jobs, replies, sessions, jobs.worker(concurrency=4))
        async with jobs:
            await world.say("Hello")
            for answer in ANSWERS[:-1]:
                await world.say(answer)
            last = world.event(ANSWERS[-1])
            table = f'"{schema}".antifragile_jobs'
            async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as c:
                await c.execute(
                    f'CREATE FUNCTION "{schema}".hold() RETURNS trigger LANGUAGE plpgsql AS $$ '
                    "BEGIN RAISE EXCEPTION 'job inserts are held up'; END $$"
                )
                await c.execute(
                    f"CREATE TRIGGER hold BEFORE INSERT ON {table} "
                    f'FOR EACH ROW EXECUTE FUNCTION "{schema}".hold()'
                )
                with pytest.raises(Exception, match="held up"):
                    await sessions.handle(TENANT, last)
                assert (await world.record())["progress_status"] == "in_progress"
                assert await world.all_jobs() == []
                await c.execute(f"DROP TRIGGER hold ON {table}")
            turn = await sessions.handle(TENANT, last)
            assert turn is not None
            assert turn.completed
            record = await world.record()
            assert record["progress_status"] == "completed"
            assert {record[f"{i}_status"] for i in ("email", "shopify", "hubspot", "slack")} == {
                "pending"
            }
            assert sorted(record["jobs"].values()) == sorted(j.id for j in await world.all_jobs())
            assert len(record["jobs"]) == 4
    finally:
        await store.close()


async def test_a_worker_killed_inside_the_completion_leaves_no_completed_session_without_jobs(
    postgres_url: str, clock: FakeClock, sandbox: ProviderSandbox, providers: Providers
) -> None:
    """The crash itself, on PostgreSQL: a process handling the completing answer is killed
    (SIGKILL) while its transaction is held up in the job insert (a trigger sleeping), and
    the server ends its session. Nothing of the turn is kept -- not a session completed with
    no job, no dead letter and nothing to show for it, which is what a crash between the
    completion write and the enqueue used to leave, and which the replay of the message then
    took for handled. The replay (the message's processing retried) completes the session
    with its four jobs."""
    import psycopg

    from antifragile.jobs._postgres import PostgresJobQueue
    from antifragile.stores._postgres import PostgresStore

    schema = f"crash_{new_job_id()[-12:]}"
    store = PostgresStore(postgres_url, schema=schema, clock=clock, drop_schema_on_close=True)
    await store.open()
    try:
        jobs = Jobs(queue=PostgresJobQueue(store), clock=clock)
        replies = Replies(jobs, providers)
        sessions = Sessions(
            jobs, providers, {"intake": DEFAULT_FLOW}, tenants={TENANT.id: TENANT}, replies=replies
        )
        world = World(clock, sandbox, jobs, replies, sessions, jobs.worker(concurrency=4))
        async with jobs:
            await world.say("Hello")
            for answer in ANSWERS[:-1]:
                await world.say(answer)
            last = world.event(ANSWERS[-1])
            table = f'"{schema}".antifragile_jobs'
            async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as c:
                await c.execute(
                    f'CREATE FUNCTION "{schema}".hold() RETURNS trigger LANGUAGE plpgsql AS $$ '
                    "BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$"
                )
                await c.execute(
                    f"CREATE TRIGGER hold BEFORE INSERT ON {table} "
                    f'FOR EACH ROW EXECUTE FUNCTION "{schema}".hold()'
                )
                child = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests.integration._session_turn",
                    postgres_url,
                    schema,
                    str(clock.monotonic()),
                    CONTACT,
                    last.event_id,
                    ANSWERS[-1],
                    cwd=ROOT,
                    stderr=asyncio.subprocess.PIPE,
                )
                held: list[Any] = []
                for _ in range(600):  # until the child's job insert sleeps in the trigger
                    cursor = await c.execute(
                        "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                        "AND position(%s in query) > 0",
                        (f'"{schema}"',),
                    )
                    held = await cursor.fetchall()
                    if held or child.returncode is not None:
                        break
                    await asyncio.sleep(0.05)
                if not held:
                    if child.returncode is None:
                        child.kill()
                    _, err = await child.communicate()
                    pytest.fail(f"the child never reached the job insert: {err.decode()[-2000:]}")
                child.kill()
                await child.wait()
                await c.execute("SELECT pg_terminate_backend(%s)", (held[0][0],))
                await c.execute(f"DROP TRIGGER hold ON {table}")
            record = await world.record()
            assert record["progress_status"] == "in_progress"
            assert record["step"] == len(ANSWERS) - 1
            assert await world.all_jobs() == []

            turn = await sessions.handle(TENANT, last)  # the replay
            assert turn is not None
            assert turn.completed
            record = await world.record()
            assert record["progress_status"] == "completed"
            assert len(await world.all_jobs()) == len(record["jobs"]) == 4
    finally:
        await store.close()


async def test_a_slack_ping_whose_outcome_is_unknown_is_posted_again_and_says_so(
    world: World,
) -> None:
    """``notify_slack`` declares ``on_unknown=resend`` (an internal ping, and Slack's incoming
    webhooks offer no lookup): a post whose answer is lost after Slack acted leaves its
    ``sending`` mark, the job is retried rather than dead-lettered, and the next run posts again
    -- the declared policy -- with the result saying it may repeat the first (the time of the
    run that stopped mid-call); the mark is gone once the outcome is known."""
    world.sandbox.faults(
        "slack", "POST /services/{team}/{bot}/{secret}", script=[ProviderFault.ambiguous()]
    )
    await world.complete()
    await world.worker.run_until_idle()
    (job,) = await world.all_jobs("sessions.slack_message")
    assert job.state is JobState.RETRYING
    assert job.idempotency_key is not None
    kv = _queue_kv(world.jobs)
    mark = await kv.get(f"sending:{job.idempotency_key}", now=world.clock.time())
    assert mark is not None
    started = mark.value["since"]
    world.clock.advance(3600.0)
    await world.worker.run_until_idle()
    (job,) = await world.all_jobs("sessions.slack_message")
    assert job.state is JobState.SUCCEEDED
    assert job.result["repeat_of_unknown"] == started
    assert len(world.effects("slack")) == 2  # resend is the declared policy for this ping
    assert await kv.get(f"sending:{job.idempotency_key}", now=world.clock.time()) is None
    assert await world.jobs.dlq.list() == []


async def test_a_twilio_reply_whose_worker_died_mid_call_is_found_in_the_message_log(
    world: World,
) -> None:
    """A worker killed after Twilio created the message leaves the reply's ``sending`` mark:
    the next run does not send; it awaits the status callback, and with none within Twilio's
    10-minute window it finds the message in Twilio's log -- the reply is settled as sent with
    that sid, and Twilio holds one message, not two."""
    message_id = await world.replies.send(
        tenant=TENANT, channel=Channel.TWILIO, to="+447700900123", text="Booked!", key="tw-1"
    )
    # what the killed run did: the mark, then Twilio's side of the call
    kv = _queue_kv(world.jobs)
    await kv.merge(
        f"outmsg:{message_id}", {"sending_since": world.clock.time()}, now=world.clock.time()
    )
    async with TwilioConnector(
        TWILIO_SID, TWILIO_TOKEN, base_url=world.sandbox.base_url("twilio")
    ) as direct:
        sent = await direct.send_message("+447700900123", "Booked!", TENANT.twilio_number)
    await world.worker.run_until_idle()
    (job,) = await world.all_jobs("replies.send")
    assert (job.state, job.attempts) == (JobState.QUEUED, 0)
    world.clock.advance(601.0)
    await world.worker.run_until_idle()
    (job,) = await world.all_jobs("replies.send")
    assert job.state is JobState.SUCCEEDED
    stored = await world.replies.get(message_id)
    assert stored is not None
    assert (stored["status"], stored["provider_message_id"]) == ("sent", sent.sid)
    assert len(world.effects("twilio")) == 1


async def test_summary_emails_fail_over_to_sendgrid_while_resend_is_down(
    tmp_path: Path,
    clock: FakeClock,
    sandbox: ProviderSandbox,
    providers: Providers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``ANTIFRAGILE_EMAIL_CHAIN=resend,sendgrid``, intakes completed while Resend answers
    503 get their summary from SendGrid -- the worker does not hold the jobs back for Resend's
    open breaker -- and those after its recovery from Resend again: every summary once, every
    ``email_status`` sent, nothing dead."""
    monkeypatch.setenv("ANTIFRAGILE_EMAIL_CHAIN", "resend,sendgrid")
    resend_policy = Policy(
        "resend",
        timeout=5.0,
        retry=Retry(attempts=1),
        breaker=CircuitBreaker("resend", minimum_calls=2, window=4, open_duration=60.0),
        budget=None,
        clock=clock,
    )
    with ProviderSandbox([SendGridSimulator(api_keys=["SG.test"])]) as sendgrid:
        registry = Connectors(
            instances={
                "whatsapp": providers.whatsapp,
                "twilio": providers.twilio,
                "shopify": providers.shopify,
                "hubspot": providers.hubspot,
                "slack": providers.slack,
            },
            base_urls={
                "resend": sandbox.base_url("resend"),
                "sendgrid": sendgrid.base_url("sendgrid"),
            },
            options={"resend": {"api_key": RESEND_KEY}, "sendgrid": {"api_key": "SG.test"}},
            policies={"resend": resend_policy, "sendgrid": no_retry("sendgrid", clock)},
            clock=clock,
        )
        world = build(tmp_path, clock, sandbox, cast(Providers, registry))
        senders = [f"1555000{i:04d}" for i in range(12)]
        async with world.jobs, registry:
            for i, sender in enumerate(senders):
                if i == 4:
                    sandbox.faults(
                        "resend", "POST /emails", chaos=[(1.0, ProviderFault.error(503))]
                    )
                if i == 8:
                    sandbox.clear_faults("resend")
                    clock.advance(61)  # Resend's breaker may probe again
                await world.complete(sender=sender)
                await world.worker.run_until_idle()
            records = [await world.record(sender) for sender in senders]
            assert {r["email_status"] for r in records} == {"sent"}
            assert await world.jobs.dlq.list() == []
        by_provider = [r["summary_email_provider"] for r in records]
        assert by_provider[:4] == ["resend"] * 4
        assert set(by_provider[4:8]) == {"sendgrid"}
        assert by_provider[8:] == ["resend"] * 4
        assert len(sandbox.effects("resend")) + len(sendgrid.effects("sendgrid")) == 12


async def test_an_unknown_summary_send_defers_its_job_until_settled(
    tmp_path: Path,
    clock: FakeClock,
    sandbox: ProviderSandbox,
    providers: Providers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Resend keeps the summary and the answer is lost: the job is deferred (no attempt
    counted, nothing dead) rather than sent elsewhere; once Resend answers, the job's next run
    settles it under the same key -- one email, ``email_status`` sent."""
    monkeypatch.setenv("ANTIFRAGILE_EMAIL_CHAIN", "resend,sendgrid")
    with ProviderSandbox([SendGridSimulator(api_keys=["SG.test"])]) as sendgrid:
        registry = Connectors(
            instances={"resend": providers.resend, "slack": providers.slack},
            base_urls={"sendgrid": sendgrid.base_url("sendgrid")},
            options={"sendgrid": {"api_key": "SG.test"}},
            clock=clock,
        )
        world = build(tmp_path, clock, sandbox, cast(Providers, registry))
        async with world.jobs, registry:
            sandbox.faults("resend", "POST /emails", script=[ProviderFault.ambiguous()] * 3)
            await world.complete()
            await world.worker.run_until_idle()
            [job] = await world.all_jobs("sessions.summary_email")
            assert (job.state.value, job.attempts) == ("queued", 0)  # deferred: no attempt
            assert (await world.record())["email_status"] != "sent"
            for _ in range(4):
                clock.advance(31)
                await world.worker.run_until_idle()
            assert (await world.record())["email_status"] == "sent"
            assert await world.jobs.dlq.list() == []
        assert len(sandbox.effects("resend")) == 1
        assert sendgrid.effects("sendgrid") == []


K1, K2 = "session-key-one-8c1f3e5a7b9d2f4e6a8c0e2f", "session-key-two-1b3d5f7a9c2e4f6b8d0a2c4e"


def _hmac_key(key: str, digits: str = CONTACT) -> str:
    digest = hmac.new(key.encode(), f"session\x00{digits}".encode(), hashlib.sha256).hexdigest()
    return f"session:{TENANT.id}:{digest[:24]}"


async def test_session_keys_are_keyed_with_the_data_key_and_move_on_rotation(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a data key a session's key is a plain SHA-256 of the number (guessable); with
    one, an HMAC under it. A session written before the key -- or under a key since rotated
    behind a new one -- is found by the next message (the conversation goes on where it was)
    and moved to the current key: the old key is gone."""
    unkeyed = f"session:{TENANT.id}:{hashlib.sha256(CONTACT.encode()).hexdigest()[:24]}"
    kv = world.jobs.queue.store.kv
    monkeypatch.delenv("ANTIFRAGILE_DATA_KEYS", raising=False)
    assert Sessions.key_for(TENANT.id, CONTACT) == unkeyed
    assert (await world.say("Hello")).step == 0
    assert await kv.get(unkeyed, now=world.clock.time()) is not None

    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", K1)
    assert Sessions.keys_for(TENANT.id, CONTACT) == [_hmac_key(K1), unkeyed]
    turn = await world.say(ANSWERS[0])
    assert (turn.step, turn.session_key) == (1, _hmac_key(K1))  # the name was the answer
    assert await kv.get(unkeyed, now=world.clock.time()) is None
    moved = await world.sessions.get(_hmac_key(K1))
    assert moved is not None
    assert (moved.key, moved.phone, dict(moved.fields)) == (
        _hmac_key(K1),
        CONTACT,
        {"name": ANSWERS[0]},
    )

    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", f"{K2},{K1}")  # rotated: the new key first
    assert Sessions.keys_for(TENANT.id, CONTACT) == [_hmac_key(K2), _hmac_key(K1), unkeyed]
    turn = await world.say(ANSWERS[1])
    assert (turn.step, turn.session_key) == (2, _hmac_key(K2))
    assert await kv.get(_hmac_key(K1), now=world.clock.time()) is None
    assert [e.key for e in await kv.scan("session:", now=world.clock.time())] == [_hmac_key(K2)]


async def test_a_session_whose_action_jobs_are_pending_stays_at_its_key_until_they_finish(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The jobs of a completed session's actions name its key: while any is pending, a
    message after a rotation finds the session where it is and leaves it there; once they
    have run, the next message moves it."""
    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", K1)
    await world.complete()
    record = await world.sessions.get(_hmac_key(K1))
    assert record is not None
    assert "pending" in record.flags.values()

    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", f"{K2},{K1}")
    assert await world.sessions.handle(TENANT, world.event("Thanks!")) is None  # completed
    kv = world.jobs.queue.store.kv
    assert await kv.get(_hmac_key(K1), now=world.clock.time()) is not None
    assert await kv.get(_hmac_key(K2), now=world.clock.time()) is None

    await world.worker.run_until_idle()
    done = await world.sessions.get(_hmac_key(K1))
    assert done is not None
    assert set(done.flags.values()) <= {"sent", "skipped"}
    await world.sessions.handle(TENANT, world.event("Thanks again"))
    assert await kv.get(_hmac_key(K1), now=world.clock.time()) is None
    found = await world.sessions.get(_hmac_key(K2))
    assert found is not None
    assert found.progress_status == "completed"
