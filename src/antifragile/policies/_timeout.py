"""Timeouts: the total timeout and the per-attempt timeout, and the watchdog behind them.

:class:`TotalTimeout` bounds the whole call, retries and waits included; :class:`AttemptTimeout`
bounds each attempt (and never outlives the total one). Sync shells publish the deadline in the
call info (cooperative: code that can bound its waits reads
:func:`~antifragile.policies.time_remaining`), or, with ``strategy="thread"``, run the attempt in
a worker thread that is abandoned when time is up. Async shells cancel the call.

Async timeouts cost a fraction of one timer per call.

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
import concurrent.futures
import contextvars
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from antifragile.errors import UpstreamTimeoutError
from antifragile.observability._context import current_request_id
from antifragile.policies._chain import AsyncNext, Chain, SyncNext
from antifragile.policies._deadline import CallInfo


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


@dataclass(frozen=True, slots=True)
class TotalTimeout:
    """The deadline of the whole call: *seconds* from its start, retries and waits included."""

    seconds: float

    def wrap_sync(self, nxt: SyncNext, chain: Chain) -> SyncNext:
        total = self.seconds
        mono = chain.clock.monotonic

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            deadline = mono() + total
            if info.deadline is None or deadline < info.deadline:
                info.deadline = deadline
            return nxt(info, fn, args, kwargs)

        return call

    def wrap_async(self, nxt: AsyncNext, chain: Chain) -> AsyncNext:
        total = self.seconds
        mono = chain.clock.monotonic
        order = chain.order
        deadline_error = chain.deadline_error
        # an attempt timeout further in enforces the deadline too: no second timer needed
        enforced_inside = (
            chain.timeout is not None
            and "attempt_timeout" in order
            and order.index("attempt_timeout") > order.index("total_timeout")
        )

        if enforced_inside:

            def publish(
                info: CallInfo,
                fn: Callable[..., Awaitable[Any]],
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Awaitable[Any]:
                deadline = mono() + total
                if info.deadline is None or deadline < info.deadline:
                    info.deadline = deadline
                return nxt(info, fn, args, kwargs)

            return publish

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            now = mono()
            deadline = now + total
            if info.deadline is None or deadline < info.deadline:
                info.deadline = deadline
            dog = watchdog()
            scope = dog.enter(dog.loop_time() + (info.deadline - now))
            try:
                return await nxt(info, fn, args, kwargs)
            except asyncio.CancelledError:
                if scope.expired and scope.task.uncancel() == 0:
                    raise deadline_error(info) from None
                raise
            finally:
                dog.exit(scope)

        return call


@dataclass(frozen=True, slots=True)
class AttemptTimeout:
    """The deadline of one attempt: *seconds*, or the call's deadline when that comes first.

    ``strategy="thread"`` enforces it on sync code that does not cooperate (see the module docs).
    """

    seconds: float
    strategy: Literal["cooperative", "thread"] = "cooperative"

    def _error(self, chain: Chain, info: CallInfo) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(
            f"attempt timed out after {self.seconds:g}s",
            provider=chain.name,
            operation=info.operation,
            request_id=current_request_id(),
            replay_safe=info.replay_safe,
        )

    def wrap_sync(self, nxt: SyncNext, chain: Chain) -> SyncNext:
        timeout = self.seconds
        mono = chain.clock.monotonic
        deadline_error = chain.deadline_error
        if self.strategy == "cooperative":

            def cooperative(
                info: CallInfo,
                fn: Callable[..., Any],
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                now = mono()
                deadline = now + timeout
                limit = info.deadline
                if limit is not None and limit <= deadline:
                    if limit <= now:
                        raise deadline_error(info)
                    deadline = limit
                info.attempt_deadline = deadline
                try:
                    return nxt(info, fn, args, kwargs)
                finally:
                    info.attempt_deadline = None

            return cooperative

        pool = chain.thread_pool

        def threaded(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            now = mono()
            deadline = now + timeout
            by_total = False
            if info.deadline is not None and info.deadline <= deadline:
                if info.deadline <= now:
                    raise deadline_error(info)
                deadline, by_total = info.deadline, True
            info.attempt_deadline = deadline
            try:
                context = contextvars.copy_context()
                future = pool().submit(context.run, nxt, info, fn, args, kwargs)
                try:
                    return future.result(timeout=deadline - now)
                except concurrent.futures.TimeoutError:
                    future.cancel()
                    if by_total:
                        raise deadline_error(info) from None
                    raise self._error(chain, info) from None
            finally:
                info.attempt_deadline = None

        return threaded

    def wrap_async(self, nxt: AsyncNext, chain: Chain) -> AsyncNext:
        timeout = self.seconds
        mono = chain.clock.monotonic
        deadline_error = chain.deadline_error

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            now = mono()
            deadline = now + timeout
            by_total = False
            if info.deadline is not None and info.deadline <= deadline:
                if info.deadline <= now:
                    raise deadline_error(info)
                deadline, by_total = info.deadline, True
            info.attempt_deadline = deadline
            dog = watchdog()
            scope = dog.enter(dog.loop_time() + (deadline - now))
            try:
                return await nxt(info, fn, args, kwargs)
            except asyncio.CancelledError:
                if scope.expired and scope.task.uncancel() == 0:
                    if by_total:
                        raise deadline_error(info) from None
                    raise self._error(chain, info) from None
                raise
            finally:
                dog.exit(scope)
                info.attempt_deadline = None

        return call
