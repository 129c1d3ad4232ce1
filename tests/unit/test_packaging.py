"""The package's metadata says what the suite proves: a classifier for every Python version
the suite runs on, and the release tools in the dev extra (``make release-check``)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _project() -> dict[str, Any]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert isinstance(project, dict)
    return project


def _versions(project: dict[str, Any]) -> set[tuple[int, int]]:
    found = set()
    for classifier in project["classifiers"]:
        match = re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", classifier)
        if match:
            found.add((3, int(match.group(1))))
    return found


def test_the_running_python_has_a_classifier() -> None:
    """Running the suite on a Python version without its classifier fails here: add it."""
    assert sys.version_info[:2] in _versions(_project())


def test_classifiers_start_at_requires_python() -> None:
    """The oldest classified version is the requires-python minimum, and none is older."""
    project = _project()
    match = re.fullmatch(r">=\s*3\.(\d+)", project["requires-python"])
    assert match is not None
    assert min(_versions(project)) == (3, int(match.group(1)))


def test_release_tools_are_in_the_dev_extra() -> None:
    """make release-check runs build and twine from the dev environment."""
    dev = " ".join(_project()["optional-dependencies"]["dev"])
    assert "build>=" in dev
    assert "twine>=" in dev
