"""The demo's run: the sandbox, the service and its worker, customers, a fault script.

One event loop holds everything but the provider sandbox (a server thread of its own):

* the **service** -- :func:`~antifragile.service.create_app` with an
  :class:`~antifragile.service.Assistant` on a temporary SQLite file (or ``--database-url``),
  served by uvicorn on a free local port; its connectors point at the sandbox;
* its **worker**, stopped at each of the script's ``worker_restarts`` as SIGTERM stops it on a
  deploy (it claims no more jobs and lets the calls under way finish; jobs it had claimed but
  not started are released and claimed again by the next worker) and started anew
  ``restart_gap`` seconds after it stopped;
* the **customers**: each a phone that sends its messages as signed WhatsApp webhooks, waits
  for the next question to reach the phone (at most ``patience`` seconds), thinks, answers;
* the **fault script**, set on the sandbox as time windows when the first customer writes;
* a **sampler** that every 250 ms notes each provider's health (requests answered or failed at
  the sandbox, the script's windows), each breaker's state and the job backlog;
* the **naive baseline**: the same customers and script against a second sandbox, with every
  call made directly by plain httpx, retried at once up to five times, with no breaker, no
  idempotency key and no job queue.

The service's sandbox sends WhatsApp's signed **status webhooks** (sent, delivered, read) to the
service's ``/v1/webhooks/whatsapp``, as the script lets it (delayed, lost, duplicated); a reply
whose outcome is unknown waits ``echo_window`` seconds for them (production: 10 minutes).

After the last fault window (the *recovery*), the run waits for the backlog to drain -- the
sessions' sweep, every ten minutes in production, runs every two seconds here -- and then
counts, from the sandbox's record of accepted side effects, what each provider did per
customer: expected, recorded, duplicated, missing; and, from the sandbox's delivery statuses,
the replies delivered. Drained means no job waiting (a reply awaiting its echo is a deferred
job), no status webhook on its way; the run waits for it until the script's end plus the pace's
``drain_cap`` (reported when hit), so a longer script plays to its end.

Back-offs and breaker timings are scaled down so that an incident plays in seconds; the code
paths are those of production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from antifragile.connectors import Connectors
from antifragile.demo._scenario import (
    EMAIL_CHAIN,
    IDEMPOTENT,
    PROVIDERS,
    REPLIES_PER_CONVERSATION,
    Customer,
    FaultScript,
    Pace,
    make_customers,
)
from antifragile.errors import ConfigurationError, redact
from antifragile.inbound import Sessions
from antifragile.jobs import Job, JobFilter, JobState, Worker
from antifragile.policies import CircuitBreaker, Exponential, Policy, Retry
from antifragile.sandbox import (
    HubSpotSimulator,
    MandrillSimulator,
    ProviderSandbox,
    ResendSimulator,
    ShopifySimulator,
    SlackSimulator,
    WhatsAppSimulator,
    whatsapp_signature,
    whatsapp_text_message,
)
from antifragile.sandbox._simulator import Effect
from antifragile.service import Settings, create_app
from antifragile.service._admin import mask_personal
from antifragile.service._assistant import Assistant

_log = logging.getLogger("antifragile.demo")

APP_SECRET = "demo-app-secret"
ADMIN_KEY = "demo-admin-key-0123456789"
WA_TOKEN = "EAAG-demo-token"
PHONE_ID = "106540352242922"
RESEND_KEY = "re_demo_key_12345"
MANDRILL_KEY = "md-demo-key-12345"
SHOPIFY_TOKEN = "shpat_demo_token"
HUBSPOT_TOKEN = "pat-demo-token"
HOOK = "T0001/B0001/demoSeCrEt1234"
OWNER = "owner@bakery.example"
SHOPIFY_VERSION = "2025-01"
WHATSAPP_VERSION = "v21.0"
TENANT = "bakery"

#: how many times the naive baseline sends a failed call again, at once
NAIVE_RETRIES = 5
#: seconds between two samples of the timeline
SAMPLE_EVERY = 0.25
#: seconds between two runs of the sessions' sweep after recovery
SWEEP_EVERY = 2.0


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """One run of the demo."""

    customers: int
    seed: int
    script: FaultScript
    pace: Pace
    database_url: str | None = None
    baseline: bool = True
    quick: bool = False


# -- the live state and the samples -----------------------------------------------------------


@dataclass(slots=True)
class Sample:
    """The state of the run at ``t`` seconds."""

    t: float
    ok: dict[str, int]  # requests each provider answered well since the last sample
    failed: dict[str, int]  # ... answered with 429 / 5xx or not at all
    faults: dict[str, bool]  # whether the script has a window open for the provider
    breakers: dict[str, str]
    pending: int
    retrying: int
    dead: int
    conversations: int
    replies: int
    attempts: int  # requests to the providers so far, antifragile
    naive_attempts: int  # the same, naive baseline

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3),
            "ok": self.ok,
            "failed": self.failed,
            "faults": self.faults,
            "breakers": self.breakers,
            "pending": self.pending,
            "retrying": self.retrying,
            "dead": self.dead,
            "conversations": self.conversations,
            "replies": self.replies,
            "attempts": self.attempts,
            "naive_attempts": self.naive_attempts,
        }


@dataclass
class Progress:
    """What the run has done so far (the live display reads it while the run goes on)."""

    customers: int
    phase: str = "starting"
    t: float = 0.0
    messages_in: int = 0
    conversations: int = 0
    naive_conversations: int = 0
    replies: int = 0
    pending: int = 0
    retrying: int = 0
    dead: int = 0
    breakers: dict[str, str] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    restarts: int = 0


@dataclass(frozen=True, slots=True)
class Tally:
    """One provider's side effects against what the customers should have caused."""

    provider: str
    expected: int
    recorded: int
    duplicates: int
    missing: int
    attempts: int

    @property
    def exact(self) -> bool:
        return self.duplicates == 0 and self.missing == 0 and self.recorded == self.expected

    def to_dict(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "attempts": self.attempts,
            "exactly_once": self.exact,
        }


