"""CPU and wall time of single-job enqueues on SQLite, and where they go.

``--jobs`` no-op jobs are enqueued one awaited call each (``fn.enqueue(n, sent)``, as an
application enqueues them) into a fresh SQLite file, after 200 warm-up calls. The figures are
this process's CPU time (``time.process_time()``: every thread, the store's included) and the
wall time, per enqueue; CPU hardly depends on the disk, wall time mostly does. Each round runs on
a fresh file; the medians are reported. ``--synchronous normal`` leaves the ``fsync`` out (the
code path alone); the default is the store's own, ``full``. ``--profile`` runs cProfile (timed by
CPU, not wall clock) over the last round.

To compare two versions of the code, run this script alternately under each (e.g. with
``PYTHONPATH`` pointing at the other version's ``src``), a few times, on the same machine.

    python benchmarks/sqlite_enqueue_cpu.py
    python benchmarks/sqlite_enqueue_cpu.py --synchronous normal --jobs 3000 --rounds 5
    python benchmarks/sqlite_enqueue_cpu.py --jobs 3000 --rounds 1 --profile
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
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from antifragile.jobs import JobContext, Jobs

WARM_UP = 200


async def _noop(ctx: JobContext, n, sent):  # type: ignore[no-untyped-def]  # as apps write it
    return None


async def per_enqueue(
    jobs: int, synchronous: str, profile: cProfile.Profile | None
) -> tuple[float, float]:
    """(CPU µs, wall µs) per single-job enqueue, on a fresh file."""
    with tempfile.TemporaryDirectory() as scratch:
        app = Jobs(database_url=f"sqlite:///{Path(scratch) / 'jobs.db'}?synchronous={synchronous}")
        app.job("noop")(_noop)
        fn: Any = app.registry["noop"]
        await app.open()
        try:
            for n in range(WARM_UP):
                await fn.enqueue(n, time.time())
            if profile is not None:
                profile.enable()
            cpu, wall = time.process_time(), time.perf_counter()
            for n in range(jobs):
                await fn.enqueue(n, time.time())
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if profile is not None:
                profile.disable()
        finally:
            await app.close()
    return cpu / jobs * 1e6, wall / jobs * 1e6


async def main(args: argparse.Namespace) -> None:
    cpus: list[float] = []
    walls: list[float] = []
    profile: cProfile.Profile | None = None
    print("load average: " + " ".join(f"{load:.2f}" for load in os.getloadavg()))
    for round_ in range(args.rounds):
        last = round_ == args.rounds - 1
        profile = cProfile.Profile(time.process_time) if args.profile and last else None
        cpu, wall = await per_enqueue(args.jobs, args.synchronous, profile)
        cpus.append(cpu)
        walls.append(wall)
        print(f"round {round_ + 1}/{args.rounds}: {cpu:.0f} µs CPU, {wall:.0f} µs wall per enqueue")
    print(
        f"median: {statistics.median(cpus):.0f} µs CPU, {statistics.median(walls):.0f} µs wall "
        f"per enqueue (synchronous={args.synchronous})"
    )
    if profile is not None:
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumtime").print_stats(40)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="enqueues per round [2000]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds [3]")
    parser.add_argument("--synchronous", choices=["full", "normal"], default="full", help="[full]")
    parser.add_argument("--profile", action="store_true", help="cProfile the last round")
    asyncio.run(main(parser.parse_args()))
