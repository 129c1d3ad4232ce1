"""Policies layer: sans-I/O decision logic for every resilience strategy, and the pipeline.

Each strategy lives in its own private module with the same shape: an immutable, validated
configuration; a state machine or pure decision function; events emitted to an observer.
"""

from antifragile.policies._attempts import AsyncAttempts, Attempt, SyncAttempts
from antifragile.policies._backoff import (
    Backoff,
    Constant,
    DecorrelatedJitter,
    Exponential,
    Jitter,
    Linear,
)
from antifragile.policies._breaker import (
    BreakerConfig,
    BreakerSnapshot,
    BreakerStateHolder,
    CircuitBreaker,
    CircuitState,
    LocalBreakerState,
    default_record,
)
from antifragile.policies._budget import RetryBudget, RetryBudgetConfig
from antifragile.policies._bulkhead import Bulkhead
from antifragile.policies._chain import Chain, Stage
from antifragile.policies._clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock
from antifragile.policies._deadline import CallInfo, time_remaining
from antifragile.policies._fallback import Fallback, StaleCache
from antifragile.policies._hedge import Hedge
from antifragile.policies._pipeline import (
    DEFAULT,
    DEFAULT_ORDER,
    KEEP,
    STAGES,
    Policy,
    Strategy,
    resilient,
)
from antifragile.policies._ratelimit import RateLimitInfo, TokenBucket
from antifragile.policies._retry import RETRY_ON_RESULT, Retry, RetryDecision, default_retry_on

__all__ = [
    "DEFAULT",
    "DEFAULT_ORDER",
    "KEEP",
    "RETRY_ON_RESULT",
    "STAGES",
    "SYSTEM_CLOCK",
    "AsyncAttempts",
    "Attempt",
    "Backoff",
    "BreakerConfig",
    "BreakerSnapshot",
    "BreakerStateHolder",
    "Bulkhead",
    "CallInfo",
    "Chain",
    "CircuitBreaker",
    "CircuitState",
    "Clock",
    "Constant",
    "DecorrelatedJitter",
    "Exponential",
    "FakeClock",
    "Fallback",
    "Hedge",
    "Jitter",
    "Linear",
    "LocalBreakerState",
    "Policy",
    "RateLimitInfo",
    "Retry",
    "RetryBudget",
    "RetryBudgetConfig",
    "RetryDecision",
    "Stage",
    "StaleCache",
    "Strategy",
    "SyncAttempts",
    "SystemClock",
    "TokenBucket",
    "default_record",
    "default_retry_on",
    "resilient",
    "time_remaining",
]
