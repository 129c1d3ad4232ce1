"""How long failing takes: the wall-clock latency of each path that should fail fast.

The tests prove *that* these paths fail at once -- by order (the error comes while the call is
still blocked, the copy starts before its delay, twenty requests are in the server together)
or by the cause of the failure (a refused connection, not a timeout) -- never by a stopwatch,
since a stopwatch fails on a busy machine. How long they take is measured here:

* a policy's total timeout (30 ms) ending an async call that never returns;
* a policy's attempt timeout (30 ms, ``timeout_strategy="thread"``) abandoning a blocked sync
  call;
* a hedged call whose first attempt fails: the copy starts at once, not after its delay (1 h);
* a full bulkhead refusing a call (``max_wait=0``), and refusing one after ``max_wait=30 ms``;
* a ``SharedTokenBucket`` whose store hangs (``store_timeout=50 ms``): the call that finds out,
  then each later call, served from the process-local bucket without asking the store;
* the sandbox ``FlakyServer``: twenty requests slowed by 200 ms each on twenty connections
  (about 0.2 s when served concurrently, 4 s one at a time), and ``stop()`` ending a request it
  holds;
* opening a store on a port where nothing listens (refused at once) and on one that accepts
  and never answers (``socket_timeout`` / ``connect_timeout`` of 300 ms): Redis and PostgreSQL,
  when reachable (``ANTIFRAGILE_TEST_REDIS_URL`` / ``ANTIFRAGILE_TEST_POSTGRES_URL``, else the
  local defaults).

Each case runs ``rounds`` times; the table shows the median, the 95th percentile and the
maximum. Results go to ``benchmarks/results/failure_latency.json`` and a table to
``benchmarks/results/failure_latency.md``.

    python benchmarks/failure_latency.py            # about half a minute
    python benchmarks/failure_latency.py --quick    # a smoke run
"""

from __future__ import annotations

import os
import sys

# benchmarks/queue.py shares its name with the standard library's ``queue``: run as a script, a
# file in this folder would have the folder first on sys.path and shadow that module for
# everything imported below (asyncio's thread pool imports ``queue``); drop the folder first.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import platform
import socket
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

import antifragile
from antifragile import (
    Bulkhead,
    BulkheadFullError,
    DeadlineExceededError,
    FakeClock,
    Hedge,
    NetworkError,
    Policy,
    StoreUnavailableError,
    UpstreamTimeoutError,
)
from antifragile.sandbox import Fault, FlakyServer
from antifragile.stores import SharedTokenBucket, open_store

