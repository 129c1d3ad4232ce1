"""Job queues side by side: enqueue rate, drain rate and enqueue-to-start latency.

Six contenders, each on a fresh database of its own, measured one after the other:

* ``antifragile-sqlite`` -- antifragile's job queue on SQLite with its defaults (WAL,
  ``synchronous=FULL``, leases), worked by ``antifragile worker`` with its defaults;
* ``antifragile-postgres`` -- the same on PostgreSQL, in a schema of its own;
* ``huey-sqlite`` -- huey's ``SqliteHuey`` with its defaults, worked by huey's consumer with
  one worker thread (what ``huey_consumer app.huey --workers 1 --worker-type thread`` runs);
* ``procrastinate-postgres`` -- procrastinate on PostgreSQL, in a database of its own with its
  schema applied, worked by its worker with its default concurrency of 1 (what
  ``procrastinate --app=app.app worker`` runs);
* ``pgqueuer-postgres`` -- pgqueuer on asyncpg, in a database of its own with its schema
  installed, worked by ``PgQueuer.run()`` with its defaults (LISTEN/NOTIFY);
* ``dbos-postgres`` -- a DBOS Transact queue on a database of its own, enqueued through
  ``DBOSClient`` and worked by a launched DBOS process with the queue's defaults.

For each contender:

1. **Enqueue.** This process enqueues ``--jobs`` no-op jobs, one call per job (as an
   application enqueues them), while no worker runs. Rate: jobs / elapsed time.
2. **Drain.** One worker starts in a separate OS process, so that it does not share this
   process's CPU. Every job appends ``n sent started`` to a file (one ``write`` on an
   ``O_APPEND`` descriptor, the same for every contender). Rate: jobs / (the moment this process
   sees every job finished -- recorded as succeeded in the database; for huey, which records
   nothing after a task that returns ``None``, the moment every job has run -- minus the moment
   the first job started). The worker's start-up is not counted.
3. **Latency.** With that worker idle, ``--latency-jobs`` jobs are enqueued at a steady
   ``--rate`` per second, after 20 warm-up jobs that are not counted; a job's latency is its start
   time minus the time just before its enqueue call. It shows how soon an idle worker notices new
   work: a wake-up (antifragile, procrastinate, pgqueuer) or its polling interval (huey 0.1 s,
   DBOS 1 s). The enqueue call's own duration (its durable commit) is reported beside it.
   For antifragile the trickle is repeated with the worker in this process, as ``antifragile
   serve`` runs its API and its worker, woken directly by the enqueue.
4. **CPU per job.** The CPU time of this process while it enqueues, and of the worker process
   while it drains, per 1,000 jobs: unlike a rate, it hardly depends on the machine's load.

Every worker logs at WARNING (huey and procrastinate log two INFO lines per job by default;
antifragile's worker logs none). With ``--rounds`` above 1 the contenders alternate round by
round and the median of each figure is kept. Results go to ``benchmarks/results/queue.json``
and a table to ``queue.md`` (``queue-quick.*`` with ``--quick``).

    python benchmarks/queue.py                   # 10,000 jobs, 3 rounds: about 7 minutes
    python benchmarks/queue.py --quick           # a smoke run: 2,000 jobs, one round
    python benchmarks/queue.py --only huey-sqlite --only antifragile-sqlite
    python benchmarks/queue.py --url postgresql://user@host:5432/db

The PostgreSQL contenders need a server whose user may create schemas and databases; when none
answers they are skipped, and the report says so. SQLite files go to a fresh folder in the
system's temporary directory (``TMPDIR``): keep it on a real disk, since on a RAM-backed file
system a commit's ``fsync`` costs nothing.
"""

from __future__ import annotations

import os
import sys

# This file shares its name with the standard library's ``queue``. Run as a script, its folder
# leads sys.path and would shadow that module for everything imported below (asyncio's thread
# pool imports ``queue``); drop the folder first.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import asyncio
import contextlib
import json
import math
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import procrastinate
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from antifragile.errors import redact
from antifragile.jobs import JobContext, Jobs

