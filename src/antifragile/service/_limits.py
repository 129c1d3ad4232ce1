"""Inbound rate limits: per client IP on the service's routes, per sender in the pipeline.

::

    limits = InboundLimits(ip_rate=(300, 60), sender_rate=(20, 60))      # in this process
    limits = InboundLimits(..., store=store.rate_limits)                 # senders: shared
    app.state.limits = limits
    router = APIRouter(dependencies=[Depends(limit_by_ip)])              # 429 + Retry-After

    if not limits.allow_sender(tenant.id, event.sender):                 # the pipeline
        ...                                                              # drop, or reply later
    if not await limits.aallow_sender(tenant.id, event.sender):          # ... shared
        ...

Each limit is a token bucket per key: ``(n, per)`` allows bursts of *n* requests and refills at
``n / per`` a second. Buckets live in this process by default -- a dict lookup and a few float
operations per request, with a bound on how many keys are kept (buckets that have refilled are
dropped first). Given a :class:`~antifragile.stores.RateLimitStore`, the per-sender buckets are
shared by every process (one store round trip per message; the service's assistant gives its
shared-state store, so the per-sender limit is global); when the store fails, the check falls
back to the process's own buckets -- a store outage never turns into refused webhooks.

The per-IP limit stays in each process (so N API processes admit N times its rate from one
address) unless ``share_ip=True``: it guards the webhook path, where a store round trip per
request costs about a quarter of the throughput (``benchmarks/ingest.py``: roughly 1,000
instead of 1,300 requests a second on one SQLite process with Redis shared, 1 % for the local
check).

Keys never hold a sender's phone number or email: senders are hashed; IPs are hashed in the
store too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import Request

from antifragile.errors import ConfigurationError, ErrorCode, StoreError
from antifragile.observability._personal import current_lookup_hash
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.service._envelope import ApiError
from antifragile.service._settings import Rate, parse_rate
from antifragile.stores import RateLimitStore

_log = logging.getLogger("antifragile.service.limits")

RateSpec = Rate | tuple[float, float] | str


def as_rate(value: RateSpec) -> Rate:
    """A :class:`Rate` from a ``Rate``, ``(n, per_seconds)`` (n a whole number of requests)
    or text (``"100/60"``, ``"5/1m"``); ConfigurationError for nonsense (``"off"`` is for
    settings, not here)."""
    if isinstance(value, str):
        parsed = parse_rate(value)
        if parsed is None:
            raise ConfigurationError(f"{value!r} is not a rate: write N/SECONDS, e.g. 100/60")
        value = parsed
    count, per = value
    if not (count >= 1 and per > 0 and math.isfinite(count) and math.isfinite(per)):
        raise ConfigurationError(
            f"a rate is N requests per S seconds with N >= 1 and S > 0, got {count!r}/{per!r}"
        )
    return value if isinstance(value, Rate) else Rate(int(count), float(per))


def _digest(text: str) -> str:
    """The hash a shared bucket's key carries for an address or a sender (keyed with the
    current data key when one is configured: a phone number's is not guessable)."""
    return current_lookup_hash("limit", text)[:24]


