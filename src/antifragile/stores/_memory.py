"""The in-process backend (``memory://``): for tests and for a single process.

Each operation is one synchronous section under a :class:`threading.Lock`, with no ``await``
inside, so it is atomic with respect to the event loop and to other threads. Values are stored
as JSON text and decoded on every read, exactly as the database backends do, so a test on memory
sees the same values (tuples read back as lists, no aliasing of mutable objects) as production.

Nothing is shared between two :class:`MemoryStore` objects, and nothing survives the process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from antifragile.errors import ConfigurationError
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.stores._codec import decode, encode
from antifragile.stores._common import (
    Bucket,
    breaker_matches,
    check_breaker_names,
    check_fields,
    check_outcome,
    check_window,
    merge_fields,
    pause_bucket,
    refund_bucket,
    take_tokens,
)
from antifragile.stores._protocols import (
    JSON,
    BreakerRecord,
    Claim,
    IdempotencyRecord,
    IdempotencyStatus,
    Lease,
    TokenGrant,
    Versioned,
    WindowTotals,
)


def _live(expires_at: float | None, now: float) -> bool:
    return expires_at is None or now < expires_at


@dataclass(slots=True)
class _Entry:
    text: str
    version: int
    expires_at: float | None

    def versioned(self, key: str) -> Versioned:
        return Versioned(key, decode(self.text), self.version, self.expires_at)


@dataclass(slots=True)
class _Idem:
    status: IdempotencyStatus
    owner: str | None
    fingerprint: str | None
    result: str | None
    created_at: float
    expires_at: float

    def record(self, key: str) -> IdempotencyRecord:
        return IdempotencyRecord(
            key,
            self.status,
            self.owner,
            self.fingerprint,
            decode(self.result),
            self.created_at,
            self.expires_at,
        )


@dataclass(slots=True)
class _LeaseRow:
    owner: str | None  # None once released; the row stays so tokens keep growing
    token: int
    expires_at: float


class MemoryKeyValueStore:
    """:class:`~antifragile.stores.KeyValueStore` in a dict."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._data: dict[str, _Entry] = {}

    def _live_entry(self, key: str, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is None or not _live(entry.expires_at, now):
            return None
        return entry

    def _write(
        self, key: str, text: str, current: _Entry | None, expires_at: float | None
    ) -> Versioned:
        version = 1 if current is None else current.version + 1
        entry = _Entry(text, version, expires_at)
        self._data[key] = entry
        return entry.versioned(key)

    async def get(self, key: str, *, now: float) -> Versioned | None:
        with self._lock:
            entry = self._live_entry(key, now)
            return None if entry is None else entry.versioned(key)

    async def set(
        self, key: str, value: JSON, *, now: float, ttl: float | None = None
    ) -> Versioned:
        text = encode(value)
        expires_at = None if ttl is None else now + ttl
        with self._lock:
            return self._write(key, text, self._live_entry(key, now), expires_at)

    async def compare_and_set(
        self,
        key: str,
        value: JSON,
        *,
        expected_version: int | None,
        now: float,
        ttl: float | None = None,
    ) -> Versioned | None:
        text = encode(value)
        expires_at = None if ttl is None else now + ttl
        with self._lock:
            current = self._live_entry(key, now)
            found = None if current is None else current.version
            if found != expected_version:
                return None
            return self._write(key, text, current, expires_at)

    async def merge(
        self, key: str, fields: dict[str, JSON], *, now: float, ttl: float | None = None
    ) -> Versioned:
        check_fields(fields)
        encode(fields)  # refuse before touching anything
        with self._lock:
            current = self._live_entry(key, now)
            if current is None:
                merged = merge_fields(key, fields, exists=False)
            else:
                merged = merge_fields(key, fields, exists=True, current=decode(current.text))
            if ttl is not None:
                expires_at: float | None = now + ttl
            else:
                expires_at = None if current is None else current.expires_at
            return self._write(key, encode(merged), current, expires_at)

    def swap(
        self,
        key: str,
        value: JSON,
        *,
        expected_version: int | None,
        now: float,
        ttl: float | None = None,
    ) -> tuple[Versioned, Callable[[], None]] | None:
        """:meth:`compare_and_set` at once (no ``await``), for a job queue that writes an entry
        and its jobs in one step; with the entry, a function that puts back what was there
        (should the rest of that step fail)."""
        text = encode(value)
        expires_at = None if ttl is None else now + ttl
        with self._lock:
            current = self._live_entry(key, now)
            found = None if current is None else current.version
            if found != expected_version:
                return None
            previous = self._data.get(key)
            saved = self._write(key, text, current, expires_at)

        def undo() -> None:
            with self._lock:
                if previous is None:
                    self._data.pop(key, None)
                else:
                    self._data[key] = previous

        return saved, undo

    def set_field(self, key: str, field: str, value: JSON, *, now: float) -> None:
        """Set one *field* of the JSON object at *key*, at once (no ``await``): what a job
        queue's status flag does in the same step as the job's state. The entry is created
        (without expiry) when absent or expired; a live one keeps its expiry and its version
        grows by one; a live entry that is not a JSON object is left alone."""
        with self._lock:
            current = self._live_entry(key, now)
            if current is None:
                self._write(key, encode({field: value}), None, None)
                return
            merged = decode(current.text)
            if isinstance(merged, dict):
                merged[field] = value
                self._write(key, encode(merged), current, current.expires_at)

    async def delete(self, key: str, *, expected_version: int | None = None, now: float) -> bool:
        with self._lock:
            current = self._live_entry(key, now)
            if current is None:
                return False
            if expected_version is not None and current.version != expected_version:
                return False
            del self._data[key]
            return True

    async def scan(self, prefix: str, *, now: float, limit: int = 100) -> list[Versioned]:
        with self._lock:
            keys = sorted(
                key
                for key, entry in self._data.items()
                if key.startswith(prefix) and _live(entry.expires_at, now)
            )
            return [self._data[key].versioned(key) for key in keys[: max(0, limit)]]


class MemoryIdempotencyStore:
    """:class:`~antifragile.stores.IdempotencyStore` in a dict."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._data: dict[str, _Idem] = {}

    async def claim(
        self,
        key: str,
        *,
        owner: str,
        now: float,
        ttl: float,
        fingerprint: str | None = None,
    ) -> Claim:
        with self._lock:
            row = self._data.get(key)
            if row is not None and now < row.expires_at:
                return Claim(False, row.record(key), fingerprint)
            row = _Idem(IdempotencyStatus.PROCESSING, owner, fingerprint, None, now, now + ttl)
            self._data[key] = row
            return Claim(True, row.record(key), fingerprint)

    async def complete(
        self,
        key: str,
        *,
        owner: str,
        status: IdempotencyStatus,
        result: JSON = None,
        now: float,
        ttl: float,
    ) -> bool:
        outcome = check_outcome(status)
        text = encode(result)
        with self._lock:
            row = self._data.get(key)
            if (
                row is None
                or not now < row.expires_at
                or row.owner != owner
                or row.status is not IdempotencyStatus.PROCESSING
            ):
                return False
            row.status, row.result, row.expires_at = outcome, text, now + ttl
            return True

    async def get(self, key: str, *, now: float) -> IdempotencyRecord | None:
        with self._lock:
            row = self._data.get(key)
            if row is None or not now < row.expires_at:
                return None
            return row.record(key)

    async def release(self, key: str, *, owner: str) -> bool:
        with self._lock:
            row = self._data.get(key)
            if row is None or row.owner != owner or row.status is not IdempotencyStatus.PROCESSING:
                return False
            del self._data[key]
            return True

    async def scan(self, prefix: str, *, now: float, limit: int = 100) -> list[IdempotencyRecord]:
        with self._lock:
            keys = sorted(
                k for k, row in self._data.items() if k.startswith(prefix) and now < row.expires_at
            )
            return [self._data[k].record(k) for k in keys[: max(0, limit)]]

    async def delete(self, key: str) -> bool:
        with self._lock:
            return self._data.pop(key, None) is not None


class MemoryLeaseStore:
    """:class:`~antifragile.stores.LeaseStore` in a dict."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._data: dict[str, _LeaseRow] = {}

    async def acquire(self, name: str, *, owner: str, now: float, ttl: float) -> Lease | None:
        with self._lock:
            row = self._data.get(name)
            if row is None:
                row = self._data[name] = _LeaseRow(owner, 1, now + ttl)
            elif row.owner is not None and now < row.expires_at:
                if row.owner != owner:
                    return None
                row.expires_at = now + ttl
            else:
                row.owner, row.token, row.expires_at = owner, row.token + 1, now + ttl
            return Lease(name, owner, row.token, row.expires_at)

    async def renew(self, name: str, *, owner: str, now: float, ttl: float) -> Lease | None:
        with self._lock:
            row = self._data.get(name)
            if row is None or row.owner != owner or not now < row.expires_at:
                return None
            row.expires_at = now + ttl
            return Lease(name, owner, row.token, row.expires_at)

    async def release(self, name: str, *, owner: str) -> bool:
        with self._lock:
            row = self._data.get(name)
            if row is None or row.owner != owner:
                return False
            row.owner = None
            return True

    async def holder(self, name: str, *, now: float) -> Lease | None:
        with self._lock:
            row = self._data.get(name)
            if row is None or row.owner is None or not now < row.expires_at:
                return None
            return Lease(name, row.owner, row.token, row.expires_at)


class MemoryRateLimitStore:
    """:class:`~antifragile.stores.RateLimitStore` in a dict."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._data: dict[str, Bucket] = {}

    async def take(
        self,
        key: str,
        *,
        tokens: float,
        rate: float,
        burst: float,
        max_wait: float,
        now: float,
    ) -> TokenGrant:
        with self._lock:
            grant, bucket = take_tokens(
                self._data.get(key), tokens=tokens, rate=rate, burst=burst, max_wait=max_wait,
                now=now,
            )  # fmt: skip
            if bucket is not None:
                self._data[key] = bucket
            return grant

    async def refund(
        self, key: str, *, tokens: float, rate: float, burst: float, now: float
    ) -> None:
        with self._lock:
            bucket = refund_bucket(
                self._data.get(key), tokens=tokens, rate=rate, burst=burst, now=now
            )
            if bucket is not None:
                self._data[key] = bucket

    async def pause(
        self, key: str, *, seconds: float, rate: float, burst: float, now: float
    ) -> None:
        with self._lock:
            bucket = pause_bucket(
                self._data.get(key), seconds=seconds, rate=rate, burst=burst, now=now
            )
            if bucket is not None:
                self._data[key] = bucket


class MemoryBreakerStore:
    """:class:`~antifragile.stores.BreakerStore` in dicts."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._records: dict[str, BreakerRecord] = {}
        self._windows: dict[str, dict[int, tuple[int, int, int]]] = {}
        self._probes: dict[str, tuple[int, int, int, int]] = {}  # generation, counts

    async def load(self, name: str) -> BreakerRecord:
        with self._lock:
            return self._records.get(name) or BreakerRecord(name)

    async def compare_and_set(self, expected: BreakerRecord, new: BreakerRecord) -> BreakerRecord:
        check_breaker_names(expected, new)
        with self._lock:
            current = self._records.get(expected.name) or BreakerRecord(expected.name)
            if not breaker_matches(current, expected):
                return current
            self._records[new.name] = new
            return new

    async def add_outcomes(
        self,
        name: str,
        *,
        second: int,
        calls: int,
        failures: int,
        slow: int,
        window: int,
    ) -> WindowTotals:
        check_window(window)
        with self._lock:
            buckets = self._windows.setdefault(name, {})
            if calls or failures or slow:
                c, f, s = buckets.get(second, (0, 0, 0))
                buckets[second] = (c + calls, f + failures, s + slow)
            oldest = second - window
            for stale in [b for b in buckets if b <= oldest]:
                del buckets[stale]
            totals = [0, 0, 0]
            for at, counts in buckets.items():
                if at <= second:
                    for i in range(3):
                        totals[i] += counts[i]
            return WindowTotals(*totals)

    async def reset_window(self, name: str) -> None:
        with self._lock:
            self._windows.pop(name, None)

    async def add_probe_result(
        self, name: str, *, generation: int, failure: bool, slow: bool
    ) -> WindowTotals:
        with self._lock:
            counted, calls, failures, slow_calls = self._probes.get(name, (generation, 0, 0, 0))
            if counted != generation:
                calls = failures = slow_calls = 0
            totals = (calls + 1, failures + bool(failure), slow_calls + bool(slow))
            self._probes[name] = (generation, *totals)
            return WindowTotals(*totals)


class MemoryStore:
    """The in-process backend (``memory://``); see the module docs."""

    def __init__(
        self, url: str = "memory://", *, clock: Clock = SYSTEM_CLOCK, **options: Any
    ) -> None:
        if options:
            raise ConfigurationError(
                f"memory:// takes no options, got {', '.join(sorted(options))}"
            )
        self.url = url
        self._clock = clock
        lock = threading.Lock()
        self.kv = MemoryKeyValueStore(lock)
        self.idempotency = MemoryIdempotencyStore(lock)
        self.leases = MemoryLeaseStore(lock)
        self.rate_limits = MemoryRateLimitStore(lock)
        self.breakers = MemoryBreakerStore(lock)

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release; the data stays readable until the object is dropped."""

    async def ping(self) -> float:
        return 0.0

    def __repr__(self) -> str:
        return f"MemoryStore({self.url!r})"
