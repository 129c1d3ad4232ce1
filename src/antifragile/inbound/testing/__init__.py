"""Test helpers for code that uses the inbound layer: waiting for what runs in the background.

::

    from antifragile.inbound.testing import wait_for_breaker_alerts

    breaker.trip()                          # a provider's breaker opens: an alert is fired
    await wait_for_breaker_alerts(alerts)   # ... by a task of its own; wait for it

The jobs' own helpers (:func:`~antifragile.jobs.testing.wait_for_redrives`) are in
:mod:`antifragile.jobs.testing`.
"""

from __future__ import annotations

import asyncio

from antifragile.inbound._alerts import Alerts

__all__ = ["wait_for_breaker_alerts"]


async def wait_for_breaker_alerts(alerts: Alerts) -> None:
    """Wait until the alerts that *alerts*' breaker listeners fired or resolved (see
    :meth:`Alerts.watch`) are recorded and sent."""
    await asyncio.sleep(0)  # a listener schedules its work with call_soon_threadsafe
    while pending := alerts.firings_under_way():
        await asyncio.gather(*pending, return_exceptions=True)
