"""OpenTelemetry traces, when the ``otel`` extra is installed and tracing is turned on.

``ANTIFRAGILE_OTEL_EXPORTER`` chooses the exporter: ``none`` (the default: no spans at all),
``console`` (spans printed to standard output, for local runs) or ``otlp`` (OTLP over HTTP, set
up by the standard ``OTEL_EXPORTER_OTLP_*`` variables). :func:`configure_tracing` reads it; the
service and the worker call it at start-up. The OpenTelemetry packages are imported only then:
without them, or with tracing off, every helper here is a no-op that costs one global look-up.

One request makes one trace::

    POST /v1/webhooks/whatsapp            (server span: TracingMiddleware)
      job inbound.process                 (the job's context carries ``traceparent``)
        inbound.pipeline
          job replies.send                (a job enqueued by a job continues the trace)
            HTTP POST whatsapp            (one span per outbound attempt: ResilientClient)

Every span carries the ``request_id`` attribute: the request id current when it started, the
same one the logs, the ``x-request-id`` headers and the jobs carry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from antifragile.observability._context import current_request_id
from antifragile.observability._events import Event, IntentDetected, JobStarted
from antifragile.observability._propagation import register_activator, register_injector

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "EXPORTER_ENV",
    "TracingMiddleware",
    "TracingObserver",
    "configure_tracing",
    "current_trace_id",
    "otel_available",
    "outbound_span",
    "shutdown_tracing",
    "span",
    "tracing_enabled",
]

_log = logging.getLogger("antifragile.observability")

#: the variable that chooses the exporter: ``none``, ``console`` or ``otlp``
EXPORTER_ENV = "ANTIFRAGILE_OTEL_EXPORTER"
EXPORTERS = ("none", "console", "otlp")
#: the attribute every span carries
REQUEST_ID = "request_id"
#: paths that are not traced (scrapes and probes)
UNTRACED_PATHS = frozenset({"/metrics", "/health", "/ready"})


@dataclass(eq=False)
class _Tracing:
    provider: Any
    tracer: Any
    propagator: Any
    undo: list[Callable[[], None]] = field(default_factory=list)


_state: _Tracing | None = None


class _NoSpan:
    """What the helpers give when tracing is off: a context manager and a span that do
    nothing."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        return None


_NO_SPAN = _NoSpan()


def otel_available() -> bool:
    """Whether the OpenTelemetry SDK (the ``otel`` extra) is installed."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        return False
    return True


def tracing_enabled() -> bool:
    """Whether spans are being recorded."""
    return _state is not None


def configure_tracing(
    exporter: str | None = None,
    *,
    span_exporter: Any = None,
    service_name: str = "antifragile",
) -> bool:
    """Turn tracing on with *exporter* (default: ``ANTIFRAGILE_OTEL_EXPORTER``, else ``none``)
    or with a ready *span_exporter* (tests pass an in-memory one); whether it is on.

    Calling it again replaces the previous set-up. Without the ``otel`` extra it logs a
    warning and leaves tracing off (the service runs the same).
    """
    choice = (exporter or os.environ.get(EXPORTER_ENV) or "none").strip().lower()
    if choice not in EXPORTERS:
        raise ValueError(f"{EXPORTER_ENV} must be one of {', '.join(EXPORTERS)}, got {choice!r}")
    shutdown_tracing()
    if choice == "none" and span_exporter is None:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        _log.warning(
            "tracing needs the otel extra (pip install 'antifragile[otel]'); spans are off"
        )
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    elif choice == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            _log.warning("the OTLP exporter is not installed (the otel extra); spans are off")
            return False
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    global _state
    state = _Tracing(
        provider=provider,
        tracer=provider.get_tracer("antifragile"),
        propagator=TraceContextTextMapPropagator(),
    )
    state.undo.append(register_injector(_inject))
    state.undo.append(register_activator(_activate_job))
    _state = state
    return True


def shutdown_tracing() -> None:
    """Flush and stop the spans of :func:`configure_tracing` (a no-op when off)."""
    global _state
    state, _state = _state, None
    if state is None:
        return
    for undo in state.undo:
        undo()
    try:
        state.provider.shutdown()
    except Exception:  # flushing at exit must not fail the exit
        _log.warning("flushing the last spans failed")


# -- spans --------------------------------------------------------------------------------------


def _attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    found: dict[str, Any] = {k: v for k, v in (attributes or {}).items() if v is not None}
    request_id = current_request_id()
    if request_id is not None:
        found[REQUEST_ID] = request_id
    return found


def span(name: str, *, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A span around a block (the current span's child), with the request id; a no-op when
    tracing is off. ``with span("inbound.pipeline") as s: s.set_attribute(...)``."""
    state = _state
    if state is None:
        return _NO_SPAN
    return state.tracer.start_as_current_span(  # type: ignore[no-any-return]
        name, attributes=_attributes(attributes)
    )


