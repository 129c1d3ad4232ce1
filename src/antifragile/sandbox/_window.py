"""A provider's fixed-window request limit, as simulators count it (thread-safe)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable


class FixedWindow:
    """*limit* requests per *per* seconds, the window starting at its first request."""

    def __init__(self, limit: int, per: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.per = per
        self._clock = clock
        self._lock = threading.Lock()
        self._start: float | None = None
        self._used = 0

    def take(self) -> float | None:
        """Count a request: ``None`` when it is admitted, else the seconds until the window
        resets."""
        now = self._clock()
        with self._lock:
            if self._start is None or now - self._start >= self.per:
                self._start, self._used = now, 0
            if self._used < self.limit:
                self._used += 1
                return None
            return self._start + self.per - now

    def state(self) -> tuple[int, int]:
        """``(remaining, whole seconds until reset)`` without counting a request."""
        now = self._clock()
        with self._lock:
            if self._start is None or now - self._start >= self.per:
                return self.limit, max(1, math.ceil(self.per))
            remaining = max(0, self.limit - self._used)
            return remaining, max(1, math.ceil(self._start + self.per - now))

    def reset(self) -> None:
        with self._lock:
            self._start, self._used = None, 0
