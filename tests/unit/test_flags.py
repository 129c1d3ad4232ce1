"""Feature flags: defaults, run-time changes, the local cache, and a store that fails."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from antifragile import FakeClock
from antifragile.errors import ConfigurationError, StoreUnavailableError
from antifragile.inbound._flags import DEFAULT_FLAGS, FLAG_PREFIX, FeatureFlags
from antifragile.stores import Versioned
from antifragile.stores._memory import MemoryKeyValueStore, MemoryStore


class CountingKV(MemoryKeyValueStore):
    """A memory KV that counts reads and can be made to fail."""

    def __init__(self) -> None:
        super().__init__(threading.Lock())
        self.reads = 0
        self.failing = False

    async def get(self, key: str, *, now: float) -> Versioned | None:
        self.reads += 1
        if self.failing:
            raise StoreUnavailableError("store down")
        return await super().get(key, now=now)


async def test_documented_flags_default_on_and_unknown_ones_off(clock: FakeClock) -> None:
    """The flags the service reads are on until changed; an unknown flag is off."""
    flags = FeatureFlags(MemoryStore().kv, clock=clock)
    known = {"hubspot_sync", "mailchimp_sync", "shopify_sync", "slack_notify", "summary_email"}
    for name in known:
        assert await flags.is_enabled(name) is True
    assert await flags.is_enabled("brand_new") is False
    assert set(DEFAULT_FLAGS) == known


async def test_given_defaults_override_the_built_in_ones(clock: FakeClock) -> None:
    """Defaults given to the constructor win over the built-in ones and add new flags."""
    flags = FeatureFlags(
        MemoryStore().kv, clock=clock, defaults={"slack_notify": False, "beta": True}
    )
    assert await flags.is_enabled("slack_notify") is False
    assert await flags.is_enabled("beta") is True
    assert flags.default("beta") is True


async def test_set_is_seen_at_once_here_and_stored(clock: FakeClock) -> None:
    """set() changes the value in this process at once and writes flag:<name> to the store."""
    kv = MemoryStore().kv
    flags = FeatureFlags(kv, clock=clock)
    await flags.set("hubspot_sync", False)
    assert await flags.is_enabled("hubspot_sync") is False
    stored = await kv.get(FLAG_PREFIX + "hubspot_sync", now=clock.time())
    assert stored is not None
    assert stored.value["enabled"] is False


async def test_checks_are_cached_and_other_processes_see_changes_after_ttl(
    clock: FakeClock,
) -> None:
    """Repeated checks within cache_ttl do not read the store; a change made by another
    process is seen once the cached value ages out."""
    kv = CountingKV()
    here = FeatureFlags(kv, clock=clock, cache_ttl=1.0)
    other = FeatureFlags(kv, clock=clock, cache_ttl=1.0)
    assert await here.is_enabled("slack_notify") is True
    for _ in range(100):
        await here.is_enabled("slack_notify")
    assert kv.reads == 1
    await other.set("slack_notify", False)
    assert await here.is_enabled("slack_notify") is True  # still cached
    clock.advance(1.01)
    assert await here.is_enabled("slack_notify") is False
    assert kv.reads == 2


async def test_a_failing_store_keeps_the_last_known_value(clock: FakeClock) -> None:
    """When the store cannot be read, the last known value (else the default) is used; a
    check never raises."""
    kv = CountingKV()
    flags = FeatureFlags(kv, clock=clock, cache_ttl=0.5)
    await flags.set("summary_email", False)
    kv.failing = True
    clock.advance(1)
    assert await flags.is_enabled("summary_email") is False  # last known
    assert await flags.is_enabled("shopify_sync") is True  # default


async def test_all_lists_defaults_and_stored_flags(clock: FakeClock) -> None:
    """all() returns every default and every stored flag, sorted by name."""
    flags = FeatureFlags(MemoryStore().kv, clock=clock)
    await flags.set("zeta", True)
    await flags.set("hubspot_sync", False)
    everything = await flags.all()
    assert list(everything) == sorted(everything)
    assert everything["zeta"] is True
    assert everything["hubspot_sync"] is False
    assert everything["summary_email"] is True


@pytest.mark.parametrize("name", ["", "Has Space", "UPPER", "x" * 65, "-lead"])
async def test_bad_names_are_refused(clock: FakeClock, name: str) -> None:
    """Flag names are 1-64 lowercase letters, digits, '_', '.', '-' (ConfigurationError)."""
    flags = FeatureFlags(MemoryStore().kv, clock=clock)
    with pytest.raises(ConfigurationError):
        await flags.set(name, True)


async def test_non_bool_values_are_refused(clock: FakeClock) -> None:
    """A flag is set with a bool; a default that is not a bool is a ConfigurationError."""
    flags = FeatureFlags(MemoryStore().kv, clock=clock)
    value: Any = "yes"
    with pytest.raises(ConfigurationError):
        await flags.set("beta", value)
    with pytest.raises(ConfigurationError):
        FeatureFlags(MemoryStore().kv, clock=clock, defaults={"beta": "on"})
