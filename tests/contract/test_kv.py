"""Contract: KeyValueStore -- versions, TTL, compare-and-set, merge, delete and scan."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from antifragile import ConfigurationError, FakeClock
from antifragile.stores import Store, Versioned

# -- get / set / versions ---------------------------------------------------------------------


async def test_get_of_unknown_key_is_none(store: Store, clock: FakeClock) -> None:
    """A key never written reads as None."""
    assert await store.kv.get("missing", now=clock.time()) is None


async def test_set_creates_version_one_without_expiry(store: Store, clock: FakeClock) -> None:
    """The first write of a key creates version 1 with no expiry, and get returns exactly it."""
    written = await store.kv.set("k", {"a": 1}, now=clock.time())
    assert written == Versioned(key="k", value={"a": 1}, version=1, expires_at=None)
    assert await store.kv.get("k", now=clock.time()) == written


async def test_every_kind_of_write_adds_one_to_the_version(store: Store, clock: FakeClock) -> None:
    """set, compare_and_set and merge each raise the version by exactly one."""
    now = clock.time()
    assert (await store.kv.set("k", {"n": 0}, now=now)).version == 1
    assert (await store.kv.set("k", {"n": 1}, now=now)).version == 2
    cas = await store.kv.compare_and_set("k", {"n": 2}, expected_version=2, now=now)
    assert cas is not None
    assert cas.version == 3
    assert (await store.kv.merge("k", {"m": 1}, now=now)).version == 4
    current = await store.kv.get("k", now=now)
    assert current == Versioned("k", {"n": 2, "m": 1}, 4, None)


@pytest.mark.parametrize(
    ("value", "read_back"),
    [
        ("text", "text"),
        (42, 42),
        (2.5, 2.5),
        (True, True),
        (None, None),
        ([1, "two", None], [1, "two", None]),
        ({"nested": {"deep": [1, {"x": "ü €"}]}}, {"nested": {"deep": [1, {"x": "ü €"}]}}),
        ((1, 2), [1, 2]),
        ({1: "one"}, {"1": "one"}),
        ("", ""),
        ({}, {}),
    ],
    ids=[
        "str",
        "int",
        "float",
        "bool",
        "null",
        "list",
        "nested-unicode",
        "tuple",
        "int-keys",
        "empty-str",
        "empty-dict",
    ],
)
async def test_values_come_back_as_json_decodes_them(
    store: Store, clock: FakeClock, value: Any, read_back: Any
) -> None:
    """Any JSON-compatible value round-trips; tuples come back as lists, int keys as strings."""
    written = await store.kv.set("v", value, now=clock.time())
    assert written.value == read_back
    got = await store.kv.get("v", now=clock.time())
    assert got is not None
    assert got.value == read_back
    assert type(got.value) is type(read_back)


async def test_a_stored_null_is_distinct_from_absence(store: Store, clock: FakeClock) -> None:
    """A key holding JSON null reads as a Versioned whose value is None, not as None."""
    await store.kv.set("null", None, now=clock.time())
    got = await store.kv.get("null", now=clock.time())
    assert got is not None
    assert got.value is None


async def test_keys_are_independent(store: Store, clock: FakeClock) -> None:
    """Writing one key neither changes nor versions another."""
    now = clock.time()
    await store.kv.set("a", 1, now=now)
    await store.kv.set("a", 2, now=now)
    assert await store.kv.set("b", 1, now=now) == Versioned("b", 1, 1, None)
    assert await store.kv.get("a", now=now) == Versioned("a", 2, 2, None)


# -- TTL ---------------------------------------------------------------------------------------


async def test_ttl_sets_expires_at_and_expiry_follows_now(store: Store, clock: FakeClock) -> None:
    """A key with a ttl is live while now < expires_at and reads as absent from expires_at on."""
    now = clock.time()
    written = await store.kv.set("k", "v", now=now, ttl=10)
    assert written.expires_at == now + 10
    clock.advance(9.5)
    assert await store.kv.get("k", now=clock.time()) == written
    clock.advance(0.5)
    assert await store.kv.get("k", now=clock.time()) is None


async def test_set_without_ttl_drops_an_earlier_expiry(store: Store, clock: FakeClock) -> None:
    """set with ttl None makes the key permanent again."""
    await store.kv.set("k", 1, now=clock.time(), ttl=5)
    again = await store.kv.set("k", 2, now=clock.time())
    assert again.expires_at is None
    clock.advance(3600)
    assert await store.kv.get("k", now=clock.time()) == Versioned("k", 2, 2, None)


async def test_set_with_ttl_replaces_the_expiry(store: Store, clock: FakeClock) -> None:
    """set with a ttl on a live key moves expires_at to now + ttl."""
    await store.kv.set("k", 1, now=clock.time(), ttl=5)
    clock.advance(4)
    again = await store.kv.set("k", 2, now=clock.time(), ttl=5)
    assert again.expires_at == clock.time() + 5
    clock.advance(4)
    assert await store.kv.get("k", now=clock.time()) == again


async def test_write_after_expiry_restarts_at_version_one(store: Store, clock: FakeClock) -> None:
    """An expired key counts as absent: the next set creates it again at version 1."""
    await store.kv.set("k", 1, now=clock.time(), ttl=1)
    await store.kv.set("k", 2, now=clock.time(), ttl=1)
    clock.advance(1)
    again = await store.kv.set("k", 3, now=clock.time())
    assert again == Versioned("k", 3, 1, None)


async def test_write_after_delete_restarts_at_version_one(store: Store, clock: FakeClock) -> None:
    """A deleted key is created again at version 1."""
    await store.kv.set("k", 1, now=clock.time())
    await store.kv.set("k", 2, now=clock.time())
    assert await store.kv.delete("k", now=clock.time())
    assert (await store.kv.set("k", 3, now=clock.time())).version == 1


# -- compare-and-set ---------------------------------------------------------------------------


async def test_cas_expecting_none_creates_an_absent_key(store: Store, clock: FakeClock) -> None:
    """compare_and_set(expected_version=None) on an absent key creates it at version 1."""
    now = clock.time()
    created = await store.kv.compare_and_set("k", "v", expected_version=None, now=now, ttl=30)
    assert created == Versioned("k", "v", 1, now + 30)
    assert await store.kv.get("k", now=now) == created


async def test_cas_expecting_none_fails_on_a_live_key(store: Store, clock: FakeClock) -> None:
    """compare_and_set(expected_version=None) on a live key returns None and writes nothing."""
    now = clock.time()
    first = await store.kv.set("k", "first", now=now)
    assert await store.kv.compare_and_set("k", "second", expected_version=None, now=now) is None
    assert await store.kv.get("k", now=now) == first


async def test_cas_expecting_none_succeeds_on_an_expired_key(
    store: Store, clock: FakeClock
) -> None:
    """An expired key is absent for compare_and_set(None): it is created again at version 1."""
    await store.kv.set("k", "old", now=clock.time(), ttl=2)
    await store.kv.set("k", "old2", now=clock.time(), ttl=2)
    clock.advance(2)
    created = await store.kv.compare_and_set("k", "new", expected_version=None, now=clock.time())
    assert created == Versioned("k", "new", 1, None)


async def test_cas_at_the_live_version_wins(store: Store, clock: FakeClock) -> None:
    """compare_and_set at the live version writes, returns version + 1 and applies ttl."""
    now = clock.time()
    await store.kv.set("k", 1, now=now)
    won = await store.kv.compare_and_set("k", 2, expected_version=1, now=now, ttl=7)
    assert won == Versioned("k", 2, 2, now + 7)
    assert await store.kv.get("k", now=now) == won


async def test_cas_without_ttl_makes_the_key_permanent(store: Store, clock: FakeClock) -> None:
    """compare_and_set with ttl None drops an earlier expiry, as set does."""
    await store.kv.set("k", 1, now=clock.time(), ttl=5)
    won = await store.kv.compare_and_set("k", 2, expected_version=1, now=clock.time())
    assert won is not None
    assert won.expires_at is None
    clock.advance(60)
    assert await store.kv.get("k", now=clock.time()) == won


async def test_cas_at_a_stale_version_fails_and_writes_nothing(
    store: Store, clock: FakeClock
) -> None:
    """compare_and_set at any other version returns None and leaves the value and version."""
    now = clock.time()
    await store.kv.set("k", "a", now=now)
    current = await store.kv.set("k", "b", now=now)
    for stale in (1, 3, 0):
        assert await store.kv.compare_and_set("k", "x", expected_version=stale, now=now) is None
    assert await store.kv.get("k", now=now) == current


async def test_cas_expecting_a_version_fails_on_an_absent_key(
    store: Store, clock: FakeClock
) -> None:
    """compare_and_set with a version on an absent key returns None and creates nothing."""
    now = clock.time()
    assert await store.kv.compare_and_set("k", "x", expected_version=1, now=now) is None
    assert await store.kv.get("k", now=now) is None


async def test_cas_expecting_the_version_of_an_expired_key_fails(
    store: Store, clock: FakeClock
) -> None:
    """An expired key has no version: compare_and_set expecting its old version fails."""
    await store.kv.set("k", "old", now=clock.time(), ttl=1)
    clock.advance(1)
    assert await store.kv.compare_and_set("k", "x", expected_version=1, now=clock.time()) is None
    assert await store.kv.get("k", now=clock.time()) is None


async def test_concurrent_cas_at_the_same_version_has_one_winner(
    store: Store, clock: FakeClock
) -> None:
    """50 concurrent compare_and_set calls at the same version: exactly one wins."""
    now = clock.time()
    await store.kv.set("k", -1, now=now)
    results = await asyncio.gather(
        *(store.kv.compare_and_set("k", i, expected_version=1, now=now) for i in range(50))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].version == 2
    assert await store.kv.get("k", now=now) == winners[0]


async def test_concurrent_cas_creating_a_key_has_one_winner(store: Store, clock: FakeClock) -> None:
    """50 concurrent compare_and_set(expected_version=None) of one absent key: one creates it."""
    now = clock.time()
    results = await asyncio.gather(
        *(store.kv.compare_and_set("k", i, expected_version=None, now=now) for i in range(50))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].version == 1
    assert await store.kv.get("k", now=now) == winners[0]


async def test_cas_retry_loops_lose_no_increment(store: Store, clock: FakeClock) -> None:
    """20 tasks incrementing a counter with read + compare_and_set retry loops lose no update."""
    now = clock.time()
    await store.kv.set("counter", 0, now=now)

    async def increment() -> None:
        for _ in range(5):
            while True:
                current = await store.kv.get("counter", now=now)
                assert current is not None
                won = await store.kv.compare_and_set(
                    "counter", current.value + 1, expected_version=current.version, now=now
                )
                if won is not None:
                    break

    await asyncio.gather(*(increment() for _ in range(20)))
    final = await store.kv.get("counter", now=now)
    assert final is not None
    assert final.value == 100
    assert final.version == 101


# -- merge -------------------------------------------------------------------------------------


async def test_merge_creates_an_absent_key(store: Store, clock: FakeClock) -> None:
    """merge into an absent key creates it with exactly the given fields, at version 1."""
    now = clock.time()
    created = await store.kv.merge("k", {"a": 1}, now=now)
    assert created == Versioned("k", {"a": 1}, 1, None)
    with_ttl = await store.kv.merge("k2", {"a": 1}, now=now, ttl=9)
    assert with_ttl == Versioned("k2", {"a": 1}, 1, now + 9)


async def test_merge_is_shallow(store: Store, clock: FakeClock) -> None:
    """merge replaces top-level fields wholesale, keeps the others, and stores None as a value."""
    now = clock.time()
    await store.kv.set("k", {"a": 1, "nested": {"x": 1, "y": 2}, "keep": [1]}, now=now)
    merged = await store.kv.merge("k", {"nested": {"x": 3}, "b": None, "a": 2}, now=now)
    assert merged.value == {"a": 2, "nested": {"x": 3}, "keep": [1], "b": None}
    assert await store.kv.get("k", now=now) == merged


async def test_merge_without_ttl_keeps_the_expiry(store: Store, clock: FakeClock) -> None:
    """merge with ttl None leaves expires_at where it was, so the key still expires on time."""
    start = clock.time()
    await store.kv.set("k", {"a": 1}, now=start, ttl=10)
    clock.advance(6)
    merged = await store.kv.merge("k", {"b": 2}, now=clock.time())
    assert merged.expires_at == start + 10
    clock.advance(4)
    assert await store.kv.get("k", now=clock.time()) is None


async def test_merge_without_ttl_keeps_a_permanent_key_permanent(
    store: Store, clock: FakeClock
) -> None:
    """merge with ttl None into a key without expiry leaves it without expiry."""
    await store.kv.set("k", {"a": 1}, now=clock.time())
    merged = await store.kv.merge("k", {"b": 2}, now=clock.time())
    assert merged.expires_at is None


async def test_merge_with_ttl_sets_a_new_expiry(store: Store, clock: FakeClock) -> None:
    """merge with a ttl moves expires_at to now + ttl."""
    await store.kv.set("k", {"a": 1}, now=clock.time(), ttl=5)
    clock.advance(4)
    merged = await store.kv.merge("k", {"b": 2}, now=clock.time(), ttl=5)
    assert merged.expires_at == clock.time() + 5
    clock.advance(4)
    assert await store.kv.get("k", now=clock.time()) == merged


async def test_merge_into_an_expired_key_starts_afresh(store: Store, clock: FakeClock) -> None:
    """merge ignores the fields and expiry of an expired value: version 1, only the new fields."""
    await store.kv.set("k", {"old": True}, now=clock.time(), ttl=1)
    clock.advance(1)
    merged = await store.kv.merge("k", {"new": True}, now=clock.time())
    assert merged == Versioned("k", {"new": True}, 1, None)


@pytest.mark.parametrize("stored", ["text", [1, 2], 3, None], ids=["str", "list", "int", "null"])
async def test_merge_into_a_value_that_is_not_a_dict_is_refused(
    store: Store, clock: FakeClock, stored: Any
) -> None:
    """merge into a live non-dict value raises ConfigurationError and leaves the value alone."""
    now = clock.time()
    before = await store.kv.set("k", stored, now=now)
    with pytest.raises(ConfigurationError):
        await store.kv.merge("k", {"a": 1}, now=now)
    assert await store.kv.get("k", now=now) == before


async def test_concurrent_merges_keep_every_field(store: Store, clock: FakeClock) -> None:
    """50 concurrent merges of different fields all survive, and each counted as one write."""
    now = clock.time()
    await asyncio.gather(*(store.kv.merge("flags", {f"f{i}": i}, now=now) for i in range(50)))
    final = await store.kv.get("flags", now=now)
    assert final is not None
    assert final.value == {f"f{i}": i for i in range(50)}
    assert final.version == 50


# -- delete ------------------------------------------------------------------------------------


async def test_delete_removes_a_live_key(store: Store, clock: FakeClock) -> None:
    """delete of a live key returns True and the key reads as absent."""
    now = clock.time()
    await store.kv.set("k", 1, now=now)
    assert await store.kv.delete("k", now=now) is True
    assert await store.kv.get("k", now=now) is None
    assert await store.kv.delete("k", now=now) is False


async def test_delete_of_absent_or_expired_key_is_false(store: Store, clock: FakeClock) -> None:
    """delete returns False when there is no live entry: never written, or expired."""
    assert await store.kv.delete("never", now=clock.time()) is False
    await store.kv.set("k", 1, now=clock.time(), ttl=1)
    clock.advance(1)
    assert await store.kv.delete("k", now=clock.time()) is False


async def test_delete_at_expected_version(store: Store, clock: FakeClock) -> None:
    """delete with expected_version deletes only at that version; otherwise changes nothing."""
    now = clock.time()
    await store.kv.set("k", 1, now=now)
    current = await store.kv.set("k", 2, now=now)
    assert await store.kv.delete("k", expected_version=1, now=now) is False
    assert await store.kv.get("k", now=now) == current
    assert await store.kv.delete("k", expected_version=2, now=now) is True
    assert await store.kv.get("k", now=now) is None


# -- scan --------------------------------------------------------------------------------------


async def test_scan_lists_live_keys_with_the_prefix_in_key_order(
    store: Store, clock: FakeClock
) -> None:
    """scan returns the live entries under a prefix sorted by key, skipping expired ones."""
    now = clock.time()
    for key in ("s:c", "s:a", "s:b", "s:ab", "t:a", "s", "r:z"):
        await store.kv.set(key, key, now=now)
    await store.kv.set("s:expiring", 0, now=now, ttl=1)
    clock.advance(1)
    found = await store.kv.scan("s:", now=clock.time())
    assert [v.key for v in found] == ["s:a", "s:ab", "s:b", "s:c"]
    assert all(v.value == v.key and v.version == 1 for v in found)


async def test_scan_returns_at_most_limit_entries_from_the_start(
    store: Store, clock: FakeClock
) -> None:
    """scan with a limit returns the first entries in key order."""
    now = clock.time()
    for i in (5, 3, 9, 1, 7):
        await store.kv.set(f"p:{i}", i, now=now)
    assert [v.key for v in await store.kv.scan("p:", now=now, limit=3)] == ["p:1", "p:3", "p:5"]


async def test_scan_prefix_is_literal(store: Store, clock: FakeClock) -> None:
    """Characters special to LIKE or glob patterns (% _ * ? [ \\) match only themselves."""
    now = clock.time()
    for key in ("a_b", "axb", "a%c", "aXYc", "a*1", "a?1", "a[1", "a\\1", "a\\\\1"):
        await store.kv.set(key, 1, now=now)
    assert [v.key for v in await store.kv.scan("a_", now=now)] == ["a_b"]
    assert [v.key for v in await store.kv.scan("a%", now=now)] == ["a%c"]
    assert [v.key for v in await store.kv.scan("a*", now=now)] == ["a*1"]
    assert [v.key for v in await store.kv.scan("a?", now=now)] == ["a?1"]
    assert [v.key for v in await store.kv.scan("a[", now=now)] == ["a[1"]
    assert [v.key for v in await store.kv.scan("a\\", now=now)] == ["a\\1", "a\\\\1"]


async def test_scan_with_non_ascii_prefix(store: Store, clock: FakeClock) -> None:
    """Prefixes and keys outside ASCII are compared by code point."""
    now = clock.time()
    for key in ("é:2", "é:1", "e:1", "ê:1", "é"):
        await store.kv.set(key, 1, now=now)
    assert [v.key for v in await store.kv.scan("é:", now=now)] == ["é:1", "é:2"]
    assert [v.key for v in await store.kv.scan("é", now=now)] == ["é", "é:1", "é:2"]


async def test_scan_with_empty_prefix_lists_everything(store: Store, clock: FakeClock) -> None:
    """The empty prefix matches every live key."""
    now = clock.time()
    for key in ("b", "a", "c"):
        await store.kv.set(key, 1, now=now)
    assert [v.key for v in await store.kv.scan("", now=now)] == ["a", "b", "c"]


async def test_scan_of_unknown_prefix_is_empty(store: Store, clock: FakeClock) -> None:
    """A prefix no key starts with finds nothing."""
    await store.kv.set("a", 1, now=clock.time())
    assert await store.kv.scan("zz", now=clock.time()) == []


# -- refused values ----------------------------------------------------------------------------

NOT_JSON: list[Any] = [object(), float("nan"), float("inf"), {"set": {1, 2}}, b"bytes"]
NOT_JSON_IDS = ["object", "nan", "inf", "nested-set", "bytes"]


@pytest.mark.parametrize("bad", NOT_JSON, ids=NOT_JSON_IDS)
async def test_set_of_a_non_json_value_is_refused(store: Store, clock: FakeClock, bad: Any) -> None:
    """set of a value JSON cannot encode raises ConfigurationError and writes nothing."""
    now = clock.time()
    before = await store.kv.set("k", "kept", now=now)
    with pytest.raises(ConfigurationError):
        await store.kv.set("k", bad, now=now)
    with pytest.raises(ConfigurationError):
        await store.kv.set("fresh", bad, now=now)
    assert await store.kv.get("k", now=now) == before
    assert await store.kv.get("fresh", now=now) is None


@pytest.mark.parametrize("bad", NOT_JSON, ids=NOT_JSON_IDS)
async def test_cas_and_merge_of_a_non_json_value_are_refused(
    store: Store, clock: FakeClock, bad: Any
) -> None:
    """compare_and_set and merge with a non-JSON value raise ConfigurationError, write nothing."""
    now = clock.time()
    before = await store.kv.set("k", {"a": 1}, now=now)
    with pytest.raises(ConfigurationError):
        await store.kv.compare_and_set("k", bad, expected_version=1, now=now)
    with pytest.raises(ConfigurationError):
        await store.kv.compare_and_set("new", bad, expected_version=None, now=now)
    with pytest.raises(ConfigurationError):
        await store.kv.merge("k", {"b": bad}, now=now)
    with pytest.raises(ConfigurationError):
        await store.kv.merge("new", {"b": bad}, now=now)
    assert await store.kv.get("k", now=now) == before
    assert await store.kv.get("new", now=now) is None
