"""The response envelope, and ``capture``/``acapture``: the call forms that never raise."""

from __future__ import annotations

import asyncio
import builtins
import re

import httpx
import pydantic
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from antifragile import (
    AntifragileError,
    ConfigurationError,
    NotFoundError,
    RateLimitedError,
    request_context,
)
from antifragile.errors import (
    REDACTED,
    ErrorBody,
    ErrorEnvelope,
    SuccessEnvelope,
    acapture,
    capture,
    error_body,
    failure,
    success,
)
from antifragile.observability import current_request_id, new_request_id


def _raise(exc: BaseException) -> None:
    raise exc


async def _araise(exc: BaseException) -> None:
    raise exc


def _add(a: int, b: int = 0) -> int:
    return a + b


async def _aadd(a: int, b: int = 0) -> int:
    await asyncio.sleep(0)
    return a + b


# -- success ----------------------------------------------------------------------------------


def test_capture_wraps_a_result_in_a_success_envelope() -> None:
    """A call that returns gives ``success=True`` with the data and its duration."""
    envelope = capture(_add, 2, b=3)
    assert isinstance(envelope, SuccessEnvelope)
    assert envelope.success is True
    assert envelope.data == 5
    assert envelope.meta.duration_ms is not None
    assert envelope.meta.duration_ms >= 0


async def test_acapture_wraps_a_result_in_a_success_envelope() -> None:
    """An awaited call that returns gives a success envelope."""
    envelope = await acapture(_aadd, 1, b=1)
    assert isinstance(envelope, SuccessEnvelope)
    assert envelope.data == 2


def test_success_envelope_accepts_any_data() -> None:
    """The data member holds any Python object, unvalidated."""
    marker = object()
    assert success(marker).data is marker
    assert success({1, 2}).data == {1, 2}
    assert success(None).data is None


def test_success_envelope_json_shape() -> None:
    """``{"success": true, "data": ..., "meta": {"request_id", "duration_ms"}}``"""
    envelope = success({"id": 1}, request_id="rid-1")
    assert envelope.model_dump(mode="json") == {
        "success": True,
        "data": {"id": 1},
        "meta": {"request_id": "rid-1", "duration_ms": None},
    }


# -- failure ----------------------------------------------------------------------------------


def test_capture_turns_an_integration_error_into_its_code() -> None:
    """A provider error gives its code, its message and whether it is retryable."""
    envelope = capture(_raise, RateLimitedError("slow down", provider="slack"))
    assert isinstance(envelope, ErrorEnvelope)
    assert envelope.success is False
    assert envelope.error == ErrorBody(
        code="RATE_LIMITED", message="slack: slow down", retryable=True
    )


def test_capture_classifies_transport_exceptions() -> None:
    """An httpx connect error is reported as a retryable NETWORK failure."""
    envelope = capture(_raise, httpx.ConnectError("refused"))
    assert isinstance(envelope, ErrorEnvelope)
    assert envelope.error.code == "NETWORK"
    assert envelope.error.retryable is True


def test_capture_reports_unknown_exceptions_as_internal() -> None:
    """A bug in the called code becomes a non-retryable INTERNAL error with its type."""
    envelope = capture(_raise, KeyError("missing"))
    assert isinstance(envelope, ErrorEnvelope)
    assert envelope.error.code == "INTERNAL"
    assert envelope.error.retryable is False
    assert envelope.error.message == "KeyError: 'missing'"


def test_capture_reports_misuse_as_configuration() -> None:
    """A configuration error keeps its own code."""
    envelope = capture(_raise, ConfigurationError("attempts must be >= 1"))
    assert isinstance(envelope, ErrorEnvelope)
    assert envelope.error.code == "CONFIGURATION"


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("Authorization: Bearer abcdef123456"),
        NotFoundError("GET https://api.example.com/x?api_key=zzz999 failed"),
        httpx.ConnectError("https://user:hunter22@example.com unreachable"),
    ],
    ids=["unknown", "integration", "transport"],
)
def test_failure_messages_are_redacted(exc: Exception) -> None:
    """No credential from the exception's text reaches the envelope."""
    envelope = capture(_raise, exc)
    assert isinstance(envelope, ErrorEnvelope)
    for secret in ("abcdef123456", "zzz999", "hunter22"):
        assert secret not in envelope.error.message
    assert REDACTED in envelope.error.message


def test_failure_envelope_json_shape() -> None:
    """``{"success": false, "error": {"code", "message", "retryable"}, "meta": {...}}``"""
    envelope = failure(NotFoundError("gone"), request_id="rid-9")
    assert envelope.model_dump(mode="json") == {
        "success": False,
        "error": {"code": "NOT_FOUND", "message": "gone", "retryable": False},
        "meta": {"request_id": "rid-9", "duration_ms": None},
    }


def test_envelopes_are_immutable() -> None:
    """Envelopes are frozen values."""
    envelope = failure(NotFoundError("gone"))
    with pytest.raises(pydantic.ValidationError):
        envelope.success = True  # type: ignore[assignment]


async def test_acapture_turns_exceptions_into_envelopes() -> None:
    """An awaited call that raises gives an error envelope."""
    envelope = await acapture(_araise, NotFoundError("gone"))
    assert isinstance(envelope, ErrorEnvelope)
    assert envelope.error.code == "NOT_FOUND"


