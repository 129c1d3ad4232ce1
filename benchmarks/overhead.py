"""Happy-path overhead of antifragile's policy pipeline and ResilientClient, beside peers.

Part 1 -- per-call overhead of wrapping a function that returns at once, sync and async:
bare call, antifragile's full pipeline (rate limiter, total timeout, retry with budget,
bulkhead, breaker, attempt timeout), the same pipeline as the service ships it (with its
metrics observer, and async with a :class:`~antifragile.SharedCircuitBreaker` on an in-memory
store; a shared breaker is async only, so the sync row keeps a process-local one), tenacity,
stamina, pybreaker, tenacity + pybreaker.

Part 2 -- ResilientClient against bare httpx, sync and async, on the same loopback server
(a separate process, so its work is not counted in ours).

Every contender runs in the same process run, interleaved round by round so that drift of a
noisy machine hits them all alike; the figure kept is the median of the rounds, and each ratio
to tenacity the median of the per-round ratios. Results go to
``benchmarks/results/overhead.json`` and a table to ``benchmarks/results/overhead.md``.

    python benchmarks/overhead.py            # about a minute
    python benchmarks/overhead.py --quick    # a smoke run
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
import json
import multiprocessing
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pybreaker
import stamina
import tenacity

import antifragile
from antifragile import (
    Bulkhead,
    CircuitBreaker,
    Exponential,
    Policy,
    ResilientClient,
    Retry,
    SyncResilientClient,
    TokenBucket,
)

RESULTS = Path(__file__).parent / "results"


def full_policy(name: str) -> Policy:
    """The pipeline measured: every strategy on, limits far above the load so none waits."""
    return Policy(
        name,
        timeout=10.0,
        total_timeout=30.0,
        retry=Retry(attempts=3, backoff=Exponential(0.1, cap=2.0)),
        breaker=CircuitBreaker(name, failure_rate=0.5, window=100, minimum_calls=20),
        rate=TokenBucket(1e9, burst=1e9),
        bulkhead=Bulkhead(1000),
    )


SERVICE_ROW = "antifragile (as the service ships it)"


def service_policy(name: str, *, shared: bool) -> tuple[Policy, Any]:
    """The full pipeline with what the service adds: the metrics observer on every policy and,
    for async code, a breaker shared through a store (an in-memory one here, so the figure is
    the pipeline's, not a database's). Returns the policy and the store to close."""
    from antifragile.observability import Metrics
    from antifragile.stores import SharedCircuitBreaker, make_store

    policy = full_policy(name)
    store = None
    breaker: CircuitBreaker = CircuitBreaker(name, failure_rate=0.5, window=100, minimum_calls=20)
    if shared:
        store = make_store("memory://")
        breaker = SharedCircuitBreaker(name, store, failure_rate=0.5, minimum_calls=20)
    metrics = Metrics()
    made = Policy(
        name,
        timeout=policy.timeout,
        total_timeout=policy.total_timeout,
        retry=policy.retry,
        breaker=breaker,
        rate=TokenBucket(1e9, burst=1e9),
        bulkhead=Bulkhead(1000),
        observer=metrics.observer,
    )
    return made, store


def _noop() -> int:
    return 1


async def _anoop() -> int:
    return 1


def sync_contenders() -> dict[str, Callable[[], Any]]:
    policy = full_policy("bench-sync")
    decorated = policy(_noop)
    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(3), reraise=True)
    stamina_fn = stamina.retry(on=Exception, attempts=3)(_noop)
    breaker = pybreaker.CircuitBreaker(fail_max=10, reset_timeout=30)
    breaker_fn = breaker(_noop)
    service = service_policy("bench-service-sync", shared=False)[0](_noop)

    def tenacity_call() -> Any:
        return retrying(_noop)

    def tenacity_pybreaker() -> Any:
        return retrying(breaker.call, _noop)

    return {
        "bare call": _noop,
        "antifragile (full pipeline)": decorated,
        SERVICE_ROW: service,
        "tenacity": tenacity_call,
        "stamina": stamina_fn,
        "pybreaker": breaker_fn,
        "tenacity + pybreaker": tenacity_pybreaker,
    }


def async_contenders() -> dict[str, Callable[[], Awaitable[Any]]]:
    policy = full_policy("bench-async")
    decorated = policy(_anoop)
    retrying = tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(3), reraise=True)
    stamina_fn = stamina.retry(on=Exception, attempts=3)(_anoop)
    service = service_policy("bench-service-async", shared=True)[0](_anoop)

    async def tenacity_call() -> Any:
        return await retrying(_anoop)

    # pybreaker's async support needs Tornado; it has no asyncio form to measure
    return {
        "bare call": _anoop,
        "antifragile (full pipeline)": decorated,
        SERVICE_ROW: service,
        "tenacity": tenacity_call,
        "stamina": stamina_fn,
    }


def time_sync(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n / 1000.0


async def time_async(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        await fn()
    return (time.perf_counter_ns() - start) / n / 1000.0


def _per_round_ratio(samples: list[float], tenacity: list[float]) -> float | None:
    """The median over rounds of a contender's time over tenacity's in the same round: load
    from other processes that drifts between rounds cancels out."""
    ratios = [ours / theirs for ours, theirs in zip(samples, tenacity, strict=True) if theirs]
    return statistics.median(ratios) if ratios else None


def run_overhead(n: int, rounds: int) -> dict[str, dict[str, float | None]]:
    sync = sync_contenders()
    samples: dict[str, list[float]] = {name: [] for name in sync}
    for fn in sync.values():  # warm-up
        time_sync(fn, max(1000, n // 10))
    for _ in range(rounds):
        for name, fn in sync.items():
            samples[name].append(time_sync(fn, n))
    result: dict[str, dict[str, float | None]] = {
        name: {
            "sync_us": statistics.median(v),
            "sync_x_tenacity": _per_round_ratio(v, samples["tenacity"]),
            "async_us": None,
            "async_x_tenacity": None,
        }
        for name, v in samples.items()
    }

    async def measure_async() -> None:
        contenders = async_contenders()
        async_samples: dict[str, list[float]] = {name: [] for name in contenders}
        for fn in contenders.values():
            await time_async(fn, max(1000, n // 10))
        for _ in range(rounds):
            for name, fn in contenders.items():
                async_samples[name].append(await time_async(fn, n))
        for name, v in async_samples.items():
            row: dict[str, float | None] = result.setdefault(
                name, {"sync_us": None, "sync_x_tenacity": None}
            )
            row["async_us"] = statistics.median(v)
            row["async_x_tenacity"] = _per_round_ratio(v, async_samples["tenacity"])

    asyncio.run(measure_async())
    return result


# -- part 2: over HTTP -----------------------------------------------------------------------


def _serve(ready: Any, stop: Any) -> None:
    from antifragile.sandbox import Fault, FlakyServer

    server = FlakyServer(default=Fault.ok(json={"ok": True}))
    server.start()
    ready.put(server.url)
    stop.wait()
    server.stop()


def _block_sync(send: Callable[[], Any], n: int) -> tuple[float, float]:
    """Median wall time per request of a block, and client CPU time per request (us)."""
    walls = []
    cpu0 = time.process_time()
    for _ in range(n):
        start = time.perf_counter_ns()
        send()
        walls.append((time.perf_counter_ns() - start) / 1000.0)
    return statistics.median(walls), (time.process_time() - cpu0) / n * 1e6


async def _block_async(send: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    walls = []
    cpu0 = time.process_time()
    for _ in range(n):
        start = time.perf_counter_ns()
        await send()
        walls.append((time.perf_counter_ns() - start) / 1000.0)
    return statistics.median(walls), (time.process_time() - cpu0) / n * 1e6


def _summarise(
    blocks: dict[str, list[tuple[float, float]]], bare: str, tagged: str
) -> dict[str, dict[str, float]]:
    """Per contender: median of the block medians, client CPU per request, and the median over
    rounds of its latency ratio to bare httpx and to bare httpx sending the same headers."""
    out: dict[str, dict[str, float]] = {}
    for name, rows in blocks.items():
        walls = [w for w, _ in rows]
        cpus = [c for _, c in rows]
        out[name] = {
            "median_us": statistics.median(walls),
            "cpu_us": statistics.median(cpus),
            "vs_bare": statistics.median(
                w / b for w, (b, _) in zip(walls, blocks[bare], strict=True)
            )
            - 1,
            "vs_same_headers": statistics.median(
                w / b for w, (b, _) in zip(walls, blocks[tagged], strict=True)
            )
            - 1,
        }
    return out


def _request_id() -> dict[str, str]:
    return {"x-request-id": os.urandom(16).hex()}


def run_http(url: str, n: int, rounds: int) -> dict[str, dict[str, float]]:
    """Contenders interleaved in small blocks, round after round, so drift hits all alike."""
    results: dict[str, dict[str, float]] = {}
    with (
        httpx.Client(base_url=url) as bare,
        SyncResilientClient(
            "bench-http", base_url=url, policy=full_policy("bench-http")
        ) as resilient,
    ):
        contenders: dict[str, Callable[[], Any]] = {
            "httpx.Client": lambda: bare.get("/ping"),
            "httpx.Client + x-request-id": lambda: bare.get("/ping", headers=_request_id()),
            "SyncResilientClient": lambda: resilient.get("/ping"),
        }
        blocks: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
        for send in contenders.values():
            _block_sync(send, n)
        for _ in range(rounds):
            for name, send in contenders.items():
                blocks[name].append(_block_sync(send, n))
        results.update(_summarise(blocks, "httpx.Client", "httpx.Client + x-request-id"))

    async def measure() -> None:
        async with (
            httpx.AsyncClient(base_url=url) as abare,
            ResilientClient(
                "bench-ahttp", base_url=url, policy=full_policy("bench-ahttp")
            ) as aresilient,
        ):
            acontenders: dict[str, Callable[[], Awaitable[Any]]] = {
                "httpx.AsyncClient": lambda: abare.get("/ping"),
                "httpx.AsyncClient + x-request-id": lambda: abare.get(
                    "/ping", headers=_request_id()
                ),
                "ResilientClient": lambda: aresilient.get("/ping"),
            }
            ablocks: dict[str, list[tuple[float, float]]] = {k: [] for k in acontenders}
            for send in acontenders.values():
                await _block_async(send, n)
            for _ in range(rounds):
                for name, send in acontenders.items():
                    ablocks[name].append(await _block_async(send, n))
            results.update(
                _summarise(ablocks, "httpx.AsyncClient", "httpx.AsyncClient + x-request-id")
            )

    asyncio.run(measure())
    return results


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def report(overhead: dict[str, dict[str, float | None]], http: dict[str, dict[str, float]]) -> str:
    lines = [
        "## Per-call overhead on the happy path (median of rounds, microseconds)",
        "",
        "Times are medians over rounds; `x tenacity` is the median over rounds of the",
        "contender's time over tenacity's in the same round.",
        "",
        "| contender | sync us | x tenacity | async us | x tenacity |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in overhead.items():
        s, a = row["sync_us"], row["async_us"]
        rs, ra = row["sync_x_tenacity"], row["async_x_tenacity"]
        lines.append(f"| {name} | {_fmt(s)} | {_fmt(rs)} | {_fmt(a)} | {_fmt(ra)} |")
    lines += [
        "",
        "## ResilientClient against bare httpx on one loopback server",
        "",
        "Latency is the median of per-block medians; the ratios are medians over rounds of",
        "each block against the bare client's block of the same round. The loopback server is",
        "Python (h11) in another process, so an extra request header costs it measurable time:",
        "the last column compares with bare httpx sending the same `x-request-id`. Client CPU",
        "is this process's CPU time per request.",
        "",
        "| client | latency us | client CPU us | vs bare httpx | vs bare + same header |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, stats in http.items():
        lines.append(
            f"| {name} | {stats['median_us']:.1f} | {stats['cpu_us']:.1f} | "
            f"{stats['vs_bare'] * 100:+.1f}% | {stats['vs_same_headers'] * 100:+.1f}% |"
        )
    return "\n".join(lines) + "\n"


def _pin(server_pid: int | None) -> None:
    """Server on one CPU, this process on another: less scheduling noise on a small machine."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) >= 2 and server_pid is not None:
        os.sched_setaffinity(server_pid, {cpus[-1]})
        os.sched_setaffinity(0, {cpus[0]})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    n, rounds = (2_000, 3) if args.quick else (5_000, 31)
    # HTTP: blocks of this many requests, this many rounds (contenders interleaved per round)
    http_block, http_rounds = (20, 5) if args.quick else (25, 60)

    overhead = run_overhead(n, rounds)
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(ready, stop), daemon=True)
    server.start()
    try:
        url = ready.get(timeout=30)
        _pin(server.pid)
        http = run_http(url, http_block, http_rounds)
    finally:
        stop.set()
        server.join(timeout=10)

    table = report(overhead, http)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "overhead",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "antifragile": antifragile.__version__,
        "peers": {
            "tenacity": tenacity.__version__
            if hasattr(tenacity, "__version__")
            else _version("tenacity"),
            "stamina": _version("stamina"),
            "pybreaker": _version("pybreaker"),
            "httpx": httpx.__version__,
        },
        "iterations": n,
        "rounds": rounds,
        "overhead_us": overhead,
        "http_us": http,
        "ratios": {
            "sync_full_pipeline_vs_tenacity": _ratio(overhead, "sync_us"),
            "async_full_pipeline_vs_tenacity": _ratio(overhead, "async_us"),
            "sync_service_vs_tenacity": _ratio(overhead, "sync_us", SERVICE_ROW),
            "async_service_vs_tenacity": _ratio(overhead, "async_us", SERVICE_ROW),
            "sync_client_overhead": http["SyncResilientClient"]["vs_bare"],
            "async_client_overhead": http["ResilientClient"]["vs_bare"],
            "sync_client_overhead_same_headers": http["SyncResilientClient"]["vs_same_headers"],
            "async_client_overhead_same_headers": http["ResilientClient"]["vs_same_headers"],
            "sync_client_cpu_overhead_us": http["SyncResilientClient"]["cpu_us"]
            - http["httpx.Client"]["cpu_us"],
            "async_client_cpu_overhead_us": http["ResilientClient"]["cpu_us"]
            - http["httpx.AsyncClient"]["cpu_us"],
        },
    }
    suffix = "-quick" if args.quick else ""
    (args.output / f"overhead{suffix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.output / f"overhead{suffix}.md").write_text(table)


def _ratio(
    overhead: dict[str, dict[str, float | None]],
    column: str,
    row: str = "antifragile (full pipeline)",
) -> float | None:
    return overhead[row][column.replace("_us", "_x_tenacity")]


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
