"""CPU and wall time of single-job enqueues on SQLite or PostgreSQL, and where they go.

``--jobs`` no-op jobs are enqueued one awaited call each (``fn.enqueue(n, sent)``, as an
application enqueues them) after 200 warm-up calls, into a fresh SQLite file (the default,
``--database-url sqlite``: under the system's temporary directory, ``TMPDIR``) or, with a
PostgreSQL URL, into a schema of their own, dropped afterwards (``--database-url postgresql``
alone: ``ANTIFRAGILE_TEST_POSTGRES_URL``, else ``postgresql://postgres@127.0.0.1:5432/test``).
The figures are this process's CPU time (``time.process_time()``: every thread, the store's
included) and the wall time, per enqueue, in µs (the same number as ms per 1,000 enqueues). CPU
hardly depends on the disk or on the server's speed, wall time mostly does. Each round runs on a
fresh file or schema; the medians are reported. On SQLite, ``--synchronous normal`` leaves the
``fsync`` out (the code path alone); the default is the store's own, ``full``. ``--profile``
runs cProfile (timed by CPU, not wall clock) over the last round and prints the functions sorted
by their own and by their cumulative time.

``--against DIR`` compares this checkout with another one's ``src`` folder (say, a copy of the
main branch: ``git archive main src | tar -x -C /tmp/main``), interleaved: each round runs once
with each, in a fresh process, alternating which goes first, so that both meet the same
conditions; the medians of both and their ratio are reported.

``--pages`` (SQLite only) counts instead what the enqueues write: the WAL frames (database pages)
per enqueue, and which b-tree each belongs to (the table, each index). It truncates the WAL
from a second connection (a checkpoint, between two enqueues) before every 100 enqueues, too
few to reach SQLite's automatic checkpoint, then reads the frames they appended: a figure that,
unlike CPU and wall time, does not depend on the machine's load, and the one a schema change
moves (a page is 4 KiB written to the WAL, and ``fsync``-ed, at every commit).

    python benchmarks/enqueue_cpu.py
    python benchmarks/enqueue_cpu.py --synchronous normal --jobs 3000 --rounds 5
    python benchmarks/enqueue_cpu.py --jobs 3000 --rounds 1 --profile
    python benchmarks/enqueue_cpu.py --rounds 5 --against /tmp/main/src
    python benchmarks/enqueue_cpu.py --pages
    python benchmarks/enqueue_cpu.py --database-url postgresql
    python benchmarks/enqueue_cpu.py --database-url postgresql --rounds 5 --against /tmp/main/src
    python benchmarks/enqueue_cpu.py --database-url postgresql://user@host:5432/db
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
import cProfile
import json
import pstats
import sqlite3
import statistics
import struct
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from antifragile.jobs import JobContext, Jobs

# ``--database-url postgresql`` alone: the test suite's server.
POSTGRES_URL = os.environ.get(
    "ANTIFRAGILE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
WARM_UP = 200
# Enqueues per round unless --jobs says otherwise.
DEFAULT_JOBS = {"sqlite": 2000, "postgresql": 3000}


async def _noop(ctx: JobContext, n, sent):  # type: ignore[no-untyped-def]  # as apps write it
    return None


def _kind(url: str) -> str:
    """``sqlite`` or ``postgresql``, from the URL's scheme."""
    return "sqlite" if url.split(":", 1)[0] == "sqlite" else "postgresql"


@contextlib.asynccontextmanager
async def _scratch(url: str, synchronous: str) -> AsyncIterator[str]:
    """The database URL of a fresh SQLite file or PostgreSQL schema, removed on leaving."""
    if _kind(url) == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'jobs.db'}?synchronous={synchronous}"
        return
    import psycopg

    schema = f"prof_{uuid.uuid4().hex[:10]}"
    try:
        yield f"{url}{'&' if '?' in url else '?'}schema={schema}"
    finally:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


