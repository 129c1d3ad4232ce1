"""ResilientClient and SyncResilientClient against a real, misbehaving HTTP server.

Every test runs once with each client. Policies run on a FakeClock, so back-offs, Retry-After
waits and rate-limiter pauses are recorded in ``clock.sleeps`` instead of being waited out; only
attempt timeouts take (a tenth of a second of) real time.
"""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

import httpx
import pytest

from antifragile import (
    AuthenticationError,
    CircuitBreaker,
    CircuitOpenError,
    DeadlineExceededError,
    Exponential,
    FakeClock,
    NetworkError,
    Policy,
    RateLimitedError,
    ResilientClient,
    Retry,
    SyncResilientClient,
    TokenBucket,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    request_context,
)
from antifragile.errors import REDACTED, Envelope, ErrorEnvelope, SuccessEnvelope
from antifragile.observability import BreakerTransition, LimiterAdjusted, RecordingObserver
from antifragile.sandbox import Fault, FlakyServer

Kind = Literal["async", "sync"]


class Client:
    """One awaitable interface over both clients, so each behaviour is proven for each."""

    def __init__(self, kind: Kind, base_url: str, policy: Policy, **options: Any) -> None:
        self.kind = kind
        self._async: ResilientClient | None = None
        self._sync: SyncResilientClient | None = None
        if kind == "async":
            self._async = ResilientClient("provider", base_url=base_url, policy=policy, **options)
        else:
            self._sync = SyncResilientClient(
                "provider", base_url=base_url, policy=policy, **options
            )

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self._async is not None:
            return await self._async.request(method, url, **kwargs)
        assert self._sync is not None
        return await asyncio.to_thread(self._sync.request, method, url, **kwargs)

    async def request_safe(self, method: str, url: str, **kwargs: Any) -> Envelope[httpx.Response]:
        if self._async is not None:
            return await self._async.request_safe(method, url, **kwargs)
        assert self._sync is not None
        return await asyncio.to_thread(self._sync.request_safe, method, url, **kwargs)

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
        if self._sync is not None:
            self._sync.close()


Connect = Callable[..., Client]


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> Kind:
    value: Kind = request.param
    return value


@pytest.fixture
def server() -> Iterator[FlakyServer]:
    with FlakyServer(default=Fault.ok(json={"ok": True})) as running:
        yield running


@pytest.fixture
def recorder() -> RecordingObserver:
    return RecordingObserver()


@pytest.fixture
async def connect(kind: Kind, server: FlakyServer) -> AsyncIterator[Connect]:
    """Build clients of the test's kind for the server; they are closed afterwards."""
    made: list[Client] = []

    def factory(policy: Policy, **options: Any) -> Client:
        client = Client(kind, server.url, policy, **options)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()


def policy(clock: FakeClock, **options: Any) -> Policy:
    """A policy on the fake clock: four attempts, exponential back-off from 0.5 s."""
    options.setdefault("retry", Retry(attempts=4, backoff=Exponential(0.5, cap=8)))
    return Policy("provider", clock=clock, **options)


# -- Retry-After ------------------------------------------------------------------------------


