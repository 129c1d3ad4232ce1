"""The admin API over a real SQLite job database with dead jobs made by a real worker.

The app is the admin router with the service's envelope and error handlers, reached through
``httpx.ASGITransport``; jobs, flags, tasks and sessions live in one SQLite file. Two jobs die
before each test: ``charge`` (queue payments, provider stripe) at once on a 422, and ``notify``
(queue email, provider resend) after two 503s; their payloads and errors carry credentials and
a phone number that must never be answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.routing import APIRoute
from jwt.algorithms import RSAAlgorithm

from antifragile import (
    CircuitBreaker,
    CircuitOpenError,
    ConfigurationError,
    Constant,
    FakeClock,
    InvalidRequestError,
    Policy,
    Retry,
    UpstreamUnavailableError,
)
from antifragile.connectors import Connectors
from antifragile.inbound._delivery import DeliveryStatus
from antifragile.inbound._flags import FeatureFlags
from antifragile.inbound._model import Channel, Tenant
from antifragile.inbound._replies import OUTMSG_PREFIX, Replies, kv_of
from antifragile.inbound._sessions import Sessions
from antifragile.inbound._tasks import Tasks, task_id_for
from antifragile.jobs import JobContext, JobFilter, Jobs, JobState, Worker
from antifragile.sandbox import Fault, FlakyServer
from antifragile.service._admin import admin_router
from antifragile.service._auth import MISSING, NOT_CONFIGURED, SCOPES
from antifragile.service._envelope import RequestContextMiddleware, install_error_handlers
from antifragile.service._limits import InboundLimits
from antifragile.service._settings import Settings
from antifragile.stores import SharedCircuitBreaker, open_store

BOOTSTRAP = "bootstrap-admin-key-0123456789"
SECRET_NOTE = "Bearer abcdefghijklmnop"
SECRET_KEY = "re_live0123456789abcdef"
PHONE = "+447700900123"


@dataclass
class Backend:
    """What the admin router reads from ``app.state.assistant``."""

    settings: Settings
    jobs: Jobs
    clock: FakeClock
    flags: FeatureFlags
    tasks: Tasks
    sessions: Sessions
    connectors: Connectors
    replies: Replies
    circuit: dict[str, CircuitBreaker] = field(default_factory=dict)

    def breakers(self) -> dict[str, CircuitBreaker]:
        return self.circuit


@dataclass
class Admin:
    client: httpx.AsyncClient
    backend: Backend
    app: FastAPI
    charge: str
    notify: str
    done: str

    @property
    def jobs(self) -> Jobs:
        return self.backend.jobs

    async def state(self, job_id: str) -> JobState:
        job = await self.jobs.get(job_id)
        assert job is not None
        return job.state


def _declare(jobs: Jobs) -> None:
    @jobs.job(queue="payments", provider="stripe", retry=Retry(attempts=5))
    async def charge(ctx: JobContext, order_id: int, note: str, phone: str) -> None:
        raise InvalidRequestError("HTTP 422 card declined", status=422, provider="stripe")

    @jobs.job(queue="email", provider="resend", retry=Retry(attempts=2, backoff=Constant(1)))
    async def notify(ctx: JobContext, to: str) -> None:
        raise UpstreamUnavailableError(
            f"HTTP 503 from https://api.test/emails?api_key={SECRET_KEY}",
            status=503,
            provider="resend",
        )

    @jobs.job(queue="email")
    async def hello(ctx: JobContext) -> str:
        return "hi"


def build_app(backend: Backend) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.include_router(admin_router)
    app.state.settings = backend.settings
    app.state.assistant = backend
    return app


async def _backend(path: Path, settings: Settings) -> Backend:
    clock = FakeClock()
    jobs = Jobs(database_url=f"sqlite:///{path}", clock=clock)
    _declare(jobs)
    await jobs.open()
    connectors = Connectors(clock=clock)
    tasks = Tasks(jobs, clock=clock)
    replies = Replies(jobs, connectors, clock=clock, tasks=tasks)
    sessions = Sessions(jobs, connectors, {}, tenants={}, replies=replies, clock=clock)
    return Backend(
        settings=settings,
        jobs=jobs,
        clock=clock,
        flags=FeatureFlags(jobs, clock=clock),
        tasks=tasks,
        sessions=sessions,
        connectors=connectors,
        replies=replies,
        circuit={"shopify": CircuitBreaker("shopify", clock=clock)},
    )


def _client(app: FastAPI, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://admin.test", headers=headers
    )


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    settings = Settings.from_env({"ANTIFRAGILE_ADMIN_API_KEYS": BOOTSTRAP})
    backend = await _backend(tmp_path / "admin.db", settings)
    jobs = backend.jobs
    charge = await jobs.registry["charge"].enqueue(7, SECRET_NOTE, PHONE)
    notify = await jobs.registry["notify"].enqueue("a@example.com")
    done = await jobs.registry["hello"].enqueue()
    worker = Worker(jobs)
    await worker.run_until_idle()
    backend.clock.advance(1)
    await worker.run_until_idle()
    app = build_app(backend)
    async with _client(app, authorization=f"Bearer {BOOTSTRAP}") as client:
        made = Admin(client, backend, app, charge.id, notify.id, done.id)
        assert await made.state(charge.id) is JobState.DEAD
        assert await made.state(notify.id) is JobState.DEAD
        yield made
    await backend.connectors.aclose()
    await jobs.close()


def _data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True
    assert "request_id" in body["meta"]
    return body["data"]


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


# -- authentication -------------------------------------------------------------------------------


async def test_every_admin_route_refuses_without_credentials(admin: Admin) -> None:
    """Each route of the router answers 401 AUTH with WWW-Authenticate: Bearer when no
    credential, or a wrong one, is sent; without one, the message says how to send one and
    reaches the client whole (redaction leaves it alone)."""
    routes = [r for r in admin_router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 25
    async with (
        _client(admin.app) as anonymous,
        _client(admin.app, **{"x-api-key": "af_0123456789abcdef_wrong"}) as wrong,
    ):
        for route in routes:
            path = route.path.replace("{action}", "open")
            for name in ("job_id", "provider", "key", "task_id", "name", "key_id", "message_id"):
                path = path.replace("{" + name + "}", "x")
            for method in route.methods or ():
                for client in (anonymous, wrong):
                    response = await client.request(method, path, json={})
                    error = _error(response, 401, "AUTH")
                    assert response.headers["www-authenticate"].startswith("Bearer")
                    if client is anonymous:
                        assert error["message"] == MISSING, "the message is whole, unredacted"


async def test_bearer_and_x_api_key_both_work(admin: Admin) -> None:
    """A bootstrap key works as a bearer token and as X-API-Key."""
    async with _client(admin.app, **{"x-api-key": BOOTSTRAP}) as client:
        me = _data(await client.get("/v1/admin/whoami"))
    assert me["kind"] == "bootstrap_key"
    assert _data(await admin.client.get("/v1/admin/whoami"))["kind"] == "bootstrap_key"


async def test_guessing_keys_is_rate_limited_per_ip(admin: Admin) -> None:
    """With inbound limits on the app, an address that keeps sending wrong keys gets 429
    RATE_LIMITED with Retry-After before its credentials are even checked."""
    admin.app.state.limits = InboundLimits(ip_rate=(3, 60), clock=admin.backend.clock)
    async with _client(admin.app, **{"x-api-key": "af_0123456789abcdef_guess"}) as guesser:
        for _ in range(3):
            _error(await guesser.get("/v1/admin/dlq"), 401, "AUTH")
        refused = await guesser.get("/v1/admin/dlq")
        _error(refused, 429, "RATE_LIMITED")
        assert refused.headers["retry-after"] == "20"


async def test_unconfigured_auth_says_how_to_configure(tmp_path: Path) -> None:
    """With no admin keys and no JWT settings, admin routes refuse with the instructions."""
    backend = await _backend(tmp_path / "bare.db", Settings.from_env({}))
    try:
        async with _client(build_app(backend), **{"x-api-key": BOOTSTRAP}) as client:
            error = _error(await client.get("/v1/admin/dlq"), 401, "AUTH")
        assert error["message"] == NOT_CONFIGURED
        assert "ANTIFRAGILE_ADMIN_API_KEYS" in error["message"]
    finally:
        await backend.jobs.close()


async def test_api_key_lifecycle_over_http(admin: Admin) -> None:
    """POST /api-keys returns the plaintext once; the key works; GET lists it without any
    secret; DELETE revokes it and it stops working; an unknown id is 404."""
    created = _data(await admin.client.post("/v1/admin/api-keys", json={"name": "ops"}), 201)
    key = created["key"]
    assert key.startswith(f"af_{created['id']}_")
    async with _client(admin.app, **{"x-api-key": key}) as client:
        assert _data(await client.get("/v1/admin/whoami"))["subject"] == created["id"]
        listed = await admin.client.get("/v1/admin/api-keys")
        assert key not in listed.text
        assert key.split("_", 2)[2] not in listed.text
        assert [item["id"] for item in _data(listed)["items"]] == [created["id"]]
        revoked = _data(await admin.client.delete(f"/v1/admin/api-keys/{created['id']}"))
        assert revoked["active"] is False
        _error(await client.get("/v1/admin/whoami"), 401, "AUTH")
    _error(await admin.client.delete("/v1/admin/api-keys/ffffffff"), 404, "NOT_FOUND")
    _error(await admin.client.post("/v1/admin/api-keys", json={}), 400, "VALIDATION")


async def test_jwt_from_a_jwks_served_over_http(tmp_path: Path) -> None:
    """An RS256 token whose key is in a JWKS served over real HTTP is accepted; one with the
    wrong authorized party is refused."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "RS256"}
    with FlakyServer(default=Fault.ok(json={"keys": [jwk]})) as server:
        settings = Settings.from_env(
            {
                "ANTIFRAGILE_JWT_JWKS_URL": f"{server.url}/.well-known/jwks.json",
                "ANTIFRAGILE_JWT_ISSUER": "https://issuer.test",
                "ANTIFRAGILE_JWT_AUDIENCE": "antifragile-admin",
                "ANTIFRAGILE_JWT_AUTHORIZED_PARTIES": "https://admin.test, https://other.test",
            }
        )
        backend = await _backend(tmp_path / "jwt.db", settings)
        try:
            now = int(backend.clock.time())
            claims = {
                "sub": "user_9",
                "iss": "https://issuer.test",
                "aud": "antifragile-admin",
                "iat": now,
                "exp": now + 60,
            }
            good = jwt.encode(
                {**claims, "azp": "https://admin.test"}, key, "RS256", headers={"kid": "k1"}
            )
            bad = jwt.encode(
                {**claims, "azp": "https://evil.test"}, key, "RS256", headers={"kid": "k1"}
            )
            app = build_app(backend)
            async with _client(app, authorization=f"Bearer {good}") as client:
                me = _data(await client.get("/v1/admin/whoami"))
                assert (me["kind"], me["subject"]) == ("jwt", "user_9")
            async with _client(app, authorization=f"Bearer {bad}") as client:
                _error(await client.get("/v1/admin/whoami"), 401, "AUTH")
        finally:
            await backend.jobs.close()


