"""Hypothesis against the webhook routes of the real app on a real server.

The app is ``create_app(settings)`` with the real :class:`~antifragile.service.Assistant` opened
by the lifespan (a SQLite file, every webhook secret), served by uvicorn; requests go over
loopback HTTP. Bodies are generated -- random bytes, random JSON, and the providers' real
payload shapes with fields deleted or replaced by hostile values (NUL, unpaired surrogates,
huge numbers, wrong types) -- with generated extra headers and request ids, and sent both
correctly signed (with the signing functions of :mod:`antifragile.inbound`, so the parsers are
reached) and unsigned or wrongly signed.

What they prove: no delivery gets a 5xx or logs an unhandled error; every answer is the
envelope (Twilio's success: the empty TwiML); a correctly signed body that is not the
provider's shape is ``400 MALFORMED_PAYLOAD``; an unsigned one is refused (401/415) and records
nothing. The regression tests at the end pin the crashes this fuzzing found.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antifragile.errors import ErrorCode
from antifragile.inbound import (
    MalformedPayloadError,
    parse_shopify,
    parse_twilio,
    parse_whatsapp,
    shopify_signature,
    twilio_body_hash,
    twilio_signature,
    whatsapp_signature,
)
from antifragile.jobs import Jobs
from antifragile.sandbox import twilio_inbound_message, whatsapp_status, whatsapp_text_message
from antifragile.service import Settings, create_app
from antifragile.service._webhooks import EMPTY_TWIML, _shopify_headers
from tests._service_standin import running_server

WA_SECRET = "wa-fuzz-secret"
TWILIO_TOKEN = "twilio-fuzz-token"
SHOPIFY_SECRET = "shopify-fuzz-secret"

#: the deliveries: WhatsApp, Twilio as a form and as JSON (bodySHA256), Shopify
PROVIDERS = ["whatsapp", "twilio-form", "twilio-json", "shopify"]
CODES = {code.value for code in ErrorCode}
# the ids the service keeps: a safe charset, not a bare run of phone-number digits
_VALID_REQUEST_ID = re.compile(rb"(?!\d{7,15}\Z)[A-Za-z0-9._:-]{1,128}")

FUZZ = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


# -- the service ----------------------------------------------------------------------------------


class LogErrors(logging.Handler):
    """Collects every ERROR record of the server (the app's and uvicorn's loggers)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Service:
    url: str
    database: Path
    client: httpx.Client
    errors: LogErrors
    statuses: dict[str, set[int]] = field(default_factory=dict)

    def hook(self, provider: str) -> str:
        return f"{self.url}/v1/webhooks/{provider.partition('-')[0]}"

    def inbox_size(self) -> int:
        async def count() -> int:
            async with Jobs(database_url=f"sqlite:///{self.database}") as jobs:
                return len(await jobs.queue.find_inbound(limit=100_000))

        return asyncio.run(count())


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    database = tmp_path_factory.mktemp("webhook-fuzz") / "service.db"
    settings = Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": f"sqlite:///{database}",
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": WA_SECRET,
            "ANTIFRAGILE_WHATSAPP_VERIFY_TOKEN": "wa-fuzz-verify-token",
            "ANTIFRAGILE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            # Twilio and HubSpot sign the URL they call: the hosts it may name
            "ANTIFRAGILE_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver,test",
            "ANTIFRAGILE_SHOPIFY_WEBHOOK_SECRET": SHOPIFY_SECRET,
            # one client address sends everything here: its limit would only answer 429s
            "ANTIFRAGILE_INBOUND_IP_RATE": "off",
            "ANTIFRAGILE_INBOUND_SENDER_RATE": "off",
        }
    )
    errors = LogErrors()
    loggers = [logging.getLogger(name) for name in ("", "antifragile", "uvicorn", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(errors)
    app = create_app(settings)
    try:
        with running_server(app) as url, httpx.Client(timeout=10) as client:
            assert app.state.assistant is not None  # the lifespan opened the real assistant
            yield Service(url, database, client, errors)
    finally:
        for logger in loggers:
            logger.removeHandler(errors)


@pytest.fixture
def server(service: Service) -> Iterator[Service]:
    """The service, checked after the test for errors in the server's log."""
    service.errors.records.clear()
    yield service
    logged = [f"{r.name}: {r.getMessage()}" for r in service.errors.records]
    assert logged == [], "the server logged errors"


# -- strategies -----------------------------------------------------------------------------------

#: values that break naive parsers and stores
NASTY: list[Any] = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfffy",
    "\u202e\ufeff",
    "😀" * 3,
    "9" * 400,
    "whatsapp:",
    "+",
    10**30,
    -1,
    0,
    1.5,
    float("nan"),
    float("inf"),
    True,
    None,
    [],
    {},
    [[[[[]]]]],
]

texts = st.one_of(st.text(max_size=30), st.sampled_from([v for v in NASTY if isinstance(v, str)]))
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    texts,
    st.sampled_from(NASTY),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(texts, children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """*base* with up to three of its nodes deleted or replaced by generated JSON."""
    value = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(list(_paths(value))))
        replacement = draw(st.one_of(json_values, st.sampled_from(NASTY)))
        if not path:
            value = replacement
            continue
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = replacement
    return value


ids = st.one_of(st.uuids().map(str), texts)
phones = st.one_of(st.from_regex(r"\+?[0-9]{6,15}", fullmatch=True), texts)


@st.composite
def whatsapp_payloads(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["text", "status", "image", "interactive"]))
    if kind == "status":
        base = whatsapp_status(
            message_id=draw(ids),
            recipient_id=draw(phones),
            status=draw(st.sampled_from(["sent", "delivered", "read", "failed"])),
            timestamp=draw(st.integers(0, 2**40)),
            errors=[{"code": 131026, "title": draw(texts)}],
        )
    else:
        base = whatsapp_text_message(
            from_=draw(phones),
            body=draw(texts),
            message_id=draw(ids),
            timestamp=draw(st.integers(0, 2**40)),
        )
        message = base["entry"][0]["changes"][0]["value"]["messages"][0]
        if kind == "image":
            message["type"] = "image"
            message["image"] = {"id": draw(ids), "mime_type": "image/jpeg", "caption": draw(texts)}
        elif kind == "interactive":
            message["type"] = "interactive"
            message["interactive"] = {"button_reply": {"id": "b1", "title": draw(texts)}}
    return draw(mutated(base))


