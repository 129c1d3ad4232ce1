"""The service: the FastAPI app (webhooks, health, admin API), its settings and the assistant.

::

    from antifragile.service import Settings, create_app

    app = create_app(Settings.from_env(), run_worker=True, run_scheduler=True)
"""

from antifragile.service._admin import admin_router
from antifragile.service._app import create_app
from antifragile.service._assistant import Assistant
from antifragile.service._auth import (
    AdminAuth,
    ApiKeyInfo,
    ApiKeys,
    CredentialsRejected,
    JwtVerifier,
    NewApiKey,
    Principal,
    SigningKeysUnavailable,
    require_admin,
)
from antifragile.service._dashboard import dashboard_router
from antifragile.service._envelope import (
    ERROR_RESPONSES,
    ApiError,
    RequestContextMiddleware,
    error_response,
    error_responses,
    install_error_handlers,
    ok,
    request_id,
)
from antifragile.service._health import health_report
from antifragile.service._limits import InboundLimits, limit_by_ip
from antifragile.service._metrics import (
    METRICS_TOKEN_ENV,
    install_observability,
    metrics_for,
    metrics_router,
    observe_connectors,
)
from antifragile.service._settings import Rate, Settings, parse_rate
from antifragile.service._state import ServiceAssistant, ServiceState

__all__ = [
    "ERROR_RESPONSES",
    "METRICS_TOKEN_ENV",
    "AdminAuth",
    "ApiError",
    "ApiKeyInfo",
    "ApiKeys",
    "Assistant",
    "CredentialsRejected",
    "InboundLimits",
    "JwtVerifier",
    "NewApiKey",
    "Principal",
    "Rate",
    "RequestContextMiddleware",
    "ServiceAssistant",
    "ServiceState",
    "Settings",
    "SigningKeysUnavailable",
    "admin_router",
    "create_app",
    "dashboard_router",
    "error_response",
    "error_responses",
    "health_report",
    "install_error_handlers",
    "install_observability",
    "limit_by_ip",
    "metrics_for",
    "metrics_router",
    "observe_connectors",
    "ok",
    "parse_rate",
    "request_id",
    "require_admin",
]
