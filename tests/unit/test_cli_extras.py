"""In an install without an extra, the ``antifragile`` command says which extra to install.

Each case runs the real console entry point in a fresh interpreter where an import hook makes
the extra's modules unimportable, as they are in ``pip install antifragile`` without it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from antifragile.cli import COMMAND_EXTRAS, missing_extra

LAUNCH = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = set(sys.argv[1].split(","))


    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, Missing())
    sys.argv = ["antifragile", *sys.argv[2:]]
    from antifragile.cli import main

    main()
    """
)


#: what the service extra installs beyond the cli extra
SERVICE_ONLY = "fastapi,starlette,uvicorn,prometheus_client,jinja2,jwt,yaml,aiosmtplib"


def run_without(blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAUNCH, blocked, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("blocked", "args", "extra"),
    [
        (SERVICE_ONLY, ["serve"], "service"),
        (SERVICE_ONLY, ["breakers"], "service"),
        ("aiosmtpd", ["sandbox", "--port", "0"], "sandbox"),
        ("fastapi,uvicorn", ["demo", "--quick"], "demo"),
        ("typer,rich,click", ["worker", "--app", "x:jobs"], "cli"),
        ("typer,rich,click", ["serve"], "service"),
        ("typer,rich,click", ["--help"], "cli"),
    ],
)
def test_a_command_whose_extra_is_missing_names_the_extra(
    blocked: str, args: list[str], extra: str
) -> None:
    """The command exits 1 with one line naming the extra and the pip command, no traceback."""
    result = run_without(blocked, *args)
    assert result.returncode == 1, result.stderr
    assert f"pip install 'antifragile[{extra}]'" in result.stderr
    assert f"needs the '{extra}' extra" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_core_command_runs_without_the_service_extras() -> None:
    """``antifragile --version`` and ``migrate --help`` work with only the ``cli`` extra: no
    service, sandbox or demo module is imported to start the command line."""
    blocked = f"{SERVICE_ONLY},aiosmtpd"
    version = run_without(blocked, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("antifragile ")
    helped = run_without(blocked, "migrate", "--help")
    assert helped.returncode == 0, helped.stderr
    worker = run_without(blocked, "worker", "--app", "no_such_module_here:jobs")
    assert "no_such_module_here" in worker.stdout + worker.stderr
    assert "extra" not in worker.stderr


def test_a_missing_module_outside_every_extra_is_not_hidden() -> None:
    """Only the extras' modules are explained; any other missing module is a real bug."""
    assert missing_extra("serve", "no_such_module") is None
    assert missing_extra("worker", "psycopg") == "postgres"
    assert missing_extra("worker", "jinja2.sandbox") == "service"
    assert set(COMMAND_EXTRAS.values()) <= {"cli", "service", "sandbox", "demo"}
