"""The service: the FastAPI app (webhooks, health, admin API), its settings and the assistant.

::

    from antifragile.service import Settings, create_app

    app = create_app(Settings.from_env(), run_worker=True, run_scheduler=True)
"""

import typing as _typing

from antifragile.observability._moved import moved_attribute as _moved_attribute
from antifragile.service._app import create_app
from antifragile.service._assistant import Assistant
from antifragile.service._auth import (
    ApiKeyInfo,
    ApiKeys,
    CredentialsRejected,
    JwtVerifier,
    NewApiKey,
    Principal,
)
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
from antifragile.service._settings import Rate, Settings, parse_rate

#: names this package exported before 0.2 that are now internal (or live elsewhere); they keep
#: working, with a DeprecationWarning, until the release after
_MOVED: dict[str, tuple[str, str | None]] = {
    "METRICS_TOKEN_ENV": ("antifragile.service._metrics", None),
    "AdminAuth": ("antifragile.service._auth", None),
    "InboundLimits": ("antifragile.service._limits", None),
    "ServiceAssistant": ("antifragile.service._state", None),
    "ServiceState": ("antifragile.service._state", None),
    "SigningKeysUnavailable": ("antifragile.service._auth", None),
    "admin_router": ("antifragile.service._admin", None),
    "dashboard_router": ("antifragile.service._dashboard", None),
    "health_report": ("antifragile.service._health", None),
    "install_observability": ("antifragile.service._metrics", None),
    "limit_by_ip": ("antifragile.service._limits", None),
    "metrics_for": ("antifragile.service._metrics", None),
    "metrics_router": ("antifragile.service._metrics", None),
    "observe_connectors": ("antifragile.service._metrics", None),
    "require_admin": ("antifragile.service._auth", None),
}


# hidden from type checkers: a name that is not declared above is an error for them
if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> _typing.Any:
        return _moved_attribute(__name__, name, _MOVED)


__all__ = [
    "ERROR_RESPONSES",
    "ApiError",
    "ApiKeyInfo",
    "ApiKeys",
    "Assistant",
    "CredentialsRejected",
    "JwtVerifier",
    "NewApiKey",
    "Principal",
    "Rate",
    "RequestContextMiddleware",
    "Settings",
    "create_app",
    "error_response",
    "error_responses",
    "install_error_handlers",
    "ok",
    "parse_rate",
    "request_id",
]
