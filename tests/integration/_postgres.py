"""Scratch schemas and job queues on the test PostgreSQL server, for the integration tests.

A module of helpers, not of tests: :func:`admin` runs a statement on a connection of its own,
:func:`scratch_schema` names a fresh schema and drops it afterwards whatever happened, and
:func:`open_queue` opens a :class:`PostgresJobQueue` on a store of its own in that schema.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg

from antifragile.jobs._postgres import PostgresJobQueue
from antifragile.stores._postgres import PostgresStore


def admin(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run *query* in autocommit on a connection of its own; the rows it returned, if any."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query.encode(), params)
        return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def scratch_schema(url: str, prefix: str) -> Iterator[str]:
    """The name of a fresh schema (``{prefix}_`` and 12 hex digits), dropped on leaving."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        admin(url, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@contextlib.asynccontextmanager
async def open_queue(url: str, schema: str, **options: Any) -> AsyncIterator[PostgresJobQueue]:
    """A job queue on an open store in *schema* (*options* go to :class:`PostgresStore`),
    closed on leaving."""
    store = PostgresStore(url, schema=schema, **options)
    await store.open()
    try:
        yield PostgresJobQueue(store)
    finally:
        await store.close()
