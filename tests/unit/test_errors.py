"""The exception tree, its codes and pickling, redaction of secrets, and outcome classification."""

from __future__ import annotations

import copy
import pickle
import string
import sys
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from antifragile import (
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
    TransientError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from antifragile.errors import (
    IDEMPOTENT_METHODS,
    REDACTED,
    RETRYABLE_STATUSES,
    AttemptRecord,
    classify_exception,
    classify_response,
    error_body,
    is_idempotent,
    redact,
    redact_headers,
)

# -- the tree ---------------------------------------------------------------------------------

TREE: list[tuple[type[AntifragileError], type[AntifragileError], ErrorCode, bool]] = [
    (ConfigurationError, AntifragileError, ErrorCode.CONFIGURATION, False),
    (IntegrationError, AntifragileError, ErrorCode.UPSTREAM_ERROR, False),
    (TransientError, IntegrationError, ErrorCode.UPSTREAM_UNAVAILABLE, True),
    (RateLimitedError, TransientError, ErrorCode.RATE_LIMITED, True),
    (UpstreamUnavailableError, TransientError, ErrorCode.UPSTREAM_UNAVAILABLE, True),
    (UpstreamTimeoutError, TransientError, ErrorCode.TIMEOUT, True),
    (NetworkError, TransientError, ErrorCode.NETWORK, True),
    (DeadlineExceededError, TransientError, ErrorCode.DEADLINE_EXCEEDED, True),
    (PermanentError, IntegrationError, ErrorCode.BAD_REQUEST, False),
    (InvalidRequestError, PermanentError, ErrorCode.VALIDATION, False),
    (AuthenticationError, PermanentError, ErrorCode.AUTH, False),
    (NotFoundError, PermanentError, ErrorCode.NOT_FOUND, False),
    (ConflictError, PermanentError, ErrorCode.CONFLICT, False),
    (RejectedError, IntegrationError, ErrorCode.UPSTREAM_ERROR, True),
    (CircuitOpenError, RejectedError, ErrorCode.CIRCUIT_OPEN, True),
    (BulkheadFullError, RejectedError, ErrorCode.BULKHEAD_FULL, True),
    (RetryBudgetExhaustedError, RejectedError, ErrorCode.RETRY_BUDGET_EXHAUSTED, True),
]
ALL_ERRORS: list[type[AntifragileError]] = [AntifragileError] + [row[0] for row in TREE]


@pytest.mark.parametrize(("cls", "parent", "code", "retryable"), TREE)
def test_each_class_has_its_place_code_and_retryability(
    cls: type[AntifragileError], parent: type[AntifragileError], code: ErrorCode, retryable: bool
) -> None:
    """Every class sits under its documented parent with its documented code and retryable."""
    assert cls.__bases__[0] is parent
    error = cls("boom")
    assert isinstance(error, AntifragileError)
    assert error.code == code
    assert error.retryable is retryable
    assert error.to_dict() == {"code": str(code), "message": "boom", "retryable": retryable}


def test_root_is_internal_and_not_retryable() -> None:
    """The root error's code is INTERNAL and it is not retryable."""
    error = AntifragileError("x")
    assert (error.code, error.retryable) == (ErrorCode.INTERNAL, False)


def test_configuration_error_is_a_value_error() -> None:
    """Misuse errors are also ``ValueError``s, so generic argument checks catch them."""
    assert issubclass(ConfigurationError, ValueError)
    with pytest.raises(ValueError, match="bad"):
        raise ConfigurationError("bad")


def test_retryable_and_permanent_branches_are_disjoint() -> None:
    """No class is both transient and permanent, nor a rejection and transient."""
    for cls in ALL_ERRORS:
        branches = [issubclass(cls, b) for b in (TransientError, PermanentError, RejectedError)]
        assert sum(branches) <= 1, cls


def test_the_tree_drawing_names_every_class() -> None:
    """The module docstring's drawing of the tree lists every exception class."""
    doc = sys.modules[AntifragileError.__module__].__doc__ or ""
    for cls in ALL_ERRORS:
        assert cls.__name__ in doc, cls


def test_error_codes_are_stable_strings() -> None:
    """The codes of these layers exist as plain strings equal to their names."""
    expected = {
        "RATE_LIMITED", "UPSTREAM_UNAVAILABLE", "UPSTREAM_ERROR", "TIMEOUT", "NETWORK",
        "DEADLINE_EXCEEDED", "VALIDATION", "AUTH", "NOT_FOUND", "CONFLICT", "BAD_REQUEST",
        "CIRCUIT_OPEN", "BULKHEAD_FULL", "RETRY_BUDGET_EXHAUSTED", "CONFIGURATION", "INTERNAL",
    }  # fmt: skip
    assert expected <= {c.value for c in ErrorCode}
    for code in ErrorCode:
        assert code == code.name
        assert isinstance(code, str)


def test_code_and_retryable_can_be_overridden() -> None:
    """An explicit ``code=`` or ``retryable=`` wins over the class default."""
    error = PermanentError("x", code=ErrorCode.UPSTREAM_ERROR, retryable=True)
    assert error.code == "UPSTREAM_ERROR"
    assert error.retryable is True


def test_integration_error_carries_context_in_its_string() -> None:
    """``str()`` names provider and operation, the status, the attempt count and request id."""
    records = tuple(
        AttemptRecord(number=n, started_at=0.0, duration=0.1, code="TIMEOUT", message="t")
        for n in (1, 2, 3)
    )
    error = UpstreamTimeoutError(
        "read timed out",
        provider="shopify",
        operation="create_customer",
        status=504,
        request_id="rid-1",
        attempts=records,
    )
    text = str(error)
    assert text.startswith("shopify.create_customer: read timed out")
    assert "(HTTP 504)" in text
    assert "after 3 attempts" in text
    assert "[request_id=rid-1]" in text
    assert error.to_dict() == {"code": "TIMEOUT", "message": text, "retryable": True}


def test_status_already_in_message_is_not_repeated() -> None:
    """A message that already states the status does not get ``(HTTP n)`` appended."""
    error = UpstreamUnavailableError("HTTP 503 Service Unavailable", status=503)
    assert str(error) == "HTTP 503 Service Unavailable"


def test_integration_error_defaults() -> None:
    """Without context an error is replay-safe, has no history and no give-up reason."""
    error = NetworkError("reset")
    assert error.provider is None
    assert error.replay_safe is True
    assert error.attempts == ()
    assert error.give_up_reason is None
    assert error.detail is None
    assert str(error) == "reset"


def test_attempt_record_to_dict() -> None:
    """An attempt record serialises every field."""
    record = AttemptRecord(
        number=2, started_at=5.0, duration=0.5, code="NETWORK", message="m", status=None, delay=1.0
    )
    assert record.to_dict() == {
        "number": 2,
        "started_at": 5.0,
        "duration": 0.5,
        "code": "NETWORK",
        "message": "m",
        "status": None,
        "delay": 1.0,
    }


# -- pickling ---------------------------------------------------------------------------------


def _full_instance(cls: type[AntifragileError]) -> AntifragileError:
    if not issubclass(cls, IntegrationError):
        return cls("misconfigured")
    record = AttemptRecord(
        number=1, started_at=1.0, duration=0.25, code="TIMEOUT", message="slow", delay=0.5
    )
    common: dict[str, Any] = {
        "provider": "hubspot",
        "operation": "create_contact",
        "status": 503,
        "request_id": "rid-7",
        "replay_safe": False,
        "attempts": (record, record),
        "detail": "upstream said no",
    }
    if cls is RateLimitedError or cls is UpstreamUnavailableError:
        common["retry_after"] = 2.5
    elif cls is CircuitOpenError:
        common["until"] = 1_700_000_123.0
    error = cls("failed", **common)
    assert isinstance(error, IntegrationError)
    error.give_up_reason = "attempts_exhausted"
    return error


@pytest.mark.parametrize("cls", ALL_ERRORS)
@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_every_error_survives_a_pickle_round_trip(
    cls: type[AntifragileError], protocol: int
) -> None:
    """Jobs and worker processes can pickle any error, keyword-only context included."""
    original = _full_instance(cls)
    original.add_note("a note")
    clone = pickle.loads(pickle.dumps(original, protocol=protocol))
    assert type(clone) is cls
    assert clone.args == original.args
    assert vars(clone) == vars(original)
    assert str(clone) == str(original)
    assert clone.to_dict() == original.to_dict()
    assert clone.__notes__ == ["a note"]


def test_errors_can_be_copied() -> None:
    """``copy`` and ``deepcopy`` (which use the pickle protocol) keep every attribute."""
    original = _full_instance(RateLimitedError)
    for clone in (copy.copy(original), copy.deepcopy(original)):
        assert isinstance(clone, RateLimitedError)
        assert clone.retry_after == 2.5
        assert vars(clone) == vars(original)


# -- redaction --------------------------------------------------------------------------------

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
SECRET_TEXTS: list[tuple[str, str]] = [
    ("Authorization: Bearer abcDEF123456.xyz", "abcDEF123456.xyz"),
    ('{"Authorization": "Bearer tok_998877665544"}', "tok_998877665544"),
    ("proxy-authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ("sent with bearer sometoken123 attached", "sometoken123"),
    ("x-api-key: k3y-0123456789", "k3y-0123456789"),
    ("X-Shopify-Access-Token=shpat_deadbeefdeadbeef00", "shpat_deadbeefdeadbeef00"),
    ("GET https://api.example.com/v1/things?api_key=s3cr3tvalue&page=2", "s3cr3tvalue"),
    ("GET /webhook?hub.verify_token=verifyme42 HTTP/1.1", "verifyme42"),
    ("https://graph.example.com/me?access_token=EAAGm0PX4ZCpsBA", "EAAGm0PX4ZCpsBA"),
    ("form: user=ann&password=hunter2hunter2", "hunter2hunter2"),
    ('{"client_secret": "zzz-very-secret", "id": 3}', "zzz-very-secret"),
    (
        "posting to https://hooks.slack.com/services/T0000000/B1111111/XXXXXXXXXXXXXXXXXXXX failed",
        "T0000000/B1111111/XXXXXXXXXXXXXXXXXXXX",
    ),
    ("connect to postgresql://admin:hunter2pass@db.internal:5432/app", "hunter2pass"),
    ("connect to https://ann:pa55word@api.example.com/x", "ann:pa55word"),
    (f"id_token {JWT} rejected", JWT),
    (f"jwt={JWT}", JWT),
    ("resend key re_123456789abcdef in use", "re_123456789abcdef"),
    ("sendgrid SG.abcdefghijklmnopqrstuv.wxyz0123 refused", "SG.abcdefghijklmnopqrstuv.wxyz0123"),
    ("stripe-like sk_live_ABCDEFGH12345678", "sk_live_ABCDEFGH12345678"),
    ("slack xoxb-1234-5678-abcdefghij", "xoxb-1234-5678-abcdefghij"),
    ("cal cal_live_0123456789abcdef", "cal_live_0123456789abcdef"),
    ("github ghp_" + "a" * 30, "ghp_" + "a" * 30),
]


@pytest.mark.parametrize(("text", "secret"), SECRET_TEXTS)
def test_redact_removes_secrets(text: str, secret: str) -> None:
    """Bearer tokens, API keys, webhook URLs, URL credentials, secret params and JWTs vanish."""
    cleaned = redact(text)
    assert secret not in cleaned
    assert REDACTED in cleaned


@pytest.mark.parametrize(("text", "secret"), SECRET_TEXTS)
def test_error_messages_and_details_are_redacted(text: str, secret: str) -> None:
    """No secret survives in an error's message, ``str()``, detail or envelope body."""
    error = UpstreamUnavailableError(text, provider="p", detail=f"body: {text}")
    assert secret not in error.message
    assert secret not in str(error)
    assert error.detail is not None
    assert secret not in error.detail
    assert secret not in error_body(error).message
    assert secret not in str(ConfigurationError(text))


def test_redaction_keeps_the_harmless_parts() -> None:
    """Only the secret is replaced: host, path and other parameters stay readable."""
    assert redact("https://api.example.com/v1?api_key=abc123&page=2") == (
        f"https://api.example.com/v1?api_key={REDACTED}&page=2"
    )
    assert redact("https://hooks.slack.com/services/T0/B1/XYZ") == (
        f"https://hooks.slack.com/services/{REDACTED}"
    )
    assert redact("https://ann:pw12@example.com/p") == f"https://{REDACTED}@example.com/p"
    assert redact("Authorization: Bearer abcdef123") == f"Authorization: Bearer {REDACTED}"
    assert redact("nothing to hide here") == "nothing to hide here"


def test_redact_removes_known_literal_secrets() -> None:
    """Values passed in ``secrets=`` are removed wherever they appear; very short ones are not."""
    assert redact("token is pl41n-v4lue!", secrets=["pl41n-v4lue!"]) == f"token is {REDACTED}"
    assert redact("a b c", secrets=["b", ""]) == "a b c"


def test_detail_is_truncated_after_redaction() -> None:
    """An error keeps at most 500 characters of the provider's body."""
    error = PermanentError("x", detail="y" * 2_000)
    assert error.detail == "y" * 500


def test_redact_headers_hides_sensitive_values_case_insensitively() -> None:
    """Sensitive header values become ``[REDACTED]``; others are kept (and still scanned)."""
    headers = {
        "Authorization": "Bearer abc",
        "X-API-Key": "k",
        "Cookie": "session=1",
        "X-Hub-Signature-256": "sha256=ff",
        "Content-Type": "application/json",
        "Location": "https://u:p4ss@example.com/",
    }
    assert redact_headers(headers) == {
        "Authorization": REDACTED,
        "X-API-Key": REDACTED,
        "Cookie": REDACTED,
        "X-Hub-Signature-256": REDACTED,
        "Content-Type": "application/json",
        "Location": f"https://{REDACTED}@example.com/",
    }
    assert redact_headers([("authorization", "x"), ("accept", "*/*")]) == {
        "authorization": REDACTED,
        "accept": "*/*",
    }


TOKEN68 = string.ascii_letters + string.digits + "-._~+/"
NEUTRAL = " ,;:()[]<>!?#"


@given(
    token=st.text(TOKEN68, min_size=8, max_size=64),
    prefix=st.text(NEUTRAL, max_size=20),
    suffix=st.text(NEUTRAL, max_size=20),
)
def test_property_bearer_tokens_never_survive(token: str, prefix: str, suffix: str) -> None:
    """Whatever surrounds it, a bearer token is gone from the redacted text."""
    cleaned = redact(f"{prefix} Bearer {token} {suffix}")
    assert token not in cleaned


@given(
    user=st.text(string.ascii_letters + string.digits, min_size=1, max_size=12),
    password=st.text(string.ascii_letters + string.digits + "!$*-_.~", min_size=1, max_size=24),
    scheme=st.sampled_from(["https", "http", "postgresql", "redis", "amqp+ssl"]),
)
def test_property_url_credentials_are_replaced(user: str, password: str, scheme: str) -> None:
    """``scheme://user:password@host`` keeps only the scheme and the host."""
    url = f"{scheme}://{user}:{password}@host.example:8080/path"
    assert redact(url) == f"{scheme}://{REDACTED}@host.example:8080/path"


@given(
    name=st.sampled_from(
        [
            *("token", "api_key", "apikey", "access_token", "auth_token", "secret"),
            *("client_secret", "password", "passwd", "signature", "sig", "key", "verify_token"),
        ]
    ),
    value=st.text(string.ascii_letters + string.digits + "-_.~%", min_size=1, max_size=40),
)
def test_property_secret_query_parameters_are_replaced(name: str, value: str) -> None:
    """A secret-named query parameter keeps its name and loses its value; others are kept."""
    url = f"https://api.example.com/v1?page=2&{name}={value}&limit=5"
    assert redact(url) == f"https://api.example.com/v1?page=2&{name}={REDACTED}&limit=5"


B64URL = string.ascii_letters + string.digits + "-_"


@given(
    header=st.text(B64URL, min_size=5, max_size=40),
    payload=st.text(B64URL, min_size=5, max_size=80),
    signature=st.text(B64URL, min_size=5, max_size=80),
    last=st.sampled_from(string.ascii_letters + string.digits),
)
def test_property_jwts_are_replaced(header: str, payload: str, signature: str, last: str) -> None:
    """Any three-segment token starting like a JWT header is removed whole."""
    jwt = f"eyJ{header}.{payload}.{signature}{last}"
    assert redact(f"token: {jwt} expired") == f"token: {REDACTED} expired"


@given(path=st.text(string.ascii_letters + string.digits + "/_-", min_size=1, max_size=60))
def test_property_slack_webhook_paths_are_replaced(path: str) -> None:
    """Everything after ``hooks.slack.com/services/`` is the secret and is replaced."""
    text = f"POST https://hooks.slack.com/services/{path} failed"
    assert redact(text) == f"POST https://hooks.slack.com/services/{REDACTED} failed"


# -- classification of responses --------------------------------------------------------------


def test_retryable_statuses_are_exactly_the_documented_ones() -> None:
    """408, 425, 429, 500, 502, 503 and 504 may succeed later; nothing else."""
    assert frozenset({408, 425, 429, 500, 502, 503, 504}) == RETRYABLE_STATUSES


@pytest.mark.parametrize(
    ("status", "cls", "code"),
    [
        (408, UpstreamTimeoutError, ErrorCode.TIMEOUT),
        (425, UpstreamUnavailableError, ErrorCode.UPSTREAM_UNAVAILABLE),
        (429, RateLimitedError, ErrorCode.RATE_LIMITED),
        (500, UpstreamUnavailableError, ErrorCode.UPSTREAM_UNAVAILABLE),
        (502, UpstreamUnavailableError, ErrorCode.UPSTREAM_UNAVAILABLE),
        (503, UpstreamUnavailableError, ErrorCode.UPSTREAM_UNAVAILABLE),
        (504, UpstreamUnavailableError, ErrorCode.UPSTREAM_UNAVAILABLE),
    ],
)
def test_retryable_statuses_become_transient_errors(
    status: int, cls: type[TransientError], code: ErrorCode
) -> None:
    """Each retryable status maps to its transient class and code."""
    error = classify_response(httpx.Response(status), provider="resend", operation="send")
    assert type(error) is cls
    assert error.code == code
    assert error.retryable is True
    assert (error.status, error.provider, error.operation) == (status, "resend", "send")


@pytest.mark.parametrize(
    ("status", "cls", "code"),
    [
        (400, InvalidRequestError, ErrorCode.VALIDATION),
        (422, InvalidRequestError, ErrorCode.VALIDATION),
        (401, AuthenticationError, ErrorCode.AUTH),
        (403, AuthenticationError, ErrorCode.AUTH),
        (404, NotFoundError, ErrorCode.NOT_FOUND),
        (410, NotFoundError, ErrorCode.NOT_FOUND),
        (409, ConflictError, ErrorCode.CONFLICT),
        (402, PermanentError, ErrorCode.BAD_REQUEST),
        (405, PermanentError, ErrorCode.BAD_REQUEST),
        (406, PermanentError, ErrorCode.BAD_REQUEST),
        (413, PermanentError, ErrorCode.BAD_REQUEST),
        (415, PermanentError, ErrorCode.BAD_REQUEST),
        (418, PermanentError, ErrorCode.BAD_REQUEST),
        (451, PermanentError, ErrorCode.BAD_REQUEST),
        (499, PermanentError, ErrorCode.BAD_REQUEST),
        (501, PermanentError, ErrorCode.UPSTREAM_ERROR),
        (505, PermanentError, ErrorCode.UPSTREAM_ERROR),
        (507, PermanentError, ErrorCode.UPSTREAM_ERROR),
        (511, PermanentError, ErrorCode.UPSTREAM_ERROR),
        (599, PermanentError, ErrorCode.UPSTREAM_ERROR),
    ],
)
def test_other_error_statuses_become_permanent_errors(
    status: int, cls: type[PermanentError], code: ErrorCode
) -> None:
    """Other 4xx are VALIDATION/AUTH/NOT_FOUND/CONFLICT/BAD_REQUEST; other 5xx UPSTREAM_ERROR."""
    error = classify_response(httpx.Response(status))
    assert type(error) is cls
    assert error.code == code
    assert error.retryable is False
    assert error.status == status


@given(st.integers(min_value=100, max_value=599))
def test_property_classification_follows_the_status(status: int) -> None:
    """Below 400 nothing is an error; from 400 an error is retryable iff its status is listed."""
    error = classify_response(httpx.Response(status), now=0.0)
    if status < 400:
        assert error is None
    else:
        assert error is not None
        assert error.retryable is (status in RETRYABLE_STATUSES)
        assert isinstance(error, TransientError if status in RETRYABLE_STATUSES else PermanentError)


def test_429_and_503_take_their_delay_from_retry_after() -> None:
    """``Retry-After`` on a 429 or 503 becomes the error's ``retry_after``."""
    limited = classify_response(httpx.Response(429, headers={"Retry-After": "7"}), now=0.0)
    assert isinstance(limited, RateLimitedError)
    assert limited.retry_after == 7.0
    unavailable = classify_response(httpx.Response(503, headers={"retry-after": "2.5"}), now=0.0)
    assert isinstance(unavailable, UpstreamUnavailableError)
    assert unavailable.retry_after == 2.5
    bare = classify_response(httpx.Response(429), now=0.0)
    assert isinstance(bare, RateLimitedError)
    assert bare.retry_after is None


def test_429_falls_back_to_the_reset_header() -> None:
    """Without ``Retry-After`` a 429 uses the rate-limit reset header."""
    response = httpx.Response(429, headers={"X-RateLimit-Reset": "1700000030"})
    error = classify_response(response, now=1_700_000_000.0)
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 30.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize(
    "headers",
    [
        {"RateLimit-Reset": "20"},
        {"X-RateLimit-Reset": "2400"},
        {"X-RateLimit-Reset": "1700002400"},  # an epoch 40 minutes ahead
        {"RateLimit-Limit": "100", "RateLimit-Remaining": "0", "RateLimit-Reset": "2400"},
    ],
)
def test_a_5xx_ignores_quota_reset_headers(status: int, headers: dict[str, str]) -> None:
    """A quota's reset header says when the quota renews, not when a failing server comes
    back: on a 5xx it leaves ``retry_after`` unset (the back-off decides), so a 503 with a
    40-minute reset is still retried and a 500 with ``RateLimit-Reset: 20`` does not wait
    20 s."""
    error = classify_response(httpx.Response(status, headers=headers), now=1_700_000_000.0)
    assert isinstance(error, UpstreamUnavailableError)
    assert error.retry_after is None


def test_a_503_still_honours_retry_after_beside_a_reset_header() -> None:
    """``Retry-After`` on a 503 is the server's own word: it is kept, whatever the quota's
    reset header says."""
    response = httpx.Response(503, headers={"Retry-After": "3", "RateLimit-Reset": "2400"})
    error = classify_response(response, now=0.0)
    assert isinstance(error, UpstreamUnavailableError)
    assert error.retry_after == 3.0


def test_response_detail_is_a_redacted_excerpt_of_the_body() -> None:
    """The body excerpt is kept, redacted; an unread streaming body is not read."""
    error = classify_response(httpx.Response(400, text="bad field; token=abcd1234 " + "x" * 900))
    assert error is not None
    assert error.detail is not None
    assert "abcd1234" not in error.detail
    assert len(error.detail) <= 500
    unread = httpx.Response(500, stream=httpx.ByteStream(b"not read"))
    error = classify_response(unread)
    assert error is not None
    assert error.detail is None
    explicit = classify_response(httpx.Response(500, text="ignored"), detail="api_key=zzzz9999")
    assert explicit is not None
    assert explicit.detail == f"api_key={REDACTED}"


def test_response_error_carries_the_request_id() -> None:
    """The request id passed in ends up on the error and in its message."""
    error = classify_response(httpx.Response(404), request_id="rid-42")
    assert error is not None
    assert error.request_id == "rid-42"
    assert "rid-42" in str(error)


@pytest.mark.parametrize("status", [408, 425, 500, 502, 503, 504, 400, 404, 409, 501])
def test_response_replay_safety_follows_idempotency(status: int) -> None:
    """A request that reached the provider may be replayed only if it was idempotent."""
    assert classify_response(httpx.Response(status), idempotent=True).replay_safe is True  # type: ignore[union-attr]
    assert classify_response(httpx.Response(status), idempotent=False).replay_safe is False  # type: ignore[union-attr]


def test_429_is_always_replay_safe() -> None:
    """A 429 is a refusal: the provider did nothing, so even a POST may be sent again."""
    error = classify_response(httpx.Response(429), idempotent=False)
    assert error is not None
    assert error.replay_safe is True


# -- classification of exceptions -------------------------------------------------------------

NOT_SENT: list[BaseException] = [
    httpx.ConnectError("refused"),
    httpx.ConnectTimeout("connect timed out"),
    httpx.PoolTimeout("no connection free"),
    ConnectionRefusedError("refused"),
]
SENT: list[BaseException] = [
    httpx.ReadTimeout("read timed out"),
    httpx.WriteTimeout("write timed out"),
    httpx.ReadError("connection reset"),
    httpx.RemoteProtocolError("peer closed"),
    ConnectionResetError("reset by peer"),
    TimeoutError("timed out"),
]


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ConnectError("x"), NetworkError),
        (httpx.ConnectTimeout("x"), UpstreamTimeoutError),
        (httpx.PoolTimeout("x"), UpstreamTimeoutError),
        (httpx.ReadTimeout("x"), UpstreamTimeoutError),
        (httpx.WriteTimeout("x"), UpstreamTimeoutError),
        (TimeoutError("x"), UpstreamTimeoutError),
        (httpx.ReadError("x"), NetworkError),
        (httpx.RemoteProtocolError("x"), NetworkError),
        (ConnectionResetError("x"), NetworkError),
        (ConnectionRefusedError("x"), NetworkError),
        (httpx.UnsupportedProtocol("x"), PermanentError),
        (httpx.TooManyRedirects("x"), PermanentError),
        (httpx.DecodingError("x"), PermanentError),
    ],
)
def test_transport_exceptions_are_classified(
    exc: BaseException, cls: type[IntegrationError]
) -> None:
    """Connect errors, pool/read/write timeouts and resets are transient; the rest permanent."""
    error = classify_exception(exc, provider="slack")
    assert type(error) is cls
    assert error.provider == "slack"
    assert error.message.startswith(type(exc).__name__)


