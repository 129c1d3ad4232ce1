"""The watchdog: alert conditions judged outside the workers, in ``serve`` and the scheduler.

The periodic ``alerts.check`` job and the notifications are jobs, which only a worker runs: when
every worker is gone, nothing would say so. The watchdog runs in the API process and in the
scheduler process instead, every *interval* seconds, and judges

* ``no_worker`` -- no worker heartbeat is fresh (:mod:`antifragile.jobs._liveness`) while
  workers are expected (``ANTIFRAGILE_EXPECT_WORKERS``) or one was seen and went silent;
* ``queue_lag`` -- the oldest due job has waited longer than ``ANTIFRAGILE_QUEUE_LAG_THRESHOLD``;
* ``dlq_backlog`` -- as ``alerts.check`` does;
* ``breaker_open`` -- a provider's breaker is open (its shared state, refreshed).

Each firing goes through :meth:`~antifragile.inbound._alerts.Alerts.fire`: its notification is a
job whose idempotency key names the condition and the alert window, so however many processes
judge the same condition, the queue holds one notification per window -- atomically, in the
store. When no worker is alive, the watchdog runs the due jobs of the ``alerts`` queue itself
(claimed under a lease like any worker's, so exactly one process sends each one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from antifragile.inbound._alerts import (
    ALERTS_QUEUE,
    ALL,
    BREAKER_OPEN,
    NO_WORKER,
    QUEUE_LAG,
    AlertFired,
    Alerts,
)
from antifragile.jobs import Worker
from antifragile.jobs._liveness import DEAD_AFTER, liveness
from antifragile.policies import CircuitBreaker, CircuitState

_log = logging.getLogger("antifragile.service.watchdog")

#: how often the watchdog judges the conditions (seconds)
WATCH_INTERVAL = 60.0
_OPEN = frozenset({CircuitState.OPEN, CircuitState.FORCED_OPEN})


class Watchdog:
    """Judges the liveness, lag, dead-letter and breaker conditions of *alerts*' jobs."""

    def __init__(
        self,
        alerts: Alerts,
        *,
        breakers: Callable[[], Mapping[str, CircuitBreaker]] | None = None,
        expect_workers: bool = False,
        dead_after: float = DEAD_AFTER,
        lag_threshold: float = 300.0,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        self.alerts = alerts
        self.jobs = alerts.jobs
        self.breakers = breakers or alerts.connectors.breakers
        self.expect_workers = expect_workers
        self.dead_after = float(dead_after)
        self.lag_threshold = float(lag_threshold)
        self.interval = float(interval)
        self._stop = asyncio.Event()

    def __repr__(self) -> str:
        return f"Watchdog(every {self.interval:g}s)"

    async def evaluate(self) -> list[AlertFired]:
        """Judge every condition once; fire or resolve each; deliver the notifications when no
        worker is there to. Returns the firings."""
        alerts = self.alerts
        await self.jobs.open()
        now = alerts.clock.time()
        processes = await self.jobs.queue.processes()
        stats = await self.jobs.stats()
        workers = liveness(processes, now=now, dead_after=self.dead_after)["worker"]
        fired: list[AlertFired] = []
        if workers.alive == 0 and (self.expect_workers or workers.dead):
            details = {"dead": workers.dead, "dead_after": self.dead_after}
            fired.append(await alerts.fire(NO_WORKER, ALL, details))
        else:
            await alerts.resolve(NO_WORKER, ALL, {"alive": workers.alive})
        ready = [s.oldest_ready_at for s in stats if s.oldest_ready_at is not None]
        lag = max(0.0, now - min(ready)) if ready else 0.0
        lag_details = {"lag": round(lag, 3), "threshold": self.lag_threshold}
        if lag > self.lag_threshold:
            lag_details["workers"] = workers.alive
            fired.append(await alerts.fire(QUEUE_LAG, ALL, lag_details))
        else:
            await alerts.resolve(QUEUE_LAG, ALL, lag_details)
        fired.extend(await alerts.check_dlq())
        fired.extend(await self._breakers())
        if workers.alive == 0 and alerts.config.channels:
            await self._deliver()
        return fired

    async def _breakers(self) -> list[AlertFired]:
        fired: list[AlertFired] = []
        for provider, breaker in sorted(self.breakers().items()):
            refresh = getattr(breaker, "refresh", None)
            if refresh is not None:  # a shared breaker: read other processes' transitions
                with contextlib.suppress(Exception):
                    await refresh()
            if breaker.state in _OPEN:
                details = {"reason": f"seen {breaker.state.value}", "from": "watchdog"}
                fired.append(await self.alerts.fire(BREAKER_OPEN, provider, details))
        return fired

    async def _deliver(self) -> None:
        """Run the due notifications here: no worker is alive to run them."""
        worker = Worker(self.jobs, queues=[ALERTS_QUEUE], concurrency=2, poll_interval=0.05)
        try:
            await worker.run_until_idle()
        except Exception as exc:  # the next pass tries again
            _log.warning("watchdog: alert notifications not sent: %s", exc)

    async def run(self) -> None:
        """Judge the conditions every *interval* seconds (the first time one interval after
        the start, when the processes started together have beaten) until :meth:`stop`; a
        failed pass is logged and the next one tries again."""
        self._stop.clear()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)
            if self._stop.is_set():
                return
            try:
                await self.evaluate()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("watchdog pass failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()


def watchdog_for(assistant: Any) -> Watchdog | None:
    """The watchdog of a service assistant that has alerts (``None`` otherwise)."""
    alerts = getattr(assistant, "alerts", None)
    if not isinstance(alerts, Alerts):
        return None
    settings = assistant.settings
    breakers: Callable[[], Mapping[str, CircuitBreaker]] = assistant.breakers
    return Watchdog(
        alerts,
        breakers=breakers,
        expect_workers=settings.expect_workers,
        dead_after=settings.worker_dead_after,
        lag_threshold=settings.queue_lag_threshold,
    )
