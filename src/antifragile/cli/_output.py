"""What every command shares about its output: tables never cut, and confirmation before a
command deletes or changes many records.

Tables go to a terminal at its width (the id column is never elided); piped, or with
``--wide``, they are printed at their natural width, however long the lines.

A destructive command asks on a terminal, goes ahead with ``--yes``, and without ``--yes``
refuses when its input is not a terminal: one line on stderr, exit status 2.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

#: the exit status of a refused destructive command (as for any usage error)
REFUSED = 2
#: wide enough for any row: a table narrower than this prints at its natural width
_NATURAL = 100_000

WideOpt = Annotated[
    bool,
    typer.Option("--wide", "-w", help="Full ids and texts; never shorten a column."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking.")]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Show what would be done; change nothing.")
]


def stdin_is_terminal() -> bool:
    """Whether someone can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()


def console_for(wide: bool = False, *, stderr: bool = False) -> Console:
    """A console whose tables are never cut: at the terminal's width on a terminal, at their
    natural width when piped or with *wide*."""
    stream = sys.stderr if stderr else sys.stdout
    if wide or not stream.isatty():
        return Console(width=_NATURAL, stderr=stderr, soft_wrap=True)
    return Console(stderr=stderr)


def table(title: str | None = None, *, id_width: int | None = None, **options: Any) -> Table:
    """A table with the project's look; with *id_width*, its first column is an ``id`` that
    never wraps nor shrinks below that width."""
    made = Table(title=title, title_justify="left", **options)
    if id_width is not None:
        made.add_column("id", no_wrap=True, min_width=id_width)
    return made


def echo_json(data: Any) -> None:
    """*data* as indented JSON on stdout."""
    typer.echo(json.dumps(data, indent=2))


def confirm(what: str, *, yes: bool) -> None:
    """Go ahead when *yes*; else ask on a terminal (exit 1 on "no"), and refuse (exit 2, one
    line) when nobody can answer."""
    if yes:
        return
    if not stdin_is_terminal():
        typer.echo(
            f"error CONFIRMATION_REQUIRED: {what} needs --yes when input is not a terminal "
            "(--dry-run shows what it would do)",
            err=True,
        )
        raise typer.Exit(REFUSED)
    if not typer.confirm(f"{what}?", default=False, err=True):
        typer.echo("nothing done", err=True)
        raise typer.Exit(1)