# -- the dead-letter queue ------------------------------------------------------------------------


async def test_dlq_list_filters_and_redacts(admin: Admin) -> None:
    """GET /dlq lists the dead jobs (not the succeeded one), narrows by queue, provider and
    error code, and never shows credentials or the phone number."""
    response = await admin.client.get("/v1/admin/dlq")
    items = _data(response)["items"]
    assert {item["id"] for item in items} == {admin.charge, admin.notify}
    for secret in (SECRET_KEY, "abcdefghijklmnop", PHONE, "447700900123"):
        assert secret not in response.text
    for query, expected in (
        ("queue=payments", admin.charge),
        ("provider=resend", admin.notify),
        ("error_code=VALIDATION", admin.charge),
    ):
        found = _data(await admin.client.get(f"/v1/admin/dlq?{query}"))["items"]
        assert [item["id"] for item in found] == [expected]
    _error(await admin.client.get("/v1/admin/dlq?limit=0"), 400, "VALIDATION")


async def test_dlq_show_has_the_history_redacted(admin: Admin) -> None:
    """GET /dlq/{id} shows one dead job with every attempt, redacted; a job that is not dead
    or does not exist is 404."""
    response = await admin.client.get(f"/v1/admin/dlq/{admin.notify}")
    job = _data(response)
    assert job["state"] == "dead"
    assert job["last_error_code"] == "UPSTREAM_UNAVAILABLE"
    assert len(job["history"]) == 2
    assert SECRET_KEY not in response.text
    assert "a@example.com" not in response.text
    _error(await admin.client.get(f"/v1/admin/dlq/{admin.done}"), 404, "NOT_FOUND")
    _error(await admin.client.get("/v1/admin/dlq/nope"), 400, "BAD_REQUEST")  # not an id
    _error(await admin.client.get("/v1/admin/dlq/" + "f" * 32), 404, "NOT_FOUND")


