"""Choosing the job-queue backend for a database URL or an open store.

Each kind of store that can hold a job queue is registered once, by the name of its class, with
the queue class that works in it (both imported only when such a store is met: a queue on a
SQLite store never imports psycopg).
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from antifragile.errors import ConfigurationError, redact
from antifragile.jobs._protocol import JobQueue
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.stores import Store, open_store

#: URL schemes whose stores can hold a job queue
QUEUE_SCHEMES = ("sqlite", "postgresql", "postgres", "memory")

#: store class ("module:name") -> the job queue class ("module:name") that lives in it
_QUEUES: dict[str, str] = {
    "antifragile.stores._sqlite:SQLiteStore": "antifragile.jobs._sqlite:SQLiteJobQueue",
    "antifragile.stores._postgres:PostgresStore": "antifragile.jobs._postgres:PostgresJobQueue",
    "antifragile.stores._memory:MemoryStore": "antifragile.jobs._memory:MemoryJobQueue",
}


def register_job_queue(store_class: str, queue_class: str) -> None:
    """Make stores of *store_class* (``"module:Name"``, subclasses too) hold a job queue of
    *queue_class* (``"module:Name"``, called with the store)."""
    for name in (store_class, queue_class):
        module, _, attr = name.partition(":")
        if not module or not attr:
            raise ConfigurationError(f"expected 'module:Name', got {name!r}")
    _QUEUES[store_class] = queue_class


async def open_job_queue(
    url_or_store: str | Store, *, clock: Clock = SYSTEM_CLOCK, **options: Any
) -> JobQueue:
    """The job queue in *url_or_store*: an open SQLite, PostgreSQL or memory store, or the URL
    of one (``sqlite:///path.db``, ``postgresql://...``, ``memory://``), which is then opened
    here with *clock* and the store *options*.

    The queue works inside its store -- status flags are the store's key-value entries -- and
    is reached as ``queue.store``. A store opened here from a URL belongs to the caller: close it
    with ``await queue.store.close()``. A memory store holds a :class:`MemoryJobQueue` (one
    process, nothing kept). Redis stores hold no job queue (ConfigurationError).
    """
    if isinstance(url_or_store, str):
        scheme = urlsplit(url_or_store).scheme.lower()
        if scheme not in QUEUE_SCHEMES:
            raise ConfigurationError(
                f"a job queue needs a sqlite://, postgresql:// or memory:// store, not "
                f"{redact(url_or_store)!r}"
            )
        store = await open_store(url_or_store, clock=clock, **options)
        try:
            return _queue_for(store)
        except BaseException:
            await store.close()
            raise
    if options:
        raise ConfigurationError(
            f"store options ({', '.join(sorted(options))}) only apply when opening a URL"
        )
    return _queue_for(url_or_store)


def _load(name: str) -> Any:
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def _queue_for(store: Store) -> JobQueue:
    for kind in type(store).__mro__:
        queue_class = _QUEUES.get(f"{kind.__module__}:{kind.__qualname__}")
        if queue_class is not None:
            queue: JobQueue = _load(queue_class)(store)
            return queue
    raise ConfigurationError(
        f"{type(store).__name__} holds no job queue: use a SQLite, PostgreSQL or memory store"
    )
