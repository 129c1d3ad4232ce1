"""``antifragile worker``, ``antifragile jobs list`` and ``antifragile dlq ...``.

Every command reads the database from ``--database-url`` or ``ANTIFRAGILE_DATABASE_URL``
(default ``sqlite:///antifragile.db``). Errors are one line with a stable code and exit 1 --
never a traceback; secrets in URLs, payloads and error messages are redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote, urlsplit

import typer
from rich.console import Console
from rich.markup import escape

from antifragile.cli._load import APP_ENV, load_target
from antifragile.cli._output import (
    DryRunOpt,
    JsonOpt,
    WideOpt,
    YesOpt,
    confirm,
    console_for,
    echo_json,
    table,
)
from antifragile.cli._process import process_setup
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
from antifragile.errors import AntifragileError, ConfigurationError, redact
from antifragile.jobs._app import (
    DATABASE_URL_ENV,
    DEFAULT_DATABASE_URL,
    DeadLetterFilter,
    JobNotFoundError,
    Jobs,
)
from antifragile.jobs._ids import SHORT_ID_LENGTH, find_job, short_id
from antifragile.jobs._model import CLAIMABLE, Job, JobFilter, JobState
from antifragile.jobs._view import attempts_of, job_view

T = TypeVar("T")

#: the default of ``worker --concurrency``; the service's own worker reads it too
WORKER_CONCURRENCY_ENV = "ANTIFRAGILE_WORKER_CONCURRENCY"


_log = logging.getLogger("antifragile.cli")

jobs_app = typer.Typer(help="Inspect durable jobs.", no_args_is_help=True, rich_markup_mode=None)
dlq_app = typer.Typer(
    rich_markup_mode=None,
    help="The dead-letter queue: list, show, retry, resolve and purge failed jobs.",
    no_args_is_help=True,
)

DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        envvar=DATABASE_URL_ENV,
        help="The job database (sqlite:///path or postgresql://...).",
    ),
]

# -- helpers ------------------------------------------------------------------------------------

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``7d``, ``1w`` -> seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration (examples: 90s, 15m, 2h, 7d)")
    return float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]


def _duration_option(value: str | None) -> float | None:
    return None if value is None else parse_duration(value)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 10 * size:
            return f"{seconds // size:.0f}{unit}"
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _relative(epoch: float | None, now: float) -> str:
    if epoch is None:
        return "-"
    delta = epoch - now
    return f"in {_age(delta)}" if delta > 0 else f"{_age(-delta)} ago"


def _fail(console: Console, exc: AntifragileError) -> typer.Exit:
    console.print(f"[red]error[/] {exc.code}: {escape(str(exc))}")
    return typer.Exit(1)


def _check_database(url: str) -> None:
    """Refuse to create an empty SQLite file just to look into it."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        return
    path = unquote(parts.path)
    if parts.netloc and parts.netloc != "localhost":
        path = f"{parts.netloc}{path}"
    path = path[1:] if path.startswith("/") else path
    if path and path != ":memory:" and not Path(path).exists():
        raise ConfigurationError(f"no database at {path!r} (check --database-url)")


def _run(console: Console, url: str, action: Callable[[Jobs], Awaitable[T]]) -> T:
    """Open the jobs of *url*, run *action*, close; errors become one line and exit 1."""

    async def main() -> T:
        _check_database(url)
        async with Jobs(database_url=url) as jobs:
            return await action(jobs)

    try:
        return asyncio.run(main())
    except AntifragileError as exc:
        raise _fail(console, exc) from None


