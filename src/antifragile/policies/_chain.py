"""What every strategy's shell is built from: the next step of the chain, and the policy's context.

A :class:`~antifragile.Policy` is a chain of shells, one per configured strategy, built once
for sync calls and once for async ones. Each strategy module owns its two shells (resilience4j's
``decorate*``): ``wrap_sync(nxt, chain)`` and ``wrap_async(nxt, chain)`` return a function with
the same signature as *nxt* that runs the strategy around it. A shell receives :class:`Chain`
-- what the policy shares with all its strategies (name, clock, observers, deadline, budget) --
and never reaches into another strategy's state.

The order is fixed and documented (:data:`DEFAULT_ORDER`, from the outside in); ``order=``
may rearrange it.
"""

from __future__ import annotations

import concurrent.futures
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from antifragile.errors import (
    DeadlineExceededError,
    ErrorCode,
    IntegrationError,
    classify_exception,
)
from antifragile.observability._context import current_request_id
from antifragile.observability._events import CallRejected, Event, Observers
from antifragile.policies._clock import Clock
from antifragile.policies._deadline import CallInfo

if TYPE_CHECKING:
    from antifragile.policies._budget import RetryBudget

Strategy = Literal[
    "fallback",
    "cache",
    "rate_limit",
    "total_timeout",
    "retry",
    "hedge",
    "bulkhead",
    "breaker",
    "attempt_timeout",
]

#: the strategies from the outside in (see :mod:`antifragile.policies._pipeline`)
DEFAULT_ORDER: Final[tuple[Strategy, ...]] = (
    "fallback",
    "cache",
    "rate_limit",
    "total_timeout",
    "retry",
    "hedge",
    "bulkhead",
    "breaker",
    "attempt_timeout",
)

SyncNext = Callable[[CallInfo, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
# an async step returns an awaitable: a shell with nothing to do after the next step (a deadline
# to set, a token already there) may return the next step's awaitable instead of awaiting it,
# which spares a coroutine per call
AsyncNext = Callable[
    [CallInfo, Callable[..., Awaitable[Any]], tuple[Any, ...], dict[str, Any]], Awaitable[Any]
]


class Stage(Protocol):
    """A strategy as the chain sees it: two shells around the next step."""

    def wrap_sync(self, nxt: SyncNext, chain: Chain) -> SyncNext: ...

    def wrap_async(self, nxt: AsyncNext, chain: Chain) -> AsyncNext: ...


@dataclass(frozen=True, slots=True, eq=False)
class Chain:
    """What a policy shares with the shells of its strategies (read-only).

    ``observers`` may be empty; ``emit`` is then a no-op. ``thread_pool`` returns the policy's
    worker threads (``timeout_strategy="thread"``), started on first use.
    """

    name: str
    clock: Clock
    observers: Observers
    timeout: float | None
    total_timeout: float | None
    budget: RetryBudget | None
    rng: random.Random
    order: tuple[Strategy, ...]
    slow_call_duration: float | None
    thread_pool: Callable[[], concurrent.futures.ThreadPoolExecutor]

    @property
    def observed(self) -> bool:
        """Whether anyone listens to this policy's events."""
        return bool(self.observers)

    def emit(self, event: Event) -> None:
        if self.observers:
            self.observers.on_event(event)

    def deadline_error(self, info: CallInfo) -> DeadlineExceededError:
        """The error of a call whose deadline passed (reported to the observers)."""
        if self.observers:
            self.emit(
                CallRejected(
                    policy=self.name,
                    operation=info.operation,
                    by="deadline",
                    code="DEADLINE_EXCEEDED",
                )
            )
        limit = (
            "deadline"
            if self.total_timeout is None
            else f"total timeout of {self.total_timeout:g}s"
        )
        return DeadlineExceededError(
            f"{limit} exceeded",
            provider=self.name,
            operation=info.operation,
            request_id=current_request_id(),
        )


def code_of(exc: BaseException) -> str:
    """The error code *exc* is reported under."""
    error = exc if isinstance(exc, IntegrationError) else classify_exception(exc)
    return error.code if error is not None else ErrorCode.INTERNAL.value


# -- attempt events: one per attempt (only in the chain when observed) ----------------------------
# An observer that takes attempts directly (``attempt_recorder``) gets a plain call; the others get
# an ``AttemptFinished`` event (see :class:`~antifragile.observability.AttemptSink`).


def attempt_finished(
    chain: Chain, info: CallInfo, number: int, duration: float, exc: BaseException | None
) -> None:
    """Report one finished attempt (*exc*: how it failed, ``None`` when it succeeded)."""
    sink = chain.observers.attempts(chain.name)
    slow_after = chain.slow_call_duration
    try:
        sink.record(
            info.operation,
            number,
            duration,
            None if exc is None else code_of(exc),
            exc.status if isinstance(exc, IntegrationError) else None,
            slow_after is not None and duration >= slow_after,
        )
    except Exception:  # an observer must never break the call it observes
        sink.failed()


def observe_sync(nxt: SyncNext, chain: Chain) -> SyncNext:
    """Report every attempt through *nxt* to the policy's observers."""
    mono = chain.clock.monotonic
    sink = chain.observers.attempts(chain.name)
    slow_after = math.inf if chain.slow_call_duration is None else chain.slow_call_duration

    def call(
        info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        info.attempt += 1
        number, start = info.attempt, mono()
        try:
            result = nxt(info, fn, args, kwargs)
        except Exception as exc:
            attempt_finished(chain, info, number, mono() - start, exc)
            raise
        duration = mono() - start
        try:
            sink.record(info.operation, number, duration, None, None, duration >= slow_after)
        except Exception:  # an observer must never break the call it observes
            sink.failed()
        return result

    return call


def observe_async(nxt: AsyncNext, chain: Chain) -> AsyncNext:
    """:func:`observe_sync` for async calls."""
    mono = chain.clock.monotonic
    sink = chain.observers.attempts(chain.name)
    slow_after = math.inf if chain.slow_call_duration is None else chain.slow_call_duration

    async def call(
        info: CallInfo,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        info.attempt += 1
        number, start = info.attempt, mono()
        try:
            result = await nxt(info, fn, args, kwargs)
        except Exception as exc:
            attempt_finished(chain, info, number, mono() - start, exc)
            raise
        duration = mono() - start
        try:
            sink.record(info.operation, number, duration, None, None, duration >= slow_after)
        except Exception:  # an observer must never break the call it observes
            sink.failed()
        return result

    return call


def invoke_sync(
    info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The innermost step: the protected call itself."""
    return fn(*args, **kwargs)


def invoke_async(
    info: CallInfo, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Awaitable[Any]:
    """The innermost step of an async chain: the call's own awaitable, handed on as it is."""
    return fn(*args, **kwargs)
