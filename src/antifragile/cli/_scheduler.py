"""``antifragile scheduler``: enqueue the ticks of an application's periodic jobs until stopped.

Run as many as you like (one per host, say): each tick is enqueued once whatever their number,
by the queue's idempotency keys (see :mod:`antifragile.jobs._scheduler`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from antifragile.cli._load import APP_ENV, Target, load_target
from antifragile.cli._process import (
    LOG_LEVELS,
    check_log_level,
    process_setup,
    stop_on_signals,
)
from antifragile.errors import AntifragileError, ConfigurationError, redact
from antifragile.jobs._app import DATABASE_URL_ENV, DEFAULT_DATABASE_URL
from antifragile.jobs._scheduler import Fired, Scheduler, schedules_of


def _when(tick: int) -> str:
    return datetime.fromtimestamp(tick, UTC).isoformat(timespec="seconds")


def _print_fired(fired: Fired) -> None:
    what = "enqueued" if fired.created else "already enqueued"
    typer.echo(
        f"{fired.schedule} tick={fired.tick} ({_when(fired.tick)}) {what} job={fired.job_id}"
    )
    sys.stdout.flush()


async def _run(target: Target, tick_interval: float, grace: float | None, console: Console) -> None:
    jobs = target.jobs
    await target.open()
    try:
        if target.assistant is not None:  # the service's: its retention settings apply
            scheduler = target.assistant.scheduler(
                tick_interval=tick_interval, grace=grace, on_fired=_print_fired
            )
        else:
            scheduler = Scheduler(
                jobs, tick_interval=tick_interval, grace=grace, on_fired=_print_fired
            )
        watchdog = None
        if target.assistant is not None:  # alerts no worker may be there to judge
            from antifragile.service._watchdog import watchdog_for

            watchdog = watchdog_for(target.assistant)
        now = jobs.clock.time()
        table = Table(title="schedules", title_justify="left")
        for column in ("name", "cron", "time zone", "catch-up", "queue", "next tick"):
            table.add_column(column)
        for schedule in scheduler.schedules:
            table.add_row(
                schedule.name,
                schedule.expression,
                schedule.timezone,
                schedule.catch_up,
                schedule.function.queue,
                _when(schedule.next_tick(now)),
            )
        console.print(table)

        def stop() -> None:
            scheduler.stop()
            if watchdog is not None:
                watchdog.stop()

        with stop_on_signals(stop):
            typer.echo(f"scheduler running (pid {os.getpid()}); stop with Ctrl-C or SIGTERM")
            sys.stdout.flush()
            await asyncio.gather(scheduler.run(), *([] if watchdog is None else [watchdog.run()]))
        typer.echo("scheduler stopped")
    finally:
        await target.close()


def scheduler(
    app: Annotated[
        str | None,
        typer.Option(
            "--app",
            envvar=APP_ENV,
            help="Where the Jobs object is: 'package.module:attribute' "
            "[default: the service's own jobs, from the ANTIFRAGILE_* settings].",
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar=DATABASE_URL_ENV,
            help=f"The job queue's database (default: the app's own, else {DEFAULT_DATABASE_URL}).",
        ),
    ] = None,
    tick_interval: Annotated[
        float, typer.Option(min=0.01, help="Seconds between passes at most.")
    ] = 1.0,
    grace: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="How late a tick may fire and count as on time (default: max(10, 3 x interval)).",
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(callback=check_log_level, help=f"Logging level ({', '.join(LOG_LEVELS)})."),
    ] = "WARNING",
) -> None:
    """Enqueue the ticks of the app's periodic jobs (@jobs.every) until stopped.

    Any number of schedulers may run at once: each tick is enqueued exactly once.
    """
    console = Console()
    try:
        target = load_target(app)
        jobs = target.jobs
        if not schedules_of(jobs):
            raise ConfigurationError(f"{app!r} declares no periodic job (@jobs.every)")
        if database_url is not None:
            if jobs.is_open:
                console.print("[yellow]the app's Jobs has its own queue; --database-url unused[/]")
            else:
                jobs.database_url = database_url
        shown = redact(jobs.database_url or os.environ.get(DATABASE_URL_ENV, DEFAULT_DATABASE_URL))
        console.print(f"[bold]antifragile scheduler[/] on {shown}")
    except AntifragileError as exc:
        console.print(f"[red]error[/] {exc.code}: {exc}")
        raise typer.Exit(1) from None
    # the arguments are good: JSON logs (ANTIFRAGILE_LOG_FORMAT, standard error) and tracing
    # from here on, put back when the scheduler stops
    with process_setup(console, log_level):
        try:
            asyncio.run(_run(target, tick_interval, grace, console))
        except AntifragileError as exc:
            console.print(f"[red]error[/] {exc.code}: {exc}")
            raise typer.Exit(1) from None
