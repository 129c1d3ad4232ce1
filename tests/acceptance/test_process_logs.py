"""The logs and the start-up of the real ``antifragile serve``, ``worker`` and ``scheduler``
processes (short-lived, on SQLite): every line on standard error is JSON when JSON is chosen
(uvicorn's and httpx's included), no email reaches them, warnings name the closest known
variable and the missing secret; a start-up failure is one ``error CODE: ...`` line and exit
status 1."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from typer.testing import CliRunner

from antifragile.cli import app
from antifragile.jobs import Jobs
from tests._service_standin import free_port
from tests._waiting import wait_until
from tests.acceptance.test_serve_cli import LAUNCH, clean_env

EMAIL = "ada.lovelace@example.com"


def start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, *args],
        cwd=cwd,
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return out, err


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of *stderr*, each parsed as JSON (a line that is not fails the test)."""
    parsed = []
    for line in stderr.splitlines():
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a log line is not JSON: {line!r}")
    assert parsed, "no log lines"
    return parsed


def test_serve_writes_only_json_with_structured_requests_and_its_warnings(tmp_path: Path) -> None:
    port = free_port()
    process = start(
        ["serve", "--port", str(port), "--database-url", f"sqlite:///{tmp_path / 'af.db'}"],
        tmp_path,
        ANTIFRAGILE_DATABSE_URL="sqlite:///typo.db",
        ANTIFRAGILE_WHATSAPP_ACCESS_TOKEN="EAAtest-token",
        ANTIFRAGILE_WHATSAPP_PHONE_NUMBER_ID="106540352242922",
    )
    base = f"http://127.0.0.1:{port}"
    report: dict[str, Any] = {}
    try:

        def answered() -> bool:
            try:
                response = httpx.get(f"{base}/health", params={"email": EMAIL}, timeout=2)
            except httpx.HTTPError:
                assert process.poll() is None, process.communicate()
                return False
            report.update(response.json()["data"])
            return True

        wait_until(answered, interval=0.05)
    finally:
        _, err = stop(process)
    assert report["status"] == "degraded"
    assert report["dependencies"]["secret:ANTIFRAGILE_WHATSAPP_APP_SECRET"] == "missing"
    lines = json_lines(err)
    assert EMAIL not in err
    assert "lovelace" not in err
    served = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert served
    assert served[0]["event"] == "inbound request"
    assert (served[0]["method"], served[0]["path"], served[0]["status"]) == ("GET", "/health", 200)
    warnings = {line["event"] for line in lines if line["level"] == "warning"}
    assert (
        "unknown variable ANTIFRAGILE_DATABSE_URL is ignored; "
        "did you mean ANTIFRAGILE_DATABASE_URL?" in warnings
    )
    assert any(w.startswith("ANTIFRAGILE_WHATSAPP_APP_SECRET is not set") for w in warnings)
    assert any(line["event"].startswith("antifragile serve on") for line in lines)


class _Hits(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]]

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test server stays quiet


