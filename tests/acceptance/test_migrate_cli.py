"""``antifragile migrate`` against real SQLite files and a real PostgreSQL database."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from antifragile.cli import app
from antifragile.stores._migrations import latest_version

runner = CliRunner()


def test_check_reports_pending_then_migrate_applies(tmp_path: Path) -> None:
    """--check exits 1 while migrations are pending; migrate applies them; --check is then 0."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    pending = runner.invoke(app, ["migrate", "--check", "--database-url", url])
    assert pending.exit_code == 1, pending.output
    assert "pending" in pending.output
    done = runner.invoke(app, ["migrate", "--database-url", url])
    assert done.exit_code == 0, done.output
    assert "applied now" in done.output
    again = runner.invoke(app, ["migrate", "--check", "--database-url", url])
    assert again.exit_code == 0, again.output
    with sqlite3.connect(tmp_path / "state.db") as conn:
        versions = [row[0] for row in conn.execute("SELECT version FROM antifragile_migrations")]
    assert versions == list(range(1, latest_version("sqlite") + 1))


def test_database_url_comes_from_the_environment(tmp_path: Path) -> None:
    """ANTIFRAGILE_DATABASE_URL names the store when --database-url is not given."""
    url = f"sqlite:///{tmp_path / 'env.db'}"
    result = runner.invoke(app, ["migrate"], env={"ANTIFRAGILE_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env.db").exists()


def test_a_newer_schema_is_refused_with_a_clear_code(tmp_path: Path) -> None:
    """A database migrated by a newer release is refused: SCHEMA_VERSION, exit 1, no traceback."""
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    assert runner.invoke(app, ["migrate", "--database-url", url]).exit_code == 0
    with sqlite3.connect(tmp_path / "newer.db") as conn:
        conn.execute(
            "INSERT INTO antifragile_migrations (version, name, applied_at) VALUES (999, 'x', 0)"
        )
    result = runner.invoke(app, ["migrate", "--database-url", url])
    assert result.exit_code == 1
    assert "SCHEMA_VERSION" in result.output
    assert "Traceback" not in result.output


def test_unreachable_store_gives_an_error_code_and_hides_the_password() -> None:
    """A store that cannot be reached gives STORE_UNAVAILABLE; the password is never printed."""
    url = "postgresql://app:hunter2secret@127.0.0.1:1/test?connect_timeout=1"
    result = runner.invoke(app, ["migrate", "--database-url", url])
    assert result.exit_code == 1
    assert "STORE_UNAVAILABLE" in result.output
    assert "hunter2secret" not in result.output


def test_stores_without_a_schema_need_nothing() -> None:
    """Redis and memory stores have no schema: migrate says so and succeeds."""
    result = runner.invoke(app, ["migrate", "--database-url", "memory://"])
    assert result.exit_code == 0
    assert "no schema" in result.output


@pytest.fixture
def fresh_database(postgres_url: str) -> Iterator[str]:
    name = f"af_cli_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_migrates_explicitly(fresh_database: str) -> None:
    """On PostgreSQL, migrate creates the schema in an empty database and records the newest
    version."""
    assert (
        runner.invoke(app, ["migrate", "--check", "--database-url", fresh_database]).exit_code == 1
    )
    result = runner.invoke(app, ["migrate", "--database-url", fresh_database])
    assert result.exit_code == 0, result.output
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute("SELECT max(version) FROM antifragile_migrations").fetchone()
    assert row is not None
    assert row[0] == latest_version("postgres")
