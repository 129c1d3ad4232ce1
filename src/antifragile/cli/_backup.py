"""``antifragile backup`` and ``antifragile restore``: a SQLite database copied while the
service runs, and put back while it does not.

The backup goes through SQLite's online backup API: one consistent snapshot of the database
(WAL included) while workers keep writing, written to a temporary file beside the target,
checked (``PRAGMA integrity_check``), switched to a self-contained rollback journal and only
then renamed into place -- a half-written backup never carries the final name.

A restore refuses while any process has the database open (it asks SQLite's own lock on the
WAL index), checks the backup first (integrity, an antifragile schema this version can run),
keeps the current database beside it as ``<name>.before-restore-<UTC time>`` and removes
the old WAL files, so nothing of the replaced database is replayed into the restored one.

PostgreSQL has its own tools (``pg_dump`` / ``pg_restore``); both commands say so.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from antifragile.cli._output import JsonOpt, YesOpt, confirm, console_for, echo_json
from antifragile.errors import AntifragileError, ConfigurationError, ErrorCode, redact
from antifragile.stores._migrations import MIGRATIONS_TABLE, latest_version
from antifragile.stores._sqlite import parse_url

DATABASE_URL_ENV = "ANTIFRAGILE_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///antifragile.db"
#: pages copied per step of the online backup (the writers get the lock between steps)
BACKUP_PAGES = 256
#: the byte of the ``-shm`` file every connection to a WAL database holds a shared lock on
#: while it is open (SQLite's unix VFS: ``UNIX_SHM_DMS``, after the 8 WAL-index locks at 120)
_SHM_DMS_BYTE = 128

DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        envvar=DATABASE_URL_ENV,
        help="The job database (sqlite:///path).",
    ),
]


class BackupError(AntifragileError):
    """A backup or restore that cannot be done as asked (nothing was changed)."""

    default_code = ErrorCode.CONFIGURATION


@dataclass(frozen=True, slots=True)
class Checked:
    """A database file that passed :func:`check_database_file`."""

    path: Path
    schema_version: int
    jobs: int
    size: int


def sqlite_path(url: str, what: str) -> Path:
    """The file of a ``sqlite://`` URL; PostgreSQL and others get a pointer to their tools."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgresql", "postgres"):
        tool = "pg_dump -Fc" if what == "backup" else "pg_restore (into a stopped service)"
        raise BackupError(
            f"antifragile {what} copies SQLite databases; for PostgreSQL use {tool} "
            "(see the deployment guide)"
        )
    if scheme != "sqlite":
        raise BackupError(f"antifragile {what} needs a sqlite:/// database URL, not {scheme!r}")
    return Path(parse_url(url)[0])


def check_database_file(path: Path) -> Checked:
    """*path* is a whole SQLite database with an antifragile schema this version can run."""
    if not path.is_file():
        raise BackupError(f"no file at {str(path)!r}")
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        ) as conn:
            verdict = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            if verdict != ["ok"]:
                raise BackupError(
                    f"{str(path)!r} failed SQLite's integrity check: {'; '.join(verdict[:3])}"
                )
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            if MIGRATIONS_TABLE not in tables or "antifragile_jobs" not in tables:
                raise BackupError(f"{str(path)!r} is not an antifragile database")
            version = conn.execute(f"SELECT max(version) FROM {MIGRATIONS_TABLE}").fetchone()[0]
            jobs = conn.execute("SELECT count(*) FROM antifragile_jobs").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{str(path)!r} is not a readable SQLite database ({exc})") from None
    latest = latest_version("sqlite")
    if int(version or 0) > latest:
        raise BackupError(
            f"{str(path)!r} has schema version {version}, newer than this antifragile knows "
            f"({latest}): restore it with the version that made it"
        )
    return Checked(path, int(version or 0), int(jobs), path.stat().st_size)


def database_in_use(path: Path) -> bool:
    """Whether a process has the WAL database *path* open (or is writing to it).

    Every connection to a WAL database holds a shared lock on one byte of its ``-shm`` file
    for as long as it is open; an exclusive lock on that byte fails while one does.
    """
    shm = Path(f"{path}-shm")
    if shm.exists():
        fd = os.open(shm, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return True
            raise
        else:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_BYTE)
        finally:
            os.close(fd)
    if not path.exists():
        return False
    # a database in rollback-journal mode: busy only while a transaction runs
    with contextlib.closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as conn:
        try:
            conn.execute("BEGIN EXCLUSIVE")
        except sqlite3.OperationalError:
            return True
        conn.execute("ROLLBACK")
    return False


