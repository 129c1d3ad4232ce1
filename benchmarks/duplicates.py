"""Duplicate effects per provider, through durable jobs, under ambiguous failures.

For each provider, ``--operations`` durable jobs (500 by default) each perform one operation --
send an email, create a customer or a contact, send a message, post to Slack, book a call or an
appointment --
through the provider's connector with its **default policy**, against the provider's simulator
in a :class:`~antifragile.sandbox.ProviderSandbox` (real HTTP on loopback; SMTP through
:class:`~antifragile.sandbox.SMTPSandbox`). The jobs run on a real SQLite job queue worked by a
:class:`~antifragile.jobs.Worker` (20 at a time). Every request to the operation's endpoint
draws a fault:

* 30% **ambiguous** -- the provider acts (the effect is recorded), then the connection is reset
  before the answer arrives;
* 10% **5xx** -- the provider answers 503 (500 for Shopify) without acting (for SMTP: ``451``);
* 60% a normal answer.

Two strategies are measured for the providers without an idempotency key:

* ``default`` -- the connector as shipped: what it cannot prove unsent is never sent again;
  it is reconciled where the provider allows a lookup (Twilio's message log), otherwise the
  job stops with :class:`~antifragile.connectors.OutcomeUnknownError` and lands in the
  dead-letter queue, *marked for review* (not lost: it carries the key to reconcile with);
* ``blind_resend`` -- the naive job: it treats an unknown outcome like any failure and sends
  again on its next attempt (Twilio's reconciliation switched off).

With ``--status-webhooks``, a third strategy runs for the providers whose status webhooks echo a
send's correlation (WhatsApp, Twilio, SendGrid, Cal.com):

* ``echo`` -- the sandbox posts the provider's signed status webhooks (with their retries) to the
  service, served by uvicorn on the same SQLite file; the job sends through
  :meth:`~antifragile.inbound.Echoes.send_once`, so an unknown outcome defers the job (no
  attempt spent) until the status carrying its correlation settles it; nothing within the
  provider's window (10 minutes of the jobs' clock) would go to review.

Resend, Shopify and HubSpot have an idempotency key or a natural key, and Acuity's connector
looks an appointment up before it books again (by email and time); only ``default`` runs for
them. Calendly is not measured here: a single-use link is safe to make again by design (an
orphan link books nothing), and its one effect that counts -- the booking -- is the customer's.
The sandbox's effect record is the ground truth: ``effects`` counts the effects recorded,
``duplicates`` the effects beyond the first of an operation, ``review`` the jobs dead-lettered
with an unknown outcome (``review_sent``: of those, how many had in fact taken effect),
``other_dead`` the jobs dead for another reason, ``lost`` the operations with neither an effect
nor a review entry (always 0: nothing is lost silently).

Results go to ``benchmarks/results/duplicates.json`` and a table to ``duplicates.md``
(``duplicates-quick.*`` with ``--quick``)::

    python benchmarks/duplicates.py                  # 500 operations per provider and strategy
    python benchmarks/duplicates.py --quick          # 100 operations, a smoke run
    python benchmarks/duplicates.py --only twilio --only slack
    python benchmarks/duplicates.py --status-webhooks   # echo: duplicates-webhooks.*

``tests/integration/test_duplicates.py`` runs the same scenarios (:func:`measure`) and asserts
on them.
"""

from __future__ import annotations

import os
import sys

# Run as a script, this folder leads sys.path, and its ``queue.py`` would shadow the standard
# library's ``queue`` (which the thread pools below import): drop the folder first.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import contextlib
import json
import logging
import platform
import random
import re
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import uvicorn

from antifragile import FakeClock, Retry, TransientError
from antifragile.connectors import (
    AcuityConnector,
    CalComConnector,
    HubSpotConnector,
    MailchimpConnector,
    MandrillConnector,
    OutcomeUnknownError,
    ResendConnector,
    SendGridConnector,
    ShopifyConnector,
    SlackConnector,
    SMTPConnector,
    TwilioConnector,
    WhatsAppConnector,
)
from antifragile.inbound import Echoes
from antifragile.jobs import JobContext, JobFilter, Jobs, JobState, Worker
from antifragile.policies import Constant
from antifragile.sandbox import (
    AcuitySimulator,
    CalComSimulator,
    Effect,
    HubSpotSimulator,
    MailchimpSimulator,
    MandrillSimulator,
    ProviderFault,
    ProviderSandbox,
    ResendSimulator,
    SendGridSimulator,
    ShopifySimulator,
    Simulator,
    SlackSimulator,
    SMTPSandbox,
    TwilioSimulator,
    WhatsAppSimulator,
)
from antifragile.sandbox._smtp import SMTPFault
from antifragile.service import Settings, create_app
from antifragile.service._assistant import Assistant

