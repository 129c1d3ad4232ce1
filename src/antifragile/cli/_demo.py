"""``antifragile demo``: the service under a scripted incident (see :mod:`antifragile.demo`)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from antifragile.errors import ConfigurationError

if TYPE_CHECKING:
    from antifragile.demo import FaultScript

DEFAULT_REPORT_DIR = Path("antifragile-demo-report")


def script_table(script: FaultScript) -> Table:
    table = Table(
        title=f"Fault script “{script.name}” (seconds after the first customer writes)",
        title_justify="left",
    )
    for name in ("what", "provider", "from", "to"):
        table.add_column(name, justify="right" if name in ("from", "to") else "left")
    for window in script.faults:
        table.add_row(
            window.label or window.provider,
            window.provider,
            f"{window.start:g}",
            f"{window.end:g}",
        )
    for at in script.worker_restarts:
        table.add_row("worker restart", "-", f"{at:g}", "", style="bold")
    return table


def demo(
    customers: Annotated[
        int | None,
        typer.Option(min=1, max=500, help="Simulated customers [default: 24, or 8 with --quick]."),
    ] = None,
    faults: Annotated[
        Path | None,
        typer.Option(
            "--faults",
            exists=True,
            dir_okay=False,
            help="A fault script (YAML or JSON) instead of the built-in one.",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="The service's database [default: a temporary SQLite file]."),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A run of about 10 s: fewer customers, a faster script."),
    ] = False,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the customers and fault draws [default: random].")
    ] = None,
    report_dir: Annotated[
        Path,
        typer.Option(file_okay=False, help="Where report.html, timeline.svg, summary.json go."),
    ] = DEFAULT_REPORT_DIR,
    baseline: Annotated[
        bool,
        typer.Option("--baseline/--no-baseline", help="Also run the naive-retry baseline."),
    ] = True,
) -> None:
    """Run the service through an incident: customers on WhatsApp while providers fail.

    Starts the provider sandbox, the service (API and worker, on a temporary SQLite file) and
    simulated customers who go through the intake flow over signed WhatsApp webhooks, while a
    fault script plays: Shopify down, Resend 429 bursts, HubSpot timing out after acting,
    WhatsApp 5xx and its status webhooks delayed, lost or duplicated, a worker restart. The same
    customers and faults hit a naive client (retry at once, no breaker, no idempotency key) on a
    second sandbox. The report compares the side effects each provider recorded with those
    expected, and what it cost them, and ends with the replies delivered and the dead-letter
    entries left for an operator (exit status 1 when any reply is missing or any entry is
    left).
    """
    # imported here: the service and its dependencies load only for the demo
    from antifragile.demo import (
        DEFAULT_SCRIPT,
        FULL_PACE,
        QUICK_PACE,
        DemoConfig,
        Progress,
        load_fault_script,
        run_demo,
    )
    from antifragile.demo._report import board, summary, write_report

    pace = QUICK_PACE if quick else FULL_PACE
    try:
        script = load_fault_script(faults) if faults is not None else DEFAULT_SCRIPT
    except ConfigurationError as exc:
        raise typer.BadParameter(exc.message, param_hint="--faults") from None
    if faults is None and pace.script_scale != 1.0:
        script = script.scaled(pace.script_scale)
    config = DemoConfig(
        customers=customers if customers is not None else pace.customers,
        seed=seed if seed is not None else random.SystemRandom().randrange(100_000),
        script=script,
        pace=pace,
        database_url=database_url,
        baseline=baseline,
        quick=quick,
    )
    console = Console()
    console.print(
        f"[bold]antifragile demo[/] — {config.customers} customers, seed {config.seed}"
        f"{', quick' if quick else ''}; no external service, no network"
    )
    console.print(script_table(script))
    progress = Progress(customers=config.customers)
    try:
        with Live(get_renderable=lambda: board(progress), console=console, refresh_per_second=4):
            result = asyncio.run(run_demo(config, progress))
    except KeyboardInterrupt:
        console.print("Interrupted: no report written.")
        raise typer.Exit(130) from None
    except ConfigurationError as exc:
        raise typer.BadParameter(exc.message) from None
    if not console.is_terminal:
        console.line()
    console.print(summary(result))
    files = write_report(result, report_dir)
    console.print(f"Report written to {files.html} (timeline: {files.png}, data: {files.json})")
    if not result.truthful:
        raise typer.Exit(1)
