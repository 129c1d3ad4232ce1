"""Rate limiter: a token bucket that also listens to what the provider says about its limits.

The bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second. A call takes
one token; when none is left it waits for the next one, up to ``max_wait`` seconds, and beyond
that is rejected at once with :class:`~antifragile.RateLimitedError` (``retry_after`` says when a
token will be there). Reservations are made atomically, so concurrent callers are spaced out
evenly instead of all waking at once.

It adapts to provider rate-limit headers (:class:`RateLimitInfo`, parsed by the HTTP client):

* ``remaining`` clamps the local tokens to what the provider says is left (other clients of the
  same account use the quota too);
* when ``remaining`` falls below ``low_watermark`` of ``limit`` and the reset time is known, the
  pace drops to ``remaining / reset_after`` until the reset -- slowing down *before* the 429;
* ``remaining == 0`` pauses until the reset (or one refill interval when it is unknown);
* a 429's ``Retry-After`` pauses the bucket for that long.

A **rolling window** (``window`` in the info: HubSpot's "100 per 10 s") has no reset moment: a
slot comes free when a request leaves the window. Once the headers say so, the bucket keeps the
times of its last ``limit`` reservations and hands out a token only when the window has room for
it as well (the ``limit``-th reservation back is more than ``window`` seconds old, with a small
margin) -- a burst of ``limit``, then the next as the first ones leave, the provider's own
schedule. ``remaining`` then neither clamps the tokens nor pauses the bucket (``remaining == 0``
would otherwise stop it for the whole window, and a drain would run a window on, a window off);
it reconciles the window instead: reservations the provider did not count, once settled, leave
it, and requests it counted beyond this bucket's (other clients') join it as if made now.
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from antifragile.errors import ConfigurationError, RateLimitedError
from antifragile.observability._context import current_request_id
from antifragile.observability._events import CallRejected, LimiterAdjusted, LimiterWait, Observer
from antifragile.policies._clock import SYSTEM_CLOCK, Clock, Duration, seconds
from antifragile.policies._deadline import CallInfo

if TYPE_CHECKING:
    from antifragile.policies._chain import AsyncNext, Chain, SyncNext


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What a provider's response said about its rate limit (any field may be unknown).

    ``reset_after`` and ``retry_after`` are seconds from now; ``window`` is the length in
    seconds of the rolling window ``limit`` counts over, when the limit is one (no reset moment).
    """

    limit: float | None = None
    remaining: float | None = None
    reset_after: float | None = None
    retry_after: float | None = None
    window: float | None = None

    def __bool__(self) -> bool:
        return not (
            self.limit is None
            and self.remaining is None
            and self.reset_after is None
            and self.retry_after is None
            and self.window is None
        )


#: how old (seconds) a reservation must be before a provider's ``remaining`` may say it was
#: never counted: answers to requests still in flight report an older state
WINDOW_SETTLED = 1.0


def window_margin(window: float) -> float:
    """How much later than ``window`` seconds after a request the next one may take its slot:
    the provider counts arrivals, the bucket counts grants, and a busy client's requests reach
    the provider a few hundred milliseconds after their grant (5 % of the window, at least
    0.25 s)."""
    return max(0.25, 0.05 * window)