def test_permanent_transport_failures_have_their_codes() -> None:
    """A bad URL scheme is BAD_REQUEST; redirect loops and undecodable bodies UPSTREAM_ERROR."""
    assert classify_exception(httpx.UnsupportedProtocol("ftp")).code == "BAD_REQUEST"  # type: ignore[union-attr]
    assert classify_exception(httpx.TooManyRedirects("loop")).code == "UPSTREAM_ERROR"  # type: ignore[union-attr]
    assert classify_exception(httpx.DecodingError("gzip")).code == "UPSTREAM_ERROR"  # type: ignore[union-attr]


@pytest.mark.parametrize("exc", NOT_SENT, ids=lambda e: type(e).__name__)
def test_failures_before_sending_are_replay_safe(exc: BaseException) -> None:
    """Nothing left the process, so even a non-idempotent request may be sent again."""
    error = classify_exception(exc, idempotent=False)
    assert error is not None
    assert error.replay_safe is True
    assert error.retryable is True


@pytest.mark.parametrize("exc", SENT, ids=lambda e: type(e).__name__)
def test_failures_after_sending_are_replay_safe_only_when_idempotent(exc: BaseException) -> None:
    """The request may have had its effect: only an idempotent one may be sent again."""
    unsafe = classify_exception(exc, idempotent=False)
    safe = classify_exception(exc, idempotent=True)
    assert unsafe is not None
    assert safe is not None
    assert unsafe.replay_safe is False
    assert safe.replay_safe is True
    assert unsafe.retryable is True


