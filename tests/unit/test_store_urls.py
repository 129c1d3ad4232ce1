"""Choosing a backend by URL (make_store / open_store) and reading SQLite URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from antifragile import ConfigurationError, FakeClock
from antifragile.stores import SCHEMES, Store, make_store, open_store
from antifragile.stores._memory import MemoryStore
from antifragile.stores._sqlite import SQLiteStore, parse_url


@pytest.mark.parametrize("url", ["ftp://host/db", "mysql://u@h/db", "file.db", "", "://x"])
def test_an_unknown_scheme_names_the_expected_ones(url: str) -> None:
    """make_store of an unknown scheme raises ConfigurationError listing every known form."""
    with pytest.raises(ConfigurationError) as caught:
        make_store(url)
    message = str(caught.value)
    for example in SCHEMES.values():
        assert example in message


def test_memory_urls_make_a_memory_store() -> None:
    """memory:// (any case) makes a MemoryStore, which is a Store."""
    for url in ("memory://", "MEMORY://"):
        store = make_store(url, clock=FakeClock())
        assert isinstance(store, MemoryStore)
        assert isinstance(store, Store)


def test_sqlite_url_makes_an_unopened_sqlite_store(tmp_path: Path) -> None:
    """sqlite:/// makes a SQLiteStore without touching the file until open()."""
    path = tmp_path / "later.db"
    store = make_store(f"sqlite:///{path}")
    assert isinstance(store, SQLiteStore)
    assert isinstance(store, Store)
    assert not path.exists()


async def test_open_store_opens(tmp_path: Path) -> None:
    """open_store returns a store that is ready to use."""
    path = tmp_path / "now.db"
    store = await open_store(f"sqlite:///{path}")
    try:
        assert path.exists()
        assert (await store.kv.set("k", 1, now=1.0)).version == 1
    finally:
        await store.close()


def test_unknown_options_are_refused() -> None:
    """Keyword options a backend does not know raise ConfigurationError."""
    with pytest.raises(ConfigurationError, match="prefix"):
        make_store("memory://", prefix="x")
    with pytest.raises(ConfigurationError, match="schema"):
        make_store("sqlite:///x.db", schema="x")


# -- SQLite URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///antifragile.db", "antifragile.db"),
        ("sqlite:///data/state.db", "data/state.db"),
        ("sqlite:////var/lib/app/state.db", "/var/lib/app/state.db"),
        ("sqlite:///with%20space.db", "with space.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("SQLite:///x.db", "x.db"),
    ],
)
def test_sqlite_url_paths(url: str, path: str) -> None:
    """Three slashes then a relative path, four for an absolute one; %-escapes decoded."""
    assert parse_url(url)[0] == path


def test_sqlite_url_defaults() -> None:
    """Without options: busy_timeout 5000 ms and synchronous full."""
    assert parse_url("sqlite:///x.db") == ("x.db", 5000, "full")


def test_sqlite_url_options() -> None:
    """busy_timeout (ms) and synchronous (any case) come from the query string."""
    assert parse_url("sqlite:///x.db?busy_timeout=250&synchronous=NORMAL") == (
        "x.db",
        250,
        "normal",
    )
    assert parse_url("sqlite:///x.db?synchronous=extra")[2] == "extra"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("sqlite://host/x.db", "no host"),
        ("sqlite:///", "no database file"),
        ("sqlite://", "no database file"),
        ("sqlite:///x.db?busy_timeout=soon", "busy_timeout"),
        ("sqlite:///x.db?busy_timeout=-1", "busy_timeout"),
        ("sqlite:///x.db?synchronous=off", "synchronous"),
        ("sqlite:///x.db?journal_mode=delete", "unknown SQLite URL option 'journal_mode'"),
    ],
)
def test_bad_sqlite_urls_are_refused(url: str, match: str) -> None:
    """A host, a missing path, or a bad or unknown option is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match=match):
        parse_url(url)
    with pytest.raises(ConfigurationError, match=match):
        make_store(url)