class _BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot describe myself")


class _BrokenIntegration(NotFoundError):
    def __str__(self) -> str:
        raise RuntimeError("cannot describe myself")


@pytest.mark.parametrize("exc", [_BrokenStr(), _BrokenIntegration("x")], ids=["plain", "tree"])
async def test_capture_survives_an_exception_that_cannot_be_printed(exc: Exception) -> None:
    """Even an exception whose ``str()`` raises is reported, not re-raised."""
    envelope = capture(_raise, exc)
    assert isinstance(envelope, ErrorEnvelope)
    assert type(exc).__name__ in envelope.error.message
    aenvelope = await acapture(_araise, exc)
    assert isinstance(aenvelope, ErrorEnvelope)


def _builtin_exception_types() -> list[type[Exception]]:
    return sorted(
        (
            value
            for value in vars(builtins).values()
            if isinstance(value, type) and issubclass(value, Exception)
        ),
        key=lambda t: t.__name__,
    )


EXCEPTION_TYPES: list[type[Exception]] = [
    *_builtin_exception_types(),
    httpx.ConnectError,
    httpx.ReadTimeout,
    httpx.PoolTimeout,
    httpx.RemoteProtocolError,
    httpx.UnsupportedProtocol,
    httpx.DecodingError,
    AntifragileError,
    ConfigurationError,
    RateLimitedError,
    NotFoundError,
]


@given(cls=st.sampled_from(EXCEPTION_TYPES), message=st.text(max_size=80))
def test_property_capture_never_raises_for_any_exception(
    cls: type[Exception], message: str
) -> None:
    """Whatever ``Exception`` the call raises, capture returns a valid error envelope."""
    try:
        exc = cls(message)
    except TypeError:  # a few builtins need more arguments
        assume(False)
        raise
    envelope = capture(_raise, exc)
    assert isinstance(envelope, ErrorEnvelope)
    assert re.fullmatch(r"[A-Z_]+", envelope.error.code)
    ErrorEnvelope.model_validate(envelope.model_dump())


@given(cls=st.sampled_from(EXCEPTION_TYPES), message=st.text(max_size=40))
def test_property_acapture_never_raises_for_any_exception(
    cls: type[Exception], message: str
) -> None:
    """The async form returns an error envelope for any ``Exception`` as well."""
    try:
        exc = cls(message)
    except TypeError:
        assume(False)
        raise
    envelope = asyncio.run(acapture(_araise, exc))
    assert isinstance(envelope, ErrorEnvelope)


def test_exception_groups_are_captured() -> None:
    """An exception group is an exception like any other."""
    envelope = capture(_raise, ExceptionGroup("several", [ValueError("a"), KeyError("b")]))
    assert isinstance(envelope, ErrorEnvelope)
    assert envelope.error.code == "INTERNAL"


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(3)])
def test_capture_lets_interpreter_exits_through(exc: BaseException) -> None:
    """``KeyboardInterrupt`` and ``SystemExit`` are not swallowed."""
    with pytest.raises(type(exc)):
        capture(_raise, exc)


async def test_acapture_lets_cancellation_through() -> None:
    """Cancelling the task is not turned into an envelope."""
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(acapture(forever))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# -- request ids ------------------------------------------------------------------------------


def test_request_id_comes_from_the_request_context() -> None:
    """Inside ``request_context`` both kinds of envelope carry its id."""
    with request_context("rid-ctx") as rid:
        assert rid == "rid-ctx"
        ok = capture(_add, 1)
        bad = capture(_raise, ValueError("x"))
    assert ok.meta.request_id == "rid-ctx"
    assert bad.meta.request_id == "rid-ctx"
    assert capture(_add, 1).meta.request_id is None


async def test_request_id_follows_await() -> None:
    """The request id set around an ``acapture`` is seen by its envelope."""
    with request_context("rid-async"):
        envelope = await acapture(_aadd, 1)
    assert envelope.meta.request_id == "rid-async"


def test_error_request_id_and_explicit_request_id_take_precedence() -> None:
    """An explicit id wins over the error's own, which wins over the context's."""
    error = NotFoundError("gone", request_id="rid-error")
    with request_context("rid-ctx"):
        assert failure(error).meta.request_id == "rid-error"
        assert failure(error, request_id="rid-explicit").meta.request_id == "rid-explicit"
        assert failure(ValueError()).meta.request_id == "rid-ctx"


def test_request_context_generates_and_restores_ids() -> None:
    """A context without an id makes a fresh one; leaving it restores the outer id."""
    assert current_request_id() is None
    with request_context() as outer:
        assert re.fullmatch(r"[0-9a-f]{32}", outer)
        with request_context("inner"):
            assert current_request_id() == "inner"
        assert current_request_id() == outer
    assert current_request_id() is None
    assert new_request_id() != new_request_id()


def test_error_body_of_any_exception() -> None:
    """``error_body`` gives the envelope's error object for tree and foreign exceptions."""
    assert error_body(NotFoundError("x")).code == "NOT_FOUND"
    assert error_body(TimeoutError()).code == "TIMEOUT"
    assert error_body(ZeroDivisionError("division by zero")) == ErrorBody(
        code="INTERNAL", message="ZeroDivisionError: division by zero", retryable=False
    )
