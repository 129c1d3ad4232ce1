"""Hedging: when an idempotent call is slow, send a copy and take whichever answers first.

After ``delay`` seconds without an answer a hedged copy starts (up to ``max_hedges`` copies);
a copy also starts at once when an attempt fails while hedges remain. The first success wins and
the others are cancelled. Only calls that are safe to replay are hedged, each copy spends from
the retry budget when there is one, and hedging is async only (a sync copy would need a thread
that cannot be cancelled).
"""

from __future__ import annotations

from dataclasses import dataclass

from antifragile.errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Hedge:
    """Hedging configuration: start a copy after ``delay`` seconds, at most ``max_hedges``."""

    delay: float = 1.0
    max_hedges: int = 1

    def __post_init__(self) -> None:
        if not self.delay >= 0:
            raise ConfigurationError(f"delay must be >= 0 seconds, got {self.delay!r}")
        if not isinstance(self.max_hedges, int) or not 1 <= self.max_hedges <= 10:
            raise ConfigurationError("max_hedges must be an int within [1, 10]")
