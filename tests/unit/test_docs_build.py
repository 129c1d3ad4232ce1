"""The documentation builds without a single warning, and the README's links lead somewhere.

``make test`` runs the same ``mkdocs build --strict``; this test keeps a plain ``pytest`` run
honest too. A broken link, a missing anchor or a page left out of the navigation is a warning,
and a warning fails the build.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*$", re.MULTILINE)


def slug(title: str) -> str:
    """The anchor a Markdown heading gets (the ``toc`` extension's default slugify)."""
    text = re.sub(r"[^\w\s-]", "", title.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_mkdocs_strict_build_has_no_warning(tmp_path: Path) -> None:
    """``mkdocs build --strict`` succeeds and logs no WARNING (links, anchors, navigation)."""
    pytest.importorskip("mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output, output


def test_readme_links_point_at_files_and_headings_that_exist() -> None:
    """Every relative link of README.md names a file of the repository, and every ``#anchor``
    a heading of the README (mkdocs does not build the README, so it checks none of them)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    anchors = {slug(match["title"]) for match in HEADING.finditer(readme)}
    checked = 0
    for match in LINK.finditer(readme):
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        if path:
            assert (ROOT / path).exists(), f"README.md links to a missing file: {target}"
        else:
            assert anchor in anchors, f"README.md links to a missing heading: {target}"
        checked += 1
    assert checked > 0
