"""The antifragile exception tree.

Every exception antifragile raises derives from :class:`AntifragileError`::

    AntifragileError                       code            retryable
    ├── ConfigurationError (ValueError)    CONFIGURATION   no   misuse: bad arguments, bad config
    │   └── SchemaVersionError             SCHEMA_VERSION  no   the database schema is newer than
    │                                                           this version of antifragile
    ├── StoreError                                              a state store failed
    │   └── StoreUnavailableError          STORE_UNAVAILABLE yes  cannot reach the store
    └── IntegrationError                   (varies)        (varies)  a call to a provider failed
        ├── TransientError                                 yes  may succeed if tried again later
        │   ├── RateLimitedError           RATE_LIMITED         .retry_after (seconds or None)
        │   ├── UpstreamUnavailableError   UPSTREAM_UNAVAILABLE 500/502/503/504/425
        │   ├── UpstreamTimeoutError       TIMEOUT              read/write/pool timeout, 408
        │   ├── NetworkError               NETWORK              connect error, reset, protocol
        │   └── DeadlineExceededError      DEADLINE_EXCEEDED    the call's total deadline passed
        ├── PermanentError                                 no   trying again will not help
        │   ├── InvalidRequestError        VALIDATION           400, 422
        │   ├── AuthenticationError        AUTH                 401, 403
        │   ├── NotFoundError              NOT_FOUND            404, 410
        │   ├── ConflictError              CONFLICT             409
        │   └── (PermanentError itself)    BAD_REQUEST / UPSTREAM_ERROR  other 4xx / other 5xx
        └── RejectedError                                  yes  a local policy refused the call;
            ├── CircuitOpenError           CIRCUIT_OPEN         nothing reached the provider
            │                                                   .until (wall-clock epoch seconds)
            ├── BulkheadFullError          BULKHEAD_FULL
            └── RetryBudgetExhaustedError  RETRY_BUDGET_EXHAUSTED

``retryable`` answers "could a later attempt succeed?" and is what a durable job looks at. The
in-process retry policy is stricter: it does not retry a :class:`RejectedError` (an open breaker
must fail fast) and only re-sends a request when that is safe (see ``replay_safe``).

Every :class:`IntegrationError` carries the provider, the operation, the HTTP status, a stable
``code``, the request id and the history of attempts (:class:`AttemptRecord`). When retries run
out the caller receives the last error itself, with the whole history in ``attempts`` and the
reason for stopping in ``give_up_reason``; it is never wrapped. Messages are redacted at
construction, so no token, key or signature survives in ``str(error)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from antifragile.observability._redaction import redact


class ErrorCode(enum.StrEnum):
    """Stable, machine-readable error codes (the ``code`` of the response envelope)."""

    RATE_LIMITED = "RATE_LIMITED"
    UPSTREAM_UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    TIMEOUT = "TIMEOUT"
    NETWORK = "NETWORK"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    VALIDATION = "VALIDATION"
    AUTH = "AUTH"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    BAD_REQUEST = "BAD_REQUEST"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    BULKHEAD_FULL = "BULKHEAD_FULL"
    RETRY_BUDGET_EXHAUSTED = "RETRY_BUDGET_EXHAUSTED"
    CONFIGURATION = "CONFIGURATION"
    SCHEMA_VERSION = "SCHEMA_VERSION"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    SIGNATURE_INVALID = "SIGNATURE_INVALID"
    PUBLIC_URL_REQUIRED = "PUBLIC_URL_REQUIRED"
    MALFORMED_PAYLOAD = "MALFORMED_PAYLOAD"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    FORBIDDEN = "FORBIDDEN"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of a call, as kept in an error's ``attempts`` history.

    ``started_at`` is wall-clock epoch seconds; ``duration`` and ``delay`` are seconds. ``delay``
    is the back-off chosen before the next attempt (``None`` for the last one).
    """

    number: int
    started_at: float
    duration: float
    code: str
    message: str
    status: int | None = None
    delay: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "started_at": self.started_at,
            "duration": self.duration,
            "code": self.code,
            "message": self.message,
            "status": self.status,
            "delay": self.delay,
        }


