"""Client CPU of single-job enqueues on PostgreSQL, and where it goes.

``--jobs`` no-op jobs are enqueued one call each (``fn.enqueue(n, sent)``, as an application
enqueues them) into a schema of their own, after 200 warm-up calls. The figure is this
process's CPU time (``time.process_time()``) per 1,000 enqueues: unlike a rate, it hardly
depends on the server's speed. Each round runs on a fresh schema; the median is reported.
``--profile`` runs cProfile (timed by CPU, not wall clock) over the last round and prints the
functions sorted by their own and by their cumulative time.

    python benchmarks/postgres_enqueue_cpu.py
    python benchmarks/postgres_enqueue_cpu.py --jobs 3000 --rounds 1 --profile
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
import pstats
import statistics
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


async def cpu_per_1000(url: str, jobs: int, profile: cProfile.Profile | None) -> float:
    """CPU milliseconds per 1,000 single-job enqueues on a fresh schema."""
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
        start = time.process_time()
        for n in range(jobs):
            await fn.enqueue(n, time.time())
        spent = time.process_time() - start
        if profile is not None:
            profile.disable()
        return spent / jobs * 1000 * 1000
    finally:
        await app.close()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


async def main(args: argparse.Namespace) -> None:
    figures: list[float] = []
    profile: cProfile.Profile | None = None
    for round_ in range(args.rounds):
        last = round_ == args.rounds - 1
        profile = cProfile.Profile(time.process_time) if args.profile and last else None
        figure = await cpu_per_1000(args.url, args.jobs, profile)
        figures.append(figure)
        print(f"round {round_ + 1}/{args.rounds}: {figure:.0f} ms CPU per 1,000 enqueues")
    print(f"median: {statistics.median(figures):.0f} ms CPU per 1,000 enqueues")
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
    asyncio.run(main(parser.parse_args()))
