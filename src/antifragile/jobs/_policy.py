"""What a worker does after a job's attempt failed: retry later, defer, or dead-letter it.

The decision is pure (no I/O): :func:`decide_failure` turns "attempt *n* of this job failed
with this exception" into a :class:`FailureDecision`, which the worker reports as an
:class:`~antifragile.jobs.Outcome`.

In order:

1. an open circuit breaker (:class:`~antifragile.CircuitOpenError`) **defers** the job to the
   moment the breaker half-opens; nothing reached the provider, so no attempt is counted. A
   breaker that is half-open with its probe already out (no ``until``) defers the job only
   briefly (``probe_wait``, 1 s): the probe's outcome settles it -- a success closes the breaker
   and the worker makes the job due at once, a failure opens it and the job is deferred again;
   the local rate limiter (a :class:`~antifragile.RateLimitedError` with ``local=True``, raised
   before any request) defers the job until its ``retry_after``, without an attempt either --
   waiting for a token or for a breaker never uses up a job's attempts. A provider's own 429 is
   an answer, and counts;
2. a failure the policy's ``retry_on`` does not retry goes to the **dead-letter queue** at once
   (``not_retryable``) -- with the default predicate (:func:`job_retry_on`) that is a
   :class:`~antifragile.PermanentError` (a 4xx), a :class:`~antifragile.ConfigurationError`
   (a payload that no longer fits the function, say) or any antifragile error that says it is
   not retryable;
3. after the last attempt the job is dead (``attempts_exhausted``);
4. a provider's ``Retry-After`` (``retry_after`` on the error) becomes the next run time, when
   ``respect_retry_after`` is on; beyond ``max_retry_after`` the job is dead
   (``retry_after_beyond_deadline``);
5. otherwise the back-off schedule picks the delay; a ``deadline`` (seconds from the job's
   creation) that the next run would pass makes it dead (``deadline``).

A :class:`~antifragile.Retry` left with its default ``retry_on`` (``default_retry_on``, made for
calls retried in-process) is read as :func:`job_retry_on` in a job: a durable job retries
whatever a later attempt might fix, including local rejections (a full bulkhead, an exhausted
retry budget) and exceptions antifragile does not know, which the in-process policy never
retries.

The default schedule, :data:`DEFAULT_JOB_RETRY`, beside two well-known ones:

=========================  ========  =====================================================
schedule                   attempts  waits between attempts
=========================  ========  =====================================================
antifragile jobs           12        exponential from 15 s, doubling, capped at 6 h, full
                                     jitter (uniform in [0, ceiling]): ceilings 15 s, 30 s,
                                     1 min, 2 min, 4 min, 8 min, 16 min, 32 min, 64 min,
                                     2.1 h, 4.3 h -- at most ~8.5 h in all, ~4.3 h on
                                     average; each attempt added beyond 12 waits up to 6 h
Sidekiq                    26        ``count ** 4 + 15 + rand(10) * (count + 1)`` seconds
                                     (25 retries): 15 s, 16 s, 31 s, 96 s, ... about 21 days
                                     in all, then the dead set
Svix (webhooks)            8         immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h:
                                     about 27.5 h in all
=========================  ========  =====================================================

Full jitter spreads a burst of failed jobs (an outage ends; thousands of jobs failed in the same
minute) over the whole interval instead of sending them back together. Raise ``attempts`` (or
``cap``) for jobs that must survive outages longer than a few hours; lower it for jobs whose
result is worthless when late.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from antifragile.errors import (
    AntifragileError,
    CircuitOpenError,
    ErrorCode,
    IntegrationError,
    RateLimitedError,
    classify_exception,
    redact,
)
from antifragile.observability import pseudonymise
from antifragile.policies import Exponential, Retry, default_retry_on
from antifragile.policies._clock import seconds


def job_retry_on(exc: BaseException) -> bool:
    """Whether a later run of a job might succeed where this one failed with *exc*.

    Antifragile errors answer with their ``retryable`` flag (transient and rejected provider
    errors, an unreachable store: yes; permanent 4xx errors, misuse: no); other exceptions are
    classified first (timeouts and connection errors are transient); exceptions antifragile does
    not know are retried -- the attempts bound them, and the dead-letter queue keeps them.
    """
    if isinstance(exc, AntifragileError):
        return exc.retryable
    error = classify_exception(exc)
    if error is not None:
        return error.retryable
    return True


def is_local_rate_limit(exc: BaseException) -> bool:
    """Whether *exc* is this process's own rate limiter refusing a token (no request was
    made), rather than a provider's 429."""
    return isinstance(exc, RateLimitedError) and exc.local


#: the retry policy of a job declared without one (see the table in the module docs)
DEFAULT_JOB_RETRY = Retry(
    attempts=12,
    backoff=Exponential(15.0, multiplier=2.0, cap=6 * 3600.0, jitter="full"),
    retry_on=job_retry_on,
)

