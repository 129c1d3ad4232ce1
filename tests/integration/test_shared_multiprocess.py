"""Several real OS processes sharing one breaker or one rate limit through SQLite (one file),
PostgreSQL and Redis, all calling a local HTTP server through ResilientClient.

Each worker (``tests/integration/_shared_worker.py``) loops over ``client.get`` until told to
stop. The proofs are counted where they matter: at the server, from the time each request
arrived. Durations are short and real, since separate processes cannot share a FakeClock.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from antifragile.sandbox import Fault, FlakyServer
from antifragile.stores import BreakerRecord, Store, open_store
from tests.conftest import POSTGRES_URL, REDIS_URL, require_service

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
OPEN_FOR = 0.8
MINIMUM_CALLS = 8
PROBE_ANSWER = 0.2  # the server takes this long to answer the second probe


@dataclass
class Backend:
    url: str
    worker_options: dict[str, Any]
    store: Store  # the test's own connection, to watch the record


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind: str = request.param
    isolation = f"t{uuid.uuid4().hex[:12]}"
    own: dict[str, Any]
    if kind == "sqlite":
        url, shared, own = f"sqlite:///{tmp_path / 'shared.db'}", {}, {}
    elif kind == "postgres":
        require_service("postgres", POSTGRES_URL)
        url, shared = POSTGRES_URL, {"schema": isolation}
        own = {**shared, "drop_schema_on_close": True}
    else:
        require_service("redis", REDIS_URL)
        url, shared = REDIS_URL, {"prefix": f"{isolation}:"}
        own = {**shared, "flush_prefix_on_close": True}
    store = await open_store(url, **own)  # creates the schema before the workers start
    try:
        yield Backend(url, shared, store)
    finally:
        await store.close()


class Workers:
    """N worker processes started together, stopped together."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, config: dict[str, Any], n: int = WORKERS) -> None:
        for _ in range(n):
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests.integration._shared_worker",
                    json.dumps(config),
                    cwd=ROOT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        for process in self.processes:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            if line.strip() != b"ready":
                assert process.stderr is not None
                pytest.fail(f"worker did not start: {(await process.stderr.read()).decode()}")
        await self._tell(b"go\n")

    async def _tell(self, line: bytes) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(line)
            await process.stdin.drain()

    async def stop(self) -> list[dict[str, Any]]:
        await self._tell(b"stop\n")
        results = []
        for process in self.processes:
            out, err = await asyncio.wait_for(process.communicate(), 30)
            assert process.returncode == 0, err.decode()
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
        return results

    def kill(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()


@pytest.fixture
async def workers() -> AsyncIterator[Workers]:
    started = Workers()
    try:
        yield started
    finally:
        started.kill()
        for process in started.processes:
            await process.wait()


async def record_when(
    store: Store, name: str, condition: Callable[[BreakerRecord], bool]
) -> BreakerRecord:
    """Poll the shared record until *condition* holds (for 10 s at most)."""
    deadline = time.monotonic() + 10.0
    while True:
        record = await store.breakers.load(name)
        if condition(record):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"the record never got there; last: {record}")
        await asyncio.sleep(0.005)


async def test_processes_trip_together_and_send_exactly_one_probe(
    backend: Backend, workers: Workers
) -> None:
    """N processes share one breaker: after the failure threshold all of them fail fast within
    one transition (at most one request in flight per process reaches the server after the
    breaker opened), and each time the open duration elapses exactly one half-open probe
    reaches the server across all processes -- a failed one re-opens the breaker, a successful
    one closes it and every process calls again. Every transition happens in exactly one
    process."""
    name = f"bk{uuid.uuid4().hex[:8]}"
    async with FlakyServer(default=Fault.status(503)) as server:
        await workers.start(
            {
                "kind": "breaker",
                "name": name,
                "store": backend.url,
                "store_options": backend.worker_options,
                "server": server.url,
                "pause": 0.005,
                "breaker": {
                    "failure_rate": 0.5,
                    "minimum_calls": MINIMUM_CALLS,
                    "shared_window": 10,
                    "open_duration": OPEN_FOR,
                },
            }
        )
        opened = await record_when(backend.store, name, lambda r: r.state == "open")
        reopened = await record_when(backend.store, name, lambda r: r.consecutive_opens == 2)
        # the next probe gets a slow success: whatever else arrives before its answer would be
        # a second probe
        server.script("/breaker", [Fault.slow(PROBE_ANSWER, Fault.ok())])
        server.default = Fault.ok()
        await record_when(
            backend.store,
            name,
            lambda r: r.state == "closed" and r.generation > reopened.generation,
        )
        await asyncio.sleep(0.3)
        results = await workers.stop()
        arrivals = sorted(r.at for r in server.requests)

    opened_at = opened.open_until - OPEN_FOR
    before = [t for t in arrivals if t < opened_at]
    stragglers = [t for t in arrivals if opened_at <= t < opened.open_until]
    first_round = [t for t in arrivals if opened.open_until <= t < reopened.open_until]
    second_round = [t for t in arrivals if t >= reopened.open_until]
    assert len(before) >= MINIMUM_CALLS
    assert len(stragglers) <= WORKERS
    assert len(first_round) == 1
    probe = second_round[0]
    assert [t for t in second_round if t < probe + PROBE_ANSWER] == [probe]
    assert all(result["ok"] > 0 for result in results)  # everyone resumed after the close
    assert all(result["rejected"] > 0 for result in results)  # ... and had failed fast
    moves = Counter((move[1], move[2]) for result in results for move in result["transitions"])
    assert moves == {
        ("closed", "open"): 1,
        ("open", "half_open"): 2,
        ("half_open", "open"): 1,
        ("half_open", "closed"): 1,
    }


async def test_shared_rate_limit_holds_the_global_rate(backend: Backend, workers: Workers) -> None:
    """A shared rate limit of R/s over N processes keeps the rate at which requests reach the
    server at most 5 % above R (measured from the arrival times, burst 1), and near R: a busy
    machine may slow the processes down (fewer requests is not a breach), never speed them up
    past the limit."""
    rate = 50.0
    async with FlakyServer(default=Fault.ok()) as server:
        await workers.start(
            {
                "kind": "rate",
                "name": f"rl{uuid.uuid4().hex[:8]}",
                "store": backend.url,
                "store_options": backend.worker_options,
                "server": server.url,
                "bucket": {"rate": rate, "burst": 1, "max_wait": 10.0},
            }
        )
        await asyncio.sleep(2.5)
        results = await workers.stop()
        arrivals = sorted(r.at for r in server.requests)
    steady = arrivals[3:]  # leave out the start, while the workers get going
    measured = (len(steady) - 1) / (steady[-1] - steady[0])
    assert rate * 0.8 <= measured <= rate * 1.05
    assert all(result["sent"] > 5 for result in results)  # every process took its share
    assert not any(result["degraded"] for result in results)
