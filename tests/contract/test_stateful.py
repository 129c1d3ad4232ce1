"""Contract, by model: random sequences of KV, idempotency and lease operations with time passing
agree, step by step, with a plain-Python model of the rules the protocols document.

Each Hypothesis example uses its own key namespace in one open store, so examples stay
independent without reopening (and re-migrating) a database for each.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from antifragile import ConfigurationError
from antifragile.stores import (
    IdempotencyRecord,
    IdempotencyStatus,
    Lease,
    Store,
    Versioned,
    open_store,
)
from tests.conftest import POSTGRES_URL, REDIS_URL, require_service

T = TypeVar("T")

START = 1_700_000_000.0
KEYS = st.sampled_from(["a", "ab", "b"])
PREFIXES = st.sampled_from(["", "a", "b", "ab", "c"])
OWNERS = st.sampled_from(["w1", "w2"])
KV_TTLS = st.sampled_from([None, 1.0, 2.5, 10.0])
TTLS = st.sampled_from([1.0, 2.5, 10.0])
VALUES = st.one_of(
    st.integers(-3, 3),
    st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(0, 3), max_size=2),
)
FIELDS = st.dictionaries(st.sampled_from(["x", "y", "z"]), st.integers(0, 3), max_size=2)


def _live(expires_at: float | None, now: float) -> bool:
    return expires_at is None or now < expires_at


@dataclass
class _Entry:
    value: Any
    version: int
    expires_at: float | None


@dataclass
class _Held:
    owner: str | None
    token: int
    expires_at: float


class StoreModel(RuleBasedStateMachine):
    """The store under test against dicts that follow the documented rules."""

    store: Store
    loop: asyncio.AbstractEventLoop
    namespaces = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.ns = f"m{next(self.namespaces)}:"
        self.now = START
        self.kv: dict[str, _Entry] = {}
        self.idem: dict[str, IdempotencyRecord] = {}
        self.leases: dict[str, _Held] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def live_entry(self, key: str) -> _Entry | None:
        entry = self.kv.get(key)
        return entry if entry is not None and _live(entry.expires_at, self.now) else None

    def versioned(self, key: str, entry: _Entry) -> Versioned:
        return Versioned(self.ns + key, entry.value, entry.version, entry.expires_at)

    def write(self, key: str, value: Any, expires_at: float | None) -> _Entry:
        current = self.live_entry(key)
        entry = _Entry(value, 1 if current is None else current.version + 1, expires_at)
        self.kv[key] = entry
        return entry

    @invariant()
    def everything_visible_agrees(self) -> None:
        """After every step, every live key, record and lease reads as the model says."""
        entries = self.run(self.store.kv.scan(self.ns, now=self.now, limit=1000))
        assert entries == [
            self.versioned(key, entry)
            for key, entry in sorted(self.kv.items())
            if _live(entry.expires_at, self.now)
        ]
        for key in ("a", "ab", "b"):
            record = self.run(self.store.idempotency.get(self.ns + key, now=self.now))
            assert record == self.live_record(key)
            lease = self.run(self.store.leases.holder(self.ns + key, now=self.now))
            assert lease == self.lease(key)

    # -- time ---------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.5, 10.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    # -- key-value ----------------------------------------------------------------------------

    @rule(key=KEYS, value=VALUES, ttl=KV_TTLS)
    def kv_set(self, key: str, value: Any, ttl: float | None) -> None:
        got = self.run(self.store.kv.set(self.ns + key, value, now=self.now, ttl=ttl))
        entry = self.write(key, value, None if ttl is None else self.now + ttl)
        assert got == self.versioned(key, entry)

    @rule(
        key=KEYS,
        value=VALUES,
        ttl=KV_TTLS,
        expect=st.sampled_from(["current", "absent", "stale"]),
    )
    def kv_compare_and_set(self, key: str, value: Any, ttl: float | None, expect: str) -> None:
        current = self.live_entry(key)
        if expect == "current":
            expected: int | None = None if current is None else current.version
        elif expect == "absent":
            expected = None
        else:
            expected = 1 if current is None else current.version + 1
        got = self.run(
            self.store.kv.compare_and_set(
                self.ns + key, value, expected_version=expected, now=self.now, ttl=ttl
            )
        )
        if (None if current is None else current.version) != expected:
            assert got is None
            return
        entry = self.write(key, value, None if ttl is None else self.now + ttl)
        assert got == self.versioned(key, entry)

    @rule(key=KEYS, fields=FIELDS, ttl=KV_TTLS)
    def kv_merge(self, key: str, fields: dict[str, Any], ttl: float | None) -> None:
        current = self.live_entry(key)
        call = self.store.kv.merge(self.ns + key, fields, now=self.now, ttl=ttl)
        if current is not None and not isinstance(current.value, dict):
            with pytest.raises(ConfigurationError):
                self.run(call)
            return
        got = self.run(call)
        merged = {**(current.value if current is not None else {}), **fields}
        if ttl is not None:
            expires_at: float | None = self.now + ttl
        else:
            expires_at = None if current is None else current.expires_at
        entry = self.write(key, merged, expires_at)
        assert got == self.versioned(key, entry)

    @rule(key=KEYS, expect=st.sampled_from(["any", "current", "stale"]))
    def kv_delete(self, key: str, expect: str) -> None:
        current = self.live_entry(key)
        expected: int | None = None
        if expect == "current" and current is not None:
            expected = current.version
        elif expect == "stale":
            expected = 1 if current is None else current.version + 1
        got = self.run(self.store.kv.delete(self.ns + key, expected_version=expected, now=self.now))
        deletes = current is not None and expected in (None, current.version)
        assert got is deletes
        if deletes:
            del self.kv[key]

    @rule(key=KEYS)
    def kv_get(self, key: str) -> None:
        current = self.live_entry(key)
        got = self.run(self.store.kv.get(self.ns + key, now=self.now))
        assert got == (None if current is None else self.versioned(key, current))

    @rule(prefix=PREFIXES, limit=st.sampled_from([1, 2, 100]))
    def kv_scan(self, prefix: str, limit: int) -> None:
        got = self.run(self.store.kv.scan(self.ns + prefix, now=self.now, limit=limit))
        expected = [
            self.versioned(key, entry)
            for key, entry in sorted(self.kv.items())
            if key.startswith(prefix) and _live(entry.expires_at, self.now)
        ][:limit]
        assert got == expected

    # -- idempotency --------------------------------------------------------------------------

    def live_record(self, key: str) -> IdempotencyRecord | None:
        record = self.idem.get(key)
        return record if record is not None and self.now < record.expires_at else None

    @rule(key=KEYS, owner=OWNERS, ttl=TTLS, fingerprint=st.sampled_from([None, "f1", "f2"]))
    def idem_claim(self, key: str, owner: str, ttl: float, fingerprint: str | None) -> None:
        got = self.run(
            self.store.idempotency.claim(
                self.ns + key, owner=owner, now=self.now, ttl=ttl, fingerprint=fingerprint
            )
        )
        current = self.live_record(key)
        assert got.fingerprint == fingerprint
        if current is not None:
            assert not got.acquired
            assert got.record == current
            return
        record = IdempotencyRecord(
            self.ns + key,
            IdempotencyStatus.PROCESSING,
            owner,
            fingerprint,
            None,
            self.now,
            self.now + ttl,
        )
        self.idem[key] = record
        assert got.acquired
        assert got.record == record

    @rule(
        key=KEYS,
        owner=OWNERS,
        status=st.sampled_from([IdempotencyStatus.SUCCEEDED, IdempotencyStatus.FAILED]),
        result=VALUES,
        ttl=TTLS,
    )
    def idem_complete(
        self, key: str, owner: str, status: IdempotencyStatus, result: Any, ttl: float
    ) -> None:
        got = self.run(
            self.store.idempotency.complete(
                self.ns + key, owner=owner, status=status, result=result, now=self.now, ttl=ttl
            )
        )
        current = self.live_record(key)
        held = (
            current is not None
            and current.owner == owner
            and current.status is IdempotencyStatus.PROCESSING
        )
        assert got is held
        if held:
            assert current is not None
            self.idem[key] = IdempotencyRecord(
                current.key,
                status,
                owner,
                current.fingerprint,
                result,
                current.created_at,
                self.now + ttl,
            )

    @rule(key=KEYS, owner=OWNERS)
    def idem_release(self, key: str, owner: str) -> None:
        got = self.run(self.store.idempotency.release(self.ns + key, owner=owner))
        record = self.idem.get(key)
        drops = (
            record is not None
            and record.owner == owner
            and record.status is IdempotencyStatus.PROCESSING
        )
        if self.live_record(key) is None:
            # an expired record may have been collected already: either answer is right
            self.idem.pop(key, None)
            return
        assert got is drops
        if drops:
            del self.idem[key]

    @rule(key=KEYS)
    def idem_get(self, key: str) -> None:
        got = self.run(self.store.idempotency.get(self.ns + key, now=self.now))
        assert got == self.live_record(key)

    # -- leases -------------------------------------------------------------------------------

    def lease(self, name: str) -> Lease | None:
        held = self.leases.get(name)
        if held is None or held.owner is None or not self.now < held.expires_at:
            return None
        return Lease(self.ns + name, held.owner, held.token, held.expires_at)

    @rule(name=KEYS, owner=OWNERS, ttl=TTLS)
    def lease_acquire(self, name: str, owner: str, ttl: float) -> None:
        got = self.run(
            self.store.leases.acquire(self.ns + name, owner=owner, now=self.now, ttl=ttl)
        )
        current = self.lease(name)
        if current is not None and current.owner != owner:
            assert got is None
            return
        held = self.leases.get(name)
        if held is None:
            self.leases[name] = _Held(owner, 1, self.now + ttl)
        elif current is not None:
            held.expires_at = self.now + ttl
        else:
            self.leases[name] = _Held(owner, held.token + 1, self.now + ttl)
        assert got == self.lease(name)

    @rule(name=KEYS, owner=OWNERS, ttl=TTLS)
    def lease_renew(self, name: str, owner: str, ttl: float) -> None:
        got = self.run(self.store.leases.renew(self.ns + name, owner=owner, now=self.now, ttl=ttl))
        current = self.lease(name)
        if current is None or current.owner != owner:
            assert got is None
            return
        self.leases[name].expires_at = self.now + ttl
        assert got == self.lease(name)

    @rule(name=KEYS, owner=OWNERS)
    def lease_release(self, name: str, owner: str) -> None:
        got = self.run(self.store.leases.release(self.ns + name, owner=owner))
        held = self.leases.get(name)
        frees = held is not None and held.owner == owner
        if self.lease(name) is not None:  # for an expired lease either answer is right
            assert got is frees
        if held is not None and frees:
            held.owner = None

    @rule(name=KEYS)
    def lease_holder(self, name: str) -> None:
        got = self.run(self.store.leases.holder(self.ns + name, now=self.now))
        assert got == self.lease(name)


@pytest.mark.parametrize("backend", ["memory", "sqlite", "postgres", "redis"])
def test_store_agrees_with_the_model(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any sequence of KV, idempotency and lease operations, with the clock advancing between
    them, gives exactly the results of the documented rules (SQLite also collecting expired
    rows every few writes, which must change nothing visible)."""
    url: str = "memory://"
    options: dict[str, Any] = {}
    isolation = f"model{uuid.uuid4().hex[:10]}"
    if backend == "postgres":
        require_service("postgres", POSTGRES_URL)
        url, options = POSTGRES_URL, {"schema": isolation, "drop_schema_on_close": True}
    if backend == "redis":
        require_service("redis", REDIS_URL)
        url, options = REDIS_URL, {"prefix": f"{isolation}:", "flush_prefix_on_close": True}
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'model.db'}?synchronous=normal"
        from antifragile.stores import _sqlite

        monkeypatch.setattr(_sqlite, "PURGE_EVERY", 5)
        monkeypatch.setattr(_sqlite, "PURGE_GRACE", 0.0)
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(open_store(url, **options))

    class Machine(StoreModel):
        pass

    Machine.store = store
    Machine.loop = loop
    try:
        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples={"memory": 60, "sqlite": 30}.get(backend, 20),
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        loop.run_until_complete(store.close())
        loop.close()
