"""The response envelope of every JSON answer, the request id, and the error handlers.

Every JSON response is one of the envelope models of :mod:`antifragile.errors`
(:class:`~antifragile.errors.SuccessEnvelope`, :class:`~antifragile.errors.ErrorEnvelope`)::

    {"success": true,  "data": ..., "meta": {"request_id": ..., "duration_ms": ...}}
    {"success": false, "error": {"code", "message", "retryable"}, "meta": {"request_id": ...}}

:class:`RequestContextMiddleware` (pure ASGI, a few attribute look-ups per request) takes the
caller's ``x-request-id`` when it is at most 128 characters of ``A-Z a-z 0-9 . _ : -`` and not
a bare run of 7 to 15 digits (a phone number, perhaps: request ids reach logs and rows as they
are, so one that could carry personal data -- an email address, ``%2B44...`` -- is not
trusted), or draws a new one; makes it the current request id (outbound calls and enqueued
jobs carry it); echoes it on every response; and turns an exception no handler took into a
``500 INTERNAL`` envelope -- logged with the request id, never with a traceback in the body.

:func:`install_error_handlers` maps every other failure to the envelope with a stable code:
:class:`ApiError`, any :class:`~antifragile.AntifragileError` (status from its code, or its own
``status`` for webhook errors), FastAPI's request validation (``400 VALIDATION`` with the field
locations, never the input values) and Starlette's HTTP exceptions (``404 NOT_FOUND``,
``405 METHOD_NOT_ALLOWED``...).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import traceback
from collections.abc import Mapping
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from antifragile.errors import (
    AntifragileError,
    AuthenticationError,
    CircuitOpenError,
    ErrorCode,
    IntegrationError,
    RateLimitedError,
    StoreUnavailableError,
    UpstreamUnavailableError,
    redact,
)
from antifragile.errors._envelope import ErrorBody, ErrorEnvelope, FieldError, Meta, SuccessEnvelope
from antifragile.observability._context import (
    current_request_id,
    new_request_id,
    reset_request_id,
    set_request_id,
)

_log = logging.getLogger("antifragile.service")

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_HEADER = REQUEST_ID_HEADER.encode()
_VALID_REQUEST_ID = re.compile(rb"(?!\d{7,15}\Z)[A-Za-z0-9._:-]{1,128}")

# when the current request started (time.perf_counter()), for meta.duration_ms
_started: ContextVar[float | None] = ContextVar("antifragile_request_started", default=None)


def request_id() -> str | None:
    """The current request's id (``None`` outside a request)."""
    return current_request_id()


def duration_ms() -> float | None:
    """Milliseconds since the current request started (``None`` outside a request)."""
    started = _started.get()
    return None if started is None else round((time.perf_counter() - started) * 1000, 3)


# -- success ------------------------------------------------------------------------------------

#: the encoder of :class:`JSONResponse`'s ``render`` (the same options), built once rather than
#: on every response
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))


class EnvelopeResponse(JSONResponse):
    """A :class:`~fastapi.responses.JSONResponse` -- the same bytes -- whose JSON encoder is
    built once, not per response."""

    def render(self, content: Any) -> bytes:
        return _ENCODER.encode(content).encode("utf-8")


#: the success envelope of any data, parametrised once: pydantic keeps a parametrised generic
#: model only while something refers to it, and building it again costs milliseconds
_ANY_SUCCESS = SuccessEnvelope[Any]


