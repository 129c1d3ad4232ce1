"""Backoff for the dashboard's login form: per client address and per account.

::

    throttle = LoginThrottle(clock=clock, store=state_store.kv)
    wait = await throttle.wait(ip, account)    # > 0: refuse now (429 with Retry-After)
    await throttle.failed(ip, account)         # a wrong credential
    await throttle.succeeded(ip, account)      # forget the failures

Each address and each account (the id of a stored key, ``af_<id>_...``) may fail
:data:`FREE_FAILURES` times; every failure after that locks it for twice as long as the one
before (1 s, 2 s, 4 s, ... at most :data:`MAX_LOCKOUT`). Failures are forgotten
:data:`FORGET_AFTER` seconds after the last one. Times come from the injected clock.

**Shared.** With a *store* -- the service's shared-state store (Redis when configured, else the
job database), whose key-value part also holds the breakers' neighbours -- the failures are one
record per address and per account (``login:ip:<hash>``, ``login:account:<id>``), changed by
a compare-and-set on the record's version, so every API process counts the same failures and
honours the same lockout: N processes do not give a guesser N times the attempts. The
address is stored as a hash (an HMAC under the data key when one is configured). The records
expire :data:`FORGET_AFTER` seconds after the last failure. When the store fails, this
process counts on its own (logged once) until it answers again: an outage never locks
everyone out. Without a store the state lives in this process (bounded to ``max_keys``
entries), as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from antifragile.errors import StoreError
from antifragile.observability._personal import current_lookup_hash
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.stores import KeyValueStore

#: failures allowed before the backoff starts
FREE_FAILURES = 5
#: the longest lockout (seconds)
MAX_LOCKOUT = 900.0
#: failures are forgotten this long after the last one (seconds)
FORGET_AFTER = 3600.0
#: the key-value prefix of the shared records
PREFIX = "login:"
#: compare-and-set attempts before a failure is counted locally instead
_CAS_TRIES = 20

_log = logging.getLogger("antifragile.service.login")


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    until: float

    def to_json(self) -> dict[str, float]:
        return {"count": self.count, "last": self.last, "until": self.until}

    @classmethod
    def from_json(cls, value: Any) -> _Failures | None:
        if not isinstance(value, Mapping):
            return None
        try:
            return cls(int(value["count"]), float(value["last"]), float(value["until"]))
        except (KeyError, TypeError, ValueError):
            return None


def _after_failure(entry: _Failures | None, now: float) -> _Failures:
    """*entry* (``None``: no failure yet) after one more failure at *now*."""
    if entry is None or now - entry.last >= FORGET_AFTER:
        entry = _Failures(0, now, now)
    count = entry.count + 1
    over = count - FREE_FAILURES
    until = now + min(MAX_LOCKOUT, 2.0 ** (over - 1)) if over > 0 else entry.until
    return _Failures(count, now, until)


def account_of(credential: str) -> str | None:
    """The account a login names: the id of a stored key (``af_<id>_...``), else ``None``."""
    if not credential.startswith("af_"):
        return None
    key_id = credential[3:].partition("_")[0]
    return key_id[:64] if key_id.isalnum() else None


class LoginThrottle:
    """Login failures per address and per account, with exponential lockouts, shared through
    *store* when given (see the module docs)."""

    def __init__(
        self,
        *,
        clock: Clock = SYSTEM_CLOCK,
        max_keys: int = 10_000,
        store: KeyValueStore | None = None,
    ) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self.store = store
        self._seen: dict[str, _Failures] = {}
        self._store_failing = False

    @staticmethod
    def _keys(ip: str, account: str | None) -> list[str]:
        keys = [f"{PREFIX}ip:{current_lookup_hash('login', ip)[:24]}"]
        if account is not None:
            keys.append(f"{PREFIX}account:{account}")
        return keys

    def _failed_store(self, exc: StoreError) -> None:
        if not self._store_failing:
            _log.warning("login backoff: the store failed (%s); counting locally", exc.code)
            self._store_failing = True

    def _store_answers(self) -> None:
        if self._store_failing:
            _log.info("login backoff: the store answers again")
            self._store_failing = False

    async def wait(self, ip: str, account: str | None) -> float:
        """Seconds until a login from *ip* for *account* is heard again (0.0: now)."""
        now = self.clock.time()
        keys = self._keys(ip, account)
        entries = [self._seen.get(key) for key in keys]
        if self.store is not None:
            try:
                for key in keys:
                    found = await self.store.get(key, now=now)
                    entries.append(None if found is None else _Failures.from_json(found.value))
                self._store_answers()
            except StoreError as exc:
                self._failed_store(exc)
        return max([0.0, *(e.until - now for e in entries if e is not None)])

    async def failed(self, ip: str, account: str | None) -> None:
        """Count a wrong credential from *ip* for *account*."""
        now = self.clock.time()
        for key in self._keys(ip, account):
            if self.store is not None:
                try:
                    if await self._failed_shared(self.store, key, now):
                        self._store_answers()
                        continue
                except StoreError as exc:
                    self._failed_store(exc)
            self._failed_locally(key, now)

    async def _failed_shared(self, store: KeyValueStore, key: str, now: float) -> bool:
        """One more failure on the shared record *key*, by compare-and-set; whether it was
        written (``False`` after too many conflicts)."""
        for _ in range(_CAS_TRIES):
            found = await store.get(key, now=now)
            current = None if found is None else _Failures.from_json(found.value)
            entry = _after_failure(current, now)
            written = await store.compare_and_set(
                key,
                entry.to_json(),
                expected_version=None if found is None else found.version,
                now=now,
                ttl=FORGET_AFTER,
            )
            if written is not None:
                return True
        return False

    def _failed_locally(self, key: str, now: float) -> None:
        if len(self._seen) >= self.max_keys:
            self._forget(now)
        self._seen[key] = _after_failure(self._seen.get(key), now)

    async def succeeded(self, ip: str, account: str | None) -> None:
        """Forget the failures of *ip* and *account* (a correct credential)."""
        now = self.clock.time()
        for key in self._keys(ip, account):
            self._seen.pop(key, None)
            if self.store is not None:
                try:
                    await self.store.delete(key, now=now)
                    self._store_answers()
                except StoreError as exc:
                    self._failed_store(exc)

    def _forget(self, now: float) -> None:
        stale = [k for k, e in self._seen.items() if now - e.last >= FORGET_AFTER]
        for key in stale:
            del self._seen[key]
        if len(self._seen) >= self.max_keys:  # still full: drop the oldest half
            for key in sorted(self._seen, key=lambda k: self._seen[k].last)[: self.max_keys // 2]:
                del self._seen[key]
