"""``antifragile sandbox``: serves the provider simulators until interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

COMMAND = [sys.executable, "-c", "from antifragile.cli import main; main()", "sandbox"]


def test_sandbox_command_serves_until_ctrl_c(tmp_path: Path) -> None:
    """The command prints where each provider is, serves the Resend simulator with the
    faults of the given file and the admin endpoints, and stops cleanly on SIGINT."""
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"resend": {"POST /emails": {"script": [{"kind": "error"}]}}}))
    process = subprocess.Popen(
        [*COMMAND, "--port", "0", "--faults", str(faults), "--resend-rate-limit", "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("antifragile sandbox on http://127.0.0.1:")
        url = first.split()[3]
        base = process.stdout.readline().strip()
        assert base == f"ANTIFRAGILE_RESEND_BASE_URL={url}/resend"
        email = {"from": "a@example.com", "to": "b@example.com", "subject": "s", "text": "t"}
        auth = {"authorization": "Bearer re_cli"}
        assert (
            httpx.post(f"{url}/resend/emails", json=email, headers=auth, timeout=30).status_code
            == 503
        )
        assert (
            httpx.post(f"{url}/resend/emails", json=email, headers=auth, timeout=30).status_code
            == 200
        )
        effects = httpx.get(
            f"{url}/_sandbox/effects", params={"provider": "resend"}, timeout=30
        ).json()
        assert effects["count"] == 1
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # never leave the process (and its pipes) behind
            process.kill()
            process.communicate()
            raise
    assert process.returncode == 0, err
    assert "sandbox stopped" in out