@st.composite
def twilio_params(draw: st.DrawFn) -> Any:
    base: dict[str, Any] = twilio_inbound_message(
        from_=draw(st.sampled_from(["whatsapp:", ""])) + draw(phones),
        to=draw(phones),
        body=draw(texts),
        message_sid=draw(ids),
    )
    if draw(st.booleans()):  # a status callback instead of a message
        del base["Body"]
        base["MessageStatus"] = draw(st.one_of(st.sampled_from(["delivered", "failed"]), texts))
        base["ErrorCode"] = draw(st.sampled_from(["", "30008"]))
    if draw(st.booleans()):
        base["NumMedia"] = draw(st.one_of(st.sampled_from(["1", "2", "999", "-1", "x"]), texts))
        base["MediaUrl0"] = draw(texts)
        base["MediaContentType0"] = draw(texts)
    return draw(mutated(base))


SHOPIFY_TOPICS = ["orders/create", "orders/paid", "customers/create", "inventory_levels/update"]


@st.composite
def shopify_payloads(draw: st.DrawFn) -> Any:
    base = {
        "id": draw(st.one_of(st.integers(), ids)),
        "name": "#1001",
        "total_price": "10.00",
        "currency": "EUR",
        "customer": {"id": draw(st.integers()), "email": "someone@example.com"},
        "inventory_item_id": draw(st.integers()),
        "location_id": draw(st.integers()),
        "available": draw(st.integers()),
    }
    return draw(mutated(base))


def header_text(max_size: int = 60) -> st.SearchStrategy[bytes]:
    """Header values as they can travel: visible ASCII and latin-1, no outer whitespace."""
    alphabet = st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f")
    return st.text(alphabet, max_size=max_size).map(lambda s: s.encode("latin-1"))


RESERVED = {
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "expect",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "x-request-id",
    "x-hub-signature-256",
    "x-twilio-signature",
    "x-shopify-hmac-sha256",
    "shopify-hmac-sha256",
}
header_names = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}", fullmatch=True).filter(
    lambda name: name.lower() not in RESERVED
)
extra_headers = st.lists(st.tuples(header_names.map(str.encode), header_text()), max_size=5)
request_ids = st.one_of(st.none(), header_text(200))


