"""The ``antifragile`` command."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live

import antifragile
from antifragile.cli._demo import (
    NAIVE_RETRIES,
    DemoConfig,
    RunStats,
    build_phases,
    run_naive,
    run_resilient,
    timeline,
)
from antifragile.cli._jobs import dlq_app, jobs_app, worker
from antifragile.cli._migrate import migrate
from antifragile.cli._report import board, summary_table, timeline_table
from antifragile.cli._sandbox import sandbox
from antifragile.cli._scheduler import scheduler
from antifragile.cli._serve import breakers, health, serve
from antifragile.sandbox import Fault, FlakyServer

app = typer.Typer(
    rich_markup_mode=None,
    name="antifragile",
    help="Keeps integrations working when the providers they call fail.",
    no_args_is_help=True,
    add_completion=False,
)

app.command()(migrate)
app.command()(sandbox)
app.command()(scheduler)
app.command()(worker)
app.command()(serve)
app.command()(health)
app.command()(breakers)
app.add_typer(jobs_app, name="jobs")
app.add_typer(dlq_app, name="dlq")

_ORDER = Fault.ok(json={"id": "ord_1", "status": "accepted"})


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


def _end_live(console: Console) -> None:
    """Live ends its last frame with a newline only on a terminal; do it everywhere else."""
    if not console.is_terminal:
        console.line()


async def _play(
    config: DemoConfig,
    console: Console,
    name: str,
    run: Callable[[DemoConfig, RunStats], Awaitable[None]],
) -> dict[str, Any]:
    """One run against a fresh server, with a live board; returns its summary."""
    async with FlakyServer(phases=build_phases(config), default=_ORDER) as server:
        stats = RunStats(name, config.calls, server)
        with Live(get_renderable=lambda: board(stats), console=console, refresh_per_second=8):
            await run(config, stats)
        _end_live(console)
        return stats.summary()


async def _run_demo(config: DemoConfig, console: Console) -> dict[str, Any]:
    runs = {
        "resilient": await _play(config, console, "resilient", run_resilient),
        "naive": await _play(config, console, "naive", run_naive),
    }
    return {
        "version": antifragile.__version__,
        "seed": config.seed,
        "calls": config.calls,
        "concurrency": config.concurrency,
        "quick": config.quick,
        "naive_retries": NAIVE_RETRIES,
        "timeline": timeline(config),
        "runs": runs,
    }


@app.command()
def demo(
    calls: Annotated[
        int | None,
        typer.Option(min=1, help="Calls in the workload [default: 300, or 60 with --quick]."),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Calls in flight at most.")] = 20,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the fault draws [default: a random one].")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A run of about 5 s: fewer calls, shorter faults.")
    ] = False,
    json_path: Annotated[
        Path | None,
        typer.Option("--json", dir_okay=False, help="Also write the summary to this JSON file."),
    ] = None,
) -> None:
    """Send one workload to a failing local provider twice: with antifragile, then naively.

    The provider plays a fault timeline (503 bursts, 429 with Retry-After, slow answers,
    connection resets, an outage); the summary compares what each client achieved and what
    it cost the provider.
    """
    config = DemoConfig(
        calls=calls if calls is not None else (60 if quick else 300),
        concurrency=concurrency,
        seed=seed if seed is not None else random.SystemRandom().randrange(100_000),
        quick=quick,
    )
    console = Console()
    console.print(
        f"[bold]antifragile demo[/] — {config.calls} calls at "
        f"{config.pace.arrival_rate:g}/s, {config.concurrency} in flight at most, "
        f"seed {config.seed}"
    )
    console.print(timeline_table(config))
    summary = asyncio.run(_run_demo(config, console))
    console.print(summary_table(summary))
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        console.print(f"Summary written to {json_path}")


def main() -> None:
    """Entry point of the ``antifragile`` console script."""
    app()
