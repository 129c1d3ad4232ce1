"""The OpenAPI document describes every operation, and ``/docs`` renders it from the package.

Every operation has a summary and a description; every ``2xx`` JSON answer has a schema (a
model, not ``{}``); ``/docs`` is one HTML page with no script and nothing from another host,
and ``ANTIFRAGILE_API_DOCS=off`` leaves it out. (The page in a browser with the network to
other hosts blocked: tests/acceptance/test_dashboard.py.)
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from antifragile.service import Settings, create_app

METHODS = ("get", "head", "post", "put", "patch", "delete")


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_every_operation_is_described_and_every_2xx_json_answer_has_a_schema() -> None:
    schema = create_app(Settings()).openapi()
    found = operations(schema)
    assert len(found) >= 40
    undescribed = [
        f"{m.upper()} {p}"
        for m, p, op in found
        if not op.get("summary", "").strip() or not op.get("description", "").strip()
    ]
    assert not undescribed, f"operations without a summary or description: {undescribed}"
    empty = []
    for method, path, operation in found:
        for status, answer in operation["responses"].items():
            json_answer = answer.get("content", {}).get("application/json")
            if status.startswith("2") and json_answer is not None and not json_answer.get("schema"):
                empty.append(f"{method.upper()} {path} {status}")
    assert not empty, f"2xx JSON answers without a schema: {empty}"
    # the admin list answers name their item models
    dlq = schema["paths"]["/v1/admin/dlq"]["get"]["responses"]["200"]
    ref = dlq["content"]["application/json"]["schema"]["$ref"]
    envelope = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    page = envelope["properties"]["data"]["$ref"].rsplit("/", 1)[-1]
    assert page == "JobPage"
    assert "history" in schema["components"]["schemas"]["JobView"]["properties"]


def client_for(environ: dict[str, str]) -> httpx.AsyncClient:
    app = create_app(Settings.from_env(environ))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api.test")


async def test_docs_render_every_operation_with_nothing_from_elsewhere() -> None:
    async with client_for({}) as client:
        page = await client.get("/docs")
        schema = (await client.get("/openapi.json")).json()
        style = await client.get("/docs/assets/api_docs.css")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "<script" not in page.text
    # every URL the page loads or links to is on this service
    assert not re.findall(r"""(?:src|href)="(?:https?:)?//""", page.text)
    for method, path, _ in operations(schema):
        assert f'data-operation="{method} {path}"' in page.text
    assert 'id="model-JobView"' in page.text
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")


async def test_api_docs_off_leaves_the_page_out() -> None:
    async with client_for({"ANTIFRAGILE_API_DOCS": "off"}) as client:
        page = await client.get("/docs")
        redoc = await client.get("/redoc")
        schema = await client.get("/openapi.json")
    assert page.status_code == 404
    assert page.json()["error"]["code"] == "NOT_FOUND"
    assert redoc.status_code == 404
    assert schema.status_code == 200  # the document itself stays