@dataclass
class DemoResult:
    """Everything the report shows (see :meth:`to_dict` for the JSON shape)."""

    config: DemoConfig
    started_at: float  # wall clock
    wall_seconds: float = 0.0
    messages_in: int = 0
    conversations: int = 0
    replies_out: int = 0
    effects: dict[str, Tally] = field(default_factory=dict)
    naive: dict[str, Tally] = field(default_factory=dict)
    naive_conversations: int = 0
    recovery: float = 0.0
    drained_at: float | None = None
    #: the run waited for the drain until this moment at most (the script's end + drain cap)
    deadline: float = 0.0
    #: whether the run stopped at its deadline with work still waiting
    cap_hit: bool = False
    #: WhatsApp replies the sandbox reported delivered (or read), at most five per customer
    replies_delivered: int = 0
    replies_expected: int = 0
    #: what became of the status webhooks of the WhatsApp sends, by fate (sent, lost, ...)
    status_webhooks: dict[str, int] = field(default_factory=dict)
    restarts: list[dict[str, Any]] = field(default_factory=list)
    sweeps: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    log_warnings: int = 0

    @property
    def drain_seconds(self) -> float | None:
        if self.drained_at is None:
            return None
        return max(0.0, self.drained_at - self.recovery)

    @property
    def replies_missing(self) -> int:
        return max(0, self.replies_expected - self.replies_delivered)

    @property
    def needs_operator(self) -> int:
        """Dead-letter entries this run left for an operator."""
        return len(self.dead_letters)

    @property
    def truthful(self) -> bool:
        """Every reply delivered, nothing left for an operator, effects exactly once."""
        return (
            self.replies_missing == 0
            and self.needs_operator == 0
            and self.exactly_once
            and not self.cap_hit
        )

    @property
    def exactly_once(self) -> bool:
        """Whether every idempotent provider's effects match what was expected."""
        return all(self.effects[p].exact for p in IDEMPOTENT if p in self.effects)

    def to_dict(self) -> dict[str, Any]:
        config = self.config
        return {
            "customers": config.customers,
            "seed": config.seed,
            "quick": config.quick,
            "script": config.script.to_dict(),
            "wall_seconds": round(self.wall_seconds, 3),
            "messages_in": self.messages_in,
            "conversations": self.conversations,
            "replies_out": self.replies_out,
            "replies_expected": self.replies_expected,
            "replies_delivered": self.replies_delivered,
            "replies_missing": self.replies_missing,
            "dlq_needing_operator": self.needs_operator,
            "status_webhooks": self.status_webhooks,
            "deadline": round(self.deadline, 3),
            "cap_hit": self.cap_hit,
            "effects": {p: t.to_dict() for p, t in self.effects.items()},
            "naive": {p: t.to_dict() for p, t in self.naive.items()} if self.naive else None,
            "naive_retries": NAIVE_RETRIES,
            "naive_conversations": self.naive_conversations,
            "recovery": self.recovery,
            "drained_at": None if self.drained_at is None else round(self.drained_at, 3),
            "drain_seconds": None if self.drain_seconds is None else round(self.drain_seconds, 3),
            "exactly_once": self.exactly_once,
            "idempotent_providers": list(IDEMPOTENT),
            "restarts": self.restarts,
            "sweeps": self.sweeps,
            "dead_letters": self.dead_letters,
            "log_warnings": self.log_warnings,
            "samples": [s.to_dict() for s in self.samples],
        }


