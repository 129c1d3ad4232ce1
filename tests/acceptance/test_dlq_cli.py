"""``antifragile dlq ...``, ``antifragile jobs list`` and ``antifragile worker`` against a real
SQLite file holding dead jobs made by a real worker.

Two jobs die before the commands run: ``charge`` (queue payments, provider stripe) three days
ago on a 422, at once; ``notify`` (queue email, provider resend) a minute ago after two 503s.
Their payloads and errors carry credentials that must never be printed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from antifragile import (
    Constant,
    FakeClock,
    InvalidRequestError,
    Retry,
    UpstreamUnavailableError,
)
from antifragile.cli import app
from antifragile.jobs import JobContext, Jobs, JobState, Worker
from antifragile.jobs._ids import short_id
from antifragile.observability import reference

runner = CliRunner()
SECRET_NOTE = "Bearer abcdefghijklmnop"
SECRET_KEY = "re_live0123456789abcdef"
LAUNCH = "from antifragile.cli import main; main()"


@dataclass
class Dlq:
    url: str
    path: Path
    charge: str  # dead three days ago (VALIDATION, 422)
    notify: str  # dead a minute ago (UPSTREAM_UNAVAILABLE, 503 twice)
    done: str  # succeeded

    def state(self, job_id: str) -> tuple[str, int, str | None]:
        with sqlite3.connect(self.path) as conn:
            row = conn.execute(
                "SELECT state, attempts, resolution FROM antifragile_jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
        assert row is not None
        return row[0], row[1], row[2]


def _declare(jobs: Jobs) -> None:
    @jobs.job(queue="payments", provider="stripe", retry=Retry(attempts=5))
    async def charge(ctx: JobContext, order_id: int, note: str) -> None:
        raise InvalidRequestError("HTTP 422 card declined", status=422, provider="stripe")

    @jobs.job(queue="email", provider="resend", retry=Retry(attempts=2, backoff=Constant(1)))
    async def notify(ctx: JobContext, to: str) -> None:
        raise UpstreamUnavailableError(
            f"HTTP 503 from https://api.test/emails?api_key={SECRET_KEY}",
            status=503,
            provider="resend",
        )

    @jobs.job(queue="email")
    async def hello(ctx: JobContext) -> str:
        return "hi"


async def _make(path: Path) -> Dlq:
    url = f"sqlite:///{path}"
    now = time.time()
    old = Jobs(database_url=url, clock=FakeClock(start=0, wall_offset=now - 3 * 86400))
    recent = Jobs(database_url=url, clock=FakeClock(start=0, wall_offset=now - 60))
    for jobs in (old, recent):
        _declare(jobs)
    async with old:
        charge = await old.registry["charge"].enqueue(7, SECRET_NOTE)
        await Worker(old).run_until_idle()
    async with recent:
        notify = await recent.registry["notify"].enqueue("a@example.com")
        done = await recent.registry["hello"].enqueue()
        worker = Worker(recent)
        await worker.run_until_idle()
        assert isinstance(recent.clock, FakeClock)
        recent.clock.advance(1)
        await worker.run_until_idle()
    return Dlq(url, path, charge.id, notify.id, done.id)


@pytest.fixture
def dlq(tmp_path: Path) -> Dlq:
    made = asyncio.run(_make(tmp_path / "jobs.db"))
    assert made.state(made.charge)[0] == "dead"
    assert made.state(made.notify)[0] == "dead"
    return made


def cli(*args: str) -> Result:
    result = runner.invoke(app, list(args), env={"COLUMNS": "250"})
    assert "Traceback" not in result.output
    return result


def test_list_shows_dead_jobs_and_filters_them(dlq: Dlq) -> None:
    """dlq list shows every dead job with its code and status; --queue, --provider, --code,
    --older-than and --newer-than narrow it."""
    everything = cli("dlq", "list", "--database-url", dlq.url)
    assert everything.exit_code == 0, everything.output
    assert short_id(dlq.charge) in everything.output
    assert short_id(dlq.notify) in everything.output
    assert short_id(dlq.done) not in everything.output
    assert "VALIDATION" in everything.output
    assert "UPSTREAM_UNAVAILABLE" in everything.output
    assert SECRET_KEY not in everything.output
    narrowed = {
        ("--queue", "payments"): dlq.charge,
        ("--provider", "resend"): dlq.notify,
        ("--code", "VALIDATION"): dlq.charge,
        ("--older-than", "1d"): dlq.charge,
        ("--newer-than", "1h"): dlq.notify,
    }
    for option, expected in narrowed.items():
        result = cli("dlq", "list", "--database-url", dlq.url, *option)
        assert result.exit_code == 0, result.output
        other = dlq.notify if expected == dlq.charge else dlq.charge
        assert short_id(expected) in result.output, option
        assert short_id(other) not in result.output, option


def test_list_json_is_machine_readable(dlq: Dlq) -> None:
    """dlq list --json prints the entries as JSON, payloads redacted."""
    result = cli("dlq", "list", "--database-url", dlq.url, "--json")
    assert result.exit_code == 0, result.output
    entries = {e["id"]: e for e in json.loads(result.output)}
    assert set(entries) == {dlq.charge, dlq.notify}
    assert entries[dlq.charge]["payload"] == {"order_id": 7, "note": "Bearer [REDACTED]"}
    assert entries[dlq.notify]["reason"] == "attempts_exhausted"


def test_show_gives_redacted_payload_and_every_attempt(dlq: Dlq) -> None:
    """dlq show prints the payload redacted, each attempt (time, code, HTTP status, message),
    the first and last failure and the reason."""
    result = cli("dlq", "show", dlq.notify, "--database-url", dlq.url)
    assert result.exit_code == 0, result.output
    out = result.output
    assert SECRET_KEY not in out
    assert "[REDACTED]" in out
    assert out.count("UPSTREAM_UNAVAILABLE") >= 2
    assert out.count("503") >= 2
    assert "first failure" in out
    assert "last failure" in out
    assert "attempts_exhausted" in out
    assert "a@example.com" not in out  # the payload holds the address's reference
    assert reference("a@example.com") in out
    charge = cli("dlq", "show", dlq.charge, "--database-url", dlq.url)
    assert charge.exit_code == 0
    assert "abcdefghijklmnop" not in charge.output
    assert "Bearer [REDACTED]" in charge.output
    assert "not_retryable" in charge.output
    assert "422" in charge.output


def test_bad_ids_are_clear_errors_not_tracebacks(dlq: Dlq) -> None:
    """An unknown id, or a job that is not dead, exits 1 with a NOT_FOUND line; text that
    cannot be an id with a BAD_REQUEST line."""
    for args, code in (
        (("dlq", "show", "ffffffff"), "NOT_FOUND"),
        (("dlq", "show", dlq.done), "NOT_FOUND"),
        (("dlq", "retry", "ffffffff"), "NOT_FOUND"),
        (("dlq", "retry", dlq.charge, "ffffffff"), "NOT_FOUND"),
        (("dlq", "resolve", "ffffffff", "--reason", "x"), "NOT_FOUND"),
        (("dlq", "show", "nope"), "BAD_REQUEST"),
        (("dlq", "retry", dlq.charge, "nope"), "BAD_REQUEST"),
    ):
        result = cli(*args, "--database-url", dlq.url)
        assert result.exit_code == 1, (args, result.output)
        assert code in result.output, args
    assert dlq.state(dlq.charge)[0] == "dead"  # nothing changed when one id was bad


def test_retry_one_job_redrives_it(dlq: Dlq) -> None:
    """dlq retry ID sends one dead job back to the queue with its attempts reset; a second
    retry of the same id is refused (it is no longer dead)."""
    result = cli("dlq", "retry", dlq.notify, "--database-url", dlq.url)
    assert result.exit_code == 0, result.output
    assert "redrove 1 job(s)" in result.output
    assert dlq.state(dlq.notify)[:2] == ("queued", 0)
    assert dlq.state(dlq.charge)[0] == "dead"
    again = cli("dlq", "retry", dlq.notify, "--database-url", dlq.url)
    assert again.exit_code == 1
    assert "not in the dead-letter queue" in again.output


def test_retry_matching_or_all(dlq: Dlq) -> None:
    """dlq retry --queue Q redrives the matching dead jobs; --all every dead job; naming
    nothing is refused."""
    nothing = cli("dlq", "retry", "--database-url", dlq.url)
    assert nothing.exit_code == 1
    assert "name the jobs" in nothing.output
    some = cli("dlq", "retry", "--queue", "payments", "--yes", "--database-url", dlq.url)
    assert some.exit_code == 0
    assert "redrove 1 job(s)" in some.output
    assert dlq.state(dlq.charge)[0] == "queued"
    assert dlq.state(dlq.notify)[0] == "dead"
    everything = cli("dlq", "retry", "--all", "--yes", "--database-url", dlq.url)
    assert everything.exit_code == 0
    assert "redrove 1 job(s)" in everything.output
    assert dlq.state(dlq.notify)[0] == "queued"


def test_resolve_needs_a_reason_and_keeps_it(dlq: Dlq) -> None:
    """dlq resolve ID --reason closes the job with the reason; without one it is refused;
    list --resolved still shows it."""
    missing = cli("dlq", "resolve", dlq.charge, "--database-url", dlq.url)
    assert missing.exit_code == 1
    assert "--reason is required" in missing.output
    result = cli(
        "dlq", "resolve", dlq.charge, "--reason", "refunded by hand", "--database-url", dlq.url
    )
    assert result.exit_code == 0
    assert "resolved 1 job(s)" in result.output
    assert dlq.state(dlq.charge) == ("resolved", 1, "refunded by hand")
    listed = cli("dlq", "list", "--database-url", dlq.url)
    assert short_id(dlq.charge) not in listed.output
    with_resolved = cli("dlq", "list", "--resolved", "--database-url", dlq.url)
    assert short_id(dlq.charge) in with_resolved.output
    assert "(resolved)" in with_resolved.output


def test_purge_deletes_only_entries_older_than_the_age(dlq: Dlq) -> None:
    """dlq purge --older-than 2d deletes the three-day-old entry and keeps the recent one;
    --resolved-only keeps dead entries."""
    kept = cli(
        "dlq", "purge", "--older-than", "2d", "--resolved-only", "--yes", "--database-url", dlq.url
    )
    assert kept.exit_code == 0
    assert "nothing to purge" in kept.output
    result = cli("dlq", "purge", "--older-than", "2d", "--yes", "--database-url", dlq.url)
    assert result.exit_code == 0
    assert "purged 1 job(s)" in result.output
    with sqlite3.connect(dlq.path) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM antifragile_jobs")}
    assert ids == {dlq.notify, dlq.done}


def test_jobs_list_shows_queues_and_jobs(dlq: Dlq) -> None:
    """jobs list shows per-queue counts and recent jobs; --state narrows the list."""
    result = cli("jobs", "list", "--database-url", dlq.url)
    assert result.exit_code == 0, result.output
    assert "payments" in result.output
    assert "email" in result.output
    assert short_id(dlq.done) in result.output
    assert short_id(dlq.charge) in result.output
    dead = cli("jobs", "list", "--state", "succeeded", "--database-url", dlq.url, "--json")
    assert dead.exit_code == 0, dead.output
    listed = json.loads(dead.output)
    assert [j["id"] for j in listed["jobs"]] == [dlq.done]
    assert {q["queue"] for q in listed["queues"]} == {"payments", "email"}


def test_a_missing_database_or_bad_options_fail_cleanly(tmp_path: Path) -> None:
    """A database file that does not exist is an error (and is not created); a malformed
    duration is a usage error; a worker whose --app cannot be imported says so."""
    missing = tmp_path / "absent.db"
    result = cli("dlq", "list", "--database-url", f"sqlite:///{missing}")
    assert result.exit_code == 1
    assert "no database" in result.output
    assert not missing.exists()
    bad = cli("dlq", "list", "--older-than", "soon", "--database-url", f"sqlite:///{missing}")
    assert bad.exit_code == 2
    assert "not a duration" in bad.output
    unknown = cli("worker", "--app", "no_such_module_here:jobs")
    assert unknown.exit_code == 1
    assert "cannot import" in unknown.output


def test_database_url_comes_from_the_environment(dlq: Dlq) -> None:
    """ANTIFRAGILE_DATABASE_URL names the database when --database-url is not given."""
    result = runner.invoke(
        app, ["dlq", "list"], env={"ANTIFRAGILE_DATABASE_URL": dlq.url, "COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    assert short_id(dlq.notify) in result.output


def test_redriven_jobs_run_again_under_a_worker(dlq: Dlq) -> None:
    """A job redriven from the CLI is picked up by a worker again, with its history kept."""
    assert cli("dlq", "retry", dlq.charge, "--database-url", dlq.url).exit_code == 0

    async def rerun() -> tuple[JobState, int]:
        jobs = Jobs(database_url=dlq.url)
        _declare(jobs)
        async with jobs:
            await Worker(jobs).run_until_idle()
            job = await jobs.get(dlq.charge)
            assert job is not None
            return job.state, len(job.history)

    assert asyncio.run(rerun()) == (JobState.DEAD, 2)


def test_worker_concurrency_defaults_from_the_environment(tmp_path: Path) -> None:
    """``antifragile worker`` takes its --concurrency from ANTIFRAGILE_WORKER_CONCURRENCY (the
    setting the service's own worker reads): a real worker process says so when it starts; the
    flag still wins; an invalid value is a usage error that names the variable."""
    (tmp_path / "tiny_worker_app.py").write_text(
        "from antifragile.jobs import Jobs\n"
        f"jobs = Jobs(database_url='sqlite:///{tmp_path / 'w.db'}')\n"
    )
    env = {**os.environ, "ANTIFRAGILE_WORKER_CONCURRENCY": "3", "COLUMNS": "250"}
    env.pop("ANTIFRAGILE_WORKER_METRICS_PORT", None)

    def banner(*extra: str) -> str:
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "worker", "--app", "tiny_worker_app:jobs", *extra],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        watchdog = threading.Timer(30.0, process.kill)
        watchdog.start()
        try:
            assert process.stderr is not None
            line = ""
            while "antifragile worker" not in line:
                line = process.stderr.readline()
                assert line, "the worker exited before saying how it runs"
        finally:
            watchdog.cancel()
            process.terminate()
            process.communicate(timeout=20)
        return line

    assert "concurrency 3" in banner()
    assert "concurrency 5" in banner("--concurrency", "5")
    bad = runner.invoke(
        app,
        ["worker", "--app", "tiny_worker_app:jobs"],
        env={"ANTIFRAGILE_WORKER_CONCURRENCY": "0", "COLUMNS": "250"},
    )
    assert bad.exit_code == 2
    assert "ANTIFRAGILE_WORKER_CONCURRENCY" in bad.output


# -- ids, confirmation, --dry-run, --json, piped tables -----------------------------------------


def test_jobs_are_named_by_short_id_or_prefix(dlq: Dlq) -> None:
    """dlq show and jobs show take the full id, the short id the tables show (any case) or a
    prefix; a prefix several jobs share is refused with every candidate named; text that
    cannot be an id is a BAD_REQUEST."""
    by_short = cli("dlq", "show", short_id(dlq.charge).upper(), "--json", "--database-url", dlq.url)
    assert by_short.exit_code == 0, by_short.output
    assert json.loads(by_short.output)["id"] == dlq.charge
    assert json.loads(by_short.output)["short_id"] == short_id(dlq.charge)
    by_prefix = cli("jobs", "show", dlq.done[:-4], "--json", "--database-url", dlq.url)
    assert by_prefix.exit_code == 0, by_prefix.output
    assert json.loads(by_prefix.output)["state"] == "succeeded"
    shared = dlq.notify[:6]  # made in the same second: their ids begin with the same time
    assert dlq.done.startswith(shared)
    ambiguous = cli("dlq", "show", shared, "--database-url", dlq.url)
    assert ambiguous.exit_code == 1
    assert "CONFLICT" in ambiguous.output
    assert dlq.notify in ambiguous.output
    assert dlq.done in ambiguous.output
    malformed = cli("jobs", "show", "01a-", "--database-url", dlq.url)
    assert malformed.exit_code == 1
    assert "BAD_REQUEST" in malformed.output
    retried = cli("dlq", "retry", short_id(dlq.notify), "--json", "--database-url", dlq.url)
    assert json.loads(retried.output)["ids"] == [dlq.notify]
    assert dlq.state(dlq.notify)[0] == "queued"


def test_bulk_changes_without_yes_are_refused_when_nobody_can_answer(dlq: Dlq) -> None:
    """purge, retry --all/filters and resolve --all, with input that is not a terminal and
    no --yes: exit 2, one line, nothing changed."""
    for args in (
        ("dlq", "purge", "--older-than", "0s"),
        ("dlq", "retry", "--all"),
        ("dlq", "retry", "--queue", "payments"),
        ("dlq", "resolve", "--all", "--reason", "x"),
    ):
        result = cli(*args, "--database-url", dlq.url)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.count("\n") == 1, result.output
        assert "CONFIRMATION_REQUIRED" in result.output
    assert dlq.state(dlq.charge)[0] == "dead"
    assert dlq.state(dlq.notify)[0] == "dead"


def test_dry_run_lists_what_would_change_and_changes_nothing(dlq: Dlq) -> None:
    """--dry-run lists the jobs a purge or a bulk retry would touch, as a table or JSON, and
    leaves them as they are; --yes then does exactly that."""
    table_out = cli("dlq", "purge", "--older-than", "0s", "--dry-run", "--database-url", dlq.url)
    assert table_out.exit_code == 0, table_out.output
    assert short_id(dlq.charge) in table_out.output
    assert short_id(dlq.notify) in table_out.output
    assert "nothing changed (2 job(s) match)" in table_out.output
    plan = cli("dlq", "retry", "--all", "--dry-run", "--json", "--database-url", dlq.url)
    data = json.loads(plan.output)
    assert data["dry_run"] is True
    assert data["count"] == 0
    assert set(data["ids"]) == {dlq.charge, dlq.notify}
    assert dlq.state(dlq.charge)[0] == "dead"
    purged = cli("dlq", "purge", "--older-than", "0s", "--yes", "--json", "--database-url", dlq.url)
    assert json.loads(purged.output)["count"] == 2
    with sqlite3.connect(dlq.path) as conn:
        left = {row[0] for row in conn.execute("SELECT id FROM antifragile_jobs")}
    assert left == {dlq.done}


def test_on_a_terminal_the_operator_is_asked(dlq: Dlq, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a terminal, a bulk change asks first: "n" changes nothing (exit 1), "y" goes
    ahead; --json on resolve reports the reason and the ids."""
    monkeypatch.setattr("antifragile.cli._output.stdin_is_terminal", lambda: True)
    args = ["dlq", "resolve", "--all", "--reason", "refunded", "--json", "--database-url", dlq.url]
    declined = runner.invoke(app, args, input="n\n")
    assert declined.exit_code == 1, declined.output
    assert "resolve 2 job(s)?" in declined.output
    assert dlq.state(dlq.charge)[0] == "dead"
    accepted = runner.invoke(app, args, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    answer = json.loads(accepted.output[accepted.output.index("{") :])
    assert answer["count"] == 2
    assert answer["reason"] == "refunded"
    assert dlq.state(dlq.charge) == ("resolved", 1, "refunded")


def test_piped_tables_are_never_cut(dlq: Dlq) -> None:
    """Piped into another program (no terminal, no COLUMNS), every row of dlq list is one
    whole line with the job's short id and its age; --wide shows full ids and errors."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    args = [sys.executable, "-c", LAUNCH, "dlq", "list", "--database-url", dlq.url]
    piped = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    rows = [line for line in piped.stdout.splitlines() if "payments" in line or "email" in line]
    assert len(rows) == 2, piped.stdout
    assert any(short_id(dlq.charge) in row and "ago" in row for row in rows)
    assert max(len(line) for line in piped.stdout.splitlines()) > 80
    wide = subprocess.run([*args, "--wide"], env=env, capture_output=True, text=True, check=True)
    assert dlq.charge in wide.stdout
    assert dlq.notify in wide.stdout
    assert "[REDACTED]" in wide.stdout  # the whole error, its secret redacted
    assert SECRET_KEY not in wide.stdout


def test_migrate_reports_as_json(tmp_path: Path) -> None:
    """migrate --json says which migrations it applied and where the schema stands."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    first = json.loads(cli("migrate", "--json", "--database-url", url).output)
    assert first["applied"]
    assert first["version"] == first["latest"]
    assert first["pending"] == []
    again = json.loads(cli("migrate", "--check", "--json", "--database-url", url).output)
    assert again["applied"] == []
