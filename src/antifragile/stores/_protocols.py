"""The atomic operations every state backend provides, one small protocol per kind of state.

Each operation is atomic *in the store* -- one SQL statement or transaction, one Lua script --
never a Python lock around a read-modify-write, so any number of processes may share a store.

Time is passed in, never read from the database server: every operation that depends on time
takes ``now`` (wall-clock epoch seconds from the caller's :class:`~antifragile.Clock`), so that
memory, SQLite, PostgreSQL and Redis agree, and tests drive expiry with a fake clock. Redis keys
also get a native expiry a little beyond their logical one, only to collect garbage.

Values are JSON-compatible Python objects (``dict``, ``list``, ``str``, numbers, booleans,
``None``); a value that cannot be encoded (including NaN and infinities) is refused with a
ConfigurationError before anything is written. Values come back as JSON decodes them: a tuple is
read back as a list, non-string dict keys as strings -- the same on every backend.

Expiry is the same everywhere: a record with ``expires_at`` is live while ``now < expires_at``;
from ``now >= expires_at`` on it is expired and behaves exactly as if it were absent. ``ttl`` is
seconds from ``now``, so ``expires_at == now + ttl``.

The contract suite in ``tests/contract`` pins every rule below and runs on every backend.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

JSON = Any  # JSON-compatible value


# -- key-value with TTL and compare-and-set ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Versioned:
    """A stored value with its version and expiry.

    The version is 1 when the key is created -- or created again after it expired or was
    deleted -- and grows by exactly 1 with every write (set, compare-and-set, merge).
    ``expires_at`` is ``None`` for a key that never expires.
    """

    key: str
    value: JSON
    version: int
    expires_at: float | None = None


@runtime_checkable
class KeyValueStore(Protocol):
    """Session state, status flags, feature flags."""

    async def get(self, key: str, *, now: float) -> Versioned | None:
        """The live value of *key* (``None`` when absent or expired)."""
        ...

    async def set(
        self, key: str, value: JSON, *, now: float, ttl: float | None = None
    ) -> Versioned:
        """Write *value* unconditionally; returns the new version.

        *ttl* ``None`` means the key never expires (an earlier expiry is dropped)."""
        ...

    async def compare_and_set(
        self,
        key: str,
        value: JSON,
        *,
        expected_version: int | None,
        now: float,
        ttl: float | None = None,
    ) -> Versioned | None:
        """Write only if the live version is *expected_version* (``None``: only if absent or
        expired). Returns the new version, or ``None`` when the condition failed (then nothing
        was written). An expired key has no version: expecting its old one fails. *ttl* works
        as for :meth:`set`."""
        ...

    async def merge(
        self, key: str, fields: dict[str, JSON], *, now: float, ttl: float | None = None
    ) -> Versioned:
        """Shallow-merge *fields* into the dict stored at *key* (created if absent), atomically.

        The way to update status flags (``email_status``, ``nudge_sent``...) without losing a
        concurrent update of another flag. Top-level fields of *fields* replace the stored ones
        wholesale (nested dicts are not merged). *ttl* ``None`` keeps the current expiry (none
        for a key being created). A live value that is not a dict is refused with a
        ConfigurationError and left as it was; an expired one is ignored (created afresh)."""
        ...

    async def delete(self, key: str, *, expected_version: int | None = None, now: float) -> bool:
        """Delete *key* (only at *expected_version* when given); whether a live entry was
        deleted (``False`` for an absent or expired key)."""
        ...

    async def scan(self, prefix: str, *, now: float, limit: int = 100) -> list[Versioned]:
        """Live entries whose key starts with *prefix*, in key order (Unicode code points),
        at most *limit* of them. The prefix is literal: no character in it is a wildcard."""
        ...


# -- idempotency / dedup records --------------------------------------------------------------


class IdempotencyStatus(enum.StrEnum):
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    key: str
    status: IdempotencyStatus
    owner: str | None
    fingerprint: str | None
    result: JSON
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of :meth:`IdempotencyStore.claim`.

    ``acquired`` is true for the caller that now owns the key (a new key, or an expired one).
    Otherwise ``record`` is the first caller's record: still processing, or its stored outcome.
    ``fingerprint`` is the claimant's own; :attr:`fingerprint_mismatch` flags a key reused for a
    different request.
    """

    acquired: bool
    record: IdempotencyRecord
    fingerprint: str | None = None

    @property
    def fingerprint_mismatch(self) -> bool:
        return (
            not self.acquired
            and self.fingerprint is not None
            and self.record.fingerprint is not None
            and self.fingerprint != self.record.fingerprint
        )


