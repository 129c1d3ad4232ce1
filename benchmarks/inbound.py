"""Inbound processing: customer messages classified, answered and their jobs enqueued per second.

A backlog of ``--messages`` WhatsApp text messages, each from a customer of its own, is recorded
in the inbox of a fresh database (with their ``inbound.process`` jobs and the customers'
ordering keys, exactly as the webhook records them). Then ``--workers`` ``antifragile worker``
processes (``--queue inbound``, the service's own worker options) start and process them:
each message is loaded from the inbox, classified, its session updated, and its reply enqueued
as a job of its own (the replies are not sent here). The rate is the messages divided by the time
from the workers' first claim to the last message processed; the CPU time of the worker
processes per message is reported beside it (it hardly depends on the machine's load).

    python benchmarks/inbound.py                      # SQLite (1 worker), PostgreSQL (2 workers)
    python benchmarks/inbound.py --quick              # 300 messages each
    python benchmarks/inbound.py --only sqlite --concurrency 50

Target: at least 500 messages/s on SQLite and with two PostgreSQL workers. Results go to
``benchmarks/results/inbound.json`` and ``inbound.md`` (``inbound-quick.*`` with ``--quick``).
"""

from __future__ import annotations

import os
import sys

# This folder holds ``queue.py``; run as a script, that folder leads sys.path and would shadow
# the standard library's ``queue``. Drop it first.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import json
import runpy
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from antifragile.inbound._webhooks import parse_whatsapp
from antifragile.jobs import JobFilter, JobState
from antifragile.service import Settings
from antifragile.service._assistant import Assistant

RESULTS = Path(__file__).resolve().parent / "results"
LAUNCH = "from antifragile.cli import main; main()"


#: the ingest benchmark beside this file: its signed WhatsApp deliveries and helpers
ingest = SimpleNamespace(
    **runpy.run_path(str(Path(__file__).with_name("ingest.py")), run_name="bench_ingest")
)


@dataclass
class Figures:
    database: str
    workers: int
    concurrency: int
    messages: int
    seconds: float = 0.0
    per_s: float = 0.0
    cpu_ms_per_message: float = 0.0


def _env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTIFRAGILE_")}
    env.update(
        {
            "ANTIFRAGILE_DATABASE_URL": url,
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": ingest.APP_SECRET,
            "ANTIFRAGILE_WHATSAPP_BASE_URL": "http://127.0.0.1:9",  # never called here
            "ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN": "bench",
            "ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID": "106540352242922",
        }
    )
    return env


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _backlog(env: dict[str, str], messages: int) -> Assistant:
    settings = Settings.from_env(env)
    assistant = Assistant(settings)
    await assistant.open()
    events = [e for n in range(messages) for e in parse_whatsapp(ingest._delivery(n))]
    for start in range(0, len(events), 500):
        await assistant.ingest(events[start : start + 500])
    return assistant


async def _measure(fig: Figures, env: dict[str, str]) -> None:
    assistant = await _backlog(env, fig.messages)
    done = JobFilter(name="inbound.process", states=(JobState.SUCCEEDED,))
    command = [sys.executable, "-c", LAUNCH, "worker", "--queue", "inbound"]
    command += ["--concurrency", str(fig.concurrency), "--log-level", "warning"]
    processes = [
        await asyncio.create_subprocess_exec(*command, env=env) for _ in range(fig.workers)
    ]
    try:
        cpu: dict[int, float] = {}
        started = None
        while True:
            finished = len(await assistant.jobs.find(done, limit=fig.messages + 1))
            if started is None and finished:
                started = time.perf_counter()
                cpu = {p.pid: _cpu_seconds(p.pid) for p in processes}
                first = finished
            if finished >= fig.messages:
                break
            if any(p.returncode is not None for p in processes):
                raise RuntimeError("a worker exited")
            await asyncio.sleep(0.02)
        assert started is not None
        fig.seconds = time.perf_counter() - started
        counted = fig.messages - first
        fig.per_s = counted / fig.seconds
        used = sum(_cpu_seconds(p.pid) - cpu[p.pid] for p in processes)
        fig.cpu_ms_per_message = used / max(counted, 1) * 1000
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            await p.wait()
        await assistant.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10, help="per worker (default 10)")
    parser.add_argument("--quick", action="store_true", help="300 messages")
    parser.add_argument("--only", action="append", choices=["sqlite", "postgres"], default=[])
    parser.add_argument("--url", default=os.environ.get("ANTIFRAGILE_BENCH_PG", ingest.DEFAULT_PG))
    args = parser.parse_args()
    messages = min(args.messages, 300) if args.quick else args.messages
    wanted = args.only or ["sqlite", "postgres"]
    results: list[Figures] = []
    scratch = Path(tempfile.mkdtemp(prefix="af-inbound-"))
    if "sqlite" in wanted:
        fig = Figures("sqlite", 1, args.concurrency, messages)
        asyncio.run(_measure(fig, _env(f"sqlite:///{scratch / 'inbound.db'}")))
        results.append(fig)
    if "postgres" in wanted and ingest._pg_up(args.url):
        url, schema = ingest._pg_schema_url(args.url)
        try:
            fig = Figures("postgres", 2, args.concurrency, messages)
            asyncio.run(_measure(fig, _env(url)))
            results.append(fig)
        finally:
            ingest._pg_drop_schema(args.url, schema)
    lines = [
        "| database | workers x concurrency | messages | messages/s | worker CPU ms/message |",
        "|---|---|---:|---:|---:|",
    ]
    for f in results:
        lines.append(
            f"| {f.database} | {f.workers} x {f.concurrency} | {f.messages:,} | {f.per_s:,.0f} "
            f"| {f.cpu_ms_per_message:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    stem = "inbound-quick" if args.quick else "inbound"
    RESULTS.mkdir(exist_ok=True)
    load = os.getloadavg()
    meta: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_average": load,
        "python": sys.version.split()[0],
    }
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    )
    (RESULTS / f"{stem}.md").write_text(
        f"# Inbound processing\n\n{table}\n\nLoad average at the end: "
        f"{', '.join(f'{x:.1f}' for x in load)} on {meta['cpus']} CPUs.\n"
    )


if __name__ == "__main__":
    main()
