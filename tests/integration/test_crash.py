"""Crash test: worker processes killed with SIGKILL at random points lose no job and duplicate
no effect.

2,000 jobs go through three ``antifragile worker`` processes (``_crash_app.py``) that each post
one effect to a local HTTP server with the job's idempotency key. While they work, a random
worker is killed with SIGKILL at least 20 times -- at random moments of its jobs: before the
request, while the server answers (the effect happened, the outcome is not recorded), in the
middle of a batch of completions -- and started again. Leases are short (1 s), so a dead worker's
jobs are claimed again quickly by the others.

Proved at the end, from the database and from the server's own records:

* no job is lost: all 2,000 exist once and each one is final -- succeeded, or dead with a code
  and a reason (the jobs scripted to meet a 400);
* each succeeded job produced its effect under exactly one idempotency key -- its own key for the
  half enqueued with one (enqueued twice; the second enqueue created nothing), ``job:<id>`` for
  the others -- so a provider that deduplicates by key applied each effect exactly once, however
  many times a killed worker's job was sent again (the redeliveries are counted too);
* no effect exists for a job that did not succeed.

Runs on SQLite (one file, several processes) and on PostgreSQL when it is reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from antifragile.jobs import JobFilter, Jobs, JobState
from antifragile.jobs._open import open_job_queue
from antifragile.sandbox import Fault, FlakyServer
from antifragile.stores import open_store
from tests.conftest import POSTGRES_URL, require_service
from tests.integration._crash_app import effect

ROOT = Path(__file__).resolve().parents[2]
JOBS = 2000
WORKERS = 3
MIN_KILLS = 20
PLANNED_KILLS = 22
LEASE = 1.0


def _kind(n: int) -> str:
    if n % 25 == 0:
        return "bad"  # answered 400: dead at once
    if n % 7 == 0:
        return "flaky"  # answered 503 once: retried
    return "ok"


@dataclass
class Database:
    name: str
    url: str
    jobs: Jobs


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    options: dict[str, Any] = {}
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'crash.db'}"
    else:
        require_service("postgres", POSTGRES_URL)
        separator = "&" if "?" in POSTGRES_URL else "?"
        url = f"{POSTGRES_URL}{separator}schema=crash_{uuid.uuid4().hex[:10]}"
        options["drop_schema_on_close"] = True
    store = await open_store(url, **options)  # creates the schema before the workers start
    try:
        yield Database(request.param, url, Jobs(await open_job_queue(store)))
    finally:
        await store.close()


class Workers:
    """Worker processes running ``antifragile worker``, killed and restarted on demand."""

    def __init__(self, url: str, server: str, logs: Path) -> None:
        self.url = url
        self.env = {"CRASH_SERVER_URL": server, "PYTHONPATH": str(ROOT)}
        self.logs = logs
        self.processes: list[asyncio.subprocess.Process] = []
        self.started: list[float] = []
        self._files: list[IO[bytes]] = []

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        import os

        log = (self.logs / f"worker-{index}.log").open("ab")
        self._files.append(log)
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from antifragile.cli import main; main()",
            "worker",
            "--app",
            "tests.integration._crash_app:jobs",
            "--database-url",
            self.url,
            "--concurrency",
            "6",
            "--lease",
            str(LEASE),
            "--heartbeat",
            str(LEASE / 3),
            "--poll-interval",
            "0.05",
            "--grace",
            "5",
            "--log-level",
            "ERROR",
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )

    async def start(self, n: int) -> None:
        for index in range(n):
            self.processes.append(await self._spawn(index))
            self.started.append(time.monotonic())

    async def kill_one(self, rng: random.Random) -> None:
        """SIGKILL a worker that has been up a little while (else any), then restart it."""
        now = time.monotonic()
        settled = [i for i, t in enumerate(self.started) if now - t > 0.4]
        index = rng.choice(settled or list(range(len(self.processes))))
        process = self.processes[index]
        process.kill()
        await process.wait()
        self.processes[index] = await self._spawn(index)
        self.started[index] = time.monotonic()

    async def stop(self, working: set[int]) -> list[int]:
        """SIGTERM every worker; their exit codes. A worker that has not run a job yet (its pid
        is not in *working*) may still be importing, with no signal handler yet, and die of
        the signal (-15): it held no job, so that counts as a clean stop (0). One that ran a job
        had its handlers installed before it claimed anything, and must stop cleanly."""
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        codes = [await asyncio.wait_for(p.wait(), 60) for p in self.processes]
        for log in self._files:
            log.close()
        return [
            0 if code == -signal.SIGTERM and process.pid not in working else code
            for code, process in zip(codes, self.processes, strict=True)
        ]


async def _finished(jobs: Jobs) -> int:
    stats = await jobs.stats()
    return sum(s.counts.get("succeeded", 0) + s.counts.get("dead", 0) for s in stats)


@pytest.mark.slow
@pytest.mark.timeout(900)  # a guard against a hang only, never a bound on speed
async def test_sigkilled_workers_lose_no_job_and_duplicate_no_effect(
    database: Database, tmp_path: Path
) -> None:
    """2,000 jobs, >= 20 SIGKILLs of worker processes at random points: 0 jobs lost, every job
    succeeded or dead with a reason, exactly one effect per job and idempotency key."""
    rng = random.Random()
    jobs = database.jobs
    server = FlakyServer(default=Fault.slow(0.01, Fault.ok(json={"ok": True})))
    for n in range(JOBS):
        if _kind(n) == "bad":
            server.script(f"/effects/bad/{n}", Fault.repeat(Fault.status(400), 50))
        elif _kind(n) == "flaky":
            server.script(f"/effects/flaky/{n}", [Fault.status(503)])

    def keyed(n: int) -> bool:
        return n % 2 == 0

    batch = [
        effect.configure(idempotency_key=f"order-{n}").prepare(n, _kind(n))
        if keyed(n)
        else effect.prepare(n, _kind(n))
        for n in range(JOBS)
    ]
    first = await jobs.enqueue_many(batch)
    again = await jobs.enqueue_many(
        [
            effect.configure(idempotency_key=f"order-{n}").prepare(n, _kind(n))
            for n in range(0, JOBS, 2)
        ]
    )
    assert all(e.created for e in first)
    assert not any(e.created for e in again)  # a repeated key creates no second job

    thresholds = sorted(rng.sample(range(40, int(JOBS * 0.9)), PLANNED_KILLS))
    kills = 0
    started = time.monotonic()
    with server:
        workers = Workers(database.url, server.url, tmp_path)
        await workers.start(WORKERS)
        try:
            while True:
                done = await _finished(jobs)
                while thresholds and done >= thresholds[0]:
                    thresholds.pop(0)
                    await asyncio.sleep(rng.uniform(0.0, 0.05))
                    await workers.kill_one(rng)
                    kills += 1
                if done >= JOBS:
                    break
                await asyncio.sleep(0.05)
        finally:
            working = {record.json()["pid"] for record in server.requests}
            codes = await workers.stop(working)
        elapsed = time.monotonic() - started
        requests = server.requests

    assert kills >= MIN_KILLS
    assert codes == [0] * WORKERS  # the survivors stop cleanly on SIGTERM

    # no job lost: every job exists once and is final
    stored = await jobs.find(JobFilter(), limit=JOBS * 2)
    assert len(stored) == JOBS
    by_n = {job.payload["n"]: job for job in stored}
    assert sorted(by_n) == list(range(JOBS))
    states = Counter(job.state for job in stored)
    assert set(states) <= {JobState.SUCCEEDED, JobState.DEAD}, states

    # the dead are exactly the jobs meant to die, each with a code and a reason
    dead = {n for n, job in by_n.items() if job.state is JobState.DEAD}
    assert dead == {n for n in range(JOBS) if _kind(n) == "bad"}
    for n in dead:
        last = by_n[n].history[-1]
        assert (by_n[n].last_error_code, last["status"], last["reason"]) == (
            "VALIDATION",
            400,
            "not_retryable",
        )

    # effects: one idempotency key per succeeded job, none for the others
    effects: Counter[str] = Counter()
    keys_by_n: dict[int, set[str]] = defaultdict(set)
    for record in requests:
        if record.status is not None and 200 <= record.status < 300:
            key = record.headers["idempotency-key"]
            effects[key] += 1
            keys_by_n[record.json()["n"]].add(key)
    expected = {
        (f"order-{n}" if keyed(n) else f"job:{job.id}")
        for n, job in by_n.items()
        if job.state is JobState.SUCCEEDED
    }
    assert set(effects) == expected
    assert all(len(keys) == 1 for keys in keys_by_n.values())
    assert not dead & set(keys_by_n)
    redeliveries = sum(count - 1 for count in effects.values())
    print(
        f"\ncrash test [{database.name}]: {JOBS} jobs, {kills} SIGKILLs, lost 0, "
        f"succeeded {states[JobState.SUCCEEDED]}, dead {states[JobState.DEAD]}, "
        f"effects {len(effects)} (duplicates 0), redelivered to the provider {redeliveries}, "
        f"{elapsed:.1f}s"
    )