def test_unknown_exceptions_are_not_classified() -> None:
    """A bug in the caller's code is not a provider failure: it is left alone."""
    for exc in (ValueError("x"), KeyError("k"), RuntimeError(), ZeroDivisionError()):
        assert classify_exception(exc) is None


def test_integration_errors_are_returned_unchanged() -> None:
    """Classifying an antifragile error returns that very object."""
    error = NotFoundError("gone")
    assert classify_exception(error) is error


def test_exception_messages_are_redacted() -> None:
    """A URL with credentials in a transport error's message does not survive."""
    error = classify_exception(httpx.ConnectError("cannot reach https://u:secretpw@h.example/"))
    assert error is not None
    assert "secretpw" not in str(error)


def test_empty_exception_message_falls_back_to_its_name() -> None:
    """An exception with no text still gives a readable message."""
    error = classify_exception(TimeoutError())
    assert error is not None
    assert error.message == "TimeoutError: TimeoutError"


@pytest.mark.parametrize("method", [*sorted(IDEMPOTENT_METHODS), "get", "put"])
def test_idempotent_methods(method: str) -> None:
    """RFC 9110's idempotent methods (any case) may be replayed."""
    assert is_idempotent(method)


@pytest.mark.parametrize("method", ["POST", "PATCH", "post", "CONNECT"])
def test_non_idempotent_methods_need_a_key(method: str) -> None:
    """POST and PATCH are idempotent only with an idempotency key."""
    assert not is_idempotent(method)
    assert is_idempotent(method, "key-1")
