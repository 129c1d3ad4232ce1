"""Inbound webhooks per second: verify -> dedup -> durable record -> 200, beside a bare endpoint.

Three contenders, each a single uvicorn worker in a process of its own, measured one after the
other from this process (the load generator) over loopback:

* ``bare-fastapi`` -- a FastAPI app whose ``POST /v1/webhooks/whatsapp`` returns 200 with a
  small JSON body and does nothing else (it does not even read the request body);
* ``antifragile-sqlite`` -- the service's real WhatsApp webhook (API only: no worker, no
  scheduler) on a fresh SQLite file with its defaults (WAL, ``synchronous=FULL``): the
  ``X-Hub-Signature-256`` check over the raw body, parsing, then the inbox record and its
  processing job in one transaction, then the 200 with the envelope;
* ``antifragile-postgres`` -- the same on PostgreSQL, in a fresh schema (the store's own
  ``schema`` option, dropped afterwards).

Every server runs on the event loop ``--loop`` names (``asyncio`` by default), never on
whichever one happens to be installed.

Every request is a distinct, correctly signed WhatsApp text-message delivery (a fresh ``wamid``),
prepared before the clock starts, so each one is a new durable record. The load generator is a
small asyncio HTTP/1.1 client over raw sockets (keep-alive connections, pre-serialised requests)
so that it costs far less CPU than the servers it measures; the server process and this process
are pinned to different CPUs when the machine has two or more.

For each contender:

1. **Maximum rate.** ``--connections`` connections send back to back for ``--duration`` seconds
   (after a one-second warm-up): requests answered per second.
2. **Latency at half of it.** Requests are started on a fixed schedule at half the maximum rate
   (open loop, so a slow answer does not delay the next request's start) for ``--duration``
   seconds; a request's latency runs from its scheduled start to its answer, so queueing in the
   server counts. p50, p99 and max.

Targets: the service at least 60% of the bare endpoint's rate; p99 at most
25 ms at half the maximum rate. Results go to ``benchmarks/results/ingest.json`` and a table to
``ingest.md`` (``ingest-quick.*`` with ``--quick``).

    python benchmarks/ingest.py                 # about 1 minute
    python benchmarks/ingest.py --quick         # a smoke run
    python benchmarks/ingest.py --url postgresql://user@host:5432/db
"""

from __future__ import annotations

import os
import sys

# The benchmarks folder holds ``queue.py``; run as a script, that folder leads sys.path and would
# shadow the standard library's ``queue``. Drop it first.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

APP_SECRET = "bench-app-secret"
PATH = "/v1/webhooks/whatsapp"
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


# -- the servers (run in a child process: ``ingest.py --serve <kind> ...``) ----------------------


def _bare_app() -> Any:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.post(PATH)
    async def webhook() -> JSONResponse:
        return JSONResponse({"success": True, "data": {"received": 1}})

    return app


def _service_app(database_url: str) -> Any:
    from antifragile.service import Settings, create_app

    settings = Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": database_url,
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": APP_SECRET,
            "ANTIFRAGILE_WHATSAPP_VERIFY_TOKEN": "bench",
            # every request comes from 127.0.0.1: the per-IP limit would throttle the load
            "ANTIFRAGILE_INBOUND_IP_RATE": "off",
        }
    )
    return create_app(settings, run_worker=False, run_scheduler=False, freeze_gc=True)


def serve(kind: str, port: int, database_url: str, cpu: int | None, loop: str) -> None:
    import uvicorn

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    app = _bare_app() if kind == "bare" else _service_app(database_url)
    # the event loop is named, never left to whether uvloop happens to be installed
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop=loop)


# -- the load generator --------------------------------------------------------------------------


def _request(body: bytes, port: int) -> bytes:
    signature = "sha256=" + hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Hub-Signature-256: {signature}\r\n\r\n"
    )
    return head.encode() + body


def _delivery(n: int) -> bytes:
    message = {
        "from": f"4477009{n % 100000:05d}",
        "id": f"wamid.{uuid.uuid4().hex}{secrets.token_hex(8)}",
        "timestamp": str(int(time.time())),
        "type": "text",
        "text": {"body": "Hi, I would like to order 3 boxes of tea please"},
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": "106540352242922",
                            },
                            "contacts": [{"profile": {"name": "Ada"}, "wa_id": message["from"]}],
                            "messages": [message],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


class _Requests:
    """Pre-built distinct signed requests, handed out one by one."""

    def __init__(self, count: int, port: int) -> None:
        self._items = [_request(_delivery(n), port) for n in range(count)]
        self._next = 0

    def take(self) -> bytes:
        item = self._items[self._next % len(self._items)]
        self._next += 1
        return item


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> _Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def send(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
                break
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass
class Figures:
    contender: str
    max_rate: float = 0.0
    errors: int = 0
    half_rate: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)


async def _closed_loop(
    port: int, requests: _Requests, connections: int, duration: float, figures: Figures
) -> float:
    conns = [await _Connection.open(port) for _ in range(connections)]
    done = 0
    stop = time.perf_counter() + duration

    async def run(conn: _Connection) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            status = await conn.send(requests.take())
            figures.statuses[str(status)] = figures.statuses.get(str(status), 0) + 1
            if status != 200:
                figures.errors += 1
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(run(conn) for conn in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return done / elapsed


async def _open_loop(
    port: int, requests: _Requests, rate: float, duration: float, figures: Figures
) -> list[float]:
    pool: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(64):
        pool.put_nowait(await _Connection.open(port))
    latencies: list[float] = []
    interval = 1.0 / rate
    total = int(rate * duration)
    start = time.perf_counter() + 0.05
    tasks: list[asyncio.Task[None]] = []

    async def one(scheduled: float, request: bytes) -> None:
        conn = await pool.get()
        try:
            status = await conn.send(request)
        finally:
            pool.put_nowait(conn)
        latencies.append(time.perf_counter() - scheduled)
        if status != 200:
            figures.errors += 1

    for i in range(total):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, requests.take())))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().close()
    return latencies


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_up(port: int) -> None:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the server on port {port} did not start")


