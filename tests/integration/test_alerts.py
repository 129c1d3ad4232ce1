"""Alerts on a real SQLite queue, with Slack and Resend behind the sandbox over real HTTP and a
FakeClock for time (windows, breaker open durations).

The sandbox's effect log is the ground truth for "what was sent": one Slack post and one
email per condition and window, however many checks, processes and breaker transitions see it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from antifragile import CircuitBreaker, FakeClock, InvalidRequestError, Policy, Retry
from antifragile.connectors import Connectors, ResendConnector, SlackConnector
from antifragile.errors import IntegrationError
from antifragile.inbound import AlertConfig, Alerts
from antifragile.inbound._alerts import ALERTS_QUEUE, CHECK_JOB, NOTIFY_JOB
from antifragile.inbound.testing import wait_for_breaker_alerts
from antifragile.jobs import DeadLetterFilter, JobContext, JobFilter, Jobs, JobState, Scheduler
from antifragile.jobs._liveness import Presence
from antifragile.policies import CircuitState
from antifragile.sandbox import ProviderFault, ProviderSandbox, ResendSimulator, SlackSimulator
from antifragile.service._alerts_api import alerts_router
from antifragile.service._envelope import RequestContextMiddleware, install_error_handlers
from antifragile.service._settings import Settings
from antifragile.service._watchdog import Watchdog

RESEND_KEY = "re_test_key_12345"
HOOK = "T0001/B0001/sEcReTtOkEn1234"
OPS = "ops@acme.example"
PHONE = "+447700900123"
CUSTOMER = "ada@example.com"
BOOTSTRAP = "bootstrap-admin-key-0123456789"
EMAILS = "POST /emails"


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    simulators = [
        ResendSimulator(api_keys=[RESEND_KEY], rate_limit=10**6),
        SlackSimulator(hooks=[HOOK], rate=1e6, burst=1e6),
    ]
    with ProviderSandbox(simulators) as running:
        yield running


def one_attempt(name: str, clock: FakeClock, breaker: CircuitBreaker | None = None) -> Policy:
    """One attempt per call: every attempt is one event the alerts count."""
    return Policy(name, timeout=5.0, retry=Retry(attempts=1), breaker=breaker, clock=clock)


@pytest.fixture
async def connectors(sandbox: ProviderSandbox, clock: FakeClock) -> AsyncIterator[Connectors]:
    slack = SlackConnector(
        f"{sandbox.base_url('slack')}/services/{HOOK}", policy=one_attempt("slack", clock)
    )
    resend = ResendConnector(
        RESEND_KEY,
        base_url=sandbox.base_url("resend"),
        policy=one_attempt(
            "resend",
            clock,
            CircuitBreaker("resend", failure_rate=0.5, window=4, minimum_calls=4, clock=clock),
        ),
    )
    made = Connectors(instances={"slack": slack, "resend": resend}, clock=clock)
    yield made
    await slack.aclose()
    await resend.aclose()


@dataclass
class World:
    clock: FakeClock
    sandbox: ProviderSandbox
    connectors: Connectors
    jobs: Jobs
    alerts: Alerts
    path: Path

    async def drain(self) -> None:
        await self.jobs.worker(concurrency=4, lease=60.0, heartbeat=20.0).run_until_idle()

    def posts(self) -> list[str]:
        return [e.data["text"] for e in self.sandbox.effects("slack")]

    def emails(self) -> list[Any]:
        """The alert emails sent (not the test's own emails through Resend)."""
        return [e for e in self.sandbox.effects("resend") if e.data["to"] == [OPS]]

    async def record(self, key: str) -> dict[str, Any]:
        found = await self.alerts.kv.get(key, now=self.clock.time())
        assert found is not None
        assert isinstance(found.value, dict)
        return found.value

    async def bury(self, count: int) -> None:
        """*count* dead jobs whose payloads and errors carry a phone, an email and a secret."""
        for n in range(count):
            await self.jobs.registry["charge"].enqueue(n, PHONE, CUSTOMER)
        await self.drain()
        assert len(await self.jobs.dlq.list()) == count


def _declare(jobs: Jobs) -> None:
    @jobs.job(queue="payments", provider="stripe", retry=Retry(attempts=1))
    async def charge(ctx: JobContext, order: int, phone: str, email: str) -> None:
        raise InvalidRequestError(
            f"HTTP 422 for {email} ({phone}) with key {RESEND_KEY}", status=422, provider="stripe"
        )


def build(
    path: Path,
    clock: FakeClock,
    sandbox: ProviderSandbox,
    connectors: Connectors,
    config: AlertConfig,
) -> World:
    jobs = Jobs(database_url=f"sqlite:///{path}", clock=clock)
    _declare(jobs)
    alerts = Alerts(jobs, connectors, config=config, clock=clock)
    return World(clock, sandbox, connectors, jobs, alerts, path)


CONFIG = AlertConfig(slack=True, email=(OPS,), dlq_threshold=10)


@pytest.fixture
async def world(
    tmp_path: Path, clock: FakeClock, sandbox: ProviderSandbox, connectors: Connectors
) -> AsyncIterator[World]:
    made = build(tmp_path / "alerts.db", clock, sandbox, connectors, CONFIG)
    async with made.jobs:
        made.alerts.install()
        yield made


def state(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state


def assert_clean(text: str) -> None:
    for secret in (PHONE, "447700900123", CUSTOMER, OPS, RESEND_KEY, HOOK, "sEcReTtOkEn1234"):
        assert secret not in text


# -- the dead-letter queue --------------------------------------------------------------------


async def test_backlog_alerts_once_per_window_across_checks_and_processes(
    world: World, connectors: Connectors
) -> None:
    """Ten dead jobs (threshold 10): five checks here and five from a second Jobs on the same
    database, run concurrently, enqueue one ``alerts.notify`` job; the worker posts once to
    Slack and emails the recipient once, and the record says firing."""
    await world.bury(10)
    other = build(world.path, world.clock, world.sandbox, connectors, CONFIG)
    async with other.jobs:
        results = await asyncio.gather(
            *(w.alerts.check() for _ in range(5) for w in (world, other))
        )
    fired = [f for batch in results for f in batch]
    assert len(fired) == 10
    assert sum(f.created for f in fired) == 1
    assert {f.job_id for f in fired} == {fired[0].job_id}
    start = world.alerts.window_start()
    assert fired[0].key == f"alert:dlq_backlog:all:{start}"

    (job,) = await world.jobs.find(JobFilter(name=NOTIFY_JOB))
    assert (job.queue, job.idempotency_key) == (ALERTS_QUEUE, f"alert:dlq_backlog:all:{start}")
    assert_clean(json.dumps(job.payload))

    await world.drain()
    assert (await world.jobs.get(job.id)).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    (post,) = world.posts()
    assert "Dead-letter queue backlog" in post
    assert "10 dead job(s)" in post
    assert "threshold 10" in post
    assert "payments=10" in post
    (email,) = world.emails()
    assert email.data["to"] == [OPS]
    assert "Dead-letter queue backlog" in email.data["subject"]
    assert_clean(post)
    assert_clean(email.data["text"])

    for _ in range(5):  # checked again: still once in this window
        await world.alerts.check()
    await world.drain()
    assert len(world.posts()) == 1
    assert len(world.emails()) == 1

    record = await world.record("alert:dlq_backlog:all")
    assert record["state"] == "firing"
    assert record["last_fired_at"] == world.clock.time()
    assert record["window_start"] == start
    assert record["job_id"] == job.id
    assert record["details"]["dead"] == 10


async def test_below_threshold_nothing_fires(world: World) -> None:
    """Nine dead jobs with a threshold of ten fire nothing and record nothing."""
    await world.bury(9)
    assert await world.alerts.check() == []
    await world.drain()
    assert world.posts() == []
    assert await world.alerts.records() == []


async def test_a_new_window_fires_again_and_resolution_is_recorded(world: World) -> None:
    """The backlog still there one window later notifies again; once the dead jobs are
    resolved, a check records the alert as resolved (and sends nothing)."""
    await world.bury(10)
    await world.alerts.check()
    await world.drain()
    assert len(world.posts()) == 1
    first = await world.record("alert:dlq_backlog:all")

    world.clock.advance(CONFIG.window / 2)
    await world.alerts.check()
    await world.drain()
    assert len(world.posts()) == 1  # same window (the windows are aligned on the epoch)

    world.clock.advance(CONFIG.window)
    (again,) = await world.alerts.check()
    assert again.created
    assert again.window_start == first["window_start"] + CONFIG.window
    await world.drain()
    assert len(world.posts()) == 2
    assert len(world.emails()) == 2
    second = await world.record("alert:dlq_backlog:all")
    assert second["last_fired_at"] > first["last_fired_at"]

    await world.jobs.dlq.resolve(DeadLetterFilter(), reason="handled by hand")
    world.clock.advance(60)
    assert await world.alerts.check() == []
    await world.drain()
    record = await world.record("alert:dlq_backlog:all")
    assert record["state"] == "resolved"
    assert record["last_resolved_at"] == world.clock.time()
    assert record["resolved_details"] == {"dead": 0, "threshold": 10}
    assert record["last_fired_at"] == second["last_fired_at"]
    assert len(world.posts()) == 2


async def test_the_scheduler_runs_the_check(world: World) -> None:
    """``alerts.check`` is a schedule: the scheduler enqueues its tick, a worker runs it, and
    the notification it enqueues is posted -- one post for two ticks in the same window."""
    await world.bury(10)
    scheduler = Scheduler(world.jobs)
    assert CHECK_JOB in [s.name for s in scheduler.schedules]
    fired = await scheduler.run_once()
    assert [f.schedule for f in fired if f.schedule == CHECK_JOB] == [CHECK_JOB]
    await world.drain()
    world.clock.advance(60)
    await scheduler.run_once()
    await world.drain()
    assert len(world.posts()) == 1
    checks = await world.jobs.find(JobFilter(name=CHECK_JOB))
    assert len(checks) == 2
    assert {j.state for j in checks} == {JobState.SUCCEEDED}


async def test_without_channels_alerts_are_recorded_only(
    tmp_path: Path, clock: FakeClock, sandbox: ProviderSandbox, connectors: Connectors
) -> None:
    """With neither Slack nor email configured nothing is enqueued or sent, but the record
    still shows the firing (once per window)."""
    made = build(tmp_path / "quiet.db", clock, sandbox, connectors, AlertConfig(dlq_threshold=1))
    async with made.jobs:
        await made.bury(1)
        first = await made.alerts.check()
        second = await made.alerts.check()
        assert [f.created for f in first + second] == [True, False]
        assert first[0].job_id is None
        await made.drain()
        assert made.posts() == []
        assert made.emails() == []
        assert await made.jobs.find(JobFilter(name=NOTIFY_JOB)) == []
        assert (await made.record("alert:dlq_backlog:all"))["state"] == "firing"


# -- error rates ------------------------------------------------------------------------------


async def send(world: World | Connectors, n: int) -> str | None:
    """One email through the Resend connector; the error code when it failed."""
    connectors = world.connectors if isinstance(world, World) else world
    try:
        await connectors.resend.send_email(
            sender="Shop <shop@acme.example>",
            to=CUSTOMER,
            subject="Your order",
            text="Thanks",
            idempotency_key=f"order-{n}",
        )
    except IntegrationError as exc:
        return exc.code
    return None


async def test_error_rate_fires_from_real_policy_events(
    tmp_path: Path, clock: FakeClock, sandbox: ProviderSandbox, connectors: Connectors
) -> None:
    """Resend answers 503: the connector's policy emits one AttemptFinished per attempt to
    the installed observer. 19 failures (under ``min_calls``) fire nothing; the 20th call
    (95% failed) fires ``error_rate`` for resend with its error code; once the window has
    slid past the failures, a check records it resolved."""
    config = AlertConfig(slack=True, dlq_threshold=1000)
    # no breaker on this policy: every call reaches the provider
    resend = ResendConnector(
        RESEND_KEY, base_url=sandbox.base_url("resend"), policy=one_attempt("resend", clock)
    )
    registry = Connectors(instances={"slack": connectors.slack, "resend": resend}, clock=clock)
    made = build(tmp_path / "rate.db", clock, sandbox, registry, config)
    async with made.jobs:
        made.alerts.install()
        sandbox.faults("resend", EMAILS, chaos=[(1.0, ProviderFault.error(503))])
        codes = [await send(made, n) for n in range(19)]
        assert set(codes) == {"UPSTREAM_UNAVAILABLE"}
        assert await made.alerts.check() == []
        sandbox.clear_faults("resend")
        assert await send(made, 19) is None
        rate = made.alerts.observer.rate("resend")
        assert (rate.calls, rate.failures) == (20, 19)

        (fired,) = await made.alerts.check()
        assert (fired.condition, fired.subject, fired.created) == ("error_rate", "resend", True)
        await made.drain()
        (post,) = made.posts()
        assert "High error rate" in post
        assert "resend: 19 of 20 attempts failed (95%)" in post
        assert "UPSTREAM_UNAVAILABLE=19" in post
        assert_clean(post)
        record = await made.record("alert:error_rate:resend")
        assert record["state"] == "firing"

        clock.advance(config.error_window + 10)
        assert await made.alerts.check() == []
        record = await made.record("alert:error_rate:resend")
        assert record["state"] == "resolved"
        assert record["resolved_details"]["calls"] == 0
        assert made.alerts.observer.rate("resend").calls == 0
    await resend.aclose()


# -- breakers -----------------------------------------------------------------------------------


async def test_a_breaker_opening_notifies_once_and_closing_resolves(world: World) -> None:
    """Resend's breaker opens after four failed calls: the listener fires ``breaker_open``
    at once (no check needed), one Slack post follows. It half-opens, the probe fails, it
    opens again in the same window: no second post. It recovers and closes: resolved."""
    world.sandbox.faults("resend", EMAILS, chaos=[(1.0, ProviderFault.error(503))])
    breaker = world.connectors.resend.policy.breaker
    assert breaker is not None
    for n in range(4):
        await send(world, n)
    assert state(breaker) is CircuitState.OPEN
    await wait_for_breaker_alerts(world.alerts)
    (job,) = await world.jobs.find(JobFilter(name=NOTIFY_JOB))
    assert job.idempotency_key == (f"alert:breaker_open:resend:{world.alerts.window_start()}")
    await world.drain()
    posts = world.posts()
    assert len(posts) == 1
    assert "Circuit breaker open" in posts[0]
    assert "resend: the circuit breaker opened" in posts[0]
    assert_clean(posts[0])
    assert world.emails() == []  # Resend itself is down: the email waits for it

    world.clock.advance(31)  # half-open; the probe fails: open again
    await send(world, 10)
    assert state(breaker) is CircuitState.OPEN
    await wait_for_breaker_alerts(world.alerts)
    await world.drain()
    assert len(world.posts()) == 1
    assert (await world.record("alert:breaker_open:resend"))["state"] == "firing"

    world.sandbox.clear_faults("resend")
    world.clock.advance(120)
    assert await send(world, 11) is None
    assert state(breaker) is CircuitState.CLOSED
    await wait_for_breaker_alerts(world.alerts)
    record = await world.record("alert:breaker_open:resend")
    assert record["state"] == "resolved"
    assert record["last_resolved_at"] == world.clock.time()

    world.clock.advance(CONFIG.window)  # past any back-off of the notification's retries
    await world.drain()
    (email,) = world.emails()  # the email once Resend is back; the Slack post not repeated
    assert email.data["to"] == [OPS]
    assert len(world.posts()) == 1
    sent = await world.jobs.get(job.id)
    assert sent is not None
    assert sent.state is JobState.SUCCEEDED


async def test_the_old_wait_method_still_waits_with_a_deprecation_warning(world: World) -> None:
    """``alerts.wait_for_breaker_alerts()`` keeps working for one release: it warns, names the
    function in ``antifragile.inbound.testing`` to use instead, and waits like it -- the
    firing's notification job is there when it returns."""
    breaker = CircuitBreaker("stripe", minimum_calls=1, window=1, clock=world.clock)
    world.alerts.watch("stripe", breaker)
    breaker.on_failure(breaker.acquire(), IntegrationError("boom", provider="stripe"))
    assert breaker.state is CircuitState.OPEN
    with pytest.warns(DeprecationWarning, match=r"from antifragile\.inbound\.testing import"):
        await world.alerts.wait_for_breaker_alerts()
    assert world.alerts.firings_under_way() == []
    (job,) = await world.jobs.find(JobFilter(name=NOTIFY_JOB))
    assert (job.payload["condition"], job.payload["subject"]) == ("breaker_open", "stripe")


# -- the admin endpoint -------------------------------------------------------------------------


@dataclass
class _Assistant:
    alerts: Alerts


async def test_admin_endpoint_lists_alert_records(world: World) -> None:
    """``GET /v1/admin/alerts`` needs an admin key and lists the records (filterable by
    condition and state); a bad filter is a 400 VALIDATION envelope."""
    await world.bury(10)
    await world.alerts.check()
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(alerts_router)
    app.state.settings = Settings.from_env({"ANTIFRAGILE_ADMIN_API_KEYS": BOOTSTRAP})
    app.state.assistant = _Assistant(world.alerts)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as client:
        denied = await client.get("/v1/admin/alerts")
        assert denied.status_code == 401
        headers = {"authorization": f"Bearer {BOOTSTRAP}"}
        answer = await client.get("/v1/admin/alerts", headers=headers)
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        (item,) = data["items"]
        assert item["key"] == "alert:dlq_backlog:all"
        assert item["state"] == "firing"
        assert data["channels"] == ["slack", "email"]
        assert_clean(answer.text)
        none = await client.get("/v1/admin/alerts?state=resolved", headers=headers)
        assert none.json()["data"]["items"] == []
        bad = await client.get("/v1/admin/alerts?condition=nope", headers=headers)
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "VALIDATION"


# -- the assistant ------------------------------------------------------------------------------


async def test_the_assistant_wires_alerts_from_its_settings(
    tmp_path: Path, clock: FakeClock, sandbox: ProviderSandbox, connectors: Connectors
) -> None:
    """The assistant builds its alerts from ANTIFRAGILE_ALERT_*, declares ``alerts.check`` and
    ``alerts.notify``, and on open observes its connectors' policies and listens to their
    breakers: Resend's breaker opening enqueues the notification."""
    from antifragile.service._assistant import Assistant

    settings = Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'assistant.db'}",
            "ANTIFRAGILE_ALERT_SLACK": "on",
            "ANTIFRAGILE_ALERT_DLQ_THRESHOLD": "3",
        }
    )
    assistant = Assistant(settings, clock=clock, connectors=connectors)
    assert assistant.alerts.config.slack is True
    assert assistant.alerts.config.dlq_threshold == 3
    assert {CHECK_JOB, NOTIFY_JOB} <= set(assistant.jobs.registry)
    async with assistant:
        observers = connectors.resend.policy.observer
        assert observers is not None
        assert assistant.alerts.observer in list(observers)
        sandbox.faults("resend", EMAILS, chaos=[(1.0, ProviderFault.error(503))])
        for n in range(4):
            assert await send(connectors, n) == "UPSTREAM_UNAVAILABLE"
        await wait_for_breaker_alerts(assistant.alerts)
        (job,) = await assistant.jobs.find(JobFilter(name=NOTIFY_JOB))
        assert job.payload["condition"] == "breaker_open"
        assert job.payload["subject"] == "resend"


