"""PostgreSQL drivers for the state store: psycopg 3 (async, psycopg_pool) against asyncpg.

Both drivers run the very statements of ``antifragile.stores._postgres`` (named parameters
rewritten to ``$n`` for asyncpg) on the same schema, with pools of the same size:

* ``kv_set``        -- KeyValueStore.set (an upsert)
* ``kv_cas``        -- KeyValueStore.compare_and_set at the live version (a conditional update)
* ``idem_claim``    -- IdempotencyStore.claim of a new key (an upsert with a read-back branch)
* ``rate_take``     -- RateLimitStore.take from one shared bucket (an upsert on one hot row)
* ``breaker_add``   -- BreakerStore.add_outcomes into one shared breaker (a four-part statement)

Each is measured sequentially (one task; microseconds per operation) and with 20 concurrent
tasks (operations per second). The drivers alternate operation by operation within each round
so that drift of a noisy machine hits both alike; the figure kept is the median of the rounds.
Results go to ``benchmarks/results/store_drivers.json`` and a table to ``store_drivers.md``.

    python benchmarks/store_drivers.py            # about a minute
    python benchmarks/store_drivers.py --quick    # a smoke run
    python benchmarks/store_drivers.py --url postgresql://user@host:5432/db
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
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, LiteralString

import asyncpg
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from antifragile.stores import _postgres as pg
from antifragile.stores._codec import encode

RESULTS = Path(__file__).parent / "results"
DEFAULT_URL = os.environ.get(
    "ANTIFRAGILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
POOL_SIZE = 10
CONCURRENCY = 20
NOW = 1_700_000_000.0

Params = dict[str, Any]
Run = Callable[[LiteralString, Params], Awaitable[Any]]


# -- the operations -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    query: LiteralString
    #: the parameters of operation *i* of task *task* in namespace *ns*
    params: Callable[[str, int, int], Params]
    #: statements run once per task before timing (e.g. the keys compare_and_set works on)
    setup: Callable[[str, int], list[tuple[LiteralString, Params]]] | None = None


def _kv_set(ns: str, task: int, i: int) -> Params:
    return {
        "key": f"{ns}:kv:{task}:{i % 50}",
        "value": encode({"n": i, "status": "ok"}),
        "now": NOW,
        "expires_at": None,
    }


def _cas_setup(ns: str, task: int) -> list[tuple[LiteralString, Params]]:
    params = {"key": f"{ns}:cas:{task}", "value": "0", "now": NOW, "expires_at": None}
    return [(pg.KV_SET, params)]


def _kv_cas(ns: str, task: int, i: int) -> Params:
    # the task's key was created at version 1; operation i finds it at version i + 1
    return {
        "key": f"{ns}:cas:{task}",
        "value": str(i + 1),
        "expected": i + 1,
        "now": NOW,
        "expires_at": None,
    }


def _idem_claim(ns: str, task: int, i: int) -> Params:
    return {
        "key": f"{ns}:idem:{task}:{i}",
        "owner": f"worker-{task}",
        "fingerprint": "sha256:0f1e2d",
        "now": NOW,
        "expires_at": NOW + 86_400,
    }


def _rate_take(ns: str, task: int, i: int) -> Params:
    return {
        "key": f"{ns}:bucket",
        "tokens": 1.0,
        "rate": 1e9,
        "burst": 1e9,
        "max_wait": 0.0,
        "now": NOW,
    }


def _breaker_add(ns: str, task: int, i: int) -> Params:
    return {
        "name": f"{ns}:breaker",
        "second": 1_000 + i // 50,  # new buckets keep coming and old ones get dropped
        "calls": 1,
        "failures": i % 2,
        "slow": 0,
        "window": 10,
    }


OPERATIONS = [
    Operation("kv_set", pg.KV_SET, _kv_set),
    Operation("kv_cas", pg.KV_CAS, _kv_cas, _cas_setup),
    Operation("idem_claim", pg.IDEM_CLAIM, _idem_claim),
    Operation("rate_take", pg.RATE_TAKE, _rate_take),
    Operation("breaker_add", pg.BREAKER_ADD, _breaker_add),
]


# -- the drivers ----------------------------------------------------------------------------

_NAMED = re.compile(r"%\((\w+)\)s")


def positional(query: str) -> tuple[str, list[str]]:
    """*query* with ``%(name)s`` rewritten to ``$n`` (asyncpg's style), and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _NAMED.sub(number, query).replace("%%", "%"), names


class Psycopg:
    name = "psycopg 3 + psycopg_pool"

    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.pool: AsyncConnectionPool[AsyncConnection[TupleRow]] | None = None

    async def _configure(self, conn: AsyncConnection[TupleRow]) -> None:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))

    async def open(self) -> None:
        self.pool = AsyncConnectionPool(
            self.url,
            kwargs={"autocommit": True},
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            configure=self._configure,
            open=False,
        )
        await self.pool.open(wait=True)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def run(self, query: LiteralString, params: Params) -> Any:
        assert self.pool is not None
        async with self.pool.connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchone()


