"""``antifragile jobs prune`` against a real SQLite file: ``--dry-run`` counts, a run without a
terminal refuses without ``--yes`` (exit 2, one line), ``--yes`` deletes old succeeded and
resolved jobs only -- never a dead job waiting for an operator, never an unfinished one."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from typer.testing import CliRunner

from antifragile import FakeClock
from antifragile.cli import app
from antifragile.jobs import JobFilter, Jobs, NewJob, Outcome

runner = CliRunner()


async def _finish(jobs: Jobs, job_id: str, kind: str) -> None:
    now = jobs.clock.time()
    job = NewJob(name="send", queue="email", payload={}, run_at=now, max_attempts=1, id=job_id)
    await jobs.queue.enqueue([job], now=now)
    await jobs.queue.claim(worker="w", limit=1, lease=30, now=now)
    await jobs.queue.complete(
        [Outcome(job_id, "dead" if kind != "succeeded" else "succeeded")], worker="w", now=now
    )
    if kind == "resolved":
        await jobs.queue.resolve(JobFilter(ids=(job_id,)), reason="refunded", now=now)


async def _make(path: Path) -> str:
    url = f"sqlite:///{path}"
    ten_days_ago = FakeClock(start=0, wall_offset=time.time() - 10 * 86400)
    async with Jobs(database_url=url, clock=ten_days_ago) as old:
        await _finish(old, "old-ok", "succeeded")
        await _finish(old, "old-resolved", "resolved")
        await _finish(old, "old-dead", "dead")
    async with Jobs(database_url=url) as jobs:
        await _finish(jobs, "new-ok", "succeeded")
        now = jobs.clock.time()
        await jobs.queue.enqueue(
            [NewJob(name="send", queue="email", payload={}, run_at=now, max_attempts=1, id="due")],
            now=now,
        )
    return url


async def _ids(url: str) -> list[str]:
    async with Jobs(database_url=url) as jobs:
        return sorted(job.id for job in await jobs.find(JobFilter(), limit=100))


def test_prune_counts_refuses_then_deletes(tmp_path: Path) -> None:
    url = asyncio.run(_make(tmp_path / "jobs.db"))
    everything = ["due", "new-ok", "old-dead", "old-ok", "old-resolved"]

    dry = runner.invoke(app, ["jobs", "prune", "--database-url", url, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output) == {
        "dry_run": True,
        "succeeded": 1,
        "resolved": 0,
        "processes": 0,
    }
    assert asyncio.run(_ids(url)) == everything

    refused = runner.invoke(app, ["jobs", "prune", "--database-url", url])
    assert refused.exit_code == 2
    assert refused.output.count("\n") == 1
    assert refused.output.startswith("error CONFIRMATION_REQUIRED: ")
    assert "--yes" in refused.output
    assert asyncio.run(_ids(url)) == everything

    done = runner.invoke(
        app,
        ["jobs", "prune", "--database-url", url, "--yes", "--resolved-older-than", "5d"],
    )
    assert done.exit_code == 0, done.output
    assert "deleted 1 succeeded job(s), 1 resolved job(s)" in done.output
    assert asyncio.run(_ids(url)) == ["due", "new-ok", "old-dead"]


def test_prune_rejects_a_bad_duration(tmp_path: Path) -> None:
    url = asyncio.run(_make(tmp_path / "jobs.db"))
    result = runner.invoke(app, ["jobs", "prune", "--database-url", url, "--older-than", "soon"])
    assert result.exit_code == 2
    assert "not a duration" in result.output
