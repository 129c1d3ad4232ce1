"""Retry: which failures to try again, how long to wait, and when to stop.

:class:`Retry` is an immutable configuration with one pure method, :meth:`Retry.decide`, which
turns "attempt *n* failed with this exception" into either a delay or a reason to give up;
:meth:`Retry.wrap_sync` and :meth:`Retry.wrap_async` are the two thin shells that execute it.

A failure is retried when all of these hold:

1. ``retry_on`` says so. By default: transient provider failures (5xx, 408, 425, 429, timeouts,
   network errors, and the equivalent httpx / builtin exceptions) -- not permanent 4xx, not a
   local rejection (an open breaker fails fast), and not exceptions antifragile does not know;
2. re-sending is safe (``replay_safe``): the method is idempotent, the request carries an
   idempotency key, or it failed before being sent;
3. attempts are left;
4. the wait fits before the deadline. The wait is the provider's ``Retry-After`` when it gave
   one, the back-off schedule otherwise. A ``Retry-After`` that reaches the deadline (equal to
   the time left, or beyond it) or exceeds ``max_retry_after`` ends the loop at once with the
   rate-limit error, whose ``retry_after`` tells a durable job when to run again;
5. the retry budget, when there is one, has room.

Give-up reasons (``IntegrationError.give_up_reason`` and the ``GaveUp`` event):
``not_retryable``, ``unsafe_to_replay``, ``attempts_exhausted``, ``deadline``,
``retry_after_beyond_deadline``, ``retry_budget_exhausted``.

**Retrying on a returned value** (polling): ``retry_on_result`` is a predicate on the value a
successful attempt returned; when it is true the attempt counts as "not done yet" and is tried
again after the back-off delay, within the same attempts, deadline and budget::

    Retry(attempts=10, backoff=Constant(2), retry_on_result=lambda r: r.status == "pending")

When attempts, deadline or budget run out, the **last result is returned** as it is (no
wrapper error, as with a failure the caller's own outcome comes back): the caller checks it
once more. The ``RetryScheduled`` and ``GaveUp`` events of such attempts carry the code
``RETRY_ON_RESULT``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from antifragile.errors import (
    AttemptRecord,
    ConfigurationError,
    ErrorCode,
    IntegrationError,
    RejectedError,
    TransientError,
    classify_exception,
    redact,
)
from antifragile.observability._context import current_request_id
from antifragile.observability._events import CallRejected, GaveUp, RetryScheduled
from antifragile.policies._backoff import Backoff, Exponential
from antifragile.policies._chain import AsyncNext, Chain, SyncNext, code_of
from antifragile.policies._clock import Clock, Duration, seconds
from antifragile.policies._deadline import CallInfo

RetryPredicate = Callable[[BaseException], bool]
ResultPredicate = Callable[[Any], bool]

#: the code of an attempt whose returned value ``retry_on_result`` asked to try again
RETRY_ON_RESULT = "RETRY_ON_RESULT"


def default_retry_on(exc: BaseException) -> bool:
    """Transient provider failures, and nothing else."""
    error = exc if isinstance(exc, IntegrationError) else classify_exception(exc)
    return isinstance(error, TransientError) and not isinstance(error, RejectedError)


def _predicate(
    retry_on: RetryPredicate | type[BaseException] | tuple[type[BaseException], ...],
) -> RetryPredicate:
    if isinstance(retry_on, type | tuple):
        types = retry_on

        def matches(exc: BaseException) -> bool:
            return isinstance(exc, types)

        return matches
    return retry_on


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Either ``delay`` seconds before the next attempt, or ``give_up`` with a reason."""

    delay: float | None
    give_up: str | None = None
    from_retry_after: bool = False