def _filter(
    queue: str | None,
    name: str | None,
    provider: str | None,
    code: str | None,
    older_than: float | None,
    newer_than: float | None,
    ids: Sequence[str] = (),
) -> DeadLetterFilter:
    return DeadLetterFilter(
        queue=queue,
        name=name,
        provider=provider,
        error_code=code,
        older_than=older_than,
        newer_than=newer_than,
        ids=tuple(ids),
    )


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    text = " ".join(redact(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- antifragile worker -------------------------------------------------------------------------


def worker(
    app: Annotated[
        str | None,
        typer.Option(
            "--app",
            envvar=APP_ENV,
            help="Your Jobs object as module:attribute (e.g. myapp.jobs:jobs) "
            "[default: the service's own jobs, from the ANTIFRAGILE_* settings].",
        ),
    ] = None,
    database_url: DatabaseUrlOption = None,
    config: ConfigOption = None,
    env_file: EnvFileOption = None,
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", help="A queue to work (repeatable) [default: all]."),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option(
            min=1,
            envvar=WORKER_CONCURRENCY_ENV,
            help="Jobs in flight at most (the setting the service's own worker uses too).",
        ),
    ] = 10,
    lease: Annotated[float, typer.Option(min=0.1, help="Lease of a claimed job (s).")] = 30.0,
    heartbeat: Annotated[
        float | None,
        typer.Option(min=0.05, help="Lease renewal period (s) [default: lease / 3]."),
    ] = None,
    poll_interval: Annotated[
        float,
        typer.Option(
            min=0.01,
            help="Longest idle wait before looking at the queue again (s); new jobs wake the "
            "worker at once, this is the fallback when a wake-up is lost.",
        ),
    ] = 0.2,
    batch: Annotated[int, typer.Option(min=1, help="Jobs claimed or completed per call.")] = 50,
    grace: Annotated[
        float,
        typer.Option(min=0.0, help="On SIGTERM, time left to running jobs before release (s)."),
    ] = 30.0,
    log_level: LogLevelOption = "info",
    log_format: LogFormatOption = "json",
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = "127.0.0.1",
    debug: DebugOption = False,
) -> None:
    """Run jobs: claim them with a lease, run them, retry or dead-letter failures.

    SIGTERM or Ctrl+C stops claiming and lets running jobs finish for --grace seconds, then
    releases the rest to other workers; a second signal releases at once.
    """
    from antifragile.jobs._worker import Worker

    console = Console(stderr=True)
    with failures_reported(debug=debug):
        target = load_target(app, config=config)
        jobs = target.jobs
        if database_url:
            if jobs.is_open:
                raise ConfigurationError("--database-url given, but the app's queue is open")
            jobs.database_url = database_url
        options: dict[str, Any] = {
            "queues": queue or None,
            "concurrency": concurrency,
            "lease": lease,
            "heartbeat": heartbeat if heartbeat is not None else lease / 3,
            "poll_interval": poll_interval,
            "batch": batch,
            "shutdown_grace": grace,
        }
        # the service's worker: the assistant's own options (its concurrency setting)
        make = getattr(target.assistant, "worker", None)
        runner = make(**options) if callable(make) else Worker(jobs, **options)
    shown = redact(jobs.database_url or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL)

    async def main() -> None:
        metrics: Any = None
        try:
            await target.open()
            if metrics_port is not None:
                metrics = _serve_metrics(target, metrics_host, metrics_port)
            await runner.run(handle_signals=True)
        finally:
            try:
                await target.close()
            finally:
                if metrics is not None:
                    await asyncio.to_thread(_stop_metrics, metrics)

    # the arguments are good: JSON logs (--log-format) and tracing from here on, put back when
    # the worker stops
    with process_setup(console, log_level, log_format), failures_reported(debug=debug):
        _log.info(
            "antifragile worker %s on %s: %d job function(s), queues %s, concurrency %d",
            runner.id,
            shown,
            len(jobs.registry),
            ", ".join(queue or ["(all)"]),
            concurrency,
        )
        log_warnings(target.assistant)
        with contextlib.suppress(KeyboardInterrupt):  # signal handlers normally catch it
            asyncio.run(main())


def _serve_metrics(target: Any, host: str, port: int) -> Any:
    """Serve the worker's metrics (its job runs and outbound calls; the queue gauges are left
    to the API's ``/metrics``) from a thread; the server (``shutdown()`` stops it)."""
    from prometheus_client import start_http_server

    from antifragile.service._metrics import metrics_for, observe_connectors

    metrics = getattr(target.assistant, "metrics", None)
    if metrics is None:  # an application of your own: count its jobs here
        metrics = metrics_for(target.jobs)
    connectors = getattr(target.assistant, "connectors", None)
    if connectors is not None:
        observe_connectors(metrics, connectors)
    metrics.watch_queues(None)
    server, _ = start_http_server(port, addr=host, registry=metrics.registry)
    return server


def _stop_metrics(server: Any) -> None:
    """Stop the metrics server of :func:`_serve_metrics` and close its socket."""
    server.shutdown()
    server.server_close()


