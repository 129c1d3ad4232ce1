"""``antifragile erase``: delete every record about one customer.

::

    antifragile erase --phone +447700900123 --dry-run      # count, delete nothing
    antifragile erase --phone +447700900123 --yes          # delete
    antifragile erase --email ada@example.com --yes --json

What is looked at and deleted is :mod:`antifragile.inbound._erasure`'s; the counts per kind of
record are printed (``--json``: the report as one JSON object). Without ``--yes`` it asks
first on a terminal; with no terminal to ask on it refuses: one line, exit 2. Errors are one
line with a stable code and exit 1.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from antifragile.cli._jobs import DatabaseUrl, _run
from antifragile.jobs import Jobs
from antifragile.jobs._app import DEFAULT_DATABASE_URL

if TYPE_CHECKING:
    from antifragile.inbound._erasure import ErasureReport


def erase(
    phone: Annotated[
        str | None, typer.Option("--phone", help="The customer's phone number.")
    ] = None,
    email: Annotated[
        str | None, typer.Option("--email", help="The customer's email address.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be erased; delete nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
) -> None:
    """Delete every record about one customer (inbox, sessions, outbound messages, tasks,
    finished jobs, dead-letter entries), found by phone number or email address."""
    console = Console(stderr=as_json)
    if phone is None and email is None:
        console.print("error VALIDATION: name the customer: --phone, --email or both")
        raise typer.Exit(2)
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            console.print("refusing to erase without --yes (no terminal to confirm on)")
            raise typer.Exit(2)
        if not typer.confirm("Erase every record about this customer?", default=False):
            console.print("nothing erased")
            raise typer.Exit(1)

    # the inbound layer needs the service extra: imported when the command runs

    # the inbound layer needs the service extra: imported when the command runs
    from antifragile.inbound._erasure import erase as erase_records

    async def action(jobs: Jobs) -> ErasureReport:
        return await erase_records(jobs, phone=phone, email=email, dry_run=dry_run)

    report = _run(console, database_url, action)
    if as_json:
        sys.stdout.write(json.dumps(report.to_json()) + "\n")
        return
    verb = "would erase" if dry_run else "erased"
    table = Table("records", verb, title=f"{report.subject}: {verb} {report.total} record(s)")
    for kind, count in sorted(report.counts.items()):
        table.add_row(kind, str(count))
    console.print(table)
    if report.jobs_pending:
        console.print(
            f"{report.jobs_pending} job(s) about this customer are still running: "
            "run erase again once they have finished"
        )
