"""Several real OS processes sharing one breaker or one rate limit through SQLite (one file),
PostgreSQL and Redis, all calling a local HTTP server through ResilientClient.

Each worker (``tests/integration/_shared_worker.py``) loops over ``client.get`` until told to
stop. The proofs are counted where they matter: at the server, from what each request was
admitted as and, only where a busy machine cannot make a bound fail, the time it arrived.
Durations are real, since separate processes cannot share a FakeClock; each step waits for
the state it needs instead of sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from antifragile.sandbox import Fault, FlakyServer, IncomingRequest
from antifragile.stores import BreakerRecord, Store, open_store
from tests._waiting import PATIENCE, eventually
from tests.conftest import POSTGRES_URL, REDIS_URL, require_service

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
OPEN_FOR = 0.8
MINIMUM_CALLS = 8
PROBE_ANSWER = 0.2  # the server takes this long to answer a probe allowed to succeed
RATE_RUN = 2.5  # seconds the rate-limited processes run at least


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
        self.went = 0.0

    async def start(self, config: dict[str, Any], n: int = WORKERS) -> None:
        """Start *n* workers, wait until each is ready, then tell them all to go (the time of
        which is ``went``)."""
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
            line = await asyncio.wait_for(process.stdout.readline(), PATIENCE)
            if line.strip() != b"ready":
                assert process.stderr is not None
                pytest.fail(f"worker did not start: {(await process.stderr.read()).decode()}")
        self.went = time.time()
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
            out, err = await asyncio.wait_for(process.communicate(), PATIENCE)
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
    """Poll the shared record until *condition* holds (for a minute at most)."""
    deadline = time.monotonic() + PATIENCE
    while True:
        record = await store.breakers.load(name)
        if condition(record):
            return record
        if time.monotonic() > deadline:
            raise AssertionError(f"the record never got there; last: {record}")
        await asyncio.sleep(0.005)


@dataclass(frozen=True)
class Arrival:
    """A request as the server saw it: when, from which process, admitted as what."""

    at: float
    worker: int
    state: str  # "closed" or "half_open" (a probe)
    generation: int
    answered_ok: bool


class ProbeServer:
    """Answers the breaker's requests by what they were admitted as: every call fails (503)
    until probes may succeed; from then on a probe gets a slow success (so that anything else
    arriving before its answer would be a second probe), and a call admitted after a
    successful probe closed the breaker (a later closed generation) succeeds."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.allow_success = threading.Event()
        self.succeeded_probe: Arrival | None = None
        self.arrivals: list[Arrival] = []

    def __call__(self, request: IncomingRequest) -> Fault:
        state, _, generation = request.headers["x-admitted"].partition(":")
        arrival = Arrival(
            time.time(), int(request.headers["x-worker"]), state, int(generation), False
        )
        with self.lock:
            succeeded = self.succeeded_probe
            if state == "half_open" and self.allow_success.is_set():
                arrival = replace(arrival, answered_ok=True)
                if succeeded is None:
                    self.succeeded_probe = arrival
                fault = Fault.slow(PROBE_ANSWER, Fault.ok())
            elif state == "closed" and succeeded and arrival.generation > succeeded.generation:
                arrival = replace(arrival, answered_ok=True)
                fault = Fault.ok()
            else:
                fault = Fault.status(503)
            self.arrivals.append(arrival)
        return fault

    def resumed(self, pids: set[int]) -> bool:
        """Whether each of *pids* had a call answered after the breaker closed."""
        with self.lock:
            return pids <= {
                a.worker for a in self.arrivals if a.state == "closed" and a.answered_ok
            }


