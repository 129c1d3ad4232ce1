"""``antifragile migrate``: bring a SQL store's schema up to date, or report where it stands."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from antifragile.cli._output import JsonOpt, console_for, echo_json, table
from antifragile.errors import AntifragileError, redact
from antifragile.stores import make_store
from antifragile.stores._migrations import latest_version, load_migrations

DATABASE_URL_ENV = "ANTIFRAGILE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///antifragile.db"

_DIALECTS = {"sqlite": "sqlite", "postgresql": "postgres", "postgres": "postgres"}


async def _migrate(url: str, check: bool) -> tuple[int, int, list[int]]:
    dialect = _DIALECTS[urlsplit(url).scheme.lower()]
    options: dict[str, Any] = {"migrate": False}
    if dialect == "postgres":
        options["auto_migrate"] = False
    store: Any = make_store(url, **options)
    if dialect == "sqlite":  # PostgreSQL migrates and reports without opening its pool
        await store.open()
    try:
        before = int(await store.schema_version())
        applied: list[int] = [] if check else list(await store.migrate())
        after = int(await store.schema_version())
    finally:
        await store.close()
    return before, after, applied


def migrate(
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url",
            envvar=DATABASE_URL_ENV,
            help="The store to migrate (sqlite:///path or postgresql://...).",
        ),
    ] = DEFAULT_DATABASE_URL,
    check: Annotated[
        bool,
        typer.Option("--check", help="Only report; exit with 1 when migrations are pending."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Apply pending schema migrations to the SQLite or PostgreSQL store."""
    console = console_for()
    shown = redact(database_url)
    scheme = urlsplit(database_url).scheme.lower()
    if scheme not in _DIALECTS:
        if as_json:
            echo_json({"database": shown, "schema": False, "applied": []})
            return
        console.print(f"[bold]{shown}[/]: {scheme or 'this'} store keeps no schema; nothing to do.")
        return
    try:
        before, after, applied = asyncio.run(_migrate(database_url, check))
    except AntifragileError as exc:
        console.print(f"[red]error[/] {exc.code}: {exc}")
        raise typer.Exit(1) from None
    dialect = _DIALECTS[scheme]
    latest = latest_version(dialect)
    if as_json:
        echo_json(
            {
                "database": shown,
                "schema": True,
                "version_before": before,
                "version": after,
                "latest": latest,
                "applied": applied,
                "pending": [m.version for m in load_migrations(dialect) if m.version > after],
            }
        )
        if check and before < latest:
            raise typer.Exit(1)
        return
    listing = table(f"schema of {shown}")
    listing.add_column("version", justify="right")
    listing.add_column("migration")
    listing.add_column("status")
    for migration in load_migrations(dialect):
        if migration.version in applied:
            status = "[green]applied now[/]"
        elif migration.version <= after:
            status = "applied"
        else:
            status = "[yellow]pending[/]"
        listing.add_row(str(migration.version), migration.name, status)
    console.print(listing)
    if check and before < latest:
        console.print(f"[yellow]{latest - before} migration(s) pending[/]")
        raise typer.Exit(1)
    console.print(f"schema version {after} (this antifragile knows {latest})")
