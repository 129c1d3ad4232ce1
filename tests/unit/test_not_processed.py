"""Each provider's rule for "a 5xx that carries the provider's own error body was not
processed", and the client's use of it: pure logic over ``httpx.Response`` values."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from antifragile.connectors._outcome import (
    calcom_error_answer,
    graph_error_answer,
    hubspot_error_answer,
    mandrill_error_answer,
    resend_error_answer,
    sendgrid_error_answer,
    shopify_error_answer,
    slack_error_answer,
    twilio_error_answer,
)
from antifragile.http._client import _ClientCore

Rule = Callable[[httpx.Response], bool]


def response(
    status: int, body: Any = None, *, text: str | None = None, html: bool = False
) -> httpx.Response:
    request = httpx.Request("POST", "https://provider.example/send")
    if text is not None:
        kind = "text/html" if html else "text/plain"
        return httpx.Response(status, text=text, headers={"content-type": kind}, request=request)
    if body is None:
        return httpx.Response(status, request=request)
    return httpx.Response(status, content=json.dumps(body).encode(), request=request,
                          headers={"content-type": "application/json"})  # fmt: skip


OWN_BODIES: list[tuple[Rule, Any]] = [
    (
        graph_error_answer,
        {
            "error": {
                "message": "Service temporarily unavailable",
                "type": "OAuthException",
                "code": 2,
                "fbtrace_id": "A",
            }
        },
    ),
    (
        twilio_error_answer,
        {
            "code": 20500,
            "message": "Internal Server Error",
            "more_info": "https://www.twilio.com/docs/errors/20500",
            "status": 500,
        },
    ),
    (
        twilio_error_answer,
        {
            "type": "https://www.twilio.com/docs/errors/20500",
            "title": "Internal Server Error",
            "status": 500,
            "code": 20500,
        },
    ),
    (
        sendgrid_error_answer,
        {"errors": [{"message": "internal server error", "field": None, "help": None}]},
    ),
    (
        resend_error_answer,
        {
            "statusCode": 500,
            "name": "internal_server_error",
            "message": "An unexpected error occurred.",
        },
    ),
    (
        hubspot_error_answer,
        {
            "status": "error",
            "message": "An internal error occurred.",
            "correlationId": "c-1",
            "category": "INTERNAL_ERROR",
        },
    ),
    (shopify_error_answer, {"errors": "Internal Server Error"}),
    (
        calcom_error_answer,
        {
            "status": "error",
            "timestamp": "2026-01-01T00:00:00Z",
            "path": "/v2/bookings",
            "error": {"code": "InternalServerErrorException", "message": "Internal server error."},
        },
    ),
    (slack_error_answer, {"ok": False, "error": "internal_error"}),
    (
        mandrill_error_answer,
        {
            "status": "error",
            "code": -1,
            "name": "GeneralError",
            "message": "An unknown error occurred processing your request. Please try again later.",
        },
    ),
]


@pytest.mark.parametrize(("rule", "body"), OWN_BODIES, ids=[r.__name__ for r, _ in OWN_BODIES])
def test_each_rule_knows_its_providers_error_body(rule: Rule, body: Any) -> None:
    """The provider's documented error format is recognised; a bodiless answer, an HTML
    gateway page, another provider's shape or unparsable JSON is not."""
    assert rule(response(503, body))
    assert not rule(response(502))
    assert not rule(response(504, text="<html><h1>504 Gateway Time-out</h1></html>", html=True))
    assert not rule(response(502, text="{not json"))
    assert not rule(response(503, {"unexpected": True}))


def test_slack_plain_text_error_string() -> None:
    """Slack's incoming webhooks answer a bare error string: ``internal_error`` counts, a
    sentence or an HTML page does not."""
    assert slack_error_answer(response(500, text="internal_error"))
    assert not slack_error_answer(response(500, text="Internal Server Error, try later"))
    assert not slack_error_answer(response(500, text="internal_error", html=True))


def test_the_client_marks_a_recognised_5xx_replay_safe_and_only_a_5xx() -> None:
    """With a rule, a 5xx in the provider's format becomes a replay-safe error (retried as not
    processed); a gateway's bodiless 502 stays unsafe to replay; a 4xx is never touched; a
    rule that fails on a body says no."""
    core = _ClientCore(
        "whatsapp",
        base_url="",
        policy=None,
        timeout=1.0,
        idempotency_header="Idempotency-Key",
        request_id_header="x-request-id",
        secrets=(),
        not_processed=graph_error_answer,
    )
    own = core._check(response(503, OWN_BODIES[0][1]), "send", False, "r1")
    assert own is not None
    assert own.replay_safe
    assert own.retryable
    assert "not processed" in own.message
    gateway = core._check(response(502), "send", False, "r2")
    assert gateway is not None
    assert not gateway.replay_safe
    refused = core._check(response(400, OWN_BODIES[0][1]), "send", False, "r3")
    assert refused is not None
    assert not refused.replay_safe

    def broken(_: httpx.Response) -> bool:
        raise ValueError("cannot read")

    core.not_processed = broken
    still = core._check(response(503, OWN_BODIES[0][1]), "send", False, "r4")
    assert still is not None
    assert not still.replay_safe