RESULTS = Path(__file__).parent / "results"
DEFAULT_URL = os.environ.get(
    "ANTIFRAGILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
CONTENDERS = (
    "antifragile-sqlite",
    "antifragile-postgres",
    "huey-sqlite",
    "procrastinate-postgres",
    "pgqueuer-postgres",
    "dbos-postgres",
)
LABELS = {
    "antifragile-sqlite": "antifragile, SQLite",
    "antifragile-postgres": "antifragile, PostgreSQL",
    "huey-sqlite": "huey SqliteHuey",
    "procrastinate-postgres": "procrastinate, PostgreSQL",
    "pgqueuer-postgres": "pgqueuer, PostgreSQL",
    "dbos-postgres": "DBOS queue, PostgreSQL",
}
POSTGRES = frozenset(
    {"antifragile-postgres", "procrastinate-postgres", "pgqueuer-postgres", "dbos-postgres"}
)
#: how each contender is configured and worked (printed with the results)
SETUPS = {
    "antifragile-sqlite": (
        "`sqlite:///…` store defaults (WAL, synchronous=FULL); `antifragile worker` defaults "
        "(concurrency 10, batch 50, lease 30 s, heartbeat 10 s, poll 0.2 s as the fallback of "
        "its wake-ups, adaptive prefetch)"
    ),
    "antifragile-postgres": (
        "`postgresql://…?schema=…` store defaults (pool of 1-10); `antifragile worker` "
        "defaults as above"
    ),
    "huey-sqlite": (
        "`SqliteHuey(filename=…)` defaults (WAL, SQLite's default synchronous=FULL, pickle); "
        "`huey.create_consumer(workers=1, worker_type='thread').run()` (consumer defaults: "
        "poll 0.1 s, growing by 1.15 times while idle, up to 10 s)"
    ),
    "procrastinate-postgres": (
        "`PsycopgConnector` defaults, schema applied to a fresh database; "
        "`app.run_worker(concurrency=1)` (worker defaults: LISTEN/NOTIFY, poll 5 s, "
        "finished jobs kept)"
    ),
    "pgqueuer-postgres": (
        "schema installed by `Queries.install()` in a fresh database; enqueue through "
        "`Queries(AsyncpgDriver(conn)).enqueue(...)`; worker `PgQueuer.from_asyncpg_connection` "
        "with `run()` defaults (batch 10, LISTEN/NOTIFY, dequeue timeout 30 s)"
    ),
    "dbos-postgres": (
        "`DBOS(config={name, system_database_url})` on a fresh database; enqueue through "
        "`DBOSClient.enqueue_async` to a queue registered with its defaults (polling 1 s); "
        "the worker process runs `DBOS.launch()` with the job as a workflow"
    ),
}
WARMUP_JOBS = 20
#: the targets: antifragile's rate over its peer's on the same database (enqueue and drain)
TARGETS = {
    "sqlite enqueue": ("antifragile-sqlite", "huey-sqlite", "enqueue_per_s", 1.2),
    "sqlite drain": ("antifragile-sqlite", "huey-sqlite", "drain_per_s", 3.0),
    "postgres enqueue": ("antifragile-postgres", "pgqueuer-postgres", "enqueue_per_s", 1.2),
    "postgres drain": ("antifragile-postgres", "pgqueuer-postgres", "drain_per_s", 1.5),
}
#: antifragile's latencies against their targets: (contender, figure, limit in ms, what)
LATENCY_TARGETS = (
    ("antifragile-postgres", "latency_p50_ms", 5.0, "p50, worker in another process"),
    ("antifragile-postgres", "latency_p99_ms", 25.0, "p99, worker in another process"),
    ("antifragile-sqlite", "latency_p50_ms", 20.0, "p50, worker in another process"),
    ("antifragile-sqlite", "latency_local_p50_ms", 5.0, "p50, worker in this process"),
)
POLL = 0.01  # how often this process looks at the record file and the database (seconds)
STALL = 60.0  # give up when no job has started for this long (seconds)


# -- the job every contender runs ---------------------------------------------------------------

_record_fd: int | None = None


def _record(n: int, sent: float) -> None:
    """What the no-op job does: note its number, its enqueue time and its start time."""
    started = time.time()
    assert _record_fd is not None, "jobs run only in a worker process"
    os.write(_record_fd, f"{n} {sent!r} {started!r}\n".encode())


async def _antifragile_noop(ctx: JobContext, n: int, sent: float) -> None:
    _record(n, sent)


def _huey_noop(n: int, sent: float) -> None:
    _record(n, sent)


async def _procrastinate_noop(n: int, sent: float) -> None:
    _record(n, sent)


async def _pgqueuer_noop(job: Any) -> None:
    n, sent = json.loads(job.payload)
    _record(n, sent)


def _dbos_noop(n: int, sent: float) -> None:
    _record(n, sent)


def antifragile_jobs(url: str) -> Jobs:
    jobs = Jobs(database_url=url)
    jobs.job("noop")(_antifragile_noop)
    return jobs


def huey_app(path: str) -> tuple[Any, Any]:
    """``(huey, noop task)`` on the SQLite file *path*."""
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=path)
    return huey, huey.task(name="noop")(_huey_noop)