async def _no_reset(connection: Any) -> None:
    """Skip asyncpg's reset query on release (fine for autocommit single statements only)."""


class Asyncpg:
    """asyncpg's pool as shipped: it resets each connection when it is released (one more
    round trip: advisory unlocks, CLOSE ALL, UNLISTEN *, RESET ALL)."""

    name = "asyncpg"
    reset: Any = None  # the pool's default

    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.pool: Any = None
        self.statements: dict[str, tuple[str, list[str]]] = {}

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(
            self.url,
            min_size=POOL_SIZE,
            max_size=POOL_SIZE,
            server_settings={"search_path": self.schema},
            reset=self.reset,
        )

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def run(self, query: LiteralString, params: Params) -> Any:
        converted = self.statements.get(query)
        if converted is None:
            converted = self.statements[query] = positional(query)
        text, names = converted
        return await self.pool.fetchrow(text, *(params[n] for n in names))


class AsyncpgNoReset(Asyncpg):
    """asyncpg tuned for speed: no reset on release."""

    name = "asyncpg, no reset"
    reset = staticmethod(_no_reset)


Driver = Psycopg | Asyncpg


# -- measuring ------------------------------------------------------------------------------


async def _task(driver: Driver, op: Operation, ns: str, task: int, count: int) -> None:
    for i in range(count):
        row = await driver.run(op.query, op.params(ns, task, i))
        if row is None:
            raise AssertionError(f"{driver.name}: {op.name} #{i} of task {task} did nothing")


async def _setup(driver: Driver, op: Operation, ns: str, tasks: int) -> None:
    if op.setup is not None:
        for task in range(tasks):
            for query, params in op.setup(ns, task):
                await driver.run(query, params)


async def sequential_us(driver: Driver, op: Operation, ns: str, n: int) -> float:
    await _setup(driver, op, ns, 1)
    start = time.perf_counter_ns()
    await _task(driver, op, ns, 0, n)
    return (time.perf_counter_ns() - start) / n / 1000.0


async def concurrent_ops(driver: Driver, op: Operation, ns: str, n: int) -> float:
    per_task = n // CONCURRENCY
    await _setup(driver, op, ns, CONCURRENCY)
    start = time.perf_counter_ns()
    await asyncio.gather(*(_task(driver, op, ns, t, per_task) for t in range(CONCURRENCY)))
    seconds = (time.perf_counter_ns() - start) / 1e9
    return per_task * CONCURRENCY / seconds


async def measure(url: str, n_seq: int, n_conc: int, rounds: int) -> dict[str, Any]:
    schema = f"bench_drivers_{os.getpid()}"
    store = pg.PostgresStore(url, schema=schema, drop_schema_on_close=True)
    await store.open()  # creates the schema and its tables
    drivers: list[Driver] = [
        Psycopg(url, schema),
        Asyncpg(url, schema),
        AsyncpgNoReset(url, schema),
    ]
    seq: dict[str, dict[str, list[float]]] = {}
    conc: dict[str, dict[str, list[float]]] = {}
    try:
        for driver in drivers:
            await driver.open()
            for op in OPERATIONS:  # warm-up: connections, prepared statements, caches
                await sequential_us(driver, op, f"warm-{driver.name}", 100)
                await concurrent_ops(driver, op, f"warmc-{driver.name}", 400)
        for r in range(rounds):
            for op in OPERATIONS:
                for d, driver in enumerate(drivers):
                    ns = f"r{r}d{d}"
                    us = await sequential_us(driver, op, f"{ns}s", n_seq)
                    ops = await concurrent_ops(driver, op, f"{ns}c", n_conc)
                    seq.setdefault(op.name, {}).setdefault(driver.name, []).append(us)
                    conc.setdefault(op.name, {}).setdefault(driver.name, []).append(ops)
            print(f"round {r + 1}/{rounds} done", file=sys.stderr)
        server = await store.kv._db.fetchone("SHOW server_version")
    finally:
        for driver in drivers:
            await driver.close()
        await store.close()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for op in OPERATIONS:
        results[op.name] = {
            driver.name: {
                "sequential_us": statistics.median(seq[op.name][driver.name]),
                "concurrent_ops_per_s": statistics.median(conc[op.name][driver.name]),
            }
            for driver in drivers
        }
    return {"server": None if server is None else server[0], "results": results}