@dataclass(frozen=True)
class Retry:
    """Retry configuration (immutable, validated).

    ``attempts`` counts every attempt, the first included (``attempts=1`` never retries).
    ``deadline`` (seconds) bounds the whole loop, waits included; a :class:`~antifragile.Policy`
    with ``total_timeout`` uses that when ``deadline`` is not set. ``retry_on_result`` retries
    a returned value it is true for (see the module docs; the last value is returned when the
    retries run out).
    """

    attempts: int = 3
    backoff: Backoff = field(default_factory=Exponential)
    deadline: Duration | None = None
    retry_on: RetryPredicate | type[BaseException] | tuple[type[BaseException], ...] = (
        default_retry_on
    )
    respect_retry_after: bool = True
    max_retry_after: Duration | None = None
    retry_on_result: ResultPredicate | None = None

    def __post_init__(self) -> None:
        if self.deadline is not None:
            object.__setattr__(self, "deadline", seconds(self.deadline))
        if self.max_retry_after is not None:
            object.__setattr__(self, "max_retry_after", seconds(self.max_retry_after))
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigurationError(f"attempts must be an int >= 1, got {self.attempts!r}")
        if self.deadline is not None and not seconds(self.deadline) > 0:
            raise ConfigurationError(f"deadline must be > 0 seconds, got {self.deadline!r}")
        if self.max_retry_after is not None and not seconds(self.max_retry_after) >= 0:
            raise ConfigurationError("max_retry_after must be >= 0 seconds")
        object.__setattr__(self, "_should_retry", _predicate(self.retry_on))

    def should_retry(self, exc: BaseException) -> bool:
        """Whether *exc* is of a kind this policy retries (``retry_on``)."""
        predicate: RetryPredicate = self.__dict__["_should_retry"]
        return predicate(exc)

    def decide(
        self,
        exc: BaseException,
        *,
        attempt: int,
        previous_delay: float,
        remaining: float | None,
        rng: random.Random,
        replay_safe: bool = True,
    ) -> RetryDecision:
        """What to do after attempt number *attempt* (1-based) failed with *exc*.

        *remaining* is the time left before the deadline (``None``: no deadline). The retry
        budget is checked by the runner, after this decision says "retry".
        """
        if not self.should_retry(exc):
            return RetryDecision(None, "not_retryable")
        if isinstance(exc, IntegrationError):
            safe = exc.replay_safe
        else:  # a connect error, say, is safe to replay even when the request is not
            error = classify_exception(exc, idempotent=replay_safe)
            safe = replay_safe if error is None else error.replay_safe
        if not safe:
            return RetryDecision(None, "unsafe_to_replay")
        if attempt >= self.attempts:
            return RetryDecision(None, "attempts_exhausted")
        retry_after = getattr(exc, "retry_after", None) if self.respect_retry_after else None
        if isinstance(retry_after, int | float):
            limit = self.max_retry_after
            too_long = limit is not None and retry_after > seconds(limit)
            # a wait that ends at (or after) the deadline leaves no time for the next attempt
            if too_long or (remaining is not None and retry_after >= remaining):
                return RetryDecision(None, "retry_after_beyond_deadline", from_retry_after=True)
            return RetryDecision(float(retry_after), from_retry_after=True)
        delay = self.backoff.delay(attempt, previous_delay, rng)
        if remaining is not None and delay >= remaining:
            return RetryDecision(None, "deadline")
        return RetryDecision(delay)

    def decide_result(
        self,
        *,
        attempt: int,
        previous_delay: float,
        remaining: float | None,
        rng: random.Random,
    ) -> RetryDecision:
        """What to do after attempt *attempt* returned a value ``retry_on_result`` rejected:
        the back-off delay, or ``attempts_exhausted`` / ``deadline``."""
        if attempt >= self.attempts:
            return RetryDecision(None, "attempts_exhausted")
        delay = self.backoff.delay(attempt, previous_delay, rng)
        if remaining is not None and delay >= remaining:
            return RetryDecision(None, "deadline")
        return RetryDecision(delay)

    # -- the shells -----------------------------------------------------------------------------

    def start(self, chain: Chain, info: CallInfo) -> None:
        """Begin one logical call: count it in the budget, apply ``deadline``."""
        if chain.budget is not None:
            chain.budget.record_request()
        if self.deadline is not None:
            deadline = chain.clock.monotonic() + seconds(self.deadline)
            if info.deadline is None or deadline < info.deadline:
                info.deadline = deadline

    def after_failure(
        self,
        chain: Chain,
        info: CallInfo,
        exc: BaseException,
        number: int,
        previous: float,
        history: list[AttemptRecord],
        duration: float,
    ) -> float | None:
        """Record failed attempt *number* and return the delay before the next one, or ``None``
        to give up (the history is then attached to *exc* and ``GaveUp`` emitted)."""
        now = chain.clock.monotonic()
        remaining = None if info.deadline is None else info.deadline - now
        decision = self.decide(
            exc,
            attempt=number,
            previous_delay=previous,
            remaining=remaining,
            rng=chain.rng,
            replay_safe=info.replay_safe,
        )
        reason = decision.give_up
        if reason is None:
            reason = _spend(chain, info)
        history.append(
            _record(exc, number, duration, chain.clock, None if reason else decision.delay)
        )
        code = code_of(exc) if chain.observed else ""
        if reason is not None:
            if chain.observed:
                chain.emit(
                    GaveUp(
                        policy=chain.name,
                        operation=info.operation,
                        request_id=current_request_id(),
                        attempts=number,
                        reason=reason,
                        code=code,
                    )
                )
            attach_history(exc, history, reason)
            return None
        delay = float(decision.delay or 0.0)
        if chain.observed:
            chain.emit(
                RetryScheduled(
                    policy=chain.name,
                    operation=info.operation,
                    request_id=current_request_id(),
                    number=number,
                    delay=delay,
                    code=code,
                    from_retry_after=decision.from_retry_after,
                )
            )
        return delay

    def after_result(
        self,
        chain: Chain,
        info: CallInfo,
        number: int,
        previous: float,
        history: list[AttemptRecord],
        duration: float,
    ) -> float | None:
        """Attempt *number* returned a value ``retry_on_result`` rejected: the delay before the
        next attempt, or ``None`` to return that value."""
        remaining = None if info.deadline is None else info.deadline - chain.clock.monotonic()
        decision = self.decide_result(
            attempt=number, previous_delay=previous, remaining=remaining, rng=chain.rng
        )
        reason = decision.give_up
        if reason is None:
            reason = _spend(chain, info)
        history.append(
            AttemptRecord(
                number=number,
                started_at=chain.clock.time() - duration,
                duration=duration,
                code=RETRY_ON_RESULT,
                message="the returned value was retried (retry_on_result)",
                delay=None if reason else decision.delay,
            )
        )
        if reason is not None:
            if chain.observed:
                chain.emit(
                    GaveUp(
                        policy=chain.name,
                        operation=info.operation,
                        request_id=current_request_id(),
                        attempts=number,
                        reason=reason,
                        code=RETRY_ON_RESULT,
                    )
                )
            return None
        delay = float(decision.delay or 0.0)
        if chain.observed:
            chain.emit(
                RetryScheduled(
                    policy=chain.name,
                    operation=info.operation,
                    request_id=current_request_id(),
                    number=number,
                    delay=delay,
                    code=RETRY_ON_RESULT,
                )
            )
        return delay

    def wrap_sync(self, nxt: SyncNext, chain: Chain) -> SyncNext:
        """The retry loop around *nxt*, sleeping on the policy's clock."""
        mono, sleep = chain.clock.monotonic, chain.clock.sleep
        start_call, failed, rejected = self.start, self.after_failure, self.after_result
        on_result = self.retry_on_result
        budget, has_deadline = chain.budget, self.deadline is not None

        def call(
            info: CallInfo, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> Any:
            if has_deadline:
                start_call(chain, info)
            elif budget is not None:
                budget.record_request()
            number, delay = 1, 0.0
            history: list[AttemptRecord] = []
            while True:
                start = mono()
                try:
                    result = nxt(info, fn, args, kwargs)
                except Exception as exc:
                    wait = failed(chain, info, exc, number, delay, history, mono() - start)
                    if wait is None:
                        raise
                else:
                    if on_result is None or not on_result(result):
                        return result
                    wait = rejected(chain, info, number, delay, history, mono() - start)
                    if wait is None:
                        return result
                delay = wait
                sleep(delay)
                number += 1

        return call

    def wrap_async(self, nxt: AsyncNext, chain: Chain) -> AsyncNext:
        """:meth:`wrap_sync` for async calls (waits with ``await clock.asleep``)."""
        mono, asleep = chain.clock.monotonic, chain.clock.asleep
        start_call, failed, rejected = self.start, self.after_failure, self.after_result
        on_result = self.retry_on_result
        budget, has_deadline = chain.budget, self.deadline is not None

        async def call(
            info: CallInfo,
            fn: Callable[..., Awaitable[Any]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
        ) -> Any:
            if has_deadline:
                start_call(chain, info)
            elif budget is not None:
                budget.record_request()
            number, delay = 1, 0.0
            history: list[AttemptRecord] = []
            while True:
                start = mono()
                try:
                    result = await nxt(info, fn, args, kwargs)
                except Exception as exc:
                    wait = failed(chain, info, exc, number, delay, history, mono() - start)
                    if wait is None:
                        raise
                else:
                    if on_result is None or not on_result(result):
                        return result
                    wait = rejected(chain, info, number, delay, history, mono() - start)
                    if wait is None:
                        return result
                delay = wait
                await asleep(delay)
                number += 1

        return call


def _spend(chain: Chain, info: CallInfo) -> str | None:
    """``retry_budget_exhausted`` when the budget has no room for one more retry."""
    budget = chain.budget
    if budget is None or budget.try_spend():
        return None
    if chain.observed:
        chain.emit(
            CallRejected(
                policy=chain.name,
                operation=info.operation,
                by="retry_budget",
                code="RETRY_BUDGET_EXHAUSTED",
            )
        )
    return "retry_budget_exhausted"


def attach_history(exc: BaseException, history: list[AttemptRecord], reason: str) -> None:
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
