"""``antifragile serve``, ``antifragile health`` and ``antifragile breakers`` end to end: the
service runs as a real process (API, worker and scheduler on the default SQLite database) and
stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from antifragile.cli import app
from antifragile.service import Settings, create_app
from tests._service_standin import StandInAssistant, free_port, running_server

runner = CliRunner()

LAUNCH = "from antifragile.cli import main; main()"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any ANTIFRAGILE_* setting, plus *extra*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTIFRAGILE_")}
    env.update(extra)
    return env


def wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"serve exited with {process.returncode}:\n{out}\n{err}")
        try:
            if httpx.get(f"{url}/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("serve did not become ready")


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"serve did not stop on SIGTERM:\n{out}\n{err}") from None
    return out, err


def spawn_serve(workdir: Path, port: int, *options: str) -> subprocess.Popen[str]:
    """``antifragile serve --port PORT *options`` in its own process, in *workdir*."""
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "serve", "--port", str(port), *options],
        cwd=workdir,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``antifragile serve`` in its own process, in an empty directory (default database)."""
    workdir = tmp_path_factory.mktemp("serve")
    port = free_port()
    process = spawn_serve(workdir, port, "--log-level", "warning")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url, workdir
    finally:
        if process.poll() is None:
            out, err = stop(process)
            assert process.returncode == 0, f"{out}\n{err}"
            assert "Traceback" not in out + err


def test_serve_answers_health_and_ready(served: tuple[str, Path]) -> None:
    """The served app answers /ready and /health (healthy, database up) on the SQLite
    default, created in the working directory."""
    url, workdir = served
    ready = httpx.get(f"{url}/ready", timeout=30)
    assert ready.status_code == 200
    assert ready.json()["data"] == {"ready": True}
    health = httpx.get(f"{url}/health", headers={"x-request-id": "acceptance-1"}, timeout=30)
    assert health.status_code == 200
    body = health.json()
    assert body["data"]["status"] == "healthy"
    assert body["data"]["dependencies"]["database"] == "up"
    assert body["meta"]["request_id"] == "acceptance-1"
    assert (workdir / "antifragile.db").exists()


def test_health_command(served: tuple[str, Path]) -> None:
    """``antifragile health --url`` prints the status and dependencies, exit 0 when healthy."""
    url, _ = served
    result = runner.invoke(app, ["health", "--url", url])
    assert result.exit_code == 0, result.output
    assert "healthy" in result.output
    assert "database" in result.output
    as_json = runner.invoke(app, ["health", "--url", url, "--json"])
    assert as_json.exit_code == 0
    assert '"status": "healthy"' in as_json.output


def test_breakers_command(served: tuple[str, Path]) -> None:
    """``antifragile breakers`` lists the providers' breakers from the store (all closed
    here), and ``--url`` asks the running service instead."""
    url, workdir = served
    database = f"sqlite:///{workdir / 'antifragile.db'}"
    result = runner.invoke(app, ["breakers", "--json"], env={"ANTIFRAGILE_DATABASE_URL": database})
    assert result.exit_code == 0, result.output
    assert '"provider": "shopify"' in result.output
    assert '"state": "closed"' in result.output
    via_api = runner.invoke(app, ["breakers", "--url", url])
    assert via_api.exit_code == 0, via_api.output


def test_health_of_a_service_that_is_not_there() -> None:
    """No answer is exit 1 with a one-line NETWORK error, never a traceback."""
    result = runner.invoke(app, ["health", "--url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert "NETWORK" in result.output
    assert "Traceback" not in result.output


def test_breakers_without_a_database(tmp_path: Path) -> None:
    """``antifragile breakers`` does not create an empty database to look into."""
    missing = tmp_path / "missing.db"
    result = runner.invoke(
        app, ["breakers"], env={"ANTIFRAGILE_DATABASE_URL": f"sqlite:///{missing}"}
    )
    assert result.exit_code == 1
    assert not missing.exists()


def test_serve_without_the_api_stops_on_sigterm(tmp_path: Path) -> None:
    """``antifragile serve --no-api`` runs the worker and scheduler only, and exits 0 on
    SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "serve", "--no-api", "--log-level", "info"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "antifragile.db").exists() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # let the worker and the scheduler start their loops
    out, err = stop(process)
    assert process.returncode == 0, f"{out}\n{err}"
    assert "Traceback" not in out + err
    # the standard library's event loop unless another is asked for
    assert "; asyncio event loop" in err


def test_serve_on_uvloop_needs_it_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--loop uvloop`` (or ``ANTIFRAGILE_LOOP=uvloop``) is an opt-in that needs the uvloop
    package: without it, one error line and exit 1 before anything starts; an unknown loop is
    a usage error."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not importable, installed or not
    database = tmp_path / "never.db"
    env = {"ANTIFRAGILE_DATABASE_URL": f"sqlite:///{database}"}
    for args, extra in ((["--loop", "uvloop"], {}), ([], {"ANTIFRAGILE_LOOP": "uvloop"})):
        result = runner.invoke(app, ["serve", "--port", "0", *args], env={**env, **extra})
        assert result.exit_code == 1, result.output
        assert "needs the uvloop package" in result.output
        assert "Traceback" not in result.output
    assert not database.exists()
    unknown = runner.invoke(app, ["serve", "--loop", "tokio"], env=env)
    assert unknown.exit_code == 2
    assert "tokio" in unknown.output


def test_serve_refuses_a_bad_setting(tmp_path: Path) -> None:
    """A bad ANTIFRAGILE_* value stops serve at once with exit 1 and the variable's name."""
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=clean_env(ANTIFRAGILE_WEBHOOK_MAX_BYTES="lots"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "ANTIFRAGILE_WEBHOOK_MAX_BYTES" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


class _NoDatabase(StandInAssistant):
    """An assistant whose database never opened: the service is unhealthy."""

    async def open(self) -> None:
        self.opened += 1


def test_health_command_exits_1_when_unhealthy(tmp_path: Path) -> None:
    """``antifragile health`` prints the report and exits 1 when the service is unhealthy."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'never.db'}")
    app_ = create_app(settings, assistant=_NoDatabase(settings))
    with running_server(app_) as url:
        result = runner.invoke(app, ["health", "--url", url])
    assert result.exit_code == 1, result.output
    assert "unhealthy" in result.output
    assert "down" in result.output


def test_serve_without_a_worker_expects_workers(tmp_path: Path) -> None:
    """``serve --no-worker``: workers run elsewhere, so /health is degraded while none is alive
    (and says why); the in-process scheduler is listed; HEAD /health answers 200."""
    port = free_port()
    process = spawn_serve(tmp_path, port, "--no-worker")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        data = httpx.get(f"{url}/health", timeout=30).json()["data"]
        assert data["status"] == "degraded"
        assert data["workers"]["alive"] == 0
        assert data["problems"] == ["no worker is alive: jobs are recorded but not run"]
        assert httpx.head(f"{url}/health", timeout=30).status_code == 200
    finally:
        out, err = stop(process)
    assert process.returncode == 0, f"{out}\n{err}"
