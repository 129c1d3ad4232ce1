"""``antifragile jobs prune``: delete old succeeded and resolved jobs now (the scheduler does it
hourly on its own), with ``--dry-run`` to count first.

Like every destructive command it asks for confirmation on a terminal and, when stdin is not
one (a script, a pipe, cron), refuses to run without ``--yes``: one line, exit status 2.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from antifragile.cli._jobs import DatabaseUrl, _run, parse_duration
from antifragile.jobs._app import DEFAULT_DATABASE_URL, Jobs
from antifragile.jobs._retention import DAY, Pruned, Retention, prunable, prune

#: the one-line refusal's code (exit status 2)
CONFIRMATION_REQUIRED = "CONFIRMATION_REQUIRED"


def _sentence(pruned: Pruned, *, verb: str) -> str:
    return (
        f"{verb} {pruned.succeeded} succeeded job(s), {pruned.resolved} resolved job(s) and "
        f"{pruned.processes} dead process record(s)"
    )


def jobs_prune(
    older_than: Annotated[
        str,
        typer.Option("--older-than", help="Delete succeeded jobs older than this (e.g. 7d)."),
    ] = "7d",
    resolved_older_than: Annotated[
        str,
        typer.Option(
            "--resolved-older-than",
            help="Delete resolved dead-letter jobs older than this (e.g. 30d).",
        ),
    ] = "30d",
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete succeeded and resolved jobs older than the given ages, in bounded batches.

    Dead jobs that are not resolved are never deleted: they wait for an operator."""
    console = Console()
    retention = Retention(
        succeeded=parse_duration(older_than),
        resolved=parse_duration(resolved_older_than),
        processes=DAY,
    )
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            typer.echo(
                f"error {CONFIRMATION_REQUIRED}: jobs prune deletes jobs; pass --yes to run it "
                "without a terminal (or --dry-run to count first)",
                err=True,
            )
            raise typer.Exit(2)
        if not typer.confirm(
            f"Delete succeeded jobs older than {older_than} and resolved ones older than "
            f"{resolved_older_than}?"
        ):
            raise typer.Exit(1)

    async def action(jobs: Jobs) -> Pruned:
        now = jobs.clock.time()
        if dry_run:
            return await prunable(jobs.queue, retention, now=now)
        return await prune(jobs.queue, retention, now=now)

    pruned = _run(console, database_url, action)
    if as_json:
        typer.echo(json.dumps({"dry_run": dry_run, **pruned.to_json()}, indent=2))
        return
    console.print(_sentence(pruned, verb="would delete" if dry_run else "deleted"))
