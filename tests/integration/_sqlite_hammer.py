"""A worker process for the cross-process SQLite test (run as ``python -m``; not a test itself).

Usage: ``python -m tests.integration._sqlite_hammer DB_PATH WORKER_ID ROUNDS``. It opens the
store, prints ``ready``, waits for a line on stdin (so that all workers start together), hammers
the shared state, and prints one JSON object with what it won.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from antifragile.stores import IdempotencyStatus, Store, open_store

NOW = 1_700_000_000.0


async def _hammer(store: Store, worker: str, rounds: int) -> dict[str, Any]:
    won_versions: list[int] = []
    for _ in range(rounds):
        while True:
            current = await store.kv.get("counter", now=NOW)
            value, expected = (0, None) if current is None else (current.value, current.version)
            written = await store.kv.compare_and_set(
                "counter", value + 1, expected_version=expected, now=NOW
            )
            if written is not None:
                won_versions.append(written.version)
                break
    acquired: list[str] = []
    for i in range(rounds):
        key = f"claim-{i}"
        claim = await store.idempotency.claim(key, owner=worker, now=NOW, ttl=3600)
        if claim.acquired:
            acquired.append(key)
            assert await store.idempotency.complete(
                key, owner=worker, status=IdempotencyStatus.SUCCEEDED, now=NOW, ttl=3600
            )
    tokens: list[int] = []
    for _ in range(rounds // 2):
        lease = await store.leases.acquire("leader", owner=worker, now=NOW, ttl=3600)
        if lease is not None:
            tokens.append(lease.token)
    waits: list[float] = []
    for _ in range(rounds):
        grant = await store.rate_limits.take(
            "bucket", tokens=1, rate=10, burst=5, max_wait=1e6, now=NOW
        )
        assert grant.granted
        waits.append(grant.wait)
    for i in range(rounds // 2):
        await store.kv.merge("flags", {f"{worker}-{i}": i}, now=NOW)
        await store.breakers.add_outcomes(
            "shared", second=int(NOW), calls=1, failures=0, slow=0, window=10
        )
    return {"versions": won_versions, "claims": acquired, "tokens": tokens, "waits": waits}


async def _main(path: str, worker: str, rounds: int) -> None:
    store = await open_store(f"sqlite:///{path}")
    try:
        print("ready", flush=True)
        sys.stdin.readline()
        result = await _hammer(store, worker, rounds)
    finally:
        await store.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
