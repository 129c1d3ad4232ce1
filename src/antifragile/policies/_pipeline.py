"""Policy: the resilience strategies composed into one pipeline, with sync and async runners.

The default order, from the outside in (that of Polly v8 and Microsoft's HTTP resilience, plus
the strategies they leave to the caller)::

    fallback -> cache -> rate_limit -> total_timeout -> retry -> hedge -> bulkhead -> breaker
             -> attempt_timeout -> the call

so the rate limiter admits each logical call once, the total timeout bounds every retry and
wait, each attempt (and each hedged copy) takes a bulkhead slot only while it runs, and the
breaker sees every attempt. ``order=`` overrides it (the names above).

Each strategy is a small function wrapping the next; the chain is built once per policy, for
sync and for async, and only for the strategies configured, so an unused one costs nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, ParamSpec, TypeVar, cast, overload

from antifragile.errors import (
    AttemptRecord,
    ConfigurationError,
    DeadlineExceededError,
    ErrorCode,
    IntegrationError,
    UpstreamTimeoutError,
    classify_exception,
    redact,
)
from antifragile.observability._context import current_request_id
from antifragile.observability._events import (
    AttemptFinished,
    CallRejected,
    Event,
    FallbackUsed,
    GaveUp,
    HedgeStarted,
    Observer,
    Observers,
    RetryScheduled,
)
from antifragile.policies._breaker import CircuitBreaker, CircuitState
from antifragile.policies._budget import RetryBudget
from antifragile.policies._bulkhead import Bulkhead
from antifragile.policies._clock import SYSTEM_CLOCK, Clock, Duration, seconds
from antifragile.policies._deadline import CallInfo, current_call
from antifragile.policies._fallback import Fallback, StaleCache, is_provider_failure
from antifragile.policies._fused import fusable, fused_async, fused_sync
from antifragile.policies._hedge import Hedge
from antifragile.policies._ratelimit import TokenBucket
from antifragile.policies._retry import Retry
from antifragile.policies._timeout import watchdog

if TYPE_CHECKING:
    from antifragile.errors._envelope import Envelope

P = ParamSpec("P")
T = TypeVar("T")

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


class _Default:
    """Marks an argument left at its documented default."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Final[Any] = _Default()


def _seconds(name: str, value: Duration | None) -> float | None:
    if value is None:
        return None
    result = seconds(value)
    if not result > 0:
        raise ConfigurationError(f"{name} must be > 0 seconds, got {value!r}")
    return result


