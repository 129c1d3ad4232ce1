"""Back-off schedules: how long to wait before retry number *n*.

Each schedule is an immutable, validated value with two pure methods:

* ``ceiling(n)`` -- the un-jittered delay before retry *n* (1-based), never above ``cap`` and
  never decreasing as *n* grows;
* ``delay(n, previous, rng)`` -- the delay actually used: the ceiling with jitter applied, in
  ``[0, cap]``.

Jitter spreads retries of many clients so they do not arrive together ("full": uniform in
``[0, d]``; "equal": ``d/2`` plus uniform in ``[0, d/2]``; "none"). :class:`DecorrelatedJitter`
is AWS's decorrelated jitter: each delay is drawn from ``[initial, 3 * previous]``, capped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal, Protocol

from antifragile.errors import ConfigurationError

Jitter = Literal["none", "full", "equal"]
_JITTERS = ("none", "full", "equal")


class Backoff(Protocol):
    """A back-off schedule."""

    @property
    def cap(self) -> float: ...

    def ceiling(self, retry: int) -> float: ...

    def delay(self, retry: int, previous: float, rng: random.Random) -> float: ...


def _check(name: str, value: float, *, positive: bool = False) -> None:
    if value != value or value < 0 or (positive and value == 0):  # NaN, negative
        qualifier = "positive" if positive else "non-negative"
        raise ConfigurationError(f"{name} must be a {qualifier} number of seconds, got {value!r}")


def _jitter(kind: Jitter, ceiling: float, rng: random.Random) -> float:
    if kind == "full":
        return rng.uniform(0.0, ceiling)
    if kind == "equal":
        half = ceiling / 2
        return half + rng.uniform(0.0, half)
    return ceiling


def _grow(initial: float, multiplier: float, retry: int, cap: float) -> float:
    """``min(cap, initial * multiplier ** (retry - 1))``, without overflowing for huge *retry*."""
    if initial == 0.0:
        return 0.0
    try:
        return min(cap, initial * float(multiplier) ** max(0, retry - 1))
    except OverflowError:  # the cap was reached long before
        return cap


def _check_jitter(jitter: str) -> None:
    if jitter not in _JITTERS:
        raise ConfigurationError(f"jitter must be one of {_JITTERS}, got {jitter!r}")


@dataclass(frozen=True, slots=True)
class Constant:
    """The same delay before every retry."""

    seconds: float = 1.0
    jitter: Jitter = "none"

    def __post_init__(self) -> None:
        _check("seconds", self.seconds)
        _check_jitter(self.jitter)

    @property
    def cap(self) -> float:
        return self.seconds

    def ceiling(self, retry: int) -> float:
        return self.seconds

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        return _jitter(self.jitter, self.seconds, rng)


@dataclass(frozen=True, slots=True)
class Linear:
    """``initial + step * (n - 1)``, capped."""

    initial: float = 1.0
    step: float = 1.0
    cap: float = 30.0
    jitter: Jitter = "none"

    def __post_init__(self) -> None:
        _check("initial", self.initial)
        _check("step", self.step)
        _check("cap", self.cap)
        _check_jitter(self.jitter)

    def ceiling(self, retry: int) -> float:
        return min(self.cap, self.initial + self.step * max(0, retry - 1))

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        return _jitter(self.jitter, self.ceiling(retry), rng)


@dataclass(frozen=True, slots=True)
class Exponential:
    """``initial * multiplier ** (n - 1)``, capped, with full jitter by default."""

    initial: float = 0.5
    multiplier: float = 2.0
    cap: float = 30.0
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        _check("initial", self.initial)
        _check("cap", self.cap)
        if not self.multiplier >= 1.0:
            raise ConfigurationError(f"multiplier must be >= 1, got {self.multiplier!r}")
        _check_jitter(self.jitter)

    def ceiling(self, retry: int) -> float:
        return _grow(self.initial, self.multiplier, retry, self.cap)

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        return _jitter(self.jitter, self.ceiling(retry), rng)


@dataclass(frozen=True, slots=True)
class DecorrelatedJitter:
    """AWS "decorrelated jitter": ``min(cap, uniform(initial, 3 * previous))``.

    Spreads better than exponential with full jitter when many clients retry at once, while its
    delays still grow with repeated failures.
    """

    initial: float = 0.5
    cap: float = 30.0

    def __post_init__(self) -> None:
        _check("initial", self.initial, positive=True)
        _check("cap", self.cap)

    def ceiling(self, retry: int) -> float:
        return _grow(self.initial, 3.0, retry, self.cap)

    def delay(self, retry: int, previous: float, rng: random.Random) -> float:
        upper = max(self.initial, previous * 3.0)
        return min(self.cap, rng.uniform(self.initial, upper))
