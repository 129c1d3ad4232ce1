"""A claiming worker process for the job-queue contract test (run as ``python -m``; not a test).

Usage: ``python -m tests.contract._job_claimer CONFIG_JSON`` with ``url``, ``options`` (store
options), ``worker``, ``now`` and ``limit``. It opens the queue, prints ``ready``, waits for a line
on stdin (so that all workers start together), claims batches and completes each as succeeded
until a claim comes back empty, then prints one JSON list: the ids it claimed, in order.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from antifragile.jobs import Outcome
from antifragile.jobs._open import open_job_queue


async def _main(config: dict[str, Any]) -> list[str]:
    queue = await open_job_queue(config["url"], **config["options"])
    worker, now, limit = config["worker"], float(config["now"]), int(config["limit"])
    try:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        claimed: list[str] = []
        while True:
            jobs = await queue.claim(worker=worker, limit=limit, lease=3600, now=now)
            if not jobs:
                return claimed
            claimed.extend(job.id for job in jobs)
            outcomes = [Outcome(job.id, "succeeded") for job in jobs]
            recorded = await queue.complete(outcomes, worker=worker, now=now)
            assert sorted(recorded) == sorted(job.id for job in jobs)
    finally:
        await queue.store.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_main(json.loads(sys.argv[1])))), flush=True)