@st.composite
def shopify_headers(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    """The delivery's topic, id, shop and time headers: real ones, garbage, or missing."""
    prefix = draw(st.sampled_from([b"x-shopify-", b"shopify-"]))
    found = []
    values = {
        b"topic": st.one_of(st.sampled_from(SHOPIFY_TOPICS).map(str.encode), header_text()),
        b"webhook-id": st.one_of(st.uuids().map(lambda u: str(u).encode()), header_text()),
        b"shop-domain": st.one_of(st.just(b"acme.myshopify.com"), header_text()),
        b"triggered-at": header_text(40),
        b"event-id": header_text(40),
        b"api-version": header_text(20),
    }
    for name, strategy in values.items():
        if draw(st.integers(0, 9)) > 0:  # present nine times out of ten
            found.append((prefix + name, draw(strategy)))
    return found


def json_body(value: Any) -> bytes:
    # ensure_ascii: unpaired surrogates travel as \ud800 escapes, as a broken sender sends them
    return json.dumps(value).encode()


def form_body(value: Any) -> bytes:
    """*value* (normally a dict of strings) as a form, whatever it became once mutated."""
    if not isinstance(value, dict):
        return json_body(value)  # not a form at all: its JSON text, as garbage
    pairs = []
    for name, item in value.items():
        for one in item if isinstance(item, list) else [item]:
            pairs.append((str(name), "" if one is None else str(one)))
    return urlencode(pairs, encoding="utf-8", errors="surrogatepass").encode()


# -- sending --------------------------------------------------------------------------------------


@dataclass
class Request:
    provider: str
    body: bytes
    headers: list[tuple[bytes, bytes]]
    query: str = ""


def _content_type(provider: str) -> bytes:
    return (
        b"application/x-www-form-urlencoded" if provider == "twilio-form" else b"application/json"
    )


def signed(
    service: Service, provider: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> Request:
    """*body* signed as the provider signs it (the inbound signing functions)."""
    headers = [(b"content-type", _content_type(provider)), *headers]
    if provider == "whatsapp":
        signature = whatsapp_signature(WA_SECRET, body)
        return Request(provider, body, [(b"x-hub-signature-256", signature.encode()), *headers])
    if provider == "shopify":
        signature = shopify_signature(SHOPIFY_SECRET, body)
        return Request(provider, body, [(b"x-shopify-hmac-sha256", signature.encode()), *headers])
    url = service.hook(provider)
    if provider == "twilio-form":
        params = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        signature = twilio_signature(TWILIO_TOKEN, url, params)
        return Request(provider, body, [(b"x-twilio-signature", signature.encode()), *headers])
    query = f"bodySHA256={twilio_body_hash(body)}"
    signature = twilio_signature(TWILIO_TOKEN, f"{url}?{query}")
    return Request(provider, body, [(b"x-twilio-signature", signature.encode()), *headers], query)


def send(service: Service, request: Request, request_id: bytes | None = None) -> httpx.Response:
    url = service.hook(request.provider)
    if request.query:
        url = f"{url}?{request.query}"
    headers = list(request.headers)
    if request_id is not None:
        headers.append((b"x-request-id", request_id))
    response = service.client.post(url, content=request.body, headers=headers)
    check_answer(request.provider, response, request_id)
    service.statuses.setdefault(request.provider, set()).add(response.status_code)
    return response


def check_answer(provider: str, response: httpx.Response, request_id: bytes | None) -> None:
    """No 5xx; the envelope (or Twilio's empty TwiML) with the request id it echoes."""
    assert response.status_code < 500, response.text
    echoed = response.headers["x-request-id"]
    if request_id is not None and _VALID_REQUEST_ID.fullmatch(request_id):  # a valid id is kept
        assert echoed == request_id.decode()
    if provider.startswith("twilio") and response.status_code == 200:
        assert response.headers["content-type"].startswith("text/xml")
        assert response.content == EMPTY_TWIML
        return
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["meta"]["request_id"] == echoed
    if response.status_code == 200:
        assert body["success"] is True
        assert body["data"]["received"] >= len(body["data"]["recorded"])
    else:
        assert body["success"] is False
        error = body["error"]
        assert error["code"] in CODES
        assert isinstance(error["message"], str)
        assert isinstance(error["retryable"], bool)


def code_of(response: httpx.Response) -> str | None:
    if response.headers.get("content-type") != "application/json":
        return None
    error = response.json().get("error")
    return None if error is None else str(error["code"])


def is_malformed(response: httpx.Response) -> bool:
    return response.status_code == 400 and code_of(response) == ErrorCode.MALFORMED_PAYLOAD


def parses(provider: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the inbound parser accepts *body* (the oracle for signed deliveries)."""
    parse: Callable[[], Any]
    if provider == "whatsapp":
        parse = lambda: parse_whatsapp(body)  # noqa: E731
    elif provider == "shopify":
        # the headers as the server reads them (names lowercased, the first of duplicates)
        scope = {"headers": [(name.lower(), value) for name, value in headers]}
        found = _shopify_headers(scope)
        parse = lambda: parse_shopify(body, found)  # noqa: E731
    elif provider == "twilio-form":
        params = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        parse = lambda: parse_twilio(params)  # noqa: E731
    else:
        return True  # the JSON variant is checked by the status alone
    try:
        parse()
    except MalformedPayloadError:
        return False
    return True


# -- signed: the parsers are reached --------------------------------------------------------------

garbage = st.one_of(st.binary(max_size=600), json_values.map(json_body))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_signed_garbage_is_400_malformed_payload(server: Service, provider: str) -> None:
    """Correctly signed random bytes or random JSON: never a 5xx, and 400 MALFORMED_PAYLOAD
    whenever the body is not an object of the provider's shape (200 when it happens to be)."""

    @given(body=garbage, headers=extra_headers, request_id=request_ids)
    @FUZZ
    def run(body: bytes, headers: list[tuple[bytes, bytes]], request_id: bytes | None) -> None:
        response = send(server, signed(server, provider, body, headers), request_id)
        assert response.status_code in (200, 400), response.text
        if not parses(provider, body, headers) or response.status_code == 400:
            assert is_malformed(response), response.text

    run()


PAYLOADS: dict[str, Callable[[], st.SearchStrategy[tuple[bytes, list[tuple[bytes, bytes]]]]]] = {
    "whatsapp": lambda: st.tuples(whatsapp_payloads().map(json_body), st.just([])),
    "twilio-form": lambda: st.tuples(twilio_params().map(form_body), st.just([])),
    "twilio-json": lambda: st.tuples(twilio_params().map(json_body), st.just([])),
    "shopify": lambda: st.tuples(shopify_payloads().map(json_body), shopify_headers()),
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_signed_provider_payloads_with_mutated_fields(server: Service, provider: str) -> None:
    """The provider's real payload shape, fields deleted or replaced by hostile values,
    correctly signed: recorded (200) when the parser accepts it, else 400 MALFORMED_PAYLOAD --
    never anything else; and the fuzzing reaches both answers."""
    server.statuses.pop(provider, None)

    @given(payload=PAYLOADS[provider](), headers=extra_headers, request_id=request_ids)
    @FUZZ
    def run(
        payload: tuple[bytes, list[tuple[bytes, bytes]]],
        headers: list[tuple[bytes, bytes]],
        request_id: bytes | None,
    ) -> None:
        body, own_headers = payload
        all_headers = [*own_headers, *headers]
        response = send(server, signed(server, provider, body, all_headers), request_id)
        if parses(provider, body, all_headers):
            assert response.status_code == 200 or is_malformed(response), response.text
        else:
            assert is_malformed(response), response.text

    run()
    assert {200, 400} <= server.statuses[provider]


# -- unsigned: refused before anything is parsed --------------------------------------------------

CONTENT_TYPES = [
    None,
    b"application/json",
    b"application/json; charset=utf-8",
    b"APPLICATION/JSON",
    b"application/x-www-form-urlencoded",
    b"text/plain",
    b"multipart/form-data; boundary=x",
    b";",
]


@st.composite
def unsigned_requests(draw: st.DrawFn, provider: str) -> Request:
    body, own_headers = draw(st.one_of(garbage.map(lambda b: (b, [])), PAYLOADS[provider]()))
    headers = [*own_headers, *draw(extra_headers)]
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    if content_type is not None:
        headers.append((b"content-type", content_type))
    names = {
        "whatsapp": [b"x-hub-signature-256"],
        "twilio-form": [b"x-twilio-signature"],
        "twilio-json": [b"x-twilio-signature"],
        "shopify": [b"x-shopify-hmac-sha256", b"shopify-hmac-sha256"],
    }[provider]
    how = draw(st.sampled_from(["none", "garbage", "wrong secret", "other body"]))
    if how != "none":
        name = draw(st.sampled_from(names))
        if how == "garbage":
            value = draw(header_text())
        else:
            secret = "not-the-secret" if how == "wrong secret" else None
            other = body + b" " if how == "other body" else body
            value = _signature_of(provider, other, secret).encode()
        headers.append((name, value))
    return Request(provider, body, headers)


def _signature_of(provider: str, body: bytes, secret: str | None) -> str:
    if provider == "whatsapp":
        return whatsapp_signature(secret or WA_SECRET, body)
    if provider == "shopify":
        return shopify_signature(secret or SHOPIFY_SECRET, body)
    params = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return twilio_signature(secret or TWILIO_TOKEN, "http://elsewhere.example.com/hook", params)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unsigned_deliveries_are_refused_and_record_nothing(server: Service, provider: str) -> None:
    """Any body with no signature, a garbage one, one made with another secret or over other
    bytes, under any content type: 401 SIGNATURE_INVALID or 415 UNSUPPORTED_MEDIA_TYPE, the
    envelope, and nothing recorded."""
    before = server.inbox_size()

    @given(request=unsigned_requests(provider), request_id=request_ids)
    @FUZZ
    def run(request: Request, request_id: bytes | None) -> None:
        response = send(server, request, request_id)
        assert (response.status_code, code_of(response)) in (
            (401, ErrorCode.SIGNATURE_INVALID),
            (415, ErrorCode.UNSUPPORTED_MEDIA_TYPE),
        ), response.text

    run()
    assert server.inbox_size() == before


# -- regressions: what the fuzzing found ----------------------------------------------------------


def _whatsapp(message_id: str, text: str = "hi") -> bytes:
    return json_body(whatsapp_text_message(from_="447700900123", body=text, message_id=message_id))


REGRESSIONS = [
    # an unpaired surrogate (a lone \ud800 escape) cannot be stored: it was a 500
    pytest.param("whatsapp", _whatsapp("\ud800"), [], id="whatsapp-surrogate-id"),
    pytest.param("whatsapp", _whatsapp("wamid.1", "x\udfff"), [], id="whatsapp-surrogate-text"),
    # a NUL (PostgreSQL cannot hold it) was 400 CONFIGURATION, not MALFORMED_PAYLOAD
    pytest.param("whatsapp", _whatsapp("wamid.\x00"), [], id="whatsapp-nul-id"),
    pytest.param("twilio-form", b"MessageSid=SM%00&From=1&To=2&Body=x", [], id="twilio-nul-sid"),
    pytest.param(
        "twilio-json",
        b'{"MessageSid": "\\ud800", "From": "1", "To": "2", "Body": "x"}',
        [],
        id="twilio-json-surrogate-sid",
    ),
    # JSON nested past the recursion limit was an unhandled RecursionError: a 500
    pytest.param("twilio-json", b"[" * 50_000 + b"]" * 50_000, [], id="twilio-json-deep"),
    pytest.param(
        "twilio-json", b'{"Body": ' + b"[" * 900 + b"]" * 900 + b"}", [], id="twilio-json-nested"
    ),
    pytest.param(
        "shopify",
        b'{"id": 1, "name": "\\ud800"}',
        [
            (b"x-shopify-topic", b"orders/create"),
            (b"x-shopify-webhook-id", b"fuzz-regression-1"),
            (b"x-shopify-shop-domain", b"acme.myshopify.com"),
        ],
        id="shopify-surrogate-name",
    ),
]


@pytest.mark.parametrize(("provider", "body", "headers"), REGRESSIONS)
def test_signed_bodies_that_crashed_are_400_malformed_payload(
    server: Service, provider: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """Each body that once answered 500 (or the wrong code) is now 400 MALFORMED_PAYLOAD, with
    nothing recorded and nothing logged as an error."""
    before = server.inbox_size()
    response = send(server, signed(server, provider, body, headers))
    assert is_malformed(response), response.text
    assert server.inbox_size() == before


@pytest.mark.parametrize("bad", ["\x00", "\ud800"])
def test_parsers_refuse_text_no_store_can_hold(bad: str) -> None:
    """The parsers themselves refuse a NUL or an unpaired surrogate in anything they would
    record -- for every provider -- with MalformedPayloadError."""
    with pytest.raises(MalformedPayloadError):
        parse_whatsapp(_whatsapp("wamid.1", f"a{bad}b"))
    with pytest.raises(MalformedPayloadError):
        parse_twilio({"MessageSid": ["SM1"], "From": ["1"], "To": ["2"], "Body": [f"a{bad}"]})
    with pytest.raises(MalformedPayloadError):
        parse_shopify(
            json_body({"id": 1, "currency": bad}),
            {
                "x-shopify-topic": "orders/create",
                "x-shopify-webhook-id": "w1",
                "x-shopify-shop-domain": "acme.myshopify.com",
            },
        )