async def per_enqueue(
    url: str, jobs: int, synchronous: str, profile: cProfile.Profile | None
) -> tuple[float, float]:
    """(CPU µs, wall µs) per single-job enqueue, on a fresh file or schema."""
    async with _scratch(url, synchronous) as database_url:
        app = Jobs(database_url=database_url)
        app.job("noop")(_noop)
        fn: Any = app.registry["noop"]
        await app.open()
        try:
            for n in range(WARM_UP):
                await fn.enqueue(n, time.time())
            if profile is not None:
                profile.enable()
            cpu, wall = time.process_time(), time.perf_counter()
            for n in range(jobs):
                await fn.enqueue(n, time.time())
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if profile is not None:
                profile.disable()
        finally:
            await app.close()
    return cpu / jobs * 1e6, wall / jobs * 1e6


#: enqueues between two truncations of the WAL in ``--pages``: fewer than SQLite's automatic
#: checkpoint (1,000 pages) lets through, so every frame they write stays in the file
PAGES_CYCLE = 100
_WAL_HEADER, _FRAME_HEADER = 32, 24


def _frames(path: str, page_size: int) -> list[tuple[int, bool]]:
    """The frames of the WAL of *path*, in order: (page number, whether it ends a commit)."""
    with contextlib.suppress(FileNotFoundError), open(f"{path}-wal", "rb") as wal:
        data = wal.read()
        frames = []
        for offset in range(_WAL_HEADER, len(data) - _FRAME_HEADER + 1, _FRAME_HEADER + page_size):
            page, size_after = struct.unpack_from(">II", data, offset)
            frames.append((page, size_after != 0))
        return frames
    return []


async def pages_per_enqueue(jobs: int) -> tuple[int, int, Counter[str]]:
    """(commits, page size, WAL frames by b-tree) of *jobs* single-job enqueues, on a fresh
    SQLite file."""
    async with _scratch("sqlite", "full") as database_url:
        path = database_url.removeprefix("sqlite:///").split("?", 1)[0]
        app = Jobs(database_url=database_url)
        app.job("noop")(_noop)
        fn: Any = app.registry["noop"]
        await app.open()
        by_page: Counter[int] = Counter()
        commits = 0
        outside = sqlite3.connect(path, isolation_level=None)
        try:
            page_size = int(outside.execute("PRAGMA page_size").fetchone()[0])
            for n in range(WARM_UP):
                await fn.enqueue(n, time.time())
            done = 0
            while done < jobs:
                # the store is idle between two awaited enqueues: the checkpoint gets its lock
                outside.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                for n in range(min(PAGES_CYCLE, jobs - done)):
                    await fn.enqueue(done + n, time.time())
                frames = _frames(path, page_size)
                by_page.update(page for page, _ in frames)
                commits += sum(ends for _, ends in frames)
                done += PAGES_CYCLE
            names = dict(outside.execute("SELECT pageno, name FROM dbstat"))
        finally:
            outside.close()
            await app.close()
    trees: Counter[str] = Counter()
    for page, count in by_page.items():
        trees[names.get(page, f"page {page} (freed since)")] += count
    return commits, page_size, trees


def print_pages(jobs: int) -> None:
    commits, page_size, trees = asyncio.run(pages_per_enqueue(jobs))
    total = sum(trees.values())
    written = total * (page_size + _FRAME_HEADER) / jobs / 1024
    print(
        f"{commits} commits for {jobs} enqueues: {total / jobs:.2f} WAL frames"
        f" ({written:.1f} KiB) per enqueue, by b-tree:"
    )
    for tree, count in trees.most_common():
        print(f"  {count / jobs:.2f}  {tree}")


def _load() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def _one_round(src: str, args: argparse.Namespace) -> tuple[float, float]:
    """One round in a fresh process importing antifragile from *src*: (CPU, wall) µs."""
    env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
    command = [sys.executable, os.path.abspath(__file__), "--database-url", args.database_url]
    command += ["--synchronous", args.synchronous, "--jobs", str(args.jobs)]
    command += ["--rounds", "1", "--json"]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return float(figures["cpu"]), float(figures["wall"])


