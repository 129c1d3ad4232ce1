"""The deployment kit under ``deploy/``, tested as far as this machine can run it: no container
engine, no Caddy or nginx here. The entry point script runs for real (with a stand-in command,
and with the real ``antifragile`` against SQLite); the systemd units go through
``systemd-analyze verify`` when it is installed; the compose file is checked against the
Compose Specification's JSON schema (``tests/data/compose-spec.json``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from antifragile.cli import COMMAND_EXTRAS
from antifragile.stores._migrations import latest_version

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENTRYPOINT = DEPLOY / "docker-entrypoint.sh"
BIN = Path(sys.executable).parent

# prints how it was called and the secrets it was given
STANDIN = """#!/bin/sh
echo "args: $*"
echo "admin: ${ANTIFRAGILE_ADMIN_API_KEYS:-unset}"
echo "admin file: ${ANTIFRAGILE_ADMIN_API_KEYS_FILE:-unset}"
"""


def _entrypoint(
    *args: str, env: dict[str, str], path: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": f"{path or BIN}:/usr/bin:/bin", "HOME": str(path or BIN)}
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def standin(tmp_path: Path) -> Path:
    """A directory whose ``antifragile`` only reports its arguments and environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    command = bin_dir / "antifragile"
    command.write_text(STANDIN)
    command.chmod(command.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def test_entrypoint_runs_antifragile_subcommands_and_anything_else(standin: Path) -> None:
    """A subcommand runs ``antifragile <subcommand>``; options alone, or nothing, run
    ``antifragile serve``; --version asks antifragile itself; another program runs as given."""
    cases = {
        ("worker", "--concurrency", "4"): "args: worker --concurrency 4",
        ("--host", "0.0.0.0"): "args: serve --host 0.0.0.0",
        (): "args: serve",
        ("--version",): "args: --version",
        ("dlq", "list"): "args: dlq list",
    }
    for args, expected in cases.items():
        result = _entrypoint(*args, env={}, path=standin)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == expected
    other = _entrypoint("echo", "plain", env={}, path=standin)
    assert other.stdout == "plain\n"


def test_entrypoint_knows_every_command() -> None:
    """The entry point's list of subcommands is the CLI's: a new command is not forgotten."""
    case = re.search(r"^\s*(serve \|[^)]*)\)", ENTRYPOINT.read_text(), re.MULTILINE)
    assert case is not None
    listed = {word.strip() for word in case.group(1).split("|")}
    assert listed == set(COMMAND_EXTRAS)


def test_entrypoint_reads_secrets_from_files(standin: Path, tmp_path: Path) -> None:
    """ANTIFRAGILE_<NAME>_FILE sets ANTIFRAGILE_<NAME> to the file's content (no trailing
    newline) and is removed; both at once, or an unreadable file, stop the start with one
    line and exit 1, without printing the secret."""
    secret = tmp_path / "admin_api_keys"
    secret.write_text("k-123,k-456\n")
    given = _entrypoint("serve", env={"ANTIFRAGILE_ADMIN_API_KEYS_FILE": str(secret)}, path=standin)
    assert given.returncode == 0, given.stderr
    assert given.stdout.splitlines()[1:] == ["admin: k-123,k-456", "admin file: unset"]
    both = _entrypoint(
        env={"ANTIFRAGILE_ADMIN_API_KEYS_FILE": str(secret), "ANTIFRAGILE_ADMIN_API_KEYS": "x"},
        path=standin,
    )
    missing = _entrypoint(
        env={"ANTIFRAGILE_ADMIN_API_KEYS_FILE": str(tmp_path / "absent")}, path=standin
    )
    for result, said in ((both, "both"), (missing, "not a readable file")):
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1
        assert said in result.stderr
        assert "k-123" not in result.stderr


def test_entrypoint_checks_the_sqlite_directory(standin: Path, tmp_path: Path) -> None:
    """A SQLite database in a directory that does not exist (a volume not mounted) stops the
    start with one line naming the directory."""
    url = f"sqlite:///{tmp_path}/not-mounted/antifragile.db?busy_timeout=100"
    result = _entrypoint(env={"ANTIFRAGILE_DATABASE_URL": url}, path=standin)
    assert result.returncode == 1
    assert f"{tmp_path}/not-mounted" in result.stderr
    assert result.stdout == ""


def test_entrypoint_with_the_real_command(tmp_path: Path) -> None:
    """With the real antifragile: the database URL from a secret file, migrate then backup
    of that SQLite database, as a one-off container command would."""
    database = tmp_path / "data" / "antifragile.db"
    database.parent.mkdir()
    url_file = tmp_path / "database_url"
    url_file.write_text(f"sqlite:///{database}\n")
    env = {"ANTIFRAGILE_DATABASE_URL_FILE": str(url_file), "COLUMNS": "200"}
    migrated = _entrypoint("migrate", "--json", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout)["version"] == latest_version("sqlite")
    copy = tmp_path / "data" / "backup.db"
    backed = _entrypoint("backup", str(copy), "--json", env=env)
    assert backed.returncode == 0, backed.stderr
    assert json.loads(backed.stdout)["integrity"] == "ok"
    version = _entrypoint("--version", env={})
    assert version.stdout.startswith("antifragile ")


# -- systemd ------------------------------------------------------------------------------------

UNITS = sorted(
    p.name for p in (DEPLOY / "systemd").iterdir() if p.suffix in (".service", ".target")
)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Each unit parses without a warning (an unknown directive or value is only a warning for
    systemd, so any output fails) and its command exists -- run against this checkout's
    antifragile instead of /opt/antifragile."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    names = []
    for name in UNITS:
        text = (DEPLOY / "systemd" / name).read_text()
        text = text.replace("/opt/antifragile/bin/antifragile", str(BIN / "antifragile"))
        # the env file is not installed here
        text = text.replace("EnvironmentFile=/", "EnvironmentFile=-/")
        name = name.replace("@.", "@1.")
        (tmp_path / name).write_text(text)
        names.append(f"./{name}")
    result = subprocess.run(
        [analyze, "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    assert result.stdout == "", result.stdout


def test_units_are_hardened_and_stop_gracefully() -> None:
    """Every service runs as the antifragile user, without privileges, on a read-only system,
    and leaves a worker its grace on stop."""
    for name in UNITS:
        if not name.endswith(".service"):
            continue
        text = (DEPLOY / "systemd" / name).read_text()
        for line in (
            "User=antifragile",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=",
            "KillSignal=SIGTERM",
            "TimeoutStopSec=45s",
        ):
            assert f"\n{line}\n" in text, (name, line)


# -- compose ------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_file_follows_the_compose_specification() -> None:
    """deploy/compose.yaml is valid against the Compose JSON schema (and the schema does
    reject a misspelt key, so the check has teeth)."""
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema_rs.validator_for(schema)
    compose = _compose()
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []
    compose["services"]["api"]["restarts"] = "always"
    assert not validator.is_valid(compose)


def test_compose_profiles_wire_the_services_together() -> None:
    """sqlite: one service with a volume; postgres: migrate runs first, then the API, workers
    and the scheduler, all reading the database URL from a secret; only the API is published,
    on the host's loopback; every secret named exists; workers' health check is off."""
    compose = _compose()
    services = compose["services"]
    profiles = {name: tuple(s.get("profiles", ())) for name, s in services.items()}
    assert profiles["app"] == ("sqlite",)
    assert {n for n, p in profiles.items() if p == ("postgres",)} == {
        "db",
        "migrate",
        "api",
        "worker",
        "scheduler",
    }
    assert profiles["redis"] == ("redis",)
    for name in ("api", "worker", "scheduler"):
        service = services[name]
        assert service["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
        assert (
            service["environment"]["ANTIFRAGILE_DATABASE_URL_FILE"] == "/run/secrets/database_url"
        )
        assert "database_url" in service["secrets"]
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    published = {n: s["ports"] for n, s in services.items() if "ports" in s}
    assert published == {"app": ["127.0.0.1:8000:8000"], "api": ["127.0.0.1:8000:8000"]}
    assert services["worker"]["healthcheck"] == {"disable": True}
    assert services["worker"]["deploy"]["replicas"] == "${WORKERS:-2}"
    named = {secret for s in services.values() for secret in s.get("secrets", ())}
    assert named <= set(compose["secrets"])
    for service in services.values():
        if service.get("image", "").startswith("${ANTIFRAGILE_IMAGE"):
            assert service["cap_drop"] == ["ALL"]
            assert service["read_only"] is True


def test_dockerfile_is_slim_non_root_and_checks_health() -> None:
    """The image: a slim Python base, a numeric non-root user, a HEALTHCHECK through
    GET /health, the entry point script, and only files that exist copied in."""
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    instructions = [line.split(maxsplit=1) for line in lines if line and line[0].isupper()]
    bases = [rest for word, rest in instructions if word == "FROM"]
    assert bases
    assert all(re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim( AS \w+)?", b) for b in bases)
    users = [rest for word, rest in instructions if word == "USER"]
    assert users == ["10001:10001"]
    at = next(i for i, line in enumerate(lines) if line.startswith("HEALTHCHECK"))
    assert '"antifragile", "health"' in " ".join(lines[at : at + 2])
    assert ["ENTRYPOINT", '["docker-entrypoint.sh"]'] in instructions
    for word, rest in instructions:
        if word == "COPY" and "--from" not in rest:
            *sources, _ = rest.replace("--chmod=0755 ", "").split()
            assert all((ROOT / source).exists() for source in sources), rest
    assert os.access(ENTRYPOINT, os.X_OK)