def online_backup(source: Path, target: Path) -> Checked:
    """Copy the database *source* to *target* while others use it; the checked copy."""
    part = target.with_name(f".{target.name}.part-{os.getpid()}")
    part.unlink(missing_ok=True)
    try:
        with (
            contextlib.closing(sqlite3.connect(source, timeout=30.0)) as src,
            contextlib.closing(sqlite3.connect(part)) as dst,
        ):
            src.execute("PRAGMA busy_timeout = 30000")
            src.backup(dst, pages=BACKUP_PAGES)
            # one self-contained file: no -wal beside the copy
            dst.execute("PRAGMA journal_mode = DELETE")
        with open(part, "rb+") as handle:
            os.fsync(handle.fileno())
        checked = check_database_file(part)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return Checked(target, checked.schema_version, checked.jobs, checked.size)


def _settle(path: Path) -> None:
    """Fold *path*'s WAL into the file (it was left by a process that stopped abruptly)."""
    with contextlib.closing(sqlite3.connect(path, timeout=5.0)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def put_back(backup: Path, target: Path, now: float) -> Path | None:
    """Replace *target* with a copy of *backup*; the name the old database was kept under."""
    kept: Path | None = None
    part = target.with_name(f".{target.name}.restore-{os.getpid()}")
    try:
        with (
            contextlib.closing(sqlite3.connect(f"file:{backup}?mode=ro", uri=True)) as src,
            contextlib.closing(sqlite3.connect(part)) as dst,
        ):
            src.backup(dst, pages=BACKUP_PAGES)
            dst.execute("PRAGMA journal_mode = DELETE")
        with open(part, "rb+") as handle:
            os.fsync(handle.fileno())
        if target.exists():
            _settle(target)
            stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
            kept = target.with_name(f"{target.name}.before-restore-{stamp}")
            os.replace(target, kept)
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)
    return kept


def _fail(exc: AntifragileError) -> typer.Exit:
    typer.echo(f"error {exc.code}: {exc}", err=True)
    return typer.Exit(1)


def backup(
    path: Annotated[Path, typer.Argument(help="The backup file to write.", show_default=False)],
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy the SQLite job database to PATH while the service keeps running (a consistent
    snapshot, integrity-checked). For PostgreSQL, use pg_dump."""
    console = console_for()
    try:
        source = sqlite_path(database_url, "backup")
        if not source.is_file():
            raise BackupError(f"no database at {str(source)!r} (check --database-url)")
        if path.resolve() == source.resolve():
            raise BackupError("the backup file is the database itself")
        if path.is_dir():
            raise BackupError(f"{str(path)!r} is a directory: name the backup file")
        if path.exists():
            confirm(f"overwrite the existing backup {str(path)!r}", yes=yes)
        started = time.monotonic()
        made = online_backup(source, path)
    except (AntifragileError, OSError) as exc:
        raise _fail(_error(exc)) from None
    took = time.monotonic() - started
    if as_json:
        echo_json(_summary(made, database_url, took))
        return
    console.print(
        f"backed up {redact(database_url)} to {made.path}: {made.size} bytes, {made.jobs} job(s), "
        f"schema version {made.schema_version}, integrity ok ({took:.2f}s)"
    )


def restore(
    path: Annotated[Path, typer.Argument(help="The backup file to restore.", show_default=False)],
    database_url: DatabaseUrl = DEFAULT_DATABASE_URL,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Replace the SQLite job database with the backup PATH. Stop the service, workers and
    scheduler first: it refuses while the database is open; the current database is kept
    beside it. For PostgreSQL, use pg_restore."""
    console = console_for()
    try:
        target = sqlite_path(database_url, "restore")
        checked = check_database_file(path)
        if database_in_use(target):
            raise BackupError(
                f"{str(target)!r} is open in another process: stop the service, its workers "
                "and scheduler before restoring"
            )
        confirm(f"replace {str(target)!r} with the backup {str(path)!r}", yes=yes)
        kept = put_back(path, target, time.time())
    except (AntifragileError, OSError) as exc:
        raise _fail(_error(exc)) from None
    if as_json:
        echo_json({**_summary(checked, database_url, None), "kept": kept and str(kept)})
        return
    console.print(
        f"restored {target} from {path}: {checked.jobs} job(s), schema version "
        f"{checked.schema_version}" + (f"; the replaced database is kept as {kept}" if kept else "")
    )


def _error(exc: BaseException) -> AntifragileError:
    if isinstance(exc, AntifragileError):
        return exc
    return ConfigurationError(f"{type(exc).__name__}: {exc}")


def _summary(checked: Checked, url: str, took: float | None) -> dict[str, Any]:
    return {
        "database": redact(url),
        "file": str(checked.path),
        "size": checked.size,
        "jobs": checked.jobs,
        "schema_version": checked.schema_version,
        "integrity": "ok",
        **({} if took is None else {"seconds": round(took, 3)}),
    }
