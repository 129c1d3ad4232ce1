"""The service's envelope: every error path answers the failure envelope with a stable code,
and every response carries the request id."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from antifragile.errors import (
    AntifragileError,
    AuthenticationError,
    CircuitOpenError,
    ConfigurationError,
    ErrorCode,
    RateLimitedError,
    StoreUnavailableError,
    UpstreamTimeoutError,
)
from antifragile.inbound._webhooks import MalformedPayloadError, SignatureError
from antifragile.jobs._app import JobNotFoundError
from antifragile.observability import current_request_id
from antifragile.service import (
    ERROR_RESPONSES,
    ApiError,
    RequestContextMiddleware,
    Settings,
    create_app,
    install_error_handlers,
    ok,
    request_id,
)

HEX32 = re.compile(r"[0-9a-f]{32}")


class Item(BaseModel):
    name: str
    quantity: int


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    raised: dict[str, BaseException] = {}
    app.state.raised = raised

    @app.get("/ok")
    async def fine() -> Any:
        return ok({"seen_request_id": request_id(), "same": request_id() == current_request_id()})

    @app.post("/created")
    async def created() -> Any:
        return ok({"id": "x1"}, status=201)

    @app.get("/raise/{name}")
    async def boom(name: str) -> Any:
        raise raised[name]

    @app.get("/items", responses=ERROR_RESPONSES)
    async def items(limit: int) -> Any:
        return ok({"limit": limit})

    @app.post("/items", responses=ERROR_RESPONSES)
    async def add_item(item: Item) -> Any:
        return ok(item.model_dump())

    return app


@pytest.fixture
def app() -> FastAPI:
    return build_app()


def asgi_client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(app) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


async def failing(client: httpx.AsyncClient, exc: BaseException, **kwargs: Any) -> Any:
    app: Any = client.app  # type: ignore[attr-defined]
    app.state.raised["e"] = exc
    return await client.get("/raise/e", **kwargs)


def assert_failure(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert isinstance(body["error"]["retryable"], bool)
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
    return body


# -- success and request ids ----------------------------------------------------------------------


async def test_ok_is_the_success_envelope_with_request_id_and_duration(
    client: httpx.AsyncClient,
) -> None:
    """ok() answers {success, data, meta{request_id, duration_ms}}; the route sees the same
    request id as the one echoed."""
    response = await client.get("/ok", headers={"x-request-id": "req-123"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["data"] == {"seen_request_id": "req-123", "same": True}
    assert body["meta"]["request_id"] == "req-123"
    assert isinstance(body["meta"]["duration_ms"], float)
    assert body["meta"]["duration_ms"] >= 0
    assert response.headers["x-request-id"] == "req-123"


def test_the_plain_envelope_is_the_same_as_oks() -> None:
    """ok_plain (the webhooks' answer, built without a model) renders the bytes ok() does."""
    from antifragile.service._envelope import ok_plain

    data = {"received": 2, "recorded": ["a"], "duplicates": ["b"], "stale": 0, "x": None}
    assert ok_plain(data).body == ok(data).body
    assert ok_plain(data).headers["content-type"] == ok(data).headers["content-type"]


async def test_ok_with_another_status(client: httpx.AsyncClient) -> None:
    """ok(data, status=201) keeps the envelope and sets the status."""
    response = await client.post("/created")
    assert response.status_code == 201
    assert response.json()["data"] == {"id": "x1"}


async def test_a_missing_request_id_is_generated(client: httpx.AsyncClient) -> None:
    """Without x-request-id the service draws one (32 hex) and echoes it."""
    first = await client.get("/ok")
    second = await client.get("/ok")
    rid = first.headers["x-request-id"]
    assert HEX32.fullmatch(rid)
    assert first.json()["meta"]["request_id"] == rid
    assert second.headers["x-request-id"] != rid


@pytest.mark.parametrize(
    "given",
    [
        b"x" * 129,
        b"caf\xc3\xa9",
        b"",
        b"tab\there",
        b"ada@example.com",
        b"ada%40example.com",
        b"%2B447700900123",
        b"+447700900123",
        b"447700900123",
        b'a"b<script>',
    ],
    ids=[
        "too-long",
        "non-ascii",
        "empty",
        "control-char",
        "email",
        "encoded-email",
        "encoded-phone",
        "phone",
        "bare-phone-digits",
        "markup",
    ],
)
async def test_an_invalid_request_id_is_replaced(client: httpx.AsyncClient, given: bytes) -> None:
    """An x-request-id that is too long, empty, outside ``A-Z a-z 0-9 . _ : -`` or a bare run
    of phone-number digits is not trusted -- request ids reach logs and rows unmasked, so one
    carrying an email address or a phone number must never be kept: a new one is drawn and
    echoed instead."""
    response = await client.get("/ok", headers=[(b"x-request-id", given)])
    rid = response.headers["x-request-id"]
    assert HEX32.fullmatch(rid)
    assert response.json()["data"]["seen_request_id"] == rid


async def test_a_128_character_request_id_is_kept(client: httpx.AsyncClient) -> None:
    """128 characters of the safe set is the longest id accepted as is (a uuid, a trace id,
    ``svc:1765111111.5-a_b`` all are)."""
    given = "a.b_c:d-1765111111" + "c" * 110
    response = await client.get("/ok", headers={"x-request-id": given})
    assert response.headers["x-request-id"] == given
    assert response.json()["meta"]["request_id"] == given


async def test_request_id_is_unset_after_the_request(client: httpx.AsyncClient) -> None:
    """The request id is current only for its own request."""
    await client.get("/ok", headers={"x-request-id": "req-1"})
    assert current_request_id() is None


# -- errors -------------------------------------------------------------------------------------


async def test_api_error(client: httpx.AsyncClient) -> None:
    """ApiError answers its status, code, message, retryable flag and headers."""
    exc = ApiError(409, "CONFLICT", "already there", retryable=False, headers={"x-extra": "1"})
    response = await failing(client, exc)
    body = assert_failure(response, 409, "CONFLICT")
    assert body["error"] == {"code": "CONFLICT", "message": "already there", "retryable": False}
    assert response.headers["x-extra"] == "1"


async def test_api_error_messages_are_redacted(client: httpx.AsyncClient) -> None:
    """A token in an ApiError's message never reaches the response."""
    response = await failing(
        client, ApiError(400, "BAD_REQUEST", "bad url https://x/?token=abc123")
    )
    assert "abc123" not in response.text


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (ConfigurationError("bad filter"), 400, ErrorCode.CONFIGURATION),
        (AntifragileError("bad", code=ErrorCode.VALIDATION), 400, ErrorCode.VALIDATION),
        (AntifragileError("bad", code=ErrorCode.BAD_REQUEST), 400, ErrorCode.BAD_REQUEST),
        (MalformedPayloadError("not JSON"), 400, ErrorCode.MALFORMED_PAYLOAD),
        (AntifragileError("who?", code=ErrorCode.AUTH), 401, ErrorCode.AUTH),
        (SignatureError("no signature"), 401, ErrorCode.SIGNATURE_INVALID),
        (
            SignatureError("wrong token", code=ErrorCode.FORBIDDEN, status=403),
            403,
            ErrorCode.FORBIDDEN,
        ),
        (AntifragileError("no", code=ErrorCode.FORBIDDEN), 403, ErrorCode.FORBIDDEN),
        (JobNotFoundError("no job 'j1'"), 404, ErrorCode.NOT_FOUND),
        (AntifragileError("dup", code=ErrorCode.CONFLICT), 409, ErrorCode.CONFLICT),
        (
            AntifragileError("big", code=ErrorCode.PAYLOAD_TOO_LARGE),
            413,
            ErrorCode.PAYLOAD_TOO_LARGE,
        ),
        (
            AntifragileError("xml?", code=ErrorCode.UNSUPPORTED_MEDIA_TYPE),
            415,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        ),
        (RateLimitedError("slow down"), 429, ErrorCode.RATE_LIMITED),
        (StoreUnavailableError("database down"), 503, ErrorCode.STORE_UNAVAILABLE),
        (CircuitOpenError("open", provider="shopify"), 503, ErrorCode.CIRCUIT_OPEN),
        (UpstreamTimeoutError("slow", provider="hubspot"), 504, ErrorCode.TIMEOUT),
        # a provider refusing our credentials is a bad gateway, not the caller's 401
        (AuthenticationError("HTTP 401", provider="slack", status=401), 502, ErrorCode.AUTH),
        (AntifragileError("oops"), 500, ErrorCode.INTERNAL),
    ],
    ids=lambda value: value if isinstance(value, str | int) else type(value).__name__,
)
async def test_antifragile_errors_map_to_status_and_code(
    client: httpx.AsyncClient, exc: AntifragileError, status: int, code: str
) -> None:
    """Every antifragile error answers the envelope with its own code and the status mapped
    from it (webhook errors: their own status)."""
    body = assert_failure(await failing(client, exc), status, code)
    assert body["error"]["retryable"] is exc.retryable


