"""Choosing a backend by URL."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from antifragile.errors import ConfigurationError, redact
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.stores._protocols import Store

SCHEMES = {
    "memory": "memory://",
    "sqlite": "sqlite:///path/to/file.db",
    "postgresql": "postgresql://user@host:5432/dbname",
    "postgres": "postgres://user@host:5432/dbname",
    "redis": "redis://host:6379/0",
    "rediss": "rediss://host:6380/0",
}


def make_store(url: str, *, clock: Clock = SYSTEM_CLOCK, **options: Any) -> Store:
    """The store for *url*, not yet opened (``await store.open()``, or use :func:`open_store`)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from antifragile.stores._memory import MemoryStore

        return MemoryStore(url, clock=clock, **options)
    if scheme == "sqlite":
        from antifragile.stores._sqlite import SQLiteStore

        return SQLiteStore(url, clock=clock, **options)
    if scheme in ("postgresql", "postgres"):
        from antifragile.stores._postgres import PostgresStore

        return PostgresStore(url, clock=clock, **options)
    if scheme in ("redis", "rediss"):
        from antifragile.stores._redis import RedisStore

        return RedisStore(url, clock=clock, **options)
    expected = ", ".join(SCHEMES.values())
    raise ConfigurationError(
        f"unknown store URL scheme {scheme!r} in {redact(url)!r}; expected one of: {expected}"
    )


async def open_store(url: str, *, clock: Clock = SYSTEM_CLOCK, **options: Any) -> Store:
    """Create and open the store for *url* (connects; SQLite also migrates itself)."""
    store = make_store(url, clock=clock, **options)
    await store.open()
    return store
