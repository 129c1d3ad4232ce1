"""Classification of any outcome of a call into the exception tree.

* a response with status 408, 425, 429, 500, 502, 503 or 504 is transient;
* any other 4xx is permanent, as is a 5xx outside that list (501, 505, ...);
* connect errors and connect/pool timeouts happened before the request was sent; read and write
  timeouts and dropped connections happened after, so the request may have had its effect.

``replay_safe`` on the result says whether re-sending is safe: the request never left this
process, it was idempotent (an idempotent method or an idempotency key), or the provider refused
it with 429 without acting on it.

httpx is not imported here: an httpx exception exists only in a process that imported httpx, so
:func:`classify_exception` looks for it in ``sys.modules`` (a program that only uses policies
never loads it).
"""

from __future__ import annotations

import http
import sys
import time
from typing import TYPE_CHECKING, Any

from antifragile.errors._headers import parse_retry_after, retry_after_from_headers
from antifragile.errors._tree import (
    AuthenticationError,
    ConflictError,
    ErrorCode,
    IntegrationError,
    InvalidRequestError,
    NetworkError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

if TYPE_CHECKING:
    import httpx

#: statuses a later attempt may succeed on
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})
#: methods that RFC 9110 defines as idempotent
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

_PERMANENT_BY_STATUS: dict[int, type[PermanentError]] = {
    400: InvalidRequestError,
    422: InvalidRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    410: NotFoundError,
    409: ConflictError,
}


def _not_sent(httpx: Any) -> tuple[type[BaseException], ...]:
    """The exceptions raised before any byte of the request was written."""
    if httpx is None:
        return (ConnectionRefusedError,)
    return (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
        httpx.UnsupportedProtocol,
        ConnectionRefusedError,
    )


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown Status"


def classify_response(
    response: httpx.Response,
    *,
    provider: str | None = None,
    operation: str | None = None,
    idempotent: bool = True,
    request_id: str | None = None,
    now: float | None = None,
    detail: str | None = None,
) -> IntegrationError | None:
    """The error a response stands for, or ``None`` for 1xx, 2xx and 3xx.

    *detail* is an excerpt of the body to keep (it is redacted); when omitted and the body has
    already been read, its first 500 characters are used. *now* (wall-clock epoch seconds, by
    default ``time.time()``) reads HTTP-date and epoch headers: pass the caller's clock.

    ``retry_after`` comes from ``Retry-After``; on a 429 alone, failing that, from the quota's
    reset header (``RateLimit-Reset``, ``X-RateLimit-Reset``).
    """
    status = response.status_code
    if status < 400:
        return None
    if detail is None:
        import httpx  # loaded already: *response* is one of its objects

        try:
            detail = response.text[:500]
        except (httpx.ResponseNotRead, UnicodeDecodeError):
            detail = None
    common: dict[str, Any] = {
        "provider": provider,
        "operation": operation,
        "status": status,
        "request_id": request_id,
        "detail": detail,
    }
    message = f"HTTP {status} {_reason(status)}"
    if status in RETRYABLE_STATUSES:
        wall = time.time() if now is None else now
        common["replay_safe"] = idempotent
        if status == 429:
            # a 429 is a refusal: the provider did not act on the request, so sending it
            # again cannot duplicate an effect, whatever the method
            common["replay_safe"] = True
            return RateLimitedError(
                message, retry_after=retry_after_from_headers(response.headers, wall), **common
            )
        if status == 408:
            return UpstreamTimeoutError(message, **common)
        # only Retry-After says when to come back from a failure: a quota's reset headers
        # (RateLimit-Reset, X-RateLimit-Reset) say when the quota renews, which matters to
        # a 429 and to nothing else
        return UpstreamUnavailableError(
            message,
            retry_after=parse_retry_after(response.headers.get("retry-after"), wall),
            **common,
        )
    common["replay_safe"] = idempotent
    if status < 500:
        return _PERMANENT_BY_STATUS.get(status, PermanentError)(message, **common)
    return PermanentError(message, code=ErrorCode.UPSTREAM_ERROR, **common)


def classify_exception(
    exc: BaseException,
    *,
    provider: str | None = None,
    operation: str | None = None,
    idempotent: bool = True,
    request_id: str | None = None,
) -> IntegrationError | None:
    """The error an exception stands for; ``None`` when it is not a known transport failure.

    An :class:`IntegrationError` is returned unchanged. Unknown exceptions (a bug in the caller's
    own code, say) are not classified: policies let them through untouched.
    """
    if isinstance(exc, IntegrationError):
        return exc
    httpx: Any = sys.modules.get("httpx")
    sent = not isinstance(exc, _not_sent(httpx))
    common: dict[str, Any] = {
        "provider": provider,
        "operation": operation,
        "request_id": request_id,
        "replay_safe": idempotent or not sent,
    }
    name = type(exc).__name__
    text = str(exc) or name
    if httpx is None:
        if isinstance(exc, TimeoutError):
            return UpstreamTimeoutError(f"{name}: {text}", **common)
        if isinstance(exc, ConnectionError):
            return NetworkError(f"{name}: {text}", **common)
        return None
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return UpstreamTimeoutError(f"{name}: {text}", **common)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return PermanentError(f"{name}: {text}", code=ErrorCode.BAD_REQUEST, **common)
    if isinstance(exc, httpx.TransportError | ConnectionError):
        return NetworkError(f"{name}: {text}", **common)
    if isinstance(exc, httpx.TooManyRedirects | httpx.DecodingError):
        return PermanentError(f"{name}: {text}", code=ErrorCode.UPSTREAM_ERROR, **common)
    return None


def is_idempotent(method: str, idempotency_key: str | None = None) -> bool:
    """Whether re-sending *method* cannot duplicate an effect."""
    return idempotency_key is not None or method.upper() in IDEMPOTENT_METHODS