# -- the pieces -------------------------------------------------------------------------------


def simulators() -> list[Any]:
    """The providers the intake flow uses; their own limits out of the way of the script."""
    return [
        WhatsAppSimulator(
            access_tokens=[WA_TOKEN],
            phone_number_ids=[PHONE_ID],
            throughput=10**6,
            app_secret=APP_SECRET,
        ),
        ResendSimulator(api_keys=[RESEND_KEY], rate_limit=10**6),
        MandrillSimulator(api_keys=[MANDRILL_KEY], search_limit=10**6),
        ShopifySimulator(access_tokens=[SHOPIFY_TOKEN], bucket_size=10**6),
        HubSpotSimulator(tokens=[HUBSPOT_TOKEN], burst=10**6),
        SlackSimulator(hooks=[HOOK], rate=1e6, burst=1e6),
    ]


def demo_policy(provider: str, pace: Pace) -> Policy:
    """The policy of each connector: production's shape, with the demo's short timings."""
    return Policy(
        provider,
        timeout=pace.attempt_timeout,
        total_timeout=pace.call_timeout,
        retry=Retry(attempts=3, backoff=Exponential(pace.backoff, cap=pace.backoff * 4)),
        breaker=CircuitBreaker(
            provider,
            failure_rate=0.5,
            window=10,
            minimum_calls=4,
            open_duration=pace.open_duration,
            half_open_calls=1,
        ),
    )


def _connectors(sandbox: ProviderSandbox, pace: Pace) -> Connectors:
    return Connectors(
        base_urls={
            "whatsapp": sandbox.base_url("whatsapp"),
            "resend": sandbox.base_url("resend"),
            "mandrill": sandbox.base_url("mandrill"),
            "shopify": sandbox.base_url("shopify"),
            "hubspot": sandbox.base_url("hubspot"),
            "slack": f"{sandbox.base_url('slack')}/services/{HOOK}",
        },
        options={
            "whatsapp": {"access_token": WA_TOKEN, "phone_number_id": PHONE_ID},
            "resend": {"api_key": RESEND_KEY},
            "mandrill": {"api_key": MANDRILL_KEY},
            "shopify": {"access_token": SHOPIFY_TOKEN, "reconcile_grace": 0.2},
            "hubspot": {"access_token": HUBSPOT_TOKEN},
        },
        policies={p: demo_policy(p, pace) for p in PROVIDERS},
        timeout=pace.attempt_timeout,
    )


def _settings(directory: Path, database_url: str | None) -> Settings:
    config = directory / "antifragile.toml"
    config.write_text(
        f'[tenants.{TENANT}]\nname = "Acme Bakery"\nwhatsapp_phone_number_id = "{PHONE_ID}"\n'
        f'owner_email = "{OWNER}"\nemail_chain = "{",".join(EMAIL_CHAIN)}"\n',
        encoding="utf-8",
    )
    return Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": database_url or f"sqlite:///{directory / 'demo.db'}",
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": APP_SECRET,
            "ANTIFRAGILE_WHATSAPP_VERIFY_TOKEN": "demo-verify",
            "ANTIFRAGILE_ADMIN_API_KEYS": ADMIN_KEY,
            "ANTIFRAGILE_CONFIG": str(config),
        }
    )


class _Server(uvicorn.Server):
    """uvicorn on the demo's own event loop: Ctrl-C stays the demo's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class _Warnings(logging.Handler):
    """Counts the library's warnings during the run, instead of printing over the display."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