async def test_rate_limited_and_circuit_open_say_when_to_retry(client: httpx.AsyncClient) -> None:
    """Retry-After (whole seconds, rounded up) for a rate limit and an open breaker."""
    response = await failing(client, RateLimitedError("slow down", retry_after=2.2))
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["retryable"] is True
    import time

    response = await failing(client, CircuitOpenError("open", until=time.time() + 30))
    assert 29 <= int(response.headers["retry-after"]) <= 31


async def test_validation_error_is_400_with_locations_and_no_input(
    client: httpx.AsyncClient,
) -> None:
    """A request FastAPI cannot validate is 400 VALIDATION listing the bad fields' locations,
    never echoing the values sent."""
    response = await client.get("/items", params={"limit": "s3cret-value"})
    body = assert_failure(response, 400, "VALIDATION")
    assert body["error"]["details"][0]["loc"] == ["query", "limit"]
    assert "query.limit" in body["error"]["message"]
    assert "s3cret-value" not in response.text

    response = await client.post("/items", json={"name": "tea", "quantity": "lots-of-secret"})
    body = assert_failure(response, 400, "VALIDATION")
    assert ["body", "quantity"] in [d["loc"] for d in body["error"]["details"]]
    assert "lots-of-secret" not in response.text

    response = await client.post(
        "/items", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_failure(response, 400, "VALIDATION")


async def test_unknown_route_is_404_not_found(client: httpx.AsyncClient) -> None:
    """An unknown path answers 404 NOT_FOUND in the envelope."""
    assert_failure(await client.get("/nowhere"), 404, "NOT_FOUND")


async def test_wrong_method_is_405_with_allow(client: httpx.AsyncClient) -> None:
    """A known path with the wrong method answers 405 METHOD_NOT_ALLOWED and Allow."""
    response = await client.delete("/ok")
    assert_failure(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in response.headers["allow"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "BAD_REQUEST"),
        (401, "AUTH"),
        (403, "FORBIDDEN"),
        (418, "BAD_REQUEST"),
        (500, "INTERNAL"),
    ],
)
async def test_http_exceptions_map_to_codes(
    client: httpx.AsyncClient, status: int, code: str
) -> None:
    """Starlette's HTTPException keeps its status and gets a stable code."""
    assert_failure(await failing(client, HTTPException(status)), status, code)