def procrastinate_app(conninfo: str) -> tuple[procrastinate.App, Any]:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    return app, app.task(name="noop")(_procrastinate_noop)


# -- the worker process -------------------------------------------------------------------------

#: the Jobs object ``antifragile worker --app __main__:WORKER_JOBS`` loads in a worker process
WORKER_JOBS: Jobs | None = None


def serve(key: str, target: str, record: str) -> None:
    """Run *key*'s worker on *target* until SIGTERM, recording every job in *record*."""
    global _record_fd, WORKER_JOBS
    import logging

    _record_fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if key.startswith("antifragile"):
        from antifragile.cli._app import app as cli

        WORKER_JOBS = antifragile_jobs(target)
        cli(["worker", "--app", "__main__:WORKER_JOBS", "--log-level", "WARNING"])
    elif key == "huey-sqlite":
        logging.basicConfig(level=logging.WARNING)
        huey, _ = huey_app(target)
        huey.create_consumer(workers=1, worker_type="thread").run()
    elif key == "procrastinate-postgres":
        logging.basicConfig(level=logging.WARNING)
        app, _ = procrastinate_app(target)
        app.run_worker(concurrency=1)
    elif key == "pgqueuer-postgres":
        logging.basicConfig(level=logging.WARNING)
        asyncio.run(_pgqueuer_worker(target))
    elif key == "dbos-postgres":
        logging.basicConfig(level=logging.WARNING)
        _dbos_worker(target)
    else:
        raise SystemExit(f"unknown contender {key!r}")


async def _pgqueuer_worker(dsn: str) -> None:
    import asyncpg
    from pgqueuer import PgQueuer

    conn = await asyncpg.connect(dsn)
    pgq = PgQueuer.from_asyncpg_connection(conn)
    pgq.entrypoint("noop")(_pgqueuer_noop)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, pgq.shutdown.set)
    try:
        await pgq.run()
    finally:
        await conn.close()


def _dbos_worker(url: str) -> None:
    from dbos import DBOS

    DBOS(config={"name": "bench", "system_database_url": url})
    DBOS.workflow(name="noop")(_dbos_noop)
    DBOS.launch()
    DBOS.register_queue("bench")  # its defaults; registering needs the launched system database
    stop = asyncio.Event()

    async def wait() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    try:
        asyncio.run(wait())
    finally:
        DBOS.destroy()


# -- the contenders, from the measuring side ----------------------------------------------------


class Contender:
    """One queue on a fresh database: enqueue from here, count what finished."""

    key: str
    target: str  # what the worker process opens

    async def setup(self, scratch: Path) -> None:
        raise NotImplementedError

    async def enqueue(self, n: int, sent: float) -> None:
        raise NotImplementedError

    async def finished(self, records: int) -> int:
        """Jobs recorded as done (*records*: how many have run, per the record file)."""
        raise NotImplementedError

    async def teardown(self) -> None:
        raise NotImplementedError

    def local_jobs(self) -> Jobs | None:
        """The jobs a worker in this process can run (antifragile only), else None."""
        return None


class AntifragileSQLite(Contender):
    key = "antifragile-sqlite"

    async def setup(self, scratch: Path) -> None:
        self.target = f"sqlite:///{scratch / 'antifragile.db'}"
        self.jobs = antifragile_jobs(self.target)
        self.noop = self.jobs.registry["noop"]
        await self.jobs.open()  # creates the file and its tables

    async def enqueue(self, n: int, sent: float) -> None:
        await self.noop.enqueue(n, sent)

    async def finished(self, records: int) -> int:
        return sum(s.counts.get("succeeded", 0) for s in await self.jobs.stats())

    def local_jobs(self) -> Jobs | None:
        return self.jobs

    async def teardown(self) -> None:
        await self.jobs.close()


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


class AntifragilePostgres(AntifragileSQLite):
    key = "antifragile-postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self.schema = f"bench_queue_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def setup(self, scratch: Path) -> None:
        self.target = _with_query(self.url, schema=self.schema)
        self.jobs = antifragile_jobs(self.target)
        self.noop = self.jobs.registry["noop"]
        await self.jobs.open()  # creates the schema and its tables

    async def teardown(self) -> None:
        await self.jobs.close()
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )


