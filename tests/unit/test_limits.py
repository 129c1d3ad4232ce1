"""Inbound rate limits: token buckets per IP and per sender, local or shared through a store."""

from __future__ import annotations

import httpx
import pytest
from fastapi import Depends, FastAPI

from antifragile import FakeClock
from antifragile.errors import ConfigurationError, StoreUnavailableError
from antifragile.service._envelope import RequestContextMiddleware, install_error_handlers, ok
from antifragile.service._limits import InboundLimits, as_rate, limit_by_ip
from antifragile.service._settings import Rate, Settings
from antifragile.stores import RateLimitStore, TokenGrant
from antifragile.stores._memory import MemoryStore

PHONE = "+447700900123"


class RecordingStore:
    """A RateLimitStore over the memory one that records keys and can fail."""

    def __init__(self) -> None:
        self.inner: RateLimitStore = MemoryStore().rate_limits
        self.keys: list[str] = []
        self.failing = False

    async def take(
        self, key: str, *, tokens: float, rate: float, burst: float, max_wait: float, now: float
    ) -> TokenGrant:
        self.keys.append(key)
        if self.failing:
            raise StoreUnavailableError("store down")
        return await self.inner.take(
            key, tokens=tokens, rate=rate, burst=burst, max_wait=max_wait, now=now
        )

    async def pause(
        self, key: str, *, seconds: float, rate: float, burst: float, now: float
    ) -> None:
        await self.inner.pause(key, seconds=seconds, rate=rate, burst=burst, now=now)

    async def refund(
        self, key: str, *, tokens: float, rate: float, burst: float, now: float
    ) -> None:
        await self.inner.refund(key, tokens=tokens, rate=rate, burst=burst, now=now)


