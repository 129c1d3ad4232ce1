"""Every ```python block of README.md and docs/ runs, so the documentation stays true.

Each block is a complete program: it runs in a fresh namespace, async examples call
``asyncio.run`` themselves, and assertions inside the block check what the prose claims.
A block that needs the sandbox HTTP server is marked with ``<!-- requires: sandbox -->`` on the
line before its fence; it is skipped, with a reason, while ``antifragile.sandbox`` does not
provide ``FlakyServer``.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from antifragile import ErrorCode

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(?P<indent> *)(?P<ticks>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
REQUIRES = re.compile(r"^<!--\s*requires:\s*(?P<needs>[\w, -]+?)\s*-->$")
KNOWN_REQUIREMENTS = frozenset({"sandbox"})


@dataclass(frozen=True)
class Example:
    """One fenced python block: where it is, what it needs, and its code."""

    path: Path
    line: int  # 1-based line of the first line of code
    code: str
    requires: frozenset[str]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def requirements(lines: list[str], fence: int) -> frozenset[str]:
    """What the block opening at line index *fence* needs, from a marker on the line before."""
    previous = next((line.strip() for line in reversed(lines[:fence]) if line.strip()), "")
    marker = REQUIRES.match(previous)
    if marker is None:
        return frozenset()
    return frozenset(need.strip() for need in marker["needs"].split(","))


def extract(path: Path) -> list[Example]:
    """The ```python blocks of one Markdown file (other languages are ignored)."""
    examples: list[Example] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, ticks, info = opening["indent"], opening["ticks"], opening["info"]
        closing = re.compile(rf"^ *{re.escape(ticks[0])}{{{len(ticks)},}}\s*$")
        start = end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        if info in ("python", "py"):
            body = [line.removeprefix(indent) for line in lines[start:end]]
            examples.append(
                Example(path, start + 1, "\n".join(body) + "\n", requirements(lines, i))
            )
        i = end + 1
    return examples


def all_examples() -> list[Example]:
    return [example for path in documents() if path.exists() for example in extract(path)]


def sandbox_missing() -> str | None:
    """Why sandbox examples cannot run, or ``None`` when they can."""
    try:
        module = importlib.import_module("antifragile.sandbox")
    except ImportError as exc:
        return f"antifragile.sandbox is not available ({exc})"
    missing = [name for name in ("FlakyServer", "Fault") if not hasattr(module, name)]
    if missing:
        return f"antifragile.sandbox does not provide {', '.join(missing)} yet"
    return None


EXAMPLES = all_examples()


def test_examples_are_found() -> None:
    """The extractor sees the documentation's code: README and at least one page per section."""
    places = {example.path.relative_to(ROOT).parts[:2] for example in EXAMPLES}
    assert ("README.md",) in places
    assert {("docs", "tutorial.md"), ("docs", "how-to"), ("docs", "reference")} <= places


def test_requirement_markers_are_known() -> None:
    """A typo in a ``<!-- requires: ... -->`` marker would silently skip nothing or everything."""
    for example in EXAMPLES:
        assert example.requires <= KNOWN_REQUIREMENTS, example.id


def test_errors_reference_lists_every_code() -> None:
    """A new ErrorCode cannot be added without documenting it in the errors reference."""
    reference = (ROOT / "docs" / "reference" / "errors.md").read_text(encoding="utf-8")
    missing = [code.value for code in ErrorCode if f"`{code.value}`" not in reference]
    assert not missing, f"docs/reference/errors.md does not mention {missing}"


@pytest.mark.parametrize("example", EXAMPLES, ids=[example.id for example in EXAMPLES])
def test_example_runs(example: Example) -> None:
    """The block runs to the end without an exception (its own assertions included)."""
    if "sandbox" in example.requires:
        reason = sandbox_missing()
        if reason is not None:
            pytest.skip(f"needs the sandbox server: {reason}")
    # pad with blank lines so that tracebacks point at the Markdown file's own line numbers
    source = "\n" * (example.line - 1) + example.code
    code = compile(source, str(example.path), "exec")
    namespace: dict[str, object] = {"__name__": "__docs_example__"}
    exec(code, namespace)