class HueySQLite(Contender):
    key = "huey-sqlite"

    async def setup(self, scratch: Path) -> None:
        self.target = str(scratch / "huey.db")
        self.huey, self.noop = huey_app(self.target)  # creates the file and its tables
        self.synchronous = self.huey.storage.conn.execute("PRAGMA synchronous").fetchone()[0]

    async def enqueue(self, n: int, sent: float) -> None:
        self.noop(n, sent)  # calling a huey task enqueues it

    async def finished(self, records: int) -> int:
        return records  # nothing is written once a task that returns None has run

    async def teardown(self) -> None:
        self.huey.storage.close()


class ProcrastinatePostgres(Contender):
    key = "procrastinate-postgres"

    def __init__(self, url: str) -> None:
        self.url = url
        self.database = f"bench_queue_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.app: procrastinate.App | None = None

    async def setup(self, scratch: Path) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        self.target = make_conninfo(self.url, dbname=self.database)
        self.app, self.noop = procrastinate_app(self.target)
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()
        self.conn = await psycopg.AsyncConnection.connect(self.target, autocommit=True)

    async def enqueue(self, n: int, sent: float) -> None:
        await self.noop.defer_async(n=n, sent=sent)

    async def finished(self, records: int) -> int:
        assert self.conn is not None
        cursor = await self.conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def teardown(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        if self.app is not None:
            await self.app.close_async()
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.database)
                )
            )


class _FreshDatabase(Contender):
    """A contender on a PostgreSQL database of its own, dropped afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.database = f"bench_queue_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.target = make_conninfo(self.url, dbname=self.database)

    async def create(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    async def drop(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.database)
                )
            )

    def dsn(self) -> str:
        """The database as a ``postgresql://`` URL."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=f"/{self.database}"))


class PgqueuerPostgres(_FreshDatabase):
    key = "pgqueuer-postgres"

    async def setup(self, scratch: Path) -> None:
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        await self.create()
        self.target = self.dsn()
        self.conn = await asyncpg.connect(self.target)
        self.queries = Queries(AsyncpgDriver(self.conn))
        await self.queries.install()
        self.enqueued = 0

    async def enqueue(self, n: int, sent: float) -> None:
        await self.queries.enqueue("noop", json.dumps([n, sent]).encode())
        self.enqueued += 1

    async def finished(self, records: int) -> int:
        waiting = await self.conn.fetchval("SELECT count(*) FROM pgqueuer")
        return self.enqueued - int(waiting)

    async def teardown(self) -> None:
        with contextlib.suppress(Exception):
            await self.conn.close()
        await self.drop()