SyncNext = Callable[[CallInfo, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
AsyncNext = Callable[
    [CallInfo, Callable[..., Awaitable[Any]], tuple[Any, ...], dict[str, Any]], Awaitable[Any]
]


def _attach_history(exc: BaseException, history: list[AttemptRecord], reason: str) -> None:
    """Attach the attempt history to the error that ends a retry loop (never wrap it)."""
    records = tuple(history)
    if isinstance(exc, IntegrationError):
        exc.attempts = records
        exc.give_up_reason = reason
    else:
        try:
            exc.attempts = records  # type: ignore[attr-defined]
            exc.give_up_reason = reason  # type: ignore[attr-defined]
        except AttributeError:  # exceptions with __slots__
            pass
    if len(records) > 1 or reason not in ("not_retryable", "attempts_exhausted"):
        exc.add_note(f"antifragile: gave up after {len(records)} attempt(s): {reason}")


def _record(
    exc: BaseException, number: int, duration: float, clock: Clock, delay: float | None
) -> AttemptRecord:
    error = exc if isinstance(exc, IntegrationError) else classify_exception(exc)
    if error is not None:
        code, status, message = error.code, error.status, error.message
    else:
        code, status, message = ErrorCode.INTERNAL.value, None, f"{type(exc).__name__}: {exc}"
    return AttemptRecord(
        number=number,
        started_at=clock.time() - duration,
        duration=duration,
        code=code,
        message=redact(message)[:300],
        status=status,
        delay=delay,
    )


def _code_of(exc: BaseException) -> str:
    error = exc if isinstance(exc, IntegrationError) else classify_exception(exc)
    return error.code if error is not None else ErrorCode.INTERNAL.value


class Policy:
    """A resilience pipeline for calls to one provider (see the module docs for the order).

    Every argument is optional. ``DEFAULT`` means the documented default (see the policy
    defaults table in the docs); ``None`` turns a strategy off::

        policy = Policy(
            "shopify",
            timeout=10,                              # per attempt
            total_timeout=60,                        # the whole call, retries and waits included
            retry=Retry(attempts=5, backoff=Exponential(0.5, cap=30)),
            breaker=CircuitBreaker(failure_rate=0.5, window=20),
            rate=TokenBucket(2, burst=40),
            bulkhead=Bulkhead(10),
        )

    The stateful strategies (breaker, rate limiter, bulkhead, budget, cache) belong to the policy
    and are shared by every call through it. Strategies constructed without a name, observer or
    clock of their own take the policy's.
    """

    def __init__(
        self,
        name: str = "default",
        *,
        timeout: Duration | None = DEFAULT,
        total_timeout: Duration | None = DEFAULT,
        retry: Retry | None = DEFAULT,
        budget: RetryBudget | None = DEFAULT,
        breaker: CircuitBreaker | None = DEFAULT,
        rate: TokenBucket | None = None,
        bulkhead: Bulkhead | None = None,
        fallback: Fallback | None = None,
        cache: StaleCache | None = None,
        hedge: Hedge | None = None,
        order: Sequence[Strategy] = DEFAULT_ORDER,
        timeout_strategy: Literal["cooperative", "thread"] = "cooperative",
        clock: Clock = SYSTEM_CLOCK,
        observer: Observer | Sequence[Observer] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        if observer is None:
            self.observer: Observers | None = None
        elif isinstance(observer, Sequence):
            self.observer = Observers(observer) if observer else None
        else:
            self.observer = Observers([observer])
        self.timeout = _seconds("timeout", 10.0 if timeout is DEFAULT else timeout)
        self.total_timeout = _seconds(
            "total_timeout", 60.0 if total_timeout is DEFAULT else total_timeout
        )
        self.retry = Retry() if retry is DEFAULT else retry
        if budget is DEFAULT:
            budget = RetryBudget(clock=clock) if self.retry is not None else None
        self.budget = budget
        if breaker is DEFAULT:
            breaker = CircuitBreaker(name, clock=clock)
        self.breaker = breaker
        self.rate = rate
        self.bulkhead = bulkhead
        self.fallback = fallback
        self.cache = cache
        self.hedge = hedge
        if timeout_strategy not in ("cooperative", "thread"):
            raise ConfigurationError("timeout_strategy must be 'cooperative' or 'thread'")
        self.timeout_strategy = timeout_strategy
        unknown = set(order) - set(DEFAULT_ORDER)
        if unknown or len(set(order)) != len(order):
            raise ConfigurationError(
                f"order must name each of {DEFAULT_ORDER} at most once, got {tuple(order)!r}"
            )
        self.order: tuple[Strategy, ...] = tuple(order)
        self.rng = rng or random.Random()
        for component in (breaker, rate, bulkhead, budget, cache):
            self._bind(component)
        self._sync: SyncNext | None = None
        self._async: AsyncNext | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def _bind(self, component: Any) -> None:
        if component is None:
            return
        if getattr(component, "name", None) == "default":
            component.name = self.name
        if getattr(component, "_observer", "absent") is None and self.observer is not None:
            component._observer = self.observer
        if getattr(component, "_clock", None) is SYSTEM_CLOCK and self.clock is not SYSTEM_CLOCK:
            component.use_clock(self.clock)

    def add_observer(self, observer: Observer) -> None:
        """Send this policy's events (and its strategies') to *observer* as well."""
        if self.observer is None:
            self.observer = Observers([observer])
            for component in (self.breaker, self.rate, self.bulkhead):
                self._bind(component)
        else:
            self.observer.add(observer)
        self._sync = self._async = None  # rebuild chains with the observer in place

    def _emit(self, event: Event) -> None:
        if self.observer is not None:
            self.observer.on_event(event)

    # -- running ------------------------------------------------------------------------------

    def _enter_sync(
        self, info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        chain = self._sync or self._build_sync()
        parent = current_call.get()
        if parent is not None:
            info.inherit(parent)
        token = current_call.set(info)
        try:
            return chain(info, fn, args, kwargs)
        finally:
            current_call.reset(token)

    async def _enter_async(
        self,
        info: CallInfo,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        chain = self._async or self._build_async()
        parent = current_call.get()
        if parent is not None:
            info.inherit(parent)
        token = current_call.set(info)
        try:
            return await chain(info, fn, args, kwargs)
        finally:
            current_call.reset(token)

    def run(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        operation: str | None = None,
        replay_safe: bool = True,
    ) -> T:
        """Call ``fn(*args, **kwargs)`` through the pipeline (blocking).

        *replay_safe* says whether calling *fn* again after it may have had its effect is safe;
        when it is not, only failures that certainly happened before the effect are retried.
        """
        info = CallInfo(self.clock, operation, replay_safe)
        return self._enter_sync(info, fn, args, kwargs or {})  # type: ignore[no-any-return]

    async def arun(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        operation: str | None = None,
        replay_safe: bool = True,
    ) -> T:
        """Await ``fn(*args, **kwargs)`` through the pipeline (see :meth:`run`)."""
        info = CallInfo(self.clock, operation, replay_safe)
        return await self._enter_async(info, fn, args, kwargs or {})  # type: ignore[no-any-return]

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` through the pipeline (blocking)."""
        return self._enter_sync(CallInfo(self.clock), fn, args, kwargs)  # type: ignore[no-any-return]

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)`` through the pipeline."""
        info = CallInfo(self.clock)
        return await self._enter_async(info, fn, args, kwargs)  # type: ignore[no-any-return]

    def call_safe(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Envelope[T]:
        """Like :meth:`call`, but returns the response envelope and never raises."""
        from antifragile.errors._envelope import capture  # pydantic: only for this form

        return capture(self.call, fn, *args, **kwargs)

    async def acall_safe(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Envelope[T]:
        """Like :meth:`acall`, but returns the response envelope and never raises."""
        from antifragile.errors._envelope import acapture

        return await acapture(self.acall, fn, *args, **kwargs)

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Use the policy as a decorator of a sync or async function."""
        operation = getattr(fn, "__qualname__", None)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self._enter_async(CallInfo(self.clock, operation), fn, args, kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self._enter_sync(CallInfo(self.clock, operation), fn, args, kwargs)

        return wrapper

    # -- building the chains ------------------------------------------------------------------

    def _configured(self, strategy: Strategy) -> bool:
        if strategy == "attempt_timeout":
            return self.timeout is not None
        if strategy == "total_timeout":
            return self.total_timeout is not None
        if strategy == "rate_limit":
            return self.rate is not None
        return getattr(self, strategy) is not None

    def _observed_after(self) -> Strategy | None:
        """The strategy the attempt observer wraps: the attempt timeout when there is one (so a
        timed-out attempt is reported as such), else nothing (it wraps the call itself)."""
        if self.observer is None or not self._configured("attempt_timeout"):
            return None
        return "attempt_timeout"

    def _build_sync(self) -> SyncNext:
        for component in (self.breaker, self.rate):
            if component is not None and component.shares_state:
                raise ConfigurationError(
                    f"{type(component).__name__} keeps its state in a store and needs async "
                    "calls; use a process-local one for sync code"
                )
        if fusable(self, asynchronous=False):
            self._sync = fused_sync(self)
            return self._sync
        chain: SyncNext = _sync_invoke
        wrap_after = self._observed_after()
        if self.observer is not None and wrap_after is None:
            chain = self._sync_observe(chain)
        for strategy in reversed(self.order):
            if strategy == "hedge" or not self._configured(strategy):
                continue
            chain = getattr(self, f"_sync_{strategy}")(chain)
            if strategy == wrap_after:
                chain = self._sync_observe(chain)
        self._sync = chain
        return chain

    def _build_async(self) -> AsyncNext:
        if fusable(self, asynchronous=True):
            self._async = fused_async(self)
            return self._async
        chain: AsyncNext = _async_invoke
        wrap_after = self._observed_after()
        if self.observer is not None and wrap_after is None:
            chain = self._async_observe(chain)
        for strategy in reversed(self.order):
            if not self._configured(strategy):
                continue
            chain = getattr(self, f"_async_{strategy}")(chain)
            if strategy == wrap_after:
                chain = self._async_observe(chain)
        self._async = chain
        return chain

    # observe: one AttemptFinished per attempt (only built when an observer is attached)

    def _attempt_event(
        self, info: CallInfo, number: int, duration: float, exc: BaseException | None
    ) -> None:
        slow_after = self.breaker.config.slow_call_duration if self.breaker else None
        status = exc.status if isinstance(exc, IntegrationError) else None
        self._emit(
            AttemptFinished(
                policy=self.name,
                operation=info.operation,
                request_id=current_request_id(),
                number=number,
                duration=duration,
                code=None if exc is None else _code_of(exc),
                status=status,
                slow=slow_after is not None and duration >= slow_after,
            )
        )

    def _sync_observe(self, nxt: SyncNext) -> SyncNext:
        mono = self.clock.monotonic

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            info.attempt += 1
            number, start = info.attempt, mono()
            try:
                result = nxt(info, fn, args, kwargs)
            except Exception as exc:
                self._attempt_event(info, number, mono() - start, exc)
                raise
            self._attempt_event(info, number, mono() - start, None)
            return result

        return call

    def _async_observe(self, nxt: AsyncNext) -> AsyncNext:
        mono = self.clock.monotonic

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
                self._attempt_event(info, number, mono() - start, exc)
                raise
            self._attempt_event(info, number, mono() - start, None)
            return result

        return call

    # fallback

    def _fallback_used(
        self, info: CallInfo, source: str, exc: BaseException | None, age: float | None = None
    ) -> None:
        if self.observer is not None:
            self._emit(
                FallbackUsed(
                    policy=self.name,
                    operation=info.operation,
                    request_id=current_request_id(),
                    source=source,
                    code=None if exc is None else _code_of(exc),
                    age=age,
                )
            )

    def _sync_fallback(self, nxt: SyncNext) -> SyncNext:
        fallback = cast(Fallback, self.fallback)

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            try:
                return nxt(info, fn, args, kwargs)
            except Exception as exc:
                if not fallback.handles(exc):
                    raise
                self._fallback_used(info, fallback.source, exc)
                return fallback.produce(exc)

        return call

    def _async_fallback(self, nxt: AsyncNext) -> AsyncNext:
        fallback = cast(Fallback, self.fallback)

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            try:
                return await nxt(info, fn, args, kwargs)
            except Exception as exc:
                if not fallback.handles(exc):
                    raise
                self._fallback_used(info, fallback.source, exc)
                value = fallback.produce(exc)
                if inspect.isawaitable(value):
                    value = await value
                return value

        return call

    # cache (stale-if-error, stale-while-revalidate)

    def _stale_usable(self, cache: StaleCache, exc: BaseException, age: float) -> bool:
        return is_provider_failure(exc) and age <= cache.ttl + cache.stale_if_error

    def _sync_cache(self, nxt: SyncNext) -> SyncNext:
        cache = cast(StaleCache, self.cache)

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            key = cache.key(args, kwargs)
            hit = cache.lookup(key)
            if hit is not None and hit[1] < cache.ttl:
                return hit[0]
            try:
                value = nxt(info, fn, args, kwargs)
            except Exception as exc:
                if hit is None or not self._stale_usable(cache, exc, hit[1]):
                    raise
                self._fallback_used(info, "stale", exc, hit[1])
                return hit[0]
            cache.store(key, value)
            return value

        return call

    def _async_cache(self, nxt: AsyncNext) -> AsyncNext:
        cache = cast(StaleCache, self.cache)
        background: set[asyncio.Task[Any]] = set()

        async def refresh(
            key: Any,
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> None:
            try:
                cache.store(key, await nxt(info, fn, args, kwargs))
            except Exception:  # the stale value stays; the next caller tries again
                pass
            finally:
                cache.refreshing.discard(key)

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            key = cache.key(args, kwargs)
            hit = cache.lookup(key)
            if hit is not None:
                value, age = hit
                if age < cache.ttl:
                    return value
                if age < cache.ttl + cache.stale_while_revalidate:
                    if key not in cache.refreshing:
                        cache.refreshing.add(key)
                        task = asyncio.create_task(
                            refresh(
                                key,
                                CallInfo(self.clock, info.operation, info.replay_safe),
                                fn,
                                args,
                                kwargs,
                            )
                        )
                        background.add(task)
                        task.add_done_callback(background.discard)
                    self._fallback_used(info, "stale", None, age)
                    return value
            try:
                value = await nxt(info, fn, args, kwargs)
            except Exception as exc:
                if hit is None or not self._stale_usable(cache, exc, hit[1]):
                    raise
                self._fallback_used(info, "stale", exc, hit[1])
                return hit[0]
            cache.store(key, value)
            return value

        return call

    # rate limit

    def _sync_rate_limit(self, nxt: SyncNext) -> SyncNext:
        reserve = cast(TokenBucket, self.rate).reserve
        sleep = self.clock.sleep

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            wait = reserve(1.0, info.operation)
            if wait > 0:
                sleep(wait)
            return nxt(info, fn, args, kwargs)

        return call

    def _async_rate_limit(self, nxt: AsyncNext) -> AsyncNext:
        rate = cast(TokenBucket, self.rate)
        reserve = rate.reserve
        areserve = rate.areserve if rate.shares_state else None
        asleep = self.clock.asleep

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if areserve is None:
                wait = reserve(1.0, info.operation)
            else:
                wait = await areserve(1.0, info.operation)
            if wait > 0:
                try:
                    await asleep(wait)
                except BaseException:
                    rate.refund()
                    raise
            return await nxt(info, fn, args, kwargs)

        return call

    # total timeout

    def _deadline_error(self, info: CallInfo) -> DeadlineExceededError:
        if self.observer is not None:
            self._emit(
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

    def _sync_total_timeout(self, nxt: SyncNext) -> SyncNext:
        total = cast(float, self.total_timeout)
        mono = self.clock.monotonic

        def call(
            info: CallInfo,
            fn: Callable[..., Any],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            deadline = mono() + total
            if info.deadline is None or deadline < info.deadline:
                info.deadline = deadline
            return nxt(info, fn, args, kwargs)

        return call

    def _async_total_timeout(self, nxt: AsyncNext) -> AsyncNext:
        total = cast(float, self.total_timeout)
        mono = self.clock.monotonic
        order = self.order
        # an attempt timeout further in enforces the deadline too: no second timer needed
        enforced_inside = (
            self.timeout is not None
            and "attempt_timeout" in order
            and order.index("attempt_timeout") > order.index("total_timeout")
        )

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
            if enforced_inside:
                return await nxt(info, fn, args, kwargs)
            dog = watchdog()
            scope = dog.enter(dog.loop_time() + (info.deadline - now))
            try:
                return await nxt(info, fn, args, kwargs)
            except asyncio.CancelledError:
                if scope.expired and scope.task.uncancel() == 0:
                    raise self._deadline_error(info) from None
                raise
            finally:
                dog.exit(scope)

        return call

    # retry

    def _retry_decision(
        self,
        info: CallInfo,
        exc: BaseException,
        number: int,
        previous: float,
        history: list[AttemptRecord],
        duration: float,
    ) -> float:
        """Record the failed attempt and return the delay before the next, or re-raise."""
        retry = cast(Retry, self.retry)
        now = self.clock.monotonic()
        remaining = None if info.deadline is None else info.deadline - now
        decision = retry.decide(
            exc,
            attempt=number,
            previous_delay=previous,
            remaining=remaining,
            rng=self.rng,
            replay_safe=info.replay_safe,
        )
        reason = decision.give_up
        if reason is None and self.budget is not None and not self.budget.try_spend():
            reason = "retry_budget_exhausted"
            if self.observer is not None:
                self._emit(
                    CallRejected(
                        policy=self.name,
                        operation=info.operation,
                        by="retry_budget",
                        code="RETRY_BUDGET_EXHAUSTED",
                    )
                )
        history.append(
            _record(exc, number, duration, self.clock, None if reason else decision.delay)
        )
        if reason is not None:
            if self.observer is not None:
                self._emit(
                    GaveUp(
                        policy=self.name,
                        operation=info.operation,
                        request_id=current_request_id(),
                        attempts=number,
                        reason=reason,
                        code=_code_of(exc),
                    )
                )
            _attach_history(exc, history, reason)
            raise exc
        delay = cast(float, decision.delay)
        if self.observer is not None:
            self._emit(
                RetryScheduled(
                    policy=self.name,
                    operation=info.operation,
                    request_id=current_request_id(),
                    number=number,
                    delay=delay,
                    code=_code_of(exc),
                    from_retry_after=decision.from_retry_after,
                )
            )
        return delay

    def _retry_deadline(self, info: CallInfo) -> None:
        retry = cast(Retry, self.retry)
        if retry.deadline is not None:
            deadline = self.clock.monotonic() + seconds(retry.deadline)
            if info.deadline is None or deadline < info.deadline:
                info.deadline = deadline

    def _sync_retry(self, nxt: SyncNext) -> SyncNext:
        budget = self.budget
        mono = self.clock.monotonic
        sleep = self.clock.sleep
        decide = self._retry_decision
        has_deadline = cast(Retry, self.retry).deadline is not None

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if budget is not None:
                budget.record_request()
            if has_deadline:
                self._retry_deadline(info)
            number, delay = 1, 0.0
            history: list[AttemptRecord] = []
            while True:
                start = mono()
                try:
                    return nxt(info, fn, args, kwargs)
                except Exception as exc:
                    delay = decide(info, exc, number, delay, history, mono() - start)
                sleep(delay)
                number += 1

        return call

    def _async_retry(self, nxt: AsyncNext) -> AsyncNext:
        budget = self.budget
        mono = self.clock.monotonic
        asleep = self.clock.asleep
        decide = self._retry_decision
        has_deadline = cast(Retry, self.retry).deadline is not None

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if budget is not None:
                budget.record_request()
            if has_deadline:
                self._retry_deadline(info)
            number, delay = 1, 0.0
            history: list[AttemptRecord] = []
            while True:
                start = mono()
                try:
                    return await nxt(info, fn, args, kwargs)
                except Exception as exc:
                    delay = decide(info, exc, number, delay, history, mono() - start)
                await asleep(delay)
                number += 1

        return call

    # hedge (async only)

    def _async_hedge(self, nxt: AsyncNext) -> AsyncNext:
        hedge = cast(Hedge, self.hedge)
        budget = self.budget

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
                    can_hedge = launched < hedge.max_hedges
                    done, pending = await asyncio.wait(
                        pending,
                        timeout=hedge.delay if can_hedge else None,
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
                        launched = hedge.max_hedges  # the budget said no: stop hedging
                        continue
                    launched += 1
                    if self.observer is not None:
                        self._emit(
                            HedgeStarted(
                                policy=self.name,
                                operation=info.operation,
                                request_id=current_request_id(),
                                number=launched,
                                after=hedge.delay,
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

    # bulkhead

    def _sync_bulkhead(self, nxt: SyncNext) -> SyncNext:
        bulkhead = cast(Bulkhead, self.bulkhead)
        # a free slot is one atomic deque pop and goes back with one append (see Bulkhead)
        take, give, waiters = bulkhead._tokens.pop, bulkhead._tokens.append, bulkhead._waiters
        acquire, hand_over = bulkhead.acquire, bulkhead.hand_over

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

    def _async_bulkhead(self, nxt: AsyncNext) -> AsyncNext:
        bulkhead = cast(Bulkhead, self.bulkhead)
        take, give, waiters = bulkhead._tokens.pop, bulkhead._tokens.append, bulkhead._waiters
        acquire, hand_over = bulkhead.aacquire, bulkhead.hand_over

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

    # breaker

    def _sync_breaker(self, nxt: SyncNext) -> SyncNext:
        breaker = cast(CircuitBreaker, self.breaker)
        acquire, ok, fail = breaker.acquire, breaker.on_success, breaker.on_failure
        release, snapshot = breaker.release, breaker.holder.get
        closed = CircuitState.CLOSED
        if breaker.times_calls:
            mono = self.clock.monotonic

            def timed(
                info: CallInfo,
                fn: Callable[..., Any],
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                snap = snapshot()
                token = (
                    snap.generation if snap.state is closed else acquire(operation=info.operation)
                )
                start = mono()
                try:
                    result = nxt(info, fn, args, kwargs)
                except Exception as exc:
                    fail(token, exc, mono() - start)
                    raise
                except BaseException:
                    release(token)
                    raise
                ok(token, mono() - start)
                return result

            return timed

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            snap = snapshot()
            token = snap.generation if snap.state is closed else acquire(operation=info.operation)
            try:
                result = nxt(info, fn, args, kwargs)
            except Exception as exc:
                fail(token, exc, 0.0)
                raise
            except BaseException:
                release(token)
                raise
            ok(token, 0.0)
            return result

        return call

    def _async_breaker(self, nxt: AsyncNext) -> AsyncNext:
        breaker = cast(CircuitBreaker, self.breaker)
        if breaker.shares_state:
            return self._async_shared_breaker(nxt, breaker)
        acquire, ok, fail = breaker.acquire, breaker.on_success, breaker.on_failure
        release, snapshot = breaker.release, breaker.holder.get
        closed = CircuitState.CLOSED
        # durations are only measured when slow-call detection needs them
        mono = self.clock.monotonic if breaker.times_calls else _zero

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            snap = snapshot()
            token = snap.generation if snap.state is closed else acquire(operation=info.operation)
            start = mono()
            try:
                result = await nxt(info, fn, args, kwargs)
            except Exception as exc:
                fail(token, exc, mono() - start)
                raise
            except BaseException:
                release(token)
                raise
            ok(token, mono() - start)
            return result

        return call

    def _async_shared_breaker(self, nxt: AsyncNext, breaker: CircuitBreaker) -> AsyncNext:
        """The breaker layer for a breaker kept in a store: its slow paths are awaited."""
        aacquire, ok, afail = breaker.aacquire, breaker.on_success, breaker.aon_failure
        release, snapshot = breaker.release, breaker.holder.get
        closed = CircuitState.CLOSED
        mono = self.clock.monotonic if breaker.times_calls else _zero

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            snap = snapshot()
            if snap.state is closed:
                token = snap.generation
            else:
                token = await aacquire(operation=info.operation)
            start = mono()
            try:
                result = await nxt(info, fn, args, kwargs)
            except Exception as exc:
                await afail(token, exc, mono() - start)
                raise
            except BaseException:
                release(token)
                raise
            ok(token, mono() - start)
            return result

        return call

    # attempt timeout

    def _timeout_error(self, info: CallInfo) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(
            f"attempt timed out after {self.timeout:g}s",
            provider=self.name,
            operation=info.operation,
            request_id=current_request_id(),
            replay_safe=info.replay_safe,
        )

    def _thread_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    thread_name_prefix=f"antifragile-{self.name}"
                )
            return self._executor

    def _sync_attempt_timeout(self, nxt: SyncNext) -> SyncNext:
        timeout = cast(float, self.timeout)
        mono = self.clock.monotonic
        threaded = self.timeout_strategy == "thread"

        def call(
            info: CallInfo,
            fn: Callable[..., Any],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            now = mono()
            deadline = now + timeout
            by_total = False
            if info.deadline is not None and info.deadline <= deadline:
                if info.deadline <= now:
                    raise self._deadline_error(info)
                deadline, by_total = info.deadline, True
            info.attempt_deadline = deadline
            try:
                if not threaded:
                    return nxt(info, fn, args, kwargs)
                context = contextvars.copy_context()
                future = self._thread_pool().submit(context.run, nxt, info, fn, args, kwargs)
                try:
                    return future.result(timeout=deadline - now)
                except concurrent.futures.TimeoutError:
                    future.cancel()
                    if by_total:
                        raise self._deadline_error(info) from None
                    raise self._timeout_error(info) from None
            finally:
                info.attempt_deadline = None

        return call

    def _async_attempt_timeout(self, nxt: AsyncNext) -> AsyncNext:
        timeout = cast(float, self.timeout)
        mono = self.clock.monotonic

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
                    raise self._deadline_error(info)
                deadline, by_total = info.deadline, True
            info.attempt_deadline = deadline
            dog = watchdog()
            scope = dog.enter(dog.loop_time() + (deadline - now))
            try:
                return await nxt(info, fn, args, kwargs)
            except asyncio.CancelledError:
                if scope.expired and scope.task.uncancel() == 0:
                    if by_total:
                        raise self._deadline_error(info) from None
                    raise self._timeout_error(info) from None
                raise
            finally:
                dog.exit(scope)
                info.attempt_deadline = None

        return call

    def close(self) -> None:
        """Release the worker threads of ``timeout_strategy="thread"``, if any were started."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def __repr__(self) -> str:
        parts = [s for s in self.order if self._configured(s)]
        return f"Policy({self.name!r}, {' -> '.join(parts)})"


def _zero() -> float:
    return 0.0


def _sync_invoke(
    info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return fn(*args, **kwargs)


async def _async_invoke(
    info: CallInfo, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    return await fn(*args, **kwargs)


def resilient(policy: Policy | None = None, /, **options: Any) -> Policy:
    """A policy to use as a decorator: ``@resilient(retry=Retry(attempts=5))``.

    ``resilient(policy)`` returns *policy* itself; keyword arguments build a new
    :class:`Policy` (``name`` defaults to ``"default"``)."""
    if policy is not None:
        if options:
            raise ConfigurationError("pass either a Policy or keyword options, not both")
        return policy
    return Policy(**options)
