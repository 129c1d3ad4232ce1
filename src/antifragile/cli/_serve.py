"""``antifragile serve``, ``antifragile health`` and ``antifragile breakers``.

``serve`` runs the service: the HTTP API (uvicorn), a worker and a scheduler, all in one process
by default -- on SQLite (``sqlite:///antifragile.db``) unless ``ANTIFRAGILE_DATABASE_URL`` says
otherwise. ``--no-worker`` / ``--no-scheduler`` leave those to separate processes
(``antifragile worker`` / ``antifragile scheduler``); ``--no-api`` runs only them.

``health`` asks a running service for ``/health`` and exits 1 when it is unhealthy or does not
answer. ``breakers`` lists the providers' circuit breakers: from a running service (``--url``)
or straight from the store that shares them between processes -- as the service does, Redis
when ``ANTIFRAGILE_REDIS_URL`` is set, else the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from antifragile.cli._output import console_for
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
    bind_port,
    check_service,
    failures_reported,
)
from antifragile.errors import AntifragileError, ConfigurationError, ErrorCode

if TYPE_CHECKING:
    from antifragile.service._settings import Settings

_log = logging.getLogger("antifragile.cli")

URL_ENV = "ANTIFRAGILE_URL"
DEFAULT_URL = "http://127.0.0.1:8000"
LOOP_ENV = "ANTIFRAGILE_LOOP"
#: the event loops ``serve`` runs on: the standard library's unless uvloop is asked for
LOOPS = ("asyncio", "uvloop")


def _loop(value: str) -> str:
    loop = value.strip().lower()
    if loop not in LOOPS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LOOPS)}")
    return loop


def _loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the event loop *loop* (``None``: asyncio's own); uvloop must be installed."""
    if loop == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        raise ConfigurationError(
            f"--loop uvloop ({LOOP_ENV}=uvloop) needs the uvloop package: pip install uvloop"
        ) from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


UrlOption = Annotated[
    str,
    typer.Option("--url", envvar=URL_ENV, help="The running service's base URL."),
]


def _fail(console: Console, exc: AntifragileError) -> typer.Exit:
    console.print(f"[red]error[/] {exc.code}: {escape(str(exc))}")
    return typer.Exit(1)


def _settings(config: Path | None) -> Settings:
    from antifragile.service._settings import Settings

    return Settings.from_env(config_path=config)


# -- antifragile serve --------------------------------------------------------------------------


async def _run_background(
    settings: Settings, worker: bool, scheduler: bool, metrics: tuple[str, int | None]
) -> None:
    """The worker and/or scheduler without the API, until SIGTERM or Ctrl-C (a signal that
    arrives while the service is still opening stops it as soon as it is open)."""
    from antifragile.cli._jobs import _serve_metrics, _stop_metrics
    from antifragile.cli._load import Target
    from antifragile.service._assistant import Assistant
    from antifragile.service._watchdog import watchdog_for

    runners: list[Any] = []
    stopping = False

    def stop() -> None:
        nonlocal stopping
        stopping = True
        for runner in runners:
            runner.stop()

    with stop_on_signals(stop):
        assistant = Assistant(settings)
        await assistant.open()
        server = None
        try:
            if metrics[1] is not None:
                target = Target(assistant.jobs, assistant)
                server = _serve_metrics(target, metrics[0], metrics[1])
            if worker:
                runners.append(assistant.worker())
            if scheduler:
                runners.append(assistant.scheduler())
                watchdog = watchdog_for(assistant)  # alerts no worker is there to judge
                if watchdog is not None:
                    runners.append(watchdog)
            if not stopping:
                await asyncio.gather(*(runner.run() for runner in runners))
        finally:
            try:
                await assistant.close()
            finally:
                if server is not None:
                    await asyncio.to_thread(_stop_metrics, server)


def _uvicorn_server(config: Any, metrics: tuple[str, int | None] = ("", None)) -> Any:
    """uvicorn's server, exiting with status 0 when a signal asked it to stop (uvicorn raises
    the signal again after its graceful shutdown, which ends the process with -SIGTERM); with
    a metrics port, the app's metrics are served there too once it has started."""
    import uvicorn

    from antifragile.cli._jobs import _serve_metrics, _stop_metrics
    from antifragile.cli._load import Target

    class Server(uvicorn.Server):
        metrics_server: Any = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            app: Any = self.config.app
            assistant = getattr(app.state, "assistant", None)
            if self.started and metrics[1] is not None and assistant is not None:
                target = Target(assistant.jobs, assistant)
                self.metrics_server = _serve_metrics(target, metrics[0], metrics[1])

        async def shutdown(self, sockets: Any = None) -> None:
            try:
                await super().shutdown(sockets)
            finally:
                if self.metrics_server is not None:
                    await asyncio.to_thread(_stop_metrics, self.metrics_server)

    return Server(config)


