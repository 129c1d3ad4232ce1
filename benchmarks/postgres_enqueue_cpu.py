"""Client CPU of single-job enqueues on PostgreSQL, and where it goes.

``--jobs`` no-op jobs are enqueued one call each (``fn.enqueue(n, sent)``, as an application
enqueues them) into a schema of their own, after 200 warm-up calls. The figure is this
process's CPU time (``time.process_time()``) per 1,000 enqueues: unlike a rate, it hardly
depends on the server's speed. Each round runs on a fresh schema; the median is reported.
The wall-clock time per enqueue is shown too (it depends on the server and on what else runs).
``--profile`` runs cProfile (timed by CPU, not wall clock) over the last round and prints the
functions sorted by their own and by their cumulative time.

``--against DIR`` compares this checkout with another one's ``src`` folder (say, a copy of the
main branch: ``git archive main src | tar -x -C /tmp/main``), interleaved: each round runs once
with each, in a fresh process, alternating which goes first, so that both meet the same
conditions; the medians of both and their ratio are reported.

    python benchmarks/postgres_enqueue_cpu.py
    python benchmarks/postgres_enqueue_cpu.py --jobs 3000 --rounds 1 --profile
    python benchmarks/postgres_enqueue_cpu.py --jobs 3000 --rounds 5 --against /tmp/main/src
    python benchmarks/postgres_enqueue_cpu.py --url postgresql://user@host:5432/db
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
import cProfile
import json
import pstats
import statistics
import subprocess
import time
import uuid
from typing import Any

import psycopg

from antifragile.jobs import JobContext, Jobs

DEFAULT_URL = os.environ.get(
    "ANTIFRAGILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
WARM_UP = 200


async def _noop(ctx: JobContext, n, sent):  # type: ignore[no-untyped-def]  # as apps write it
    return None


async def cpu_per_1000(
    url: str, jobs: int, profile: cProfile.Profile | None
) -> tuple[float, float]:
    """CPU and wall-clock milliseconds per 1,000 single-job enqueues on a fresh schema."""
    schema = f"prof_{uuid.uuid4().hex[:10]}"
    app = Jobs(database_url=f"{url}?schema={schema}")
    app.job("noop")(_noop)
    fn: Any = app.registry["noop"]
    await app.open()
    try:
        for n in range(WARM_UP):
            await fn.enqueue(n, time.time())
        if profile is not None:
            profile.enable()
        start, wall = time.process_time(), time.perf_counter()
        for n in range(jobs):
            await fn.enqueue(n, time.time())
        spent, wall = time.process_time() - start, time.perf_counter() - wall
        if profile is not None:
            profile.disable()
        return spent / jobs * 1000 * 1000, wall / jobs * 1000 * 1000
    finally:
        await app.close()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def _one_round(src: str, args: argparse.Namespace) -> tuple[float, float]:
    """One round in a fresh process importing antifragile from *src*: (CPU, wall) ms."""
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
    command = [sys.executable, os.path.abspath(__file__), "--url", args.url]
    command += ["--jobs", str(args.jobs), "--rounds", "1", "--json"]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return float(figures["cpu"]), float(figures["wall"])


def compare(args: argparse.Namespace) -> None:
    """Alternate rounds between this checkout and ``--against``; print both and the ratio."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    sides = {"this": here, "against": args.against}
    figures: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
    for round_ in range(args.rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for side in order:
            cpu, wall = _one_round(sides[side], args)
            figures[side].append((cpu, wall))
            print(
                f"round {round_ + 1}/{args.rounds} {side:7}: {cpu:.0f} ms CPU, {wall:.0f} ms wall"
            )
    medians = {
        side: (statistics.median(f[0] for f in got), statistics.median(f[1] for f in got))
        for side, got in figures.items()
    }
    for side, (cpu, wall) in medians.items():
        print(f"median {side:7}: {cpu:.0f} ms CPU, {wall:.0f} ms wall per 1,000 enqueues")
    this, against = medians["this"], medians["against"]
    print(
        f"this/against: CPU {this[0] / against[0]:.2f}x, wall {this[1] / against[1]:.2f}x"
        f" (load average {os.getloadavg()[0]:.2f})"
    )


async def main(args: argparse.Namespace) -> None:
    figures: list[tuple[float, float]] = []
    profile: cProfile.Profile | None = None
    for round_ in range(args.rounds):
        last = round_ == args.rounds - 1
        profile = cProfile.Profile(time.process_time) if args.profile and last else None
        cpu, wall = await cpu_per_1000(args.url, args.jobs, profile)
        figures.append((cpu, wall))
        if not args.json:
            print(
                f"round {round_ + 1}/{args.rounds}: {cpu:.0f} ms CPU, {wall:.0f} ms wall"
                " per 1,000 enqueues"
            )
    cpu = statistics.median(f[0] for f in figures)
    wall = statistics.median(f[1] for f in figures)
    if args.json:
        print(json.dumps({"cpu": cpu, "wall": wall}))
        return
    print(f"median: {cpu:.0f} ms CPU, {wall:.0f} ms wall per 1,000 enqueues")
    if profile is not None:
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumtime").print_stats(40)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL URL (scratch schema)")
    parser.add_argument("--jobs", type=int, default=3000, help="enqueues per round [3000]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds [3]")
    parser.add_argument("--profile", action="store_true", help="cProfile the last round")
    parser.add_argument("--against", help="another checkout's src folder, compared interleaved")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.against:
        compare(parsed)
    else:
        asyncio.run(main(parsed))