@contextmanager
def _outbound(state: _Tracing, provider: str, operation: str, request: Any) -> Iterator[Any]:
    from opentelemetry.trace import SpanKind

    method = str(getattr(request, "method", "") or "")
    attributes = _attributes({"antifragile.provider": provider, "antifragile.operation": operation})
    if method:
        attributes["http.request.method"] = method
    url = getattr(request, "url", None)
    if url is not None:
        attributes["server.address"] = str(getattr(url, "host", "") or "")
        attributes["url.path"] = str(getattr(url, "path", "") or "")
    with state.tracer.start_as_current_span(
        f"HTTP {method or 'call'} {provider}", kind=SpanKind.CLIENT, attributes=attributes
    ) as current:
        headers = getattr(request, "headers", None)
        if headers is not None:  # the provider (or the sandbox) may continue the trace
            carrier: dict[str, str] = {}
            state.propagator.inject(carrier)
            for key, value in carrier.items():
                headers[key] = value
        yield current


def outbound_span(
    provider: str, operation: str, request: Any = None
) -> AbstractContextManager[Any]:
    """A client span around one outbound attempt of *request* (an httpx request: its method
    and URL are recorded and ``traceparent`` is added to its headers); call
    ``span.set_attribute("http.response.status_code", status)`` inside. A no-op when off."""
    state = _state
    if state is None:
        return _NO_SPAN
    return _outbound(state, provider, operation, request)


def current_trace_id() -> str | None:
    """The current trace's id (32 hex characters), or ``None`` (no span, or tracing off)."""
    if _state is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}"


# -- carrying the trace through the job queue ----------------------------------------------------


def _inject(context: dict[str, str]) -> None:
    state = _state
    if state is not None:
        state.propagator.inject(context)  # traceparent (and tracestate)


@contextmanager
def _job_span(state: _Tracing, context: Mapping[str, str]) -> Iterator[Any]:
    from opentelemetry.trace import SpanKind

    parent = state.propagator.extract(dict(context)) if "traceparent" in context else None
    with state.tracer.start_as_current_span(
        "job", context=parent, kind=SpanKind.CONSUMER, attributes=_attributes(None)
    ) as current:
        yield current


def _activate_job(context: Mapping[str, str]) -> AbstractContextManager[Any]:
    state = _state
    if state is None:
        return _NO_SPAN
    return _job_span(state, context)


class TracingObserver:
    """Names the job span after the job that runs in it, and records the intent the pipeline
    detects on the current span: give it to ``Jobs(observer=...)`` (beside the metrics)."""

    __slots__ = ()

    def on_event(self, event: Event) -> None:
        if _state is None:
            return
        if isinstance(event, JobStarted):
            from opentelemetry import trace

            current = trace.get_current_span()
            current.update_name(f"job {event.policy}")
            current.set_attribute("antifragile.job", event.policy)
            current.set_attribute("antifragile.queue", event.operation or "")
            current.set_attribute("antifragile.attempt", event.attempt)
        elif isinstance(event, IntentDetected):
            from opentelemetry import trace

            current = trace.get_current_span()
            current.set_attribute("antifragile.intent", event.intent)
            current.set_attribute("antifragile.confidence", event.confidence)


# -- the server span ----------------------------------------------------------------------------


class TracingMiddleware:
    """Pure ASGI: a server span per HTTP request (webhooks, admin...), continuing the caller's
    ``traceparent``; the request id and the status code are recorded on it. Paths in
    :data:`UNTRACED_PATHS` are not traced. Costs one look-up per request when tracing is off.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = _state
        if state is None or scope["type"] != "http" or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        from opentelemetry.trace import SpanKind, Status, StatusCode

        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k in (b"traceparent", b"tracestate")
        }
        parent = state.propagator.extract(headers) if headers else None
        method = scope["method"]
        with state.tracer.start_as_current_span(
            f"{method} {scope['path']}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=_attributes({"http.request.method": method, "url.path": scope["path"]}),
        ) as current:

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    current.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        current.set_status(Status(StatusCode.ERROR))
                    route = scope.get("route")
                    template = getattr(route, "path", None)
                    if isinstance(template, str):
                        current.update_name(f"{method} {template}")
                        current.set_attribute("http.route", template)
                    rid = current_request_id()
                    if rid is not None:
                        current.set_attribute(REQUEST_ID, rid)
                await send(message)

            await self.app(scope, receive, traced_send)