async def test_dlq_retry_one_and_by_filter(admin: Admin) -> None:
    """POST /dlq/{id}/retry redrives one dead job; POST /dlq/retry redrives by filter;
    naming nothing, or a job that is not dead, is refused."""
    retried = _data(await admin.client.post(f"/v1/admin/dlq/{admin.notify}/retry"))
    assert retried["retried"] == 1
    assert await admin.state(admin.notify) is JobState.QUEUED
    _error(await admin.client.post(f"/v1/admin/dlq/{admin.notify}/retry"), 404, "NOT_FOUND")
    by_filter = _data(
        await admin.client.post("/v1/admin/dlq/retry", json={"provider": "stripe", "delay": "5m"})
    )
    assert by_filter["retried"] == 1
    charge = await admin.jobs.get(admin.charge)
    assert charge is not None
    assert charge.state is JobState.QUEUED
    assert charge.run_at == pytest.approx(admin.backend.clock.time() + 300)
    _error(await admin.client.post("/v1/admin/dlq/retry", json={}), 400, "VALIDATION")
    _error(
        await admin.client.post("/v1/admin/dlq/retry", json={"ids": [admin.done]}),
        404,
        "NOT_FOUND",
    )
    _error(
        await admin.client.post("/v1/admin/dlq/retry", json={"all": True, "delay": "soon"}),
        400,
        "VALIDATION",
    )


async def test_dlq_resolve_needs_a_reason(admin: Admin) -> None:
    """POST /dlq/{id}/resolve closes a dead job with its reason; no reason is 400; resolve by
    filter closes the rest."""
    _error(
        await admin.client.post(f"/v1/admin/dlq/{admin.charge}/resolve", json={}),
        400,
        "VALIDATION",
    )
    _error(
        await admin.client.post(f"/v1/admin/dlq/{admin.charge}/resolve", json={"reason": ""}),
        400,
        "VALIDATION",
    )
    done = _data(
        await admin.client.post(
            f"/v1/admin/dlq/{admin.charge}/resolve", json={"reason": "refunded by hand"}
        )
    )
    assert done["resolved"] == 1
    assert done["job"]["state"] == "resolved"
    assert done["job"]["resolution"] == "refunded by hand"
    rest = _data(
        await admin.client.post("/v1/admin/dlq/resolve", json={"all": True, "reason": "noise"})
    )
    assert rest["resolved"] == 1
    assert _data(await admin.client.get("/v1/admin/dlq"))["items"] == []
    everything = _data(await admin.client.get("/v1/admin/dlq?include_resolved=true"))
    assert len(everything["items"]) == 2


async def test_dlq_purge_older_than(admin: Admin) -> None:
    """POST /dlq/purge deletes dead jobs older than older_than (only those), and needs it."""
    assert _data(await admin.client.post("/v1/admin/dlq/purge", json={"older_than": "1h"})) == {
        "purged": 0
    }
    admin.backend.clock.advance(2 * 3600)
    purged = _data(
        await admin.client.post(
            "/v1/admin/dlq/purge", json={"older_than": "1h", "provider": "stripe"}
        )
    )
    assert purged == {"purged": 1}
    assert await admin.jobs.get(admin.charge) is None
    assert await admin.state(admin.notify) is JobState.DEAD
    _error(await admin.client.post("/v1/admin/dlq/purge", json={}), 400, "VALIDATION")
    _error(
        await admin.client.post("/v1/admin/dlq/purge", json={"older_than": -5}),
        400,
        "VALIDATION",
    )
    _error(
        await admin.client.post("/v1/admin/dlq/purge", json={"older_than": "1h", "x": 1}),
        400,
        "VALIDATION",
    )


# -- jobs -----------------------------------------------------------------------------------------


async def test_jobs_list_show_and_stats(admin: Admin) -> None:
    """GET /jobs filters by state and queue; GET /jobs/{id} shows one (404 when unknown);
    GET /jobs/stats counts jobs per state per queue."""
    dead = _data(await admin.client.get("/v1/admin/jobs?state=dead"))["items"]
    assert {item["id"] for item in dead} == {admin.charge, admin.notify}
    both = _data(await admin.client.get("/v1/admin/jobs?state=dead&state=succeeded&queue=email"))
    assert {item["id"] for item in both["items"]} == {admin.notify, admin.done}
    assert _data(await admin.client.get(f"/v1/admin/jobs/{admin.done}"))["state"] == "succeeded"
    _error(await admin.client.get("/v1/admin/jobs/unknown"), 400, "BAD_REQUEST")
    _error(await admin.client.get("/v1/admin/jobs/ffffffff"), 404, "NOT_FOUND")
    # the short id (as every view shows it) and any unique ending name the job too
    short = _data(await admin.client.get(f"/v1/admin/jobs/{admin.done[-10:]}"))
    assert short["id"] == admin.done
    assert short["short_id"] == admin.done[-10:]
    assert _data(await admin.client.get(f"/v1/admin/dlq/{admin.charge[-6:]}"))["id"] == admin.charge
    _error(await admin.client.get("/v1/admin/jobs?state=sleeping"), 400, "VALIDATION")
    stats = {
        entry["queue"]: entry for entry in _data(await admin.client.get("/v1/admin/jobs/stats"))
    }
    assert stats["email"]["counts"]["dead"] == 1
    assert stats["email"]["counts"]["succeeded"] == 1
    assert stats["payments"]["counts"]["dead"] == 1


