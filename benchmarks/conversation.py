"""A customer's wait, end to end: signed WhatsApp webhook in -> reply accepted by WhatsApp.

The service runs as it does in production, in processes of its own, and talks to the WhatsApp
simulator of the sandbox over real HTTP (the sandbox runs in this process, beside the load
generator):

* ``sqlite`` -- ``antifragile serve`` (API, worker and scheduler in one process) on a fresh
  SQLite file with its defaults (WAL, ``synchronous=FULL``);
* ``postgres`` -- ``antifragile serve --no-worker`` (API and scheduler) and two
  ``antifragile worker`` processes, on a fresh schema of a PostgreSQL database.

Conversations start at a steady ``--rate`` per second (20 by default) for ``--duration`` seconds
(30): each is a correctly signed WhatsApp text message from a customer of its own, posted to
``/v1/webhooks/whatsapp`` on a fixed schedule (open loop: a slow answer does not delay the next
message). A conversation's latency runs from the moment its webhook was due to be sent to the
moment the sandbox accepted the service's reply to that customer (``POST /messages``), so it
holds the webhook's durable record, the ``inbound.process`` job (classification, the reply
enqueued) and the reply job (the send). p50, p99 and max; errors are webhooks not answered
with 200 and conversations that got no reply within ``--grace`` seconds after the last message.

The sandbox's status webhooks (sent / delivered / read) are off: each reply would add three
more inbound events.

Targets: p50 at most 50 ms, p99 at most 250 ms, no error. Results go to
``benchmarks/results/conversation.json`` and a table to ``conversation.md``
(``conversation-quick.*`` with ``--quick``).

    python benchmarks/conversation.py                 # both databases, about 1.5 minutes
    python benchmarks/conversation.py --quick         # a smoke run (3 s each)
    python benchmarks/conversation.py --only sqlite --rate 50
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
import contextlib
import json
import runpy
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

import httpx

from antifragile.sandbox import ProviderSandbox, WhatsAppSimulator, whatsapp_signature

RESULTS = Path(__file__).resolve().parent / "results"


#: the ingest benchmark beside this file: its signed WhatsApp deliveries and helpers
ingest = SimpleNamespace(
    **runpy.run_path(str(Path(__file__).with_name("ingest.py")), run_name="bench_ingest")
)
APP_SECRET: str = ingest.APP_SECRET
PATH: str = ingest.PATH
ACCESS_TOKEN = "bench-access-token"
PHONE_NUMBER_ID = "106540352242922"
LAUNCH = "from antifragile.cli import main; main()"


@dataclass
class Figures:
    database: str
    processes: str
    rate: float
    duration_s: float
    conversations: int = 0
    replied: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


def _env(database_url: str, sandbox: ProviderSandbox) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTIFRAGILE_")}
    env.update(
        {
            "ANTIFRAGILE_DATABASE_URL": database_url,
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": APP_SECRET,
            "ANTIFRAGILE_WHATSAPP_VERIFY_TOKEN": "bench",
            "ANTIFRAGILE_WHATSAPP_BASE_URL": sandbox.base_url("whatsapp"),
            "ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN": ACCESS_TOKEN,
            "ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            # every request comes from 127.0.0.1: the per-IP limit would throttle the load
            "ANTIFRAGILE_INBOUND_IP_RATE": "off",
        }
    )
    return env


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-c", LAUNCH, *args, "--log-level", "warning"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(15)
        if process.poll() is None:
            process.kill()
            process.wait()


def _replies(sandbox: ProviderSandbox) -> dict[str, float]:
    """When the sandbox first accepted a message to each customer (epoch seconds)."""
    first: dict[str, float] = {}
    for effect in sandbox.effects("whatsapp"):
        to = effect.data.get("to") if isinstance(effect.data, dict) else None
        if to is not None and to not in first:
            first[to] = effect.at
    return first


def _sender(body: bytes) -> str:
    sender: str = json.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]["from"]
    return sender


async def _converse(
    port: int, sandbox: ProviderSandbox, rate: float, duration: float, grace: float, fig: Figures
) -> None:
    await ingest._wait_up(port)
    total = int(rate * duration)
    offset = 100_000 - total - 50  # customers of their own, never the warm-up's
    bodies = [ingest._delivery(offset + n) for n in range(total)]
    senders = [_sender(body) for body in bodies]
    due: dict[str, float] = {}
    statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as client:

        async def post(body: bytes, statuses: dict[str, int]) -> None:
            headers = {
                "content-type": "application/json",
                "x-hub-signature-256": whatsapp_signature(APP_SECRET, body),
            }
            try:
                response = await client.post(PATH, content=body, headers=headers, timeout=30)
                key = str(response.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            statuses[key] = statuses.get(key, 0) + 1

        # warm-up: a few conversations, not counted
        await asyncio.gather(*(post(ingest._delivery(n), {}) for n in range(20)))
        await asyncio.sleep(1.0)
        tasks = []
        start = time.time() + 0.05
        for n, body in enumerate(bodies):
            at = start + n / rate
            delay = at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            due[senders[n]] = at
            tasks.append(asyncio.create_task(post(body, statuses)))
        await asyncio.gather(*tasks)
    deadline = time.time() + grace
    while time.time() < deadline:
        if len(set(_replies(sandbox)) & set(due)) >= total:
            break
        await asyncio.sleep(0.1)
    replies = _replies(sandbox)
    latencies = sorted((replies[s] - due[s]) * 1000 for s in due if s in replies)
    fig.conversations = total
    fig.replied = len(latencies)
    fig.statuses = statuses
    fig.errors = sum(v for k, v in statuses.items() if k != "200") + (total - len(latencies))
    if latencies:
        fig.p50_ms = statistics.median(latencies)
        fig.p99_ms = latencies[max(0, int(len(latencies) * 0.99) - 1)]
        fig.max_ms = latencies[-1]


def measure(database: str, url: str, args: argparse.Namespace, scratch: Path) -> Figures:
    simulator = WhatsAppSimulator(
        access_tokens=[ACCESS_TOKEN], phone_number_ids=[PHONE_NUMBER_ID], throughput=10**6
    )
    processes: list[subprocess.Popen[bytes]] = []
    port = ingest._free_port()
    with ProviderSandbox([simulator]) as sandbox:
        env = _env(url, sandbox)
        log = scratch / f"{database}.log"
        if database == "sqlite":
            shape = "antifragile serve (API + worker + scheduler, one process)"
            processes.append(_start(["serve", "--port", str(port)], env, log))
        else:
            shape = "antifragile serve --no-worker + 2 x antifragile worker"
            migrate = subprocess.run(
                [sys.executable, "-c", LAUNCH, "migrate"], env=env, capture_output=True
            )
            if migrate.returncode:
                raise RuntimeError(f"migrate failed: {migrate.stdout!r} {migrate.stderr!r}")
            processes.append(_start(["serve", "--no-worker", "--port", str(port)], env, log))
            processes += [_start(["worker"], env, log) for _ in range(2)]
        fig = Figures(database, shape, args.rate, args.duration)
        try:
            asyncio.run(_converse(port, sandbox, args.rate, args.duration, args.grace, fig))
        finally:
            _stop(processes)
    return fig


def _table(results: list[Figures]) -> str:
    lines = [
        "| database | processes | conversations/s | replied | p50 ms | p99 ms | max ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f in results:
        lines.append(
            f"| {f.database} | {f.processes} | {f.rate:g} | {f.replied}/{f.conversations} "
            f"| {f.p50_ms:.1f} | {f.p99_ms:.1f} | {f.max_ms:.1f} | {f.errors} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="conversations per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--grace", type=float, default=15.0, help="seconds to wait for replies")
    parser.add_argument("--url", default=os.environ.get("ANTIFRAGILE_BENCH_PG", ingest.DEFAULT_PG))
    parser.add_argument("--only", action="append", choices=["sqlite", "postgres"], default=[])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.duration = min(args.duration, 3.0)
    scratch = Path(tempfile.mkdtemp(prefix="af-conversation-"))
    results: list[Figures] = []
    skipped: list[str] = []
    wanted = args.only or ["sqlite", "postgres"]
    if "sqlite" in wanted:
        results.append(measure("sqlite", f"sqlite:///{scratch / 'service.db'}", args, scratch))
    if "postgres" in wanted:
        if ingest._pg_up(args.url):
            url, schema = ingest._pg_schema_url(args.url)
            try:
                results.append(measure("postgres", url, args, scratch))
            finally:
                ingest._pg_drop_schema(args.url, schema)
        else:
            skipped.append("postgres (no PostgreSQL answered)")
    for f in results:
        print(
            f"{f.database}: {f.replied}/{f.conversations} replied, p50 {f.p50_ms:.1f} ms, "
            f"p99 {f.p99_ms:.1f} ms, max {f.max_ms:.1f} ms, errors {f.errors}",
            flush=True,
        )
    table = _table(results)
    stem = "conversation-quick" if args.quick else "conversation"
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rate": args.rate,
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_average": os.getloadavg(),
        "skipped": skipped,
    }
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    )
    (RESULTS / f"{stem}.md").write_text(
        f"# Webhook to reply ({args.rate:g} conversations/s for {args.duration:g} s)\n\n"
        f"{table}\n\nLoad average at the end: "
        f"{', '.join(f'{x:.1f}' for x in meta['load_average'])} "
        f"on {meta['cpus']} CPUs.\n" + "".join(f"\n- skipped: {s}" for s in skipped)
    )
    print(table)


if __name__ == "__main__":
    main()
