"""Observability: request context and the typed events every policy decision emits.

Exporters (Prometheus, OpenTelemetry, structlog) subscribe to events through :class:`Observer`.
"""

from antifragile.observability._context import current_request_id, new_request_id, request_context
from antifragile.observability._events import (
    AttemptFinished,
    BreakerTransition,
    CallRejected,
    Event,
    FallbackUsed,
    GaveUp,
    HedgeStarted,
    LimiterAdjusted,
    LimiterWait,
    LoggingObserver,
    Observer,
    Observers,
    RecordingObserver,
    RetryScheduled,
    StoreFallback,
)

__all__ = [
    "AttemptFinished",
    "BreakerTransition",
    "CallRejected",
    "Event",
    "FallbackUsed",
    "GaveUp",
    "HedgeStarted",
    "LimiterAdjusted",
    "LimiterWait",
    "LoggingObserver",
    "Observer",
    "Observers",
    "RecordingObserver",
    "RetryScheduled",
    "StoreFallback",
    "current_request_id",
    "new_request_id",
    "request_context",
]