class DbosPostgres(_FreshDatabase):
    key = "dbos-postgres"

    async def setup(self, scratch: Path) -> None:
        from dbos import DBOSClient

        await self.create()
        self.target = self.dsn()
        # DBOS's own command creates its system tables (the client needs them before the worker)
        dbos = Path(sys.executable).with_name("dbos")
        migrate = await asyncio.create_subprocess_exec(
            str(dbos),
            *("migrate", "--sys-db-url", self.target),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if await migrate.wait():
            raise RuntimeError("dbos migrate failed")
        self.client = DBOSClient(system_database_url=self.target)
        self.conn = await psycopg.AsyncConnection.connect(self.target, autocommit=True)

    async def enqueue(self, n: int, sent: float) -> None:
        await self.client.enqueue_async({"queue_name": "bench", "workflow_name": "noop"}, n, sent)

    async def finished(self, records: int) -> int:
        cursor = await self.conn.execute(
            "SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'"
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def teardown(self) -> None:
        with contextlib.suppress(Exception):
            await self.conn.close()
        with contextlib.suppress(Exception):
            self.client.destroy()
        await self.drop()


def make(key: str, url: str) -> Contender:
    if key == "antifragile-sqlite":
        return AntifragileSQLite()
    if key == "antifragile-postgres":
        return AntifragilePostgres(url)
    if key == "huey-sqlite":
        return HueySQLite()
    if key == "pgqueuer-postgres":
        return PgqueuerPostgres(url)
    if key == "dbos-postgres":
        return DbosPostgres(url)
    return ProcrastinatePostgres(url)


# -- measuring ----------------------------------------------------------------------------------


@dataclass
class Records:
    """The record file the worker appends to, read as it grows."""

    path: Path
    offset: int = 0
    partial: bytes = b""
    rows: list[tuple[int, float, float]] = field(default_factory=list)

    def poll(self) -> int:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            n, sent, started = line.split()
            self.rows.append((int(n), float(sent), float(started)))
        return len(self.rows)


@dataclass
class Round:
    enqueue_per_s: float
    drain_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    duplicates: int
    details: dict[str, Any]
    #: (p50, p99) with the worker in this process, as ``antifragile serve`` runs it (or None)
    local_latency: tuple[float, float] | None = None


def _percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) process *pid* has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def _wait_for(
    what: str,
    check: Callable[[], Awaitable[bool]],
    records: Records,
    worker: asyncio.subprocess.Process,
    log: Path,
) -> None:
    """Poll *check* until it holds; fail when the worker exits or no job starts for STALL s."""
    seen, since = len(records.rows), time.monotonic()
    while not await check():
        if worker.returncode is not None:
            tail = _tail(log)
            raise RuntimeError(f"the worker exited ({worker.returncode}) {what}:\n{tail}")
        if len(records.rows) != seen:
            seen, since = len(records.rows), time.monotonic()
        elif time.monotonic() - since > STALL:
            raise RuntimeError(f"no job started for {STALL:g}s {what} ({seen} recorded)")
        await asyncio.sleep(POLL)


async def _trickle(contender: Contender, first: int, count: int, rate: float) -> list[float]:
    """Enqueue jobs *first* .. *first* + *count* - 1 at a steady *rate* per second; how long
    each enqueue call took (ms) -- the durable commit is part of every job's latency."""
    calls: list[float] = []
    t0 = time.perf_counter()
    for i, n in enumerate(range(first, first + count)):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        began = time.perf_counter()
        await contender.enqueue(n, time.time())
        calls.append((time.perf_counter() - began) * 1000)
    return calls


async def local_latency(
    contender: Contender, jobs: Jobs, scratch: Path, latency_jobs: int, rate: float
) -> list[float]:
    """Latencies (ms) with an idle worker in this very process -- how ``antifragile serve``
    runs its API and its worker -- woken directly by the enqueue."""
    global _record_fd
    record = scratch / "records-local.txt"
    record.touch()
    records = Records(record)
    _record_fd = os.open(record, os.O_WRONLY | os.O_APPEND)
    first = 1_000_000_000  # numbers of their own, beside the jobs of the other phases
    worker = jobs.worker()  # the worker's defaults, as `antifragile serve` runs it
    task = asyncio.create_task(worker.run())
    try:
        await _trickle(contender, first, WARMUP_JOBS + latency_jobs, rate)
        seen, since = 0, time.monotonic()
        while records.poll() < WARMUP_JOBS + latency_jobs:
            if task.done():
                task.result()
                raise RuntimeError("the in-process worker stopped")
            if len(records.rows) != seen:
                seen, since = len(records.rows), time.monotonic()
            elif time.monotonic() - since > STALL:
                raise RuntimeError(f"no job started for {STALL:g}s in the in-process run")
            await asyncio.sleep(POLL)
    finally:
        worker.stop()
        await task
        os.close(_record_fd)
        _record_fd = None
    return [
        (started - sent) * 1000 for n, sent, started in records.rows if n >= first + WARMUP_JOBS
    ]


async def run_contender(contender: Contender, jobs: int, latency_jobs: int, rate: float) -> Round:
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-{contender.key}-"))
    worker: asyncio.subprocess.Process | None = None
    try:
        await contender.setup(scratch)
        # 1. enqueue, no worker running
        started = time.perf_counter()
        cpu_before = time.process_time()
        for n in range(jobs):
            await contender.enqueue(n, time.time())
        enqueue_s = time.perf_counter() - started
        enqueue_cpu = time.process_time() - cpu_before

        # 2. drain, by one worker in its own process
        record = scratch / "records.txt"
        record.touch()
        records = Records(record)
        log = scratch / "worker.log"
        with log.open("wb") as out:
            worker = await asyncio.create_subprocess_exec(
                *(sys.executable, __file__, "--serve", contender.key),
                *("--target", contender.target, "--record", str(record)),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        first_seen: list[tuple[int, float]] = []  # (jobs run, worker CPU) when work began

        async def all_ran() -> bool:
            ran = records.poll()
            if ran and not first_seen and worker is not None:
                first_seen.append((ran, _cpu_seconds(worker.pid)))
            return ran >= jobs

        async def all_done() -> bool:
            return await contender.finished(len(records.rows)) >= jobs

        await _wait_for("while draining", all_ran, records, worker, log)
        await _wait_for("before recording every job", all_done, records, worker, log)
        done_at = time.time()
        drain_cpu = _cpu_seconds(worker.pid) - first_seen[0][1]
        drained = jobs - first_seen[0][0]
        first_start = min(r[2] for r in records.rows)
        drain_s = done_at - first_start

        # 3. latency, the worker idle: a steady trickle of jobs
        total = jobs + WARMUP_JOBS + latency_jobs
        calls = await _trickle(contender, jobs, WARMUP_JOBS + latency_jobs, rate)

        async def all_started() -> bool:
            return records.poll() >= total

        await _wait_for("during the latency run", all_started, records, worker, log)
        measured = [r for r in records.rows if r[0] >= jobs + WARMUP_JOBS]
        latencies = [(started - sent) * 1000 for _, sent, started in measured]
        numbers = [r[0] for r in records.rows]
        details: dict[str, Any] = {
            "enqueue_seconds": enqueue_s,
            "drain_seconds": drain_s,
            "latency_mean_ms": statistics.fmean(latencies),
            "enqueue_call_p50_ms": _percentile(calls[WARMUP_JOBS:], 50),
        }
        cpu = {
            "enqueue_cpu_ms_per_1000": enqueue_cpu / jobs * 1e6,
            "drain_cpu_ms_per_1000": drain_cpu / max(drained, 1) * 1e6,
        }
        if isinstance(contender, HueySQLite):
            details["sqlite_synchronous"] = contender.synchronous

        # 4. antifragile: latency again with the worker in this process (as `serve` runs it)
        local: tuple[float, float] | None = None
        local_jobs = contender.local_jobs()
        if local_jobs is not None:
            await _stop(worker)
            in_process = await local_latency(contender, local_jobs, scratch, latency_jobs, rate)
            local = (_percentile(in_process, 50), _percentile(in_process, 99))
        return Round(
            enqueue_per_s=jobs / enqueue_s,
            drain_per_s=jobs / drain_s,
            latency_p50_ms=_percentile(latencies, 50),
            latency_p99_ms=_percentile(latencies, 99),
            latency_max_ms=max(latencies),
            duplicates=len(numbers) - len(set(numbers)),
            details={**details, **cpu},
            local_latency=local,
        )
    finally:
        if worker is not None:
            await _stop(worker)
        with contextlib.suppress(Exception):
            await contender.teardown()
        shutil.rmtree(scratch, ignore_errors=True)


async def _stop(worker: asyncio.subprocess.Process) -> None:
    """Stop a worker process (SIGTERM, then SIGKILL after 30 s)."""
    if worker.returncode is not None:
        return
    worker.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(worker.wait(), 30)
    except TimeoutError:
        worker.kill()
        await worker.wait()


async def postgres_info(url: str) -> dict[str, str] | None:
    """The server's version and durability settings, or ``None`` when it does not answer."""
    try:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=5
        ) as conn:
            info: dict[str, str] = {}
            for setting in ("server_version", "fsync", "synchronous_commit", "wal_sync_method"):
                cursor = await conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting)))
                row = await cursor.fetchone()
                info[setting] = str(row[0]) if row else "?"
            return info
    except psycopg.Error as exc:
        print(f"PostgreSQL at {redact(url)} does not answer ({exc}); skipping it", file=sys.stderr)
        return None