# -- breakers -------------------------------------------------------------------------------------


async def test_breakers_force_open_close_and_reset(admin: Admin) -> None:
    """POST /breakers/{p}/open rejects calls; /close lets every call through (forced closed);
    /reset closes it normally; an unknown provider is 404, an unknown action 400."""
    breaker = admin.backend.circuit["shopify"]
    listed = _data(await admin.client.get("/v1/admin/breakers"))
    assert listed["shopify"]["state"] == "closed"
    opened = _data(await admin.client.post("/v1/admin/breakers/shopify/open"))
    assert opened["state"] == "forced_open"
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    closed = _data(await admin.client.post("/v1/admin/breakers/shopify/close"))
    assert closed["state"] == "disabled"
    breaker.acquire()
    reset = _data(await admin.client.post("/v1/admin/breakers/shopify/reset"))
    assert reset["state"] == "closed"
    _error(await admin.client.post("/v1/admin/breakers/hubspot/open"), 404, "NOT_FOUND")
    _error(await admin.client.post("/v1/admin/breakers/shopify/melt"), 400, "VALIDATION")


async def test_a_shared_breaker_is_listed_as_other_processes_left_it(
    admin: Admin, tmp_path: Path
) -> None:
    """GET /breakers shows a shared breaker as it is now, though this process made no call:
    the window's calls and failures of another process (not zeros), and the state it set."""
    clock = admin.backend.clock
    url = f"sqlite:///{tmp_path / 'breakers.db'}"
    here, there = await open_store(url, clock=clock), await open_store(url, clock=clock)
    try:
        options: dict[str, Any] = {"minimum_calls": 100, "clock": clock}
        admin.backend.circuit["crm"] = SharedCircuitBreaker("crm", here, **options)
        other = SharedCircuitBreaker("crm", there, **options)
        elsewhere = Policy("crm", breaker=other, retry=None, clock=clock)

        async def fails() -> None:
            raise ConnectionError("crm down")

        async def works() -> str:
            return "ok"

        for _ in range(2):
            await elsewhere.acall(works)
        for _ in range(3):
            with pytest.raises(ConnectionError):
                await elsewhere.acall(fails)
        listed = _data(await admin.client.get("/v1/admin/breakers"))["crm"]
        assert listed["state"] == "closed"
        assert (listed["metrics"]["calls"], listed["metrics"]["failures"]) == (5, 3)
        await other.aforce("forced_open")
        listed = _data(await admin.client.get("/v1/admin/breakers"))["crm"]
        assert listed["state"] == "forced_open"
    finally:
        await here.close()
        await there.close()


# -- flags ----------------------------------------------------------------------------------------


async def test_flags_read_and_change(admin: Admin) -> None:
    """GET /flags lists the documented flags; PUT turns one off (the app sees it at once);
    a non-bool body or a bad name is 400."""
    flags = _data(await admin.client.get("/v1/admin/flags"))
    assert flags["hubspot_sync"] is True
    changed = _data(await admin.client.put("/v1/admin/flags/hubspot_sync", json={"enabled": False}))
    assert changed == {"name": "hubspot_sync", "enabled": False, "default": True}
    assert await admin.backend.flags.is_enabled("hubspot_sync") is False
    one = _data(await admin.client.get("/v1/admin/flags/hubspot_sync"))
    assert one["enabled"] is False
    _error(
        await admin.client.put("/v1/admin/flags/hubspot_sync", json={"enabled": "no"}),
        400,
        "VALIDATION",
    )
    _error(
        await admin.client.put("/v1/admin/flags/Bad%20Name", json={"enabled": True}),
        400,
        "VALIDATION",
    )


# -- sessions and tasks ---------------------------------------------------------------------------


async def test_sessions_masked_and_reset(admin: Admin) -> None:
    """GET /sessions and /sessions/{key} mask the phone and email; POST reset starts the
    session over; an unknown key is 404."""
    key = Sessions.key_for("acme", PHONE)
    kv = admin.backend.tasks.kv
    await kv.set(
        key,
        {
            "key": key,
            "tenant_id": "acme",
            "phone": PHONE,
            "flow": "intake",
            "step": 2,
            "progress_status": "in_progress",
            "fields": {"name": "Ada", "email": "ada@example.com"},
            "round": 1,
            "created_at": 1.0,
        },
        now=admin.backend.clock.time(),
    )
    listed = await admin.client.get("/v1/admin/sessions?tenant_id=acme")
    assert [item["key"] for item in _data(listed)["items"]] == [key]
    shown = await admin.client.get(f"/v1/admin/sessions/{key}")
    assert _data(shown)["progress_status"] == "in_progress"
    for response in (listed, shown):
        assert "447700900123" not in response.text
        assert "ada@example.com" not in response.text
    assert _data(await admin.client.post(f"/v1/admin/sessions/{key}/reset"))["reset"] is True
    assert _data(await admin.client.get(f"/v1/admin/sessions/{key}"))["progress_status"] == "new"
    _error(await admin.client.get("/v1/admin/sessions/session:acme:nope"), 404, "NOT_FOUND")
    _error(await admin.client.post("/v1/admin/sessions/session:acme:nope/reset"), 404, "NOT_FOUND")


