"""Happy-path cost of a circuit breaker whose state several processes share, beside peers.

Contenders, side by side in one run:

* ``CircuitBreaker`` -- antifragile's in-memory breaker (the baseline);
* ``SharedCircuitBreaker`` over Redis, PostgreSQL and SQLite;
* pybreaker with its Redis storage (``CircuitRedisStorage``), sync, a no-op called through it.

antifragile's breakers are driven the way the async pipeline drives them on a successful call --
read the snapshot, take the token when it is closed (``aacquire`` otherwise), call
``on_success`` -- inside a running event loop that gets control every 1000 calls, so the shared
breakers' batched writes really happen during the run. Contenders are interleaved round by
round so that drift of a noisy machine hits them all alike; the figure kept is the median of
the rounds. "net" subtracts the cost of the same loop with no breaker in it.

Round trips are counted by the servers themselves:

* Redis: the commands clients sent to private ``redis-server`` processes started for the
  run -- one for antifragile, one for pybreaker, so no other client is counted -- read from
  the slow log with a zero threshold. (``INFO commandstats`` is not used: it also counts the
  commands each Lua script runs inside its single round trip, so one ``EVALSHA`` shows as
  four or five "calls".) Opening and closing the store, measured alone, is subtracted;
* PostgreSQL: ``pg_stat_database.xact_commit`` of a database created for the run on a private
  server started for it (every store operation is one autocommit statement, so one
  transaction; on a shared server idle backends also commit empty transactions to catch up
  with other clients' catalog changes, which would be counted). The store gets one pool
  connection, whose statistics are forced up to date before each reading
  (``pg_stat_force_next_flush()``, PostgreSQL 15+; that statement's own transaction is
  subtracted) -- without it a backend reports only when idle a second after its last report
  or when it exits, and the counts would depend on timing. The count includes the exchanges
  in which psycopg prepares a statement it has run five times (one per statement and
  parameter types, each a real round trip), so a short run shows a few more than the store
  operations; those are in the JSON file too, counted on the client side;
* SQLite (no server): the operations the store executes, counted by a wrapper around its
  breaker store (each is one transaction in the store's thread).

A second phase calls the three shared breakers at a steady 100 calls per second each for a
few seconds: round trips per call then show what a busy process pays (the batch costs about
two round trips per ``sync_interval``, whatever the call rate). Results go to
``benchmarks/results/shared_state.json`` and a table to ``benchmarks/results/shared_state.md``.

    python benchmarks/shared_state.py            # about twenty seconds
    python benchmarks/shared_state.py --quick    # a smoke run
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
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pybreaker
import redis

import antifragile
from antifragile import CircuitBreaker, SharedCircuitBreaker
from antifragile.policies import CircuitState
from antifragile.stores import BreakerRecord, BreakerStore, Store, WindowTotals, open_store

RESULTS = Path(__file__).parent / "results"
POSTGRES_URL = os.environ.get(
    "ANTIFRAGILE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BENCH_DATABASE = "antifragile_bench_shared_state"
BATCH = 1000  # calls between two turns of the event loop
PACE = 100.0  # calls per second in the paced phase
SHARED = ("Redis", "PostgreSQL", "SQLite")
IN_MEMORY = "CircuitBreaker (in memory)"
PYBREAKER = "pybreaker + CircuitRedisStorage"


# -- driving --------------------------------------------------------------------------------


async def drive(breaker: CircuitBreaker, n: int) -> float:
    """Microseconds per successful call through the async pipeline's breaker layer."""
    snapshot, ok, aacquire = breaker.holder.get, breaker.on_success, breaker.aacquire
    closed = CircuitState.CLOSED
    start = time.perf_counter_ns()
    for _ in range(n // BATCH):
        for _ in range(BATCH):
            snap = snapshot()
            token = snap.generation if snap.state is closed else await aacquire()
            ok(token, 0.0)
        await asyncio.sleep(0)
    return (time.perf_counter_ns() - start) / n / 1000.0


async def drive_loop_only(n: int) -> float:
    """The same loop with no breaker in it: what "net" figures subtract."""
    snap = CircuitBreaker().snapshot
    closed = CircuitState.CLOSED
    start = time.perf_counter_ns()
    for _ in range(n // BATCH):
        for _ in range(BATCH):
            token = snap.generation if snap.state is closed else -1
            _ = token
        await asyncio.sleep(0)
    return (time.perf_counter_ns() - start) / n / 1000.0


def _noop() -> int:
    return 1


def drive_pybreaker(breaker: Any, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        breaker.call(_noop)
    return (time.perf_counter_ns() - start) / n / 1000.0


async def paced(breaker: CircuitBreaker, seconds: float) -> int:
    """Successful calls at PACE per second for *seconds*; how many were made."""
    snapshot, ok, aacquire = breaker.holder.get, breaker.on_success, breaker.aacquire
    closed = CircuitState.CLOSED
    calls = 0
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        snap = snapshot()
        token = snap.generation if snap.state is closed else await aacquire()
        ok(token, 0.0)
        calls += 1
        await asyncio.sleep(max(0.0, calls / PACE - elapsed))
    return calls


# -- counting round trips --------------------------------------------------------------------


class CountingBreakerStore:
    """Forwards every breaker-store operation, counting them."""

    def __init__(self, inner: BreakerStore) -> None:
        self.inner = inner
        self.operations = 0

    async def load(self, name: str) -> BreakerRecord:
        self.operations += 1
        return await self.inner.load(name)

    async def compare_and_set(self, expected: BreakerRecord, new: BreakerRecord) -> BreakerRecord:
        self.operations += 1
        return await self.inner.compare_and_set(expected, new)

    async def add_outcomes(
        self, name: str, *, second: int, calls: int, failures: int, slow: int, window: int
    ) -> WindowTotals:
        self.operations += 1
        return await self.inner.add_outcomes(
            name, second=second, calls=calls, failures=failures, slow=slow, window=window
        )

    async def reset_window(self, name: str) -> None:
        self.operations += 1
        await self.inner.reset_window(name)

    async def add_probe_result(
        self, name: str, *, generation: int, failure: bool, slow: bool
    ) -> WindowTotals:
        self.operations += 1
        return await self.inner.add_probe_result(
            name, generation=generation, failure=failure, slow=slow
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[RedisRoundTrips]:
    """A private redis-server for the run (its commandstats count only our commands)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is needed (a private one keeps the counts clean)")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(200):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.025)
        client.close()
        counter = RedisRoundTrips(url)
        try:
            yield counter
        finally:
            counter.close()
    finally:
        process.terminate()
        process.wait(10)


class RedisRoundTrips:
    """Commands clients sent to a private Redis, from its slow log with a zero threshold.

    ``INFO commandstats`` would also count every command a Lua script runs inside its one round
    trip; the slow log tells them apart (their client address is ``?:0``). The measuring
    connection's own SLOWLOG, CONFIG and INFO commands are left out.
    """

    _OWN = (b"SLOWLOG", b"CONFIG", b"INFO")

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url)
        self.client.config_set("slowlog-log-slower-than", 0)
        self.client.config_set("slowlog-max-len", 10_000_000)
        self.client.slowlog_reset()
        self.total = 0

    def count(self) -> int:
        """Commands sent so far (the log is emptied as it is read)."""
        entries: list[dict[str, Any]] = self.client.slowlog_get(-1)
        self.client.slowlog_reset()
        self.total += sum(
            1
            for entry in entries
            if entry["client_address"] != b"?:0" and not entry["command"].startswith(self._OWN)
        )
        return self.total

    def close(self) -> None:
        self.client.close()


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _postgres_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, if this machine has them."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        folder = Path(out.stdout.strip())
        if (folder / "initdb").exists():
            return folder
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@contextlib.contextmanager
def postgres_server() -> Iterator[str | None]:
    """A private PostgreSQL for the run; yields its URL, or ``None`` when it cannot be made.

    On a shared server ``xact_commit`` also counts what has nothing to do with us: an idle
    backend that falls behind on catalog invalidations (other clients creating and dropping
    tables) catches up in an empty transaction of its own. A private instance has no other
    client and runs without autovacuum.
    """
    binaries = _postgres_binaries()
    if binaries is None:
        yield None
        return
    as_postgres: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="antifragile-bench-pg-"))
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()
    initdb = ["-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]
    subprocess.run(
        [*as_postgres, str(binaries / "initdb"), *initdb],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = ["-D", str(data), "-p", str(port), "-k", str(folder)]
    settings += ["-c", "listen_addresses=127.0.0.1", "-c", "autovacuum=off"]
    server = subprocess.Popen(
        [*as_postgres, str(binaries / "postgres"), *settings],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    try:
        for _ in range(400):
            with contextlib.suppress(psycopg.OperationalError):
                psycopg.connect(url, connect_timeout=2).close()
                break
            time.sleep(0.025)
        yield url
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def postgres_database(server: str) -> Iterator[str]:
    """A database of its own for the run (its statistics count only our transactions)."""
    admin = _with_database(server, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    try:
        yield _with_database(server, BENCH_DATABASE)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")


def _read_commits(url: str) -> int:
    admin = _with_database(url, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (BENCH_DATABASE,)
        ).fetchone()
    return int(row[0]) if row else 0


async def postgres_commits(store: Store, url: str) -> int:
    """Committed transactions of the run's database, with the store's statistics up to date.

    A backend reports its counters when it goes idle at least a second after its last report,
    or when it exits; ``pg_stat_force_next_flush()`` makes the store's one connection report
    as soon as it is idle -- provided it has table statistics pending (otherwise even its
    transaction count waits), hence the count of a table in the same statement. That
    statement is a transaction too: each reading adds one (subtracted by
    :meth:`Backend.counted`). The pool is private to the store; a benchmark may look inside.
    """
    pool = store._db.pool  # type: ignore[attr-defined]
    async with pool.connection() as conn:
        await conn.execute(
            "SELECT pg_stat_force_next_flush(), (SELECT count(*) FROM antifragile_breakers)"
        )
    return await asyncio.to_thread(_read_commits, url)


@dataclass
class Backend:
    """One shared-state backend: its store, and how to count its round trips."""

    name: str
    url: str
    redis: RedisRoundTrips | None = None
    options: dict[str, Any] = field(default_factory=dict)
    store: Store | None = None
    wrappers: list[CountingBreakerStore] = field(default_factory=list)

    async def open(self) -> None:
        self.store = await open_store(self.url, **self.options)

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()
            self.store = None

    def operations(self) -> int:
        """Breaker-store operations the breakers asked for (the client's side of the count)."""
        return sum(w.operations for w in self.wrappers)

    async def round_trips(self) -> int:
        if self.redis is not None:
            return await asyncio.to_thread(self.redis.count)
        if self.name == "PostgreSQL":
            assert self.store is not None
            return await postgres_commits(self.store, self.url)
        return self.operations()

    @contextlib.asynccontextmanager
    async def counted(self) -> AsyncIterator[list[int]]:
        """Round trips (as the server counts them) and store operations made inside the
        block: ``[round_trips, operations]`` once it ends. The store stays open around it."""
        counted: list[int] = []
        before, operations = await self.round_trips(), self.operations()
        yield counted
        await asyncio.sleep(0.2)  # let batches still in flight land
        after = await self.round_trips()
        counted.append(after - before - (1 if self.name == "PostgreSQL" else 0))
        counted.append(self.operations() - operations)

    async def breaker(self) -> SharedCircuitBreaker:
        assert self.store is not None
        wrapper = CountingBreakerStore(self.store.breakers)  # costs nothing per call
        self.wrappers.append(wrapper)
        breakers: BreakerStore = wrapper
        breaker = SharedCircuitBreaker(f"bench-{uuid.uuid4().hex[:8]}", breakers)
        await breaker.refresh()
        return breaker


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Row:
    us: float
    net_us: float = 0.0
    ratio: float = 0.0
    calls: int = 0
    round_trips: int | None = None
    operations: int | None = None
    paced_calls: int = 0
    paced_round_trips: int | None = None
    paced_operations: int | None = None

    @property
    def per_call(self) -> float | None:
        return None if self.round_trips is None else self.round_trips / self.calls

    @property
    def paced_per_call(self) -> float | None:
        if self.paced_round_trips is None or not self.paced_calls:
            return None
        return self.paced_round_trips / self.paced_calls


async def measure_antifragile(
    backends: list[Backend], n: int, rounds: int, paced_for: float
) -> tuple[dict[str, Row], float]:
    memory = CircuitBreaker("bench-memory")
    samples: dict[str, list[float]] = {IN_MEMORY: [], **{b.name: [] for b in backends}}
    loop_only: list[float] = []
    calls = dict.fromkeys(samples, 0)
    for backend in backends:
        await backend.open()
    try:
        breakers: dict[str, CircuitBreaker] = {IN_MEMORY: memory}
        for backend in backends:
            breakers[backend.name] = await backend.breaker()
        for breaker in breakers.values():  # warm-up, not counted
            await drive(breaker, max(BATCH, n // 10))
        await drive_loop_only(n)
        async with contextlib.AsyncExitStack() as stack:
            counts = {b.name: await stack.enter_async_context(b.counted()) for b in backends}
            order = list(breakers.items())
            for i in range(rounds):
                loop_only.append(await drive_loop_only(n))
                for name, breaker in order[i % len(order) :] + order[: i % len(order)]:
                    samples[name].append(await drive(breaker, n))  # rotated: no fixed order
                    calls[name] += n
        rows = {
            name: Row(us=statistics.median(values), calls=calls[name])
            for name, values in samples.items()
        }
        for name, counted in counts.items():
            rows[name].round_trips, rows[name].operations = counted
        # paced phase: fresh breakers, the three side by side
        paced_breakers = [await b.breaker() for b in backends]
        async with contextlib.AsyncExitStack() as stack:
            counts = {b.name: await stack.enter_async_context(b.counted()) for b in backends}
            made = await asyncio.gather(*(paced(br, paced_for) for br in paced_breakers))
        for backend, count in zip(backends, made, strict=True):
            rows[backend.name].paced_calls = count
            row = rows[backend.name]
            row.paced_round_trips, row.paced_operations = counts[backend.name]
    finally:
        for backend in backends:
            await backend.close()
    return rows, statistics.median(loop_only)


def measure_pybreaker(server: RedisRoundTrips, n: int, rounds: int) -> Row:
    client = redis.Redis.from_url(server.url)
    storage = pybreaker.CircuitRedisStorage(
        pybreaker.STATE_CLOSED, client, namespace=f"bench-{uuid.uuid4().hex[:8]}"
    )
    breaker = pybreaker.CircuitBreaker(fail_max=10, reset_timeout=30, state_storage=storage)
    drive_pybreaker(breaker, max(100, n // 10))
    before = server.count()
    samples = [drive_pybreaker(breaker, n) for _ in range(rounds)]
    trips = server.count() - before
    client.close()
    return Row(us=statistics.median(samples), calls=n * rounds, round_trips=trips)


def report(rows: dict[str, Row], loop_us: float, meta: dict[str, Any]) -> str:
    lines = [
        "## Shared circuit breaker: happy-path cost per successful call",
        "",
        f"Median of {meta['rounds']} rounds of {meta['iterations']:,} calls "
        f"({meta['pybreaker_iterations']:,} for pybreaker), contenders interleaved; "
        f'the loop alone costs {loop_us:.3f} µs per call and is subtracted in "net". '
        "Ratios compare net figures with the in-memory CircuitBreaker. Round trips are "
        "counted by the servers -- Redis: commands sent by clients, from a zero-threshold "
        "slow log on private servers (`INFO commandstats` also counts the commands each Lua "
        "script runs within its one round trip); PostgreSQL: `pg_stat_database.xact_commit` "
        "on a private server, which also counts the one-off exchange in which psycopg "
        "prepares a statement it has run five times -- or, for SQLite, as store operations. "
        "Opening the store is not counted; the JSON file also has the store operations the "
        "breakers asked for, counted on the client side. "
        f"`sync_interval` is the default {meta['sync_interval']:g} s. "
        f'"at {PACE:g}/s": the same breakers called {PACE:g} times a second each for '
        f"{meta['paced_seconds']:g} s.",
        "",
        "| contender | µs/call | net µs/call | x in-memory | round trips/call | "
        f"round trips/call at {PACE:g}/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        label = name if name in (IN_MEMORY, PYBREAKER) else f"SharedCircuitBreaker ({name})"
        per_call = "-" if row.per_call is None else f"{row.per_call:.2g}"
        paced_per_call = "-" if row.paced_per_call is None else f"{row.paced_per_call:.3f}"
        lines.append(
            f"| {label} | {row.us:.3f} | {row.net_us:.3f} | {row.ratio:.2f} | {per_call} | "
            f"{paced_per_call} |"
        )
    lines += [
        "",
        "Targets: at most 1.5 x the in-memory breaker, at most 0.05 round trips per "
        "successful call.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    n, rounds, py_n, paced_for = (20_000, 3, 200, 1.5) if args.quick else (300_000, 9, 2_000, 5.0)
    with (
        redis_server() as ours,
        redis_server() as theirs,
        postgres_server() as private_pg,
        postgres_database(private_pg or POSTGRES_URL) as pg_url,
        tempfile.TemporaryDirectory() as folder,
    ):
        backends = [
            Backend("Redis", ours.url, ours),
            Backend("PostgreSQL", pg_url, options={"min_size": 1, "max_size": 1}),
            Backend("SQLite", f"sqlite:///{Path(folder) / 'shared.db'}"),
        ]
        rows, loop_us = asyncio.run(measure_antifragile(backends, n, rounds, paced_for))
        rows[PYBREAKER] = measure_pybreaker(theirs, py_n, rounds)
    base = rows[IN_MEMORY].us - loop_us
    for row in rows.values():
        row.net_us = row.us - loop_us
        row.ratio = row.net_us / base
    meta = {
        "benchmark": "shared_state",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "antifragile": antifragile.__version__,
        "peers": {"pybreaker": version("pybreaker"), "redis": version("redis")},
        "iterations": n,
        "pybreaker_iterations": py_n,
        "rounds": rounds,
        "sync_interval": 1.0,
        "paced_seconds": paced_for,
        "postgres_server": "private" if private_pg else f"shared ({POSTGRES_URL})",
        "loop_us": loop_us,
    }
    table = report(rows, loop_us, meta)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    payload = {
        **meta,
        "results": {
            name: {
                "us_per_call": row.us,
                "net_us_per_call": row.net_us,
                "ratio_vs_in_memory": row.ratio,
                "calls": row.calls,
                "round_trips": row.round_trips,
                "round_trips_per_call": row.per_call,
                "store_operations": row.operations,
                "paced_calls": row.paced_calls or None,
                "paced_round_trips": row.paced_round_trips,
                "paced_round_trips_per_call": row.paced_per_call,
                "paced_store_operations": row.paced_operations,
            }
            for name, row in rows.items()
        },
        "targets": {"max_ratio_vs_in_memory": 1.5, "max_round_trips_per_call": 0.05},
    }
    (args.output / "shared_state.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.output / "shared_state.md").write_text(table)


if __name__ == "__main__":
    main()
