"""Three ``antifragile scheduler`` processes on one database enqueue each tick exactly once.

The processes run the real command (``--app`` loading ``_scheduler_app``) with a per-second
schedule -- separate processes cannot share a FakeClock -- until they have competed for a few
ticks (however long a busy machine makes that take), and print one line per tick they enqueued
or found enqueued. The proof is counted twice: in their output
(each tick created by exactly one process) and in the database (one job per tick key, every
second of the run present).
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from antifragile.cli import app
from antifragile.jobs import JobFilter, Jobs
from antifragile.stores import open_store
from tests._waiting import eventually
from tests.conftest import POSTGRES_URL, require_service

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 3
MIN_TICKS = 3  # the processes run for at least this many ticks
COMPETED = 2  # ... and until this many of them were tried by two processes or more
LINE = re.compile(r"^every_second tick=(\d+) \(\S+\) (enqueued|already enqueued) job=(\w+)$")


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scheduler.db'}"
        return
    require_service("postgres", POSTGRES_URL)
    schema = f"t{uuid.uuid4().hex[:12]}"
    store = await open_store(POSTGRES_URL, schema=schema, drop_schema_on_close=True)
    try:  # the schema exists (and is migrated) before the processes start
        separator = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{separator}schema={schema}"
    finally:
        await store.close()


async def start_scheduler(url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from antifragile.cli import main; main()",
        "scheduler",
        "--app",
        "tests.integration._scheduler_app:jobs",
        "--database-url",
        url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_until_running(process: asyncio.subprocess.Process) -> list[str]:
    """Read the process's output up to its 'scheduler running' line."""
    assert process.stdout is not None
    lines = []
    while True:
        raw = await asyncio.wait_for(process.stdout.readline(), 30)
        if not raw:
            assert process.stderr is not None
            pytest.fail(f"the scheduler did not start: {(await process.stderr.read()).decode()}")
        line = raw.decode().rstrip()
        lines.append(line)
        if line.startswith("scheduler running"):
            return lines


def ticks_seen(
    outputs: list[list[str]],
) -> tuple[dict[int, set[int]], Counter[int], dict[int, str]]:
    """From the processes' lines: which processes took part in each tick, how many created its
    job, and the job each tick names (every process must name the same one)."""
    created: Counter[int] = Counter()
    seen_by: dict[int, set[int]] = {}
    job_of: dict[int, str] = {}
    for index, lines in enumerate(outputs):
        for line in lines:
            match = LINE.match(line)
            if match is None:
                continue
            tick, what, job_id = int(match[1]), match[2], match[3]
            seen_by.setdefault(tick, set()).add(index)
            assert job_of.setdefault(tick, job_id) == job_id  # everyone names the same job
            if what == "enqueued":
                created[tick] += 1
    return seen_by, created, job_of


def competed(outputs: list[list[str]]) -> bool:
    """At least COMPETED ticks that two processes or more tried to enqueue, and MIN_TICKS ticks
    in all."""
    seen_by, _, _ = ticks_seen(outputs)
    return len(seen_by) >= MIN_TICKS and sum(len(s) > 1 for s in seen_by.values()) >= COMPETED


async def test_three_schedulers_enqueue_each_tick_exactly_once(database_url: str) -> None:
    """Three scheduler processes share one queue on a per-second schedule, running until they
    have competed for some ticks (two or more of them tried to enqueue the same tick): every
    tick of the run is enqueued, each exactly once -- one process creates its job, any other
    that tries finds it there -- and the queue holds one job per tick key."""
    processes = [await start_scheduler(database_url) for _ in range(PROCESSES)]
    outputs: list[list[str]] = []
    errors: list[list[str]] = [[] for _ in processes]
    readers: list[asyncio.Task[None]] = []

    async def read(stream: asyncio.StreamReader | None, lines: list[str]) -> None:
        assert stream is not None
        while raw := await stream.readline():
            lines.append(raw.decode().rstrip())

    try:
        for process in processes:
            outputs.append(await wait_until_running(process))
        for process, out, err in zip(processes, outputs, errors, strict=True):
            readers.append(asyncio.create_task(read(process.stdout, out)))
            readers.append(asyncio.create_task(read(process.stderr, err)))
        await eventually(lambda: competed(outputs), interval=0.05)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*readers), 60)
        for index, process in enumerate(processes):
            assert await asyncio.wait_for(process.wait(), 60) == 0, "\n".join(errors[index])
            assert outputs[index][-1] == "scheduler stopped"
    finally:
        for task in readers:
            task.cancel()
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    seen_by, created, job_of = ticks_seen(outputs)
    ticks = sorted(seen_by)
    assert ticks == list(range(ticks[0], ticks[-1] + 1)), "a second was skipped"
    assert all(created[tick] == 1 for tick in ticks), created

    async with Jobs(database_url=database_url) as jobs:
        found = await jobs.find(JobFilter(name="every_second"), limit=10_000)
    per_key = Counter(job.idempotency_key for job in found)
    assert per_key == Counter(f"cron:every_second:{tick}" for tick in ticks)
    assert {job.id for job in found} == set(job_of.values())


def test_the_command_refuses_an_app_it_cannot_load(tmp_path: Path) -> None:
    """``antifragile scheduler`` names what is wrong with ``--app`` and exits with 1."""
    runner = CliRunner()
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for spec, message in [
        (":jobs", "expected module:attribute"),
        ("tests.integration.nowhere:jobs", "cannot import"),
        ("tests.integration._scheduler_app:nothing", "has no 'nothing'"),
        ("tests.integration._scheduler_app:every_second", "not an antifragile Jobs"),
    ]:
        result = runner.invoke(app, ["scheduler", "--app", spec, "--database-url", url])
        assert result.exit_code == 1, result.output
        assert message in result.output