async def test_processes_trip_together_and_send_exactly_one_probe(
    backend: Backend, workers: Workers
) -> None:
    """N processes share one breaker: after the failure threshold all of them fail fast within
    one transition (at most one request in flight per process reaches the server after the
    breaker opened), and each time the open duration elapses exactly one half-open probe
    reaches the server across all processes -- a failed one re-opens the breaker, a successful
    one closes it and every process calls again. Every transition happens in exactly one
    process. Requests are told apart by what the breaker admitted them as, not by when they
    arrive, so that a busy machine delaying some of them changes nothing."""
    name = f"bk{uuid.uuid4().hex[:8]}"
    answer = ProbeServer()
    async with FlakyServer(handler=answer) as server:
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
        await record_when(backend.store, name, lambda r: r.consecutive_opens >= 2)
        answer.allow_success.set()  # a failed probe re-opened it: the next probe succeeds
        await record_when(backend.store, name, lambda r: r.state == "closed" and r.generation > 0)
        pids = {process.pid for process in workers.processes}
        await eventually(lambda: answer.resumed(pids))
        results = await workers.stop()

    moves = Counter((move[1], move[2]) for result in results for move in result["transitions"])
    assert set(moves) <= {
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "half_open"),  # a probe that reported nothing within its round
        ("half_open", "open"),
        ("half_open", "closed"),
    }, moves
    assert moves[("closed", "open")] == 1
    assert moves[("half_open", "closed")] == 1
    assert moves[("half_open", "open")] >= 1  # a failed probe re-opened the breaker
    assert moves[("open", "half_open")] == moves[("half_open", "open")] + 1

    arrivals = answer.arrivals
    [opening] = [m for r in results for m in r["transitions"] if (m[1], m[2]) == ("closed", "open")]
    opened_at = opening[4] - OPEN_FOR  # open_until minus the first open duration
    success = answer.succeeded_probe
    assert success is not None
    calls = [a for a in arrivals if a.state == "closed"]
    before = [a for a in calls if a.at < opened_at]
    stragglers = [a for a in calls if a.at >= opened_at and a.generation < success.generation]
    assert len(before) >= MINIMUM_CALLS
    assert len(stragglers) <= WORKERS  # at most the one in flight per process
    probes = Counter(a.generation for a in arrivals if a.state == "half_open")
    assert set(probes.values()) == {1}  # exactly one probe per round
    assert len(probes) == moves[("open", "half_open")] + moves[("half_open", "half_open")]
    resumed = [a for a in calls if a.generation > success.generation]
    assert resumed  # the others called again once the probe's success closed it ...
    assert all(a.at >= success.at + PROBE_ANSWER for a in resumed)  # ... only after its answer
    assert all(result["ok"] > 0 for result in results)  # everyone resumed after the close
    assert all(result["rejected"] > 0 for result in results)  # ... and had failed fast


async def test_shared_rate_limit_holds_the_global_rate(backend: Backend, workers: Workers) -> None:
    """A shared rate limit of R/s over N processes never lets more requests reach the server
    than R/s allow (+5 %) over the whole run -- counted from the moment the processes were told
    to go to the moment they all stopped, so that a busy machine, which can only slow them
    down, makes the bound looser, never tighter -- and every process gets requests through."""
    rate, burst = 50.0, 1
    async with FlakyServer(default=Fault.ok()) as server:
        await workers.start(
            {
                "kind": "rate",
                "name": f"rl{uuid.uuid4().hex[:8]}",
                "store": backend.url,
                "store_options": backend.worker_options,
                "server": server.url,
                "bucket": {"rate": rate, "burst": burst, "max_wait": 10.0},
            }
        )
        pids = {str(process.pid) for process in workers.processes}

        def ran_long_enough() -> bool:
            sent = Counter(r.headers["x-worker"] for r in server.requests)
            return time.time() - workers.went >= RATE_RUN and all(sent[p] >= 5 for p in pids)

        await eventually(ran_long_enough, interval=0.05)
        results = await workers.stop()
        stopped = time.time()
        requests = server.requests
    allowed = burst + rate * 1.05 * (stopped - workers.went)
    assert len(requests) <= allowed, (len(requests), allowed)
    assert {r.headers["x-worker"] for r in requests} == pids  # every process took its share
    assert all(result["sent"] > 0 for result in results)
    assert not any(result["degraded"] for result in results)