@runtime_checkable
class IdempotencyStore(Protocol):
    """Claim-if-absent records with TTL, status and stored result (inbound dedup, effects)."""

    async def claim(
        self,
        key: str,
        *,
        owner: str,
        now: float,
        ttl: float,
        fingerprint: str | None = None,
    ) -> Claim:
        """Claim *key* for *owner* if it is absent or expired (status becomes processing,
        ``created_at == now``, ``expires_at == now + ttl``, result ``None``).

        A live record is never claimed again -- not even by its own owner -- so a duplicate
        delivery is recognised whoever handles it; the claim then carries that record."""
        ...

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
        """Store the outcome of a claim still held by *owner*; ``False`` if it is not held.

        Held means: live, still processing, and owned by *owner*; so completing twice, after
        the claim expired, or after someone else claimed the key, returns ``False`` and changes
        nothing. *status* is succeeded or failed (processing is a ConfigurationError). The
        record keeps ``created_at`` and ``owner``; ``expires_at`` becomes ``now + ttl`` -- how
        long the outcome is kept to answer duplicates."""
        ...

    async def get(self, key: str, *, now: float) -> IdempotencyRecord | None:
        """The live record of *key*, or ``None``."""
        ...

    async def release(self, key: str, *, owner: str) -> bool:
        """Drop a claim held by *owner* (so the work may be tried again at once).

        Only a processing record owned by *owner* is dropped; a completed outcome stays until
        it expires. Whether something was dropped -- for a claim that has already expired the
        answer may be either, as a backend may have collected the record meanwhile."""
        ...

    async def scan(self, prefix: str, *, now: float, limit: int = 100) -> list[IdempotencyRecord]:
        """Live records whose key starts with *prefix* (``""``: all), in key order, at most
        *limit* (erasure reads them to find the ones about a person)."""
        ...

    async def delete(self, key: str) -> bool:
        """Drop the record of *key*, whatever its state; whether there was one."""
        ...


# -- leases / locks ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lease:
    """A held lease. ``token`` is a fencing token: 1 for the first acquisition of a name, larger
    for every new acquisition after that (after an expiry or a release too), so a holder whose
    lease expired can be recognised by the resource it writes to."""

    name: str
    owner: str
    token: int
    expires_at: float


@runtime_checkable
class LeaseStore(Protocol):
    """Scheduler singletons, worker leases."""

    async def acquire(self, name: str, *, owner: str, now: float, ttl: float) -> Lease | None:
        """Take *name* if free, expired, or already held by *owner* (then it is extended and
        keeps its token). ``None`` when someone else holds it.

        ``expires_at`` becomes ``now + ttl``. Taking a name that is free or expired is a new
        acquisition, with a larger token -- also for the owner whose lease just expired."""
        ...

    async def renew(self, name: str, *, owner: str, now: float, ttl: float) -> Lease | None:
        """Extend a lease *owner* still holds to ``now + ttl``; ``None`` if it was lost
        (expired -- even when nobody took it since --, released, or held by another)."""
        ...

    async def release(self, name: str, *, owner: str) -> bool:
        """Free *name* if *owner* holds it; whether it did. The token is not reused. For a
        lease that has already expired the answer may be either."""
        ...

    async def holder(self, name: str, *, now: float) -> Lease | None:
        """The live lease on *name*, or ``None``."""
        ...