async def test_an_unexpected_exception_is_500_internal_without_details(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Any other exception answers 500 INTERNAL with a generic message: no traceback, no
    exception text in the body; it is logged with the request id and its frames (not its
    message, which may hold personal data)."""
    caplog.set_level(logging.ERROR, logger="antifragile.service")
    response = await failing(
        client, KeyError("boom-secret-detail"), headers={"x-request-id": "req-500"}
    )
    body = assert_failure(response, 500, "INTERNAL")
    assert "boom-secret-detail" not in response.text
    assert "Traceback" not in response.text
    assert "KeyError" not in response.text
    assert body["meta"]["request_id"] == "req-500"
    logged = [record.getMessage() for record in caplog.records]
    assert any("req-500" in line and "KeyError" in line for line in logged)
    assert not any("boom-secret-detail" in line for line in logged)


# -- the service app ------------------------------------------------------------------------------


def service_app() -> FastAPI:
    return create_app(Settings(database_url="sqlite:///:memory:"))


async def test_service_routes_answer_404_and_405_in_the_envelope() -> None:
    """The service app's own unknown paths and wrong methods are envelopes too."""
    async with asgi_client(service_app()) as client:
        await check_404_405(client)


async def check_404_405(client: httpx.AsyncClient) -> None:
    assert_failure(await client.get("/v1/nowhere"), 404, "NOT_FOUND")
    response = await client.put("/v1/webhooks/twilio")
    assert_failure(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "POST"


async def test_openapi_lists_error_envelopes_and_codes() -> None:
    """/openapi.json documents the failure envelope on every route, with the error codes as
    an enum, and no 422 (validation errors are 400 envelopes)."""
    async with asgi_client(service_app()) as client:
        schema = (await client.get("/openapi.json")).json()
    schemas = schema["components"]["schemas"]
    assert schemas["ErrorBody"]["properties"]["code"]["enum"] == [code.value for code in ErrorCode]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (path, method)
            assert "500" in responses, (path, method)
    whatsapp = schema["paths"]["/v1/webhooks/whatsapp"]["post"]["responses"]
    for status in ("400", "401", "413", "415", "503"):
        ref = whatsapp[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorEnvelope")
    assert "SIGNATURE_INVALID" in whatsapp["401"]["description"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_envelope_responses_have_the_frameworks_json_bytes() -> None:
    """The envelope's response encodes exactly as the framework's JSONResponse (compact,
    non-ASCII kept, NaN refused), with an encoder built once."""
    from fastapi.responses import JSONResponse

    from antifragile.service._envelope import EnvelopeResponse

    content = {"success": True, "data": {"text": "café ☕", "n": [1, 2.5, None]}, "meta": {}}
    assert EnvelopeResponse(content).body == JSONResponse(content).body
    with pytest.raises(ValueError):
        EnvelopeResponse({"x": float("nan")})
