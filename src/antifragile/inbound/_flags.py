"""Feature flags, changeable at run time, read through a short local cache.

::

    flags = FeatureFlags(store.kv, clock=clock)     # or FeatureFlags(jobs): the queue's store
    if await flags.is_enabled("hubspot_sync"):
        ...
    await flags.set("slack_notify", False)   # every process sees it within cache_ttl seconds

A flag is the key-value entry ``flag:<name>`` (``{"enabled": bool, "updated_at": epoch}``). A
flag never written takes its default: the ``defaults`` given, over :data:`DEFAULT_FLAGS` (the
flags the service itself reads, all on), else off.

Checks are cheap: a value read from the store is kept for ``cache_ttl`` seconds (by the clock's
monotonic time), so the message pipeline does not pay a store round trip per check. A
:meth:`FeatureFlags.set` in this process is seen at once; in other processes once their cached
value ages out. When the store cannot be read, the last known value (else the default) is used
-- a flag check never fails a message.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from antifragile.errors import ConfigurationError, StoreError
from antifragile.jobs import Jobs
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.stores import KeyValueStore

#: the key prefix of flags in the key-value store
FLAG_PREFIX = "flag:"

#: the flags the service reads, and their values until an operator changes them
DEFAULT_FLAGS: Mapping[str, bool] = {
    "hubspot_sync": True,  # create a HubSpot contact when an intake completes
    "mailchimp_sync": True,  # add the contact to the Mailchimp audience (add_to_audience)
    "shopify_sync": True,  # create a Shopify customer when an intake completes
    "slack_notify": True,  # post to Slack when an intake completes
    "summary_email": True,  # email the owner a summary when an intake completes
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_log = logging.getLogger("antifragile.inbound.flags")


def check_flag_name(name: str) -> str:
    """*name* when it is a valid flag name (lowercase letters, digits, ``_ . -``; 1-64
    characters), else ConfigurationError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(
            "a flag name is 1-64 characters: lowercase letters, digits, '_', '.', '-'"
        )
    return name


def _enabled(value: Any) -> bool | None:
    if isinstance(value, Mapping):
        value = value.get("enabled")
    return value if isinstance(value, bool) else None


class FeatureFlags:
    """Feature flags in a key-value store (see the module docs)."""

    def __init__(
        self,
        kv: KeyValueStore | Jobs,
        *,
        clock: Clock = SYSTEM_CLOCK,
        defaults: Mapping[str, Any] | None = None,
        cache_ttl: float = 1.0,
    ) -> None:
        if not cache_ttl >= 0:
            raise ConfigurationError(f"cache_ttl must be >= 0 seconds, got {cache_ttl!r}")
        merged = {**DEFAULT_FLAGS, **(defaults or {})}
        for name, value in merged.items():
            check_flag_name(name)
            if not isinstance(value, bool):
                raise ConfigurationError(f"the default of flag {name!r} must be a bool")
        self._source = kv
        self.clock = clock
        self.defaults: dict[str, bool] = merged
        self.cache_ttl = float(cache_ttl)
        # name -> (value or None when not stored, monotonic time it stops being fresh)
        self._cache: dict[str, tuple[bool | None, float]] = {}

    @property
    def kv(self) -> KeyValueStore:
        """The key-value store the flags live in (a :class:`Jobs` queue's store, once open)."""
        if not isinstance(self._source, Jobs):
            return self._source
        store = getattr(self._source.queue, "store", None)
        kv = getattr(store, "kv", None)
        if kv is None:
            raise ConfigurationError("feature flags need a job queue on a store with a kv")
        return kv  # type: ignore[no-any-return]

    def default(self, name: str) -> bool:
        """The value of *name* while nobody has set it."""
        return self.defaults.get(name, False)

    async def is_enabled(self, name: str) -> bool:
        """Whether flag *name* is on (the cached value when it is fresh)."""
        cached = self._cache.get(name)
        now = self.clock.monotonic()
        if cached is not None and now < cached[1]:
            value = cached[0]
            return self.defaults.get(name, False) if value is None else value
        try:
            record = await self.kv.get(FLAG_PREFIX + name, now=self.clock.time())
        except (StoreError, ConfigurationError) as exc:
            _log.warning(
                "flag %s: the store could not be read (%s); using the last value", name, exc.code
            )
            value = cached[0] if cached is not None else None
        else:
            value = None if record is None else _enabled(record.value)
        self._cache[name] = (value, now + self.cache_ttl)
        return self.defaults.get(name, False) if value is None else value

    async def set(self, name: str, enabled: bool) -> None:
        """Turn flag *name* on or off (in the store: every process sees it)."""
        check_flag_name(name)
        if not isinstance(enabled, bool):
            raise ConfigurationError("a flag is turned on or off with a bool")
        now = self.clock.time()
        await self.kv.set(FLAG_PREFIX + name, {"enabled": enabled, "updated_at": now}, now=now)
        self._cache[name] = (enabled, self.clock.monotonic() + self.cache_ttl)

    async def all(self) -> dict[str, bool]:
        """Every known flag (the defaults and every stored one) with its value, by name."""
        entries = await self.kv.scan(FLAG_PREFIX, now=self.clock.time(), limit=10_000)
        fresh_until = self.clock.monotonic() + self.cache_ttl
        values = dict(self.defaults)
        for entry in entries:
            name = entry.key[len(FLAG_PREFIX) :]
            value = _enabled(entry.value)
            if value is not None:
                values[name] = value
                self._cache[name] = (value, fresh_until)
        return dict(sorted(values.items()))

    def __repr__(self) -> str:
        return f"FeatureFlags({len(self.defaults)} defaults, cache_ttl={self.cache_ttl})"
