"""``GET /health`` and ``GET /ready``.

``/health`` reports every dependency and an overall status:

* ``database`` -- the job queue's store answers a ping within the timeout (``up``/``down``);
  down makes the service ``unhealthy`` (HTTP 503): nothing can be recorded;
* ``redis`` -- when ``ANTIFRAGILE_REDIS_URL`` is set: the assistant's shared-state store, which
  holds the breakers and the per-sender limit; down makes it ``degraded`` (they fall back to
  process-local state);
* ``breaker:<provider>`` -- each provider breaker's state (``closed``, ``open``,
  ``half_open``...); an open one makes it ``degraded`` (its jobs wait; nothing is lost);
* ``secret:<VARIABLE>`` -- ``missing`` when a configured channel lacks the secret its webhooks
  are verified with (``ANTIFRAGILE_WHATSAPP_APP_SECRET``...): ``degraded``, those webhooks are
  refused (see :mod:`antifragile.service._checks`).

``degraded`` answers 200: the service still accepts and records everything. ``/ready`` answers
200 once the app has finished starting and the database answers, else 503.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import antifragile
from antifragile.errors import ErrorCode, ErrorEnvelope, SuccessEnvelope
from antifragile.observability import current_request_id
from antifragile.policies import CircuitBreaker, CircuitState
from antifragile.service._envelope import duration_ms, error_responses, ok
from antifragile.service._state import ServiceState

_log = logging.getLogger("antifragile.service")

#: how long a dependency may take to answer a health check (seconds)
DEFAULT_CHECK_TIMEOUT = 1.0

_OPEN_STATES = frozenset({CircuitState.OPEN, CircuitState.FORCED_OPEN})


class HealthData(BaseModel):
    status: str
    version: str
    uptime: float
    dependencies: dict[str, str]


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


def _missing_secrets(state: ServiceState) -> list[str]:
    """The webhook secrets a configured channel lacks (:func:`missing_secrets`)."""
    from antifragile.service._checks import missing_secrets

    assistant = state.assistant
    tenants = getattr(assistant, "tenants", None) or state.settings.tenant_list()
    return missing_secrets(state.settings, tenants, getattr(assistant, "connectors", None))


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
    for variable in _missing_secrets(state):
        dependencies[f"secret:{variable}"] = "missing"
        if status == "healthy":
            status = "degraded"
    return {
        "status": status,
        "version": antifragile.__version__,
        "uptime": round(time.monotonic() - state.started, 3),
        "dependencies": dependencies,
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

    @router.get(
        "/ready",
        summary="Whether the service has started and can record events",
        responses={
            200: {"description": "Ready: `data.ready` is true"},
            **error_responses(500, 503),
        },
    )
    async def ready() -> JSONResponse:
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
