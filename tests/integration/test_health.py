"""``GET /health`` and ``GET /ready`` against real dependencies: a SQLite file, Redis when it
is there, circuit breakers tripped by real failures -- and a database that goes away."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import antifragile
from antifragile import Policy
from antifragile.connectors import Connectors
from antifragile.errors import UpstreamUnavailableError
from antifragile.policies import CircuitBreaker, FakeClock
from antifragile.service import Settings, create_app
from antifragile.stores import SharedCircuitBreaker, open_store
from tests._service_standin import StandInAssistant


@asynccontextmanager
async def serving(
    assistant: StandInAssistant, **options: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The app with its lifespan running, and a client to it (in this event loop)."""
    app = create_app(assistant.settings, assistant=assistant, **options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client, app


def settings_for(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'h.db'}", **env})


def trip(breaker: CircuitBreaker) -> None:
    """Open *breaker* the way real calls do: failures past its threshold."""
    for _ in range(2):
        token = breaker.acquire()
        breaker.on_failure(token, UpstreamUnavailableError("HTTP 503", provider=breaker.name))


async def test_healthy(tmp_path: Path) -> None:
    """Database up, breakers closed: 200 healthy with version, uptime and dependencies."""
    assistant = StandInAssistant(settings_for(tmp_path))
    assistant.breakers_by_name["slack"] = CircuitBreaker("slack")
    async with serving(assistant) as (client, _):
        response = await client.get("/health")
        assert response.status_code == 200
        body = response.json()
        assert body["success"] is True
        data = body["data"]
        assert data["status"] == "healthy"
        assert data["version"] == antifragile.__version__
        assert data["uptime"] >= 0
        assert data["dependencies"] == {"database": "up", "breaker:slack": "closed"}
        assert body["meta"]["request_id"] == response.headers["x-request-id"]

        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["data"] == {"ready": True}


async def test_an_open_breaker_degrades(tmp_path: Path) -> None:
    """A provider whose breaker opened makes the service degraded -- still 200, since every
    event is still recorded -- and is listed as open."""
    clock = FakeClock()
    assistant = StandInAssistant(settings_for(tmp_path))
    shopify = CircuitBreaker("shopify", minimum_calls=2, window=2, clock=clock)
    trip(shopify)
    assistant.breakers_by_name.update(shopify=shopify, slack=CircuitBreaker("slack"))
    async with serving(assistant) as (client, _):
        response = await client.get("/health")
        assert response.status_code == 200
        data = response.json()["data"]
        assert data["status"] == "degraded"
        assert data["dependencies"]["breaker:shopify"] == "open"
        assert data["dependencies"]["breaker:slack"] == "closed"

        clock.advance(shopify.config.open_duration)
        data = (await client.get("/health")).json()["data"]
        assert data["dependencies"]["breaker:shopify"] == "half_open"
        assert data["status"] == "healthy"


async def test_a_shared_breaker_opened_elsewhere_shows(tmp_path: Path) -> None:
    """A shared breaker opened by another process (another breaker on the same store) is
    reported open: /health reads the shared record."""
    store = await open_store(f"sqlite:///{tmp_path / 'breakers.db'}")
    try:
        ours = SharedCircuitBreaker("hubspot", store, minimum_calls=2)
        theirs = SharedCircuitBreaker("hubspot", store, minimum_calls=2)
        await theirs.aforce("forced_open")
        assistant = StandInAssistant(settings_for(tmp_path))
        assistant.breakers_by_name["hubspot"] = ours
        async with serving(assistant) as (client, _):
            # /health gives the store a second to answer and otherwise reports the cached
            # state: on a busy machine the first look may be that one, a later one is not
            for _ in range(100):
                data = (await client.get("/health")).json()["data"]
                if data["dependencies"]["breaker:hubspot"] != "closed":
                    break
                await asyncio.sleep(0.1)
        assert data["dependencies"]["breaker:hubspot"] == "forced_open"
        assert data["status"] == "degraded"
    finally:
        await store.close()


async def test_database_gone_is_unhealthy(tmp_path: Path) -> None:
    """When the database does not answer, /health is 503 unhealthy (the report still in
    ``data``) and /ready is 503."""
    assistant = StandInAssistant(settings_for(tmp_path))
    async with serving(assistant) as (client, _):
        await assistant.jobs.queue.store.close()
        response = await client.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["success"] is False
        assert body["error"]["code"] == "STORE_UNAVAILABLE"
        assert body["data"]["status"] == "unhealthy"
        assert body["data"]["dependencies"]["database"] == "down"

        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "STORE_UNAVAILABLE"


async def test_not_ready_outside_the_lifespan(tmp_path: Path) -> None:
    """Before start-up and after shutdown /ready is 503 and /health unhealthy."""
    assistant = StandInAssistant(settings_for(tmp_path))
    app = create_app(assistant.settings, assistant=assistant)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        assert (await client.get("/ready")).status_code == 503
        assert (await client.get("/health")).status_code == 503
        async with app.router.lifespan_context(app):
            assert (await client.get("/ready")).status_code == 200
        assert (await client.get("/ready")).status_code == 503
        assert (await client.get("/v1/webhooks/shopify", headers={})).status_code == 405


async def test_redis_up(tmp_path: Path, redis_url: str) -> None:
    """With ANTIFRAGILE_REDIS_URL set, Redis is a dependency: up when it answers."""
    assistant = StandInAssistant(settings_for(tmp_path, ANTIFRAGILE_REDIS_URL=redis_url))
    async with serving(assistant) as (client, _):
        data = (await client.get("/health")).json()["data"]
    assert data["dependencies"]["redis"] == "up"
    assert data["status"] == "healthy"


async def test_redis_down_degrades(tmp_path: Path) -> None:
    """A configured Redis that does not answer degrades the service (breakers and limits run
    process-local); it does not make it unhealthy."""
    settings = settings_for(tmp_path, ANTIFRAGILE_REDIS_URL="redis://127.0.0.1:1/0")
    assistant = StandInAssistant(settings)
    async with serving(assistant) as (client, _):
        response = await client.get("/health")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["dependencies"]["redis"] == "down"
    assert data["status"] == "degraded"


async def test_the_app_builds_and_closes_its_own_assistant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an assistant, the lifespan builds one from the settings, opens it, and closes
    it on shutdown."""
    built: list[StandInAssistant] = []

    def build(settings: Settings, **kwargs: Any) -> StandInAssistant:
        built.append(StandInAssistant(settings, **kwargs))
        return built[-1]

    module = types.ModuleType("antifragile.service._assistant")
    module.Assistant = build  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "antifragile.service._assistant", module)
    app = create_app(settings_for(tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            assert (await client.get("/ready")).status_code == 200
    assert [(a.opened, a.closed) for a in built] == [(1, 1)]


async def test_the_serving_email_provider_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an email chain configured, ``email:serving`` names the provider the next email
    goes to: the fallback while the primary's breaker is open, the primary once it is not."""
    clock = FakeClock()
    monkeypatch.setenv("ANTIFRAGILE_EMAIL_CHAIN", "resend,sendgrid")
    resend = CircuitBreaker("resend", minimum_calls=2, window=2, clock=clock)
    connectors = Connectors(
        options={"resend": {"api_key": "re_x"}, "sendgrid": {"api_key": "SG.x"}},
        policies={"resend": Policy("resend", breaker=resend, clock=clock)},
        clock=clock,
    )
    assistant = StandInAssistant(settings_for(tmp_path))
    assistant.connectors = connectors  # type: ignore[attr-defined]
    async with serving(assistant) as (client, _):
        data = (await client.get("/health")).json()["data"]
        assert data["dependencies"]["email:serving"] == "resend"
        trip(resend)
        data = (await client.get("/health")).json()["data"]
        assert data["dependencies"]["email:serving"] == "sendgrid"
        clock.advance(resend.config.open_duration)
        data = (await client.get("/health")).json()["data"]
        assert data["dependencies"]["email:serving"] == "resend"
    await connectors.aclose()
