"""A worker process for the multi-process shared-state tests (run as ``python -m``; not a test).

Usage: ``python -m tests.integration._shared_worker CONFIG_JSON``. It opens the store, builds a
ResilientClient whose policy holds a SharedCircuitBreaker (``"kind": "breaker"``) or a
SharedTokenBucket (``"kind": "rate"``), prints ``ready``, waits for a line on stdin (so that all
workers start together), calls the test's local HTTP server in a loop until a second line
arrives, and prints one JSON object with what it saw.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

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


async def _breaker(store: Store, config: dict[str, Any]) -> dict[str, Any]:
    breaker = SharedCircuitBreaker(config["name"], store, **config["breaker"])
    transitions: list[list[Any]] = []

    def listener(before: CircuitState, after: CircuitState, reason: str) -> None:
        # the record is adopted before listeners run: open_until is the new one
        transitions.append(
            [time.time(), before.value, after.value, reason, breaker.snapshot.open_until]
        )

    breaker.add_listener(listener)
    policy = Policy(config["name"], breaker=breaker, retry=None, timeout=5.0, total_timeout=None)
    counts = {"ok": 0, "failed": 0, "rejected": 0}
    async with ResilientClient(config["name"], base_url=config["server"], policy=policy) as client:
        await breaker.refresh()  # start from the shared record, not from "closed"
        print("ready", flush=True)
        await _line()
        stop = asyncio.create_task(_line())
        while not stop.done():
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
    async with ResilientClient(config["name"], base_url=config["server"], policy=policy) as client:
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