class TokenBucket:
    """A thread-safe, adaptive token-bucket rate limiter (see the module docs)."""

    __slots__ = (
        "_adaptive_until",
        "_clock",
        "_lock",
        "_observer",
        "_pace",
        "_stamp",
        "_tokens",
        "_window",
        "_window_log",
        "burst",
        "low_watermark",
        "max_wait",
        "name",
        "rate",
    )

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        max_wait: Duration = 10.0,
        low_watermark: float = 0.1,
        name: str = "default",
        clock: Clock = SYSTEM_CLOCK,
        observer: Observer | None = None,
    ) -> None:
        if not rate > 0:
            raise ConfigurationError(f"rate must be > 0 tokens per second, got {rate!r}")
        burst = max(1.0, rate) if burst is None else burst
        if not burst >= 1:
            raise ConfigurationError(f"burst must be >= 1, got {burst!r}")
        max_wait = seconds(max_wait)
        if not max_wait >= 0:
            raise ConfigurationError(f"max_wait must be >= 0 seconds, got {max_wait!r}")
        if not 0 <= low_watermark < 1:
            raise ConfigurationError("low_watermark must be within [0, 1)")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_wait = float(max_wait)
        self.low_watermark = low_watermark
        self.name = name
        self._clock = clock
        self._observer = observer
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock.monotonic()
        self._pace = self.rate
        self._adaptive_until = 0.0
        #: a rolling window learnt from the provider: (limit, seconds); the grant times of the
        #: last ``limit`` reservations (monotonic seconds)
        self._window: tuple[int, float] | None = None
        self._window_log: collections.deque[float] = collections.deque()

    def use_clock(self, clock: Clock) -> None:
        """Switch to *clock* (a policy hands its clock to strategies built without one)."""
        with self._lock:
            self._clock = clock
            self._stamp = clock.monotonic()
            self._adaptive_until = 0.0
            self._window_log.clear()

    # -- taking tokens ------------------------------------------------------------------------

    def _current_rate(self, now: float) -> float:
        if now < self._adaptive_until:
            return self._pace
        return self.rate

    def _available(self, now: float, rate: float) -> float:
        tokens = self._tokens + (now - self._stamp) * rate
        return self.burst if tokens > self.burst else tokens

    def reserve(self, tokens: float = 1.0, operation: str | None = None) -> float:
        """Take *tokens* now; returns how long to wait before using them.

        Raises :class:`RateLimitedError` (taking nothing) when the wait would exceed ``max_wait``.
        """
        if self._window is not None:
            return self._reserve_windowed(tokens, operation)
        with self._lock:
            now = self._clock.monotonic()
            rate = self._pace if now < self._adaptive_until else self.rate
            available = self._tokens + (now - self._stamp) * rate
            if available > self.burst:
                available = self.burst
            if available >= tokens:
                self._tokens = available - tokens
                self._stamp = now
                return 0.0
            wait = (tokens - available) / rate
            if wait > self.max_wait:
                rejected = True
            else:
                rejected = False
                self._tokens = available - tokens
                self._stamp = now
        if rejected:
            if self._observer is not None:
                self._observer.on_event(
                    CallRejected(
                        policy=self.name,
                        operation=operation,
                        request_id=current_request_id(),
                        by="rate_limiter",
                        code="RATE_LIMITED",
                        retry_after=wait,
                    )
                )
            raise RateLimitedError(
                f"rate limiter {self.name!r}: next token in {wait:.2f}s, beyond max_wait "
                f"{self.max_wait:g}s",
                provider=self.name,
                operation=operation,
                retry_after=wait,
                local=True,
            )
        if self._observer is not None:
            self._observer.on_event(
                LimiterWait(
                    policy=self.name,
                    operation=operation,
                    request_id=current_request_id(),
                    wait=wait,
                )
            )
        return wait

    def _reserve_windowed(self, tokens: float, operation: str | None) -> float:
        """:meth:`reserve` under a rolling window: the token must be there *and* the window must
        have room (see the module docs)."""
        with self._lock:
            now = self._clock.monotonic()
            rate = self._pace if now < self._adaptive_until else self.rate
            available = self._available(now, rate)
            wait = 0.0 if available >= tokens else (tokens - available) / rate
            window = self._window
            log = self._window_log
            if window is not None and len(log) >= window[0]:
                limit, seconds_ = window
                free_at = log[len(log) - limit] + seconds_ + window_margin(seconds_)
                wait = max(wait, free_at - now)
            if wait <= self.max_wait:
                self._tokens = available - tokens
                self._stamp = now
                log.append(now + wait)
                if window is not None:
                    while len(log) > window[0]:
                        log.popleft()
                rejected = False
            else:
                rejected = True
        if rejected:
            if self._observer is not None:
                self._observer.on_event(
                    CallRejected(
                        policy=self.name,
                        operation=operation,
                        request_id=current_request_id(),
                        by="rate_limiter",
                        code="RATE_LIMITED",
                        retry_after=wait,
                    )
                )
            raise RateLimitedError(
                f"rate limiter {self.name!r}: next slot in {wait:.2f}s, beyond max_wait "
                f"{self.max_wait:g}s",
                provider=self.name,
                operation=operation,
                retry_after=wait,
                local=True,
            )
        if wait > 0 and self._observer is not None:
            self._observer.on_event(
                LimiterWait(
                    policy=self.name,
                    operation=operation,
                    request_id=current_request_id(),
                    wait=wait,
                )
            )
        return wait

    #: whether :meth:`areserve` does I/O (a bucket kept in a store) -- the async pipeline then
    #: awaits it; for a process-local bucket it is :meth:`reserve` itself
    shares_state: ClassVar[bool] = False

    async def areserve(self, tokens: float = 1.0, operation: str | None = None) -> float:
        """:meth:`reserve`, for buckets that may need I/O to decide."""
        return self.reserve(tokens, operation)

    def refund(self, tokens: float = 1.0) -> None:
        """Give back tokens reserved for a call that was then not made."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + tokens)

    def acquire(self, tokens: float = 1.0, *, operation: str | None = None) -> None:
        """Take *tokens*, sleeping if needed (blocking)."""
        wait = self.reserve(tokens, operation=operation)
        if wait > 0:
            self._clock.sleep(wait)

    async def aacquire(self, tokens: float = 1.0, *, operation: str | None = None) -> None:
        """Take *tokens*, suspending the task if needed."""
        wait = self.reserve(tokens, operation=operation)
        if wait > 0:
            try:
                await self._clock.asleep(wait)
            except BaseException:
                self.refund(tokens)
                raise

    # -- adapting -----------------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """Hand out no token for *seconds* (after a 429 with ``Retry-After``, say)."""
        if seconds <= 0:
            return
        with self._lock:
            now = self._clock.monotonic()
            until = now + seconds
            # one token is there when the pause ends, then the normal pace resumes; what the
            # bucket holds then is counted from its current state, so a pause that overlaps
            # another one (or reservations already handed out) extends it instead of adding
            # its length again
            self._tokens = min(self._available(until, self._current_rate(now)), 1.0)
            self._stamp = until

    def observe(self, info: RateLimitInfo, *, operation: str | None = None) -> None:
        """Adapt to what a provider's response said (see the module docs)."""
        if not info:
            return
        paused_for: float | None = None
        changed = False
        if info.window and info.limit and info.limit >= 1:
            self._learn_window(int(info.limit), float(info.window), info.remaining)
        rolling = info.limit / info.window if info.limit and info.window else None
        if info.retry_after is not None and info.retry_after > 0:
            paused_for = info.retry_after
        elif info.remaining is not None and rolling is None:  # (a rolling window: see above)
            remaining = max(0.0, info.remaining)
            if remaining < 1:
                paused_for = info.reset_after if info.reset_after else 1.0 / self.rate
            else:
                with self._lock:
                    now = self._clock.monotonic()
                    rate = self._current_rate(now)
                    available = self._available(now, rate)
                    if available > remaining:
                        self._tokens, self._stamp = remaining, max(now, self._stamp)
                        changed = True
                    if (
                        info.limit
                        and info.reset_after
                        and remaining / info.limit < self.low_watermark
                    ):
                        pace = remaining / info.reset_after
                        if pace < self.rate:
                            if self._stamp < now:  # tokens earned so far, at the old pace
                                self._tokens = min(available, remaining)
                                self._stamp = now
                            self._pace = pace
                            self._adaptive_until = now + info.reset_after
                            changed = True
        if paused_for is not None:
            self.pause(paused_for)
            changed = True
        if changed and self._observer is not None:
            self._observer.on_event(
                LimiterAdjusted(
                    policy=self.name,
                    operation=operation,
                    remaining=info.remaining,
                    limit=info.limit,
                    reset_after=info.reset_after,
                    paused_for=paused_for,
                )
            )

    def _learn_window(self, limit: int, window: float, remaining: float | None) -> None:
        """Count reservations against a rolling window of *limit* per *window* seconds, and
        reconcile them with what the provider counted (*remaining*, see the module docs)."""
        with self._lock:
            self._window = (limit, window)
            log = self._window_log
            if remaining is not None:
                now = self._clock.monotonic()
                used = max(0, limit - math.ceil(max(0.0, remaining)))
                # a reservation settled a while ago reached the provider if it was sent at all:
                # beyond the provider's count, the oldest ones never did (refused by a breaker,
                # answered by a failure the provider does not count) -- forget them
                settled = sum(1 for at in log if at <= now - WINDOW_SETTLED)
                for _ in range(max(0, settled - used)):
                    log.popleft()
                # the provider counts more than this bucket handed out: other clients (or calls
                # made before the window was known) -- as if made just now; a grant up to
                # WINDOW_SETTLED older than the window may still be counted (it arrived later)
                missing = used - sum(1 for at in log if at > now - window - WINDOW_SETTLED)
                if missing > 0:
                    at = len(log)
                    while at > 0 and log[at - 1] > now:
                        at -= 1
                    for _ in range(missing):
                        log.insert(at, now)
            while len(log) > limit:
                log.popleft()

    @property
    def available(self) -> float:
        """Tokens available right now (negative while reservations are outstanding)."""
        with self._lock:
            now = self._clock.monotonic()
            return self._available(now, self._current_rate(now))

    # -- in a policy ----------------------------------------------------------------------------

    def adopt(self, *, name: str, clock: Clock, observer: Observer | None) -> None:
        """Take a policy's name, clock and observer where this bucket was built without them."""
        if self.name == "default":
            self.name = name
        if self._observer is None:
            self._observer = observer
        if self._clock is SYSTEM_CLOCK and clock is not SYSTEM_CLOCK:
            self.use_clock(clock)

    def wrap_sync(self, nxt: SyncNext, chain: Chain) -> SyncNext:
        """Take a token (waiting for one on the policy's clock) before each call through *nxt*."""
        if self.shares_state:
            raise ConfigurationError(
                f"{type(self).__name__} keeps its state in a store and needs async "
                "calls; use a process-local one for sync code"
            )
        reserve = self.reserve
        sleep = chain.clock.sleep

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            wait = reserve(1.0, info.operation)
            if wait > 0:
                sleep(wait)
            return nxt(info, fn, args, kwargs)

        return call

    def wrap_async(self, nxt: AsyncNext, chain: Chain) -> AsyncNext:
        """:meth:`wrap_sync` for async calls; a cancelled wait gives its token back."""
        reserve, areserve = self.reserve, self.areserve
        refund = self.refund
        asleep = chain.clock.asleep

        if not self.shares_state:

            async def wait_then(
                wait: float,
                info: CallInfo,
                fn: Callable[..., Awaitable[Any]],
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                try:
                    await asleep(wait)
                except BaseException:
                    refund()
                    raise
                return await nxt(info, fn, args, kwargs)

            def local(
                info: CallInfo,
                fn: Callable[..., Awaitable[Any]],
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Awaitable[Any]:
                wait = reserve(1.0, info.operation)
                if wait > 0:
                    return wait_then(wait, info, fn, args, kwargs)
                return nxt(info, fn, args, kwargs)  # a token was there: nothing to await here

            return local

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            wait = await areserve(1.0, info.operation)  # a bucket kept in a store
            if wait > 0:
                try:
                    await asleep(wait)
                except BaseException:
                    refund()
                    raise
            return await nxt(info, fn, args, kwargs)

        return call

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}, burst={self.burst:g}, max_wait={self.max_wait:g})"