def serve(
    host: Annotated[str, typer.Option(help="The interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="The port to listen on.")] = 8000,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run a worker in this process.")
    ] = True,
    scheduler: Annotated[
        bool, typer.Option("--scheduler/--no-scheduler", help="Run the scheduler here.")
    ] = True,
    api: Annotated[bool, typer.Option("--api/--no-api", help="Serve the HTTP API.")] = True,
    database_url: DatabaseUrlOption = None,
    config: ConfigOption = None,
    env_file: EnvFileOption = None,
    log_level: LogLevelOption = "info",
    log_format: LogFormatOption = "json",
    metrics_port: MetricsPortOption = None,
    metrics_host: MetricsHostOption = "127.0.0.1",
    debug: DebugOption = False,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            "--proxy-headers/--no-proxy-headers",
            help="Trust X-Forwarded-Proto/For from --forwarded-allow-ips (behind a proxy).",
        ),
    ] = False,
    forwarded_allow_ips: Annotated[
        str, typer.Option(help="Proxies trusted for X-Forwarded-* headers.")
    ] = "127.0.0.1",
    loop: Annotated[
        str,
        typer.Option(
            "--loop",
            envvar=LOOP_ENV,
            callback=_loop,
            help="The event loop: asyncio (the standard library's) or uvloop (opt-in; needs "
            "the uvloop package).",
        ),
    ] = "asyncio",
) -> None:
    """Run the service: HTTP API, worker and scheduler (all three by default).

    Configuration comes from ANTIFRAGILE_* environment variables (and --env-file) and the
    --config file. SIGTERM or Ctrl-C stops gracefully: the API stops accepting, running jobs
    finish. A failure to start is one line on standard error and exit status 1.
    """
    console = Console(stderr=True)
    with failures_reported(debug=debug):
        if not (api or worker or scheduler):
            raise ConfigurationError(
                "nothing to run: --no-api, --no-worker and --no-scheduler all given"
            )
        _loop_factory(loop)  # uvloop asked for but not installed: one line, before anything starts
        settings = _settings(config)
        if database_url:
            settings = settings.model_copy(update={"database_url": database_url})
        if api and not worker and "expect_workers" not in settings.model_fields_set:
            # workers run elsewhere: /health and the alerts say so when none is alive
            settings = settings.model_copy(update={"expect_workers": True})
    # the arguments are good: JSON logs (--log-format) and tracing from here on, put back when
    # the service stops
    with process_setup(console, log_level, log_format), failures_reported(debug=debug):
        asyncio.run(check_service(settings))  # tenants, flows, warnings, the database opens
        _serve(
            console,
            settings,
            host=host,
            port=port,
            parts={"api": api, "worker": worker, "scheduler": scheduler},
            log_level=log_level,
            proxy_headers=proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips,
            metrics=(metrics_host, metrics_port),
            loop=loop,
        )


def _serve(
    console: Console,
    settings: Settings,
    *,
    host: str,
    port: int,
    parts: dict[str, bool],
    log_level: str,
    proxy_headers: bool,
    forwarded_allow_ips: str,
    metrics: tuple[str, int | None],
    loop: str = "asyncio",
) -> None:
    from antifragile.service._settings import safe_url

    api, worker, scheduler = parts["api"], parts["worker"], parts["scheduler"]
    running = ", ".join(name for name, on in parts.items() if on)
    _log.info(
        "antifragile serve%s: %s; database %s; %s event loop",
        f" on http://{host}:{port}" if api else "",
        running,
        safe_url(settings.database_url),
        loop,
        extra={"parts": running, "database": safe_url(settings.database_url), "loop": loop},
    )
    if not api:
        with asyncio.Runner(loop_factory=_loop_factory(loop)) as background:
            background.run(_run_background(settings, worker, scheduler, metrics))
        return
    import uvicorn

    from antifragile.service._app import create_app
    from antifragile.service._server import HEADER_TIMEOUT, MAX_HEADER_BYTES, guarded_h11

    sock = bind_port(host, port)  # a port in use is one error line, before anything starts
    app = create_app(settings, run_worker=worker, run_scheduler=scheduler, freeze_gc=True)
    server = _uvicorn_server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level.lower(),
            log_config=None,  # uvicorn's records go through the JSON logging too
            lifespan="on",
            loop=loop,  # never "auto": what happens to be installed does not change the service
            proxy_headers=proxy_headers,
            forwarded_allow_ips=forwarded_allow_ips,
            server_header=False,
            # slow clients: a deadline for headers, idle keep-alive closed, headers bounded
            http=guarded_h11(HEADER_TIMEOUT),
            timeout_keep_alive=5,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        ),
        metrics,
    )
    try:
        with contextlib.suppress(SystemExit):  # uvicorn exits when the start-up fails
            server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise AntifragileError(
            "the service did not start (its log says why); run again with --debug for more",
            code=ErrorCode.INTERNAL,
        )