RESULTS = Path(__file__).parent / "results"

Strategy = Literal["default", "blind_resend", "echo"]

#: every provider measured, in the order of the report
PROVIDERS: tuple[str, ...] = (
    "resend",
    "shopify",
    "hubspot",
    "whatsapp",
    "twilio",
    "slack",
    "sendgrid",
    "smtp",
    "calcom",
    "mandrill",
    "mailchimp",
    "acuity",
)
#: providers whose connector replays safely (an idempotency key, or a natural key) -- or, for
#: Acuity, looks the effect up before any resend, which a job cannot switch off
IDEMPOTENT: frozenset[str] = frozenset({"resend", "shopify", "hubspot", "mailchimp", "acuity"})
STRATEGIES: tuple[Strategy, ...] = ("default", "blind_resend")
#: providers whose status webhooks echo a send's correlation (measured ``--status-webhooks``)
ECHOING: tuple[str, ...] = ("whatsapp", "twilio", "sendgrid", "calcom", "mandrill")

#: the endpoint whose requests draw the faults and whose effects are counted
ENDPOINTS: dict[str, str] = {
    "resend": "POST /emails",
    "shopify": "POST /admin/api/{version}/customers.json",
    "hubspot": "POST /crm/v3/objects/contacts",
    "whatsapp": "POST /{version}/{phone_number_id}/messages",
    "twilio": "POST /2010-04-01/Accounts/{AccountSid}/Messages.json",
    "slack": "POST /services/{team}/{bot}/{secret}",
    "sendgrid": "POST /v3/mail/send",
    "smtp": "DATA",
    "calcom": "POST /v2/bookings",
    "mandrill": "POST /messages/send",
    "mailchimp": "PUT /lists/{list_id}/members/{subscriber_hash}",
    "acuity": "POST /appointments",
}

_TOKENS = {
    "resend": "re_test_key",
    "shopify": "shpat_test_token",
    "hubspot": "pat-na1-test-token",
    "whatsapp": "EAAG-test-token",
    "twilio": "test-auth-token",
    "sendgrid": "SG.test-key",
    "calcom": "cal_test_key",
    "mandrill": "md-test-key",
    "mailchimp": "0123456789abcdef-us21",
    "acuity": "acuity-test-key",
}
_TWILIO_SID = "AC" + "0123456789abcdef" * 2
_WHATSAPP_PHONE = "106540352242922"
_SLACK_HOOK = "T0001/B0001/sEcReTtOkEn1234"
_SMTP_USERS = {"app": "s3cret"}
_WHATSAPP_SECRET = "bench-app-secret"
_CALCOM_SECRET = "bench-cal-secret"
_MANDRILL_KEY = "bench-mandrill-key"
_AUDIENCE = "bench-list"
_T0 = datetime(2027, 1, 4, 9, 0, tzinfo=UTC)
#: the prefix of the key whose correlation a provider's send carries (the connector's own)
_REFERENCES = {"sendgrid": "send-email/", "calcom": "create-booking/", "mandrill": "send-email/"}
_OP = re.compile(r"op-(\d+)(?!\d)")


@dataclass(frozen=True, slots=True)
class Figures:
    """What one provider and strategy did with ``operations`` durable jobs (module docs)."""

    provider: str
    strategy: str
    operations: int
    effects: int
    delivered: int
    duplicates: int
    succeeded: int
    review: int
    review_sent: int
    other_dead: int
    lost: int
    requests: int | None
    faults_ambiguous: int | None
    seconds: float

    @property
    def duplicate_rate(self) -> float:
        return self.duplicates / self.operations if self.operations else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duplicate_rate": round(self.duplicate_rate, 4)}


Operation = Callable[[JobContext, int], Awaitable[object]]


@dataclass(slots=True)
class _Target:
    operation: Operation
    effects: Callable[[], list[Effect]]
    requests: Callable[[], int | None]
    ambiguous: Callable[[], int | None]
    clock: FakeClock
    sandbox: ProviderSandbox | None = None