def ok(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The success envelope of *data*, with the request id and the time spent so far."""
    envelope = _ANY_SUCCESS(
        data=data, meta=Meta(request_id=current_request_id(), duration_ms=duration_ms())
    )
    return JSONResponse(envelope.model_dump(mode="json"), status_code=status, headers=headers)


def ok_plain(data: dict[str, Any]) -> JSONResponse:
    """:func:`ok` for *data* made of JSON values only (dicts, lists, strings, numbers, booleans,
    ``None``): the same envelope, built without a model (the webhooks' hot path)."""
    meta = {"request_id": current_request_id(), "duration_ms": duration_ms()}
    return EnvelopeResponse({"success": True, "data": data, "meta": meta})


# -- failure ------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered as the failure envelope with *status* and the stable *code*.

    *message* is shown to the caller: never put a secret or personal data in it (it is
    redacted anyway). *headers* are added to the response (``Retry-After``, ``Allow``...).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        retryable: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.status = status
        self.code = str(code)
        self.message = message
        self.retryable = retryable
        self.headers = dict(headers) if headers else None


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retryable: bool = False,
    headers: Mapping[str, str] | None = None,
    details: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    """The failure envelope as a response."""
    envelope = ErrorEnvelope(
        error=ErrorBody(
            code=code,
            message=message,
            retryable=retryable,
            details=None if details is None else [FieldError.model_validate(d) for d in details],
        ),
        meta=Meta(request_id=current_request_id(), duration_ms=duration_ms()),
    )
    return EnvelopeResponse(envelope.model_dump(mode="json"), status_code=status, headers=headers)


#: the HTTP status answered for an error code
STATUS_BY_CODE: dict[str, int] = {
    ErrorCode.VALIDATION: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.MALFORMED_PAYLOAD: 400,
    ErrorCode.CONFIGURATION: 400,
    ErrorCode.AUTH: 401,
    ErrorCode.SIGNATURE_INVALID: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL: 500,
    ErrorCode.UPSTREAM_ERROR: 502,
    ErrorCode.UPSTREAM_UNAVAILABLE: 502,
    ErrorCode.NETWORK: 502,
    ErrorCode.STORE_UNAVAILABLE: 503,
    ErrorCode.SCHEMA_VERSION: 503,
    ErrorCode.CIRCUIT_OPEN: 503,
    ErrorCode.BULKHEAD_FULL: 503,
    ErrorCode.RETRY_BUDGET_EXHAUSTED: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.DEADLINE_EXCEEDED: 504,
}

#: the code answered for an HTTP status raised by the framework (404, 405...)
CODE_BY_STATUS: dict[int, str] = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.AUTH,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    408: "REQUEST_TIMEOUT",
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.VALIDATION,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.STORE_UNAVAILABLE,
}


def status_for(exc: AntifragileError) -> int:
    """The HTTP status an antifragile error is answered with."""
    if isinstance(exc, IntegrationError):
        # a provider refusing *our* credentials is not the caller's fault
        if isinstance(exc, AuthenticationError):
            return 502
    else:
        own = getattr(exc, "status", None)  # webhook errors carry the status to answer
        if isinstance(own, int) and 400 <= own <= 599:
            return own
    return STATUS_BY_CODE.get(exc.code, 500)


#: the ``Retry-After`` of a 503 answered while the service's own database does not answer
#: (seconds): about how long the store takes to reconnect once the database is back
STORE_RETRY_AFTER = 2.0


def _retry_after(exc: AntifragileError) -> dict[str, str] | None:
    seconds: float | None = None
    if isinstance(exc, RateLimitedError | UpstreamUnavailableError):
        seconds = exc.retry_after
    elif isinstance(exc, StoreUnavailableError):
        seconds = STORE_RETRY_AFTER
    elif isinstance(exc, CircuitOpenError) and exc.until is not None:
        seconds = exc.until - time.time()
    if seconds is None or not math.isfinite(seconds):
        return None
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def _message(exc: AntifragileError) -> str:
    try:
        return str(exc.to_dict()["message"])
    except Exception:  # an error whose str() fails is still answered
        return exc.code


def api_error_response(exc: ApiError | AntifragileError) -> JSONResponse:
    """The failure envelope answering *exc* (what the exception handlers send)."""
    if isinstance(exc, ApiError):
        return error_response(
            exc.status, exc.code, exc.message, retryable=exc.retryable, headers=exc.headers
        )
    status = status_for(exc)
    if status >= 500:
        _log.warning(
            "request %s failed: %s %s", current_request_id(), exc.code, redact(_message(exc))
        )
    return error_response(
        status, exc.code, _message(exc), retryable=exc.retryable, headers=_retry_after(exc)
    )


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError | AntifragileError)
    return api_error_response(exc)


