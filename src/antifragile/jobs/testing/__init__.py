"""Test helpers for code that uses jobs: waiting for what runs in the background.

::

    from antifragile.jobs.testing import wait_for_redrives

    breaker.reset()                  # a provider's breaker closes: its dead jobs are redriven
    await wait_for_redrives(jobs)    # ... by a task of their own; wait for it

For a queue that needs no database at all, use :class:`~antifragile.jobs.MemoryJobQueue`
(``Jobs(database_url="memory://")``).
"""

from __future__ import annotations

import asyncio

from antifragile.jobs._app import Jobs

__all__ = ["wait_for_redrives"]


async def wait_for_redrives(jobs: Jobs) -> None:
    """Wait until the redrives started by *jobs*' breaker listeners (see
    :meth:`Jobs.redrive_when_closed`) have ended."""
    await asyncio.sleep(0)  # a listener schedules its redrive with call_soon_threadsafe
    while pending := jobs.redrives_under_way():
        await asyncio.gather(*pending, return_exceptions=True)
