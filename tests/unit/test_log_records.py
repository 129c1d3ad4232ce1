"""Log lines built from allow-listed fields (httpx, uvicorn), Unix times left unmasked, and the
``text`` format as documented (logfmt)."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from antifragile.observability import configure_logging
from antifragile.observability._redaction import mask_pii


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture(autouse=True)
def propagating(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx's and uvicorn's loggers pass their records to the root logger, whatever a server
    started earlier in this process set on them (uvicorn's own log configuration stops them)."""
    for name in ("httpx", "uvicorn.access"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "propagate", True)
        monkeypatch.setattr(logger, "disabled", False)
        monkeypatch.setattr(logger, "level", logging.NOTSET)
        monkeypatch.setattr(logger, "handlers", [])


def test_an_httpx_request_line_keeps_method_host_path_and_status_only() -> None:
    stream = io.StringIO()
    with configure_logging(json=True, stream=stream):
        logging.getLogger("httpx").info(
            'HTTP Request: %s %s "%s %d %s"',
            "GET",
            "https://acme.myshopify.com/admin/api/2024-10/customers/search.json"
            "?query=email%3Aada%40example.com",
            "HTTP/1.1",
            200,
            "OK",
        )
        logging.getLogger("httpx").info(
            'HTTP Request: %s %s "%s %d %s"',
            "POST",
            "https://hooks.slack.com/services/T000/B000/XXXXSECRET",
            "HTTP/1.1",
            200,
            "OK",
        )
    shopify, slack = lines(stream)
    assert {k: v for k, v in shopify.items() if k != "timestamp"} == {
        "event": "outbound request",
        "level": "info",
        "logger": "httpx",
        "method": "GET",
        "host": "acme.myshopify.com",
        "path": "/admin/api/2024-10/customers/search.json",
        "status": 200,
    }
    assert "XXXXSECRET" not in json.dumps(slack)
    assert slack["path"] == "/services/[REDACTED]"


def test_a_served_request_line_drops_the_query_string() -> None:
    stream = io.StringIO()
    with configure_logging(json=True, stream=stream):
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d',
            "10.0.0.7:50412",
            "GET",
            "/v1/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=tok&email=a@b.co",
            "1.1",
            200,
        )
        logging.getLogger("elsewhere").info("%s and %s", "one", "two")
    served, other = lines(stream)
    assert served["event"] == "inbound request"
    assert (served["client"], served["method"], served["status"]) == ("10.0.0.7:50412", "GET", 200)
    assert served["path"] == "/v1/webhooks/whatsapp"
    assert other["event"] == "one and two"
    assert "positional_args" not in other


def test_unix_times_are_not_masked_as_phone_numbers() -> None:
    text = "tick=1765113600 at 1765113600123 from +1 555 123 4567 and 447700900123"
    masked = mask_pii(text)
    assert "tick=1765113600 at 1765113600123" in masked
    assert "4567" not in masked
    assert "447700900123" not in masked
    assert mask_pii("15551234567") != "15551234567"  # 11 digits from 1: a NANP number


def test_the_text_format_is_logfmt_starting_with_the_documented_keys() -> None:
    stream = io.StringIO()
    with configure_logging(json=False, stream=stream):
        logging.getLogger("antifragile.jobs").warning(
            "job %s failed", "j1", extra={"reason": "two words", "phone": "+447700900123"}
        )
    (line,) = stream.getvalue().splitlines()
    assert re.fullmatch(
        r'timestamp=\S+Z level=warning logger=antifragile\.jobs event="job j1 failed" '
        r'reason="two words" phone=\+4477\S+23',
        line,
    ), line