# -- rate-limit buckets -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """``granted``: the tokens are reserved and may be used after ``wait`` seconds. Otherwise
    nothing was taken and ``wait`` is how long until they could be."""

    granted: bool
    wait: float


@runtime_checkable
class RateLimitStore(Protocol):
    """Token buckets shared by processes (same reservation semantics as TokenBucket).

    A bucket is two numbers, ``tokens`` at time ``stamp``; its level at ``now`` is
    ``min(burst, tokens + (now - stamp) * rate)``, which may be negative while reservations are
    outstanding, and is below 1 until a pause ends. ``rate`` must be > 0 (ConfigurationError).
    """

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
        """Reserve *tokens* from the bucket *key* (created full with *burst* tokens).

        With ``level`` as above: when ``level >= tokens`` the grant has ``wait == 0``;
        otherwise ``wait = (tokens - level) / rate``, and it is granted only when
        ``wait <= max_wait``. A grant stores ``level - tokens`` at ``now``; a refusal changes
        nothing. So a full bucket hands out *burst* tokens at once, and then concurrent callers
        get waits spaced exactly ``tokens / rate`` apart."""
        ...

    async def refund(
        self, key: str, *, tokens: float, rate: float, burst: float, now: float
    ) -> None:
        """Give back *tokens* of a grant that was not used (its caller stopped waiting).

        At ``at = max(now, stamp)`` -- a pause under way keeps its end -- it stores
        ``min(burst, level at at + tokens)``, in one atomic step, so the next caller's wait is
        what it would have been had the grant never been made. A missing bucket is full and
        stays as it is; ``tokens <= 0`` does nothing."""
        ...

    async def pause(
        self, key: str, *, seconds: float, rate: float, burst: float, now: float
    ) -> None:
        """Hand out no token for *seconds* (a provider's Retry-After).

        At ``until = now + seconds`` the bucket holds at most one token, then refills at
        *rate*: it stores ``min(1, level at until)`` at ``until``. Pauses do not add up, and a
        shorter pause does not cut a longer one short. ``seconds <= 0`` does nothing."""
        ...


# -- circuit breaker state --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """The shared part of a breaker's state (see :class:`~antifragile.policies.BreakerSnapshot`).

    ``writer`` is an opaque id the writer puts in each record it proposes: two processes may
    propose equal transitions, and only the writer id tells the winner of a compare-and-set
    from a loser that reads back an identical record. It is stored, never compared.
    """

    name: str
    state: str = "closed"
    generation: int = 0
    open_until: float = 0.0
    consecutive_opens: int = 0
    probes_left: int = 0
    writer: str = ""


@dataclass(frozen=True, slots=True)
class WindowTotals:
    calls: int
    failures: int
    slow: int


@runtime_checkable
class BreakerStore(Protocol):
    """Breaker state and its shared time window of outcomes."""

    async def load(self, name: str) -> BreakerRecord:
        """The current record (a closed, generation-0 record when none is stored)."""
        ...

    async def compare_and_set(self, expected: BreakerRecord, new: BreakerRecord) -> BreakerRecord:
        """Replace the record if it still equals *expected* in ``state``, ``generation`` and
        ``probes_left``; returns the record current afterwards (``new``, with its ``writer``,
        when it won).

        A name with no stored record compares as the closed generation-0 record of
        :meth:`load`. ``new.name`` must be ``expected.name`` (ConfigurationError)."""
        ...

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
        """Add counts to the one-second bucket *second* (epoch seconds) and return the totals
        of the buckets in ``(second - window, second]``. Older buckets may be dropped.

        All counts zero only reads the totals. *window* is at least 1 (ConfigurationError)."""
        ...

    async def reset_window(self, name: str) -> None:
        """Forget the outcomes (on close after a probe, or on reset)."""
        ...

    async def add_probe_result(
        self, name: str, *, generation: int, failure: bool, slow: bool
    ) -> WindowTotals:
        """Count one result of the half-open round *generation* (the record's generation
        while it probes) and return the round's totals so far, atomically: of N results
        reported concurrently, exactly one sees ``calls == N``.

        Rounds are counted apart from the window and from each other; counts of earlier
        rounds may be dropped. They are kept at least as long as the breaker record."""
        ...


# -- the store -------------------------------------------------------------------------------


@runtime_checkable
class Store(Protocol):
    """A backend: one object per kind of state, plus lifecycle.

    The parts are read-only properties, so a backend may hold them as plain attributes of its
    own classes (``self.kv = SQLiteKeyValueStore(...)``) and still type-check as a Store.
    """

    @property
    def url(self) -> str: ...

    @property
    def kv(self) -> KeyValueStore: ...

    @property
    def idempotency(self) -> IdempotencyStore: ...

    @property
    def leases(self) -> LeaseStore: ...

    @property
    def rate_limits(self) -> RateLimitStore: ...

    @property
    def breakers(self) -> BreakerStore: ...

    async def open(self) -> None:
        """Connect and (for SQLite by default) migrate; raises StoreUnavailableError."""
        ...

    async def close(self) -> None:
        """Release connections and threads; calling it again does nothing."""
        ...

    async def ping(self) -> float:
        """Round-trip time in seconds; raises StoreUnavailableError."""
        ...
