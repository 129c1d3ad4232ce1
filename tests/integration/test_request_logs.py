"""httpx's request line for a call through the resilient client, over real HTTP: allow-listed
fields, the query string left out, the duration added."""

from __future__ import annotations

import io
import json
import logging

import pytest

from antifragile import ResilientClient
from antifragile.observability import configure_logging
from antifragile.sandbox import Fault, FlakyServer


async def test_a_resilient_client_call_is_logged_with_its_duration_and_no_query(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real HTTP call through the client: httpx's line for it has the allow-listed fields and
    the time until the response's headers came."""
    httpx_logger = logging.getLogger("httpx")  # as it is when nothing else configured it
    monkeypatch.setattr(httpx_logger, "propagate", True)
    monkeypatch.setattr(httpx_logger, "level", logging.NOTSET)
    stream = io.StringIO()
    with (
        FlakyServer(default=Fault.ok(json={"ok": True})) as server,
        configure_logging(json=True, stream=stream),
    ):
        async with ResilientClient("hubspot", base_url=server.url) as client:
            response = await client.get("/contacts/search", params={"email": "ada@example.com"})
    assert response.status_code == 200
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    (call,) = [line for line in logged if line["logger"] == "httpx"]
    assert (call["event"], call["method"], call["path"], call["status"]) == (
        "outbound request",
        "GET",
        "/contacts/search",
        200,
    )
    assert isinstance(call["duration_ms"], float)
    assert call["duration_ms"] >= 0
    assert "ada" not in stream.getvalue()
