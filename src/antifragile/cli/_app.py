"""The ``antifragile`` command."""

from __future__ import annotations

from typing import Annotated

import typer

import antifragile
from antifragile.cli._backup import backup, restore
from antifragile.cli._demo import demo
from antifragile.cli._erase import erase
from antifragile.cli._jobs import dlq_app, jobs_app, worker
from antifragile.cli._migrate import migrate
from antifragile.cli._prune import jobs_prune
from antifragile.cli._sandbox import sandbox
from antifragile.cli._scheduler import scheduler
from antifragile.cli._serve import breakers, health, serve

app = typer.Typer(
    rich_markup_mode=None,
    name="antifragile",
    help="Keeps integrations working when the providers they call fail.",
    no_args_is_help=True,
    add_completion=False,
)

app.command()(demo)
app.command()(migrate)
app.command()(sandbox)
app.command()(scheduler)
app.command()(worker)
app.command()(serve)
app.command()(health)
app.command()(breakers)
app.command()(backup)
app.command()(restore)
jobs_app.command("prune")(jobs_prune)
app.command()(erase)
app.add_typer(jobs_app, name="jobs")
app.add_typer(dlq_app, name="dlq")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"antifragile {antifragile.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Keeps integrations working when the providers they call fail."""


def main() -> None:
    """Entry point of the ``antifragile`` console script."""
    app()