@contextlib.contextmanager
def _quiet_logs() -> Iterator[_Warnings]:
    handler = _Warnings()
    loggers = [logging.getLogger(n) for n in ("antifragile", "uvicorn", "uvicorn.error")]
    saved = [(lg, lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
        if lg.level == logging.NOTSET or lg.level > logging.WARNING:
            lg.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        for lg, propagate, level in saved:
            lg.removeHandler(handler)
            lg.propagate = propagate
            lg.setLevel(level)


# -- counting effects ---------------------------------------------------------------------------


def _blob(effect: Effect) -> str:
    return json.dumps(effect.data, ensure_ascii=False).lower()


def _belongs(provider: str, effect: Effect, customer: Customer) -> bool:
    if provider == "whatsapp":
        data = effect.data if isinstance(effect.data, dict) else {}
        return str(data.get("to", "")).lstrip("+") == customer.phone
    if provider == "slack":
        return f": {customer.first.lower()} (" in _blob(effect)
    return customer.email in _blob(effect)


def tally(
    sandbox: ProviderSandbox, customers: Sequence[Customer], provider: str, *, attempts: int
) -> Tally:
    """*provider*'s accepted effects matched to *customers* (each should cause one, or five
    WhatsApp replies); a provider of the email chain is counted with the chain."""
    if provider in EMAIL_CHAIN:
        return chain_tallies(sandbox, customers, attempts={provider: attempts})[provider]
    effects = sandbox.effects(provider)
    want = REPLIES_PER_CONVERSATION if provider == "whatsapp" else 1
    duplicates = missing = 0
    matched = 0
    for customer in customers:
        got = sum(1 for e in effects if _belongs(provider, e, customer))
        matched += got
        duplicates += max(0, got - want)
        missing += max(0, want - got)
    duplicates += len(effects) - matched  # effects no customer explains
    return Tally(
        provider,
        expected=want * len(customers),
        recorded=len(effects),
        duplicates=duplicates,
        missing=missing,
        attempts=attempts,
    )


def chain_tallies(
    sandbox: ProviderSandbox, customers: Sequence[Customer], *, attempts: Mapping[str, int]
) -> dict[str, Tally]:
    """The email chain's providers' effects, counted together: each customer should cause one
    summary email across the chain. The email counts at the first provider of the chain that
    sent it (its *expected*); a second one anywhere is a duplicate where it was recorded, and a
    customer without any is missing at the chain's first provider."""
    effects = {p: sandbox.effects(p) for p in EMAIL_CHAIN}
    expected = dict.fromkeys(EMAIL_CHAIN, 0)
    missing = 0
    for customer in customers:
        got = {p: sum(1 for e in effects[p] if _belongs(p, e, customer)) for p in EMAIL_CHAIN}
        first = next((p for p in EMAIL_CHAIN if got[p]), None)
        if first is None:
            missing += 1
        expected[first or EMAIL_CHAIN[0]] += 1
    out = {}
    for provider in EMAIL_CHAIN:
        recorded = len(effects[provider])
        lacking = missing if provider == EMAIL_CHAIN[0] else 0
        # every effect beyond the one email counted here is a duplicate (or no customer's)
        duplicates = recorded - (expected[provider] - lacking)
        out[provider] = Tally(
            provider,
            expected=expected[provider],
            recorded=recorded,
            duplicates=duplicates,
            missing=lacking,
            attempts=attempts.get(provider, 0),
        )
    return out


#: the final statuses of a WhatsApp message that reached the phone
DELIVERED = frozenset({"delivered", "read"})


def delivered(sandbox: ProviderSandbox, customers: Sequence[Customer]) -> int:
    """WhatsApp replies the sandbox reports delivered (or read), at most five per customer:
    a reply sent twice is not two replies delivered."""
    to = {}
    for effect in sandbox.effects("whatsapp"):
        data = effect.data if isinstance(effect.data, dict) else {}
        to[effect.id] = str(data.get("to", "")).lstrip("+")
    per_phone: dict[str, int] = {}
    for status in sandbox.deliveries("whatsapp"):
        phone = to.get(status.message_id)
        if phone is not None and status.final in DELIVERED:
            per_phone[phone] = per_phone.get(phone, 0) + 1
    return sum(min(REPLIES_PER_CONVERSATION, per_phone.get(c.phone, 0)) for c in customers)


def _provider_of(path: str) -> str | None:
    head = path.lstrip("/").partition("/")[0]
    return head if head in PROVIDERS else None


def _failed(status: int | None) -> bool:
    return status is None or status == 429 or status >= 500


class _RequestCounter:
    """Reads a sandbox's request log incrementally: per provider, answered well or failed."""

    def __init__(self, sandbox: ProviderSandbox) -> None:
        self.sandbox = sandbox
        self.seen = 0
        self.total: dict[str, int] = dict.fromkeys(PROVIDERS, 0)

    def step(self) -> tuple[dict[str, int], dict[str, int]]:
        requests = self.sandbox.requests
        fresh, self.seen = requests[self.seen :], len(requests)
        ok = dict.fromkeys(PROVIDERS, 0)
        failed = dict.fromkeys(PROVIDERS, 0)
        for request in fresh:
            provider = _provider_of(request.path)
            if provider is None:
                continue
            self.total[provider] += 1
            (failed if _failed(request.status) else ok)[provider] += 1
        return ok, failed

    @property
    def attempts(self) -> int:
        return sum(self.total.values())


class _Phones:
    """How many WhatsApp messages reached each phone (an incremental index of the effects)."""

    def __init__(self, sandbox: ProviderSandbox) -> None:
        self.sandbox = sandbox
        self.seen = 0
        self.count: dict[str, int] = {}

    def received(self, phone: str) -> int:
        effects = self.sandbox.effects("whatsapp")
        for effect in effects[self.seen :]:
            data = effect.data if isinstance(effect.data, dict) else {}
            to = str(data.get("to", "")).lstrip("+")
            self.count[to] = self.count.get(to, 0) + 1
        self.seen = len(effects)
        return self.count.get(phone, 0)


# -- the run ----------------------------------------------------------------------------------


class DemoRun:
    """One run of the demo (see the module docs); :meth:`run` returns its result."""

    def __init__(self, config: DemoConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.pace = config.pace
        self.script = config.script
        self.progress = progress or Progress(customers=config.customers)
        self.customers = make_customers(
            config.customers,
            seed=config.seed,
            arrivals=self.pace.arrivals,
            think=self.pace.think,
        )
        self.result = DemoResult(config=config, started_at=time.time())
        self.result.recovery = self.script.recovery
        self._t0 = 0.0
        self._worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._customers_done = 0
        self._dead_before = 0
        self._main_counter: _RequestCounter | None = None
        self.url = ""
        self._assistant: Assistant | None = None
        self._sandbox: ProviderSandbox | None = None

    @property
    def counter(self) -> _RequestCounter:
        """The request counter of the service's sandbox (once the run has started)."""
        if self._main_counter is None:
            raise RuntimeError("the run has not started")
        return self._main_counter

    @property
    def deadline(self) -> float:
        """When the run stops waiting: the script's end (or the last customer's start) plus
        the drain cap, and never before the pace's ``max_seconds``."""
        last = max([self.script.recovery] + [c.arrival for c in self.customers])
        return max(self.pace.max_seconds, last + self.pace.drain_cap)

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    async def _until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            await asyncio.sleep(delay)

    # -- the worker -------------------------------------------------------------------------

    def _start_worker(self, assistant: Assistant) -> None:
        self._worker = assistant.worker(
            concurrency=16,
            poll_interval=0.05,
            lease=5.0,
            heartbeat=1.0,
            # a restart lets the calls under way finish (as SIGTERM does on a deploy): a send
            # cut off mid-call has an outcome nobody can know unless its status webhook comes
            shutdown_grace=self.pace.call_timeout + 1.0,
            seed=self.config.seed,
        )
        self._worker_task = asyncio.create_task(self._worker.run(), name="demo-worker")

    async def _kill_worker(self, *, graceful: bool = False) -> int:
        task, worker = self._worker_task, self._worker
        if task is None or worker is None:
            return 0
        running = worker.running
        if graceful:
            worker.stop()  # claims no more; running jobs finish within the grace period
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), worker.shutdown_grace + 2.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._worker_task = self._worker = None
        return running

    async def _restarts(self, assistant: Assistant) -> None:
        for at in self.script.worker_restarts:
            await self._until(at)
            self.progress.phase = "worker restarting"
            in_flight = await self._kill_worker(graceful=True)
            await asyncio.sleep(self.pace.restart_gap)
            self._start_worker(assistant)
            self.progress.restarts += 1
            self.result.restarts.append(
                {"at": round(at, 3), "jobs_in_flight": in_flight, "down": self.pace.restart_gap}
            )

    # -- customers --------------------------------------------------------------------------

    async def _handled(self, customer: Customer, wamid: str) -> bool:
        if self._assistant is None:
            return True
        record = await self._assistant.sessions.get(Sessions.key_for(TENANT, customer.phone))
        return record is not None and any(r.event_id == wamid for r in record.recent)

    async def _say(self, http: httpx.AsyncClient, customer: Customer, text: str, n: int) -> str:
        wamid = f"wamid.demo{customer.phone}{n:02d}{self.config.seed}"
        payload = whatsapp_text_message(
            from_=customer.phone,
            body=text,
            name=customer.name,
            phone_number_id=PHONE_ID,
            message_id=wamid,
        )
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            "x-hub-signature-256": whatsapp_signature(APP_SECRET, body),
        }
        for attempt in range(8):  # as Meta does, a delivery not answered 200 comes again
            try:
                response = await http.post("/v1/webhooks/whatsapp", content=body, headers=headers)
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                self.progress.messages_in += 1
                self.result.messages_in += 1
                return wamid
            await asyncio.sleep(0.2 * 2**attempt)
        _log.warning("a customer's message was not accepted")
        return wamid

    async def _converse(self, http: httpx.AsyncClient, customer: Customer, phones: _Phones) -> None:
        await self._until(customer.arrival)
        for n, text in enumerate(customer.messages):
            if n:
                await asyncio.sleep(customer.thinks[n - 1])
            wamid = await self._say(http, customer, text, n)
            # the next question reaches the phone; or, once patience runs out, the service has
            # at least handled the message (its reply may wait for WhatsApp, or for review)
            deadline = self.now() + self.pace.patience
            while phones.received(customer.phone) < n + 1:
                if self.now() >= deadline and await self._handled(customer, wamid):
                    break
                await asyncio.sleep(0.05)
        self.progress.conversations += 1
        self._customers_done += 1

    async def _naive_converse(
        self, http: httpx.AsyncClient, sandbox: ProviderSandbox, customer: Customer
    ) -> None:
        await self._until(customer.arrival)
        for n, _text in enumerate(customer.messages):
            if n:
                await asyncio.sleep(customer.thinks[n - 1])
            await _naive_call(
                http,
                f"{sandbox.base_url('whatsapp')}/{WHATSAPP_VERSION}/{PHONE_ID}/messages",
                {
                    "messaging_product": "whatsapp",
                    "to": customer.phone,
                    "type": "text",
                    "text": {"body": f"Reply {n + 1} of the intake flow"},
                },
                {"authorization": f"Bearer {WA_TOKEN}"},
            )
        await asyncio.gather(*_naive_integrations(http, sandbox, customer))
        self.progress.naive_conversations += 1

    # -- sampling, sweeping, draining -------------------------------------------------------

    async def _sample(
        self, assistant: Assistant, main: _RequestCounter, naive: _RequestCounter | None
    ) -> Sample:
        ok, failed = main.step()
        if naive is not None:
            naive.step()
        counts = await _job_counts(assistant)
        t = self.now()
        breakers = {p: b.state.value for p, b in sorted(assistant.breakers().items())}
        sample = Sample(
            t=t,
            ok=ok,
            failed=failed,
            faults={p: bool(self.script.active(p, t)) for p in PROVIDERS},
            breakers=breakers,
            pending=sum(counts.get(s, 0) for s in ("scheduled", "queued", "running")),
            retrying=counts.get("retrying", 0),
            dead=counts.get("dead", 0) - self._dead_before,
            conversations=self.progress.conversations,
            replies=len(self.counter.sandbox.effects("whatsapp")),
            attempts=main.attempts,
            naive_attempts=0 if naive is None else naive.attempts,
        )
        progress = self.progress
        progress.t = t
        progress.pending, progress.retrying, progress.dead = (
            sample.pending,
            sample.retrying,
            sample.dead,
        )
        progress.breakers = breakers
        progress.replies = sample.replies
        progress.faults = sorted(
            {w.label or w.provider for p in PROVIDERS for w in self.script.active(p, t)}
        )
        return sample

    async def _sampler(
        self, assistant: Assistant, main: _RequestCounter, naive: _RequestCounter | None
    ) -> None:
        while True:
            self.result.samples.append(await self._sample(assistant, main, naive))
            await asyncio.sleep(SAMPLE_EVERY)

    async def _drain(self, assistant: Assistant, customers: asyncio.Future[Any]) -> None:
        """Wait for the customers, the end of the script and an idle service: no job waiting,
        no reply awaiting its echo, no status webhook on its way (or the drain cap)."""
        last_sweep = -SWEEP_EVERY
        self.result.deadline = deadline = self.deadline
        while self.now() < deadline:
            t = self.now()
            if t >= self.script.recovery:
                if self.progress.phase != "worker restarting":
                    self.progress.phase = "recovered: draining"
                if t - last_sweep >= SWEEP_EVERY:
                    last_sweep = t
                    report = await assistant.sessions.sweep()
                    if report.redriven or report.enqueued:
                        self.result.sweeps.append(
                            {
                                "at": round(t, 3),
                                "redriven": report.redriven,
                                "enqueued": report.enqueued,
                            }
                        )
            elif self.script.active_any(t):
                self.progress.phase = "faults playing"
            else:
                self.progress.phase = "running"
            if customers.done() and t >= self.script.recovery and self._worker is not None:
                counts = await _job_counts(assistant)
                # idle: no job waiting (nor any reply awaiting its echo, a deferred job) and no
                # status webhook still on its way to the service
                webhooks_idle = self._sandbox is None or self._sandbox.webhooks.wait_idle(0)
                if webhooks_idle and not any(counts.get(s, 0) for s in _UNFINISHED):
                    self.result.drained_at = t
                    return
            await asyncio.sleep(0.1)
        self.progress.phase = "drain cap reached"
        self.result.cap_hit = True

    async def _dead_letters(self, assistant: Assistant) -> list[dict[str, Any]]:
        found: list[Job] = await assistant.jobs.find(
            JobFilter(states=(JobState.DEAD,), newer_than=self.result.started_at), limit=200
        )
        out = []
        for job in found:
            history = [r for r in job.history if isinstance(r, dict)]
            reason = next((str(r["reason"]) for r in reversed(history) if r.get("reason")), None)
            out.append(
                {
                    "id": job.id,
                    "name": job.name,
                    "provider": job.provider,
                    "attempts": job.attempts,
                    "code": job.last_error_code,
                    "reason": reason or "",
                    "error": mask_personal(redact(job.last_error or "")),
                }
            )
        return out

    # -- all of it --------------------------------------------------------------------------

    async def run(self) -> DemoResult:
        config, pace = self.config, self.pace
        check_endpoints(self.script)
        started = time.perf_counter()
        with (
            _quiet_logs() as warnings,
            tempfile.TemporaryDirectory(prefix="antifragile-demo-") as tmp,
        ):
            async with contextlib.AsyncExitStack() as stack:
                # the service's sandbox reports each WhatsApp send's fate in signed status
                # webhooks; their retry schedule (minutes) plays a hundred times as fast
                sandbox = await stack.enter_async_context(
                    ProviderSandbox(simulators(), time_scale=0.01)
                )
                naive_box = (
                    await stack.enter_async_context(ProviderSandbox(simulators()))
                    if config.baseline
                    else None
                )
                settings = _settings(Path(tmp), config.database_url)
                connectors = _connectors(sandbox, pace)
                stack.push_async_callback(connectors.aclose)
                integration_retry = Retry(
                    attempts=12, backoff=Exponential(pace.backoff * 2, cap=pace.job_backoff_cap)
                )
                assistant = Assistant(
                    settings, connectors=connectors, integration_retry=integration_retry
                )
                # replies retry at the demo's pace too (production: minutes apart)
                assistant.replies.job.retry = Retry(
                    attempts=12, backoff=Exponential(pace.backoff, cap=pace.job_backoff_cap)
                )
                # a reply whose outcome is unknown waits for its status webhook (production: 10
                # minutes) for a few seconds here, and looks at its record more often
                assistant.replies.windows["whatsapp"] = pace.echo_window
                assistant.replies.poll = pace.echo_poll
                # an email whose outcome is unknown at a provider of the chain blocks the others
                # for as long (production: 15 minutes)
                connectors.email_chain(EMAIL_CHAIN).settle_window = pace.echo_window
                stack.push_async_callback(assistant.close)
                self._assistant = assistant
                await self._serve(stack, assistant, settings)
                sandbox.webhooks.configure("whatsapp", f"{self.url}/v1/webhooks/whatsapp")
                self._sandbox = sandbox
                self._dead_before = (await _job_counts(assistant)).get("dead", 0)
                self._main_counter = _RequestCounter(sandbox)
                naive_counter = None if naive_box is None else _RequestCounter(naive_box)
                await self._play(stack, assistant, sandbox, naive_box, naive_counter)
                await self._kill_worker()
                self.result.dead_letters = await self._dead_letters(assistant)
                self._count(sandbox, naive_box, naive_counter)
        self.result.log_warnings = warnings.count
        self.result.wall_seconds = time.perf_counter() - started
        self.progress.phase = "done"
        return self.result

    async def _serve(
        self, stack: contextlib.AsyncExitStack, assistant: Assistant, settings: Settings
    ) -> None:
        app = create_app(settings, assistant=assistant)
        sock = _listening_socket()
        port = sock.getsockname()[1]
        server = _Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="on",
                log_config=None,
            )
        )
        task = asyncio.create_task(server.serve(sockets=[sock]), name="demo-service")

        async def stop() -> None:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 10.0)
            sock.close()

        stack.push_async_callback(stop)
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("the demo's service stopped while starting")
            await asyncio.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"

    async def _play(
        self,
        stack: contextlib.AsyncExitStack,
        assistant: Assistant,
        sandbox: ProviderSandbox,
        naive_box: ProviderSandbox | None,
        naive_counter: _RequestCounter | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        for box in (sandbox, naive_box):
            if box is not None:
                _set_faults(box, self.script, self.config.seed)
        self._start_worker(assistant)
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=self.url, timeout=10.0))
        naive_http = await stack.enter_async_context(
            httpx.AsyncClient(timeout=self.pace.attempt_timeout)
        )
        phones = _Phones(sandbox)
        self.progress.phase = "running"
        customers = asyncio.gather(*(self._converse(http, c, phones) for c in self.customers))
        naive = (
            asyncio.gather(
                *(self._naive_converse(naive_http, naive_box, c) for c in self.customers)
            )
            if naive_box is not None
            else None
        )
        background = [
            asyncio.create_task(self._restarts(assistant), name="demo-restarts"),
            asyncio.create_task(
                self._sampler(assistant, self.counter, naive_counter), name="demo-sampler"
            ),
        ]
        try:
            await self._drain(assistant, customers)
            if naive is not None:
                remaining = max(1.0, self.deadline - self.now())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(naive), remaining)
            self.result.samples.append(await self._sample(assistant, self.counter, naive_counter))
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            for group in (customers, naive):
                if group is not None and not group.done():
                    group.cancel()
                    await asyncio.gather(group, return_exceptions=True)

    def _count(
        self,
        sandbox: ProviderSandbox,
        naive_box: ProviderSandbox | None,
        naive_counter: _RequestCounter | None,
    ) -> None:
        self.counter.step()
        result = self.result
        result.conversations = self.progress.conversations
        result.naive_conversations = self.progress.naive_conversations
        result.replies_out = len(sandbox.effects("whatsapp"))
        result.replies_expected = REPLIES_PER_CONVERSATION * len(self.customers)
        result.replies_delivered = delivered(sandbox, self.customers)
        fates: dict[str, int] = {}
        for status in sandbox.deliveries("whatsapp"):
            fates[status.fate] = fates.get(status.fate, 0) + 1
        result.status_webhooks = dict(sorted(fates.items()))
        result.effects = {
            p: tally(sandbox, self.customers, p, attempts=self.counter.total[p]) for p in PROVIDERS
        }
        if naive_box is not None and naive_counter is not None:
            naive_counter.step()
            result.naive = {
                p: tally(naive_box, self.customers, p, attempts=naive_counter.total[p])
                for p in PROVIDERS
            }


