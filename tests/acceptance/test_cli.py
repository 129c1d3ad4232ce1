"""The ``antifragile`` command, end to end: the version, and the demo against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import antifragile
from antifragile.cli import app

runner = CliRunner()


def test_version() -> None:
    """``antifragile --version`` prints the installed version."""
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"antifragile {antifragile.__version__}"


def test_help_lists_the_demo() -> None:
    """``antifragile --help`` lists the demo command and its options."""
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output
    demo_help = runner.invoke(app, ["demo", "--help"])
    assert demo_help.exit_code == 0
    for option in ("--calls", "--concurrency", "--seed", "--quick", "--json"):
        assert option in demo_help.output


def test_console_script_is_installed() -> None:
    """The ``antifragile`` console script of the environment runs the same app."""
    script = Path(sys.executable).with_name("antifragile")
    if not script.exists():
        pytest.skip("the package is not installed in this environment")
    done = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"antifragile {antifragile.__version__}"


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """One quick demo run (about 5 s), shared by the tests that read its output."""
    out = tmp_path_factory.mktemp("demo") / "out.json"
    result = runner.invoke(app, ["demo", "--quick", "--seed", "7", "--json", str(out)])
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result.output, summary


def test_demo_accounts_for_every_call(quick_demo: tuple[str, dict[str, Any]]) -> None:
    """Each run reports every call of the workload as succeeded or failed with a code."""
    _, summary = quick_demo
    assert (summary["calls"], summary["seed"], summary["quick"]) == (60, 7, True)
    for name in ("resilient", "naive"):
        run = summary["runs"][name]
        assert run["calls"] == 60
        assert run["succeeded"] + run["failed"] == run["calls"]
        assert sum(run["failed_by_code"].values()) == run["failed"]
        assert all(code == code.upper() for code in run["failed_by_code"])
        assert run["latency_ms"]["p50"] <= run["latency_ms"]["p99"]
        assert run["wall_seconds"] > 0


def test_demo_resilient_run_spares_the_provider(quick_demo: tuple[str, dict[str, Any]]) -> None:
    """The resilient run sends fewer requests than the naive one, above all during the outage."""
    _, summary = quick_demo
    resilient, naive = summary["runs"]["resilient"], summary["runs"]["naive"]
    assert naive["server_requests"] >= naive["calls"]  # the naive loop sends every call
    assert resilient["server_requests"] < naive["server_requests"]
    assert resilient["requests_during_outage"] < naive["requests_during_outage"]
    assert naive["breaker_transitions"] == []
    states = {"closed", "open", "half_open"}
    for transition in resilient["breaker_transitions"]:
        assert {transition["from"], transition["to"]} <= states


def test_demo_reports_its_timeline_and_summary(quick_demo: tuple[str, dict[str, Any]]) -> None:
    """The fault timeline is in the JSON and the terminal shows the comparison table."""
    output, summary = quick_demo
    names = [phase["name"] for phase in summary["timeline"]]
    for name in ("503 burst", "429 quota", "slow + resets", "outage", "recovery"):
        assert name in names
    assert "Same workload, same faults" in output
    assert "Summary written to" in output
