"""Shared fixtures: real PostgreSQL and Redis when they are there, and a guard on the state
every test shares with the others.

In CI (``CI=true``) a missing service fails the run; elsewhere its tests skip with the reason.
Addresses come from ``ANTIFRAGILE_TEST_POSTGRES_URL`` / ``ANTIFRAGILE_TEST_REDIS_URL``.

:func:`process_state_unchanged` runs around every test: a test that leaves the root logger's
handlers or level, structlog's configuration, the SIGTERM / SIGINT handlers, the garbage
collector's settings or tracing changed fails, and the state is put back for the next one.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog

from antifragile.observability._tracing import shutdown_tracing, tracing_enabled

POSTGRES_URL = os.environ.get(
    "ANTIFRAGILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("ANTIFRAGILE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 1.0):
            return True
    except OSError:
        return False


def require_service(name: str, url: str) -> None:
    """Skip (or, in CI, fail) the calling test when the service at *url* is not reachable."""
    if _reachable(url):
        return
    message = f"{name} is not reachable at {url} (set ANTIFRAGILE_TEST_{name.upper()}_URL)"
    if IN_CI:
        pytest.fail(f"{message}; CI requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    require_service("postgres", POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("redis", REDIS_URL)
    return REDIS_URL


# -- process-wide state ---------------------------------------------------------------------

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


_NAMED_LOGGERS = ("uvicorn", "uvicorn.access", "uvicorn.error", "httpx")


def _own_handlers(logger: logging.Logger) -> list[logging.Handler]:
    """A logger's handlers, without the capturing ones pytest swaps at every phase."""
    return [h for h in logger.handlers if type(h).__module__ != "_pytest.logging"]


@dataclass(frozen=True)
class ProcessState:
    """What a test must leave as it found it."""

    handlers: tuple[logging.Handler, ...]
    level: int
    structlog_configured: bool
    structlog_config: dict[str, Any]
    signals: tuple[Any, ...]
    gc_enabled: bool
    gc_threshold: tuple[int, ...]
    gc_frozen: int
    tracing: bool
    #: the named loggers a library configures for itself (uvicorn's default log config makes
    #: them stop propagating): (propagate, handlers) each
    named: tuple[tuple[bool, tuple[logging.Handler, ...]], ...]

    @classmethod
    def now(cls) -> ProcessState:
        root = logging.getLogger()
        return cls(
            handlers=tuple(_own_handlers(root)),
            level=root.level,
            structlog_configured=structlog.is_configured(),
            structlog_config=structlog.get_config(),
            signals=tuple(signal.getsignal(sig) for sig in _SIGNALS),
            gc_enabled=gc.isenabled(),
            gc_threshold=gc.get_threshold(),
            gc_frozen=gc.get_freeze_count(),
            tracing=tracing_enabled(),
            named=tuple(
                (logger.propagate, tuple(_own_handlers(logger)))
                for logger in map(logging.getLogger, _NAMED_LOGGERS)
            ),
        )

    def changes(self, after: ProcessState) -> list[str]:
        """What differs in *after*, one line each."""
        found = []
        for name in self.__dataclass_fields__:
            before_value, after_value = getattr(self, name), getattr(after, name)
            if before_value != after_value:
                found.append(f"{name}: {before_value!r} -> {after_value!r}")
        return found

    def put_back(self) -> None:
        """Undo what a test left changed (so that one leak fails one test, not the rest)."""
        root = logging.getLogger()
        for handler in _own_handlers(root):
            if handler not in self.handlers:
                root.removeHandler(handler)
        for handler in self.handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(self.level)
        if self.structlog_configured:
            structlog.configure(**self.structlog_config)
        else:
            structlog.reset_defaults()
        for sig, handler in zip(_SIGNALS, self.signals, strict=True):
            if handler is not None:
                signal.signal(sig, handler)
        (gc.enable if self.gc_enabled else gc.disable)()
        gc.set_threshold(*self.gc_threshold)
        if gc.get_freeze_count() and not self.gc_frozen:
            gc.unfreeze()
        if tracing_enabled() and not self.tracing:
            shutdown_tracing()
        for name, (propagate, handlers) in zip(_NAMED_LOGGERS, self.named, strict=True):
            logger = logging.getLogger(name)
            logger.propagate = propagate
            for handler in _own_handlers(logger):
                if handler not in handlers:
                    logger.removeHandler(handler)


def check_process_state(before: ProcessState, fail: Callable[[str], object]) -> None:
    """Call *fail* with a report when the process state differs from *before* (and put it
    back)."""
    after = ProcessState.now()
    changes = before.changes(after)
    if changes:
        before.put_back()
        fail("the test left process-wide state changed:\n  " + "\n  ".join(changes))


@pytest.fixture(autouse=True)
def process_state_unchanged() -> Iterator[None]:
    """Fail the test that leaves logging, structlog, signal handlers, the garbage collector or
    tracing changed."""
    before = ProcessState.now()
    yield
    check_process_state(before, lambda message: pytest.fail(message, pytrace=False))
