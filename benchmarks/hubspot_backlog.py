"""A HubSpot backlog drained one request per contact or in batch upserts.

``--jobs`` contact jobs (500) wait on a real SQLite queue while HubSpot's breaker is forced
open; then it closes and a :class:`~antifragile.jobs.Worker` (concurrency 100, claims of 100)
drains them against the HubSpot simulator over real HTTP, with its default limit (a rolling
window of 100 requests per 10 s) and the connector's default policy. Two contenders:

* ``each`` -- every job calls ``create_contact`` (one request per contact);
* ``batched`` -- every job calls the intake's ``upsert_contact`` (the connector's
  :class:`~antifragile.jobs.Coalescer`: one ``batch/upsert`` per 100 contacts due at once).

Measured: the requests HubSpot saw, the seconds from the breaker's close to the last job's
completion, and the contacts HubSpot holds (each must be there once). Results go to
``benchmarks/results/hubspot_backlog.json`` and ``hubspot_backlog.md``::

    python benchmarks/hubspot_backlog.py            # 500 jobs
    python benchmarks/hubspot_backlog.py --jobs 200
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from antifragile import CircuitBreaker
from antifragile.connectors import HubSpotConnector
from antifragile.inbound._hubspot_contacts import upsert_contact
from antifragile.jobs import JobContext, Jobs
from antifragile.sandbox import HubSpotSimulator, ProviderSandbox

RESULTS = Path(__file__).parent / "results"
TOKEN = "pat-na1-test-token"
CONTENDERS = ("each", "batched")


async def drain(contender: str, jobs_count: int, folder: Path) -> dict[str, Any]:
    simulator = HubSpotSimulator(tokens=[TOKEN])
    with ProviderSandbox([simulator]) as sandbox:
        async with (
            HubSpotConnector(TOKEN, base_url=sandbox.base_url("hubspot")) as hubspot,
            Jobs(database_url=f"sqlite:///{folder / f'{contender}.db'}") as jobs,
        ):

            @jobs.job("contacts.sync", queue="integrations", provider="hubspot")
            async def sync(ctx: JobContext, number: int) -> str:
                email = f"c{number}@example.com"
                if contender == "each":
                    return (await hubspot.create_contact(email)).id
                return (await upsert_contact(hubspot, email, {})).id

            breaker = CircuitBreaker("hubspot")
            jobs.breakers = {"hubspot": breaker}
            breaker.force_open()
            await jobs.enqueue_many(sync.prepare(n) for n in range(jobs_count))
            worker = jobs.worker(concurrency=100, batch=100, prefetch=0)
            await worker.run_until_idle()  # every job deferred by the open breaker
            breaker.reset()
            started = time.perf_counter()
            while worker.counts["succeeded"] + worker.counts["dead"] < jobs_count:
                await worker.run_until_idle()  # the jobs due now; those waiting for the
                await asyncio.sleep(0.1)  # rate limit's window are due later
            seconds = time.perf_counter() - started
            return {
                "contender": contender,
                "jobs": jobs_count,
                "requests": len(sandbox.requests),
                "seconds": round(seconds, 2),
                "contacts": len(simulator.contacts),
                "succeeded": worker.counts["succeeded"],
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        runs = [asyncio.run(drain(c, args.jobs, Path(folder))) for c in CONTENDERS]
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    (RESULTS / "hubspot_backlog.json").write_text(
        json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n"
    )
    lines = [
        f"{args.jobs} HubSpot contact jobs drained after an outage (SQLite queue, worker "
        "concurrency 100, simulator limit 100 requests per 10 s):",
        "",
        "| contender | requests | seconds | contacts | succeeded |",
        "|---|---|---|---|---|",
        *(
            f"| {r['contender']} | {r['requests']} | {r['seconds']} | {r['contacts']} "
            f"| {r['succeeded']} |"
            for r in runs
        ),
    ]
    (RESULTS / "hubspot_backlog.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