#: job states that still need a worker
_UNFINISHED = ("scheduled", "queued", "running", "retrying")


async def _job_counts(assistant: Assistant) -> dict[str, int]:
    """Jobs per state, every queue together."""
    counts: dict[str, int] = {}
    for entry in await assistant.jobs.stats():
        for state, n in entry.counts.items():
            counts[state] = counts.get(state, 0) + n
    return counts


def check_endpoints(script: FaultScript) -> None:
    """A ConfigurationError when a window names an endpoint its provider does not have."""
    endpoints = {
        s.name: [*s.endpoints, *(["webhooks"] if s.sends_webhooks else [])] for s in simulators()
    }
    for window in script.faults:
        known = endpoints[window.provider]
        if window.endpoint != "*" and window.endpoint not in known:
            raise ConfigurationError(
                f"fault script: {window.provider} has no endpoint {window.endpoint!r}; "
                f"one of {', '.join(known)} (or '*')"
            )


def _set_faults(sandbox: ProviderSandbox, script: FaultScript, seed: int) -> None:
    sandbox.clear_faults()
    for provider, by_endpoint in script.document(seed=seed).items():
        for endpoint, plans in by_endpoint.items():
            sandbox.engine.set(provider, endpoint, plans)


# -- the naive baseline -----------------------------------------------------------------------


