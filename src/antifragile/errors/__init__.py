"""Errors layer: the exception tree, outcome classification, redaction and the envelope.

See :mod:`antifragile.errors._tree` for the tree itself. The envelope models
(:class:`SuccessEnvelope`, :class:`ErrorEnvelope`, ... built on pydantic) are imported on first
use, so raising and catching errors never loads pydantic.
"""

import importlib as _importlib
import typing as _typing

from antifragile.errors._classify import (
    IDEMPOTENT_METHODS,
    RETRYABLE_STATUSES,
    classify_exception,
    classify_response,
    is_idempotent,
)
from antifragile.errors._headers import parse_reset, parse_retry_after, retry_after_from_headers
from antifragile.errors._tree import (
    AntifragileError,
    AttemptRecord,
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
from antifragile.observability._moved import moved_attribute as _moved_attribute
from antifragile.observability._redaction import (
    REDACTED,
    SENSITIVE_HEADERS,
    redact,
    redact_headers,
)

#: names this package exported before 0.2 that are now internal (or live elsewhere); they keep
#: working, with a DeprecationWarning, until the release after
_ENVELOPE = frozenset(
    {
        "Envelope",
        "ErrorBody",
        "ErrorEnvelope",
        "FieldError",
        "Meta",
        "SuccessEnvelope",
        "acapture",
        "capture",
        "error_body",
        "failure",
        "success",
    }
)

if _typing.TYPE_CHECKING:
    from antifragile.errors._envelope import (
        Envelope,
        ErrorBody,
        ErrorEnvelope,
        FieldError,
        Meta,
        SuccessEnvelope,
        acapture,
        capture,
        error_body,
        failure,
        success,
    )

_MOVED: dict[str, tuple[str, str | None]] = {
    "MASK": ("antifragile.observability._redaction", None),
    "mask_email": ("antifragile.observability._redaction", "antifragile.observability"),
    "mask_phone": ("antifragile.observability._redaction", "antifragile.observability"),
    "mask_pii": ("antifragile.observability._redaction", "antifragile.observability"),
    "mask_values": ("antifragile.observability._redaction", "antifragile.observability"),
    "personal_values": ("antifragile.observability._redaction", None),
}


# hidden from type checkers: a name that is not declared above is an error for them
if not _typing.TYPE_CHECKING:

    def __getattr__(name: str) -> _typing.Any:
        if name in _ENVELOPE:
            value = getattr(_importlib.import_module("antifragile.errors._envelope"), name)
            globals()[name] = value
            return value
        return _moved_attribute(__name__, name, _MOVED)


__all__ = [
    "IDEMPOTENT_METHODS",
    "REDACTED",
    "RETRYABLE_STATUSES",
    "SENSITIVE_HEADERS",
    "AntifragileError",
    "AttemptRecord",
    "AuthenticationError",
    "BulkheadFullError",
    "CircuitOpenError",
    "ConfigurationError",
    "ConflictError",
    "DeadlineExceededError",
    "Envelope",
    "ErrorBody",
    "ErrorCode",
    "ErrorEnvelope",
    "FieldError",
    "IntegrationError",
    "InvalidRequestError",
    "Meta",
    "NetworkError",
    "NotFoundError",
    "PermanentError",
    "RateLimitedError",
    "RejectedError",
    "RetryBudgetExhaustedError",
    "SchemaVersionError",
    "StoreError",
    "StoreUnavailableError",
    "SuccessEnvelope",
    "TransientError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
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
]
