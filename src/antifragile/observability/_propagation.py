"""Carrying the context of a request into the jobs it causes, and back out when they run.

A job carries a small map of strings, its *context*, captured when it is prepared:
``request_id`` (the request id current then) and whatever the registered *injectors* add -- a
tracer adds ``traceparent`` and ``tracestate``, for instance. When a worker runs the job it
*activates* that context: the request id becomes current again (a new one when the job has
none), so the job's outbound calls send it as ``x-request-id`` and its errors and log records
carry it; then each registered *activator* enters its own context manager with the map (a
tracer continues the trace). A job enqueued by a running job captures the same request id.

::

    def inject(context: dict[str, str]) -> None:
        context["traceparent"] = current_traceparent()

    remove = register_injector(inject)      # returns the function that unregisters it

Keep a context small and free of personal data: it is stored with the job and shown to
operators. An injector or activator that raises is logged and skipped -- carrying context must
never stop a job from being enqueued or run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from contextvars import Token
from types import TracebackType

from antifragile.observability._context import _request_id, new_request_id

__all__ = [
    "Activator",
    "Injector",
    "activate",
    "capture_context",
    "register_activator",
    "register_injector",
]

_log = logging.getLogger("antifragile.observability")

#: adds keys to the context of a job being prepared (called with the map built so far)
Injector = Callable[[dict[str, str]], None]
#: a context manager to run a job inside, from the job's context
Activator = Callable[[Mapping[str, str]], AbstractContextManager[object]]

_injectors: tuple[Injector, ...] = ()
_activators: tuple[Activator, ...] = ()


def register_injector(injector: Injector) -> Callable[[], None]:
    """Call *injector* with the context of every job prepared from now on, after the request
    id is in it. Returns a function that unregisters it."""
    global _injectors
    _injectors = (*_injectors, injector)

    def unregister() -> None:
        global _injectors
        _injectors = tuple(i for i in _injectors if i is not injector)

    return unregister


def register_activator(activator: Activator) -> Callable[[], None]:
    """Run every job inside ``activator(job.context)`` (after its request id is current), in
    the order of registration. Returns a function that unregisters it."""
    global _activators
    _activators = (*_activators, activator)

    def unregister() -> None:
        global _activators
        _activators = tuple(a for a in _activators if a is not activator)

    return unregister


def capture_context() -> dict[str, str]:
    """The context of the current request for a job: its request id (if one is current) and
    what the registered injectors add; empty when there is nothing to carry."""
    context: dict[str, str] = {}
    request_id = _request_id.get()
    if request_id is not None:
        context["request_id"] = request_id
    for inject in _injectors:
        try:
            inject(context)
        except Exception:  # carrying context must never stop an enqueue
            _log.exception("context injector %r failed", inject)
    return context


def activate(context: Mapping[str, str]) -> AbstractContextManager[str]:
    """``with activate(job.context):`` runs a block in a job's *context*: its ``request_id``
    (or a new one) current, inside the registered activators. Entering gives the request id."""
    return _Activation(context)


class _Activation:
    """:func:`activate`'s context manager (a class: cheaper than a generator per job)."""

    __slots__ = ("_context", "_stack", "_token")

    def __init__(self, context: Mapping[str, str]) -> None:
        self._context = context
        self._token: Token[str | None] | None = None
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> str:
        request_id = self._context.get("request_id") or new_request_id()
        self._token = _request_id.set(request_id)
        if _activators:
            stack = contextlib.ExitStack()
            for activator in _activators:
                try:
                    stack.enter_context(activator(self._context))
                except Exception:  # a job runs even when its trace cannot be continued
                    _log.exception("context activator %r failed", activator)
            self._stack = stack
        return request_id

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                try:
                    stack.__exit__(exc_type, exc, tb)
                except Exception:
                    _log.exception("leaving a context activator failed")
        finally:
            token, self._token = self._token, None
            if token is not None:
                _request_id.reset(token)