async def measure(
    keys: list[str], url: str, jobs: int, latency_jobs: int, rate: float, rounds: int
) -> dict[str, Any]:
    pg = await postgres_info(url) if POSTGRES & set(keys) else None
    if pg is None:
        keys = [k for k in keys if k not in POSTGRES]
    per_key: dict[str, list[Round]] = {k: [] for k in keys}
    for r in range(rounds):
        order = keys if r % 2 == 0 else keys[::-1]
        for key in order:
            print(f"round {r + 1}/{rounds}: {LABELS[key]} ...", file=sys.stderr, flush=True)
            result = await run_contender(make(key, url), jobs, latency_jobs, rate)
            per_key[key].append(result)
            print(
                f"  enqueue {result.enqueue_per_s:,.0f}/s, drain {result.drain_per_s:,.0f}/s, "
                f"latency p50 {result.latency_p50_ms:.1f} ms, p99 {result.latency_p99_ms:.1f} ms"
                + (
                    ""
                    if result.local_latency is None
                    else f"; in one process p50 {result.local_latency[0]:.1f} ms, "
                    f"p99 {result.local_latency[1]:.1f} ms"
                ),
                file=sys.stderr,
                flush=True,
            )
    results: dict[str, Any] = {}
    for key, runs in per_key.items():
        results[key] = {
            "label": LABELS[key],
            "setup": SETUPS[key],
            "enqueue_per_s": statistics.median(x.enqueue_per_s for x in runs),
            "drain_per_s": statistics.median(x.drain_per_s for x in runs),
            "latency_p50_ms": statistics.median(x.latency_p50_ms for x in runs),
            "latency_p99_ms": statistics.median(x.latency_p99_ms for x in runs),
            "latency_max_ms": max(x.latency_max_ms for x in runs),
            "enqueue_call_p50_ms": statistics.median(
                x.details["enqueue_call_p50_ms"] for x in runs
            ),
            "enqueue_cpu_ms_per_1000": statistics.median(
                x.details["enqueue_cpu_ms_per_1000"] for x in runs
            ),
            "drain_cpu_ms_per_1000": statistics.median(
                x.details["drain_cpu_ms_per_1000"] for x in runs
            ),
            "duplicates": sum(x.duplicates for x in runs),
            **_local_medians(runs),
            "rounds": [
                {
                    "enqueue_per_s": x.enqueue_per_s,
                    "drain_per_s": x.drain_per_s,
                    "latency_p50_ms": x.latency_p50_ms,
                    "latency_p99_ms": x.latency_p99_ms,
                    **_local_medians([x]),
                    **x.details,
                }
                for x in runs
            ],
        }
    return {"postgres": pg, "results": results}


