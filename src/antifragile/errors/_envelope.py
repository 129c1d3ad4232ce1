"""The response envelope, and the never-raising call form built on it.

Every JSON response of the service (:mod:`antifragile.service`), and every result of
:func:`capture` / :func:`acapture`, is one of these models::

    {"success": true,  "data": ...,  "meta": {"request_id": ..., "duration_ms": ...}}
    {"success": false, "error": {"code", "message", "retryable"}, "meta": {"request_id": ...}}

A failure the service answers for an invalid request also lists the invalid fields
(``error.details``: location, message and type, never the input value); the member is left out
when there are none.

``capture`` is for callers that must never see an exception: a messaging assistant's integration
wrapper, say, where a failed CRM sync must not break the conversation. It still lets
``KeyboardInterrupt``, ``SystemExit`` and task cancellation through.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, Literal, ParamSpec, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from antifragile.errors._classify import classify_exception
from antifragile.errors._tree import AntifragileError, ErrorCode
from antifragile.observability._context import current_request_id
from antifragile.observability._redaction import redact

T = TypeVar("T")
P = ParamSpec("P")


class FieldError(BaseModel):
    """One invalid field of a request (``VALIDATION`` errors): where, what, never the value."""

    model_config = ConfigDict(frozen=True)

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """The ``error`` member of a failure envelope; ``code`` is one of the stable codes."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(json_schema_extra={"enum": [code.value for code in ErrorCode]})
    message: str
    retryable: bool
    details: list[FieldError] | None = Field(default=None, exclude_if=lambda value: value is None)


class Meta(BaseModel):
    """The ``meta`` member of every envelope."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = None
    duration_ms: float | None = None


class SuccessEnvelope(BaseModel, Generic[T]):
    """``{"success": true, "data": ..., "meta": ...}``"""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    success: Literal[True] = True
    data: T
    meta: Meta = Meta()


class ErrorEnvelope(BaseModel):
    """``{"success": false, "error": {...}, "meta": ...}``"""

    model_config = ConfigDict(frozen=True)

    success: Literal[False] = False
    error: ErrorBody
    meta: Meta = Meta()


Envelope = SuccessEnvelope[T] | ErrorEnvelope


def error_body(exc: BaseException) -> ErrorBody:
    """The envelope's error object for any exception; unknown ones become ``INTERNAL``."""
    classified = exc if isinstance(exc, AntifragileError) else classify_exception(exc)
    if classified is not None:
        return ErrorBody.model_validate(classified.to_dict())
    return ErrorBody(
        code=ErrorCode.INTERNAL,
        message=redact(f"{type(exc).__name__}: {exc}"),
        retryable=False,
    )


def success(
    data: T, *, request_id: str | None = None, started: float | None = None
) -> SuccessEnvelope[T]:
    """A success envelope; *started* is a ``time.perf_counter()`` value to report the duration."""
    duration = None if started is None else round((time.perf_counter() - started) * 1000, 3)
    return SuccessEnvelope[T](
        data=data, meta=Meta(request_id=request_id or current_request_id(), duration_ms=duration)
    )


def failure(
    exc: BaseException, *, request_id: str | None = None, started: float | None = None
) -> ErrorEnvelope:
    """A failure envelope describing *exc* (redacted)."""
    duration = None if started is None else round((time.perf_counter() - started) * 1000, 3)
    rid = request_id or getattr(exc, "request_id", None) or current_request_id()
    try:
        body = error_body(exc)
    except Exception:  # an exception whose str() raises is still reported, never re-raised
        known = exc if isinstance(exc, AntifragileError) else None
        body = ErrorBody(
            code=known.code if known is not None else ErrorCode.INTERNAL,
            message=type(exc).__name__,
            retryable=known.retryable if known is not None else False,
        )
    return ErrorEnvelope(error=body, meta=Meta(request_id=rid, duration_ms=duration))


def capture(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Envelope[T]:
    """Call *fn* and return an envelope instead of raising."""
    started = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        return failure(exc, started=started)
    return success(result, started=started)


async def acapture(
    fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
) -> Envelope[T]:
    """Await *fn* and return an envelope instead of raising (cancellation still propagates)."""
    started = time.perf_counter()
    try:
        result = await fn(*args, **kwargs)
    except Exception as exc:
        return failure(exc, started=started)
    return success(result, started=started)
