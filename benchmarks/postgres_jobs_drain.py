"""How fast one worker drains the PostgreSQL job queue: claim a batch, complete it, repeat.

10,000 no-op jobs are enqueued in batches of 1,000 into a schema of their own; then one task
claims ``--batch`` jobs at a time and completes them all as succeeded in one call, until the
queue is empty. The figure is jobs per second of the drain (enqueueing is timed apart). Each
batch size runs ``--rounds`` times on a fresh schema; the median is reported.

    python benchmarks/postgres_jobs_drain.py
    python benchmarks/postgres_jobs_drain.py --jobs 2000 --rounds 1      # a smoke run
    python benchmarks/postgres_jobs_drain.py --url postgresql://user@host:5432/db
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
import os
import statistics
import time
import uuid

from antifragile.jobs import NewJob, Outcome
from antifragile.jobs._postgres import PostgresJobQueue
from antifragile.stores._postgres import PostgresStore

DEFAULT_URL = os.environ.get(
    "ANTIFRAGILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
NOW = 1_700_000_000.0
ENQUEUE_BATCH = 1000


async def drain_once(url: str, jobs: int, batch: int) -> tuple[float, float]:
    """(enqueue rate, drain rate) in jobs per second on a fresh schema."""
    store = PostgresStore(url, schema=f"bench_{uuid.uuid4().hex[:10]}", drop_schema_on_close=True)
    await store.open()
    try:
        queue = PostgresJobQueue(store)
        started = time.perf_counter()
        for first in range(0, jobs, ENQUEUE_BATCH):
            count = min(ENQUEUE_BATCH, jobs - first)
            batch_jobs = [NewJob("noop", "default", {"n": first + i}, NOW, 5) for i in range(count)]
            await queue.enqueue(batch_jobs, now=NOW)
        enqueued = time.perf_counter() - started

        done = 0
        started = time.perf_counter()
        while True:
            claimed = await queue.claim(worker="bench", limit=batch, lease=60, now=NOW)
            if not claimed:
                break
            outcomes = [Outcome(job.id, "succeeded") for job in claimed]
            done += len(await queue.complete(outcomes, worker="bench", now=NOW))
        drained = time.perf_counter() - started
        assert done == jobs, (done, jobs)
        return jobs / enqueued, jobs / drained
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, action="append")
    args = parser.parse_args()
    for batch in args.batch or [100, 250, 500]:
        rates = [await drain_once(args.url, args.jobs, batch) for _ in range(args.rounds)]
        enqueue = statistics.median(r[0] for r in rates)
        drain = statistics.median(r[1] for r in rates)
        print(f"batch {batch:4d}: enqueue {enqueue:8.0f} jobs/s, drain {drain:8.0f} jobs/s")


if __name__ == "__main__":
    asyncio.run(main())