def _local_medians(runs: list[Round]) -> dict[str, float]:
    """The in-process latency figures of *runs* (medians), when they were measured."""
    local = [x.local_latency for x in runs if x.local_latency is not None]
    if not local:
        return {}
    return {
        "latency_local_p50_ms": statistics.median(p50 for p50, _ in local),
        "latency_local_p99_ms": statistics.median(p99 for _, p99 in local),
    }


def latency_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    """antifragile's latencies against their targets (each the median over rounds)."""
    checks: list[dict[str, Any]] = []
    for key, figure, target, what in LATENCY_TARGETS:
        result = results.get(key)
        if result is None or figure not in result:
            continue
        value = result[figure]
        checks.append(
            {"contender": key, "figure": figure, "what": what, "value": value, "target": target}
            | {"met": value <= target}
        )
    return checks


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """antifragile's rates over its peer's on the same database, against the targets (the
    median round's, and the worst round's, since the contenders alternate round by round)."""
    out: dict[str, Any] = {}
    for name, (ours, theirs, metric, target) in TARGETS.items():
        if ours in results and theirs in results:
            ratio = results[ours][metric] / results[theirs][metric]
            per_round = [
                a[metric] / b[metric]
                for a, b in zip(results[ours]["rounds"], results[theirs]["rounds"], strict=False)
            ]
            out[name] = {
                "ours": ours,
                "theirs": theirs,
                "metric": metric,
                "ratio": ratio,
                "worst_round": min(per_round, default=ratio),
                "target": target,
                "met": ratio >= target,
            }
    return out