@pytest.fixture
def crm() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server standing in for a CRM: its base URL and the paths it was asked."""
    hits: list[str] = []
    handler = type("Handler", (_Hits,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_worker_logs_an_outbound_call_without_its_query(
    tmp_path: Path, crm: tuple[str, list[str]]
) -> None:
    base, hits = crm
    database = f"sqlite:///{tmp_path / 'jobs.db'}"

    async def enqueue() -> None:
        jobs = Jobs(database_url=database)

        @jobs.job(name="lookup")  # the worker's app runs it; this one only enqueues it
        async def lookup(ctx: Any, url: str, customer: str) -> int:
            raise AssertionError("never run here")

        async with jobs:
            await lookup.enqueue(f"{base}/contacts/search", "customer-1")

    asyncio.run(enqueue())
    root = Path(__file__).resolve().parents[2]
    process = start(
        ["worker", "--app", "tests.acceptance._logging_app:jobs", "--database-url", database],
        root,
    )
    try:
        wait_until(lambda: bool(hits) or process.poll() is not None, interval=0.05)
    finally:
        _, err = stop(process)
    assert hits == [f"/contacts/search?email={EMAIL.replace('@', '%40')}"]
    lines = json_lines(err)
    assert "lovelace" not in err
    (call,) = [line for line in lines if line["logger"] == "httpx"]
    assert {k: call[k] for k in ("event", "method", "host", "path", "status")} == {
        "event": "outbound request",
        "method": "GET",
        "host": "127.0.0.1",
        "path": "/contacts/search",
        "status": 200,
    }
    assert any(line["event"].startswith("antifragile worker ") for line in lines)


def test_the_scheduler_logs_each_tick_as_json(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    database = f"sqlite:///{tmp_path / 'ticks.db'}"
    target = "tests.integration._scheduler_app:jobs"
    process = start(["scheduler", "--app", target, "--database-url", database], root)
    try:
        assert process.stdout is not None
        while " enqueued job=" not in (line := process.stdout.readline()):
            assert line, process.communicate()
    finally:
        _, err = stop(process)
    tick = re.search(r"tick=(\d+)", line)
    assert tick is not None
    events = [entry["event"] for entry in json_lines(err)]
    # the tick (epoch seconds) is logged as it is, not masked like a phone number
    assert any(f"enqueued tick {tick.group(1)}" in event for event in events), events


def invoke(args: list[str], **env: str) -> Any:
    """The command run in this process (the failures need no process of their own): its
    exit status and its standard error."""
    blank = {k: None for k in os.environ if k.startswith("ANTIFRAGILE_")}
    return CliRunner().invoke(app, args, env={**blank, **env})


def test_start_up_failures_are_one_line_and_status_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    bad_url = invoke(["serve", "--database-url", "foo://nowhere"])
    assert bad_url.exit_code == 1
    assert bad_url.stderr.splitlines()[-1] == (
        "error CONFIGURATION: a job queue needs a sqlite://, postgresql:// or memory:// store, "
        "not 'foo://nowhere'"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        in_use = invoke(["serve", "--port", str(port), "--database-url", "sqlite:///af.db"])
    assert in_use.exit_code == 1
    assert in_use.stderr.splitlines()[-1] == (
        f"error CONFIGURATION: port {port} on 127.0.0.1 is in use; stop the process using it or "
        "choose another --port"
    )
    json_lines("\n".join(in_use.stderr.splitlines()[:-1]))  # the log lines before it
    unreachable = invoke(["worker", "--database-url", "postgresql://app:pw@127.0.0.1:1/app"])
    assert unreachable.exit_code == 1
    last = unreachable.stderr.splitlines()[-1]
    assert last.startswith("error STORE_UNAVAILABLE: cannot connect to PostgreSQL at 127.0.0.1:1")
    assert last.endswith(
        "check --database-url (ANTIFRAGILE_DATABASE_URL) and that the database is running and "
        "reachable"
    )
    assert "Traceback" not in unreachable.stderr


def test_a_bad_flow_or_env_file_is_one_line_and_debug_adds_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "acme.toml"
    config.write_text(
        '[tenants.acme]\nflow = "events"\n'
        '[flows.events]\ncompletion = "Thanks, {nmae}!"\n'
        '[[flows.events.steps]]\nfield = "name"\nquestion = "Your name?"\n',
        encoding="utf-8",
    )
    flow = invoke(["serve", "--config", str(config)])
    assert flow.exit_code == 1
    assert flow.stderr.splitlines() == [
        "error CONFIGURATION: flows: flow 'events', completion: unknown placeholder {nmae}; "
        "did you mean {name}? allowed here: {name}"
    ]
    debug = invoke(["serve", "--config", str(config), "--debug"])
    assert debug.exit_code == 1
    assert debug.stderr.startswith("Traceback (most recent call last)")
    assert debug.stderr.splitlines()[-1] == flow.stderr.strip()
    (tmp_path / "prod.env").write_text("ANTIFRAGILE_DATABASE_URL=foo://from-the-file\n")
    from_file = invoke(["scheduler", "--env-file", "prod.env"])
    assert from_file.exit_code == 1
    assert "not 'foo://from-the-file'" in from_file.stderr.splitlines()[-1]
    assert "ANTIFRAGILE_DATABASE_URL" not in os.environ  # the file's variables are put back
    twice = invoke(["worker"], ANTIFRAGILE_ADMIN_API_KEYS="k", ANTIFRAGILE_ADMIN_API_KEYS_FILE="x")
    assert twice.exit_code == 1
    assert twice.stderr.splitlines() == [
        "error CONFIGURATION: both ANTIFRAGILE_ADMIN_API_KEYS and ANTIFRAGILE_ADMIN_API_KEYS_FILE "
        "are set; keep one"
    ]
