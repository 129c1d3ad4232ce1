"""The request id that correlates an inbound request with everything it causes.

It lives in a context variable, so it follows the code through ``await`` and into tasks created
from it; the HTTP client sends it as ``x-request-id`` and errors carry it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from contextvars import ContextVar, Token

_request_id: ContextVar[str | None] = ContextVar("antifragile_request_id", default=None)


def _new_prefix() -> None:
    global _prefix, _counter
    _prefix = os.urandom(8).hex()
    _counter = itertools.count(int.from_bytes(os.urandom(3), "big"))


_prefix = ""
_counter = itertools.count()
_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)  # a forked child must not repeat our ids


def new_request_id() -> str:
    """A fresh request id: 32 hex characters, a random per-process prefix and a counter.

    Unique across processes (a forked child draws its own prefix) and cheap: no system call per
    id. Request ids correlate logs; they are not secrets."""
    return f"{_prefix}{next(_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


def current_request_id() -> str | None:
    """The request id of the current context, if one was set."""
    return _request_id.get()


def set_request_id(request_id: str) -> Token[str | None]:
    """Make *request_id* current; undo with :func:`reset_request_id` (the cheap form of
    :func:`request_context` for hot paths)."""
    return _request_id.set(request_id)


def reset_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)


@contextlib.contextmanager
def request_context(request_id: str | None = None) -> Iterator[str]:
    """Run a block with *request_id* (or a new one) as the current request id."""
    rid = request_id or new_request_id()
    token = _request_id.set(rid)
    try:
        yield rid
    finally:
        _request_id.reset(token)