async def test_session_ids_stay_readable_while_personal_data_is_masked(admin: Admin) -> None:
    """GET /sessions/{key} masks by the shape of a value: ids under a key that names email
    or phone (``jobs.email``, ``summary_email_id``, a wamid, a uuid, a numeric order id) come
    back as they are, while phone numbers (``+44...``, ``whatsapp:+44...``, bare digits under
    a personal key) and emails, in fields or in a free text, are masked."""
    key = Sessions.key_for("acme", PHONE)
    job_id = "019a4f2c8e7b0123456789abcdef0123"
    resend_id = "4ef9a417-02e9-4d39-ad75-9611e0fcc33c"
    wamid = "wamid.HBgMNDQ3NzAwOTAwMTIzFQIAERgSQzA1"
    await admin.backend.tasks.kv.set(
        key,
        {
            "key": key,
            "tenant_id": "acme",
            "phone": "447700900123",
            "from": f"whatsapp:{PHONE}",
            "flow": "intake",
            "progress_status": "completed",
            "fields": {"email": "ada@example.com", "mobile": "07700 900456", "order": "5678901"},
            "jobs": {"email": job_id, "shopify": "019a4f2c8e7b0123456789abcdef4567"},
            "summary_email_id": resend_id,
            "last_message_id": wamid,
            "note": "call 07700900789 or mail bob@example.com",
            "created_at": 1.0,
        },
        now=admin.backend.clock.time(),
    )
    response = await admin.client.get(f"/v1/admin/sessions/{key}")
    shown = _data(response)
    assert shown["jobs"]["email"] == job_id
    assert shown["summary_email_id"] == resend_id
    assert shown["last_message_id"] == wamid
    assert shown["fields"]["order"] == "5678901"
    assert shown["from"] == "+4477••••••23"
    assert shown["phone"] == "+4477••••••23"
    assert shown["fields"]["email"] == "a•••@example.com"
    for personal in ("447700900123", "ada@example.com", "900456", "900789", "bob@example.com"):
        assert personal not in response.text


async def test_tasks_list_show_and_update(admin: Admin) -> None:
    """GET /tasks filters by status; PATCH changes status/assignee/priority; an invalid
    status or an empty change is 400; an unknown task 404."""
    task = await admin.backend.tasks.create(type="callback", title="Call the customer back")
    tasks = _data(await admin.client.get("/v1/admin/tasks?status=open"))["items"]
    assert [t["id"] for t in tasks] == [task["id"]]
    assert _data(await admin.client.get(f"/v1/admin/tasks/{task['id']}"))["title"]
    changed = _data(
        await admin.client.patch(
            f"/v1/admin/tasks/{task['id']}",
            json={"status": "done", "assignee": "sam", "priority": "high"},
        )
    )
    assert (changed["status"], changed["assignee"], changed["priority"]) == ("done", "sam", "high")
    assert _data(await admin.client.get("/v1/admin/tasks?status=open"))["items"] == []
    _error(
        await admin.client.patch(f"/v1/admin/tasks/{task['id']}", json={"status": "maybe"}),
        400,
        "VALIDATION",
    )
    _error(await admin.client.patch(f"/v1/admin/tasks/{task['id']}", json={}), 400, "VALIDATION")
    _error(
        await admin.client.patch("/v1/admin/tasks/nope", json={"status": "done"}), 404, "NOT_FOUND"
    )
    _error(await admin.client.get("/v1/admin/tasks/nope"), 404, "NOT_FOUND")
    _error(await admin.client.get("/v1/admin/tasks?status=maybe"), 400, "VALIDATION")


def test_openapi_documents_the_admin_routes(admin: Admin) -> None:
    """The OpenAPI schema lists the admin routes with their error envelopes and the two
    security schemes."""
    schema = admin.app.openapi()
    assert "/v1/admin/dlq/{job_id}/retry" in schema["paths"]
    get_dlq = schema["paths"]["/v1/admin/dlq"]["get"]
    assert {"401", "404"} <= set(get_dlq["responses"])
    assert {"AdminBearer", "AdminApiKey"} <= set(schema["components"]["securitySchemes"])


def _documented_model(method: str, path: str, status: int) -> Any:
    for route in admin_router.routes:
        if isinstance(route, APIRoute) and route.path == path and method in (route.methods or ()):
            return route.responses[status]["model"]
    raise AssertionError(f"no route {method} {path}")


async def test_every_admin_answer_matches_its_documented_model(admin: Admin) -> None:
    """Each admin route's real answer validates against the model its OpenAPI ``2xx``
    documents: the documented schemas describe what the routes send."""
    task = await admin.backend.tasks.create(type="callback", title="Call the customer back")
    await admin.backend.flags.set("new_menu", True)
    calls: list[tuple[str, str, str, dict[str, Any] | None, int]] = [
        ("GET", "/v1/admin/dlq", "/v1/admin/dlq", None, 200),
        ("GET", "/v1/admin/dlq/{job_id}", f"/v1/admin/dlq/{admin.charge}", None, 200),
        ("GET", "/v1/admin/jobs", "/v1/admin/jobs", None, 200),
        ("GET", "/v1/admin/jobs/stats", "/v1/admin/jobs/stats", None, 200),
        ("GET", "/v1/admin/jobs/{job_id}", f"/v1/admin/jobs/{admin.done}", None, 200),
        ("GET", "/v1/admin/messages", "/v1/admin/messages", None, 200),
        ("GET", "/v1/admin/breakers", "/v1/admin/breakers", None, 200),
        (
            "POST",
            "/v1/admin/breakers/{provider}/{action}",
            "/v1/admin/breakers/shopify/open",
            None,
            200,
        ),
        ("GET", "/v1/admin/sessions", "/v1/admin/sessions", None, 200),
        ("GET", "/v1/admin/tasks", "/v1/admin/tasks", None, 200),
        ("GET", "/v1/admin/tasks/{task_id}", f"/v1/admin/tasks/{task['id']}", None, 200),
        (
            "PATCH",
            "/v1/admin/tasks/{task_id}",
            f"/v1/admin/tasks/{task['id']}",
            {"status": "done"},
            200,
        ),
        ("GET", "/v1/admin/flags", "/v1/admin/flags", None, 200),
        ("GET", "/v1/admin/flags/{name}", "/v1/admin/flags/new_menu", None, 200),
        ("PUT", "/v1/admin/flags/{name}", "/v1/admin/flags/new_menu", {"enabled": False}, 200),
        ("POST", "/v1/admin/api-keys", "/v1/admin/api-keys", {"name": "ci"}, 201),
        ("GET", "/v1/admin/api-keys", "/v1/admin/api-keys", None, 200),
        ("GET", "/v1/admin/whoami", "/v1/admin/whoami", None, 200),
        ("POST", "/v1/admin/dlq/{job_id}/retry", f"/v1/admin/dlq/{admin.charge}/retry", {}, 200),
        (
            "POST",
            "/v1/admin/dlq/{job_id}/resolve",
            f"/v1/admin/dlq/{admin.notify}/resolve",
            {"reason": "sent by hand"},
            200,
        ),
        ("POST", "/v1/admin/dlq/retry", "/v1/admin/dlq/retry", {"all": True}, 200),
        (
            "POST",
            "/v1/admin/dlq/resolve",
            "/v1/admin/dlq/resolve",
            {"all": True, "reason": "done"},
            200,
        ),
        ("POST", "/v1/admin/dlq/purge", "/v1/admin/dlq/purge", {"older_than": "1w"}, 200),
    ]
    checked = 0
    for method, template, url, body, status in calls:
        answer = await admin.client.request(method, url, json=body)
        assert answer.status_code == status, (method, url, answer.text)
        model = _documented_model(method, template, status)
        envelope = model.model_validate(answer.json())
        assert envelope.success is True
        checked += 1
    created = await admin.client.get("/v1/admin/api-keys")
    key_id = created.json()["data"]["items"][0]["id"]
    revoked = await admin.client.delete(f"/v1/admin/api-keys/{key_id}")
    model = _documented_model("DELETE", "/v1/admin/api-keys/{key_id}", 200)
    assert model.model_validate(revoked.json()).data.active is False
    assert checked == len(calls)


