"""antifragile: keeps conversations and integrations working when the services they depend on fail.

The names most programs need are here: the policies and their clocks, the HTTP clients, the
error tree, durable jobs, the shared breaker and bucket, and the request context. Everything
else lives in its layer's package (:mod:`antifragile.policies`, :mod:`antifragile.jobs`,
:mod:`antifragile.errors`, :mod:`antifragile.observability`, ...).

``import antifragile`` is cheap: each name is imported on first use (PEP 562), so a program that
only wants :class:`Policy` never loads the HTTP client or the job queues.
"""

import importlib as _importlib
import warnings as _warnings

# not ``typing.TYPE_CHECKING``: importing typing would be most of what ``import antifragile``
# costs (type checkers read any name TYPE_CHECKING as true); deleted below
TYPE_CHECKING = False

if TYPE_CHECKING:
    from antifragile.errors import (
        AntifragileError,
        AuthenticationError,
        BulkheadFullError,
        CircuitOpenError,
        ConfigurationError,
        ConflictError,
        DeadlineExceededError,
        ErrorCode,
        IntegrationError,
        InvalidRequestError,
        NetworkError,
        NotFoundError,
        PermanentError,
        RateLimitedError,
        RejectedError,
        RetryBudgetExhaustedError,
        SchemaVersionError,
        StoreError,
        StoreUnavailableError,
        TransientError,
        UpstreamTimeoutError,
        UpstreamUnavailableError,
    )
    from antifragile.http import ResilientClient, SyncResilientClient
    from antifragile.jobs import JobContext, Jobs, Worker
    from antifragile.observability import request_context
    from antifragile.policies import (
        Bulkhead,
        CircuitBreaker,
        Clock,
        Constant,
        DecorrelatedJitter,
        Exponential,
        FakeClock,
        Fallback,
        Hedge,
        Linear,
        Policy,
        Retry,
        RetryBudget,
        StaleCache,
        SystemClock,
        TokenBucket,
        resilient,
    )
    from antifragile.stores import SharedCircuitBreaker, SharedTokenBucket, open_store

    __version__: str

# name -> the package it is imported from on first use
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "AntifragileError",
            "AuthenticationError",
            "BulkheadFullError",
            "CircuitOpenError",
            "ConfigurationError",
            "ConflictError",
            "DeadlineExceededError",
            "ErrorCode",
            "IntegrationError",
            "InvalidRequestError",
            "NetworkError",
            "NotFoundError",
            "PermanentError",
            "RateLimitedError",
            "RejectedError",
            "RetryBudgetExhaustedError",
            "SchemaVersionError",
            "StoreError",
            "StoreUnavailableError",
            "TransientError",
            "UpstreamTimeoutError",
            "UpstreamUnavailableError",
        ),
        "antifragile.errors",
    ),
    **dict.fromkeys(("ResilientClient", "SyncResilientClient"), "antifragile.http"),
    **dict.fromkeys(("JobContext", "Jobs", "Worker"), "antifragile.jobs"),
    "request_context": "antifragile.observability",
    **dict.fromkeys(
        (
            "Bulkhead",
            "CircuitBreaker",
            "Clock",
            "Constant",
            "DecorrelatedJitter",
            "Exponential",
            "FakeClock",
            "Fallback",
            "Hedge",
            "Linear",
            "Policy",
            "Retry",
            "RetryBudget",
            "StaleCache",
            "SystemClock",
            "TokenBucket",
            "resilient",
        ),
        "antifragile.policies",
    ),
    **dict.fromkeys(
        ("SharedCircuitBreaker", "SharedTokenBucket", "open_store"), "antifragile.stores"
    ),
}

#: names that were importable from ``antifragile`` before 0.2 -> where they live now; they keep
#: working, with a DeprecationWarning, until the release after
_DEPRECATED: dict[str, str] = {
    **dict.fromkeys(
        (
            "IDEMPOTENT_METHODS",
            "REDACTED",
            "RETRYABLE_STATUSES",
            "SENSITIVE_HEADERS",
            "AttemptRecord",
            "Envelope",
            "ErrorBody",
            "ErrorEnvelope",
            "Meta",
            "SuccessEnvelope",
            "acapture",
            "capture",
            "classify_exception",
            "classify_response",
            "error_body",
            "failure",
            "is_idempotent",
            "parse_reset",
            "parse_retry_after",
            "redact",
            "redact_headers",
            "retry_after_from_headers",
            "success",
        ),
        "antifragile.errors",
    ),
    "parse_rate_limit": "antifragile.http",
    **dict.fromkeys(("DEFAULT_JOB_RETRY", "StatusFlag"), "antifragile.jobs"),
    **dict.fromkeys(
        (
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
        ),
        "antifragile.observability",
    ),
    **dict.fromkeys(
        (
            "DEFAULT",
            "DEFAULT_ORDER",
            "SYSTEM_CLOCK",
            "Backoff",
            "BreakerConfig",
            "BreakerSnapshot",
            "BreakerStateHolder",
            "CallInfo",
            "CircuitState",
            "Jitter",
            "LocalBreakerState",
            "RateLimitInfo",
            "RetryBudgetConfig",
            "RetryDecision",
            "Strategy",
            "default_record",
            "default_retry_on",
            "time_remaining",
        ),
        "antifragile.policies",
    ),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("antifragile")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"


# hidden from type checkers: a name that is not declared above is an error for them
if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        module = _EXPORTS.get(name)
        if module is not None:
            value = getattr(_importlib.import_module(module), name)
            globals()[name] = value
            return value
        if name == "__version__":
            value = globals()["__version__"] = _version()
            return value
        moved = _DEPRECATED.get(name)
        if moved is not None:
            _warnings.warn(
                f"antifragile.{name} is deprecated and will be removed in the next release; "
                f"use `from {moved} import {name}`",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(_importlib.import_module(moved), name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


del TYPE_CHECKING


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, "__version__"})


__all__ = [
    "AntifragileError",
    "AuthenticationError",
    "Bulkhead",
    "BulkheadFullError",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ConfigurationError",
    "ConflictError",
    "Constant",
    "DeadlineExceededError",
    "DecorrelatedJitter",
    "ErrorCode",
    "Exponential",
    "FakeClock",
    "Fallback",
    "Hedge",
    "IntegrationError",
    "InvalidRequestError",
    "JobContext",
    "Jobs",
    "Linear",
    "NetworkError",
    "NotFoundError",
    "PermanentError",
    "Policy",
    "RateLimitedError",
    "RejectedError",
    "ResilientClient",
    "Retry",
    "RetryBudget",
    "RetryBudgetExhaustedError",
    "SchemaVersionError",
    "SharedCircuitBreaker",
    "SharedTokenBucket",
    "StaleCache",
    "StoreError",
    "StoreUnavailableError",
    "SyncResilientClient",
    "SystemClock",
    "TokenBucket",
    "TransientError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "Worker",
    "__version__",
    "open_store",
    "request_context",
    "resilient",
]
