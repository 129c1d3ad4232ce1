"""Fallback: answer with something else when the call fails.

* :class:`Fallback` returns a fixed value, or the result of a function of the exception, when the
  call fails with a matching exception (by default any provider failure: an
  :class:`~antifragile.IntegrationError`, or a transport exception such as ``httpx.ConnectError``
  or a builtin ``ConnectionError`` / ``TimeoutError``).
* :class:`StaleCache` keeps the last good result per key, with the semantics of HTTP's
  ``Cache-Control``: within ``ttl`` the cached value is returned without calling; within
  ``stale_while_revalidate`` after that the stale value is returned at once while one background
  call refreshes it (async only); when the call fails, a value up to ``stale_if_error`` seconds
  past its ``ttl`` is returned instead of the error.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import threading
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from antifragile.errors import ConfigurationError, IntegrationError, classify_exception
from antifragile.observability._context import current_request_id
from antifragile.observability._events import FallbackUsed
from antifragile.policies._chain import AsyncNext, Chain, SyncNext, code_of
from antifragile.policies._clock import SYSTEM_CLOCK, Clock
from antifragile.policies._deadline import CallInfo

_MISSING: Any = object()


def is_provider_failure(exc: BaseException) -> bool:
    """An antifragile error, or an exception that classifies as a transport failure."""
    return isinstance(exc, IntegrationError) or classify_exception(exc) is not None


def _matcher(
    on: Callable[[BaseException], bool] | type[BaseException] | tuple[type[BaseException], ...],
) -> Callable[[BaseException], bool]:
    if isinstance(on, type | tuple):
        types = on
        return lambda exc: isinstance(exc, types)
    return on


@dataclass(frozen=True)
class Fallback:
    """Return ``value`` (or ``factory(exc)``) instead of raising a matching exception.

    ``factory`` may return an awaitable when the protected call is async.
    """

    value: Any = _MISSING
    factory: Callable[[BaseException], Any] | None = None
    on: Callable[[BaseException], bool] | type[BaseException] | tuple[type[BaseException], ...] = (
        is_provider_failure
    )
    _matches: Callable[[BaseException], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.value is _MISSING) == (self.factory is None):
            raise ConfigurationError("Fallback needs exactly one of value= or factory=")
        object.__setattr__(self, "_matches", _matcher(self.on))

    def handles(self, exc: BaseException) -> bool:
        return self._matches(exc)

    def produce(self, exc: BaseException) -> Any:
        if self.factory is not None:
            return self.factory(exc)
        return self.value

    @property
    def source(self) -> str:
        return "function" if self.factory is not None else "value"

    def wrap_sync(self, nxt: SyncNext, chain: Chain) -> SyncNext:
        """Return the fallback instead of raising an exception this fallback handles."""
        handles, produce, source = self.handles, self.produce, self.source

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            try:
                return nxt(info, fn, args, kwargs)
            except Exception as exc:
                if not handles(exc):
                    raise
                fallback_used(chain, info, source, exc)
                return produce(exc)

        return call

    def wrap_async(self, nxt: AsyncNext, chain: Chain) -> AsyncNext:
        """:meth:`wrap_sync` for async calls (an awaitable fallback value is awaited)."""
        handles, produce, source = self.handles, self.produce, self.source

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            try:
                return await nxt(info, fn, args, kwargs)
            except Exception as exc:
                if not handles(exc):
                    raise
                fallback_used(chain, info, source, exc)
                value = produce(exc)
                if inspect.isawaitable(value):
                    value = await value
                return value

        return call


def fallback_used(
    chain: Chain, info: CallInfo, source: str, exc: BaseException | None, age: float | None = None
) -> None:
    """Report that a call was answered by a fallback (*source*: value, function or stale)."""
    if chain.observed:
        chain.emit(
            FallbackUsed(
                policy=chain.name,
                operation=info.operation,
                request_id=current_request_id(),
                source=source,
                code=None if exc is None else code_of(exc),
                age=age,
            )
        )


def default_key(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Hashable:
    """The cache key of a call: its arguments (they must be hashable)."""
    return (args, tuple(sorted(kwargs.items()))) if kwargs else args


class StaleCache:
    """Last good result per key, served fresh, stale-while-revalidate or stale-if-error."""

    def __init__(
        self,
        ttl: float,
        *,
        stale_if_error: float = 3600.0,
        stale_while_revalidate: float = 0.0,
        key: Callable[[tuple[Any, ...], Mapping[str, Any]], Hashable] = default_key,
        max_entries: int = 1024,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not ttl >= 0 or not stale_if_error >= 0 or not stale_while_revalidate >= 0:
            raise ConfigurationError("ttl, stale_if_error and stale_while_revalidate must be >= 0")
        if not max_entries >= 1:
            raise ConfigurationError("max_entries must be >= 1")
        self.ttl = ttl
        self.stale_if_error = stale_if_error
        self.stale_while_revalidate = stale_while_revalidate
        self.key = key
        self.max_entries = max_entries
        self._clock = clock
        self._entries: collections.OrderedDict[Hashable, tuple[float, Any]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()
        #: keys with a background refresh under way (stale-while-revalidate)
        self.refreshing: set[Hashable] = set()

    def use_clock(self, clock: Clock) -> None:
        """Switch to *clock* (a policy hands its clock to strategies built without one)."""
        with self._lock:
            self._clock = clock
            self._entries.clear()

    def lookup(self, key: Hashable) -> tuple[Any, float] | None:
        """``(value, age)`` of the entry for *key*, if there is one."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
        stored_at, value = entry
        return value, self._clock.monotonic() - stored_at

    def store(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._entries[key] = (self._clock.monotonic(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def invalidate(self, key: Hashable | None = None) -> None:
        """Forget one entry, or all of them."""
        with self._lock:
            if key is None:
                self._entries.clear()
            else:
                self._entries.pop(key, None)

    # -- in a policy ----------------------------------------------------------------------------

    def adopt(self, *, name: str, clock: Clock, observer: object = None) -> None:
        """Take a policy's clock when this cache was built without one."""
        if self._clock is SYSTEM_CLOCK and clock is not SYSTEM_CLOCK:
            self.use_clock(clock)

    def _stale_usable(self, exc: BaseException, age: float) -> bool:
        return is_provider_failure(exc) and age <= self.ttl + self.stale_if_error

    def wrap_sync(self, nxt: SyncNext, chain: Chain) -> SyncNext:
        """Serve fresh entries, store good results, serve a stale one when the call fails."""

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            key = self.key(args, kwargs)
            hit = self.lookup(key)
            if hit is not None and hit[1] < self.ttl:
                return hit[0]
            try:
                value = nxt(info, fn, args, kwargs)
            except Exception as exc:
                if hit is None or not self._stale_usable(exc, hit[1]):
                    raise
                fallback_used(chain, info, "stale", exc, hit[1])
                return hit[0]
            self.store(key, value)
            return value

        return call

    def wrap_async(self, nxt: AsyncNext, chain: Chain) -> AsyncNext:
        """:meth:`wrap_sync` for async calls, plus stale-while-revalidate in the background."""
        background: set[asyncio.Task[Any]] = set()

        async def refresh(
            key: Hashable,
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> None:
            try:
                self.store(key, await nxt(info, fn, args, kwargs))
            except Exception:  # the stale value stays; the next caller tries again
                pass
            finally:
                self.refreshing.discard(key)

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            key = self.key(args, kwargs)
            hit = self.lookup(key)
            if hit is not None:
                value, age = hit
                if age < self.ttl:
                    return value
                if age < self.ttl + self.stale_while_revalidate:
                    if key not in self.refreshing:
                        self.refreshing.add(key)
                        task = asyncio.create_task(
                            refresh(
                                key,
                                CallInfo(chain.clock, info.operation, info.replay_safe),
                                fn,
                                args,
                                kwargs,
                            )
                        )
                        background.add(task)
                        task.add_done_callback(background.discard)
                    fallback_used(chain, info, "stale", None, age)
                    return value
            try:
                value = await nxt(info, fn, args, kwargs)
            except Exception as exc:
                if hit is None or not self._stale_usable(exc, hit[1]):
                    raise
                fallback_used(chain, info, "stale", exc, hit[1])
                return hit[0]
            self.store(key, value)
            return value

        return call
