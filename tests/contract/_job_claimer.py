"""A claiming worker process for the job-queue contract test (run as ``python -m``; not a test).

Usage: ``python -m tests.contract._job_claimer CONFIG_JSON`` with ``url``, ``options`` (store
options), ``worker``, ``now`` and ``limit``. It opens the queue, prints ``ready``, waits for a line
on stdin (so that all workers start together), claims batches and completes each as succeeded
until a claim comes back empty, then prints one JSON list: the ids it claimed, in order.

With ``log`` (a file path), the ids of each batch are appended to that file (one ``write`` on
an ``O_APPEND`` descriptor) before the batch is completed: lines of all the processes, in the
order their jobs started. With ``idle_rounds``, an empty claim ends the process only after that
many empty claims in a row (jobs of ordering keys wait for other processes' completions).
"""

from __future__ import annotations

import asyncio
import json
import os
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
        log = config.get("log")
        idle, idle_rounds = 0, int(config.get("idle_rounds", 1))
        while True:
            jobs = await queue.claim(worker=worker, limit=limit, lease=3600, now=now)
            if not jobs:
                idle += 1
                if idle >= idle_rounds:
                    return claimed
                await asyncio.sleep(0.005)
                continue
            idle = 0
            claimed.extend(job.id for job in jobs)
            if log is not None:
                fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                try:
                    os.write(fd, "".join(f"{job.id}\n" for job in jobs).encode())
                finally:
                    os.close(fd)
            outcomes = [Outcome(job.id, "succeeded") for job in jobs]
            recorded = await queue.complete(outcomes, worker=worker, now=now)
            assert sorted(recorded) == sorted(job.id for job in jobs)
    finally:
        await queue.store.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_main(json.loads(sys.argv[1])))), flush=True)
