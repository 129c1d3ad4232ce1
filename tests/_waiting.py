"""Waiting for a condition instead of sleeping a fixed time.

A test that sleeps, then asserts that something happened, races the machine: on a busy one the
something comes later. These helpers poll the condition until it holds, for up to a minute --
long enough for any loaded machine, and only ever spent when the code under test is broken.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

#: how long a condition may take to come true before the test fails (seconds)
PATIENCE = 60.0


def wait_until(
    condition: Callable[[], bool], *, timeout: float = PATIENCE, interval: float = 0.005
) -> None:
    """Block until *condition()* is true; AssertionError after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        time.sleep(interval)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    within: float = PATIENCE,
    interval: float = 0.005,
) -> None:
    """Yield to the event loop until *condition()* (sync or async) is true; AssertionError after
    *within* seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within} s")
        await asyncio.sleep(interval)