# -- the watchdog (serve and the scheduler judge what no worker is there to) --------------------


async def test_watchdogs_alert_no_worker_once_and_send_it_themselves(
    world: World, connectors: Connectors
) -> None:
    """Two processes' watchdogs, no worker alive while workers are expected: one ``no_worker``
    notification for the window, sent by the watchdogs themselves (no worker would), once; when
    a worker beats again the condition is resolved."""
    other = build(world.path, world.clock, world.sandbox, connectors, CONFIG)
    async with other.jobs:
        dogs = [Watchdog(w.alerts, expect_workers=True) for w in (world, other)]
        results = await asyncio.gather(*(dog.evaluate() for dog in dogs for _ in range(3)))
    fired = [f for batch in results for f in batch if f.condition == "no_worker"]
    assert len(fired) == 6
    assert sum(f.created for f in fired) == 1
    (post,) = world.posts()
    assert "No worker alive" in post
    assert len(world.emails()) == 1
    (job,) = await world.jobs.find(JobFilter(name=NOTIFY_JOB))
    assert job.state is JobState.SUCCEEDED

    presence = Presence(lambda: world.jobs.queue, kind="worker", clock=world.clock)
    await presence.beat()
    assert [f.condition for f in await dogs[0].evaluate()] == []
    assert (await world.record("alert:no_worker:all"))["state"] == "resolved"


async def test_watchdog_alerts_queue_lag_and_leaves_it_to_a_live_worker(world: World) -> None:
    """A job due for longer than the threshold fires ``queue_lag``; with a worker alive the
    watchdog only enqueues the notification, the worker sends it."""
    presence = Presence(lambda: world.jobs.queue, kind="worker", clock=world.clock, interval=1)
    await world.jobs.registry["charge"].enqueue(1, PHONE, CUSTOMER)
    world.clock.advance(400)
    await presence.beat()
    dog = Watchdog(world.alerts, lag_threshold=300)
    (fired,) = await dog.evaluate()
    assert (fired.condition, fired.created) == ("queue_lag", True)
    assert world.posts() == []
    await world.drain()
    (post,) = world.posts()
    assert "Queue lag" in post
    assert "waited 400s" in post
    assert_clean(post)
