"""``GET /health`` and ``GET /ready``.

``/health`` reports every dependency and an overall status:

* ``database`` -- the job queue's store answers a ping within the timeout (``up``/``down``);
  down makes the service ``unhealthy`` (HTTP 503): nothing can be recorded;
* ``redis`` -- when ``ANTIFRAGILE_REDIS_URL`` is set: the assistant's shared-state store, which
  holds the breakers and the per-sender limit; down makes it ``degraded`` (they fall back to
  process-local state);
* ``breaker:<provider>`` -- each provider breaker's state (``closed``, ``open``,
  ``half_open``...); an open one makes it ``degraded`` (its jobs wait; nothing is lost);
* ``email:serving`` -- when ``ANTIFRAGILE_EMAIL_CHAIN`` names an email chain: the provider the
  next email goes to (``none`` when every one is skipped; see
  :mod:`antifragile.connectors._failover`);
* ``secret:<VARIABLE>`` -- ``missing`` when a configured channel lacks the secret its webhooks
  are verified with (``ANTIFRAGILE_WHATSAPP_APP_SECRET``...): ``degraded``, those webhooks are
  refused (see :mod:`antifragile.service._checks`);
* ``public_url`` -- ``missing`` when Twilio or HubSpot is set up and neither
  ``ANTIFRAGILE_PUBLIC_URL`` nor ``ANTIFRAGILE_ALLOWED_HOSTS`` says which URL their signatures
  cover: ``degraded``, those webhooks are refused.

Liveness (when the database answers): ``workers`` and ``schedulers`` -- how many are alive
(their heartbeat rows, see :mod:`antifragile.jobs._liveness`), how many rows are stale and when
one was last seen -- and ``queue_lag``, the age in seconds of the oldest job that is due and not
running. The service is ``degraded`` when no worker is alive while workers are expected
(``ANTIFRAGILE_EXPECT_WORKERS``, or a worker was seen and went silent), or when the lag passes
``ANTIFRAGILE_QUEUE_LAG_THRESHOLD``; ``problems`` says why, one short line each.

``degraded`` answers 200: the service still accepts and records everything. ``/ready`` answers
200 once the app has finished starting and the database answers, else 503. ``HEAD`` on either
answers the same status without a body (for load balancers and container health checks).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

import antifragile
from antifragile.connectors._failover import email_serving
from antifragile.errors import ErrorCode, ErrorEnvelope, SuccessEnvelope
from antifragile.jobs._liveness import liveness
from antifragile.observability import current_request_id
from antifragile.policies import CircuitBreaker, CircuitState
from antifragile.service._envelope import duration_ms, error_responses, ok
from antifragile.service._schemas import Readiness
from antifragile.service._state import ServiceState

_log = logging.getLogger("antifragile.service")

#: how long a dependency may take to answer a health check (seconds)
DEFAULT_CHECK_TIMEOUT = 1.0

_OPEN_STATES = frozenset({CircuitState.OPEN, CircuitState.FORCED_OPEN})


class ProcessCounts(BaseModel):
    """The processes of one kind: alive, stale (dead) rows, last seen (epoch seconds)."""

    alive: int
    dead: int
    last_seen: float | None


class HealthData(BaseModel):
    status: str
    version: str
    uptime: float
    dependencies: dict[str, str]
    workers: ProcessCounts | None = None
    schedulers: ProcessCounts | None = None
    queue_lag: float | None = None
    problems: list[str] = []


HealthEnvelope = SuccessEnvelope[HealthData]


class UnhealthyEnvelope(ErrorEnvelope):
    """The failure envelope of an unhealthy service, with the health report in ``data``."""

    data: HealthData


async def _ping(store: Any, within: float) -> str:
    if store is None:
        return "down"
    try:
        await asyncio.wait_for(store.ping(), within)
    except Exception as exc:  # any failure, a timeout included, means down
        _log.warning("health: %s is down: %s", type(store).__name__, type(exc).__name__)
        return "down"
    return "up"


def _redis_store(state: ServiceState) -> Any:
    """The assistant's shared-state store (Redis, as configured): the one its breakers and
    limits use, so ``down`` means they run process-local."""
    return getattr(state.assistant, "state_store", None)


def _database_store(state: ServiceState) -> Any:
    assistant = state.assistant
    if assistant is None or not assistant.jobs.is_open:
        return None
    return getattr(assistant.jobs.queue, "store", None)


async def _breaker_states(state: ServiceState, within: float) -> dict[str, CircuitState]:
    assistant = state.assistant
    if assistant is None:
        return {}
    breakers: dict[str, CircuitBreaker] = dict(assistant.breakers())
    shared = [b.refresh() for b in breakers.values() if hasattr(b, "refresh")]
    if shared:  # read other processes' transitions; a slow store only leaves the cached state
        try:
            await asyncio.wait_for(asyncio.gather(*shared, return_exceptions=True), within)
        except TimeoutError:
            pass
    return {name: breaker.state for name, breaker in sorted(breakers.items())}


async def _liveness(state: ServiceState, within: float) -> dict[str, Any]:
    """Workers, schedulers, queue lag and the problems they show (empty when unreadable)."""
    assistant = state.assistant
    if assistant is None:
        return {}
    now = assistant.jobs.clock.time()
    try:
        queue = assistant.jobs.queue
        async with asyncio.timeout(within):
            processes = await queue.processes()
            stats = await queue.stats(now=now)
    except Exception as exc:  # reported as the database's state
        _log.warning("health: liveness not readable: %s", type(exc).__name__)
        return {}
    settings = state.settings
    kinds = liveness(processes, now=now, dead_after=settings.worker_dead_after)
    oldest = min((s.oldest_ready_at for s in stats if s.oldest_ready_at is not None), default=None)
    lag = 0.0 if oldest is None else round(max(0.0, now - oldest), 3)
    problems: list[str] = []
    workers = kinds["worker"]
    if workers.alive == 0 and (settings.expect_workers or workers.dead):
        problems.append("no worker is alive: jobs are recorded but not run")
    if lag > settings.queue_lag_threshold:
        problems.append(
            f"queue lag {lag:g}s is over {settings.queue_lag_threshold:g}s: workers fall behind"
        )
    return {
        "workers": workers.to_json(),
        "schedulers": kinds["scheduler"].to_json(),
        "queue_lag": lag,
        "problems": problems,
    }


def _missing_secrets(state: ServiceState) -> list[str]:
    """The webhook secrets a configured channel lacks (:func:`missing_secrets`)."""
    from antifragile.service._checks import missing_secrets

    assistant = state.assistant
    tenants = getattr(assistant, "tenants", None) or state.settings.tenant_list()
    return missing_secrets(state.settings, tenants, getattr(assistant, "connectors", None))


def _unverifiable(state: ServiceState) -> list[str]:
    """The URL-signing providers set up without a known URL (:func:`unverifiable_webhooks`)."""
    from antifragile.service._checks import unverifiable_webhooks

    assistant = state.assistant
    tenants = getattr(assistant, "tenants", None) or state.settings.tenant_list()
    return unverifiable_webhooks(state.settings, tenants, getattr(assistant, "connectors", None))


async def health_report(
    state: ServiceState, *, within: float = DEFAULT_CHECK_TIMEOUT
) -> dict[str, Any]:
    """The ``/health`` report: status, version, uptime (seconds) and dependencies; each
    dependency has *within* seconds to answer."""
    checks: list[Any] = [_ping(_database_store(state), within)]
    if state.settings.redis_url:
        checks.append(_ping(_redis_store(state), within))
    checks.append(_breaker_states(state, within))
    results = await asyncio.gather(*checks)
    dependencies: dict[str, str] = {"database": results[0]}
    status = "healthy" if results[0] == "up" else "unhealthy"
    if state.settings.redis_url:
        dependencies["redis"] = results[1]
        if results[1] != "up" and status == "healthy":
            status = "degraded"
    breakers: dict[str, CircuitState] = results[-1]
    for name, breaker_state in breakers.items():
        dependencies[f"breaker:{name}"] = breaker_state.value
        if breaker_state in _OPEN_STATES and status == "healthy":
            status = "degraded"
    live = await _liveness(state, within) if results[0] == "up" else {}
    if live.get("problems") and status == "healthy":
        status = "degraded"
    serving = email_serving(getattr(state.assistant, "connectors", None))
    if serving is not None:
        dependencies["email:serving"] = serving
    for variable in _missing_secrets(state):
        dependencies[f"secret:{variable}"] = "missing"
        if status == "healthy":
            status = "degraded"
    if _unverifiable(state):
        dependencies["public_url"] = "missing"
        if status == "healthy":
            status = "degraded"
    return {
        "status": status,
        "version": antifragile.__version__,
        "uptime": round(time.monotonic() - state.started, 3),
        "dependencies": dependencies,
        **live,
    }


def health_router(state: ServiceState, *, timeout: float = DEFAULT_CHECK_TIMEOUT) -> APIRouter:
    """The ``/health`` and ``/ready`` routes of the app holding *state*."""
    router = APIRouter(tags=["health"])

    @router.get(
        "/health",
        summary="Service health and its dependencies",
        responses={
            200: {"model": HealthEnvelope, "description": "Healthy or degraded"},
            503: {"model": UnhealthyEnvelope, "description": "Unhealthy: the database is down"},
            **error_responses(500),
        },
    )
    async def health() -> JSONResponse:
        """``healthy``, ``degraded`` (a breaker open, Redis down) or ``unhealthy`` (the
        database does not answer: ``503``), with the version, uptime and each dependency."""
        report = await health_report(state, within=timeout)
        if report["status"] != "unhealthy":
            return ok(report)
        return JSONResponse(
            {
                "success": False,
                "error": {
                    "code": ErrorCode.STORE_UNAVAILABLE.value,
                    "message": "the database does not answer",
                    "retryable": True,
                },
                "data": report,
                "meta": {"request_id": current_request_id(), "duration_ms": duration_ms()},
            },
            status_code=503,
        )

    @router.head("/health", include_in_schema=False)
    async def health_head() -> Response:
        report = await health_report(state, within=timeout)
        return Response(status_code=503 if report["status"] == "unhealthy" else 200)

    @router.head("/ready", include_in_schema=False)
    async def ready_head() -> Response:
        if state.ready and await _ping(_database_store(state), timeout) == "up":
            return Response(status_code=200)
        return Response(status_code=503, headers={"Retry-After": "1"})

    @router.get(
        "/ready",
        summary="Whether the service has started and can record events",
        responses={
            200: {
                "model": SuccessEnvelope[Readiness],
                "description": "Ready: `data.ready` is true",
            },
            **error_responses(500, 503),
        },
    )
    async def ready() -> JSONResponse:
        """``200`` once the service has started and its database answers, else a retryable
        ``503`` (a load balancer's readiness check)."""
        if not state.ready:
            message = "the service is starting or stopping"
        elif await _ping(_database_store(state), timeout) != "up":
            message = "the database does not answer"
        else:
            return ok({"ready": True})
        return JSONResponse(
            {
                "success": False,
                "error": {
                    "code": ErrorCode.STORE_UNAVAILABLE.value,
                    "message": message,
                    "retryable": True,
                },
                "meta": {"request_id": current_request_id(), "duration_ms": duration_ms()},
            },
            status_code=503,
            headers={"Retry-After": "1"},
        )

    return router
