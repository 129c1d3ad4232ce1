"""The API reference at ``/docs``: the OpenAPI document rendered as one HTML page, server-side.

Nothing is loaded from anywhere else -- no script at all, one style sheet served from the
package (``/docs/assets/api_docs.css``) -- so the page works offline and under a strict
``Content-Security-Policy``; it counts against the client's IP limit like every route. It
lists every operation by tag (method, path, summary, description, parameters, request body,
answers with their models) and every model with its fields; ``/openapi.json`` stays the
machine-readable source. ``ANTIFRAGILE_API_DOCS=off`` leaves the page out (the service then
answers ``404`` on ``/docs``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment
from markupsafe import Markup, escape

from antifragile.service._limits import limit_by_ip
from antifragile.service._pages import page_asset, page_templates

#: where the page is served
DOCS_PATH = "/docs"
_METHODS = ("get", "head", "post", "put", "patch", "delete")
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_CODE = re.compile(r"``?([^`]+)``?")


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def type_of(schema: Mapping[str, Any] | None) -> Markup:
    """A JSON schema as a short type text (``list[JobView]``, ``string | null``), with links
    to the models it names."""
    if not schema:
        return Markup("any")
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = _ref_name(ref)
        return Markup('<a href="#model-{0}">{0}</a>').format(name)
    for combined in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combined)
        if isinstance(options, list):
            return Markup(" | ").join(type_of(option) for option in options)
    kind = schema.get("type")
    if kind == "array":
        return Markup("list[{}]").format(type_of(schema.get("items")))
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        return Markup("dict[string, {}]").format(type_of(schema["additionalProperties"]))
    if "enum" in schema:
        return Markup(" | ").join(escape(repr(value)) for value in schema["enum"])
    if "const" in schema:
        return escape(repr(schema["const"]))
    return escape(str(kind or "any"))


def prose(text: str | None) -> Markup:
    """A description: escaped, ````code```` and ```code``` shown as code."""
    if not text:
        return Markup("")
    return Markup(_CODE.sub(lambda m: f"<code>{m.group(1)}</code>", str(escape(text))))


def _body_schema(content: Mapping[str, Any] | None) -> tuple[str, Mapping[str, Any] | None]:
    for media_type, entry in (content or {}).items():
        return media_type, (entry or {}).get("schema")
    return "", None


def operations(schema: Mapping[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The document's operations grouped by their first tag, in document order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, item in schema.get("paths", {}).items():
        for method in _METHODS:
            operation = item.get(method)
            if not isinstance(operation, Mapping):
                continue
            body = operation.get("requestBody") or {}
            media_type, body_schema = _body_schema(body.get("content"))
            answers = []
            for status, answer in operation.get("responses", {}).items():
                answer_type, answer_schema = _body_schema(answer.get("content"))
                answers.append(
                    {
                        "status": status,
                        "description": answer.get("description", ""),
                        "media_type": answer_type,
                        "schema": answer_schema,
                    }
                )
            tag = (operation.get("tags") or ["other"])[0]
            groups.setdefault(tag, []).append(
                {
                    "id": f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", ""),
                    "method": method,
                    "path": path,
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "parameters": operation.get("parameters", []),
                    "body": body_schema,
                    "body_type": media_type,
                    "answers": answers,
                }
            )
    return list(groups.items())


def models(schema: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    found = schema.get("components", {}).get("schemas", {})
    return sorted(found.items())


@cache
def _templates() -> Environment:
    return page_templates({"type_of": type_of, "prose": prose})


router = APIRouter(include_in_schema=False, dependencies=[Depends(limit_by_ip)])


@router.get(DOCS_PATH)
async def api_docs(request: Request) -> HTMLResponse:
    """The API reference page."""
    schema = request.app.openapi()
    text = (
        _templates()
        .get_template("api_docs.html")
        .render(
            info=schema.get("info", {}),
            groups=operations(schema),
            models=models(schema),
        )
    )
    return HTMLResponse(text, headers=_HEADERS)


@router.get(DOCS_PATH + "/assets/api_docs.css")
async def api_docs_style() -> Response:
    style = page_asset("api_docs.css")
    return Response(style, media_type="text/css; charset=utf-8", headers=_HEADERS)


#: the API reference's router (included unless ``ANTIFRAGILE_API_DOCS=off``)
api_docs_router = router
