"""``antifragile scheduler``: enqueue the ticks of an application's periodic jobs until stopped.

Run as many as you like (one per host, say): each tick is enqueued once whatever their number,
by the queue's idempotency keys (see :mod:`antifragile.jobs._scheduler`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from antifragile.errors import AntifragileError, ConfigurationError, redact
from antifragile.jobs._app import DATABASE_URL_ENV, DEFAULT_DATABASE_URL, Jobs
from antifragile.jobs._scheduler import Fired, Scheduler, schedules_of

APP_ENV = "ANTIFRAGILE_APP"


def load_jobs(spec: str) -> Jobs:
    """The :class:`Jobs` named by *spec*, ``package.module:attribute`` (the attribute may be a
    dotted path; an object with a ``jobs`` attribute, such as an application, also works).

    The current directory is importable, as for ``python -m``."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app must look like 'package.module:jobs', got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(target, Jobs):
        target = getattr(target, "jobs", target)
    if not isinstance(target, Jobs):
        raise ConfigurationError(f"{spec!r} is a {type(target).__name__}, not a Jobs")
    return target


def _when(tick: int) -> str:
    return datetime.fromtimestamp(tick, UTC).isoformat(timespec="seconds")


def _print_fired(fired: Fired) -> None:
    what = "enqueued" if fired.created else "already enqueued"
    typer.echo(
        f"{fired.schedule} tick={fired.tick} ({_when(fired.tick)}) {what} job={fired.job_id}"
    )
    sys.stdout.flush()


async def _run(jobs: Jobs, tick_interval: float, grace: float | None, console: Console) -> None:
    async with jobs:
        scheduler = Scheduler(jobs, tick_interval=tick_interval, grace=grace, on_fired=_print_fired)
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
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, scheduler.stop)
                installed.append(sig)
        typer.echo(f"scheduler running (pid {os.getpid()}); stop with Ctrl-C or SIGTERM")
        sys.stdout.flush()
        try:
            await scheduler.run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
        typer.echo("scheduler stopped")


def scheduler(
    app: Annotated[
        str,
        typer.Option(
            "--app",
            envvar=APP_ENV,
            help="Where the Jobs object is: 'package.module:attribute'.",
        ),
    ],
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
) -> None:
    """Enqueue the ticks of the app's periodic jobs (@jobs.every) until stopped.

    Any number of schedulers may run at once: each tick is enqueued exactly once.
    """
    console = Console()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        jobs = load_jobs(app)
        if not schedules_of(jobs):
            raise ConfigurationError(f"{app!r} declares no periodic job (@jobs.every)")
        if database_url is not None:
            if jobs.is_open:
                console.print("[yellow]the app's Jobs has its own queue; --database-url unused[/]")
            else:
                jobs.database_url = database_url
        shown = redact(jobs.database_url or os.environ.get(DATABASE_URL_ENV, DEFAULT_DATABASE_URL))
        console.print(f"[bold]antifragile scheduler[/] on {shown}")
        asyncio.run(_run(jobs, tick_interval, grace, console))
    except AntifragileError as exc:
        console.print(f"[red]error[/] {exc.code}: {exc}")
        raise typer.Exit(1) from None
