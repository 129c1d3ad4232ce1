"""What a long-running command changes in its process, done once its arguments are checked.

``serve``, ``worker`` and ``scheduler`` run everything inside :func:`process_setup`: JSON logs
on standard error and tracing (:func:`~antifragile.observability.configure_process`) are set
up there, after every argument and ``--app`` is known to be good, and put back on the way
out -- so a command that refuses its arguments changes nothing, and one run inside another
program (a test, say) leaves its logging as it found it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from antifragile.errors import AntifragileError

#: the levels ``--log-level`` accepts (any case)
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def check_log_level(value: str) -> str:
    """``--log-level``'s check: one of :data:`LOG_LEVELS`, returned in upper case."""
    level = value.strip().upper()
    if level.lower() not in LOG_LEVELS or not isinstance(logging.getLevelName(level), int):
        raise typer.BadParameter(f"{value!r} is not a log level ({', '.join(LOG_LEVELS)})")
    return level


@contextmanager
def process_setup(console: Console, level: str, log_format: str | None = None) -> Iterator[None]:
    """Logs and tracing for the command's process while the block runs, put back after it; a
    bad tracing setting is one error line and exit 1. *log_format* is ``json`` or ``text``
    (default: ``ANTIFRAGILE_LOG_FORMAT``, else ``json``)."""
    from antifragile.observability._logging import configure_process

    try:
        setup = configure_process(level, log_format=log_format)
    except AntifragileError as exc:
        console.print(f"[red]error[/] {exc.code}: {escape(str(exc))}")
        raise typer.Exit(1) from None
    with setup:
        yield


@contextmanager
def stop_on_signals(callback: Callable[[], object]) -> Iterator[None]:
    """SIGTERM and SIGINT call *callback* (in the running loop) while the block runs; the
    handlers in place before are put back after it (asyncio alone would leave the defaults)."""
    loop = asyncio.get_running_loop()
    installed: list[tuple[signal.Signals, Any]] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, callback)
            installed.append((sig, previous))
    try:
        yield
    finally:
        for sig, previous in installed:
            loop.remove_signal_handler(sig)
            if previous is not None:
                signal.signal(sig, previous)
