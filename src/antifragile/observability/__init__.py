"""Observability: request context, the typed events every policy decision emits, and the
exporters that turn them into metrics, traces and logs.

Exporters subscribe to events through :class:`Observer`: :class:`Metrics` (Prometheus, its
``observer`` for policies and ``jobs_observer`` for ``Jobs(observer=...)``), the OpenTelemetry
spans of :func:`configure_tracing` (optional: the ``otel`` extra), and the structured JSON logs of
:func:`configure_logging`. Jobs carry the context of the request that caused them
(:func:`capture_context`, :func:`activate`); other context carriers plug in with
:func:`register_injector` and :func:`register_activator`.

:class:`Metrics`, :class:`MetricsObserver`, :func:`configure_logging` and :func:`add_secrets`
are imported on first use (``prometheus_client`` and ``structlog`` load only then).

This is the bottom layer: every other layer may import it, and it imports none of them (not even
:mod:`antifragile.errors`); personal-data masking (:func:`mask_email`, :func:`mask_phone`,
:func:`mask_pii`) and secret redaction live here for that reason.
"""

import importlib as _importlib
import typing as _typing

from antifragile.observability._context import current_request_id, new_request_id, request_context
from antifragile.observability._events import (
    AttemptFinished,
    AttemptRecorder,
    BreakerTransition,
    CallRejected,
    DeliveryStatusRecorded,
    Event,
    FallbackUsed,
    GaveUp,
    HedgeStarted,
    IntentDetected,
    JobEnqueued,
    JobFinished,
    JobStarted,
    LimiterAdjusted,
    LimiterWait,
    LoggingObserver,
    Observer,
    Observers,
    RecordingObserver,
    RetryScheduled,
    SagaCompensated,
    StoreFallback,
)
from antifragile.observability._moved import moved_attribute as _moved_attribute
from antifragile.observability._personal import personal_key, pseudonymise, reference
from antifragile.observability._propagation import (
    Activator,
    Injector,
    activate,
    capture_context,
    register_activator,
    register_injector,
)
from antifragile.observability._redaction import mask_email, mask_phone, mask_pii, mask_values
from antifragile.observability._tracing import (
    TracingMiddleware,
    TracingObserver,
    configure_tracing,
    current_trace_id,
    shutdown_tracing,
    span,
    tracing_enabled,
)

if _typing.TYPE_CHECKING:
    from antifragile.observability._logging import add_secrets, configure_logging
    from antifragile.observability._metrics import Metrics, MetricsObserver

_LAZY = {
    "Metrics": "antifragile.observability._metrics",
    "MetricsObserver": "antifragile.observability._metrics",
    "add_secrets": "antifragile.observability._logging",
    "configure_logging": "antifragile.observability._logging",
}


#: names exported before 0.2 that are now internal; they keep working, with a
#: DeprecationWarning, until the release after
_MOVED = {
    "configure_process": "antifragile.observability._logging",
    "outbound_span": "antifragile.observability._tracing",
}


# hidden from type checkers: a name that is not declared above is an error for them
if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> _typing.Any:
        module = _LAZY.get(name)
        if module is not None:
            value = getattr(_importlib.import_module(module), name)
            globals()[name] = value
            return value
        internal = _MOVED.get(name)
        return _moved_attribute(
            __name__, name, {} if internal is None else {name: (internal, None)}
        )


__all__ = [
    "Activator",
    "AttemptFinished",
    "AttemptRecorder",
    "BreakerTransition",
    "CallRejected",
    "DeliveryStatusRecorded",
    "Event",
    "FallbackUsed",
    "GaveUp",
    "HedgeStarted",
    "Injector",
    "IntentDetected",
    "JobEnqueued",
    "JobFinished",
    "JobStarted",
    "LimiterAdjusted",
    "LimiterWait",
    "LoggingObserver",
    "Metrics",
    "MetricsObserver",
    "Observer",
    "Observers",
    "RecordingObserver",
    "RetryScheduled",
    "SagaCompensated",
    "StoreFallback",
    "TracingMiddleware",
    "TracingObserver",
    "activate",
    "add_secrets",
    "capture_context",
    "configure_logging",
    "configure_tracing",
    "current_request_id",
    "current_trace_id",
    "mask_email",
    "mask_phone",
    "mask_pii",
    "mask_values",
    "new_request_id",
    "personal_key",
    "pseudonymise",
    "reference",
    "register_activator",
    "register_injector",
    "request_context",
    "shutdown_tracing",
    "span",
    "tracing_enabled",
]
