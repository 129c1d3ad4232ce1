"""Alerts in the service: their configuration from :class:`Settings`, and ``GET /v1/admin/alerts``.

``GET /v1/admin/alerts`` lists the alert records (``alert:<condition>:<subject>`` in the store:
state, last fired / seen / resolved, window, details -- counts and codes, no personal data).
It needs an admin credential and counts against the client's IP limit, like the rest of the
admin API; the router reads ``app.state.assistant.alerts``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from antifragile.errors import ErrorCode
from antifragile.inbound._alerts import CONDITIONS, AlertConfig, Alerts
from antifragile.service._auth import require_admin
from antifragile.service._envelope import ApiError, error_responses, ok
from antifragile.service._keys import require_scope
from antifragile.service._limits import limit_by_ip
from antifragile.service._schemas import AlertsView, answers
from antifragile.service._settings import Settings


def alert_config(settings: Settings) -> AlertConfig:
    """The alert configuration held by *settings* (``ANTIFRAGILE_ALERT_*``)."""
    return AlertConfig(
        slack=settings.alert_slack,
        email=Settings.reveal(settings.alert_email),
        dlq_threshold=settings.alert_dlq_threshold,
        error_rate=settings.alert_error_rate,
        window=settings.alert_window,
    )


router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Depends(limit_by_ip), Depends(require_admin), Depends(require_scope)],
    responses=error_responses(400, 401, 404, 429, 500, 503),
)


def _alerts(request: Request) -> Alerts:
    assistant = getattr(request.app.state, "assistant", None)
    if assistant is None:
        raise ApiError(503, ErrorCode.STORE_UNAVAILABLE, "the service is starting; retry later")
    alerts = getattr(assistant, "alerts", None)
    if not isinstance(alerts, Alerts):
        raise ApiError(404, ErrorCode.NOT_FOUND, "this service has no alerts")
    return alerts


@router.get(
    "/alerts",
    summary="Alert records: state, last fired and resolved",
    responses=answers(AlertsView, "The alert records and the alert settings"),
)
async def list_alerts(
    request: Request,
    condition: Annotated[str | None, Query(description="only this condition")] = None,
    state: Annotated[str | None, Query(description="firing or resolved")] = None,
) -> JSONResponse:
    """One record per condition and subject (``firing`` or ``resolved``, when it last fired
    and resolved), with the channels, window and thresholds alerts are sent with."""
    if condition is not None and condition not in CONDITIONS:
        raise ApiError(
            400, ErrorCode.VALIDATION, f"condition must be one of {', '.join(CONDITIONS)}"
        )
    if state is not None and state not in ("firing", "resolved"):
        raise ApiError(400, ErrorCode.VALIDATION, "state must be firing or resolved")
    alerts = _alerts(request)
    records: list[dict[str, Any]] = await alerts.records()
    items = [
        r
        for r in records
        if (condition is None or r.get("condition") == condition)
        and (state is None or r.get("state") == state)
    ]
    return ok(
        {
            "items": items,
            "channels": list(alerts.config.channels),
            "window": alerts.config.window,
            "dlq_threshold": alerts.config.dlq_threshold,
            "error_rate": alerts.config.error_rate,
        }
    )


#: the alerts router (``app.include_router(alerts_router)``)
alerts_router = router