def report(payload: dict[str, Any]) -> str:
    results = payload["results"]
    pg = payload.get("postgres")
    lines = [
        "## Job queues: enqueue, drain and latency",
        "",
        f"{payload['jobs']:,} no-op jobs per contender, each on a fresh database; one worker "
        "process, started after the jobs were enqueued; median of "
        f"{payload['rounds']} round(s). Latency: {payload['latency_jobs']:,} jobs enqueued at "
        f"{payload['rate']:g}/s to an idle worker (after {WARMUP_JOBS} warm-up jobs).  ",
        f"Python {payload['python']}, SQLite {payload['sqlite']}"
        + (f", PostgreSQL {pg['server_version']}" if pg else "")
        + f", {payload['cpus']} CPUs ({payload['machine']}), shared by the worker, this process"
        + (" and the PostgreSQL server." if pg else "."),
        "",
        "| contender | enqueue jobs/s | enqueue CPU ms/1k | drain jobs/s | drain CPU ms/1k "
        "| latency p50 ms | latency p99 ms | of which the enqueue call, p50 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results.values():
        lines.append(
            f"| {result['label']} | {result['enqueue_per_s']:,.0f} | "
            f"{result['enqueue_cpu_ms_per_1000']:,.0f} | "
            f"{result['drain_per_s']:,.0f} | {result['drain_cpu_ms_per_1000']:,.0f} | "
            f"{result['latency_p50_ms']:.1f} | {result['latency_p99_ms']:.1f} | "
            f"{result['enqueue_call_p50_ms']:.1f} |"
        )
    if payload["ratios"]:
        lines += ["", "antifragile over its peer on the same database (this run):", ""]
        for r in payload["ratios"].values():
            verdict = "met" if r["met"] else "**missed**"
            what = "enqueue" if r["metric"] == "enqueue_per_s" else "drain"
            lines.append(
                f"- {what}: {LABELS[r['ours']]} {r['ratio']:.2f}x {LABELS[r['theirs']]} "
                f"(worst round {r['worst_round']:.2f}x; target ≥ {r['target']:g}x: {verdict})"
            )
    local = [r for r in results.values() if "latency_local_p50_ms" in r]
    if local:
        lines += [
            "",
            "Latency with the worker in the enqueuing process (as `antifragile serve` runs its "
            "API and its worker), same trickle:",
            "",
            "| contender | latency p50 ms | latency p99 ms |",
            "|---|---:|---:|",
        ]
        for r in local:
            lines.append(
                f"| {r['label']} | {r['latency_local_p50_ms']:.1f} | "
                f"{r['latency_local_p99_ms']:.1f} |"
            )
    if payload.get("latency_checks"):
        lines += ["", "antifragile's enqueue-to-start latency against its targets:", ""]
        for c in payload["latency_checks"]:
            verdict = "met" if c["met"] else "**missed**"
            lines.append(
                f"- {LABELS[c['contender']]}, {c['what']}: {c['value']:.1f} ms "
                f"(target ≤ {c['target']:g} ms: {verdict})"
            )
    if payload.get("load"):
        lines += ["", f"Load average when the run began and ended: {payload['load']}."]
    lines += [
        "",
        "Enqueue: one call per job, one transaction each. Drain: from the first job's start to "
        "every job recorded as finished. CPU per 1,000 jobs: the enqueuing process (every "
        "thread) while it enqueues, and the worker process while it drains (the database "
        "server's own CPU is not counted); unlike the rates, it hardly depends on the "
        "machine's load. Latency shows how an idle worker learns of new jobs: antifragile, "
        "procrastinate and pgqueuer are woken (LISTEN/NOTIFY on PostgreSQL; on SQLite "
        "antifragile's datagram wake-up), huey polls (every 0.1 s by default), DBOS polls its "
        "queue (every 1 s by default).",
        "",
        "How each contender runs:",
        "",
    ]
    for result in results.values():
        lines.append(f"- {result['label']}: {result['setup']}")
    if pg:
        lines += [
            "",
            f"PostgreSQL settings: fsync={pg['fsync']}, "
            f"synchronous_commit={pg['synchronous_commit']}, "
            f"wal_sync_method={pg['wal_sync_method']}.",
        ]
    if payload.get("skipped"):
        lines += ["", f"Skipped (no PostgreSQL server answered): {', '.join(payload['skipped'])}."]
    duplicated = {k: r["duplicates"] for k, r in results.items() if r["duplicates"]}
    if duplicated:
        lines += ["", f"Jobs that ran more than once: {duplicated}."]
    return "\n".join(lines) + "\n"


def _load() -> str:
    """The machine's load averages over 1, 5 and 15 minutes."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def _versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """The installed version of each package (``None``: not installed)."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL URL (scratch schema/db)")
    parser.add_argument("--jobs", type=int, help="jobs to enqueue and drain [10000; quick 2000]")
    parser.add_argument("--latency-jobs", type=int, help="jobs of the latency run [1000; 200]")
    parser.add_argument("--rate", type=float, default=50.0, help="latency run, jobs per second")
    parser.add_argument("--rounds", type=int, help="rounds per contender [3; quick 1]")
    parser.add_argument("--only", action="append", choices=CONTENDERS, help="repeatable")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--serve", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--record", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.target, args.record)
        return
    jobs = args.jobs or (2_000 if args.quick else 10_000)
    latency_jobs = args.latency_jobs or (200 if args.quick else 1_000)
    rounds = args.rounds or (1 if args.quick else 3)
    keys = [k for k in CONTENDERS if not args.only or k in args.only]

    load_before = _load()
    measured = asyncio.run(measure(keys, args.url, jobs, latency_jobs, args.rate, rounds))
    results = measured["results"]
    payload: dict[str, Any] = {
        "benchmark": "queue",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": measured["postgres"],
        "versions": _versions(
            ("antifragile", "huey", "procrastinate", "psycopg", "asyncpg", "pgqueuer", "dbos")
        ),
        "jobs": jobs,
        "latency_jobs": latency_jobs,
        "rate": args.rate,
        "rounds": rounds,
        "skipped": [k for k in keys if k not in results],
        "results": results,
        "ratios": ratios(results),
        "latency_checks": latency_checks(results),
        "load": f"{load_before} before, {_load()} after",
    }
    table = report(payload)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (args.output / f"queue{suffix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.output / f"queue{suffix}.md").write_text(table)


if __name__ == "__main__":
    main()