# -- antifragile jobs list / show ---------------------------------------------------------------


def _ident(job_id: str, wide: bool) -> str:
    return job_id if wide else short_id(job_id)


@jobs_app.command("list")
def jobs_list(
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    state: Annotated[
        list[JobState] | None,
        typer.Option("--state", "-s", help="Only jobs in this state (repeatable)."),
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Only jobs of this queue.")] = None,
    name: Annotated[str | None, typer.Option(help="Only jobs of this job function.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Jobs to show at most.")] = 50,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Queues (jobs per state, lag) and the most recently changed jobs."""
    console = console_for(wide)
    where = JobFilter(states=tuple(state or ()), queue=queue, name=name)

    async def action(jobs: Jobs) -> tuple[list[Any], list[Job], float]:
        now = jobs.clock.time()
        return await jobs.stats(), await jobs.find(where, limit=limit), now

    stats, found, now = _run(console, database_url, action)
    if as_json:
        payload = {
            "queues": [
                {"queue": s.queue, "counts": s.counts, "oldest_ready_at": s.oldest_ready_at}
                for s in stats
            ],
            "jobs": [job_view(job) for job in found],
        }
        echo_json(payload)
        return
    states = [s.value for s in JobState]
    queues = table("queues")
    queues.add_column("queue")
    for s in states:
        queues.add_column(s, justify="right")
    queues.add_column("lag", justify="right")
    for entry in stats:
        lag = "-" if entry.oldest_ready_at is None else _age(now - entry.oldest_ready_at)
        queues.add_row(entry.queue, *(str(entry.counts.get(s, 0)) for s in states), lag)
    console.print(queues)
    listing = table(f"jobs ({len(found)} shown)", id_width=SHORT_ID_LENGTH)
    for column in ("job", "queue", "state", "attempts", "run at", "updated", "last error"):
        listing.add_column(column)
    for job in found:
        listing.add_row(
            _ident(job.id, wide),
            job.name,
            job.queue,
            job.state.value,
            f"{job.attempts}/{job.max_attempts}",
            _relative(job.run_at, now) if job.state in CLAIMABLE else "-",
            _relative(job.updated_at, now),
            escape(job.last_error_code or ""),
        )
    console.print(listing)


def _print_job(console: Console, job: Job, title: str) -> None:
    """*job* in full: its fields, payload (redacted) and every attempt."""
    data = job_view(job)
    info = table(f"{title} {job.id}", show_header=False)
    info.add_column(style="bold")
    info.add_column()
    rows = [
        ("short id", data["short_id"]),
        ("job", job.name),
        ("queue", job.queue),
        ("provider", job.provider or "-"),
        ("state", job.state.value),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("idempotency key", job.idempotency_key or "-"),
        ("request id", data["request_id"] or "-"),
        ("created", _when(job.created_at)),
        ("run at", _when(job.run_at)),
        ("first failure", _when(job.first_failed_at)),
        ("last failure", _when(job.last_failed_at)),
        ("last error", f"{job.last_error_code or '-'}: {data['last_error'] or ''}"),
        ("reason", data["reason"] or "-"),
    ]
    if job.resolution:
        rows.append(("resolution", job.resolution))
    for key, value in rows:
        info.add_row(key, escape(str(value)))
    console.print(info)
    console.print("[bold]payload[/] (redacted)")
    console.print(escape(json.dumps(data["payload"], indent=2, sort_keys=True)))
    attempts = table("attempts")
    for column in ("#", "started", "duration", "code", "HTTP", "message"):
        attempts.add_column(column)
    for record in data["history"]:
        duration = record.get("duration")
        attempts.add_row(
            str(record.get("number", "")),
            _when(record.get("started_at")),
            "-" if duration is None else f"{float(duration):.3f}s",
            escape(str(record.get("code") or "ok")),
            str(record.get("status") or "-"),
            escape(str(record.get("message") or "")),
        )
    console.print(attempts)


IdArg = Annotated[
    str,
    typer.Argument(
        help=f"The job's id, its short form (last {SHORT_ID_LENGTH} characters) or a prefix.",
        show_default=False,
    ),
]


@jobs_app.command("show")
def jobs_show(
    job_id: IdArg,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """One job in any state: its payload (redacted) and every attempt."""
    console = console_for(wide)

    async def action(jobs: Jobs) -> Job:
        return await find_job(jobs.queue, job_id)

    job = _run(console, database_url, action)
    if as_json:
        echo_json(job_view(job))
        return
    _print_job(console, job, "job")


# -- antifragile dlq ... ------------------------------------------------------------------------

QueueOpt = Annotated[str | None, typer.Option(help="Only jobs of this queue.")]
NameOpt = Annotated[str | None, typer.Option(help="Only jobs of this job function.")]
ProviderOpt = Annotated[str | None, typer.Option(help="Only jobs of this provider.")]
CodeOpt = Annotated[
    str | None, typer.Option("--code", help="Only jobs whose last error has this code.")
]
OlderOpt = Annotated[
    str | None,
    typer.Option("--older-than", help="Only jobs that died longer ago than this (e.g. 2h, 7d)."),
]
NewerOpt = Annotated[
    str | None,
    typer.Option("--newer-than", help="Only jobs that died within this (e.g. 30m, 1d)."),
]
IdsArg = Annotated[
    list[str] | None,
    typer.Argument(help="Dead jobs: ids, short ids or prefixes.", show_default=False),
]
#: jobs read per page when a command lists what it is about to change
_PAGE = 500


async def _dead_jobs(jobs: Jobs, texts: Sequence[str]) -> list[Job]:
    """The dead jobs *texts* name -- every one checked before anything changes (unknown,
    malformed, ambiguous or not dead: an error)."""
    found: dict[str, Job] = {}
    for text in texts:
        job = await find_job(jobs.queue, text)
        if job.state is not JobState.DEAD:
            raise JobNotFoundError(
                f"job {job.id!r} is not in the dead-letter queue (it is {job.state.value})"
            )
        found[job.id] = job
    return list(found.values())


async def _matching(jobs: Jobs, where: JobFilter) -> list[Job]:
    """Every job *where* matches, page by page."""
    found: list[Job] = []
    while True:
        page = await jobs.queue.find(where, limit=_PAGE, offset=len(found))
        found.extend(page)
        if len(page) < _PAGE:
            return found


def _check_target(ids: Sequence[str], everything: bool, flt: DeadLetterFilter) -> None:
    has_filter = flt != DeadLetterFilter()
    if ids and (everything or has_filter):
        raise ConfigurationError("give job ids, or filters / --all, not both")
    if not ids and not everything and not has_filter:
        raise ConfigurationError("name the jobs: give their ids, filters, or --all")


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a dlq command is about to change: the jobs (listed for --dry-run and the
    question), whether to ask first, and the verb to say."""

    verb: str
    jobs: list[Job]
    ask: bool

    @property
    def ids(self) -> list[str]:
        return [job.id for job in self.jobs]

    @property
    def question(self) -> str:
        return f"{self.verb} {len(self.jobs)} job(s)"


def _preview(console: Console, plan: _Plan, now: float, wide: bool) -> None:
    """What *plan* would do, as a table."""
    listing = table(f"would {plan.question}", id_width=SHORT_ID_LENGTH)
    for column in ("job", "queue", "state", "code", "changed"):
        listing.add_column(column)
    for job in plan.jobs:
        listing.add_row(
            _ident(job.id, wide),
            job.name,
            job.queue,
            job.state.value,
            escape(job.last_error_code or "-"),
            _relative(job.updated_at, now),
        )
    console.print(listing)


def _go_ahead(plan: _Plan, *, dry_run: bool, yes: bool) -> bool:
    """Whether to change anything: not on --dry-run nor when nothing matches; a bulk change
    is confirmed first (see :func:`~antifragile.cli._output.confirm`)."""
    if dry_run or not plan.jobs:
        return False
    if plan.ask:
        confirm(plan.question, yes=yes)
    return True


def _report(
    console: Console,
    plan: _Plan,
    count: int,
    *,
    done: bool,
    dry_run: bool,
    as_json: bool,
    wide: bool,
    now: float,
    extra: dict[str, Any] | None = None,
    said: str = "",
) -> None:
    if as_json:
        echo_json(
            {
                "action": plan.verb,
                "dry_run": dry_run,
                "matched": len(plan.jobs),
                "count": count,
                "ids": plan.ids,
                **(extra or {}),
            }
        )
        return
    if dry_run:
        _preview(console, plan, now, wide)
        console.print(f"dry run: nothing changed ({len(plan.jobs)} job(s) match)")
    elif not done:
        console.print(f"no dead jobs match: nothing to {plan.verb}")
    else:
        console.print(said)


@dlq_app.command("list")
def dlq_list(
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    queue: QueueOpt = None,
    name: NameOpt = None,
    provider: ProviderOpt = None,
    code: CodeOpt = None,
    older_than: OlderOpt = None,
    newer_than: NewerOpt = None,
    resolved: Annotated[bool, typer.Option("--resolved", help="Include resolved jobs.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Jobs to show at most.")] = 50,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Dead jobs, the most recent first, with their last error."""
    console = console_for(wide)
    flt = _filter(
        queue, name, provider, code, _duration_option(older_than), _duration_option(newer_than)
    )

    async def action(jobs: Jobs) -> tuple[list[Job], float]:
        found = await jobs.dlq.list(flt, limit=limit, include_resolved=resolved)
        return found, jobs.clock.time()

    found, now = _run(console, database_url, action)
    if as_json:
        echo_json([job_view(job) for job in found])
        return
    listing = table(f"dead-letter queue ({len(found)} shown)", id_width=SHORT_ID_LENGTH)
    for column in ("job", "queue", "provider", "attempts", "code", "HTTP", "error", "died"):
        listing.add_column(column)
    for job in found:
        last = attempts_of(job)[-1] if job.history else {}
        state = "" if job.state is JobState.DEAD else " (resolved)"
        listing.add_row(
            _ident(job.id, wide),
            job.name,
            job.queue,
            job.provider or "-",
            str(job.attempts),
            escape(job.last_error_code or "-"),
            str(last.get("status") or "-"),
            escape(_short(job.last_error, 100_000 if wide else 60)),
            _relative(job.updated_at, now) + state,
        )
    console.print(listing)
    if not found:
        console.print("no dead jobs match")


@dlq_app.command("show")
def dlq_show(
    job_id: IdArg,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """One dead job: its payload (redacted), every attempt, first and last failure."""
    console = console_for(wide)

    async def action(jobs: Jobs) -> Job:
        job = await find_job(jobs.queue, job_id)
        return await jobs.dlq.show(job.id)

    job = _run(console, database_url, action)
    if as_json:
        echo_json(job_view(job))
        return
    _print_job(console, job, "dead job")


async def _plan(
    jobs: Jobs, verb: str, ids: Sequence[str], everything: bool, flt: DeadLetterFilter
) -> _Plan:
    """The dead jobs a retry or resolve names: by ids (no question asked), or by filters /
    --all (asked)."""
    _check_target(ids, everything, flt)
    if ids:
        return _Plan(verb, await _dead_jobs(jobs, ids), False)
    where = flt.to_job_filter(jobs.clock.time(), (JobState.DEAD,))
    return _Plan(verb, await _matching(jobs, where), True)


@dlq_app.command("retry")
def dlq_retry(
    ids: IdsArg = None,
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    everything: Annotated[
        bool, typer.Option("--all", help="Every dead job matching the filters.")
    ] = False,
    queue: QueueOpt = None,
    name: NameOpt = None,
    provider: ProviderOpt = None,
    code: CodeOpt = None,
    older_than: OlderOpt = None,
    newer_than: NewerOpt = None,
    delay: Annotated[
        str, typer.Option(help="Run them after this long (e.g. 5m) [default: now].")
    ] = "0",
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Redrive dead jobs: back to the queue, attempts counted again, history kept.

    With --all or filters, asks first (--yes to skip the question; --dry-run lists them).
    """
    console = console_for(wide)
    wait = parse_duration(delay)
    flt = _filter(
        queue, name, provider, code, _duration_option(older_than), _duration_option(newer_than)
    )

    async def act(jobs: Jobs, plan: _Plan) -> int:
        return await jobs.dlq.retry(plan.ids, delay=wait)

    _bulk(
        console,
        database_url,
        "retry",
        (ids or [], everything, flt),
        act,
        dry_run=dry_run,
        yes=yes,
        as_json=as_json,
        wide=wide,
        extra={"delay": wait},
        said=lambda count: f"redrove {count} job(s)" + (f", running in {delay}" if wait else ""),
    )


@dlq_app.command("resolve")
def dlq_resolve(
    ids: IdsArg = None,
    reason: Annotated[
        str,
        typer.Option("--reason", "-r", help="Why: handled by hand, or discarded (required)."),
    ] = "",
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    everything: Annotated[
        bool, typer.Option("--all", help="Every dead job matching the filters.")
    ] = False,
    queue: QueueOpt = None,
    name: NameOpt = None,
    provider: ProviderOpt = None,
    code: CodeOpt = None,
    older_than: OlderOpt = None,
    newer_than: NewerOpt = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Close dead jobs with a reason (handled by hand, or not worth doing).

    With --all or filters, asks first (--yes to skip the question; --dry-run lists them).
    """
    console = console_for(wide)
    flt = _filter(
        queue, name, provider, code, _duration_option(older_than), _duration_option(newer_than)
    )

    async def act(jobs: Jobs, plan: _Plan) -> int:
        return await jobs.dlq.resolve(plan.ids, reason=reason)

    def check() -> None:
        if not reason.strip():
            raise ConfigurationError("--reason is required: say why these jobs are closed")

    _bulk(
        console,
        database_url,
        "resolve",
        (ids or [], everything, flt),
        act,
        dry_run=dry_run,
        yes=yes,
        as_json=as_json,
        wide=wide,
        extra={"reason": reason.strip()},
        said=lambda count: f"resolved {count} job(s)",
        check=check,
    )


def _bulk(
    console: Console,
    database_url: str,
    verb: str,
    selection: tuple[list[str], bool, DeadLetterFilter],
    act: Callable[[Jobs, _Plan], Awaitable[int]],
    *,
    dry_run: bool,
    yes: bool,
    as_json: bool,
    wide: bool,
    extra: dict[str, Any],
    said: Callable[[int], str],
    check: Callable[[], None] = lambda: None,
) -> None:
    """Plan a bulk retry or resolve, ask (unless --yes / --dry-run), act on exactly the jobs
    listed, and report."""
    ids, everything, flt = selection

    async def action(jobs: Jobs) -> tuple[_Plan, int, bool, float]:
        check()
        plan = await _plan(jobs, verb, ids, everything, flt)
        now = jobs.clock.time()
        if not _go_ahead(plan, dry_run=dry_run, yes=yes):
            return plan, 0, False, now
        return plan, await act(jobs, plan), True, now

    plan, count, done, now = _run(console, database_url, action)
    _report(
        console,
        plan,
        count,
        done=done,
        dry_run=dry_run,
        as_json=as_json,
        wide=wide,
        now=now,
        extra=extra,
        said=said(count),
    )


@dlq_app.command("purge")
def dlq_purge(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete entries older than this (e.g. 30d).")
    ],
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    resolved_only: Annotated[
        bool, typer.Option("--resolved-only", help="Keep dead jobs; delete resolved ones.")
    ] = False,
    queue: QueueOpt = None,
    name: NameOpt = None,
    provider: ProviderOpt = None,
    code: CodeOpt = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
    wide: WideOpt = False,
) -> None:
    """Delete dead and resolved jobs whose last change is older than --older-than.

    Asks first (--yes to skip the question; --dry-run lists what would be deleted).
    """
    console = console_for(wide)
    age = parse_duration(older_than)
    flt = _filter(queue, name, provider, code, age, None)
    states = (JobState.RESOLVED,) if resolved_only else (JobState.DEAD, JobState.RESOLVED)

    async def action(jobs: Jobs) -> tuple[_Plan, int, bool, float]:
        now = jobs.clock.time()
        plan = _Plan("purge", await _matching(jobs, flt.to_job_filter(now, states)), True)
        if not _go_ahead(plan, dry_run=dry_run, yes=yes):
            return plan, 0, False, now
        # exactly the jobs listed and confirmed (those still old enough and dead or resolved)
        where = DeadLetterFilter(ids=tuple(plan.ids))
        count = await jobs.dlq.purge(age, where=where, include_dead=not resolved_only)
        return plan, count, True, now

    plan, count, done, now = _run(console, database_url, action)
    _report(
        console,
        plan,
        count,
        done=done,
        dry_run=dry_run,
        as_json=as_json,
        wide=wide,
        now=now,
        extra={"older_than": age},
        said=f"purged {count} job(s) older than {older_than}",
    )