async def test_retry_after_delta_seconds_is_honoured(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """A 429 with ``Retry-After: 1.5`` makes the retry wait exactly 1.5 s, then succeed."""
    server.script("/orders", [Fault.rate_limited(1.5)])
    response = await connect(policy(clock)).request("GET", "/orders")
    assert response.status_code == 200
    assert clock.sleeps == [1.5]
    assert server.count("/orders") == 2


async def test_retry_after_http_date_is_honoured(
    server: FlakyServer, connect: Connect, recorder: RecordingObserver
) -> None:
    """A 429 whose ``Retry-After`` is an HTTP-date 20 s ahead makes the retry wait ~20 s. The
    date is read once, on the policy's clock (here a FakeClock whose wall time starts at the
    real one, as the server's dates do): the rate limiter pauses exactly as long as the retry
    waits, so no second wait follows."""
    started = time.time()
    clock = FakeClock(wall_offset=started - 1000.0)  # its wall time is `started` until it sleeps
    limiter = TokenBucket(100, name="provider")
    server.script("/orders", [Fault.rate_limited(20, http_date=True)])
    client = connect(policy(clock, rate=limiter, observer=recorder))
    response = await client.request("GET", "/orders")
    finished = time.time()
    assert response.status_code == 200
    [wait] = clock.sleeps
    # the server wrote now + 20 s, rounded up to a whole second, at some time in between
    assert 20.0 <= wait <= math.ceil(finished + 20.0) - started
    [adjusted] = recorder.of(LimiterAdjusted)
    assert adjusted.paused_for == wait
    assert server.count("/orders") == 2


async def test_an_http_date_is_read_on_the_policy_clock_only(
    server: FlakyServer, connect: Connect, clock: FakeClock, recorder: RecordingObserver
) -> None:
    """With a FakeClock years away from the server's dates, the error's ``retry_after`` and
    the limiter's pause are the same span, both read on the policy's clock -- never one on
    the system clock and one on the policy's."""
    limiter = TokenBucket(100, name="provider")
    server.script("/orders", [Fault.rate_limited(20, http_date=True)])
    client = connect(policy(clock, rate=limiter, observer=recorder, retry=None))
    with pytest.raises(RateLimitedError) as info:
        await client.request("GET", "/orders")
    [adjusted] = recorder.of(LimiterAdjusted)
    assert adjusted.paused_for is not None
    assert info.value.retry_after == adjusted.paused_for


async def test_retry_after_equal_to_the_time_left_gives_up_at_once(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """``Retry-After: 60`` with 60 s left of the total timeout: no wait of the whole deadline
    and no DeadlineExceededError -- the 429 comes back at once, with its ``retry_after``."""
    server.script("/orders", [Fault.rate_limited(60)])
    client = connect(policy(clock, total_timeout=60.0))
    with pytest.raises(RateLimitedError) as caught:
        await client.request("GET", "/orders")
    assert caught.value.retry_after == 60.0
    assert caught.value.give_up_reason == "retry_after_beyond_deadline"
    assert clock.sleeps == []
    assert server.count("/orders") == 1


async def test_rate_limited_post_without_key_is_retried(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """A 429 is a refusal, so even a POST without an idempotency key is sent again."""
    server.script("/orders", [Fault.rate_limited(1)])
    response = await connect(policy(clock)).request("POST", "/orders", json={"n": 1})
    assert response.status_code == 200
    assert clock.sleeps == [1.0]
    assert server.count("/orders") == 2


async def test_a_5xx_with_a_quota_reset_header_is_retried_on_the_back_off(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """Quota reset headers on a 5xx do not set the wait: a 503 with a 40-minute
    ``RateLimit-Reset`` is retried, and a 500 with ``RateLimit-Reset: 20`` waits the back-off,
    not 20 s."""
    server.script(
        "/orders",
        [
            Fault.status(503, headers={"RateLimit-Reset": "2400"}),
            Fault.status(500, headers={"RateLimit-Reset": "20"}),
        ],
    )
    response = await connect(policy(clock, total_timeout=60)).request("GET", "/orders")
    assert response.status_code == 200
    assert server.count("/orders") == 3
    assert len(clock.sleeps) == 2
    assert all(wait < 20 for wait in clock.sleeps)


# -- 5xx, timeouts, resets --------------------------------------------------------------------


async def test_5xx_burst_then_success(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """A burst of 503, 502, 500 and 504 is ridden out with growing, jittered back-offs."""
    server.script(
        "/orders", [Fault.status(503), Fault.status(502), Fault.status(500), Fault.status(504)]
    )
    client = connect(policy(clock, retry=Retry(attempts=5, backoff=Exponential(0.5, cap=8))))
    response = await client.request("GET", "/orders")
    assert response.status_code == 200
    assert server.count("/orders") == 5
    assert len(clock.sleeps) == 4
    for n, wait in enumerate(clock.sleeps):
        assert 0.0 <= wait <= 0.5 * 2**n  # full jitter under the exponential ceiling


async def test_5xx_until_attempts_run_out(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """When every attempt gets a 503 the last error surfaces, with the whole history."""
    server.script("/orders", Fault.repeat(Fault.status(503), 4))
    with pytest.raises(UpstreamUnavailableError) as caught:
        await connect(policy(clock)).request("GET", "/orders")
    error = caught.value
    assert error.status == 503
    assert error.give_up_reason == "attempts_exhausted"
    assert [a.status for a in error.attempts] == [503] * 4
    assert server.count("/orders") == 4


@pytest.mark.parametrize("stall", [Fault.slow(60.0), Fault.hang()], ids=["slow", "hang"])
async def test_slow_response_past_the_attempt_timeout_is_retried(
    server: FlakyServer, connect: Connect, clock: FakeClock, stall: Fault
) -> None:
    """An answer that takes longer than the attempt timeout is abandoned and tried again. The
    timeout leaves the second, prompt answer room on a busy machine (one that took longer
    would be tried a third time)."""
    server.script("/orders", [stall])
    response = await connect(policy(clock, timeout=2.0)).request("GET", "/orders")
    assert response.status_code == 200
    assert server.count("/orders") == 2
    assert len(clock.sleeps) == 1


async def test_slow_responses_raise_upstream_timeout(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """When every attempt is too slow the call fails with UpstreamTimeoutError."""
    server.script("/orders", Fault.repeat(Fault.slow(0.5), 2))
    client = connect(policy(clock, timeout=0.1, retry=Retry(attempts=2)))
    with pytest.raises(UpstreamTimeoutError) as caught:
        await client.request("GET", "/orders")
    assert caught.value.code == "TIMEOUT"
    assert caught.value.give_up_reason == "attempts_exhausted"
    assert server.count("/orders") == 2


async def test_connection_reset_is_retried_for_get(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """A GET whose connection is reset is sent again (GET is idempotent)."""
    server.script("/orders", [Fault.reset()])
    response = await connect(policy(clock)).request("GET", "/orders")
    assert response.status_code == 200
    assert [r.fault for r in server.requests] == ["reset", "ok"]


async def test_connection_reset_is_retried_for_post_with_idempotency_key(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """A POST with an idempotency key is sent again after a reset, with the same key."""
    server.script("/orders", [Fault.reset()])
    client = connect(policy(clock))
    response = await client.request("POST", "/orders", json={"n": 1}, idempotency_key="ord-1")
    assert response.status_code == 200
    assert [r.fault for r in server.requests] == ["reset", "ok"]
    assert {r.headers["idempotency-key"] for r in server.requests} == {"ord-1"}


async def test_post_without_idempotency_key_is_not_replayed_after_a_reset(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """A POST without an idempotency key that reached the server is never sent twice."""
    server.script("/orders", [Fault.reset()])
    with pytest.raises(NetworkError) as caught:
        await connect(policy(clock)).request("POST", "/orders", json={"n": 1})
    assert caught.value.give_up_reason == "unsafe_to_replay"
    assert caught.value.replay_safe is False
    assert server.count("/orders") == 1
    assert clock.sleeps == []


async def test_post_without_idempotency_key_is_not_replayed_after_a_503(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """A 503 to a POST without an idempotency key is not retried either: it may have acted."""
    server.script("/orders", [Fault.status(503)])
    with pytest.raises(UpstreamUnavailableError) as caught:
        await connect(policy(clock)).request("POST", "/orders", json={"n": 1})
    assert caught.value.give_up_reason == "unsafe_to_replay"
    assert server.count("/orders") == 1


# -- headers ----------------------------------------------------------------------------------


async def test_idempotency_key_and_request_id_arrive_on_every_attempt(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """Every attempt carries the Idempotency-Key and one x-request-id, the same each time."""
    server.script("/orders", [Fault.status(503), Fault.status(502)])
    client = connect(policy(clock))
    await client.request("POST", "/orders", json={"n": 1}, idempotency_key="ord-42")
    records = server.requests
    assert len(records) == 3
    assert {r.headers["idempotency-key"] for r in records} == {"ord-42"}
    [request_id] = {r.headers["x-request-id"] for r in records}
    assert len(request_id) == 32
    await client.request("GET", "/orders")
    assert server.requests[-1].headers["x-request-id"] != request_id  # a new call, a new id


async def test_request_context_propagates_its_id(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """Inside ``request_context("abc")`` every attempt is sent with ``x-request-id: abc``."""
    server.script("/orders", [Fault.status(503)])
    client = connect(policy(clock))
    with request_context("abc"):
        response = await client.request("GET", "/orders")
    assert response.headers["x-request-id"] == "abc"
    assert [r.headers["x-request-id"] for r in server.requests] == ["abc", "abc"]


# -- provider rate limits ---------------------------------------------------------------------


async def test_provider_rate_limit_headers_make_the_limiter_wait(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """``ratelimit-remaining: 0`` with ``ratelimit-reset: 2`` holds the next call for 2 s."""
    exhausted = {"ratelimit-limit": "10", "ratelimit-remaining": "0", "ratelimit-reset": "2"}
    server.script("/orders", [Fault.ok(json={"n": 1}, headers=exhausted)])
    client = connect(policy(clock, rate=TokenBucket(5, burst=5)))
    await client.request("GET", "/orders")
    assert clock.sleeps == []
    await client.request("GET", "/orders")
    assert clock.sleeps == [pytest.approx(2.0)]
    assert server.count("/orders") == 2


async def test_epoch_reset_headers_are_read_on_the_policy_clock(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """``x-ratelimit-reset`` as epoch seconds 3 s after the policy clock's wall time (a
    FakeClock, years away from the system's) holds the next call for 3 s: the reset is read
    against the injected clock, not ``time.time()``."""
    reset = str(int(clock.time()) + 3)
    exhausted = {
        "x-ratelimit-limit": "10",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": reset,
    }
    server.script("/orders", [Fault.ok(json={"n": 1}, headers=exhausted)])
    client = connect(policy(clock, rate=TokenBucket(5, burst=5)))
    await client.request("GET", "/orders")
    await client.request("GET", "/orders")
    assert clock.sleeps == [pytest.approx(3.0, abs=1.0)]


async def test_named_rate_limit_headers_make_the_limiter_wait(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """Cal.com's named variant (``X-RateLimit-Remaining-Default: 0`` with
    ``X-RateLimit-Reset-Default: 4``) holds the next call for 4 s."""
    exhausted = {
        "X-RateLimit-Limit-Default": "120",
        "X-RateLimit-Remaining-Default": "0",
        "X-RateLimit-Reset-Default": "4",
    }
    server.script("/bookings", [Fault.ok(json={"n": 1}, headers=exhausted)])
    client = connect(policy(clock, rate=TokenBucket(5, burst=5)))
    await client.request("GET", "/bookings")
    await client.request("GET", "/bookings")
    assert clock.sleeps == [pytest.approx(4.0)]


# -- redaction --------------------------------------------------------------------------------


async def test_error_bodies_are_redacted(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """A bearer token or a configured secret echoed in an error body never reaches the error."""
    token = "Bearer eyk1fA9sLq0tZx7"
    body = {"error": f"token {token} rejected", "echo": "key sk-shop-0123456789"}
    server.script("/orders", [Fault.status(401, json=body)])
    client = connect(policy(clock), secrets=["sk-shop-0123456789"])
    with pytest.raises(AuthenticationError) as caught:
        await client.request("GET", "/orders")
    error = caught.value
    shown = " ".join([str(error), error.message, error.detail or "", repr(error.to_dict())])
    assert "eyk1fA9sLq0tZx7" not in shown
    assert "sk-shop-0123456789" not in shown
    assert REDACTED in (error.detail or "")
    assert server.count("/orders") == 1  # a 401 is permanent: not retried


# -- circuit breaker --------------------------------------------------------------------------


async def test_breaker_opens_after_repeated_503s_then_fails_fast(
    server: FlakyServer, connect: Connect, clock: FakeClock, recorder: RecordingObserver
) -> None:
    """After repeated 503s the breaker opens; calls then fail without reaching the server."""
    breaker = CircuitBreaker(failure_rate=0.5, window=4, minimum_calls=4, open_duration=30)
    client = connect(policy(clock, retry=None, breaker=breaker, observer=recorder))
    server.script("/orders", Fault.repeat(Fault.status(503), 4))
    for _ in range(4):
        with pytest.raises(UpstreamUnavailableError):
            await client.request("GET", "/orders")
    assert [(t.from_state, t.to_state) for t in recorder.of(BreakerTransition)] == [
        ("closed", "open")
    ]
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            await client.request("GET", "/orders")
    assert server.count("/orders") == 4
    clock.advance(30)  # the open duration passes; the next call is a probe
    assert (await client.request("GET", "/orders")).status_code == 200
    assert [t.to_state for t in recorder.of(BreakerTransition)] == ["open", "half_open", "closed"]
    assert server.count("/orders") == 5


# -- the never-raising form -------------------------------------------------------------------


async def test_request_safe_returns_envelopes(
    server: FlakyServer, connect: Connect, clock: FakeClock
) -> None:
    """``request_safe`` never raises: failures become envelopes with a stable code."""
    server.script("/missing", [Fault.status(404)])
    server.script("/down", Fault.repeat(Fault.status(503), 4))
    client = connect(policy(clock))

    missing = await client.request_safe("GET", "/missing")
    assert isinstance(missing, ErrorEnvelope)
    assert missing.success is False
    assert (missing.error.code, missing.error.retryable) == ("NOT_FOUND", False)
    assert missing.meta.request_id == server.requests[0].headers["x-request-id"]

    down = await client.request_safe("GET", "/down")
    assert isinstance(down, ErrorEnvelope)
    assert (down.error.code, down.error.retryable) == ("UPSTREAM_UNAVAILABLE", True)

    fine = await client.request_safe("GET", "/fine")
    assert isinstance(fine, SuccessEnvelope)
    assert fine.success is True
    assert fine.data.json() == {"ok": True}


# -- a body that trickles in --------------------------------------------------------------------


class TrickleServer:
    """A raw HTTP server that answers 200 with a body of ``size`` bytes, one byte every
    ``interval`` seconds, recording how far it got: ``finished`` when it sent the whole body,
    ``disconnected`` when the client hung up first."""

    def __init__(self, size: int = 200, interval: float = 0.05) -> None:
        self.size = size
        self.interval = interval
        self.sent = 0
        self.finished = threading.Event()
        self.disconnected = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:  # closed before anyone connected
            return
        with conn:
            received = b""
            while b"\r\n\r\n" not in received:
                data = conn.recv(4096)
                if not data:
                    return
                received += data
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {self.size}\r\n\r\n"
            try:
                conn.sendall(head.encode())
                for _ in range(self.size):
                    time.sleep(self.interval)
                    conn.sendall(b"x")
                    self.sent += 1
            except OSError:  # the client hung up: the next bytes found no one
                self.disconnected.set()
                return
            self.finished.set()

    def __enter__(self) -> TrickleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.close()
        self._thread.join()


async def test_the_total_timeout_bounds_a_body_that_trickles_in(kind: Kind) -> None:
    """httpx's read timeout starts again with every byte, so a body that trickles in never
    trips it; the total timeout bounds the whole attempt, reading the body included: the call
    fails with a timeout while the server is still sending, and the server finds the
    connection closed before it could finish."""
    with TrickleServer(size=200, interval=0.05) as server:
        policy = Policy("provider", retry=None, timeout=None, total_timeout=0.3)
        client = Client(kind, server.url, policy, timeout=10.0)
        try:
            with pytest.raises((UpstreamTimeoutError, DeadlineExceededError)):
                await client.request("GET", "/report")
            assert not server.finished.is_set()
            assert server.sent < server.size
        finally:
            await client.aclose()
        await asyncio.to_thread(server.disconnected.wait, 30)
        assert server.disconnected.is_set()
        assert not server.finished.is_set()