def _rebuild(cls: type[AntifragileError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class AntifragileError(Exception):
    """Root of every exception antifragile raises."""

    default_code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    default_retryable: ClassVar[bool] = False

    code: str
    retryable: bool

    def __init__(
        self, message: str, *, code: str | None = None, retryable: bool | None = None
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.code = str(code or self.default_code)
        self.retryable = self.default_retryable if retryable is None else retryable

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only constructors do not pickle by default; jobs and processes need them to
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the response envelope."""
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


class ConfigurationError(AntifragileError, ValueError):
    """The library was called or configured wrongly; fix the code, do not retry."""

    default_code = ErrorCode.CONFIGURATION


class SchemaVersionError(ConfigurationError):
    """The database was migrated by a newer antifragile; this version must not run on it."""

    default_code = ErrorCode.SCHEMA_VERSION


class StoreError(AntifragileError):
    """A state store (SQLite, PostgreSQL, Redis) failed."""

    default_code = ErrorCode.STORE_UNAVAILABLE


class StoreUnavailableError(StoreError):
    """The store cannot be reached (down, wrong address, timed out)."""

    default_code = ErrorCode.STORE_UNAVAILABLE
    default_retryable = True


class IntegrationError(AntifragileError):
    """A call to an external provider failed (or was refused locally before reaching it)."""

    default_code: ClassVar[ErrorCode] = ErrorCode.UPSTREAM_ERROR

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        operation: str | None = None,
        status: int | None = None,
        code: str | None = None,
        retryable: bool | None = None,
        request_id: str | None = None,
        replay_safe: bool = True,
        attempts: tuple[AttemptRecord, ...] = (),
        detail: str | None = None,
    ) -> None:
        super().__init__(message, code=code, retryable=retryable)
        self.provider = provider
        self.operation = operation
        self.status = status
        self.request_id = request_id
        #: True when re-sending cannot duplicate an effect: the method is idempotent, the
        #: request carried an idempotency key, or it never left this process.
        self.replay_safe = replay_safe
        self.attempts = attempts
        #: an excerpt of the provider's error body, redacted
        self.detail = None if detail is None else redact(detail)[:500]
        #: why retrying stopped, set when this error ends a retry loop
        self.give_up_reason: str | None = None

    def __str__(self) -> str:
        where = ".".join(p for p in (self.provider, self.operation) if p)
        parts = [f"{where}: {self.message}" if where else self.message]
        if self.status is not None and str(self.status) not in self.message:
            parts.append(f"(HTTP {self.status})")
        if len(self.attempts) > 1:
            parts.append(f"after {len(self.attempts)} attempts")
        if self.request_id:
            parts.append(f"[request_id={self.request_id}]")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self), "retryable": self.retryable}


class TransientError(IntegrationError):
    """May succeed if tried again later."""

    default_retryable = True
    default_code = ErrorCode.UPSTREAM_UNAVAILABLE


class RateLimitedError(TransientError):
    """The provider (or the local limiter) asked us to slow down.

    ``retry_after`` is the number of seconds to wait, when known. A retry policy raises this at
    once when ``retry_after`` lies beyond its deadline, so that a durable job can be scheduled for
    then instead.
    """

    default_code = ErrorCode.RATE_LIMITED

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        local: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after
        #: True when this process's own rate limiter refused a token: no request was made (a
        #: durable job waits for it without using up an attempt)
        self.local = local


class UpstreamUnavailableError(TransientError):
    """The provider answered 500, 502, 503, 504 or 425."""

    default_code = ErrorCode.UPSTREAM_UNAVAILABLE

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class UpstreamTimeoutError(TransientError):
    """No answer in time: a read, write or pool timeout, an attempt timeout, or HTTP 408."""

    default_code = ErrorCode.TIMEOUT


class NetworkError(TransientError):
    """The connection failed: refused, reset, DNS, TLS or an HTTP protocol error."""

    default_code = ErrorCode.NETWORK


class DeadlineExceededError(TransientError):
    """The call's total deadline passed before it could complete."""

    default_code = ErrorCode.DEADLINE_EXCEEDED


class PermanentError(IntegrationError):
    """Trying again with the same request will not help (most 4xx)."""

    default_retryable = False
    default_code = ErrorCode.BAD_REQUEST


class InvalidRequestError(PermanentError):
    """The provider rejected the request's content (400, 422)."""

    default_code = ErrorCode.VALIDATION


class AuthenticationError(PermanentError):
    """Credentials are missing, wrong or lack permission (401, 403)."""

    default_code = ErrorCode.AUTH


class NotFoundError(PermanentError):
    """The resource does not exist (404, 410)."""

    default_code = ErrorCode.NOT_FOUND


class ConflictError(PermanentError):
    """The resource already exists or changed concurrently (409)."""

    default_code = ErrorCode.CONFLICT


class RejectedError(IntegrationError):
    """A local policy refused the call; nothing was sent to the provider."""

    default_retryable = True


class CircuitOpenError(RejectedError):
    """The provider's circuit breaker is open; ``until`` is when it lets a probe through."""

    default_code = ErrorCode.CIRCUIT_OPEN

    def __init__(self, message: str, *, until: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        #: wall-clock epoch seconds at which the breaker half-opens (None when forced open)
        self.until = until


class BulkheadFullError(RejectedError):
    """Too many calls to this provider are already in flight."""

    default_code = ErrorCode.BULKHEAD_FULL


class RetryBudgetExhaustedError(RejectedError):
    """The retry budget refused another retry: retries are already a large share of traffic."""

    default_code = ErrorCode.RETRY_BUDGET_EXHAUSTED
