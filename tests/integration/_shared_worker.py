"""A worker process for the multi-process shared-state tests (run as ``python -m``; not a test).

Usage: ``python -m tests.integration._shared_worker CONFIG_JSON``. It opens the store, builds a
ResilientClient whose policy holds a SharedCircuitBreaker (``"kind": "breaker"``) or a
SharedTokenBucket (``"kind": "rate"``), prints ``ready``, waits for a line on stdin (so that all
workers start together), calls the test's local HTTP server in a loop until a second line
arrives, and prints one JSON object with what it saw.

Every request names its process (``x-worker``: the pid) and, for the breaker, what the breaker
admitted it as (``x-admitted``: ``closed:<generation>`` for a call admitted while closed,
``half_open:<generation>`` for a probe), so that the server can tell the probes of each round
apart however late a request arrives.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import httpx

from antifragile import (
    CircuitOpenError,
    IntegrationError,
    Policy,
    ResilientClient,
    SharedCircuitBreaker,
    SharedTokenBucket,
    open_store,
)
from antifragile.policies import CircuitState
from antifragile.stores import Store


async def _line() -> str:
    return await asyncio.to_thread(sys.stdin.readline)


WORKER = {"x-worker": str(os.getpid())}


class _TaggingBreaker(SharedCircuitBreaker):
    """Remembers what it admitted the current call as (one call in flight per process here).

    While the breaker is closed the policy admits a call from the cached record without asking
    the breaker (``admitted`` stays ``None``: the call is the cached generation's); otherwise it
    calls :meth:`aacquire`, which a probe wins."""

    admitted: str | None = None

    async def aacquire(self, *, operation: str | None = None) -> int:
        token = await super().aacquire(operation=operation)
        self.admitted = f"{self.snapshot.state.value}:{token}"
        return token


async def _breaker(store: Store, config: dict[str, Any]) -> dict[str, Any]:
    breaker = _TaggingBreaker(config["name"], store, **config["breaker"])

    async def tag(request: httpx.Request) -> None:
        admitted = breaker.admitted
        if admitted is None:
            snapshot = breaker.snapshot
            admitted = f"{snapshot.state.value}:{snapshot.generation}"
        request.headers["x-admitted"] = admitted

    transitions: list[list[Any]] = []

    def listener(before: CircuitState, after: CircuitState, reason: str) -> None:
        # the record is adopted before listeners run: open_until is the new one
        transitions.append(
            [time.time(), before.value, after.value, reason, breaker.snapshot.open_until]
        )

    breaker.add_listener(listener)
    policy = Policy(config["name"], breaker=breaker, retry=None, timeout=5.0, total_timeout=None)
    counts = {"ok": 0, "failed": 0, "rejected": 0}
    async with ResilientClient(
        config["name"],
        base_url=config["server"],
        policy=policy,
        headers=WORKER,
        event_hooks={"request": [tag]},
    ) as client:
        await breaker.refresh()  # start from the shared record, not from "closed"
        print("ready", flush=True)
        await _line()
        stop = asyncio.create_task(_line())
        while not stop.done():
            breaker.admitted = None
            try:
                await client.get("/breaker")
                counts["ok"] += 1
            except CircuitOpenError:
                counts["rejected"] += 1
            except IntegrationError:
                counts["failed"] += 1
            await asyncio.sleep(config["pause"])
    return {**counts, "transitions": transitions}


async def _rate(store: Store, config: dict[str, Any]) -> dict[str, Any]:
    bucket = SharedTokenBucket(store=store, key=config["name"], **config["bucket"])
    policy = Policy(config["name"], rate=bucket, breaker=None, retry=None, total_timeout=None)
    sent = 0
    async with ResilientClient(
        config["name"], base_url=config["server"], policy=policy, headers=WORKER
    ) as client:
        print("ready", flush=True)
        await _line()
        stop = asyncio.create_task(_line())
        while not stop.done():
            await client.get("/rate")
            sent += 1
    return {"sent": sent, "degraded": bucket.degraded}


async def main(config: dict[str, Any]) -> None:
    store = await open_store(config["store"], **config["store_options"])
    try:
        run = _breaker if config["kind"] == "breaker" else _rate
        result = await run(store, config)
    finally:
        await store.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
