"""Time, injected: every policy reads the time and sleeps through a :class:`Clock`.

:class:`SystemClock` is the real one. :class:`FakeClock` never waits: its ``sleep`` and
``asleep`` advance its own time, so a test of a ten-minute back-off runs in microseconds.
"""

from __future__ import annotations

import asyncio
import threading
import time as _time
from datetime import timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What policies need to know about time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals and deadlines)."""
        ...

    def time(self) -> float:
        """Wall-clock epoch seconds (for HTTP dates and timestamps people read)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for *seconds*."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for *seconds*."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``time.time``, ``time.sleep``, ``asyncio.sleep``."""

    __slots__ = ()

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)
    sleep = staticmethod(_time.sleep)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()

#: a duration: float seconds or a ``timedelta`` (never integer milliseconds)
Duration = float | timedelta


def seconds(value: Duration) -> float:
    """*value* in float seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class FakeClock:
    """A clock for tests: time moves only when told to, or when something sleeps.

    ``sleep(s)`` and ``asleep(s)`` advance the clock by *s* and return at once (``asleep`` still
    yields to the event loop once, so other tasks run). Every sleep is recorded in ``sleeps``.
    """

    def __init__(self, start: float = 1_000.0, *, wall_offset: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_offset
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._wall_offset + self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by *seconds*."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"
