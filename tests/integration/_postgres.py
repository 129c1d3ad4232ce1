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


class KeptPlan:
    """A statement prepared on a connection of its own with a generic plan (the plan a
    prepared statement keeps until the table's statistics change), for tests that the plan made
    while a table was small stays cheap once it is large.

    *query* has psycopg's ``%(name)s`` placeholders; *types* give each name's SQL type, in
    order. :meth:`execute` makes the plan (at its first execution, so on the table as it is
    then); :meth:`rows_read` runs it again under ``EXPLAIN ANALYZE`` and gives the rows each
    scan of *table* read.
    """

    def __init__(self, url: str, schema: str, query: str, types: dict[str, str]) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.names = list(types)
        for n, name in enumerate(self.names, 1):
            query = query.replace(f"%({name})s", f"${n}")
        try:
            self.conn.execute(f'SET search_path TO "{schema}"'.encode())
            self.conn.execute("SET plan_cache_mode = force_generic_plan")
            # by the simple protocol: the statement's own $n are PREPARE's, not this call's
            declared = ", ".join(types.values())
            result = self.conn.pgconn.exec_(f"PREPARE kept({declared}) AS {query}".encode())
            assert result.status == psycopg.pq.ExecStatus.COMMAND_OK, result.error_message
        except BaseException:
            self.conn.close()
            raise
        casts = ", ".join(f"%s::{kind}" for kind in types.values())
        self.call = f"EXECUTE kept({casts})"
        self.cursor = psycopg.ClientCursor(self.conn)  # values bound here: no parameters

    def execute(self, params: dict[str, Any]) -> None:
        self.cursor.execute(self.call, [params[name] for name in self.names])

    def rows_read(self, table: str, params: dict[str, Any]) -> list[int]:
        self.cursor.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + self.call, [params[n] for n in self.names]
        )
        row = self.cursor.fetchone()
        assert row is not None
        read: list[int] = []

        def visit(node: dict[str, Any]) -> None:
            if node.get("Relation Name") == table and "Scan" in node["Node Type"]:
                rows = node.get("Actual Rows", 0) * node.get("Actual Loops", 0)
                read.append(rows + node.get("Rows Removed by Filter", 0))
            for child in node.get("Plans", []):
                visit(child)

        visit(row[0][0]["Plan"])
        return read

    def close(self) -> None:
        self.conn.close()
