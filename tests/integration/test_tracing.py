"""OpenTelemetry traces across the queue: one signed webhook makes one trace -- the server
span, the job that processes it (continued from the ``traceparent`` in the job's context), the
pipeline, the reply's job, and the reply's outbound attempt at the WhatsApp sandbox -- with the
request id on every span. Spans go to the SDK's in-memory exporter.

Skipped when the ``otel`` extra is not installed (``make test`` installs it).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip(
    "opentelemetry.sdk", reason="tracing needs the otel extra: pip install -e '.[otel]'"
)

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from antifragile.inbound import whatsapp_signature
from antifragile.observability import (
    configure_tracing,
    current_trace_id,
    shutdown_tracing,
    span,
    tracing_enabled,
)
from antifragile.sandbox import (
    ProviderSandbox,
    WhatsAppSimulator,
    whatsapp_text_message,
)
from antifragile.service import Settings, create_app
from antifragile.service._assistant import Assistant
from tests.integration.test_metrics_endpoint import serving

APP_SECRET = "tracing-app-secret"
WA_TOKEN = "EAAG-tracing-token"
PHONE_ID = "106540352242922"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    assert configure_tracing(span_exporter=memory)
    try:
        yield memory
    finally:
        shutdown_tracing()


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[ProviderSandbox]:
    simulator = WhatsAppSimulator(
        access_tokens=[WA_TOKEN], phone_number_ids=[PHONE_ID], throughput=10**6
    )
    with ProviderSandbox([simulator]) as running:
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_BASE_URL", running.base_url("whatsapp"))
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN", WA_TOKEN)
        monkeypatch.setenv("ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID", PHONE_ID)
        yield running


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def parent_of(child: ReadableSpan) -> int | None:
    return None if child.parent is None else child.parent.span_id


def span_id(s: ReadableSpan) -> int:
    assert s.context is not None
    return int(s.context.span_id)


async def test_one_trace_from_the_webhook_through_the_jobs_to_the_outbound_attempt(
    tmp_path: Path, sandbox: ProviderSandbox, exporter: InMemorySpanExporter
) -> None:
    """The webhook's server span is the root; the processing job's span is its child through
    the queue; the pipeline span is the job's child; the reply job continues the trace from the
    pipeline, and the attempt at WhatsApp is the reply job's child. Every span carries the
    request id the webhook was answered with."""
    settings = Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": APP_SECRET,
        }
    )
    assistant = Assistant(settings)
    app = create_app(settings, assistant=assistant)
    payload = whatsapp_text_message(
        from_="447700900123",
        body="Do you have cakes available on Saturday?",
        message_id=f"wamid.{uuid.uuid4().hex}",
        phone_number_id=PHONE_ID,
    )
    body = json.dumps(payload).encode()
    headers = {
        "content-type": "application/json",
        "x-hub-signature-256": whatsapp_signature(APP_SECRET, body),
    }
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        answered = await client.post("/v1/webhooks/whatsapp", content=body, headers=headers)
        assert answered.status_code == 200
        request_id = answered.headers["x-request-id"]
        await client.get("/metrics")  # scrapes are not traced
        await assistant.worker(poll_interval=0.01).run_until_idle()
    assert len(sandbox.effects("whatsapp")) == 1

    spans = exporter.get_finished_spans()
    server = by_name(spans, "POST /v1/webhooks/whatsapp")
    process = by_name(spans, "job inbound.process")
    pipeline = by_name(spans, "inbound.pipeline")
    reply = by_name(spans, "job replies.send")
    attempt = by_name(spans, "HTTP POST whatsapp")

    assert server.context is not None
    assert {s.context.trace_id for s in spans if s.context is not None} == {server.context.trace_id}
    assert server.parent is None
    assert parent_of(process) == span_id(server)
    assert parent_of(pipeline) == span_id(process)
    assert parent_of(reply) == span_id(pipeline)
    assert parent_of(attempt) == span_id(reply)
    for each in spans:
        assert each.attributes is not None
        assert each.attributes.get("request_id") == request_id, each.name
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert pipeline.attributes is not None
    assert pipeline.attributes["antifragile.intent"] == "AVAILABILITY_INQUIRY"
    assert attempt.attributes is not None
    assert attempt.attributes["antifragile.provider"] == "whatsapp"
    assert attempt.attributes["http.response.status_code"] == 200
    assert not any(s.name.endswith("/metrics") for s in spans)


def test_a_span_outside_any_request_has_the_trace_id_for_logs(
    exporter: InMemorySpanExporter,
) -> None:
    """Inside a span, ``current_trace_id()`` is its trace id (the logs carry it); outside,
    ``None``."""
    assert tracing_enabled()
    assert current_trace_id() is None
    with span("work") as current:
        trace_id = current_trace_id()
        assert trace_id is not None
        assert trace_id == f"{current.get_span_context().trace_id:032x}"
    assert current_trace_id() is None


def test_tracing_is_off_by_default_and_costs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``ANTIFRAGILE_OTEL_EXPORTER`` unset (or ``none``) nothing is traced: the helpers
    hand back one shared no-op object."""
    monkeypatch.delenv("ANTIFRAGILE_OTEL_EXPORTER", raising=False)
    assert configure_tracing() is False
    assert not tracing_enabled()
    first: Any = span("a")
    second: Any = span("b")
    assert first is second
    with first as inside:
        inside.set_attribute("ignored", 1)
