"""What ``serve``, ``worker`` and ``scheduler`` share: their common options, and how a start-up
failure is reported.

The options have the same names on the three commands: ``--database-url``, ``--config``,
``--env-file``, ``--log-level``, ``--log-format``, ``--metrics-port`` / ``--metrics-host`` and
``--debug``. ``--env-file`` is read first (eagerly), so the variables of the file count for
the options that read one (``ANTIFRAGILE_DATABASE_URL``...).

A failure to start -- a bad setting or flow, a database that cannot be opened, a port in use --
is **one line** on standard error, ``error CODE: what happened; how to fix it``, and exit
status 1; ``--debug`` prints the traceback before it.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from antifragile.cli._environment import apply_environment
from antifragile.cli._process import LOG_LEVELS, check_log_level
from antifragile.errors import AntifragileError, ErrorCode, redact

if TYPE_CHECKING:
    from antifragile.service._settings import Settings

DATABASE_URL_ENV = "ANTIFRAGILE_DATABASE_URL"
LOG_LEVEL_ENV = "ANTIFRAGILE_LOG_LEVEL"
LOG_FORMAT_ENV = "ANTIFRAGILE_LOG_FORMAT"
METRICS_PORT_ENV = "ANTIFRAGILE_METRICS_PORT"
LOG_FORMATS = ("json", "text")

#: what to do about a failure of each kind, added to its line when its message does not say
_HINTS: dict[str, str] = {
    ErrorCode.STORE_UNAVAILABLE.value: "check --database-url (ANTIFRAGILE_DATABASE_URL) and "
    "that the database is running and reachable",
    ErrorCode.SCHEMA_VERSION.value: "run the antifragile version that migrated this database, or "
    "a newer one",
}


def _env_file(ctx: typer.Context, value: Path | None) -> Path | None:
    if ctx.resilient_parsing:
        return value
    try:
        restore = apply_environment(value)
    except AntifragileError as exc:
        report_failure(exc, debug=False)
        raise typer.Exit(1) from None
    ctx.call_on_close(restore)
    return value


def _log_format(value: str) -> str:
    chosen = value.strip().lower()
    if chosen not in LOG_FORMATS:
        raise typer.BadParameter(f"{value!r} is not a log format ({', '.join(LOG_FORMATS)})")
    return chosen


DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar=DATABASE_URL_ENV,
        help="The job database [default: sqlite:///antifragile.db].",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="ANTIFRAGILE_CONFIG",
        dir_okay=False,
        help="A TOML file: [service], [tenants.*], [flows.*], [providers.*], [features].",
    ),
]
EnvFileOption = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        dir_okay=False,
        is_eager=True,
        callback=_env_file,
        help="Read variables from this file (an already set variable wins) "
        "[default: ./.env when it exists].",
        show_default=False,
    ),
]
LogLevelOption = Annotated[
    str,
    typer.Option(
        "--log-level",
        envvar=LOG_LEVEL_ENV,
        callback=check_log_level,
        help=f"Logging level ({', '.join(LOG_LEVELS)}).",
    ),
]
LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        envvar=LOG_FORMAT_ENV,
        callback=_log_format,
        help="Logs on standard error: json (one object per line) or text (logfmt key=value).",
    ),
]
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        envvar=[METRICS_PORT_ENV, "ANTIFRAGILE_WORKER_METRICS_PORT"],
        help="Serve this process's Prometheus metrics on this port [default: none].",
        show_default=False,
    ),
]
MetricsHostOption = Annotated[
    str, typer.Option("--metrics-host", help="The interface the metrics port listens on.")
]
DebugOption = Annotated[
    bool,
    typer.Option("--debug", help="Print the traceback of a start-up failure too."),
]


def failure_line(exc: BaseException) -> str:
    """``error CODE: message[; hint]`` on one line, with nothing secret in it."""
    if isinstance(exc, AntifragileError):
        code, message = str(exc.code), str(exc)
        hint = _HINTS.get(str(exc.code))
    elif isinstance(exc, OSError):
        code, message, hint = ErrorCode.INTERNAL.value, str(exc), None
    else:
        code, message, hint = ErrorCode.INTERNAL.value, f"{type(exc).__name__}: {exc}", None
        hint = "run again with --debug for the traceback"
    text = " ".join(redact(message).split())
    if hint and hint not in text:
        text = f"{text}; {hint}"
    return f"error {code}: {text}"


def report_failure(exc: BaseException, *, debug: bool) -> None:
    """Write :func:`failure_line` of *exc* to standard error, after its traceback when
    *debug*."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.write(failure_line(exc) + "\n")
    sys.stderr.flush()


@contextmanager
def failures_reported(*, debug: bool) -> Iterator[None]:
    """Any exception raised in the block (not a typer exit) becomes :func:`report_failure`
    and exit status 1."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt, ImportError):
        raise  # a missing extra is named by the entry point
    except Exception as exc:
        report_failure(exc, debug=debug)
        raise typer.Exit(1) from None


def bind_port(host: str, port: int) -> socket.socket:
    """A listening socket on *host*:*port* for uvicorn, or a ConfigurationError saying how to
    free the port (a port in use is found here, before anything else starts)."""
    from antifragile.errors import ConfigurationError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"port {port} on {host} is in use; stop the process using it or choose "
                "another --port"
            ) from None
        if exc.errno == errno.EACCES:
            raise ConfigurationError(
                f"no permission to listen on {host}:{port}; choose a --port above 1023"
            ) from None
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {exc.strerror}; check --host and --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def log_warnings(assistant: Any) -> None:
    """Warn (as log lines) about unknown ``ANTIFRAGILE_*`` variables and, with the service's
    *assistant*, about the webhook secrets its channels lack."""
    try:
        from antifragile.service._checks import log_startup_warnings
    except ImportError:  # the command line alone, without the service's extra
        return
    settings = getattr(assistant, "settings", None)
    tenants = getattr(assistant, "tenants", ())
    connectors = getattr(assistant, "connectors", None)
    if settings is None:
        from antifragile.service._settings import Settings

        settings, connectors = Settings(), None
    log_startup_warnings(os.environ, settings, tenants, connectors)


async def check_service(settings: Settings) -> None:
    """What ``serve`` checks before it listens: the tenants and flows (building the service),
    the warnings of :func:`log_warnings`, and that the database opens (and is migrated)."""
    from antifragile.service._assistant import Assistant

    assistant = Assistant(settings)
    try:
        log_warnings(assistant)
        await assistant.jobs.open()
    finally:
        await assistant.close()