# -- outbound replies -----------------------------------------------------------------------------

REPLY_TEXT = "Your table for two is booked at 8pm"
TENANT = Tenant(id="bistro", whatsapp_phone_number_id="1234567890")


async def _dead_reply(admin: Admin, key: str = "reply:1") -> tuple[str, str]:
    """A WhatsApp reply whose send may have happened (its marks set an hour ago, no echo
    since): a real worker runs its job, which dead-letters it as an unknown outcome."""
    replies = admin.backend.replies
    message_id = await replies.send(
        tenant=TENANT, channel=Channel.WHATSAPP, to=PHONE, text=REPLY_TEXT, key=key
    )
    kv = kv_of(admin.jobs)
    now = admin.backend.clock.time()
    marks = {"sending_since": now - 3600, "awaiting_since": now - 3600}
    await kv.merge(OUTMSG_PREFIX + message_id, marks, now=now)
    await Worker(admin.jobs).run_until_idle()
    found = await admin.jobs.find(JobFilter(name="replies.send"), limit=100)
    (job,) = [job for job in found if job.payload == {"message_id": message_id}]
    assert job.state is JobState.DEAD
    return job.id, message_id


async def test_messages_list_and_show_mask_the_number_and_show_the_text(admin: Admin) -> None:
    """GET /messages lists replies with their status, delivery status and masked number
    (filters and paging in the envelope); GET /messages/{id} adds the text; the DLQ detail of
    the reply's job shows the message (masked number, text); an unknown id is 404."""
    job_id, message_id = await _dead_reply(admin)
    listed = _data(await admin.client.get("/v1/admin/messages", params={"limit": 10}))
    assert listed["limit"] == 10
    assert listed["offset"] == 0
    (item,) = listed["items"]
    assert item["id"] == message_id
    assert item["tenant_id"] == "bistro"
    assert item["status"] == "failed"
    assert item["unknown_outcome"] is True
    assert "text" not in item
    assert PHONE.lstrip("+") not in str(listed)
    assert item["to"].endswith("23")
    for params in ({"status": "sent"}, {"tenant_id": "other"}, {"delivery_status": "read"}):
        assert _data(await admin.client.get("/v1/admin/messages", params=params))["items"] == []
    assert _data(await admin.client.get("/v1/admin/messages", params={"offset": 1}))["items"] == []
    shown = _data(await admin.client.get(f"/v1/admin/messages/{message_id}"))
    assert shown["text"] == REPLY_TEXT
    assert shown["channel"] == "whatsapp"
    assert PHONE.lstrip("+") not in str(shown)
    dead = _data(await admin.client.get(f"/v1/admin/dlq/{job_id}"))
    assert dead["message"]["text"] == REPLY_TEXT
    assert PHONE.lstrip("+") not in str(dead)
    _error(await admin.client.get("/v1/admin/messages/nope"), 404, "NOT_FOUND")
    _error(await admin.client.get("/v1/admin/messages", params={"limit": 0}), 400, "VALIDATION")


async def test_retry_without_force_waits_for_the_echo_again(admin: Admin) -> None:
    """Retrying a dead unknown-outcome reply without force, one by id or in bulk by filter,
    starts a fresh wait for the echo: the job is deferred (not dead again at once) and its
    send marks stay."""
    job_id, message_id = await _dead_reply(admin)
    _data(await admin.client.post(f"/v1/admin/dlq/{job_id}/retry"))
    await Worker(admin.jobs).run_until_idle()
    job = await admin.jobs.get(job_id)
    assert job is not None
    assert job.state is not JobState.DEAD
    record = await admin.backend.replies.get(message_id)
    assert record is not None
    assert record["sending_since"] is not None
    assert record["awaiting_since"] == pytest.approx(admin.backend.clock.time())
    # no echo within the fresh window: dead again; a redrive by filter waits afresh as well
    admin.backend.clock.advance(admin.backend.replies.windows["whatsapp"] + 1)
    await Worker(admin.jobs).run_until_idle()
    assert await admin.state(job_id) is JobState.DEAD
    bulk = _data(await admin.client.post("/v1/admin/dlq/retry", json={"name": "replies.send"}))
    assert bulk["retried"] == 1
    await Worker(admin.jobs).run_until_idle()
    assert await admin.state(job_id) is not JobState.DEAD