RESULTS = Path(__file__).resolve().parent / "results"
REDIS_URL = os.environ.get("ANTIFRAGILE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
POSTGRES_URL = os.environ.get(
    "ANTIFRAGILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

Sample = list[float]  # seconds


def _summary(samples: Sample, note: str) -> dict[str, Any]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "median_s": statistics.median(ordered),
        "p95_s": p95,
        "max_s": ordered[-1],
        "rounds": len(ordered),
        "expected": note,
    }


def _policy(**options: Any) -> Policy:
    settings: dict[str, Any] = {
        "retry": None,
        "breaker": None,
        "budget": None,
        "timeout": None,
        "total_timeout": None,
        "clock": FakeClock(),
    }
    settings.update(options)
    return Policy("bench", **settings)


async def _timed_async(action: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await action()
    return time.perf_counter() - started


# -- policies ------------------------------------------------------------------------------------


async def total_timeout(rounds: int) -> Sample:
    policy = _policy(total_timeout=0.03)

    async def endless() -> None:
        await asyncio.Event().wait()

    async def once() -> None:
        with contextlib.suppress(DeadlineExceededError):
            await policy.acall(endless)

    return [await _timed_async(once) for _ in range(rounds)]


def thread_timeout(rounds: int) -> Sample:
    policy = _policy(timeout=0.03, timeout_strategy="thread")
    samples = []
    try:
        for _ in range(rounds):
            release = threading.Event()
            started = time.perf_counter()
            with contextlib.suppress(UpstreamTimeoutError):
                policy.call(release.wait, 60.0)
            samples.append(time.perf_counter() - started)
            release.set()
    finally:
        policy.close()
    return samples


async def hedge_after_failure(rounds: int) -> Sample:
    policy = _policy(hedge=Hedge(delay=3600.0))
    samples = []
    for _ in range(rounds):
        calls = 0

        async def target() -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise NetworkError("reset")
            return "copy"

        samples.append(await _timed_async(lambda: policy.acall(target)))
    return samples


def bulkhead_reject(rounds: int, max_wait: float) -> Sample:
    samples = []
    for _ in range(rounds):
        bulkhead = Bulkhead(1, max_wait=max_wait)
        bulkhead.acquire()
        started = time.perf_counter()
        with contextlib.suppress(BulkheadFullError):
            bulkhead.acquire()
        samples.append(time.perf_counter() - started)
    return samples


# -- a store that hangs --------------------------------------------------------------------------


class _HangingRates:
    """A rate-limit store whose every operation hangs (for an hour)."""

    async def take(self, key: str, **_: Any) -> Any:
        await asyncio.sleep(3600)

    async def pause(self, key: str, **_: Any) -> None:
        await asyncio.sleep(3600)

    async def refund(self, key: str, **_: Any) -> None:
        await asyncio.sleep(3600)


async def hanging_store(rounds: int) -> tuple[Sample, Sample]:
    first, later = [], []
    for _ in range(rounds):
        bucket = SharedTokenBucket(
            1000, _HangingRates(), burst=1000, store_timeout=0.05, clock=FakeClock()
        )
        policy = _policy(rate=bucket)

        async def ok() -> str:
            return "ok"

        started = time.perf_counter()
        await policy.acall(ok)
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(20):
            await policy.acall(ok)
        later.append((time.perf_counter() - started) / 20)
    return first, later


# -- the sandbox server --------------------------------------------------------------------------


def concurrent_slow_requests(rounds: int) -> Sample:
    samples = []
    with (
        FlakyServer() as server,
        concurrent.futures.ThreadPoolExecutor(20) as pool,
        httpx.Client(timeout=60, limits=httpx.Limits(max_connections=20)) as client,
    ):
        for _ in range(rounds):
            server.script("/x", Fault.repeat(Fault.slow(0.2), 20))
            started = time.perf_counter()
            list(pool.map(lambda _: client.get(server.url + "/x").status_code, range(20)))
            samples.append(time.perf_counter() - started)
    return samples


def stop_with_a_held_request(rounds: int) -> Sample:
    samples = []
    for _ in range(rounds):
        server = FlakyServer(default=Fault.hang()).start()
        done = threading.Event()

        def call(url: str = server.url, done: threading.Event = done) -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url + "/", timeout=60)
            done.set()

        thread = threading.Thread(target=call)
        thread.start()
        while server.count() == 0:
            time.sleep(0.001)
        started = time.perf_counter()
        server.stop()
        done.wait(60)
        samples.append(time.perf_counter() - started)
        thread.join()
    return samples


# -- stores that cannot be reached ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _reachable(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 1):
            return True
    except OSError:
        return False


def _with_port(url: str, port: int) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def open_unreachable(url: str, rounds: int, **options: Any) -> Sample:
    samples = []
    for _ in range(rounds + 1):  # the first round imports the driver: not counted
        target = _with_port(url, _free_port())

        async def once(target: str = target) -> None:
            with contextlib.suppress(StoreUnavailableError):
                store = await open_store(target, **options)
                await store.close()

        samples.append(await _timed_async(once))
    return samples[1:]


async def open_silent(url: str, rounds: int, **options: Any) -> Sample:
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        samples = []
        for _ in range(rounds):

            async def once() -> None:
                with contextlib.suppress(StoreUnavailableError):
                    store = await open_store(_with_port(url, port), **options)
                    await store.close()

            samples.append(await _timed_async(once))
        return samples
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


# -- the run -------------------------------------------------------------------------------------


async def run(rounds: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    results["total timeout 30 ms, async call that never returns"] = _summary(
        await total_timeout(rounds), "about 0.03 s"
    )
    results["attempt timeout 30 ms, thread strategy, blocked sync call"] = _summary(
        thread_timeout(rounds), "about 0.03 s"
    )
    results["hedge copy after a failed attempt (delay 1 h)"] = _summary(
        await hedge_after_failure(rounds), "well under 1 ms"
    )
    results["full bulkhead, max_wait=0"] = _summary(bulkhead_reject(rounds, 0.0), "microseconds")
    results["full bulkhead, max_wait=30 ms"] = _summary(
        bulkhead_reject(rounds, 0.03), "about 0.03 s"
    )
    first, later = await hanging_store(rounds)
    results["hanging store (store_timeout 50 ms): the call that finds out"] = _summary(
        first, "about 0.05 s"
    )
    results["hanging store: each later call (local bucket)"] = _summary(later, "microseconds")
    results["FlakyServer: 20 requests slowed 0.2 s, 20 connections"] = _summary(
        concurrent_slow_requests(rounds), "about 0.2 s (4 s if served one at a time)"
    )
    results["FlakyServer: stop() ends a held request"] = _summary(
        stop_with_a_held_request(max(3, rounds // 2)), "milliseconds"
    )
    if _reachable(REDIS_URL):
        results["Redis: open on a refused port"] = _summary(
            await open_unreachable(REDIS_URL, rounds, socket_timeout=60), "milliseconds"
        )
        results["Redis: open on a silent port (socket_timeout 0.3 s)"] = _summary(
            await open_silent(REDIS_URL, max(3, rounds // 2), socket_timeout=0.3),
            "about 0.3 s",
        )
    if _reachable(POSTGRES_URL):
        results["PostgreSQL: open on a refused port"] = _summary(
            await open_unreachable(POSTGRES_URL, rounds, connect_timeout=60), "milliseconds"
        )
        results["PostgreSQL: open on a silent port (connect_timeout 0.3 s)"] = _summary(
            await open_silent(POSTGRES_URL, max(3, rounds // 2), connect_timeout=0.3),
            "about 0.3 s",
        )
    return results


def report(results: dict[str, dict[str, Any]], rounds: int) -> str:
    lines = [
        "## Failure latency: how long failing fast takes",
        "",
        f"{rounds} rounds per case (fewer for the slowest); wall-clock seconds. The tests prove "
        "by order or by cause that each path fails at once; these figures say how fast.",
        "",
        "| case | median | p95 | max | expected |",
        "|---|---:|---:|---:|---|",
    ]
    for name, row in results.items():
        lines.append(
            f"| {name} | {_seconds(row['median_s'])} | {_seconds(row['p95_s'])} "
            f"| {_seconds(row['max_s'])} | {row['expected']} |"
        )
    return "\n".join(lines) + "\n"


def _seconds(value: float) -> str:
    if value < 0.001:
        return f"{value * 1e6:.1f} µs"
    return f"{value:.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    rounds = 3 if args.quick else 21
    results = asyncio.run(run(rounds))
    table = report(results, rounds)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "failure_latency",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "antifragile": antifragile.__version__,
        "rounds": rounds,
        "results": results,
    }
    suffix = "-quick" if args.quick else ""
    (args.output / f"failure_latency{suffix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.output / f"failure_latency{suffix}.md").write_text(table)


if __name__ == "__main__":
    main()
