"""Retry: which failures to try again, how long to wait, and when to stop.

:class:`Retry` is an immutable configuration with one pure method, :meth:`Retry.decide`, which
turns "attempt *n* failed with this exception" into either a delay or a reason to give up. The
runners in :mod:`antifragile.policies._pipeline` only execute that decision.

A failure is retried when all of these hold:

1. ``retry_on`` says so. By default: transient provider failures (5xx, 408, 425, 429, timeouts,
   network errors, and the equivalent httpx / builtin exceptions) -- not permanent 4xx, not a
   local rejection (an open breaker fails fast), and not exceptions antifragile does not know;
2. re-sending is safe (``replay_safe``): the method is idempotent, the request carries an
   idempotency key, or it failed before being sent;
3. attempts are left;
4. the wait fits before the deadline. The wait is the provider's ``Retry-After`` when it gave
   one, the back-off schedule otherwise. A ``Retry-After`` beyond the deadline (or beyond
   ``max_retry_after``) ends the loop at once with the rate-limit error, whose ``retry_after``
   tells a durable job when to run again;
5. the retry budget, when there is one, has room.

Give-up reasons (``IntegrationError.give_up_reason`` and the ``GaveUp`` event):
``not_retryable``, ``unsafe_to_replay``, ``attempts_exhausted``, ``deadline``,
``retry_after_beyond_deadline``, ``retry_budget_exhausted``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from antifragile.errors import (
    ConfigurationError,
    IntegrationError,
    RejectedError,
    TransientError,
    classify_exception,
)
from antifragile.policies._backoff import Backoff, Exponential
from antifragile.policies._clock import Duration, seconds

RetryPredicate = Callable[[BaseException], bool]


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
    with ``total_timeout`` uses that when ``deadline`` is not set.
    """

    attempts: int = 3
    backoff: Backoff = field(default_factory=Exponential)
    deadline: Duration | None = None
    retry_on: RetryPredicate | type[BaseException] | tuple[type[BaseException], ...] = (
        default_retry_on
    )
    respect_retry_after: bool = True
    max_retry_after: Duration | None = None

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
            if too_long or (remaining is not None and retry_after > remaining):
                return RetryDecision(None, "retry_after_beyond_deadline", from_retry_after=True)
            return RetryDecision(float(retry_after), from_retry_after=True)
        delay = self.backoff.delay(attempt, previous_delay, rng)
        if remaining is not None and delay >= remaining:
            return RetryDecision(None, "deadline")
        return RetryDecision(delay)
