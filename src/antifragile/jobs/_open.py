"""Choosing the job-queue backend for a database URL or an open store."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlsplit

from antifragile.errors import ConfigurationError, redact
from antifragile.jobs._protocol import JobQueue
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.stores import Store, open_store

#: URL schemes whose stores can hold a job queue
QUEUE_SCHEMES = ("sqlite", "postgresql", "postgres")


async def open_job_queue(
    url_or_store: str | Store, *, clock: Clock = SYSTEM_CLOCK, **options: Any
) -> JobQueue:
    """The job queue in *url_or_store*: an open SQLite or PostgreSQL store, or the URL of one
    (``sqlite:///path.db``, ``postgresql://...``), which is then opened here with *clock* and
    the store *options*.

    The queue works inside its store -- status flags are the store's key-value entries -- and
    is reached as ``queue.store``. A store opened here from a URL belongs to the caller: close it
    with ``await queue.store.close()``. Memory and Redis stores hold no job queue
    (ConfigurationError).
    """
    if isinstance(url_or_store, str):
        scheme = urlsplit(url_or_store).scheme.lower()
        if scheme not in QUEUE_SCHEMES:
            raise ConfigurationError(
                f"a job queue needs a sqlite:// or postgresql:// database, not "
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


def _queue_for(store: Store) -> JobQueue:
    from antifragile.stores._sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        from antifragile.jobs._sqlite import SQLiteJobQueue

        return SQLiteJobQueue(store)
    # a PostgresStore exists only if its module (and so psycopg) was imported already
    if "antifragile.stores._postgres" in sys.modules:
        from antifragile.stores._postgres import PostgresStore

        if isinstance(store, PostgresStore):
            from antifragile.jobs._postgres import PostgresJobQueue

            return PostgresJobQueue(store)
    raise ConfigurationError(
        f"{type(store).__name__} holds no job queue: use a SQLite or PostgreSQL store"
    )
