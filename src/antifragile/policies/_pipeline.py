"""Policy: the resilience strategies composed into one pipeline, with sync and async runners.

The order, from the outside in (that of Polly v8 and Microsoft's HTTP resilience, plus the
strategies they leave to the caller)::

    fallback -> cache -> rate_limit -> total_timeout -> retry -> hedge -> bulkhead -> breaker
             -> attempt_timeout -> the call

so the rate limiter admits each logical call once, the total timeout bounds every retry and
wait, each attempt (and each hedged copy) takes a bulkhead slot only while it runs, and the
breaker sees every attempt. ``order=`` overrides it (the names above).

The policy only composes. Each strategy owns its two shells, ``wrap_sync`` and ``wrap_async``
(:class:`~antifragile.policies._chain.Stage`), and :data:`STAGES` -- a table from strategy
name to the policy's stage for it -- is all the policy knows about them: the chain is built
once for sync calls and once for async ones, from the inside out, with only the strategies
configured, so an unused one costs nothing. When the policy is observed, one more shell reports
every attempt (around the attempt timeout, so a timed-out attempt is reported as such).

A policy is immutable: :meth:`Policy.replace` returns a new one, which shares the stateful
strategies (breaker, rate limiter, bulkhead, budget, cache) and the observers it does not
replace.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import random
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn, ParamSpec, TypeVar, overload

from antifragile.errors import ConfigurationError
from antifragile.observability._events import Observer, Observers
from antifragile.policies._breaker import CircuitBreaker
from antifragile.policies._budget import RetryBudget
from antifragile.policies._bulkhead import Bulkhead
from antifragile.policies._chain import (
    DEFAULT_ORDER,
    AsyncNext,
    Chain,
    Stage,
    Strategy,
    SyncNext,
    invoke_async,
    invoke_sync,
    observe_async,
    observe_sync,
)
from antifragile.policies._clock import SYSTEM_CLOCK, Clock, Duration, seconds
from antifragile.policies._deadline import CallInfo, current_call
from antifragile.policies._fallback import Fallback, StaleCache
from antifragile.policies._hedge import Hedge
from antifragile.policies._ratelimit import TokenBucket
from antifragile.policies._retry import Retry
from antifragile.policies._timeout import AttemptTimeout, TotalTimeout

if TYPE_CHECKING:
    from antifragile.errors._envelope import Envelope
    from antifragile.policies._attempts import AsyncAttempts, SyncAttempts

P = ParamSpec("P")
T = TypeVar("T")

__all__ = ["DEFAULT", "DEFAULT_ORDER", "KEEP", "STAGES", "Policy", "Strategy", "resilient"]


class _Default:
    """Marks an argument left at its documented default."""

    def __repr__(self) -> str:
        return "DEFAULT"


class _Keep:
    """Marks a :meth:`Policy.replace` argument left as it is."""

    def __repr__(self) -> str:
        return "KEEP"


DEFAULT: Final[Any] = _Default()
KEEP: Final[Any] = _Keep()


def _seconds(name: str, value: Duration | None) -> float | None:
    if value is None:
        return None
    result = seconds(value)
    if not result > 0:
        raise ConfigurationError(f"{name} must be > 0 seconds, got {value!r}")
    return result


def _total_timeout(policy: Policy) -> Stage | None:
    return None if policy.total_timeout is None else TotalTimeout(policy.total_timeout)


def _attempt_timeout(policy: Policy) -> Stage | None:
    if policy.timeout is None:
        return None
    return AttemptTimeout(policy.timeout, policy.timeout_strategy)


#: strategy name -> the policy's stage for it (``None``: not configured); the chain is built
#: from this table in the policy's ``order``
STAGES: Final[Mapping[Strategy, Callable[[Policy], Stage | None]]] = MappingProxyType(
    {
        "fallback": lambda policy: policy.fallback,
        "cache": lambda policy: policy.cache,
        "rate_limit": lambda policy: policy.rate,
        "total_timeout": _total_timeout,
        "retry": lambda policy: policy.retry,
        "hedge": lambda policy: policy.hedge,
        "bulkhead": lambda policy: policy.bulkhead,
        "breaker": lambda policy: policy.breaker,
        "attempt_timeout": _attempt_timeout,
    }
)


class _Runtime:
    """The worker threads a policy starts when it first needs them."""

    __slots__ = ("executor", "lock")

    def __init__(self) -> None:
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.lock = threading.Lock()


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
    clock of their own take the policy's (their ``adopt`` method).

    A policy is immutable: assigning an attribute raises ``AttributeError``; use
    :meth:`replace`. The one thing that can be added later is an observer
    (:meth:`add_observer`).
    """

    name: str
    clock: Clock
    timeout: float | None
    total_timeout: float | None
    retry: Retry | None
    budget: RetryBudget | None
    breaker: CircuitBreaker | None
    rate: TokenBucket | None
    bulkhead: Bulkhead | None
    fallback: Fallback | None
    cache: StaleCache | None
    hedge: Hedge | None
    order: tuple[Strategy, ...]
    timeout_strategy: Literal["cooperative", "thread"]
    rng: random.Random
    _observers: Observers
    _runtime: _Runtime
    # the chains, built on first use (and again after add_observer)
    _sync_chain: SyncNext | None
    _async_chain: AsyncNext | None

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
        if timeout_strategy not in ("cooperative", "thread"):
            raise ConfigurationError("timeout_strategy must be 'cooperative' or 'thread'")
        unknown = set(order) - set(DEFAULT_ORDER)
        if unknown or len(set(order)) != len(order):
            raise ConfigurationError(
                f"order must name each of {DEFAULT_ORDER} at most once, got {tuple(order)!r}"
            )
        if isinstance(observer, Observers):  # shared as it is (how replace() keeps observers)
            observers = observer
        elif observer is None:
            observers = Observers()
        elif isinstance(observer, Sequence):
            observers = Observers(observer)
        else:
            observers = Observers([observer])
        retry = Retry() if retry is DEFAULT else retry
        if budget is DEFAULT:
            budget = RetryBudget(clock=clock) if retry is not None else None
        if breaker is DEFAULT:
            breaker = CircuitBreaker(name, clock=clock)
        fields: dict[str, Any] = {
            "name": name,
            "clock": clock,
            "timeout": _seconds("timeout", 10.0 if timeout is DEFAULT else timeout),
            "total_timeout": _seconds(
                "total_timeout", 60.0 if total_timeout is DEFAULT else total_timeout
            ),
            "retry": retry,
            "budget": budget,
            "breaker": breaker,
            "rate": rate,
            "bulkhead": bulkhead,
            "fallback": fallback,
            "cache": cache,
            "hedge": hedge,
            "order": tuple(order),
            "timeout_strategy": timeout_strategy,
            "rng": rng or random.Random(),
            "_observers": observers,
            "_runtime": _Runtime(),
            "_sync_chain": None,
            "_async_chain": None,
        }
        for key, value in fields.items():
            object.__setattr__(self, key, value)
        for component in (breaker, rate, bulkhead, budget, cache):
            if component is not None:
                component.adopt(name=name, clock=clock, observer=observers)

    def __setattr__(self, key: str, value: object) -> NoReturn:
        raise AttributeError(f"a Policy is immutable: use policy.replace({key}=...) for a new one")

    def __delattr__(self, key: str) -> NoReturn:
        raise AttributeError("a Policy is immutable")

    def replace(
        self,
        *,
        name: str = KEEP,
        timeout: Duration | None = KEEP,
        total_timeout: Duration | None = KEEP,
        retry: Retry | None = KEEP,
        budget: RetryBudget | None = KEEP,
        breaker: CircuitBreaker | None = KEEP,
        rate: TokenBucket | None = KEEP,
        bulkhead: Bulkhead | None = KEEP,
        fallback: Fallback | None = KEEP,
        cache: StaleCache | None = KEEP,
        hedge: Hedge | None = KEEP,
        order: Sequence[Strategy] = KEEP,
        timeout_strategy: Literal["cooperative", "thread"] = KEEP,
        clock: Clock = KEEP,
        observer: Observer | Sequence[Observer] | None = KEEP,
        rng: random.Random | None = KEEP,
    ) -> Policy:
        """A new policy: this one with the arguments given changed (``None`` turns a strategy
        off, as in the constructor).

        What is not replaced is shared with this policy, not copied: the stateful strategies
        (a breaker keeps its state, a bulkhead its slots) and the observers (one added to
        either policy later reaches both)::

            shared = policy.replace(breaker=SharedCircuitBreaker.from_config(
                policy.breaker.config, store, name="shopify"))
        """

        def pick(value: Any, current: Any) -> Any:
            return current if value is KEEP else value

        return Policy(
            pick(name, self.name),
            timeout=pick(timeout, self.timeout),
            total_timeout=pick(total_timeout, self.total_timeout),
            retry=pick(retry, self.retry),
            budget=pick(budget, self.budget),
            breaker=pick(breaker, self.breaker),
            rate=pick(rate, self.rate),
            bulkhead=pick(bulkhead, self.bulkhead),
            fallback=pick(fallback, self.fallback),
            cache=pick(cache, self.cache),
            hedge=pick(hedge, self.hedge),
            order=pick(order, self.order),
            timeout_strategy=pick(timeout_strategy, self.timeout_strategy),
            clock=pick(clock, self.clock),
            observer=pick(observer, self._observers),
            rng=pick(rng, self.rng),
        )

    @property
    def observer(self) -> Observers | None:
        """The observers of this policy's events (``None`` when there are none)."""
        return self._observers if self._observers else None

    def add_observer(self, observer: Observer) -> None:
        """Send this policy's events (and its strategies') to *observer* as well."""
        self._observers.add(observer)
        object.__setattr__(self, "_sync_chain", None)  # rebuilt with the observer in place
        object.__setattr__(self, "_async_chain", None)

    # -- running ------------------------------------------------------------------------------

    def _enter_sync(
        self, info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        chain = self._sync_chain or self._build_sync()
        parent = current_call.get()
        if parent is not None:
            info.inherit(parent)
        token = current_call.set(info)
        try:
            return chain(info, fn, args, kwargs)
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
        # the entry points run the chain themselves: one coroutine per call, not two
        info = CallInfo(self.clock, operation, replay_safe)
        chain = self._async_chain or self._build_async()
        parent = current_call.get()
        if parent is not None:
            info.inherit(parent)
        token = current_call.set(info)
        try:
            return await chain(info, fn, args, kwargs or {})  # type: ignore[no-any-return]
        finally:
            current_call.reset(token)

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` through the pipeline (blocking)."""
        return self._enter_sync(CallInfo(self.clock), fn, args, kwargs)  # type: ignore[no-any-return]

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)`` through the pipeline."""
        info = CallInfo(self.clock)
        chain = self._async_chain or self._build_async()
        parent = current_call.get()
        if parent is not None:
            info.inherit(parent)
        token = current_call.set(info)
        try:
            return await chain(info, fn, args, kwargs)  # type: ignore[no-any-return]
        finally:
            current_call.reset(token)

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
                info = CallInfo(self.clock, operation)
                chain = self._async_chain or self._build_async()
                parent = current_call.get()
                if parent is not None:
                    info.inherit(parent)
                token = current_call.set(info)
                try:
                    return await chain(info, fn, args, kwargs)
                finally:
                    current_call.reset(token)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self._enter_sync(CallInfo(self.clock, operation), fn, args, kwargs)

        return wrapper

    # -- retrying a block of code -------------------------------------------------------------

    def attempts(self, *, operation: str | None = None, replay_safe: bool = True) -> SyncAttempts:
        """Attempts at a block of code, for code that is not one function call::

            for attempt in policy.attempts():
                with attempt:
                    response = client.get(url)
                    response.raise_for_status()

        A failure inside ``with attempt`` that the retry policy retries is swallowed and the
        loop waits (back-off or ``Retry-After``) before the next attempt; otherwise -- or when
        attempts, deadline or budget run out -- the block's own exception propagates, with its
        attempt history. Each attempt passes the breaker (an open breaker raises
        ``CircuitOpenError`` at ``with attempt``); the rate limiter admits the loop once;
        ``total_timeout`` (or ``Retry.deadline``) bounds the whole loop and is published to the
        block (:func:`~antifragile.policies.time_remaining`). Waits run on the policy's clock.
        """
        from antifragile.policies._attempts import SyncAttempts

        return SyncAttempts(self._context(), self, CallInfo(self.clock, operation, replay_safe))

    def attempts_async(
        self, *, operation: str | None = None, replay_safe: bool = True
    ) -> AsyncAttempts:
        """:meth:`attempts` for async code: ``async for attempt in policy.attempts_async():
        with attempt: ...`` (waits are awaited; a breaker kept in a store is asked with I/O)."""
        from antifragile.policies._attempts import AsyncAttempts

        return AsyncAttempts(self._context(), self, CallInfo(self.clock, operation, replay_safe))

    # -- building the chains ------------------------------------------------------------------

    def _context(self) -> Chain:
        return Chain(
            name=self.name,
            clock=self.clock,
            observers=self._observers,
            timeout=self.timeout,
            total_timeout=self.total_timeout,
            budget=self.budget,
            rng=self.rng,
            order=self.order,
            slow_call_duration=self.breaker.config.slow_call_duration if self.breaker else None,
            thread_pool=self._thread_pool,
        )

    def stages(self) -> Iterator[tuple[Strategy, Stage]]:
        """The configured strategies in order, from the outside in, with their stages."""
        for strategy in self.order:
            stage = STAGES[strategy](self)
            if stage is not None:
                yield strategy, stage

    def _observed_after(self) -> Strategy | None:
        """The strategy the attempt observer wraps: the attempt timeout when there is one (so a
        timed-out attempt is reported as such), else nothing (it wraps the call itself)."""
        if self.timeout is None or "attempt_timeout" not in self.order:
            return None
        return "attempt_timeout"

    def _build_sync(self) -> SyncNext:
        context = self._context()
        observed = context.observed
        wrap_after = self._observed_after() if observed else None
        chain: SyncNext = invoke_sync
        if observed and wrap_after is None:
            chain = observe_sync(chain, context)
        for strategy, stage in reversed(list(self.stages())):
            chain = stage.wrap_sync(chain, context)
            if strategy == wrap_after:
                chain = observe_sync(chain, context)
        object.__setattr__(self, "_sync_chain", chain)
        return chain

    def _build_async(self) -> AsyncNext:
        context = self._context()
        observed = context.observed
        wrap_after = self._observed_after() if observed else None
        chain: AsyncNext = invoke_async
        if observed and wrap_after is None:
            chain = observe_async(chain, context)
        for strategy, stage in reversed(list(self.stages())):
            chain = stage.wrap_async(chain, context)
            if strategy == wrap_after:
                chain = observe_async(chain, context)
        object.__setattr__(self, "_async_chain", chain)
        return chain

    def _thread_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        runtime = self._runtime
        with runtime.lock:
            if runtime.executor is None:
                runtime.executor = concurrent.futures.ThreadPoolExecutor(
                    thread_name_prefix=f"antifragile-{self.name}"
                )
            return runtime.executor

    def close(self) -> None:
        """Release the worker threads of ``timeout_strategy="thread"``, if any were started."""
        runtime = self._runtime
        with runtime.lock:
            executor, runtime.executor = runtime.executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        return f"Policy({self.name!r}, {' -> '.join(name for name, _ in self.stages())})"


def resilient(policy: Policy | None = None, /, **options: Any) -> Policy:
    """A policy to use as a decorator: ``@resilient(retry=Retry(attempts=5))``.

    ``resilient(policy)`` returns *policy* itself; keyword arguments build a new
    :class:`Policy` (``name`` defaults to ``"default"``)."""
    if policy is not None:
        if options:
            raise ConfigurationError("pass either a Policy or keyword options, not both")
        return policy
    return Policy(**options)
