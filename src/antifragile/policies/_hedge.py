"""Hedging: when an idempotent call is slow, send a copy and take whichever answers first.

After ``delay`` seconds without an answer a hedged copy starts (up to ``max_hedges`` copies);
a copy also starts at once when an attempt fails while hedges remain. The first success wins and
the others are cancelled. Only calls that are safe to replay are hedged, each copy spends from
the retry budget when there is one, and hedging is async only (a sync copy would need a thread
that cannot be cancelled).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from antifragile.errors import ConfigurationError
from antifragile.observability._context import current_request_id
from antifragile.observability._events import HedgeStarted
from antifragile.policies._chain import AsyncNext, Chain, SyncNext
from antifragile.policies._deadline import CallInfo


@dataclass(frozen=True, slots=True)
class Hedge:
    """Hedging configuration: start a copy after ``delay`` seconds, at most ``max_hedges``."""

    delay: float = 1.0
    max_hedges: int = 1

    def __post_init__(self) -> None:
        if not self.delay >= 0:
            raise ConfigurationError(f"delay must be >= 0 seconds, got {self.delay!r}")
        if not isinstance(self.max_hedges, int) or not 1 <= self.max_hedges <= 10:
            raise ConfigurationError("max_hedges must be an int within [1, 10]")

    def wrap_sync(self, nxt: SyncNext, chain: Chain) -> SyncNext:
        """Hedging is async only: a sync call goes straight through."""
        return nxt

    def wrap_async(self, nxt: AsyncNext, chain: Chain) -> AsyncNext:
        """Race copies of a replay-safe call (see the module docs)."""
        delay, max_hedges = self.delay, self.max_hedges
        budget = chain.budget

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if not info.replay_safe:
                return await nxt(info, fn, args, kwargs)
            pending: set[asyncio.Task[Any]] = {asyncio.ensure_future(nxt(info, fn, args, kwargs))}
            launched = 0
            last_error: BaseException | None = None
            try:
                while pending:
                    can_hedge = launched < max_hedges
                    done, pending = await asyncio.wait(
                        pending,
                        timeout=delay if can_hedge else None,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    for task in done:
                        if task.cancelled():
                            continue
                        if task.exception() is None:
                            return task.result()
                        last_error = task.exception()
                    if not can_hedge:
                        continue
                    if budget is not None and not budget.try_spend():
                        launched = max_hedges  # the budget said no: stop hedging
                        continue
                    launched += 1
                    if chain.observed:
                        chain.emit(
                            HedgeStarted(
                                policy=chain.name,
                                operation=info.operation,
                                request_id=current_request_id(),
                                number=launched,
                                after=delay,
                            )
                        )
                    pending.add(asyncio.ensure_future(nxt(info, fn, args, kwargs)))
                if last_error is None:  # every copy was cancelled from elsewhere
                    raise asyncio.CancelledError()
                raise last_error
            finally:
                for task in pending:
                    task.cancel()

        return call
