"""``antifragile backup`` and ``antifragile restore`` on real SQLite job databases, with another
process writing to the database the way a running service does.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from antifragile.cli import app
from antifragile.jobs import JobContext, Jobs

runner = CliRunner()

# a stand-in for the service: enqueues jobs into the database without pause until stdin closes
WRITER = """
import asyncio, sys, threading
from antifragile.jobs import Jobs

stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

async def main():
    jobs = Jobs(database_url=sys.argv[1])

    @jobs.job(queue="email")
    async def notify(ctx, n):
        return n

    async with jobs:
        n = 0
        while not stop.is_set():
            await notify.enqueue(n)
            n += 1
            if n == 50:
                print("writing", flush=True)
    print(n, flush=True)

asyncio.run(main())
"""


def cli(*args: str) -> Result:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


async def _seed(url: str, count: int) -> None:
    jobs = Jobs(database_url=url)

    @jobs.job(queue="email")
    async def notify(ctx: JobContext, n: int) -> int:
        return n

    async with jobs:
        for n in range(count):
            await notify.enqueue(n)


def _jobs_in(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT count(*) FROM antifragile_jobs").fetchone()[0])


@pytest.fixture
def database(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "live.db"
    url = f"sqlite:///{path}"
    asyncio.run(_seed(url, 20))
    return path, url


@pytest.fixture
def writer(database: tuple[Path, str]) -> Iterator[subprocess.Popen[str]]:
    """Another process writing jobs into the database until the test ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, database[1]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "writing"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


def _stop(process: subprocess.Popen[str]) -> int:
    """Stop the writer; how many jobs it wrote."""
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.close()
    written = int(process.stdout.readline())
    assert process.wait(timeout=60) == 0
    return written


def test_backup_while_another_process_writes_then_restore(
    database: tuple[Path, str], writer: subprocess.Popen[str], tmp_path: Path
) -> None:
    """A backup taken while jobs are being written is one consistent, self-contained file;
    restore refuses while the writer has the database open, and without --yes; once the
    writer stopped it puts the backup back and keeps the replaced database beside it."""
    path, url = database
    copy = tmp_path / "backups" / "copy.db"
    copy.parent.mkdir()
    made = cli("backup", str(copy), "--database-url", url, "--json")
    assert made.exit_code == 0, made.output
    report = json.loads(made.output)
    assert report["integrity"] == "ok"
    assert report["jobs"] >= 20 + 50
    assert sorted(p.name for p in copy.parent.iterdir()) == ["copy.db"]  # no -wal, no .part
    with closing(sqlite3.connect(copy)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    busy = cli("restore", str(copy), "--database-url", url, "--yes")
    assert busy.exit_code == 1
    assert "open in another process" in busy.output

    written = _stop(writer)
    assert _jobs_in(path) == 20 + written
    unconfirmed = cli("restore", str(copy), "--database-url", url)
    assert unconfirmed.exit_code == 2
    assert "CONFIRMATION_REQUIRED" in unconfirmed.output
    assert _jobs_in(path) == 20 + written

    restored = cli("restore", str(copy), "--database-url", url, "--yes", "--json")
    assert restored.exit_code == 0, restored.output
    kept = Path(json.loads(restored.output)["kept"])
    assert _jobs_in(path) == report["jobs"]
    assert _jobs_in(kept) == 20 + written
    assert not Path(f"{path}-wal").exists()


def test_a_backup_that_is_not_sound_is_never_restored(
    database: tuple[Path, str], tmp_path: Path
) -> None:
    """restore checks the file first: not SQLite, not an antifragile database, or a schema
    newer than this version -- one error line, exit 1, the database untouched."""
    path, url = database
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    foreign = tmp_path / "foreign.db"
    with closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE t (x)")
    newer = tmp_path / "newer.db"
    assert cli("backup", str(newer), "--database-url", url).exit_code == 0
    with closing(sqlite3.connect(newer)) as conn, conn:
        conn.execute(
            "INSERT INTO antifragile_migrations (version, name, applied_at) VALUES (9999, 'x', 0)"
        )
    for backup, message in (
        (garbage, "not a readable SQLite database"),
        (foreign, "not an antifragile database"),
        (newer, "newer than this antifragile knows"),
        (tmp_path / "absent.db", "no file at"),
    ):
        result = cli("restore", str(backup), "--database-url", url, "--yes")
        assert result.exit_code == 1, (backup, result.output)
        assert message in result.output
        assert result.output.count("\n") == 1
    assert _jobs_in(path) == 20


def test_postgresql_is_pointed_to_its_own_tools(tmp_path: Path) -> None:
    """backup and restore of a PostgreSQL URL name pg_dump / pg_restore instead (no
    connection is made); a missing SQLite database is an error, and is not created."""
    pg = "postgresql://user:secret@127.0.0.1:1/db"
    dumped = cli("backup", str(tmp_path / "x.db"), "--database-url", pg)
    assert dumped.exit_code == 1
    assert "pg_dump" in dumped.output
    assert "secret" not in dumped.output
    restored = cli("restore", str(tmp_path / "x.db"), "--database-url", pg, "--yes")
    assert restored.exit_code == 1
    assert "pg_restore" in restored.output
    missing = tmp_path / "missing.db"
    absent = cli("backup", str(tmp_path / "y.db"), "--database-url", f"sqlite:///{missing}")
    assert absent.exit_code == 1
    assert "no database" in absent.output
    assert not missing.exists()