def _http_faults(sandbox: ProviderSandbox, provider: str, seed: int, p: float, q: float) -> None:
    status = 500 if provider == "shopify" else 503
    chaos = [(p, ProviderFault.ambiguous()), (q, ProviderFault.error(status))]
    sandbox.faults(provider, ENDPOINTS[provider], chaos=chaos, seed=seed)


def _counted(
    sandbox: ProviderSandbox, provider: str
) -> tuple[Callable[[], int], Callable[[], int]]:
    prefix = f"/{provider}/"

    def requests() -> int:
        return sum(
            1 for r in sandbox.requests if r.path.startswith(prefix) and r.method in ("POST", "PUT")
        )

    def ambiguous() -> int:
        return sum(
            1
            for r in sandbox.requests
            if r.path.startswith(prefix) and r.method in ("POST", "PUT") and r.fault == "reset"
        )

    return requests, ambiguous


async def _target(
    provider: str,
    strategy: Strategy,
    stack: contextlib.AsyncExitStack,
    *,
    seed: int,
    ambiguous: float,
    errors: float,
    operations: int,
    service_url: str | None = None,
) -> _Target:
    """The sandbox, connector and operation of *provider*, opened on *stack*; with
    *service_url*, the sandbox posts its signed status webhooks to the service there."""
    clock = FakeClock()  # the connector's back-offs and limiter waits: never waited out
    if provider == "smtp":
        smtp = stack.enter_context(SMTPSandbox(users=_SMTP_USERS))
        rng = random.Random(seed)
        draws: list[SMTPFault | None] = []
        for _ in range(operations * 6):
            u = rng.random()
            draws.append(
                "ambiguous" if u < ambiguous else "tempfail" if u < ambiguous + errors else None
            )
        smtp.faults(draws)
        mailer = SMTPConnector(
            smtp.host,
            smtp.port,
            username="app",
            password=_SMTP_USERS["app"],
            clock=clock,
            timeout=2.0,
        )
        await stack.enter_async_context(mailer)

        async def mail(ctx: JobContext, n: int) -> object:
            return await mailer.send_email(
                sender="Shop <shop@example.com>",
                to="owner@example.com",
                subject=f"Order op-{n}",
                text=f"Order op-{n} is in.",
                idempotency_key=ctx.idempotency_key,
            )

        def smtp_ambiguous() -> int:
            return sum(1 for d in draws[: len(draws) - smtp.pending] if d == "ambiguous")

        return _Target(mail, smtp.effects, lambda: None, smtp_ambiguous, clock)

    simulators: dict[str, Callable[[], Simulator]] = {
        "resend": lambda: ResendSimulator(api_keys=[_TOKENS["resend"]], rate_limit=1_000_000),
        "shopify": lambda: ShopifySimulator(
            access_tokens=[_TOKENS["shopify"]], bucket_size=1_000_000
        ),
        "hubspot": lambda: HubSpotSimulator(tokens=[_TOKENS["hubspot"]], burst=1_000_000),
        "whatsapp": lambda: WhatsAppSimulator(
            access_tokens=[_TOKENS["whatsapp"]],
            phone_number_ids=[_WHATSAPP_PHONE],
            throughput=1_000_000,
            app_secret=_WHATSAPP_SECRET,
        ),
        "twilio": lambda: TwilioSimulator(
            credentials={_TWILIO_SID: _TOKENS["twilio"]}, concurrency=1_000_000
        ),
        "slack": lambda: SlackSimulator(hooks=[_SLACK_HOOK], rate=1e9, burst=1e9),
        "sendgrid": lambda: SendGridSimulator(api_keys=[_TOKENS["sendgrid"]], rate_limit=1_000_000),
        "calcom": lambda: CalComSimulator(
            api_keys=[_TOKENS["calcom"]], rate_limit=1_000_000, webhook_secret=_CALCOM_SECRET
        ),
        "mandrill": lambda: MandrillSimulator(
            api_keys=[_TOKENS["mandrill"]], webhook_key=_MANDRILL_KEY
        ),
        "mailchimp": lambda: MailchimpSimulator(api_keys=[_TOKENS["mailchimp"]], lists=[_AUDIENCE]),
        # one time for every operation (each its own customer): enough slots for all of them
        "acuity": lambda: AcuitySimulator(
            api_key=_TOKENS["acuity"], rate_limit=1_000_000, slots=1_000_000
        ),
    }
    urls = {}
    if service_url is not None and provider != "twilio":  # Twilio: the StatusCallback URL
        urls[provider] = f"{service_url}/v1/webhooks/{provider}"
    timing: dict[str, Any] = (
        {"time_scale": 0.001, "webhook_interval": 0.001} if service_url is not None else {}
    )
    sandbox = stack.enter_context(
        ProviderSandbox([simulators[provider]()], webhook_urls=urls, **timing)
    )
    _http_faults(sandbox, provider, seed, ambiguous, errors)
    base = sandbox.base_url(provider)
    requests, ambiguous_count = _counted(sandbox, provider)

    def effects() -> list[Effect]:
        return sandbox.effects(provider, ENDPOINTS[provider])

    operation: Operation
    if provider == "resend":
        resend = await stack.enter_async_context(
            ResendConnector(_TOKENS["resend"], base_url=base, clock=clock, timeout=2.0)
        )

        async def operation(ctx: JobContext, n: int) -> object:
            return await resend.send_email(
                sender="Shop <shop@example.com>",
                to="owner@example.com",
                subject=f"Order op-{n}",
                text=f"Order op-{n} is in.",
                idempotency_key=ctx.idempotency_key,
            )

    elif provider == "shopify":
        shopify = await stack.enter_async_context(
            ShopifyConnector(  # REST: its customers endpoint is where faults and effects are
                _TOKENS["shopify"], base_url=base, clock=clock, timeout=2.0, api="rest"
            )
        )

        async def operation(ctx: JobContext, n: int) -> object:
            return await shopify.create_customer(email=f"op-{n}@example.com", first_name="Ada")

    elif provider == "hubspot":
        hubspot = await stack.enter_async_context(
            HubSpotConnector(_TOKENS["hubspot"], base_url=base, clock=clock, timeout=2.0)
        )

        async def operation(ctx: JobContext, n: int) -> object:
            return await hubspot.create_contact(f"op-{n}@example.com", {"firstname": "Ada"})

    elif provider == "whatsapp":
        whatsapp = await stack.enter_async_context(
            WhatsAppConnector(
                _TOKENS["whatsapp"],
                phone_number_id=_WHATSAPP_PHONE,
                base_url=base,
                clock=clock,
                timeout=2.0,
            )
        )

        async def operation(ctx: JobContext, n: int) -> object:
            return await whatsapp.send_text(
                f"1555{n:07d}", f"Your order op-{n} has shipped.", reference=ctx.idempotency_key
            )

    elif provider == "twilio":
        twilio = await stack.enter_async_context(
            TwilioConnector(
                _TWILIO_SID,
                _TOKENS["twilio"],
                base_url=base,
                clock=clock,
                timeout=2.0,
                reconcile=strategy != "blind_resend",
                public_url=service_url,
            )
        )

        async def operation(ctx: JobContext, n: int) -> object:
            return await twilio.send_message(
                f"+1555{n:07d}",
                f"Your order op-{n} has shipped.",
                "+15551234567",
                reference=ctx.idempotency_key,
            )

    elif provider == "slack":
        slack = await stack.enter_async_context(
            SlackConnector(f"{base}/services/{_SLACK_HOOK}", clock=clock, timeout=2.0)
        )

        async def operation(ctx: JobContext, n: int) -> object:
            return await slack.post_message(f"Order op-{n} is in.", reference=ctx.idempotency_key)

    elif provider == "sendgrid":
        sendgrid = await stack.enter_async_context(
            SendGridConnector(_TOKENS["sendgrid"], base_url=base, clock=clock, timeout=2.0)
        )

        async def operation(ctx: JobContext, n: int) -> object:
            return await sendgrid.send_email(
                sender="shop@example.com",
                to="owner@example.com",
                subject=f"Order op-{n}",
                text=f"Order op-{n} is in.",
                idempotency_key=ctx.idempotency_key,
            )

    elif provider == "calcom":
        calcom = await stack.enter_async_context(
            CalComConnector(_TOKENS["calcom"], base_url=base, clock=clock, timeout=2.0)
        )

        async def operation(ctx: JobContext, n: int) -> object:
            return await calcom.create_booking(
                start=_T0 + timedelta(hours=n),
                event_type_id=1,
                attendee_name="Ada",
                attendee_email=f"op-{n}@example.com",
                attendee_time_zone="Europe/London",
                idempotency_key=ctx.idempotency_key,
            )

    elif provider == "mandrill":
        mandrill = await stack.enter_async_context(
            MandrillConnector(_TOKENS["mandrill"], base_url=base, clock=clock, timeout=2.0)
        )

        async def operation(ctx: JobContext, n: int) -> object:
            return await mandrill.send_email(
                sender="shop@example.com",
                to="owner@example.com",
                subject=f"Order op-{n}",
                text=f"Order op-{n} is in.",
                idempotency_key=ctx.idempotency_key,
            )

    elif provider == "mailchimp":
        mailchimp = await stack.enter_async_context(
            MailchimpConnector(
                _TOKENS["mailchimp"], base_url=base, list_id=_AUDIENCE, clock=clock, timeout=2.0
            )
        )

        async def operation(ctx: JobContext, n: int) -> object:
            return await mailchimp.upsert_member(
                f"op-{n}@example.com", merge_fields={"FNAME": "Ada"}
            )

    elif provider == "acuity":
        acuity = await stack.enter_async_context(
            AcuityConnector("1", _TOKENS["acuity"], base_url=base, clock=clock, timeout=2.0)
        )

        async def operation(ctx: JobContext, n: int) -> object:
            return await acuity.create_appointment(
                datetime="2027-01-05T09:00:00-0500",
                appointment_type_id=1,
                first_name="Ada",
                last_name="Lovelace",
                email=f"op-{n}@example.com",
                idempotency_key=ctx.idempotency_key,
            )

    else:
        raise ValueError(f"unknown provider {provider!r}; one of {PROVIDERS}")
    return _Target(operation, effects, requests, ambiguous_count, clock, sandbox)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class _QuietServer(uvicorn.Server):
    """uvicorn leaving the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _service(
    stack: contextlib.AsyncExitStack,
    jobs: Jobs,
    clock: FakeClock,
    sandbox: ProviderSandbox,
    provider: str,
    port: int,
    database: str,
) -> Echoes:
    """The service receiving *provider*'s status webhooks on *port* (its inbox and jobs in
    *jobs*), and the echoes the operations wait for."""
    env = {
        "ANTIFRAGILE_DATABASE_URL": database,
        "ANTIFRAGILE_WHATSAPP_APP_SECRET": _WHATSAPP_SECRET,
        "ANTIFRAGILE_TWILIO_AUTH_TOKEN": _TOKENS["twilio"],
        "ANTIFRAGILE_CALCOM_WEBHOOK_SECRET": _CALCOM_SECRET,
        "ANTIFRAGILE_MANDRILL_WEBHOOK_KEY": _MANDRILL_KEY,
        # the URL the URL-signed webhooks (Twilio, Mandrill) are checked against
        "ANTIFRAGILE_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    if provider == "sendgrid":
        simulator = sandbox.simulator("sendgrid")
        assert isinstance(simulator, SendGridSimulator)
        env["ANTIFRAGILE_SENDGRID_WEBHOOK_PUBLIC_KEY"] = simulator.event_webhook_public_key
    settings = Settings.from_env(env)
    assistant = Assistant(settings, jobs=jobs)
    app = create_app(settings, assistant=assistant)
    server = _QuietServer(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="error", lifespan="on", log_config=None
        )
    )
    task = asyncio.create_task(server.serve())

    async def stop() -> None:
        server.should_exit = True
        await task

    stack.push_async_callback(stop)
    while not server.started:
        if task.done():
            raise RuntimeError("the status webhook receiver did not start")
        await asyncio.sleep(0.01)
    return Echoes(assistant.deliveries, clock=clock)


def _operation_of(effect: Effect) -> int | None:
    found = _OP.search(json.dumps(effect.data, default=str))
    return None if found is None else int(found.group(1))


async def measure(
    provider: str,
    *,
    strategy: Strategy = "default",
    operations: int = 500,
    ambiguous: float = 0.3,
    errors: float = 0.1,
    seed: int = 11,
    directory: Path | None = None,
    concurrency: int = 20,
) -> Figures:
    """Run *operations* durable jobs of *provider* under the fault mix (module docs)."""
    if strategy == "blind_resend" and provider in IDEMPOTENT:
        raise ValueError(f"{provider} replays safely: only the default strategy is measured")
    if strategy == "echo" and provider not in ECHOING:
        raise ValueError(f"{provider} sends no status webhooks; one of {ECHOING}")
    started = time.perf_counter()
    review: set[int] = set()
    with contextlib.ExitStack() as files:
        if directory is None:
            directory = Path(files.enter_context(tempfile.TemporaryDirectory()))
        # the jobs' time: retries come due when it is advanced (near the wall clock, where the
        # service's signature checks look for fresh timestamps)
        jobs_clock = FakeClock(start=time.time() - 1_700_000_000.0)
        database = f"sqlite:///{directory / f'duplicates-{provider}-{strategy}.db'}"
        jobs = Jobs(database_url=database, clock=jobs_clock)
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(jobs)
            port = _free_port() if strategy == "echo" else None
            service_url = f"http://127.0.0.1:{port}" if port is not None else None
            target = await _target(
                provider,
                strategy,
                stack,
                seed=seed,
                ambiguous=ambiguous,
                errors=errors,
                operations=operations,
                service_url=service_url,
            )
            echoes = None
            if port is not None and target.sandbox is not None:
                echoes = await _service(
                    stack, jobs, jobs_clock, target.sandbox, provider, port, database
                )

            @jobs.job(f"duplicates.{provider}", retry=Retry(attempts=30, backoff=Constant(5)))
            async def operate(ctx: JobContext, n: int) -> object:
                try:
                    if echoes is not None:
                        assert ctx.idempotency_key is not None
                        await echoes.send_once(
                            ctx.idempotency_key,
                            provider,
                            lambda: target.operation(ctx, n),
                            reference=_REFERENCES.get(provider, "") + ctx.idempotency_key,
                        )
                        return None
                    await target.operation(ctx, n)
                except OutcomeUnknownError as unknown:
                    if strategy == "blind_resend":  # the naive job: any failure, send again
                        raise TransientError(
                            "outcome unknown; sending again", provider=provider
                        ) from unknown
                    review.add(n)
                    raise
                return None

            for n in range(operations):
                await operate.configure(idempotency_key=f"{provider}/op-{n}").enqueue(n)
            worker = Worker(jobs, concurrency=concurrency)
            waiting = (JobState.QUEUED, JobState.RETRYING, JobState.SCHEDULED)
            for _ in range(400):
                await worker.run_until_idle()
                if target.sandbox is not None and echoes is not None:
                    # the statuses reach the service, whose jobs record them
                    await asyncio.to_thread(target.sandbox.webhooks.wait_idle, 60)
                    await worker.run_until_idle()
                if not await jobs.find(JobFilter(states=waiting), limit=1):
                    break
                # a minute passes for the jobs (retries come due) and for the connector (an
                # open breaker half-opens)
                jobs_clock.advance(60)
                target.clock.advance(60)
            name = f"duplicates.{provider}"  # not the service's own jobs (with webhooks on)
            succeeded = len(
                await jobs.find(
                    JobFilter(states=(JobState.SUCCEEDED,), name=name), limit=operations + 1
                )
            )
            dead = len(
                await jobs.find(JobFilter(states=(JobState.DEAD,), name=name), limit=operations + 1)
            )
            effects = target.effects()
            requests = target.requests()
            faults = target.ambiguous()
    copies = Counter(_operation_of(e) for e in effects)
    copies.pop(None, None)
    delivered = set(copies)
    return Figures(
        provider=provider,
        strategy=strategy,
        operations=operations,
        effects=len(effects),
        delivered=len(delivered),
        duplicates=sum(c - 1 for c in copies.values()),
        succeeded=succeeded,
        review=len(review),
        review_sent=len(review & {n for n in delivered if n is not None}),
        other_dead=dead - len(review),
        lost=sum(1 for n in range(operations) if n not in delivered and n not in review),
        requests=requests,
        faults_ambiguous=faults,
        seconds=round(time.perf_counter() - started, 2),
    )


# -- the report -----------------------------------------------------------------------------------


def _table(figures: Sequence[Figures]) -> str:
    lines = [
        "| provider | strategy | operations | effects | duplicates | duplicate rate "
        "| succeeded | marked for review (of which sent) | other dead | lost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        lines.append(
            f"| {f.provider} | {f.strategy.replace('_', ' ')} | {f.operations} | {f.effects} "
            f"| {f.duplicates} | {f.duplicate_rate:.1%} | {f.succeeded} "
            f"| {f.review} ({f.review_sent}) | {f.other_dead} | {f.lost} |"
        )
    return "\n".join(lines)


def report(figures: Sequence[Figures], *, operations: int, seed: int) -> str:
    """The Markdown report of a run."""
    return (
        "## Duplicate effects through durable jobs\n\n"
        f"{operations} durable jobs per provider and strategy (SQLite queue, one worker, 20 at "
        "a time), each one operation through the provider's connector with its default "
        "policy, against the sandbox's simulator over real HTTP (SMTP: the sandbox's SMTP "
        "server). Every request to the operation's endpoint draws a fault: 30% ambiguous "
        "(the provider acts, the answer is lost), 10% 5xx (SMTP: 451) without acting, 60% "
        f"none (seed {seed}).  \n"
        f"Python {platform.python_version()}, {platform.machine()}.\n\n"
        f"{_table(figures)}\n\n"
        "*effects*: what the simulator recorded; *duplicates*: effects beyond the first of an "
        "operation; *marked for review*: jobs dead-lettered with `OutcomeUnknownError` (the "
        "key to reconcile with is on the error; *of which sent*: the effect had in fact "
        "happened); *other dead*: jobs dead for another reason (Cal.com's refusal of a slot "
        "already taken -- by the job's own lost booking); *lost*: operations with neither an "
        "effect nor a review entry. *blind resend*: the job sends again after an unknown "
        "outcome, as a naive job would.\n"
    )


_ECHO_NOTE = (
    "\n*echo* (``--status-webhooks``): the sandbox posts each provider's signed status "
    "webhooks (Twilio: to the ``StatusCallback`` URL the send carried) to the service served "
    "by uvicorn on the same SQLite file; its ``inbound.process`` jobs record them, and a job "
    "whose outcome is unknown waits for the echo of its correlation "
    "(``Echoes.send_once``: deferred, no attempt spent) -- confirmed: done; failed: by the "
    "code; nothing within 10 minutes of the jobs' clock: review.\n"
)


async def run(
    providers: Sequence[str], *, operations: int, seed: int, status_webhooks: bool = False
) -> list[Figures]:
    figures: list[Figures] = []
    for provider in providers:
        strategies: tuple[Strategy, ...] = STRATEGIES
        if status_webhooks:
            if provider not in ECHOING:
                continue
            strategies = ("echo",)
        for strategy in strategies:
            if strategy == "blind_resend" and provider in IDEMPOTENT:
                continue
            result = await measure(provider, strategy=strategy, operations=operations, seed=seed)
            print(
                f"{provider:9} {strategy:12} effects {result.effects:4} "
                f"duplicates {result.duplicates:4} review {result.review:4} "
                f"({result.review_sent} sent) other dead {result.other_dead:3} "
                f"lost {result.lost} [{result.seconds:.1f} s]",
                flush=True,
            )
            figures.append(result)
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--operations", type=int, default=500)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--only", action="append", choices=PROVIDERS, default=None)
    parser.add_argument("--quick", action="store_true", help="100 operations, -quick files")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--status-webhooks",
        action="store_true",
        help="the providers whose status webhooks echo a send (WhatsApp, Twilio, SendGrid, "
        "Cal.com), with the sandbox posting them to the service: -webhooks files",
    )
    args = parser.parse_args(argv)
    # dead-lettered jobs are the point of the measurement; the SMTP server chats at INFO
    logging.getLogger("antifragile").setLevel(logging.ERROR)
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    operations = 100 if args.quick else args.operations
    providers = tuple(args.only or PROVIDERS)
    figures = asyncio.run(
        run(providers, operations=operations, seed=args.seed, status_webhooks=args.status_webhooks)
    )
    name = "duplicates-quick" if args.quick else "duplicates"
    if args.status_webhooks:
        name += "-webhooks"
    args.output.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "duplicates",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "operations": operations,
        "seed": args.seed,
        "fault_mix": {"ambiguous": 0.3, "error_5xx": 0.1},
        "results": [f.to_dict() for f in figures],
    }
    (args.output / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    text = report(figures, operations=operations, seed=args.seed)
    if args.status_webhooks:
        text += _ECHO_NOTE
    (args.output / f"{name}.md").write_text(text)
    print(f"wrote {args.output / name}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
