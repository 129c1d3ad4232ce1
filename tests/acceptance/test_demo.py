"""``antifragile demo --quick`` end to end, through the installed console script: the service,
its worker, the sandbox and the customers in one real run, the fault script playing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest

pytestmark = pytest.mark.slow

IDEMPOTENT = ("shopify", "hubspot")
#: the owner's summary email goes through Resend, else Mailchimp Transactional (Mandrill)
EMAIL_CHAIN = ("resend", "mandrill")


def _command() -> list[str]:
    script = Path(sys.executable).with_name("antifragile")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from antifragile.cli import main; main()"]


@pytest.fixture(scope="module")
def quick_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One ``antifragile demo --quick`` run (about 10 s), shared by the tests below."""
    folder = tmp_path_factory.mktemp("demo")
    report = folder / "report"
    env = {**os.environ, "COLUMNS": "120"}
    done = subprocess.run(
        [*_command(), "demo", "--quick", "--seed", "11", "--report-dir", str(report)],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=folder,
        env=env,
    )
    return done, report


def _summary(report: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    return data


def test_quick_demo_exits_0_and_says_effects_match(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """The quick demo ends with exit code 0 and prints that the idempotent providers'
    effects match what the customers caused, exactly once."""
    done, _ = quick_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (
        "Effects match for the idempotent providers (resend, mandrill, shopify, hubspot)"
        in done.stdout
    )
    assert "Traceback" not in done.stdout + done.stderr


def test_quick_demo_ends_with_every_reply_delivered_and_nothing_for_an_operator(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """With WhatsApp answering 5xx and its status webhooks delayed, lost and duplicated, every
    reply is delivered by the sandbox's own delivery statuses, and the report ends with
    ``replies delivered N/N``, ``replies missing 0`` and no dead-letter entry for an operator;
    no red headline."""
    done, report = quick_run
    summary = _summary(report)
    expected = 5 * summary["customers"]
    assert summary["replies_expected"] == expected
    assert summary["replies_delivered"] == expected
    assert summary["replies_missing"] == 0
    assert summary["dlq_needing_operator"] == 0
    assert summary["cap_hit"] is False
    # the status webhooks really were played with: some lost, delayed or duplicated
    fates = summary["status_webhooks"]
    assert sum(fates.values()) >= expected
    assert set(fates) & {"lost", "delayed", "duplicated"}
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    closing = lines.index(f"replies delivered {expected}/{expected}")
    assert lines[closing + 1 : closing + 3] == [
        "replies missing 0",
        "DLQ entries needing an operator 0",
    ]
    page = (report / "report.html").read_text(encoding="utf-8")
    assert "class='headline'" not in page
    assert f"replies delivered {expected}/{expected}" in page


def test_quick_demo_writes_the_report_files(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """report.html (self-contained, the plot embedded), timeline.svg (a well-formed SVG with the
    four panels) and summary.json exist."""
    _, report = quick_run
    page = (report / "report.html").read_text(encoding="utf-8")
    assert "data:image/svg+xml;base64," in page
    assert "<script" not in page
    assert "http://" not in page.replace("http://127.0.0.1", "")
    svg = ElementTree.fromstring((report / "timeline.svg").read_text(encoding="utf-8"))
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    titles = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    for panel in ("Provider health", "Circuit breakers", "Job backlog", "recovery"):
        assert panel in titles, panel
    assert _summary(report)["quick"] is True


def test_quick_demo_counts_every_effect_and_the_baseline(
    quick_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """Every customer completed the flow; each idempotent provider recorded exactly one effect
    per customer (the summary email once across the email chain); the naive baseline, on the
    same script, sent more requests in all; the worker was restarted once and the backlog
    drained after recovery."""
    _, report = quick_run
    summary = _summary(report)
    customers = summary["customers"]
    assert summary["conversations"] == customers
    assert summary["messages_in"] == 5 * customers
    for provider in IDEMPOTENT:
        effects = summary["effects"][provider]
        assert effects["expected"] == customers
        assert effects["recorded"] == customers
        assert effects["duplicates"] == effects["missing"] == 0
        assert effects["exactly_once"] is True
    _assert_one_email_each(summary)
    attempts = sum(t["attempts"] for t in summary["effects"].values())
    naive_attempts = sum(t["attempts"] for t in summary["naive"].values())
    assert naive_attempts > attempts
    assert len(summary["restarts"]) == 1
    assert summary["drain_seconds"] is not None
    assert summary["samples"], "the timeline has samples"
    # a WhatsApp reply is never sent twice: what did not go out is in the DLQ, not duplicated
    whatsapp = summary["effects"]["whatsapp"]
    assert whatsapp["duplicates"] == 0
    dead_replies = [d for d in summary["dead_letters"] if d["name"] == "replies.send"]
    assert whatsapp["missing"] <= len(dead_replies)


def _play_script(tmp_path: Path, text: str, customers: int) -> dict[str, Any]:
    """``antifragile demo --quick --no-baseline --faults FILE`` with *text* as the file: it
    exits 0, and its summary.json."""
    script = tmp_path / "faults.yaml"
    script.write_text(text, encoding="utf-8")
    report = tmp_path / "report"
    done = subprocess.run(
        [
            *_command(),
            "demo",
            "--quick",
            "--customers",
            str(customers),
            "--no-baseline",
            "--faults",
            str(script),
            "--report-dir",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return _summary(report)


def test_a_fault_script_file_replaces_the_default(tmp_path: Path) -> None:
    """``--faults FILE`` plays the given script (here: only HubSpot timing out after acting,
    no baseline, two customers) and the effects still match."""
    summary = _play_script(
        tmp_path,
        "name: hubspot only\n"
        "faults:\n"
        "  - provider: hubspot\n"
        "    endpoint: POST /crm/v3/objects/contacts\n"
        "    start: 0\n"
        "    end: 3\n"
        "    chaos: [{p: 0.5, kind: ambiguous, lost: hang}]\n",
        customers=2,
    )
    assert summary["script"]["name"] == "hubspot only"
    assert summary["naive"] is None
    assert summary["effects"]["hubspot"]["exactly_once"] is True


def _assert_one_email_each(summary: dict[str, Any]) -> None:
    """Each customer's summary email went out exactly once across the email chain."""
    chain = [summary["effects"][p] for p in EMAIL_CHAIN]
    assert sum(t["recorded"] for t in chain) == summary["customers"]
    assert sum(t["expected"] for t in chain) == summary["customers"]
    for tally in chain:
        assert tally["duplicates"] == tally["missing"] == 0
        assert tally["exactly_once"] is True


def test_with_resend_down_the_summary_emails_go_out_through_mandrill_once_each(
    tmp_path: Path,
) -> None:
    """A fault script taking Resend down (503 to every request) for 20 s, longer than the
    customers' conversations take: the summary emails fail over to Mailchimp Transactional
    (Mandrill), each sent exactly once across the chain; every reply delivered, nothing for an
    operator."""
    summary = _play_script(
        tmp_path,
        "name: resend down\n"
        "faults:\n"
        "  - provider: resend\n"
        "    label: Resend down (503)\n"
        "    start: 0\n"
        "    end: 20\n"
        "    chaos: [{p: 1.0, kind: error, status: 503}]\n",
        customers=3,
    )
    assert summary["script"]["faults"][0]["provider"] == "resend"
    _assert_one_email_each(summary)
    resend, mandrill = (summary["effects"][p] for p in EMAIL_CHAIN)
    # Resend was asked and refused; the chain's second provider sent (a conversation ending
    # after the window, on a slow machine, may send through Resend again: still once overall)
    assert summary["conversations"] == summary["customers"]
    assert resend["attempts"] > 0
    assert mandrill["recorded"] >= 1
    assert mandrill["attempts"] >= mandrill["recorded"]
    assert summary["replies_missing"] == 0
    assert summary["dlq_needing_operator"] == 0
    assert summary["cap_hit"] is False


def test_a_bad_fault_script_is_a_clear_error(tmp_path: Path) -> None:
    """A fault script naming an unknown provider stops the demo with exit code 2 and a message
    that names the problem, not a traceback."""
    script = tmp_path / "faults.json"
    script.write_text('{"faults": [{"provider": "myspace", "start": 0, "end": 1}]}')
    done = subprocess.run(
        [*_command(), "demo", "--faults", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "unknown provider 'myspace'" in done.stdout + done.stderr
    assert "mandrill" in done.stdout + done.stderr  # the providers it may name
    assert "Traceback" not in done.stdout + done.stderr
