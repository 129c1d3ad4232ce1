"""Backoff for the dashboard's login form: per client address and per account.

::

    throttle = LoginThrottle(clock=clock)
    wait = throttle.wait(ip, account)        # > 0: refuse now (429 with Retry-After)
    throttle.failed(ip, account)             # a wrong credential
    throttle.succeeded(ip, account)          # forget the failures

Each address and each account (the id of a stored key, ``af_<id>_...``) may fail
:data:`FREE_FAILURES` times; every failure after that locks it for twice as long as the one
before (1 s, 2 s, 4 s, ... at most :data:`MAX_LOCKOUT`). Failures are forgotten
:data:`FORGET_AFTER` seconds after the last one. The state lives in this process (bounded to
``max_keys`` entries per kind), on the injected clock; the per-IP rate limit still bounds every
request across processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from antifragile.policies import SYSTEM_CLOCK, Clock

#: failures allowed before the backoff starts
FREE_FAILURES = 5
#: the longest lockout (seconds)
MAX_LOCKOUT = 900.0
#: failures are forgotten this long after the last one (seconds)
FORGET_AFTER = 3600.0


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    until: float


def account_of(credential: str) -> str | None:
    """The account a login names: the id of a stored key (``af_<id>_...``), else ``None``."""
    if not credential.startswith("af_"):
        return None
    key_id = credential[3:].partition("_")[0]
    return key_id[:64] if key_id.isalnum() else None


class LoginThrottle:
    """Login failures per address and per account, with exponential lockouts (see the module
    docs)."""

    def __init__(self, *, clock: Clock = SYSTEM_CLOCK, max_keys: int = 10_000) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._seen: dict[str, _Failures] = {}

    @staticmethod
    def _keys(ip: str, account: str | None) -> list[str]:
        keys = ["ip:" + hashlib.sha256(ip.encode()).hexdigest()[:24]]
        if account is not None:
            keys.append("account:" + account)
        return keys

    def wait(self, ip: str, account: str | None) -> float:
        """Seconds until a login from *ip* for *account* is heard again (0.0: now)."""
        now = self.clock.time()
        waits = [
            entry.until - now
            for key in self._keys(ip, account)
            if (entry := self._seen.get(key)) is not None
        ]
        return max([0.0, *waits])

    def failed(self, ip: str, account: str | None) -> None:
        now = self.clock.time()
        if len(self._seen) >= self.max_keys:
            self._forget(now)
        for key in self._keys(ip, account):
            entry = self._seen.get(key)
            if entry is None or now - entry.last >= FORGET_AFTER:
                entry = self._seen[key] = _Failures(0, now, now)
            entry.count += 1
            entry.last = now
            over = entry.count - FREE_FAILURES
            if over > 0:
                entry.until = now + min(MAX_LOCKOUT, 2.0 ** (over - 1))

    def succeeded(self, ip: str, account: str | None) -> None:
        for key in self._keys(ip, account):
            self._seen.pop(key, None)

    def _forget(self, now: float) -> None:
        stale = [k for k, e in self._seen.items() if now - e.last >= FORGET_AFTER]
        for key in stale:
            del self._seen[key]
        if len(self._seen) >= self.max_keys:  # still full: drop the oldest half
            for key in sorted(self._seen, key=lambda k: self._seen[k].last)[: self.max_keys // 2]:
                del self._seen[key]
