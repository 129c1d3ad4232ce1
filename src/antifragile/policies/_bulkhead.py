"""Bulkhead: at most ``max_concurrent`` calls in flight; others wait up to ``max_wait``.

One slow provider must not take every worker, connection or task with it. Calls beyond the limit
queue (first come, first served) for at most ``max_wait`` seconds and are then rejected with
:class:`~antifragile.BulkheadFullError`. With ``max_wait=0`` (the default) they are rejected at
once: queueing in front of a struggling provider only adds latency.

Slots are tokens in a deque: taking one is a single atomic ``pop`` and giving it back a single
``append``, so the common case takes no lock. Waiting callers (threads or tasks of any event
loop) register under a lock and are handed a token directly by the caller that releases it.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from antifragile.errors import BulkheadFullError, ConfigurationError
from antifragile.observability._context import current_request_id
from antifragile.observability._events import CallRejected, Observer
from antifragile.policies._clock import Clock, Duration, seconds
from antifragile.policies._deadline import CallInfo

if TYPE_CHECKING:
    from antifragile.policies._chain import AsyncNext, Chain, SyncNext


class _Waiter:
    __slots__ = ("event", "future", "granted", "loop")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[None] | None = None,
    ) -> None:
        self.loop = loop
        self.future = future
        self.event = threading.Event() if future is None else None
        self.granted = False


class Bulkhead:
    """Limits concurrent calls (thread-safe and task-safe)."""

    __slots__ = (
        "_lock",
        "_observer",
        "_tokens",
        "_waiters",
        "max_concurrent",
        "max_wait",
        "name",
    )

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_wait: Duration = 0.0,
        name: str = "default",
        observer: Observer | None = None,
    ) -> None:
        if not isinstance(max_concurrent, int) or max_concurrent < 1:
            raise ConfigurationError(f"max_concurrent must be an int >= 1, got {max_concurrent!r}")
        max_wait = seconds(max_wait)
        if not max_wait >= 0:
            raise ConfigurationError(f"max_wait must be >= 0 seconds, got {max_wait!r}")
        self.max_concurrent = max_concurrent
        self.max_wait = float(max_wait)
        self.name = name
        self._observer = observer
        self._lock = threading.Lock()
        self._tokens: collections.deque[int] = collections.deque([1] * max_concurrent)
        self._waiters: collections.deque[_Waiter] = collections.deque()

    @property
    def in_use(self) -> int:
        """Calls in flight now."""
        return self.max_concurrent - len(self._tokens)

    def _reject(self, operation: str | None) -> BulkheadFullError:
        if self._observer is not None:
            self._observer.on_event(
                CallRejected(
                    policy=self.name,
                    operation=operation,
                    request_id=current_request_id(),
                    by="bulkhead",
                    code="BULKHEAD_FULL",
                )
            )
        return BulkheadFullError(
            f"bulkhead {self.name!r} is full ({self.max_concurrent} calls in flight)",
            provider=self.name,
            operation=operation,
        )

    def try_acquire(self) -> bool:
        """Take a slot if one is free, without waiting."""
        try:
            self._tokens.pop()
        except IndexError:
            return False
        return True

    def _register(self, waiter: _Waiter) -> bool:
        """Queue *waiter*; ``True`` when a slot turned out to be free after all."""
        with self._lock:
            self._waiters.append(waiter)
            if self.try_acquire():  # released between our first try and the registration
                self._waiters.remove(waiter)
                return True
        return False

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiter gives up: leave the queue, or give back a slot handed over meanwhile."""
        with self._lock:
            if waiter.granted:
                self._tokens.append(1)
                self._handover_locked()
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass

    def acquire(self, *, operation: str | None = None) -> None:
        """Take a slot, blocking up to ``max_wait`` seconds."""
        if self.try_acquire():
            return
        if self.max_wait <= 0:
            raise self._reject(operation)
        waiter = _Waiter()
        if self._register(waiter):
            return
        assert waiter.event is not None
        if waiter.event.wait(self.max_wait) and waiter.granted:
            return
        self._abandon(waiter)
        raise self._reject(operation)

    async def aacquire(self, *, operation: str | None = None) -> None:
        """Take a slot, waiting (without blocking the loop) up to ``max_wait`` seconds."""
        if self.try_acquire():
            return
        if self.max_wait <= 0:
            raise self._reject(operation)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop, loop.create_future())
        if self._register(waiter):
            return
        assert waiter.future is not None
        try:
            async with asyncio.timeout(self.max_wait):
                await waiter.future
        except TimeoutError:
            self._abandon(waiter)
            raise self._reject(operation) from None
        except BaseException:
            self._abandon(waiter)
            raise

    def release(self) -> None:
        """Give a slot back."""
        self._tokens.append(1)
        if self._waiters:
            self.hand_over()

    def hand_over(self) -> None:
        """Give a free slot to the longest waiter, if any (after a slot was put back)."""
        with self._lock:
            self._handover_locked()

    def _handover_locked(self) -> None:
        while self._waiters:
            if not self.try_acquire():
                return
            waiter = self._waiters.popleft()
            waiter.granted = True
            if waiter.future is not None and waiter.loop is not None:
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            elif waiter.event is not None:
                waiter.event.set()
            return

    def adopt(self, *, name: str, clock: Clock, observer: Observer | None) -> None:
        """Take a policy's name and observer where this bulkhead was built without one."""
        if self.name == "default":
            self.name = name
        if self._observer is None:
            self._observer = observer

    def wrap_sync(self, nxt: SyncNext, chain: Chain) -> SyncNext:
        """Hold a slot while *nxt* runs (waiting up to ``max_wait`` for one)."""
        # a free slot is one atomic deque pop and goes back with one append
        take, give, waiters = self._tokens.pop, self._tokens.append, self._waiters
        acquire, hand_over = self.acquire, self.hand_over

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            try:
                take()
            except IndexError:
                acquire(operation=info.operation)
            try:
                return nxt(info, fn, args, kwargs)
            finally:
                give(1)
                if waiters:
                    hand_over()

        return call

    def wrap_async(self, nxt: AsyncNext, chain: Chain) -> AsyncNext:
        """:meth:`wrap_sync` for async calls."""
        take, give, waiters = self._tokens.pop, self._tokens.append, self._waiters
        acquire, hand_over = self.aacquire, self.hand_over

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            try:
                take()
            except IndexError:
                await acquire(operation=info.operation)
            try:
                return await nxt(info, fn, args, kwargs)
            finally:
                give(1)
                if waiters:
                    hand_over()

        return call

    def __repr__(self) -> str:
        return f"Bulkhead(max_concurrent={self.max_concurrent}, in_use={self.in_use})"


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