async def test_retry_with_force_clears_the_marks_so_the_reply_is_sent(admin: Admin) -> None:
    """POST /dlq/{id}/retry {"force": true} on an unknown-outcome reply clears its marks,
    notes who asked and requeues the job, whose next run calls the provider again; force on a
    job that is no reply is 409 NOT_A_REPLY, on a reply whose outcome is known 409."""
    job_id, message_id = await _dead_reply(admin)
    retried = _data(await admin.client.post(f"/v1/admin/dlq/{job_id}/retry", json={"force": True}))
    assert retried["retried"] == 1
    assert retried["job"]["state"] == "queued"
    record = await admin.backend.replies.get(message_id)
    assert record is not None
    assert record["sending_since"] is None
    assert record["awaiting_since"] is None
    assert record["forced_by"]
    assert record["forced_at"] == admin.backend.clock.time()
    _error(
        await admin.client.post(f"/v1/admin/dlq/{admin.notify}/retry", json={"force": True}),
        409,
        "NOT_A_REPLY",
    )
    # the next run sends: no WhatsApp credentials here, so it fails as a configuration error,
    # not as an unknown outcome
    await Worker(admin.jobs).run_until_idle()
    job = await admin.jobs.get(job_id)
    assert job is not None
    assert job.state is JobState.DEAD
    assert job.last_error_code == "CONFIGURATION"
    record = await admin.backend.replies.get(message_id)
    assert record is not None
    assert record["awaiting_since"] is None
    _error(
        await admin.client.post(f"/v1/admin/dlq/{job_id}/retry", json={"force": True}),
        409,
        "NOT_UNKNOWN_OUTCOME",
    )


async def test_mark_sent_resolves_the_job_and_flags_the_reply_sent(admin: Admin) -> None:
    """POST /dlq/{id}/mark-sent resolves the dead reply job with who marked it, and the
    reply's status flag becomes sent with who and when; a job that is no reply is 409, an
    unknown or no longer dead job 404."""
    job_id, message_id = await _dead_reply(admin)
    marked = _data(
        await admin.client.post(
            f"/v1/admin/dlq/{job_id}/mark-sent", json={"note": "customer confirmed by phone"}
        )
    )
    assert marked["job"]["state"] == "resolved"
    assert "customer confirmed by phone" in marked["job"]["resolution"]
    assert marked["message"]["status"] == "sent"
    assert marked["message"]["marked_sent_by"]
    assert marked["message"]["marked_sent_at"] == admin.backend.clock.time()
    record = await admin.backend.replies.get(message_id)
    assert record is not None
    assert record["status"] == "sent"
    assert record["sending_since"] is None
    assert record["awaiting_since"] is None
    _error(await admin.client.post(f"/v1/admin/dlq/{job_id}/mark-sent"), 404, "NOT_FOUND")
    _error(await admin.client.post(f"/v1/admin/dlq/{admin.charge}/mark-sent"), 409, "NOT_A_REPLY")
    _error(await admin.client.post("/v1/admin/dlq/nope/mark-sent"), 400, "BAD_REQUEST")


async def test_a_dead_reply_and_a_permanently_failed_one_each_make_one_task(admin: Admin) -> None:
    """A reply dead-lettered, and a reply whose provider reports a permanent failure (WhatsApp
    131026, reported twice), each leave exactly one follow-up task (number masked), listed by
    GET /tasks and named on the message."""
    _, dead_id = await _dead_reply(admin)
    replies = admin.backend.replies
    failed_id = await replies.send(
        tenant=TENANT, channel=Channel.WHATSAPP, to=PHONE, text=REPLY_TEXT, key="reply:2"
    )
    for event_id in ("e1", "e2"):
        status = DeliveryStatus(
            provider="whatsapp",
            event_id=event_id,
            status="failed",
            provider_status="failed",
            correlation=failed_id,
            error_code="131026",
        )
        await replies.deliveries.record(status)
    tasks = _data(await admin.client.get("/v1/admin/tasks"))["items"]
    follow_ups = [task for task in tasks if task["type"] == "reply_failed"]
    assert sorted(task["id"] for task in follow_ups) == sorted(
        task_id_for(f"reply-failed:{message_id}") for message_id in (dead_id, failed_id)
    )
    assert PHONE.lstrip("+") not in str(follow_ups)
    assert all(task["priority"] == "high" for task in follow_ups)
    for message_id in (dead_id, failed_id):
        shown = _data(await admin.client.get(f"/v1/admin/messages/{message_id}"))
        assert shown["task_id"] == task_id_for(f"reply-failed:{message_id}")


# -- numbers and durations at the edge ------------------------------------------------------------


@pytest.mark.parametrize("delay", ["9" * 400, 1e308, "1e5", "99999999999w", -1, "nan", "inf", "5x"])
async def test_an_overflowing_delay_is_refused_and_nothing_is_saved(
    admin: Admin, delay: object
) -> None:
    """``{"delay": "999...9"}`` (400 digits) once saved a job with ``run_at = inf`` and broke
    every later listing: now 400 VALIDATION, the job stays dead, and the jobs list answers."""
    response = await admin.client.post(f"/v1/admin/dlq/{admin.charge}/retry", json={"delay": delay})
    _error(response, 400, "VALIDATION")
    response = await admin.client.post(
        "/v1/admin/dlq/retry", json={"ids": [admin.charge], "delay": delay}
    )
    _error(response, 400, "VALIDATION")
    assert await admin.state(admin.charge) is JobState.DEAD
    listed = _data(await admin.client.get("/v1/admin/jobs"))
    assert {item["id"] for item in listed["items"]} >= {admin.charge, admin.notify}


async def test_offsets_and_limits_are_bounded(admin: Admin) -> None:
    """``offset=99999999999999999999`` overflowed SQLite (500): now 400 VALIDATION, as is an
    offset past a million or a limit past 500, on every listing."""
    for path in ("/v1/admin/jobs", "/v1/admin/dlq", "/v1/admin/messages"):
        for query in ("offset=99999999999999999999", "offset=1000001", "limit=501", "limit=0"):
            _error(await admin.client.get(f"{path}?{query}"), 400, "VALIDATION")
        assert _data(await admin.client.get(f"{path}?offset=1000000"))["items"] == []