def compare(args: argparse.Namespace) -> None:
    """Alternate rounds between this checkout and ``--against``; print both and the ratio."""
    print(f"load average: {_load()}")
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    sides = {"this": here, "against": args.against}
    figures: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
    for round_ in range(args.rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        for side in order:
            cpu, wall = _one_round(sides[side], args)
            figures[side].append((cpu, wall))
            print(
                f"round {round_ + 1}/{args.rounds} {side:7}: {cpu:.0f} µs CPU, {wall:.0f} µs wall"
            )
    medians = {
        side: (statistics.median(f[0] for f in got), statistics.median(f[1] for f in got))
        for side, got in figures.items()
    }
    for side, (cpu, wall) in medians.items():
        print(f"median {side:7}: {cpu:.0f} µs CPU, {wall:.0f} µs wall per enqueue")
    this, against = medians["this"], medians["against"]
    print(
        f"this/against: CPU {this[0] / against[0]:.2f}x, wall {this[1] / against[1]:.2f}x"
        f" ({_kind(args.database_url)}, load average {_load()})"
    )


async def main(args: argparse.Namespace) -> None:
    figures: list[tuple[float, float]] = []
    profile: cProfile.Profile | None = None
    if not args.json:
        print(f"load average: {_load()}")
    for round_ in range(args.rounds):
        last = round_ == args.rounds - 1
        profile = cProfile.Profile(time.process_time) if args.profile and last else None
        cpu, wall = await per_enqueue(args.database_url, args.jobs, args.synchronous, profile)
        figures.append((cpu, wall))
        if not args.json:
            print(
                f"round {round_ + 1}/{args.rounds}: {cpu:.0f} µs CPU, {wall:.0f} µs wall"
                " per enqueue"
            )
    cpu = statistics.median(f[0] for f in figures)
    wall = statistics.median(f[1] for f in figures)
    if args.json:
        print(json.dumps({"cpu": cpu, "wall": wall}))
        return
    setting = f"synchronous={args.synchronous}" if _kind(args.database_url) == "sqlite" else ""
    print(
        f"median: {cpu:.0f} µs CPU, {wall:.0f} µs wall per enqueue"
        f" ({_kind(args.database_url)}{', ' + setting if setting else ''})"
    )
    if profile is not None:
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumtime").print_stats(40)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        "--url",
        default="sqlite",
        help="sqlite (a fresh file each round), a PostgreSQL URL (a scratch schema) or"
        " postgresql alone (ANTIFRAGILE_TEST_POSTGRES_URL, else the local test database) [sqlite]",
    )
    parser.add_argument(
        "--jobs", type=int, help="enqueues per round [2000 on SQLite, 3000 on PostgreSQL]"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds [3]")
    parser.add_argument(
        "--synchronous", choices=["full", "normal"], default="full", help="SQLite only [full]"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the last round")
    parser.add_argument(
        "--pages", action="store_true", help="SQLite: WAL frames per enqueue, by b-tree"
    )
    parser.add_argument("--against", help="another checkout's src folder, compared interleaved")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.database_url == "postgresql":
        args.database_url = POSTGRES_URL
    scheme = args.database_url.split(":", 1)[0]
    if scheme == "sqlite":
        if args.database_url not in ("sqlite", "sqlite://"):
            parser.error("SQLite runs on a fresh file each round: give --database-url sqlite")
    elif scheme not in ("postgresql", "postgres"):
        parser.error(f"--database-url: sqlite or postgresql://..., not {args.database_url!r}")
    elif args.synchronous != "full":
        parser.error("--synchronous applies to SQLite only")
    if args.jobs is None:
        args.jobs = DEFAULT_JOBS[_kind(args.database_url)]
    if args.against and args.profile:
        parser.error("--profile runs in this process: leave out --against")
    if args.pages and (_kind(args.database_url) != "sqlite" or args.against or args.profile):
        parser.error("--pages: SQLite only, without --against or --profile")
    return args


if __name__ == "__main__":
    arguments = _arguments()
    if arguments.pages:
        print_pages(arguments.jobs)
    elif arguments.against:
        compare(arguments)
    else:
        asyncio.run(main(arguments))