#: how long a job waits when a breaker refuses it without saying until when (forced open) and
#: its open duration is unknown
DEFAULT_DEFER = 30.0
#: how long a job waits when it meets a half-open breaker whose probe is out: about as long as
#: a probe takes to settle; a success makes the job due at once anyway (the worker wakes the
#: provider's deferred jobs when its breaker closes)
PROBE_WAIT = 1.0


class JobDeferred(AntifragileError):
    """Raised by a job that cannot run yet (a resource another job holds): the worker runs it
    again *delay* seconds later without counting an attempt."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message, code="DEFERRED", retryable=True)
        self.delay = max(0.0, float(delay))


@dataclass(frozen=True, slots=True)
class FailureDecision:
    """``retry`` at ``run_at``; ``defer`` to ``run_at`` (no attempt counted); or ``dead`` with a
    ``reason`` (``not_retryable``, ``attempts_exhausted``, ``retry_after_beyond_deadline``,
    ``deadline``)."""

    kind: Literal["retry", "defer", "dead"]
    run_at: float | None = None
    delay: float | None = None
    reason: str | None = None
    from_retry_after: bool = False


def _should_retry(retry: Retry, exc: BaseException) -> bool:
    if retry.retry_on is default_retry_on:
        return job_retry_on(exc)
    return retry.should_retry(exc)


def decide_failure(
    retry: Retry,
    exc: BaseException,
    *,
    attempt: int,
    max_attempts: int,
    now: float,
    created_at: float,
    previous_delay: float = 0.0,
    rng: random.Random | None = None,
    probe_wait: float = PROBE_WAIT,
) -> FailureDecision:
    """What to do after attempt number *attempt* (1-based) of a job failed with *exc*.

    *max_attempts* is the job's own bound (stored when it was enqueued); *now* and
    *created_at* are wall-clock epoch seconds; *probe_wait* is how long to wait when an open
    breaker does not say until when (it is half-open, its probe out).
    """
    if isinstance(exc, CircuitOpenError):
        # no until: half-open, its probe out -- wait for the probe, not an open duration
        until = exc.until if exc.until is not None and exc.until > now else now + probe_wait
        return FailureDecision("defer", run_at=until, delay=until - now)
    if is_local_rate_limit(exc):
        wait = getattr(exc, "retry_after", None) or probe_wait
        return FailureDecision("defer", run_at=now + wait, delay=wait)
    if isinstance(exc, JobDeferred):
        return FailureDecision("defer", run_at=now + exc.delay, delay=exc.delay)
    if not _should_retry(retry, exc):
        return FailureDecision("dead", reason="not_retryable")
    if attempt >= max_attempts:
        return FailureDecision("dead", reason="attempts_exhausted")
    retry_after = getattr(exc, "retry_after", None) if retry.respect_retry_after else None
    if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
        limit = retry.max_retry_after
        if limit is not None and retry_after > seconds(limit):
            return FailureDecision(
                "dead", reason="retry_after_beyond_deadline", from_retry_after=True
            )
        delay = max(0.0, float(retry_after))
        from_retry_after = True
    else:
        delay = retry.backoff.delay(attempt, previous_delay, rng or random.Random())
        from_retry_after = False
    if retry.deadline is not None and now + delay >= created_at + seconds(retry.deadline):
        return FailureDecision("dead", reason="deadline", from_retry_after=from_retry_after)
    return FailureDecision(
        "retry", run_at=now + delay, delay=delay, from_retry_after=from_retry_after
    )


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """How a failure is recorded: a stable code, a redacted message, the HTTP status."""

    code: str
    message: str
    status: int | None
    retryable: bool


def _recorded(text: str) -> str:
    """*text* as a job's record keeps it: credentials redacted, email addresses and phone
    numbers replaced by their references (the dead-letter queue holds no personal data)."""
    replaced: str = pseudonymise(redact(text))
    return replaced


def describe_error(exc: BaseException, *, limit: int = 1000) -> ErrorInfo:
    """The code, redacted message and HTTP status of *exc*, as a job's history keeps them
    (phone numbers and email addresses in the message replaced by their references)."""
    if isinstance(exc, IntegrationError):
        return ErrorInfo(exc.code, _recorded(str(exc))[:limit], exc.status, exc.retryable)
    if isinstance(exc, AntifragileError):
        return ErrorInfo(exc.code, _recorded(str(exc))[:limit], None, exc.retryable)
    error = classify_exception(exc)
    text = _recorded(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:limit]
    if error is not None:
        return ErrorInfo(error.code, text, error.status, error.retryable)
    return ErrorInfo(str(ErrorCode.INTERNAL), text, None, True)


def previous_delay(history: tuple[dict[str, Any], ...]) -> float:
    """The delay chosen after the job's last failed attempt (0 when there was none)."""
    for record in reversed(history):
        delay = record.get("delay")
        if isinstance(delay, int | float):
            return float(delay)
    return 0.0