async def test_the_job_store_refuses_non_finite_times(admin: Admin) -> None:
    """Below the API too: a redrive with an infinite delay and an enqueue at an infinite or
    NaN time raise ConfigurationError; nothing is saved."""
    jobs = admin.jobs
    with pytest.raises(ConfigurationError):
        await jobs.dlq.retry([admin.charge], delay=float("inf"))
    assert await admin.state(admin.charge) is JobState.DEAD
    before = len(await jobs.find(JobFilter(), limit=100))
    hello = jobs.registry["hello"]
    with pytest.raises(ConfigurationError):
        await hello.configure(run_at=float("inf")).enqueue()
    with pytest.raises(ConfigurationError):
        await hello.configure(run_at=float("nan")).enqueue()
    with pytest.raises(ConfigurationError):
        await hello.configure(delay=float("inf")).enqueue()
    assert len(await jobs.find(JobFilter(), limit=100)) == before


# -- scopes, expiry, last use and cascading revocation ------------------------------------------


async def _new_key(client: httpx.AsyncClient, name: str, **options: Any) -> tuple[str, str]:
    created = _data(await client.post("/v1/admin/api-keys", json={"name": name, **options}), 201)
    return created["id"], created["key"]


def _route_calls() -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    for route in admin_router.routes:
        if not isinstance(route, APIRoute):
            continue
        path = route.path.replace("{action}", "reset")
        for name in ("job_id", "provider", "key", "task_id", "name", "key_id", "message_id"):
            path = path.replace("{" + name + "}", "x")
        calls.extend((method, path) for method in sorted(route.methods or ()))
    return calls


async def test_every_admin_route_enforces_its_scope(admin: Admin) -> None:
    """A read key passes every GET but api-keys and is 403 FORBIDDEN on every action; an
    operate key passes the actions but no key management; only an admin key manages keys."""
    needs = {"read": 0, "operate": 0, "admin": 0}
    keys = {}
    for scope in ("read", "operate", "admin"):
        keys[scope] = (await _new_key(admin.client, scope, scopes=[scope]))[1]
    for method, path in _route_calls():
        needed = "admin" if "/api-keys" in path else "read" if method == "GET" else "operate"
        needs[needed] += 1
        for scope, key in keys.items():
            async with _client(admin.app, **{"x-api-key": key}) as client:
                response = await client.request(method, path, json={})
            allowed = SCOPES.index(scope) >= SCOPES.index(needed)
            if allowed:
                assert response.status_code != 403, (scope, method, path, response.text)
            else:
                error = _error(response, 403, "FORBIDDEN")
                assert needed in error["message"], (scope, method, path)
    assert needs["read"] >= 10
    assert needs["operate"] >= 10
    assert needs["admin"] == 3


async def test_a_leaked_operate_key_cannot_mint_a_successor(admin: Admin) -> None:
    """The default key (read + operate) cannot create keys; an admin key's children die with
    it (to any depth) unless revoked with cascade=false."""
    _, operate = await _new_key(admin.client, "ops")
    async with _client(admin.app, **{"x-api-key": operate}) as leaked:
        _error(await leaked.post("/v1/admin/api-keys", json={"name": "mine"}), 403, "FORBIDDEN")
        assert _data(await leaked.get("/v1/admin/whoami"))["kind"] == "api_key"
    parent_id, parent = await _new_key(admin.client, "parent", scopes=["admin"])
    async with _client(admin.app, **{"x-api-key": parent}) as client:
        child_id, child = await _new_key(client, "child", scopes=["admin"])
    async with _client(admin.app, **{"x-api-key": child}) as client:
        grandchild_id, grandchild = await _new_key(client, "grandchild")
        listed = _data(await client.get("/v1/admin/api-keys"))["items"]
    made_by = {item["id"]: item["created_by"] for item in listed}
    assert made_by[child_id] == parent_id
    assert made_by[grandchild_id] == child_id
    assert made_by[parent_id] == "env:1"
    revoked = _data(await admin.client.delete(f"/v1/admin/api-keys/{parent_id}"))
    assert sorted(revoked["also_revoked"]) == sorted([child_id, grandchild_id])
    for key in (parent, child, grandchild):
        async with _client(admin.app, **{"x-api-key": key}) as client:
            _error(await client.get("/v1/admin/whoami"), 401, "AUTH")
    # cascade=false: only the key itself
    lone_id, lone = await _new_key(admin.client, "lone", scopes=["admin"])
    async with _client(admin.app, **{"x-api-key": lone}) as client:
        _, kept = await _new_key(client, "kept")
    answer = _data(await admin.client.delete(f"/v1/admin/api-keys/{lone_id}?cascade=false"))
    assert answer["also_revoked"] == []
    async with _client(admin.app, **{"x-api-key": kept}) as client:
        assert _data(await client.get("/v1/admin/whoami"))["kind"] == "api_key"


async def test_keys_expire_and_record_their_last_use(admin: Admin) -> None:
    """A key made with ``expires_in`` stops working once the (fake) clock passes it; its
    last-used time is written on use, at most once a minute; a bad expiry is 400."""
    key_id, key = await _new_key(admin.client, "temp", expires_in="1h")
    clock = admin.backend.clock

    async def last_used() -> float | None:
        items = _data(await admin.client.get("/v1/admin/api-keys"))["items"]
        found: float | None = next(i for i in items if i["id"] == key_id)["last_used_at"]
        return found

    assert await last_used() is None
    async with _client(admin.app, **{"x-api-key": key}) as client:
        _data(await client.get("/v1/admin/whoami"))
        first = await last_used()
        assert first == clock.time()
        clock.advance(30)
        _data(await client.get("/v1/admin/whoami"))
        assert await last_used() == first
        clock.advance(31)
        _data(await client.get("/v1/admin/whoami"))
        assert await last_used() == clock.time()
        clock.advance(3600)
        _error(await client.get("/v1/admin/whoami"), 401, "AUTH")
    for bad in ({"expires_in": "9" * 400}, {"expires_in": -5}, {"scopes": ["root"]}):
        response = await admin.client.post("/v1/admin/api-keys", json={"name": "x", **bad})
        _error(response, 400, "VALIDATION")