async def _naive_call(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> bool:
    """POST *body*; on any error send it again at once, up to NAIVE_RETRIES times."""
    for _ in range(1 + NAIVE_RETRIES):
        try:
            response = await http.post(url, json=body, headers=headers)
        except httpx.HTTPError:
            continue
        if response.status_code < 300:
            return True
    return False


def _naive_integrations(
    http: httpx.AsyncClient, sandbox: ProviderSandbox, customer: Customer
) -> list[Any]:
    bearer = {"authorization": f"Bearer {RESEND_KEY}"}
    return [
        _naive_call(
            http,
            f"{sandbox.base_url('resend')}/emails",
            {
                "from": "Assistant <assistant@bakery.example>",
                "to": OWNER,
                "subject": f"New intake: {customer.name}",
                "text": f"{customer.name} <{customer.email}> wants: {customer.need}",
            },
            bearer,
        ),
        _naive_call(
            http,
            f"{sandbox.base_url('shopify')}/admin/api/{SHOPIFY_VERSION}/customers.json",
            {
                "customer": {
                    "email": customer.email,
                    "first_name": customer.first,
                    "last_name": customer.last,
                }
            },
            {"x-shopify-access-token": SHOPIFY_TOKEN},
        ),
        _naive_call(
            http,
            f"{sandbox.base_url('hubspot')}/crm/v3/objects/contacts",
            {
                "properties": {
                    "email": customer.email,
                    "firstname": customer.first,
                    "lastname": customer.last,
                }
            },
            {"authorization": f"Bearer {HUBSPOT_TOKEN}"},
        ),
        _naive_call(
            http,
            f"{sandbox.base_url('slack')}/services/{HOOK}",
            {"text": f"New intake completed: {customer.first} (masked) via whatsapp."},
            {},
        ),
    ]


async def run_demo(config: DemoConfig, progress: Progress | None = None) -> DemoResult:
    """Run the demo described by *config*; *progress* is updated as it goes."""
    return await DemoRun(config, progress).run()