def _pg_schema_url(url: str) -> tuple[str, str]:
    """The store URL of a fresh schema of *url*'s database (the store's own ``schema``
    option: it sets each connection's ``search_path`` itself), and the schema's name."""
    schema = f"bench_ingest_{secrets.token_hex(4)}"
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}schema={schema}", schema


def _pg_drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def _pg_up(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return True
    except Exception:
        return False


async def _load(port: int, *, duration: float, connections: int, figures: Figures) -> None:
    await _wait_up(port)
    guess = 6000
    requests = _Requests(int(guess * (duration * 2 + 2)), port)
    await _closed_loop(port, requests, connections, 1.0, Figures("warm-up"))
    figures.max_rate = await _closed_loop(port, requests, connections, duration, figures)
    figures.half_rate = figures.max_rate / 2
    latencies = await _open_loop(port, requests, figures.half_rate, duration, figures)
    latencies.sort()
    figures.p50_ms = statistics.median(latencies) * 1000
    figures.p99_ms = latencies[int(len(latencies) * 0.99) - 1] * 1000
    figures.max_ms = latencies[-1] * 1000


def measure(
    contender: str,
    database_url: str,
    *,
    duration: float,
    connections: int,
    cpus: list[int],
    pin: bool = True,
    loop: str = "asyncio",
) -> Figures:
    port = _free_port()
    kind = "bare" if contender == "bare-fastapi" else "service"
    server_cpu = cpus[0] if len(cpus) > 1 and pin else None
    cmd = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--db", database_url]
    cmd += ["--loop", loop]
    if server_cpu is not None:
        cmd += ["--cpu", str(server_cpu)]
    process = subprocess.Popen(cmd)
    figures = Figures(contender)
    try:
        asyncio.run(_load(port, duration=duration, connections=connections, figures=figures))
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        if process.poll() is None:
            process.kill()
    return figures


def _table(results: list[Figures], bare: Figures | None) -> str:
    lines = [
        "| contender | max rate (req/s) | vs bare | p50 at half (ms) | p99 at half (ms) "
        "| max (ms) | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for fig in results:
        ratio = f"{fig.max_rate / bare.max_rate:.2f}x" if bare and bare.max_rate else "-"
        lines.append(
            f"| {fig.contender} | {fig.max_rate:,.0f} | {ratio} | {fig.p50_ms:.2f} "
            f"| {fig.p99_ms:.2f} | {fig.max_ms:.1f} | {fig.errors} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1 and args.pin:
        os.sched_setaffinity(0, set(cpus[1:]))
    tmp = Path(tempfile.mkdtemp(prefix="af-ingest-"))
    contenders: list[tuple[str, str]] = [("bare-fastapi", "")]
    contenders.append(("antifragile-sqlite", f"sqlite:///{tmp / 'ingest.db'}"))
    skipped: list[str] = []
    schema = None
    if _pg_up(args.url):
        pg_url, schema = _pg_schema_url(args.url)
        contenders.append(("antifragile-postgres", pg_url))
    else:
        skipped.append("antifragile-postgres (no PostgreSQL answered)")
    results: list[Figures] = []
    try:
        for name, url in contenders:
            if args.only and name not in args.only:
                continue
            fig = measure(
                name,
                url,
                duration=args.duration,
                connections=args.connections,
                cpus=cpus,
                loop=args.loop,
            )
            print(
                f"{name}: {fig.max_rate:,.0f} req/s; at {fig.half_rate:,.0f} req/s "
                f"p50 {fig.p50_ms:.2f} ms p99 {fig.p99_ms:.2f} ms; errors {fig.errors}",
                flush=True,
            )
            results.append(fig)
    finally:
        if schema is not None:
            _pg_drop_schema(args.url, schema)
    bare = next((r for r in results if r.contender == "bare-fastapi"), None)
    table = _table(results, bare)
    stem = "ingest-quick" if args.quick else "ingest"
    if not args.pin:
        stem += "-unpinned"
    RESULTS.mkdir(exist_ok=True)
    meta = {
        "duration_s": args.duration,
        "connections": args.connections,
        "cpus": len(cpus),
        "pinned": args.pin and len(cpus) > 1,
        "python": sys.version.split()[0],
        "event_loop": args.loop,
        "skipped": skipped,
    }
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    )
    notes = "\n".join(f"- skipped: {s}" for s in skipped)
    (RESULTS / f"{stem}.md").write_text(
        f"# Inbound webhook ingest ({args.duration:g} s per phase, {args.connections} "
        f"connections, one uvicorn worker on the {args.loop} event loop, "
        f"{'server and load generator pinned to different CPUs' if args.pin else 'unpinned'})"
        f"\n\n{table}\n\n{notes}\n"
    )
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=["bare", "service"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--db", default="", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--url", default=os.environ.get("ANTIFRAGILE_BENCH_PG", DEFAULT_PG))
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the servers' event loop (default: asyncio, whether or not uvloop is installed)",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="let the server and the load generator share every CPU (pinned apart by default)",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.db, args.cpu, args.loop)
        return
    if args.quick:
        args.duration = min(args.duration, 3.0)
    run(args)


if __name__ == "__main__":
    main()