def _geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def summarise(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, Any]:
    """Each driver relative to psycopg over all operations (geometric means; > 1: faster)."""
    base = Psycopg.name
    summary: dict[str, Any] = {}
    for driver in next(iter(results.values())):
        summary[driver] = {
            "sequential_speed_vs_psycopg": _geomean(
                [r[base]["sequential_us"] / r[driver]["sequential_us"] for r in results.values()]
            ),
            "concurrent_speed_vs_psycopg": _geomean(
                [
                    r[driver]["concurrent_ops_per_s"] / r[base]["concurrent_ops_per_s"]
                    for r in results.values()
                ]
            ),
        }
    return summary


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.0f}%"


def report(payload: Mapping[str, Any]) -> str:
    results = payload["results"]
    drivers = list(next(iter(results.values())))
    base = Psycopg.name
    lines = [
        f"## State-store drivers on PostgreSQL {payload['postgres']}",
        "",
        f"Pool of {payload['pool_size']} connections per driver; median of {payload['rounds']} "
        "rounds, the drivers interleaved within each round.  ",
        f"Sequential: µs per operation, one task ({payload['sequential_ops']} operations per "
        "round; lower is better).  ",
        f"Concurrent: operations per second, {payload['concurrency']} tasks "
        f"({payload['concurrent_ops']} operations per round; higher is better).  ",
        "asyncpg's pool runs a reset query (advisory unlocks, CLOSE ALL, UNLISTEN *, RESET ALL)"
        ' each time a connection goes back; psycopg_pool does not. "asyncpg, no reset" skips'
        " it (asyncpg still rolls back an open transaction), which is the like-for-like"
        " comparison.",
        "",
        "| operation | "
        + " | ".join(f"{d} µs" for d in drivers)
        + " | "
        + " | ".join(f"{d} ops/s" for d in drivers)
        + " |",
        "|---|" + "---:|" * (2 * len(drivers)),
    ]
    for name, row in results.items():
        seq = [f"{row[d]['sequential_us']:.0f}" for d in drivers]
        conc = [f"{row[d]['concurrent_ops_per_s']:.0f}" for d in drivers]
        lines.append(f"| {name} | " + " | ".join(seq + conc) + " |")
    lines += ["", f"Relative to {base} (geometric mean over the operations; + is faster):", ""]
    for driver, ratios in payload["summary"].items():
        if driver == base:
            continue
        lines.append(
            f"- {driver}: {_pct(ratios['sequential_speed_vs_psycopg'])} sequential, "
            f"{_pct(ratios['concurrent_speed_vs_psycopg'])} concurrent"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--url", default=DEFAULT_URL, help="PostgreSQL URL (a scratch schema)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    n_seq, n_conc, rounds = (200, 400, 2) if args.quick else (1_000, 2_000, 11)

    measured = asyncio.run(measure(args.url, n_seq, n_conc, rounds))
    payload: dict[str, Any] = {
        "benchmark": "store_drivers",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "postgres": measured["server"],
        "drivers": {
            Psycopg.name: {"psycopg": version("psycopg"), "psycopg-pool": version("psycopg-pool")},
            "asyncpg": {"asyncpg": version("asyncpg")},
        },
        "pool_size": POOL_SIZE,
        "concurrency": CONCURRENCY,
        "sequential_ops": n_seq,
        "concurrent_ops": n_conc,
        "rounds": rounds,
        "results": measured["results"],
    }
    payload["summary"] = summarise(payload["results"])
    table = report(payload)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (args.output / f"store_drivers{suffix}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.output / f"store_drivers{suffix}.md").write_text(table)


if __name__ == "__main__":
    main()
