"""When a provider's quota resets (daily at midnight in a time zone, monthly on the 1st), and
the pause of its sends until then, shared by the processes of a store (:class:`QuotaPause`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import time as dt_time

from antifragile.errors import RateLimitedError
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.stores import KeyValueStore

_log = logging.getLogger("antifragile.connectors")


def until_daily_reset(now: float, zone: tzinfo = UTC) -> float:
    """Seconds from *now* (epoch) to the next midnight in *zone* (at least 1)."""
    moment = datetime.fromtimestamp(now, tz=zone)
    midnight = datetime.combine(moment.date() + timedelta(days=1), dt_time(0), tzinfo=zone)
    return max(1.0, midnight.timestamp() - now)


def until_monthly_reset(now: float, zone: tzinfo = UTC) -> float:
    """Seconds from *now* (epoch) to the start of the next month in *zone* (at least 1)."""
    moment = datetime.fromtimestamp(now, tz=zone)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return max(1.0, datetime(year, month, 1, tzinfo=zone).timestamp() - now)


def paused_refusal(
    provider: str, operation: str, until: float | None, now: float, why: str
) -> RateLimitedError | None:
    """The refusal of a call while the provider's sends are paused until *until* (epoch;
    ``None`` or past: not paused): a local :class:`~antifragile.RateLimitedError` -- nothing
    was asked of the provider, so a job waiting here keeps its attempts."""
    if until is None or now >= until:
        return None
    return RateLimitedError(
        f"{provider}.{operation}: {why}; sends paused for {until - now:.0f} s",
        provider=provider,
        operation=operation,
        status=429,
        retry_after=until - now,
        replay_safe=True,
        local=True,
    )


#: the key-value key under which a provider's pause is shared (its value: the reset, epoch)
PAUSE_KEY_PREFIX = "quota-pause:"


class QuotaPause:
    """Until when a provider's sends are paused by a spent quota, shared through *kv* when
    there is one.

    :attr:`until` is this process's copy (epoch seconds, ``None``: not paused). :meth:`start`
    sets it when the provider answers that the quota is spent; :meth:`sync` -- awaited before
    and after each call -- writes a new pause to ``quota-pause:<provider>`` (the reset as value,
    expiring then) and reads that key at most once per *refresh* seconds, so a pause one process
    noticed stops the others without a request to the provider. Without *kv* the pause is
    local. A store that fails or takes longer than *store_timeout* never fails a call: the local
    pause goes on, a warning is logged once (until the store answers again) and the write is
    tried again at the next sync.
    """

    def __init__(
        self,
        provider: str,
        *,
        clock: Clock = SYSTEM_CLOCK,
        kv: KeyValueStore | None = None,
        refresh: float = 1.0,
        store_timeout: float = 1.0,
    ) -> None:
        self.provider = provider
        self.clock = clock
        self.kv = kv
        self.refresh = refresh
        self.store_timeout = store_timeout
        self.until: float | None = None
        self._unwritten: float | None = None
        self._read_at: float | None = None  # monotonic time of the last read of the store
        self._store_down = False

    @property
    def key(self) -> str:
        return PAUSE_KEY_PREFIX + self.provider

    def start(self, until: float) -> None:
        """Pause sends until *until* (epoch); an earlier end does not shorten a longer pause."""
        if self.until is None or until > self.until or self.until <= self.clock.time():
            self.until = until
            if self.kv is not None:
                self._unwritten = until

    async def sync(self) -> float | None:
        """Share a new pause and adopt the shared one (read at most once per *refresh*)."""
        if self.kv is None:
            return self.until
        kv = self.kv
        if self._unwritten is not None:
            until, now = self._unwritten, self.clock.time()
            if until <= now or await self._store(self._write(kv, until, now)):
                self._unwritten = None
        moment = self.clock.monotonic()
        if self._read_at is None or moment - self._read_at >= self.refresh:
            self._read_at = moment
            await self._store(self._read(kv))
        return self.until

    async def _write(self, kv: KeyValueStore, until: float, now: float) -> None:
        """Write *until* unless a later pause is already shared (compare-and-set)."""
        for _ in range(3):
            current = await kv.get(self.key, now=now)
            if current is not None and _epoch(current.value) >= until:
                return
            written = await kv.compare_and_set(
                self.key,
                until,
                expected_version=None if current is None else current.version,
                now=now,
                ttl=until - now,
            )
            if written is not None:
                return

    async def _read(self, kv: KeyValueStore) -> None:
        now = self.clock.time()
        shared = await kv.get(self.key, now=now)
        until = None if shared is None else _epoch(shared.value)
        if until is not None and until > now and (self.until is None or until > self.until):
            self.until = until

    async def _store(self, work: Awaitable[None]) -> bool:
        """Run *work* on the store; ``False`` (a warning logged once) when the store fails."""
        try:
            async with asyncio.timeout(self.store_timeout):
                await work
        except Exception as exc:  # any store failure (a timeout too): the local pause goes on
            if not self._store_down:
                self._store_down = True
                _log.warning(
                    "quota pause %r: store unavailable (%s); pausing this process only",
                    self.provider,
                    type(exc).__name__,
                )
            return False
        if self._store_down:
            self._store_down = False
            _log.warning("quota pause %r: store available again", self.provider)
        return True


def _epoch(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
