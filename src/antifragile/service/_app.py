"""The FastAPI application: ``create_app()``.

::

    app = create_app()                                   # settings from ANTIFRAGILE_* variables
    app = create_app(settings, run_worker=True, run_scheduler=True)   # one process does it all

The lifespan opens the :class:`~antifragile.service.Assistant` (built from the settings unless
one is given) and, when asked, runs its worker and scheduler as background tasks of the server's
event loop; on shutdown it stops them gracefully (running jobs finish within the worker's grace,
then are released to other workers) and closes what it opened. An assistant passed in is opened
but stays yours to close.

Routes: ``GET /health``, ``GET /ready``, the provider webhooks under ``/v1/webhooks``; every
JSON answer is the envelope (:mod:`antifragile.service._envelope`), and ``/openapi.json``
documents the failure envelopes of each route with their stable error codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi

import antifragile
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.service._admin import admin_router
from antifragile.service._ai import router as ai_router
from antifragile.service._alerts_api import alerts_router
from antifragile.service._api_docs import api_docs_router
from antifragile.service._bodylimit import EdgeGuard
from antifragile.service._dashboard import dashboard_router
from antifragile.service._envelope import RequestContextMiddleware, install_error_handlers
from antifragile.service._erasure_api import router as erasure_router
from antifragile.service._health import health_router
from antifragile.service._limits import InboundLimits
from antifragile.service._metrics import install_observability
from antifragile.service._settings import Settings
from antifragile.service._state import ServiceAssistant, ServiceState
from antifragile.service._watchdog import watchdog_for
from antifragile.service._webhooks import WebhookFastPath, WebhookHandlers, webhooks_router

if TYPE_CHECKING:
    from antifragile.jobs import SchedulerOptions, WorkerOptions

_log = logging.getLogger("antifragile.service")

#: how long shutdown waits for the worker and scheduler beyond the worker's own grace (seconds)
STOP_MARGIN = 5.0


def _log_crash(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        name = type(exc).__name__
        code = getattr(exc, "code", None)
        _log.error("the background %s stopped: %s %s", task.get_name(), name, code or "")


async def _stop(tasks: Sequence[asyncio.Task[Any]], grace: float) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def create_app(
    settings: Settings | None = None,
    *,
    assistant: ServiceAssistant | None = None,
    run_worker: bool = False,
    run_scheduler: bool = False,
    clock: Clock = SYSTEM_CLOCK,
    worker_options: WorkerOptions | None = None,
    scheduler_options: SchedulerOptions | None = None,
    routers: Sequence[APIRouter] = (),
    freeze_gc: bool = False,
) -> FastAPI:
    """The service's FastAPI app (see the module docs).

    *settings* default to the assistant's, else :meth:`Settings.from_env`. *clock* is the
    clock of the assistant built here. *worker_options* / *scheduler_options* go to
    ``assistant.worker()`` / ``assistant.scheduler()``. *routers* are included after the
    built-in ones (the admin API, say). *freeze_gc* (what ``antifragile serve`` does, in a
    process of its own) moves everything alive once the app has started out of the garbage
    collector's view (``gc.freeze``), which keeps full collections short.
    """
    if settings is None:
        settings = assistant.settings if assistant is not None else Settings.from_env()
    state = ServiceState(settings=settings, assistant=assistant)
    given = assistant

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if given is None:
            from antifragile.service._assistant import Assistant

            current: ServiceAssistant = Assistant(settings, clock=clock, limiter=app.state.limits)
        else:
            current = given
        await current.open()
        state.assistant = current
        app.state.assistant = current
        tasks: list[asyncio.Task[Any]] = []
        worker = scheduler = watchdog = None
        try:
            if run_worker:
                worker = current.worker(**(worker_options or {}))
                tasks.append(asyncio.create_task(worker.run(), name="worker"))
            if run_scheduler:
                scheduler = current.scheduler(**(scheduler_options or {}))
                tasks.append(asyncio.create_task(scheduler.run(), name="scheduler"))
            watchdog = watchdog_for(current)  # alert conditions no worker may be there to judge
            if watchdog is not None:
                tasks.append(asyncio.create_task(watchdog.run(), name="watchdog"))
            for task in tasks:
                task.add_done_callback(_log_crash)
            if freeze_gc:
                # Everything built so far lives as long as the process: take it out of the
                # garbage collector's view, so that a full collection stays short (tail latency)
                gc.collect()
                gc.freeze()
            state.ready = True
            yield
        finally:
            state.ready = False
            if worker is not None:
                worker.stop()
            if scheduler is not None:
                scheduler.stop()
            if watchdog is not None:
                watchdog.stop()
            grace = (worker.shutdown_grace if worker is not None else 0.0) + STOP_MARGIN
            try:
                await _stop(tasks, grace)
            finally:
                state.assistant = None
                if given is None:
                    await current.close()

    app = FastAPI(
        title="antifragile",
        version=antifragile.__version__,
        summary="Keeps conversations and integrations working when providers fail.",
        lifespan=lifespan,
        docs_url=None,  # /docs is rendered from the package (_api_docs), never from a CDN
        redoc_url=None,
    )
    app.state.service = state
    app.state.settings = settings
    app.state.assistant = assistant
    # one InboundLimits for the app's per-IP checks and the assistant's per-sender ones: the
    # assistant shares the latter through its state store once open (see Assistant.open)
    limits = getattr(assistant, "limits", None)
    app.state.limits = (
        limits
        if isinstance(limits, InboundLimits)
        else InboundLimits.from_settings(settings, clock=clock)
    )
    install_error_handlers(app)
    webhooks = WebhookHandlers(state, app.state)
    # the last middleware added is the outermost: request ids and timing wrap the fast path
    app.add_middleware(WebhookFastPath, handlers=webhooks)
    app.add_middleware(EdgeGuard, settings=settings)  # limits, credentials, then the body
    install_observability(app)  # the tracing middleware (inside the request id's) and /metrics
    app.add_middleware(RequestContextMiddleware)
    app.include_router(webhooks_router(webhooks))
    app.include_router(health_router(state))
    app.include_router(admin_router)
    app.include_router(alerts_router)
    app.include_router(dashboard_router)
    app.include_router(ai_router)
    if settings.api_docs:
        app.include_router(api_docs_router)
    app.include_router(erasure_router)
    for router in routers:
        app.include_router(router)
    _document_errors(app)
    return app


def _document_errors(app: FastAPI) -> None:
    """OpenAPI without FastAPI's default 422 answers: validation errors are 400 envelopes."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                if isinstance(operation, dict):
                    operation.get("responses", {}).pop("422", None)
        schemas = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
