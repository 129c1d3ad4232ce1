"""``GET /metrics`` (Prometheus text format) and the tracing middleware of the app.

:func:`install_observability` is what :func:`~antifragile.service.create_app` calls: it adds
:class:`~antifragile.observability.TracingMiddleware` (a server span per request when tracing is
on, nothing otherwise) and the ``/metrics`` route, which answers the Prometheus text format of
the assistant's :class:`~antifragile.observability.Metrics` -- not the JSON envelope.

The route needs no credentials unless ``ANTIFRAGILE_METRICS_TOKEN`` is set: then a scrape must
send ``Authorization: Bearer <token>`` (``401 AUTH`` otherwise).
"""

from __future__ import annotations

import hmac
import os
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from antifragile.errors import ErrorCode
from antifragile.observability import Observers, TracingMiddleware, TracingObserver
from antifragile.policies import SYSTEM_CLOCK, Clock, Policy
from antifragile.service._envelope import ApiError, error_responses

if TYPE_CHECKING:
    from antifragile.jobs import Jobs
    from antifragile.observability import Metrics

__all__ = [
    "METRICS_TOKEN_ENV",
    "install_observability",
    "metrics_for",
    "metrics_router",
    "observe_connectors",
]

#: an optional bearer token that protects ``/metrics``
METRICS_TOKEN_ENV = "ANTIFRAGILE_METRICS_TOKEN"
#: the content type of the Prometheus text format (version 0.0.4)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _authorized(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not value:
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def metrics_router(token: str | None = None) -> APIRouter:
    """The ``/metrics`` route; with *token*, scrapes need ``Authorization: Bearer <token>``."""
    router = APIRouter(tags=["observability"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {
                "content": {CONTENT_TYPE: {}},
                "description": "Every metric in the Prometheus text format "
                "(see the metrics reference in the docs)",
            },
            **error_responses(401, 500, 503),
        },
    )
    async def metrics(request: Request) -> Response:
        """The service's metrics: inbound events, intents, outbound calls, breakers, limiters,
        jobs, queues and the dead-letter queue (Prometheus text format)."""
        if token and not _authorized(request, token):
            raise ApiError(
                401,
                ErrorCode.AUTH,
                "a bearer token is required to read the metrics",
                headers={"WWW-Authenticate": "Bearer"},
            )
        assistant = request.app.state.service.require_assistant()
        source = getattr(assistant, "metrics", None)
        body = b"" if source is None else await source.render()
        return Response(body, media_type=CONTENT_TYPE)

    return router


def install_observability(app: FastAPI) -> None:
    """Add the tracing middleware and the ``/metrics`` route to *app* (``create_app`` does).

    Call it after the middleware that sets the request id is added, or before: the span reads
    the request id when the response starts as well as when the request comes in.
    """
    app.add_middleware(TracingMiddleware)
    app.include_router(metrics_router(os.environ.get(METRICS_TOKEN_ENV) or None))


def metrics_for(jobs: Jobs, *, clock: Clock = SYSTEM_CLOCK) -> Metrics:
    """New :class:`~antifragile.observability.Metrics` fed by *jobs*: its observer becomes
    the metrics' jobs observer and the tracing observer, beside the one it had; its queues'
    depth, lag and dead-letter size are read from ``jobs.stats()`` at scrape time."""
    from antifragile.observability import Metrics

    metrics = Metrics(clock=clock.time)
    observers = [] if jobs.observer is None else [jobs.observer]
    jobs.observer = Observers([*observers, metrics.jobs_observer, TracingObserver()])
    metrics.watch_queues(jobs.stats)
    return metrics


def observe_connectors(metrics: Metrics, connectors: Any) -> None:
    """Feed *metrics* with the policy events of every connector in use (attempts, retries,
    breakers, limiters) and export their breakers' states; calling it again adds only the
    connectors that are new."""
    for connector in connectors.built.values():
        policy = getattr(connector, "policy", None)
        if not isinstance(policy, Policy):
            continue
        if policy.observer is None or not any(o is metrics.observer for o in policy.observer):
            policy.add_observer(metrics.observer)
    metrics.watch_breakers(connectors.breakers)