class _Buckets:
    """Process-local token buckets by key (not thread-safe: one event loop uses them)."""

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: Rate, max_keys: int) -> None:
        self.rate = rate.limit / rate.period
        self.burst = float(rate.limit)
        self.max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}

    def take(self, key: str, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one is there (nothing taken)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return 0.0
        tokens = bucket[0] + (now - bucket[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            bucket[1] = now
            return 0.0
        return (1.0 - tokens) / self.rate

    def _evict(self, now: float) -> None:
        full = [
            key
            for key, (tokens, stamp) in self._buckets.items()
            if tokens + (now - stamp) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        excess = len(self._buckets) - self.max_keys // 2
        if excess > 0:  # still crowded: forget the oldest keys (they start full again)
            for key in list(self._buckets)[:excess]:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


class InboundLimits:
    """Token-bucket limits per client IP and per sender (see the module docs).

    *ip_rate* / *sender_rate*: a :class:`Rate`, ``(n, per_seconds)`` or ``"n/per"``; ``None``
    turns that limit off. *store*: share the per-sender buckets through it (and the per-IP
    ones too with *share_ip*; see the module docs). *max_keys*: local buckets kept per limit at
    most.
    """

    def __init__(
        self,
        *,
        ip_rate: RateSpec | None = (300, 60.0),
        sender_rate: RateSpec | None = (20, 60.0),
        clock: Clock = SYSTEM_CLOCK,
        store: RateLimitStore | None = None,
        share_ip: bool = False,
        max_keys: int = 100_000,
    ) -> None:
        if max_keys < 2:
            raise ConfigurationError("max_keys must be >= 2")
        self.ip_rate = None if ip_rate is None else as_rate(ip_rate)
        self.sender_rate = None if sender_rate is None else as_rate(sender_rate)
        self.clock = clock
        self.store = store
        self.share_ip = share_ip
        self._ip = None if self.ip_rate is None else _Buckets(self.ip_rate, max_keys)
        self._sender = None if self.sender_rate is None else _Buckets(self.sender_rate, max_keys)
        self._store_failing = False

    @classmethod
    def from_settings(
        cls, settings: Any, *, clock: Clock = SYSTEM_CLOCK, store: RateLimitStore | None = None
    ) -> InboundLimits:
        """Limits from the service settings' ``inbound_ip_rate`` / ``inbound_sender_rate``."""
        return cls(
            ip_rate=getattr(settings, "inbound_ip_rate", (300, 60.0)),
            sender_rate=getattr(settings, "inbound_sender_rate", (20, 60.0)),
            clock=clock,
            store=store,
        )

    async def _take(self, buckets: _Buckets, rate: Rate, key: str) -> float:
        if self.store is not None:
            try:
                grant = await self.store.take(
                    key,
                    tokens=1.0,
                    rate=rate.limit / rate.period,
                    burst=float(rate.limit),
                    max_wait=0.0,
                    now=self.clock.time(),
                )
            except StoreError as exc:
                if not self._store_failing:
                    _log.warning(
                        "inbound limits: the store failed (%s); limiting locally", exc.code
                    )
                self._store_failing = True
            else:
                if self._store_failing:
                    _log.info("inbound limits: the store answers again")
                    self._store_failing = False
                return 0.0 if grant.granted else max(grant.wait, 0.0)
        return buckets.take(key, self.clock.monotonic())

    async def check_ip(self, ip: str) -> float:
        """Take a token for a request from *ip*: 0.0 when allowed, else the seconds to wait."""
        if self._ip is None or self.ip_rate is None:
            return 0.0
        if self.store is None or not self.share_ip:  # the cheapest path: no I/O, no hashing
            return self._ip.take(ip, self.clock.monotonic())
        return await self._take(self._ip, self.ip_rate, f"inbound:ip:{_digest(ip)}")

    def _sender_key(self, tenant_id: str, sender: str) -> str:
        return f"inbound:sender:{tenant_id}:{_digest(sender)}"

    def allow_sender(self, tenant_id: str, sender: str) -> bool:
        """Whether a message from *sender* of *tenant_id* is within its limit (takes a token)
        -- by this process's buckets, with no I/O; :meth:`aallow_sender` shares them."""
        if self._sender is None:
            return True
        key = self._sender_key(tenant_id, sender)
        return self._sender.take(key, self.clock.monotonic()) == 0.0

    async def sender_wait(self, tenant_id: str, sender: str) -> float:
        """Take a token for a message from *sender* of *tenant_id* (through the store when one
        is given): 0.0 when allowed, else the seconds to wait."""
        if self._sender is None or self.sender_rate is None:
            return 0.0
        return await self._take(self._sender, self.sender_rate, self._sender_key(tenant_id, sender))

    async def aallow_sender(self, tenant_id: str, sender: str) -> bool:
        """:meth:`allow_sender` with the buckets shared through the store, when one is given."""
        return await self.sender_wait(tenant_id, sender) == 0.0

    def describe(self) -> Mapping[str, Any]:
        """The configured limits (for health and admin views)."""
        return {
            "ip": None if self.ip_rate is None else str(self.ip_rate),
            "sender": None if self.sender_rate is None else str(self.sender_rate),
            "shared": self.store is not None,  # the per-sender limit
            "ip_shared": self.store is not None and self.share_ip,
        }


def client_ip(request: Request) -> str:
    """The client's address as the server saw it (run uvicorn with ``--proxy-headers`` and
    ``--forwarded-allow-ips`` behind a proxy, so that this is the real client)."""
    client = request.client
    return client.host if client is not None else "unknown"


async def limit_by_ip(request: Request) -> None:
    """FastAPI dependency: refuse a request over its IP's limit (429 RATE_LIMITED with
    ``Retry-After``). Uses ``request.app.state.limits``; without one, nothing is limited."""
    limits: InboundLimits | None = getattr(request.app.state, "limits", None)
    if limits is None or getattr(request.state, "antifragile.ip_checked", False):
        return  # no limits, or the edge took this request's token already
    wait = await limits.check_ip(client_ip(request))
    if wait > 0.0:
        raise ApiError(
            429,
            ErrorCode.RATE_LIMITED,
            "too many requests from this address; retry later",
            retryable=True,
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
