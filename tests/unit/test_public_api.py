"""The public surface is exactly what ``antifragile.__all__`` lists, and nothing leaks."""

from __future__ import annotations

import importlib
import pkgutil

import antifragile


def test_all_is_unique_and_resolvable() -> None:
    """Every name in __all__ exists once (ruff keeps it sorted, so diffs show additions)."""
    names = list(antifragile.__all__)
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(antifragile, name), name


def test_public_names_are_exactly_the_expected_set() -> None:
    """Adding or removing a public name is a deliberate act: this list must change with it."""
    expected = {
        "AntifragileError", "AttemptFinished", "AttemptRecord", "AuthenticationError",
        "Backoff", "BreakerConfig", "BreakerSnapshot", "BreakerStateHolder",
        "BreakerTransition", "Bulkhead", "BulkheadFullError", "CallInfo", "CallRejected",
        "CircuitBreaker", "CircuitOpenError", "CircuitState", "Clock", "ConfigurationError",
        "ConflictError", "Constant", "DEFAULT", "DEFAULT_ORDER", "DeadlineExceededError",
        "DecorrelatedJitter", "Envelope", "ErrorBody", "ErrorCode", "ErrorEnvelope", "Event",
        "Exponential", "FakeClock", "Fallback", "FallbackUsed", "GaveUp", "Hedge",
        "HedgeStarted", "IDEMPOTENT_METHODS", "IntegrationError", "InvalidRequestError",
        "Jitter", "LimiterAdjusted", "LimiterWait", "Linear", "LocalBreakerState",
        "LoggingObserver", "Meta", "NetworkError", "NotFoundError", "Observer", "Observers",
        "PermanentError", "Policy", "REDACTED", "RETRYABLE_STATUSES", "RateLimitInfo",
        "RateLimitedError", "RecordingObserver", "RejectedError", "ResilientClient", "Retry",
        "RetryBudget", "RetryBudgetConfig", "RetryBudgetExhaustedError", "RetryDecision",
        "RetryScheduled", "SENSITIVE_HEADERS", "SYSTEM_CLOCK", "SchemaVersionError",
        "SharedCircuitBreaker", "SharedTokenBucket",
        "DEFAULT_JOB_RETRY", "JobContext", "Jobs", "StatusFlag", "Worker",
        "StaleCache", "StoreError", "StoreFallback", "StoreUnavailableError", "Strategy",
        "SuccessEnvelope", "SyncResilientClient", "SystemClock", "TokenBucket",
        "TransientError", "UpstreamTimeoutError", "UpstreamUnavailableError", "__version__",
        "acapture", "capture", "classify_exception", "classify_response", "current_request_id",
        "default_record", "default_retry_on", "error_body", "failure", "is_idempotent",
        "new_request_id", "open_store", "parse_rate_limit", "parse_reset", "parse_retry_after",
        "redact",
        "redact_headers", "request_context", "resilient", "retry_after_from_headers",
        "success", "time_remaining",
    }  # fmt: skip
    assert set(antifragile.__all__) == expected


def test_implementation_modules_are_private() -> None:
    """Below each layer package, modules are private (``_name``): users import from packages."""
    for info in pkgutil.walk_packages(antifragile.__path__, "antifragile."):
        parts = info.name.split(".")
        if info.ispkg:
            continue
        assert parts[-1].startswith("_") or parts[-1] == "__main__", info.name
        importlib.import_module(info.name)


def test_py_typed_marker_ships() -> None:
    """The package declares itself typed (PEP 561)."""
    from importlib.resources import files

    assert files("antifragile").joinpath("py.typed").is_file()
