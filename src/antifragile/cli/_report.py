"""How the demo looks in a terminal: the timeline, the live board and the summary table."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from antifragile.cli._demo import DemoConfig, RunStats, timeline


def timeline_table(config: DemoConfig) -> Table:
    table = Table(title="Fault timeline (seconds after the first call)", title_justify="left")
    table.add_column("phase")
    table.add_column("from", justify="right")
    table.add_column("to", justify="right")
    table.add_column("what the provider does")
    for phase in timeline(config):
        end = "end" if phase["end"] is None else f"{phase['end']:.1f}"
        style = "bold red" if phase["name"] == "outage" else None
        table.add_row(phase["name"], f"{phase['start']:.1f}", end, phase["behaviour"], style=style)
    return table


def board(stats: RunStats) -> RenderableType:
    """Live progress of a run: calls done, outcomes, requests at the server, breaker, phase."""
    phase = stats.server.current_phase if stats.finished is None else None
    table = Table(box=None, padding=(0, 1), header_style="dim")
    for name in ("run", "", "calls", "ok", "failed", "sent", "breaker", "phase"):
        table.add_column(name, no_wrap=True)
    table.add_row(
        Text(stats.name, style="bold"),
        ProgressBar(total=stats.calls, completed=stats.done, width=16),
        f"{stats.done}/{stats.calls}",
        Text(str(stats.succeeded), style="green"),
        Text(str(stats.failed), style="red" if stats.failed else ""),
        str(stats.server.count()),
        stats.breaker_state,
        "done" if phase is None else phase.name,
    )
    return table


def _transitions(items: list[dict[str, str]]) -> str:
    if not items:
        return "0"
    counts = Counter(f"{t['from']}→{t['to']}" for t in items)
    return f"{len(items)} (" + ", ".join(f"{k} x{n}" for k, n in counts.items()) + ")"


def _codes(codes: dict[str, int]) -> str:
    return "\n".join(f"{code} {n}" for code, n in codes.items()) or "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def summary_table(summary: dict[str, Any]) -> RenderableType:
    runs = summary["runs"]
    a, b = runs["resilient"], runs["naive"]
    table = Table(
        title="Same workload, same faults",
        title_justify="left",
        caption=(
            "resilient: ResilientClient with retry (exponential back-off, jitter, Retry-After), "
            "retry budget, circuit breaker, rate limiter, bulkhead and timeouts. "
            f"naive: plain httpx, retrying at once, up to {summary['naive_retries']} times, "
            "on any error."
        ),
        caption_justify="left",
    )
    table.add_column("")
    table.add_column("resilient", justify="right")
    table.add_column("naive", justify="right")
    rows: list[tuple[str, str, str]] = [
        ("calls", str(a["calls"]), str(b["calls"])),
        ("succeeded", str(a["succeeded"]), str(b["succeeded"])),
        ("failed", str(a["failed"]), str(b["failed"])),
        ("failed, by code", _codes(a["failed_by_code"]), _codes(b["failed_by_code"])),
        ("requests to the server", str(a["server_requests"]), str(b["server_requests"])),
        (
            "requests per call",
            f"{a['server_requests'] / a['calls']:.2f}",
            f"{b['server_requests'] / b['calls']:.2f}",
        ),
        (
            "… during the outage",
            str(a["requests_during_outage"]),
            str(b["requests_during_outage"]),
        ),
        (
            "breaker transitions",
            _transitions(a["breaker_transitions"]),
            "no breaker",
        ),
        ("latency p50", _ms(a["latency_ms"]["p50"]), _ms(b["latency_ms"]["p50"])),
        ("latency p99", _ms(a["latency_ms"]["p99"]), _ms(b["latency_ms"]["p99"])),
        ("wall time", f"{a['wall_seconds']:.1f} s", f"{b['wall_seconds']:.1f} s"),
    ]
    for row in rows:
        table.add_row(*row)
    down_a, down_b = a["requests_during_outage"], b["requests_during_outage"]
    verdict = Text.assemble(
        "While the provider was down, the resilient client sent ",
        (str(down_a), "bold"),
        " requests and the naive loop ",
        (str(down_b), "bold"),
        ".",
    )
    return Group(table, verdict)