# -- antifragile health -------------------------------------------------------------------------


def _get(url: str, timeout: float) -> httpx.Response:
    try:
        return httpx.get(url, timeout=timeout, headers={"accept": "application/json"})
    except httpx.HTTPError as exc:
        raise AntifragileError(
            f"no answer from {url}: {type(exc).__name__}", code=ErrorCode.NETWORK, retryable=True
        ) from None


def _report(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict) or "status" not in data:
        raise AntifragileError(
            f"{response.request.url} answered HTTP {response.status_code} without a health report",
            code=ErrorCode.UPSTREAM_ERROR,
        )
    return data


def health(
    url: UrlOption = DEFAULT_URL,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for an answer.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Ask a running service for its health; exit 1 when it is unhealthy or does not answer."""
    console = console_for()  # tables piped at their natural width
    try:
        report = _report(_get(url.rstrip("/") + "/health", timeout))
    except AntifragileError as exc:
        raise _fail(Console(stderr=True), exc) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        colour = {"healthy": "green", "degraded": "yellow"}.get(str(report["status"]), "red")
        console.print(
            f"[{colour}]{escape(str(report['status']))}[/] version {report.get('version')} "
            f"up {report.get('uptime')}s"
        )
        table = Table(show_header=True)
        table.add_column("dependency")
        table.add_column("status")
        for name, status in (report.get("dependencies") or {}).items():
            table.add_row(escape(str(name)), escape(str(status)))
        console.print(table)
    if report["status"] == "unhealthy":
        raise typer.Exit(1)


# -- antifragile breakers -----------------------------------------------------------------------


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def _stored_breakers(store_url: str) -> list[dict[str, Any]]:
    from antifragile.connectors._registry import PROVIDERS
    from antifragile.stores import open_store

    store = await open_store(store_url)
    try:
        rows = []
        for provider in PROVIDERS:
            record = await store.breakers.load(provider)
            rows.append(
                {
                    "provider": provider,
                    "state": record.state,
                    "open_until": record.open_until if record.state == "open" else None,
                    "generation": record.generation,
                    "consecutive_opens": record.consecutive_opens,
                }
            )
        return rows
    finally:
        await store.close()


def breakers(
    url: Annotated[
        str | None,
        typer.Option("--url", envvar=URL_ENV, help="Ask this running service instead."),
    ] = None,
    store_url: Annotated[
        str | None,
        typer.Option(
            "--store-url",
            help="The store sharing the breakers [default: ANTIFRAGILE_REDIS_URL, else "
            "ANTIFRAGILE_DATABASE_URL].",
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The providers' circuit breakers: state, and until when an open one stays open."""
    console = console_for()  # tables piped at their natural width
    try:
        if url:
            report = _report(_get(url.rstrip("/") + "/health", 5.0))
            rows = [
                {"provider": name.removeprefix("breaker:"), "state": state}
                for name, state in (report.get("dependencies") or {}).items()
                if str(name).startswith("breaker:")
            ]
        else:
            from antifragile.cli._jobs import _check_database
            from antifragile.service._assistant import state_store_url

            target = store_url or state_store_url(_settings(config))  # where the service keeps them
            _check_database(target)
            rows = asyncio.run(_stored_breakers(target))
    except AntifragileError as exc:
        raise _fail(Console(stderr=True), exc) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="circuit breakers", title_justify="left")
    for column in ("provider", "state", "open until", "opened (times in a row)"):
        table.add_column(column)
    for row in rows:
        until = row.get("open_until")
        table.add_row(
            escape(str(row["provider"])),
            escape(str(row["state"])),
            _when(until) if until else "-",
            str(row.get("consecutive_opens", "-")),
        )
    console.print(table)
    if not rows:
        console.print("no breakers reported")
    sys.stdout.flush()