async def test_ip_bucket_allows_a_burst_then_refills(clock: FakeClock) -> None:
    """(3, 60): three requests at once, the fourth waits 20 s; after 20 s one more passes."""
    limits = InboundLimits(ip_rate=(3, 60), sender_rate=None, clock=clock)
    assert [await limits.check_ip("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await limits.check_ip("10.0.0.1") == pytest.approx(20.0)
    assert await limits.check_ip("10.0.0.2") == 0.0  # another address has its own bucket
    clock.advance(20)
    assert await limits.check_ip("10.0.0.1") == 0.0
    assert await limits.check_ip("10.0.0.1") > 0


async def test_sender_limit_is_per_tenant_and_sender(clock: FakeClock) -> None:
    """allow_sender: two messages per minute per sender of a tenant; other tenants and
    senders are independent; aallow_sender without a store uses the same buckets."""
    limits = InboundLimits(ip_rate=None, sender_rate="2/1m", clock=clock)
    assert limits.allow_sender("acme", PHONE)
    assert await limits.aallow_sender("acme", PHONE)
    assert not limits.allow_sender("acme", PHONE)
    assert not await limits.aallow_sender("acme", PHONE)
    assert limits.allow_sender("other", PHONE)
    assert limits.allow_sender("acme", "+447700900999")
    clock.advance(30)
    assert limits.allow_sender("acme", PHONE)


async def test_limits_off_allow_everything(clock: FakeClock) -> None:
    """A rate of None turns that limit off."""
    limits = InboundLimits(ip_rate=None, sender_rate=None, clock=clock)
    for _ in range(1000):
        assert await limits.check_ip("1.2.3.4") == 0.0
        assert limits.allow_sender("t", PHONE)
        assert await limits.aallow_sender("t", PHONE)


async def test_shared_buckets_span_instances_and_hold_no_phone_numbers(
    clock: FakeClock,
) -> None:
    """With a store, two InboundLimits (two processes) share one bucket; store keys hash the
    sender and the IP."""
    store = RecordingStore()
    one = InboundLimits(sender_rate=(2, 60), store=store, share_ip=True, clock=clock)
    two = InboundLimits(sender_rate=(2, 60), store=store, share_ip=True, clock=clock)
    assert await one.aallow_sender("acme", PHONE)
    assert await two.aallow_sender("acme", PHONE)
    assert not await one.aallow_sender("acme", PHONE)
    assert await one.check_ip("203.0.113.9") == 0.0
    assert store.keys
    assert not any(PHONE in key or "447700900123" in key for key in store.keys)
    assert not any("203.0.113.9" in key for key in store.keys)


async def test_the_ip_limit_stays_local_unless_shared(clock: FakeClock) -> None:
    """With a store but no share_ip, the per-IP check never touches the store (the webhook
    path stays I/O-free) while the per-sender check goes through it."""
    store = RecordingStore()
    limits = InboundLimits(ip_rate=(1, 60), sender_rate=(1, 60), store=store, clock=clock)
    assert await limits.check_ip("10.0.0.1") == 0.0
    assert await limits.check_ip("10.0.0.1") > 0
    assert store.keys == []
    assert await limits.aallow_sender("acme", PHONE)
    assert [key.split(":")[1] for key in store.keys] == ["sender"]
    assert limits.describe()["shared"] is True
    assert limits.describe()["ip_shared"] is False


async def test_a_failing_store_falls_back_to_local_buckets(clock: FakeClock) -> None:
    """When the store fails, checks go on with the process's own buckets (never an error)."""
    store = RecordingStore()
    store.failing = True
    limits = InboundLimits(ip_rate=(2, 60), store=store, share_ip=True, clock=clock)
    assert await limits.check_ip("10.0.0.1") == 0.0
    assert await limits.check_ip("10.0.0.1") == 0.0
    assert await limits.check_ip("10.0.0.1") > 0
    store.failing = False
    assert await limits.check_ip("10.0.0.9") == 0.0


async def test_local_buckets_are_bounded(clock: FakeClock) -> None:
    """At most max_keys buckets are kept: refilled ones go first, then the oldest."""
    limits = InboundLimits(ip_rate=(5, 1), sender_rate=None, clock=clock, max_keys=100)
    for i in range(1000):
        await limits.check_ip(f"10.0.{i // 256}.{i % 256}")
    assert limits._ip is not None
    assert len(limits._ip) <= 100


def test_rates_parse_from_text_tuples_and_settings() -> None:
    """Rates come as "n/per" text (with s/m/h/d units), (n, per) tuples or the settings'
    Rate; nonsense is a ConfigurationError."""
    assert as_rate("100/60") == Rate(100, 60)
    assert as_rate("5/1m") == Rate(5, 60)
    assert as_rate((10, 2.5)) == Rate(10, 2.5)
    for bad in ("abc", "off", "0/60", "10/0", "-1/5"):
        with pytest.raises(ConfigurationError):
            as_rate(bad)
    with pytest.raises(ConfigurationError):
        as_rate((0, 60))
    settings = Settings.from_env({"ANTIFRAGILE_INBOUND_IP_RATE": "off"})
    limits = InboundLimits.from_settings(settings)
    assert limits.ip_rate is None
    assert limits.sender_rate == Rate(30, 60)


def _app(limits: InboundLimits) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    app.state.limits = limits

    @app.get("/v1/ping", dependencies=[Depends(limit_by_ip)])
    async def ping() -> object:
        return ok({"pong": True})

    return app


async def test_the_dependency_answers_429_with_retry_after(clock: FakeClock) -> None:
    """Over the limit, a route answers 429 RATE_LIMITED (retryable) with Retry-After in whole
    seconds; other addresses are unaffected."""
    app = _app(InboundLimits(ip_rate=(2, 10), clock=clock))
    first = httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=("198.51.100.1", 1000)), base_url="http://t"
    )
    second = httpx.AsyncClient(
        transport=httpx.ASGITransport(app, client=("198.51.100.2", 1000)), base_url="http://t"
    )
    async with first, second:
        assert (await first.get("/v1/ping")).status_code == 200
        assert (await first.get("/v1/ping")).status_code == 200
        refused = await first.get("/v1/ping")
        assert refused.status_code == 429
        body = refused.json()
        assert body["success"] is False
        assert body["error"]["code"] == "RATE_LIMITED"
        assert body["error"]["retryable"] is True
        assert refused.headers["retry-after"] == "5"
        assert (await second.get("/v1/ping")).status_code == 200
        clock.advance(5)
        assert (await first.get("/v1/ping")).status_code == 200


async def test_no_limits_configured_means_no_limit(clock: FakeClock) -> None:
    """Without app.state.limits the dependency lets everything through."""
    app = _app(InboundLimits(clock=clock))
    del app.state.limits
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client:
        for _ in range(5):
            assert (await client.get("/v1/ping")).status_code == 200
