"""The memory backend across threads: each operation is atomic even with several event loops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from antifragile.stores._memory import MemoryStore

NOW = 1_700_000_000.0


def run_in_threads(count: int, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    barrier = threading.Barrier(count)

    def body() -> None:
        barrier.wait()
        asyncio.run(work())

    threads = [threading.Thread(target=body) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)


def test_memory_claims_from_many_threads_have_one_winner() -> None:
    """8 threads, each with its own event loop, claiming 200 keys: each key is won once."""
    store = MemoryStore()
    wins: list[str] = []

    async def claim_all() -> None:
        name = threading.current_thread().name
        for i in range(200):
            claim = await store.idempotency.claim(f"k{i}", owner=name, now=NOW, ttl=60)
            if claim.acquired:
                wins.append(claim.record.key)

    run_in_threads(8, claim_all)
    assert sorted(wins) == sorted(f"k{i}" for i in range(200))


def test_memory_cas_increments_from_many_threads_lose_nothing() -> None:
    """8 threads incrementing one counter with get + compare_and_set loops lose no update."""
    store = MemoryStore()

    async def increment() -> None:
        for _ in range(250):
            while True:
                current = await store.kv.get("n", now=NOW)
                value, version = (0, None) if current is None else (current.value, current.version)
                won = await store.kv.compare_and_set(
                    "n", value + 1, expected_version=version, now=NOW
                )
                if won is not None:
                    break

    run_in_threads(8, increment)
    final = asyncio.run(store.kv.get("n", now=NOW))
    assert final is not None
    assert (final.value, final.version) == (2000, 2000)
