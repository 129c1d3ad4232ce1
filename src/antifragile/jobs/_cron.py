"""Cron expressions and the pure decision of which ticks a scheduler pass fires.

Nothing here reads a clock or a database: :func:`due_ticks` turns "the last tick recorded, the
time now, the catch-up policy" into the list of ticks to enqueue, so every policy is tested
without I/O and the scheduler's loop only executes the decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

from antifragile.errors import ConfigurationError

CatchUp = Literal["latest", "all", "none"]
CATCH_UP_POLICIES: tuple[str, ...] = get_args(CatchUp)

#: how many missed ticks ``catch_up="all"`` fires at most by default (the most recent ones)
MAX_CATCH_UP = 100


@dataclass(frozen=True, slots=True)
class Cron:
    """A validated cron expression in a time zone.

    Five fields (minute hour day month weekday), or six with a trailing *seconds* field
    (``"* * * * * */10"``: every ten seconds), and the ``@hourly``-style aliases. Ticks are
    computed in ``timezone`` (an IANA name; ``"UTC"`` by default, which has no daylight-saving
    gaps or repeats) and returned as whole epoch seconds.
    """

    expression: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigurationError(f"unknown time zone {self.timezone!r}") from exc
        if not isinstance(self.expression, str) or not self.expression.strip():
            raise ConfigurationError(f"invalid cron expression {self.expression!r}: it is empty")
        try:
            croniter(self.expression, datetime.fromtimestamp(0, zone))
        except (CroniterError, ValueError, KeyError) as exc:
            raise ConfigurationError(f"invalid cron expression {self.expression!r}: {exc}") from exc

    def _iterator(self, start: float) -> croniter:
        return croniter(self.expression, datetime.fromtimestamp(start, ZoneInfo(self.timezone)))

    def next_after(self, t: float) -> int:
        """The first tick strictly after *t* (epoch seconds)."""
        return int(self._iterator(math.floor(t)).get_next(float))

    def latest_at(self, t: float) -> int:
        """The last tick at or before *t*."""
        return int(self._iterator(math.floor(t) + 1).get_prev(float))

    def ticks_back(self, t: float) -> croniter:
        """An iterator whose ``get_prev(float)`` walks the ticks at or before *t*, newest first."""
        return self._iterator(math.floor(t) + 1)


def check_catch_up(catch_up: str, max_catch_up: int) -> None:
    """Validate a catch-up policy and its bound (ConfigurationError)."""
    if catch_up not in CATCH_UP_POLICIES:
        raise ConfigurationError(
            f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}; got {catch_up!r}"
        )
    if not isinstance(max_catch_up, int) or max_catch_up < 1:
        raise ConfigurationError(f"max_catch_up must be an int >= 1, got {max_catch_up!r}")


@dataclass(frozen=True, slots=True)
class Due:
    """What one pass does for one schedule.

    ``fire`` are the ticks to enqueue, oldest first. ``skipped`` counts the missed ticks the
    policy drops. ``last_tick`` is the newest tick this pass has dealt with (fired or skipped)
    -- the value to record -- or ``None`` when no tick is due.
    """

    fire: tuple[int, ...]
    skipped: int
    last_tick: int | None


def due_ticks(
    cron: Cron,
    *,
    after: float,
    now: float,
    grace: float,
    catch_up: CatchUp,
    max_catch_up: int = MAX_CATCH_UP,
) -> Due:
    """The ticks in ``(after, now]`` a pass at *now* fires, under *catch_up*.

    A due tick is **on time** when it is at most *grace* seconds old (``now - tick <= grace``):
    it always fires, whatever the policy -- it came between two passes of a running scheduler.
    Older due ticks were **missed** (no scheduler ran at the time):

    * ``"latest"`` fires only the most recent missed tick, and none when an on-time tick fires
      (that one is more recent still): a job that summarises "everything since last time" runs
      once after an outage;
    * ``"all"`` fires every missed tick, oldest first, but at most *max_catch_up* of them (the
      most recent; older ones are skipped);
    * ``"none"`` skips them: the job runs again at its next tick.

    The walk goes back from *now* and stops at the first tick it does not need, so a long
    outage costs at most ``max_catch_up`` steps plus the ticks within *grace*.
    """
    on_time: list[int] = []
    missed: list[int] = []
    skipped = 0
    newest: int | None = None
    walker = cron.ticks_back(now)
    while True:
        tick = int(walker.get_prev(float))
        if tick <= after:
            break
        if newest is None:
            newest = tick
        if now - tick <= grace:
            on_time.append(tick)
            continue
        # a missed tick: how many of those the policy wants decides whether to walk on
        wanted = {"all": max_catch_up, "latest": 0 if on_time else 1, "none": 0}[catch_up]
        if len(missed) < wanted:
            missed.append(tick)
            continue
        # the rest are skipped; count them without walking a long outage tick by tick
        skipped = _count_ticks(cron, after=after, upto=tick, limit=1_000)
        break
    fire = tuple(sorted(on_time + missed))
    return Due(fire=fire, skipped=skipped, last_tick=newest)


def _count_ticks(cron: Cron, *, after: float, upto: int, limit: int) -> int:
    """Ticks in ``(after, upto]``, counted up to *limit* (for logs; not exact beyond it)."""
    walker = cron.ticks_back(upto)
    count = 0
    while count < limit and int(walker.get_prev(float)) > after:
        count += 1
    return count
