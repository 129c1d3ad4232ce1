"""The ``antifragile`` command, end to end: the version, the help, the console script.

The demo itself runs in ``test_demo.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    for option in (
        "--customers",
        "--faults",
        "--database-url",
        "--quick",
        "--seed",
        "--report-dir",
        "--no-baseline",
    ):
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
