"""The HTTP API and configuration references cannot drift from the code.

``docs/reference/http-api.md`` must name every route of the real app (from its OpenAPI
document), and ``docs/reference/configuration.md`` every ``ANTIFRAGILE_*`` variable the package
reads and every setting of the ``[service]`` table.
"""

from __future__ import annotations

import re
from pathlib import Path

from antifragile.service import Settings, create_app

ROOT = Path(__file__).resolve().parents[2]
HTTP_API = ROOT / "docs" / "reference" / "http-api.md"
CONFIGURATION = ROOT / "docs" / "reference" / "configuration.md"
# a full variable name: a prefix such as ``ANTIFRAGILE_ALERT_`` (ending in "_") is not one
ENV_NAME = re.compile(r"\bANTIFRAGILE_[A-Z0-9_]*[A-Z0-9]\b")
ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`")
# the raw tables of the TOML file, not settings of [service]
RAW_TABLES = {"service", "tenants", "flows", "providers", "features"}


def documented_routes() -> set[tuple[str, str]]:
    text = HTTP_API.read_text(encoding="utf-8")
    return {(method, path) for method, path in ROUTE.findall(text)}


def test_every_route_of_the_app_is_documented() -> None:
    """Each method and path of the app's OpenAPI document appears on the HTTP API page as
    ``METHOD /path`` -- adding a route without documenting it fails here."""
    schema = create_app(Settings()).openapi()
    routes = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert routes, "the app has no routes?"
    missing = sorted(routes - documented_routes())
    assert not missing, f"docs/reference/http-api.md does not document {missing}"


def test_the_page_documents_no_route_the_app_lacks() -> None:
    """Every ``METHOD /path`` the page names under /v1, /health, /ready or /metrics is a real
    route: a removed or renamed route cannot linger in the documentation."""
    schema = create_app(Settings()).openapi()
    routes = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method in operations
    }
    served = re.compile(r"^/(v1/|health$|ready$|metrics$)")
    stale = sorted(r for r in documented_routes() if served.match(r[1]) and r not in routes)
    assert not stale, f"docs/reference/http-api.md documents routes the app lacks: {stale}"


def test_every_environment_variable_is_documented() -> None:
    """Every ``ANTIFRAGILE_*`` name in src/ (service, connectors, CLI, observability) is on the
    configuration page."""
    used: set[str] = set()
    for path in (ROOT / "src").rglob("*.py"):
        used.update(ENV_NAME.findall(path.read_text(encoding="utf-8")))
    assert "ANTIFRAGILE_DATABASE_URL" in used
    page = set(ENV_NAME.findall(CONFIGURATION.read_text(encoding="utf-8")))
    missing = sorted(used - page)
    assert not missing, f"docs/reference/configuration.md does not mention {missing}"


def test_every_service_setting_is_documented() -> None:
    """Every key the ``[service]`` table accepts (a Settings field) is on the configuration
    page, written as a code span."""
    page = CONFIGURATION.read_text(encoding="utf-8")
    missing = sorted(
        name for name in Settings.model_fields if name not in RAW_TABLES and f"`{name}`" not in page
    )
    assert not missing, f"docs/reference/configuration.md does not mention {missing}"
