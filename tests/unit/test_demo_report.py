"""The demo report's truth: what is left undone comes first, in red, and the report ends with
the replies delivered and the dead-letter entries left for an operator."""

from __future__ import annotations

import io
import time

from rich.console import Console, Group
from rich.text import Text

from antifragile.demo import DEFAULT_SCRIPT, QUICK_PACE, DemoConfig, DemoResult
from antifragile.demo._report import closing, headline, report_html, summary
from antifragile.demo._run import Tally
from antifragile.demo._scenario import PROVIDERS


def _result(*, delivered: int, dead: int) -> DemoResult:
    config = DemoConfig(customers=2, seed=1, script=DEFAULT_SCRIPT, pace=QUICK_PACE)
    result = DemoResult(config=config, started_at=time.time())
    result.effects = {
        p: Tally(p, expected=2, recorded=2, duplicates=0, missing=0, attempts=2) for p in PROVIDERS
    }
    result.replies_expected = 10
    result.replies_delivered = delivered
    result.dead_letters = [
        {"id": "j", "name": "replies.send", "provider": "whatsapp", "attempts": 1, "code": None}
    ] * dead
    return result


def _text(result: DemoResult) -> list[str]:
    console = Console(width=140, record=True, file=io.StringIO())
    console.print(summary(result))
    return [line.strip() for line in console.export_text().splitlines() if line.strip()]


def test_a_clean_run_has_no_headline_and_ends_with_the_counts() -> None:
    """Every reply delivered, nothing dead: no headline, and the last three lines say
    ``replies delivered 10/10``, ``replies missing 0``, ``DLQ entries needing an operator 0``."""
    result = _result(delivered=10, dead=0)
    assert headline(result) is None
    assert result.truthful
    assert (
        _text(result)[-3:]
        == closing(result)
        == [
            "replies delivered 10/10",
            "replies missing 0",
            "DLQ entries needing an operator 0",
        ]
    )
    assert "class='headline'" not in report_html(result, "<svg/>")


def test_what_is_left_undone_comes_first_in_red() -> None:
    """Two replies missing and one dead letter: the headline names both, is the first line of
    the terminal summary and of the HTML page's body, in red; the run is not truthful."""
    result = _result(delivered=8, dead=1)
    top = headline(result)
    assert top is not None
    assert "2 of 10 replies NOT delivered" in top
    assert "1 dead-letter entries need an operator" in top
    assert not result.truthful
    lines = _text(result)
    assert lines[0] == top
    assert lines[-3:] == [
        "replies delivered 8/10",
        "replies missing 2",
        "DLQ entries needing an operator 1",
    ]
    page = report_html(result, "<svg/>")
    body = page.split("<body>", 1)[1]
    assert body.lstrip().startswith("<p class='headline'>")
    assert ".headline{background:#c62828" in page
    # the rich style of the headline is red
    group = summary(result)
    assert isinstance(group, Group)
    first = group.renderables[0]
    assert isinstance(first, Text)
    assert "red" in str(first.style)
