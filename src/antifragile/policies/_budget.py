"""Retry budget: retries may be at most a share of recent requests, plus a small floor.

Per-call retry limits do not stop a retry storm: when a provider browns out, every caller
retries up to its limit and the provider sees several times its normal load exactly when it can
least take it. A budget bounds retries across *all* calls through a policy: within the sliding
``window`` a retry is allowed only while::

    retries_in_window + 1 <= ratio * requests_in_window + min_retries_per_second * window

With the defaults (``ratio=0.2``, one retry per second as floor, 10 s window) a healthy
provider's occasional failure is always retried, while during an outage the extra load from
retries stays below 20 % (the same shape as Finagle's and gRPC's retry throttling).

The window is kept in one-second buckets (``window / buckets`` seconds each), so every
operation is O(1).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from antifragile.errors import ConfigurationError, RetryBudgetExhaustedError
from antifragile.policies._clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True, slots=True)
class RetryBudgetConfig:
    ratio: float = 0.2
    min_retries_per_second: float = 1.0
    window: float = 10.0
    buckets: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio <= 10.0:
            raise ConfigurationError(f"ratio must be within [0, 10], got {self.ratio!r}")
        if not self.min_retries_per_second >= 0:
            raise ConfigurationError("min_retries_per_second must be >= 0")
        if not self.window > 0:
            raise ConfigurationError(f"window must be > 0 seconds, got {self.window!r}")
        if not 1 <= self.buckets <= 3600:
            raise ConfigurationError("buckets must be within [1, 3600]")

    @property
    def floor(self) -> float:
        return self.min_retries_per_second * self.window


class RetryBudget:
    """A sliding-window retry budget shared by every call through a policy (thread-safe)."""

    __slots__ = (
        "_bucket_width",
        "_clock",
        "_epoch",
        "_lock",
        "_requests",
        "_retries",
        "_total_requests",
        "_total_retries",
        "config",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        *,
        min_retries_per_second: float = 1.0,
        window: float = 10.0,
        buckets: int = 10,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.config = RetryBudgetConfig(ratio, min_retries_per_second, window, buckets)
        self._clock = clock
        self._bucket_width = window / buckets
        self._requests = [0] * buckets
        self._retries = [0] * buckets
        self._total_requests = 0
        self._total_retries = 0
        self._epoch = int(clock.monotonic() / self._bucket_width)
        self._lock = threading.Lock()

    def use_clock(self, clock: Clock) -> None:
        """Switch to *clock* (a policy hands its clock to strategies built without one)."""
        with self._lock:
            self._clock = clock
            self._epoch = int(clock.monotonic() / self._bucket_width)
            self._requests = [0] * len(self._requests)
            self._retries = [0] * len(self._retries)
            self._total_requests = self._total_retries = 0

    def adopt(self, *, name: str, clock: Clock, observer: object = None) -> None:
        """Take a policy's clock when this budget was built without one."""
        if self._clock is SYSTEM_CLOCK and clock is not SYSTEM_CLOCK:
            self.use_clock(clock)

    def _rotate(self) -> int:
        """Expire buckets that fell out of the window; returns the current bucket index."""
        epoch = int(self._clock.monotonic() / self._bucket_width)
        n = len(self._requests)
        if epoch != self._epoch:
            steps = min(n, epoch - self._epoch)
            for k in range(1, steps + 1):
                i = (self._epoch + k) % n
                self._total_requests -= self._requests[i]
                self._total_retries -= self._retries[i]
                self._requests[i] = 0
                self._retries[i] = 0
            self._epoch = epoch
        return epoch % n

    def record_request(self) -> None:
        """Count one call (its first attempt).

        The common case (same bucket as the last call) takes no lock: under heavy thread
        contention a request may go uncounted, which only makes the budget stricter.
        """
        epoch = int(self._clock.monotonic() / self._bucket_width)
        if epoch == self._epoch:
            self._requests[epoch % len(self._requests)] += 1
            self._total_requests += 1
            return
        with self._lock:
            i = self._rotate()
            self._requests[i] += 1
            self._total_requests += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; ``False`` when the budget is used up."""
        with self._lock:
            i = self._rotate()
            allowed = self._total_retries + 1 <= (
                self.config.ratio * self._total_requests + self.config.floor
            )
            if allowed:
                self._retries[i] += 1
                self._total_retries += 1
            return allowed

    def acquire(self, *, provider: str | None = None) -> None:
        """Take one retry or raise :class:`RetryBudgetExhaustedError`."""
        if not self.try_spend():
            requests, retries = self.usage()
            raise RetryBudgetExhaustedError(
                f"retry budget exhausted: {retries} retries for {requests} requests "
                f"in the last {self.config.window:g}s",
                provider=provider,
            )

    def usage(self) -> tuple[int, int]:
        """``(requests, retries)`` counted in the current window."""
        with self._lock:
            self._rotate()
            return self._total_requests, self._total_retries

    def __repr__(self) -> str:
        c = self.config
        return (
            f"RetryBudget(ratio={c.ratio}, "
            f"min_retries_per_second={c.min_retries_per_second}, window={c.window})"
        )
