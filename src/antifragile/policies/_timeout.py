"""Async timeouts at a fraction of the cost of one timer per call.

``asyncio.timeout`` schedules and cancels a timer handle for every call, which costs more than
the rest of the pipeline put together on a fast call. Here every event loop has one watchdog: a
call registers its deadline in a set (and removes it when done), and a single timer, set for the
earliest deadline, cancels the tasks whose time is up. Registering and removing are a set
insertion and deletion; the timer fires only when a deadline is actually reached (or must be
recomputed), not once per call.

A cancelled task learns it timed out (rather than being cancelled from outside) through its
scope's ``expired`` flag; the runner then ``uncancel()``\\ s the task and raises a timeout error,
as ``asyncio.timeout`` does.
"""

from __future__ import annotations

import asyncio
import weakref


class TimeoutScope:
    """One call's deadline, on the event loop's clock."""

    __slots__ = ("deadline", "expired", "task")

    def __init__(self, task: asyncio.Task[object], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.expired = False


class Watchdog:
    """Cancels the tasks of expired scopes on one event loop."""

    __slots__ = ("__weakref__", "_handle", "_loop", "_next", "_scopes")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._scopes: set[TimeoutScope] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._next = float("inf")

    def loop_time(self) -> float:
        return self._loop.time()

    def enter(self, deadline: float) -> TimeoutScope:
        """Start watching the current task until *deadline* (``loop.time()`` seconds)."""
        task = asyncio.current_task(self._loop)
        if task is None:  # pragma: no cover - only reachable outside a task
            raise RuntimeError("a timeout needs to run inside an asyncio task")
        scope = TimeoutScope(task, deadline)
        self._scopes.add(scope)
        if deadline < self._next:
            self._schedule(deadline)
        return scope

    def exit(self, scope: TimeoutScope) -> None:
        """Stop watching *scope* (its call ended)."""
        self._scopes.discard(scope)

    def _schedule(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._next = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._next = float("inf")
        now = self._loop.time()
        earliest = float("inf")
        for scope in list(self._scopes):
            if scope.deadline <= now:
                self._scopes.discard(scope)
                if not scope.task.done():
                    scope.expired = True
                    scope.task.cancel()
            elif scope.deadline < earliest:
                earliest = scope.deadline
        if earliest != float("inf"):
            self._schedule(earliest)


_watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watchdog] = (
    weakref.WeakKeyDictionary()
)
_last: tuple[asyncio.AbstractEventLoop | None, Watchdog | None] = (None, None)


def watchdog() -> Watchdog:
    """The watchdog of the running event loop."""
    global _last
    loop = asyncio.get_running_loop()
    cached_loop, cached = _last
    if cached_loop is loop and cached is not None:
        return cached
    dog = _watchdogs.get(loop)
    if dog is None:
        dog = _watchdogs[loop] = Watchdog(loop)
    _last = (loop, dog)
    return dog