def _location(loc: Any) -> list[str | int]:
    return [part if isinstance(part, int) else str(part) for part in loc]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {
            "loc": _location(error.get("loc", ())),
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]
    where = "; ".join(
        f"{'.'.join(str(p) for p in d['loc']) or 'request'}: {d['msg']}" for d in details[:10]
    )
    return error_response(
        400, ErrorCode.VALIDATION, redact(f"invalid request: {where}"), details=details
    )


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = CODE_BY_STATUS.get(status) or (
        ErrorCode.BAD_REQUEST if status < 500 else ErrorCode.INTERNAL
    )
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else phrase
    if status == 404 and message == phrase:
        message = f"no such resource: {request.method} {request.url.path}"
    elif status == 405 and message == phrase:
        message = f"method {request.method} not allowed on {request.url.path}"
    headers = dict(exc.headers) if exc.headers else None
    return error_response(status, code, redact(message), retryable=status >= 500, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of *app* with the failure envelope (see the module docs)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(AntifragileError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)


# -- the middleware -----------------------------------------------------------------------------

_INTERNAL_MESSAGE = "internal error; quote the request id when reporting it"


class RequestContextMiddleware:
    """Request id in, request id out, timing, and the last line of defence (see module docs)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw: bytes | None = None
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_HEADER:
                if _VALID_REQUEST_ID.fullmatch(value):
                    raw = value
                break
        rid = new_request_id() if raw is None else raw.decode("ascii")
        header = (_REQUEST_ID_HEADER, rid.encode("ascii") if raw is None else raw)
        token = set_request_id(rid)
        started = _started.set(time.perf_counter())
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # the frames, not the message: an unexpected error's text may hold personal data
            frames = "".join(traceback.format_tb(exc.__traceback__))
            _log.error("request %s: unhandled %s\n%s", rid, type(exc).__name__, frames)
            if response_started:
                raise
            body = (
                ErrorEnvelope(
                    error=ErrorBody(
                        code=ErrorCode.INTERNAL, message=_INTERNAL_MESSAGE, retryable=False
                    ),
                    meta=Meta(request_id=rid, duration_ms=duration_ms()),
                )
                .model_dump_json()
                .encode()
            )
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            _started.reset(started)
            reset_request_id(token)


# -- OpenAPI ------------------------------------------------------------------------------------


def _codes_for(status: int) -> list[str]:
    codes = [code for code, s in STATUS_BY_CODE.items() if s == status]
    extra = CODE_BY_STATUS.get(status)
    if extra is not None and extra not in codes:
        codes.append(extra)
    return sorted(codes)


def _describe(status: int, what: str) -> dict[str, Any]:
    codes = ", ".join(f"`{c}`" for c in _codes_for(status))
    return {"model": ErrorEnvelope, "description": f"{what}. Error codes: {codes}."}


#: OpenAPI ``responses=`` documenting the failure envelopes a route may answer
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _describe(400, "The request is invalid (field locations in `error.details`)"),
    401: _describe(401, "Missing or invalid credentials or webhook signature"),
    403: _describe(403, "Not allowed"),
    404: _describe(404, "No such resource"),
    413: _describe(413, "The body is larger than the limit"),
    415: _describe(415, "Unsupported content type"),
    429: _describe(429, "Too many requests; see `Retry-After`"),
    500: _describe(500, "An unexpected error; quote `meta.request_id` when reporting it"),
    503: _describe(503, "A dependency is unavailable; retry later"),
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A subset of :data:`ERROR_RESPONSES` (any other status is described generically)."""
    return {s: ERROR_RESPONSES.get(s) or _describe(s, HTTPStatus(s).phrase) for s in statuses}
