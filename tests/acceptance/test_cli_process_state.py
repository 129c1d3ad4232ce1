"""Commands run inside another program (here: typer's ``CliRunner``) leave its process as they
found it: logging, structlog, signal handlers.

``worker``, ``serve`` and ``scheduler`` set up JSON logs and tracing for their process only once
their arguments are checked, and put them back when they end; the handler they install writes
to the standard error of the moment, never to a stream that may be closed by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import signal
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner

from antifragile.cli import app
from antifragile.cli._process import stop_on_signals
from antifragile.observability._logging import configure_logging, configure_process
from tests.conftest import ProcessState

runner = CliRunner()


def _log_after(capsys: pytest.CaptureFixture[str]) -> str:
    """Log at INFO and WARNING through the root logger; what reached standard error."""
    capsys.readouterr()
    log = logging.getLogger("antifragile.after")
    log.info("an INFO record after the command")
    log.warning("a WARNING record after the command")
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [
        ["worker", "--app", "no_such_module_here:jobs"],
        ["worker", "--app", "no_such_module_here:jobs", "--log-level", "debug"],
        ["scheduler", "--app", "no_such_module_here:jobs"],
    ],
)
def test_a_command_refusing_its_app_changes_nothing(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A command that refuses ``--app`` exits 1 and leaves the root logger, structlog and the
    signal handlers as they were: records logged afterwards raise no logging error."""
    before = ProcessState.now()
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "cannot import" in result.output
    assert before.changes(ProcessState.now()) == []
    err = _log_after(capsys)
    assert "Logging error" not in err
    assert "I/O operation on closed file" not in err


@pytest.mark.parametrize("command", ["worker", "serve", "scheduler"])
def test_a_bad_log_level_is_a_usage_error_that_changes_nothing(command: str) -> None:
    """``--log-level loud`` is refused (exit 2, the accepted levels named) before anything is
    set up."""
    before = ProcessState.now()
    result = runner.invoke(app, [command, "--log-level", "loud"])
    assert result.exit_code == 2, result.output
    assert "not a log level" in result.output
    assert before.changes(ProcessState.now()) == []


def test_serve_with_nothing_to_run_changes_nothing(tmp_path: Path) -> None:
    """``serve --no-api --no-worker --no-scheduler`` exits 1 without touching the logging."""
    before = ProcessState.now()
    result = runner.invoke(
        app,
        ["serve", "--no-api", "--no-worker", "--no-scheduler"],
        env={"ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"},
    )
    assert result.exit_code == 1, result.output
    assert "nothing to run" in result.output
    assert before.changes(ProcessState.now()) == []


def test_the_log_handler_writes_to_the_standard_error_of_the_moment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Logging set up while standard error was a stream that is closed since keeps working: each
    record goes to the current ``sys.stderr``."""
    swapped = io.StringIO()
    with contextlib.redirect_stderr(swapped):
        setup = configure_logging(json=True, level="INFO")
    swapped.close()
    with setup:
        capsys.readouterr()
        logging.getLogger("antifragile.after").info("still logged", extra={"step": "name"})
        err = capsys.readouterr().err
    assert "Logging error" not in err
    (line,) = [json.loads(text) for text in err.splitlines() if text.strip()]
    assert line["event"] == "still logged"
    assert line["step"] == "name"


def test_restoring_puts_back_what_was_there() -> None:
    """``restore()`` puts back the root level, the handler an earlier call had installed and
    structlog's configuration; restoring twice is harmless."""
    before = ProcessState.now()
    first_stream = io.StringIO()
    with configure_logging(level="WARNING", stream=first_stream) as first:
        configured = structlog.get_config()
        second = configure_process("DEBUG")
        root = logging.getLogger()
        assert first.handler not in root.handlers
        assert second.logging.handler in root.handlers
        assert root.level == logging.DEBUG
        second.restore()
        second.restore()
        assert first.handler in root.handlers
        assert second.logging.handler not in root.handlers
        assert root.level == logging.WARNING
        assert structlog.get_config() == configured
        logging.getLogger("antifragile.after").warning("to the first")
    assert "to the first" in first_stream.getvalue()
    assert before.changes(ProcessState.now()) == []


def test_signal_handlers_in_place_before_are_put_back() -> None:
    """While ``scheduler`` or ``serve --no-api`` runs, SIGTERM stops it; once it has stopped,
    the SIGTERM handler of the program it ran in is back (not the default, which would end
    that program on the next SIGTERM)."""
    received: list[int] = []

    def host_handler(signum: int, frame: object) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, host_handler)
    try:

        async def main() -> None:
            stopped = asyncio.Event()
            with stop_on_signals(stopped.set):
                signal.raise_signal(signal.SIGTERM)
                await stopped.wait()

        asyncio.run(main())
        assert received == []  # the command's handler took that one
        assert signal.getsignal(signal.SIGTERM) is host_handler
        signal.raise_signal(signal.SIGTERM)
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)
