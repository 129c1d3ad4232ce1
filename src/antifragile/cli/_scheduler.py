"""``antifragile scheduler``: enqueue the ticks of an application's periodic jobs until stopped.

Run as many as you like (one per host, say): each tick is enqueued once whatever their number,
by the queue's idempotency keys (see :mod:`antifragile.jobs._scheduler`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from antifragile.cli._load import APP_ENV, Target, load_target
from antifragile.cli._process import process_setup, stop_on_signals
from antifragile.cli._startup import (
    ConfigOption,
    DatabaseUrlOption,
    DebugOption,
    EnvFileOption,
    LogFormatOption,
    LogLevelOption,
    MetricsHostOption,
    MetricsPortOption,
    failures_reported,
    log_warnings,
)
from antifragile.errors import ConfigurationError, redact
from antifragile.jobs._app import DATABASE_URL_ENV, DEFAULT_DATABASE_URL
from antifragile.jobs._scheduler import Fired, Scheduler, schedules_of

_log = logging.getLogger("antifragile.cli")


def _when(tick: int) -> str:
    return datetime.fromtimestamp(tick, UTC).isoformat(timespec="seconds")


def _print_fired(fired: Fired) -> None:
    what = "enqueued" if fired.created else "already enqueued"
    typer.echo(
        f"{fired.schedule} tick={fired.tick} ({_when(fired.tick)}) {what} job={fired.job_id}"
    )
    sys.stdout.flush()


async def _run(
    target: Target,
    tick_interval: float,
    grace: float | None,
    console: Console,
    metrics: tuple[str, int | None],
) -> None:
    from antifragile.cli._jobs import _serve_metrics, _stop_metrics

    jobs = target.jobs
    await target.open()
    server = _serve_metrics(target, metrics[0], metrics[1]) if metrics[1] is not None else None
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
        try:
            await target.close()
        finally:
            if server is not None:
                await asyncio.to_thread(_stop_metrics, server)


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
    database_url: DatabaseUrlOption = None,
    config: ConfigOption = None,
    env_file: EnvFileOption = None,
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
    log_level: LogLevelOption = "info",
    log_format: LogFormatOption = "json",
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = "127.0.0.1",
    debug: DebugOption = False,
) -> None:
    """Enqueue the ticks of the app's periodic jobs (@jobs.every) until stopped.

    Any number of schedulers may run at once: each tick is enqueued exactly once. Each tick
    is a line on standard output (and a log line on standard error).
    """
    console = Console()
    with failures_reported(debug=debug):
        target = load_target(app, config=config)
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
    # the arguments are good: JSON logs (--log-format, standard error) and tracing from here
    # on, put back when the scheduler stops
    with process_setup(console, log_level, log_format), failures_reported(debug=debug):
        _log.info("antifragile scheduler on %s", shown, extra={"database": shown})
        log_warnings(target.assistant)
        asyncio.run(_run(target, tick_interval, grace, console, (metrics_host, metrics_port)))
