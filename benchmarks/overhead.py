"""Happy-path overhead of antifragile's policy pipeline and ResilientClient, beside peers.

Part 1 -- per-call overhead of wrapping a function that returns at once, sync and async:
bare call, antifragile's full pipeline (rate limiter, total timeout, retry with budget,
bulkhead, breaker, attempt timeout), tenacity, stamina, pybreaker, tenacity + pybreaker.

Part 2 -- ResilientClient against bare httpx, sync and async, on the same loopback server
(a separate process, so its work is not counted in ours).

Every contender runs in the same process run, interleaved round by round so that drift of a
noisy machine hits them all alike; the figure kept is the median of the rounds. Results go to
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

    def tenacity_call() -> Any:
        return retrying(_noop)

    def tenacity_pybreaker() -> Any:
        return retrying(breaker.call, _noop)

    return {
        "bare call": _noop,
        "antifragile (full pipeline)": decorated,
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

    async def tenacity_call() -> Any:
        return await retrying(_anoop)

    # pybreaker's async support needs Tornado; it has no asyncio form to measure
    return {
        "bare call": _anoop,
        "antifragile (full pipeline)": decorated,
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


def run_overhead(n: int, rounds: int) -> dict[str, dict[str, float | None]]:
    sync = sync_contenders()
    samples: dict[str, list[float]] = {name: [] for name in sync}
    for fn in sync.values():  # warm-up
        time_sync(fn, max(1000, n // 10))
    for _ in range(rounds):
        for name, fn in sync.items():
            samples[name].append(time_sync(fn, n))
    result: dict[str, dict[str, float | None]] = {
        name: {"sync_us": statistics.median(v), "async_us": None} for name, v in samples.items()
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
            row: dict[str, float | None] = result.setdefault(name, {"sync_us": None})
            row["async_us"] = statistics.median(v)

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


def _sample_sync(send: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        send()
        out.append((time.perf_counter_ns() - start) / 1000.0)
    return out


async def _sample_async(send: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter_ns()
        await send()
        out.append((time.perf_counter_ns() - start) / 1000.0)
    return out


def run_http(url: str, n: int, rounds: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with (
        httpx.Client(base_url=url) as bare,
        SyncResilientClient(
            "bench-http", base_url=url, policy=full_policy("bench-http")
        ) as resilient,
    ):
        contenders: dict[str, Callable[[], Any]] = {
            "httpx.Client": lambda: bare.get("/ping"),
            "SyncResilientClient": lambda: resilient.get("/ping"),
        }
        samples: dict[str, list[float]] = {k: [] for k in contenders}
        for send in contenders.values():
            _sample_sync(send, max(50, n // 10))
        for _ in range(rounds):
            for name, send in contenders.items():
                samples[name].extend(_sample_sync(send, n))
        for name, values in samples.items():
            results[name] = {
                "median_us": statistics.median(values),
                "mean_us": statistics.fmean(values),
            }

    async def measure() -> None:
        async with (
            httpx.AsyncClient(base_url=url) as abare,
            ResilientClient(
                "bench-ahttp", base_url=url, policy=full_policy("bench-ahttp")
            ) as aresilient,
        ):
            acontenders: dict[str, Callable[[], Awaitable[Any]]] = {
                "httpx.AsyncClient": lambda: abare.get("/ping"),
                "ResilientClient": lambda: aresilient.get("/ping"),
            }
            asamples: dict[str, list[float]] = {k: [] for k in acontenders}
            for send in acontenders.values():
                await _sample_async(send, max(50, n // 10))
            for _ in range(rounds):
                for name, send in acontenders.items():
                    asamples[name].extend(await _sample_async(send, n))
            for name, values in asamples.items():
                results[name] = {
                    "median_us": statistics.median(values),
                    "mean_us": statistics.fmean(values),
                }

    asyncio.run(measure())
    return results


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def report(overhead: dict[str, dict[str, float | None]], http: dict[str, dict[str, float]]) -> str:
    base_sync = overhead["tenacity"]["sync_us"]
    base_async = overhead["tenacity"]["async_us"]
    lines = [
        "## Per-call overhead on the happy path (median of rounds, microseconds)",
        "",
        "| contender | sync us | x tenacity | async us | x tenacity |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in overhead.items():
        s, a = row["sync_us"], row["async_us"]
        rs = None if s is None or not base_sync else s / base_sync
        ra = None if a is None or not base_async else a / base_async
        lines.append(f"| {name} | {_fmt(s)} | {_fmt(rs)} | {_fmt(a)} | {_fmt(ra)} |")
    lines += [
        "",
        "## ResilientClient against bare httpx on one loopback server (microseconds per request)",
        "",
        "| client | median us | mean us | overhead vs bare (median) |",
        "|---|---:|---:|---:|",
    ]
    pairs = {"SyncResilientClient": "httpx.Client", "ResilientClient": "httpx.AsyncClient"}
    for name, stats in http.items():
        bare = pairs.get(name)
        over = (
            ""
            if bare is None
            else f"{(stats['median_us'] / http[bare]['median_us'] - 1) * 100:+.1f}%"
        )
        lines.append(f"| {name} | {stats['median_us']:.1f} | {stats['mean_us']:.1f} | {over} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    n, rounds, http_n = (2_000, 3, 100) if args.quick else (20_000, 9, 400)

    overhead = run_overhead(n, rounds)
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(ready, stop), daemon=True)
    server.start()
    try:
        url = ready.get(timeout=30)
        http = run_http(url, http_n, rounds if not args.quick else 2)
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
            "sync_client_overhead": http["SyncResilientClient"]["median_us"]
            / http["httpx.Client"]["median_us"]
            - 1,
            "async_client_overhead": http["ResilientClient"]["median_us"]
            / http["httpx.AsyncClient"]["median_us"]
            - 1,
        },
    }
    suffix = "-quick" if args.quick else ""
    (args.output / f"overhead{suffix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.output / f"overhead{suffix}.md").write_text(table)


def _ratio(overhead: dict[str, dict[str, float | None]], column: str) -> float | None:
    ours, theirs = overhead["antifragile (full pipeline)"][column], overhead["tenacity"][column]
    return None if ours is None or not theirs else ours / theirs


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
