"""How the demo reports: the live board, the closing tables, ``report.html`` and ``timeline.png``.

The HTML report is one file with no external assets: its tables, the fault script and the
timeline plot (embedded as a PNG). The plot has four panels sharing the time axis: provider
health (the script's fault windows shaded, each sample's answered and failed requests), the
breaker state of each provider, the job backlog, and the requests the providers received so
far, from antifragile and from the naive baseline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from antifragile.demo._run import NAIVE_RETRIES, DemoResult, Progress, Sample
from antifragile.demo._scenario import IDEMPOTENT, PROVIDERS

#: what differs between two dead letters of the same cause: ids, masked phone numbers
_IDS = re.compile(r"[0-9a-f]{12,}|\+?\d+[\u2022\d]*")
_STATE_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red", "forced_open": "red"}
_STATE_COLOUR = {
    "closed": "#4caf50",
    "half_open": "#ffb300",
    "open": "#e53935",
    "forced_open": "#b71c1c",
    "forced_closed": "#90a4ae",
}


# -- the terminal -------------------------------------------------------------------------------


def board(progress: Progress) -> RenderableType:
    """Live progress: conversations, replies, backlog, breakers, the faults playing."""
    head = Text()
    head.append(f"{progress.t:5.1f}s ", style="dim")
    head.append(f"{progress.phase}\n", style="bold")
    head.append(f"conversations {progress.conversations}/{progress.customers}  ")
    head.append(f"messages in {progress.messages_in}  replies sent {progress.replies}  ")
    head.append(f"naive done {progress.naive_conversations}/{progress.customers}\n")
    head.append(f"jobs: pending {progress.pending}  retrying {progress.retrying}  dead ")
    head.append(str(progress.dead), style="red" if progress.dead else "")
    head.append(f"  worker restarts {progress.restarts}")
    breakers = Text("breakers: ")
    for provider in PROVIDERS:
        state = progress.breakers.get(provider, "-")
        breakers.append(f"{provider} ")
        breakers.append(state, style=_STATE_STYLE.get(state, ""))
        breakers.append("  ")
    faults = Text("faults: " + (", ".join(progress.faults) or "none"), style="dim")
    return Group(head, breakers, faults)


def verdict(result: DemoResult) -> str:
    """The one line that says whether exactly once held."""
    names = ", ".join(IDEMPOTENT)
    if result.exactly_once:
        return f"Effects match for the idempotent providers ({names}): each exactly once."
    wrong = ", ".join(p for p in IDEMPOTENT if not result.effects[p].exact)
    return f"Effects do NOT match for: {wrong}."


def _mark(ok: bool) -> Text:
    return Text("yes", style="green") if ok else Text("no", style="bold red")


def _seconds(value: float | None) -> str:
    return "not drained" if value is None else f"{value:.1f} s"


def run_table(result: DemoResult) -> Table:
    table = Table(title="The run", title_justify="left", show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    restarts = ", ".join(
        f"at {r['at']:g} s ({r['jobs_in_flight']} jobs in flight)" for r in result.restarts
    )
    rows = [
        ("customers", str(result.config.customers)),
        ("messages in (signed webhooks, 200)", str(result.messages_in)),
        ("replies out (WhatsApp messages delivered)", str(result.replies_out)),
        ("conversations completed", f"{result.conversations}/{result.config.customers}"),
        ("worker restarts", restarts or "none"),
        ("recovery (last fault window ends)", f"{result.recovery:g} s"),
        ("time to drain after recovery (all done, backlog 0)", _seconds(result.drain_seconds)),
        ("wall time", f"{result.wall_seconds:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def effects_table(result: DemoResult) -> Table:
    table = Table(
        title="Side effects at each provider: expected vs recorded",
        title_justify="left",
        caption="* idempotent: must be exactly once. Recorded: accepted by the provider (the "
        "sandbox's effect log); duplicates and missing counted per customer.",
        caption_justify="left",
    )
    for name in ("provider", "expected", "recorded", "dup", "missing", "exact"):
        table.add_column(name, justify="left" if name == "provider" else "right")
    if result.naive:
        for name in ("naive rec", "naive dup", "naive miss"):
            table.add_column(name, justify="right")
    for provider in PROVIDERS:
        tally = result.effects[provider]
        row: list[Any] = [
            provider + (" *" if provider in IDEMPOTENT else ""),
            str(tally.expected),
            str(tally.recorded),
            str(tally.duplicates),
            str(tally.missing),
            _mark(tally.exact),
        ]
        if result.naive:
            naive = result.naive[provider]
            row += [str(naive.recorded), str(naive.duplicates), str(naive.missing)]
        table.add_row(*row)
    return table


def attempts_table(result: DemoResult) -> Table:
    table = Table(
        title="Requests at each provider",
        title_justify="left",
        caption=f"same customers, same faults; naive: retried at once on any error, up to "
        f"{NAIVE_RETRIES} times, no breaker, no idempotency key, no job queue",
        caption_justify="left",
        min_width=60,
    )
    table.add_column("provider")
    table.add_column("antifragile", justify="right")
    if result.naive:
        table.add_column("naive", justify="right")
    for provider in PROVIDERS:
        row = [provider, str(result.effects[provider].attempts)]
        if result.naive:
            row.append(str(result.naive[provider].attempts))
        table.add_row(*row)
    total = [
        Text("total", style="bold"),
        Text(str(sum(t.attempts for t in result.effects.values())), style="bold"),
    ]
    if result.naive:
        total.append(Text(str(sum(t.attempts for t in result.naive.values())), style="bold"))
    table.add_row(*total)
    return table


def dlq_table(result: DemoResult) -> Table:
    """Dead jobs grouped by job, provider and error code, with one error as an example."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for entry in result.dead_letters:
        key = (
            entry["name"],
            str(entry["provider"] or "-"),
            str(entry["code"] or "-"),
            _IDS.sub("…", _why(entry))[:60],
        )
        groups.setdefault(key, []).append(entry)
    table = Table(
        title=f"Dead-letter queue: {len(result.dead_letters)} jobs waiting for an operator",
        title_justify="left",
        caption="A WhatsApp send whose outcome is unknown (a 5xx, a lost answer, a worker "
        "stopped mid-call) is never sent twice blindly: it waits here to be reconciled.",
        caption_justify="left",
    )
    for name in ("jobs", "job", "provider", "code", "why (one of them)"):
        table.add_column(name, justify="right" if name == "jobs" else "left")
    for (name, provider, code, _), entries in groups.items():
        first = entries[0]
        why = _why(first)
        table.add_row(str(len(entries)), name, provider, code, _short(why))
    return table


def _why(entry: dict[str, Any]) -> str:
    error = str(entry.get("error") or "")
    reason = str(entry.get("reason") or "")
    _, _, message = error.partition(": ")
    text = message or error or reason
    return text.split(" [request_id=")[0]


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary(result: DemoResult) -> RenderableType:
    """Every closing table and the verdict."""
    style = "bold green" if result.exactly_once else "bold red"
    parts: list[RenderableType] = [
        run_table(result),
        effects_table(result),
        attempts_table(result),
    ]
    if result.dead_letters:
        parts.append(dlq_table(result))
    parts.append(Text(verdict(result), style=style))
    return Group(*parts)


# -- the plot ---------------------------------------------------------------------------------


def _segments(samples: list[Sample], value: Any) -> list[tuple[float, float, Any]]:
    """Runs of equal ``value(sample)``: (start, end, value)."""
    out: list[tuple[float, float, Any]] = []
    for i, sample in enumerate(samples):
        end = samples[i + 1].t if i + 1 < len(samples) else sample.t + 0.25
        v = value(sample)
        if out and out[-1][2] == v and abs(out[-1][1] - sample.t) < 1e-9:
            out[-1] = (out[-1][0], end, v)
        else:
            out.append((sample.t, end, v))
    return out


def timeline_png(result: DemoResult) -> bytes:
    """The timeline plot as PNG bytes (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    samples = result.samples
    end = max([s.t for s in samples] + [result.recovery, result.drained_at or 0.0]) + 0.5
    figure = Figure(figsize=(11, 9.5), dpi=100, layout="constrained")
    health, breakers, backlog, load = figure.subplots(
        4, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2.2, 2, 2]}
    )
    lanes = {p: i for i, p in enumerate(reversed(PROVIDERS))}
    marks = [r["at"] for r in result.restarts]

    # provider health: fault windows, then each sample's outcome
    for window in result.config.script.faults:
        y = lanes[window.provider]
        health.broken_barh(
            [(window.start, window.end - window.start)], (y - 0.4, 0.8), color="#ffcdd2"
        )
    for provider, y in lanes.items():
        ok = [(s.t, 0.25) for s in samples if s.ok.get(provider) and not s.failed.get(provider)]
        bad = [(s.t, 0.25) for s in samples if s.failed.get(provider)]
        health.broken_barh(ok, (y - 0.15, 0.3), color="#66bb6a")
        health.broken_barh(bad, (y - 0.15, 0.3), color="#c62828")
    health.set_yticks(list(lanes.values()), list(lanes.keys()))
    health.set_title("Provider health", loc="left")
    health.legend(
        handles=[
            Patch(color="#ffcdd2", label="fault window"),
            Patch(color="#66bb6a", label="answered"),
            Patch(color="#c62828", label="429 / 5xx / no answer"),
        ],
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
        ncols=3,
        frameon=False,
    )

    # breaker states
    for provider, y in lanes.items():
        for start, stop, state in _segments(samples, lambda s, p=provider: s.breakers.get(p)):
            if state is None:
                continue
            breakers.broken_barh(
                [(start, stop - start)],
                (y - 0.35, 0.7),
                color=_STATE_COLOUR.get(state, "#90a4ae"),
            )
    breakers.set_yticks(list(lanes.values()), list(lanes.keys()))
    breakers.set_title("Circuit breakers", loc="left")
    breakers.legend(
        handles=[Patch(color=_STATE_COLOUR[s], label=s) for s in ("closed", "half_open", "open")],
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
        ncols=3,
        frameon=False,
    )

    # backlog
    ts = [s.t for s in samples]
    backlog.plot(ts, [s.pending for s in samples], label="pending", color="#1e88e5")
    backlog.plot(ts, [s.retrying for s in samples], label="retrying", color="#fb8c00")
    backlog.plot(ts, [s.dead for s in samples], label="dead (DLQ)", color="#8e24aa")
    backlog.set_title("Job backlog", loc="left")
    backlog.set_ylabel("jobs")
    backlog.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncols=3, frameon=False)

    # load on the providers
    load.plot(ts, [s.attempts for s in samples], label="antifragile", color="#1e88e5")
    if result.naive:
        load.plot(ts, [s.naive_attempts for s in samples], label="naive", color="#e53935")
    load.set_title("Requests the providers received (cumulative)", loc="left")
    load.set_ylabel("requests")
    load.set_xlabel("seconds since the first customer wrote")
    load.legend(loc="upper left", fontsize=8)

    for axis in (health, breakers, backlog, load):
        axis.axvline(result.recovery, color="#43a047", linestyle="--", linewidth=1)
        for at in marks:
            axis.axvline(at, color="#6d4c41", linestyle=":", linewidth=1.2)
        if result.drained_at is not None:
            axis.axvline(result.drained_at, color="#1e88e5", linestyle="--", linewidth=1)
        axis.set_xlim(0, end)
    notes = [(result.recovery, "recovery")] + [(at, "worker restart") for at in marks]
    if result.drained_at is not None:
        notes.append((result.drained_at, "drained"))
    for at, label in notes:
        backlog.text(
            at,
            0.97,
            f" {label}",
            transform=backlog.get_xaxis_transform(),
            rotation=90,
            va="top",
            ha="right",
            fontsize=8,
            color="#555555",
        )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


# -- the files --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportFiles:
    html: Path
    png: Path
    json: Path


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem}
th{background:#f5f5f5;text-align:left}td.n{text-align:right}
.ok{color:#2e7d32;font-weight:bold}.bad{color:#c62828;font-weight:bold}
.caption{color:#666;font-size:.9rem}img{max-width:100%}pre{background:#f7f7f7;padding:1rem}
"""


def _row(cells: list[Any], *, head: bool = False) -> str:
    tag = "th" if head else "td"
    out = []
    for cell in cells:
        if isinstance(cell, bool):
            out.append(f'<td class="{"ok" if cell else "bad"}">{"yes" if cell else "no"}</td>')
        elif isinstance(cell, int | float) and not head:
            out.append(f'<td class="n">{cell}</td>')
        else:
            out.append(f"<{tag}>{html.escape(str(cell))}</{tag}>")
    return "<tr>" + "".join(out) + "</tr>"


def _table(head: list[str], rows: list[list[Any]]) -> str:
    header = _row(head, head=True) if any(head) else ""
    return "<table>" + header + "".join(_row(r) for r in rows) + "</table>"


def report_html(result: DemoResult, png: bytes) -> str:
    """The whole report as one HTML page (the plot embedded)."""
    data = result.to_dict()
    effects_head = ["provider", "expected", "recorded", "duplicates", "missing", "exactly once"]
    if result.naive:
        effects_head += ["naive recorded", "naive duplicates", "naive missing"]
    effects_rows = []
    for p in PROVIDERS:
        t = result.effects[p]
        row: list[Any] = [
            p + (" (idempotent)" if p in IDEMPOTENT else ""),
            t.expected,
            t.recorded,
            t.duplicates,
            t.missing,
            t.exact,
        ]
        if result.naive:
            n = result.naive[p]
            row += [n.recorded, n.duplicates, n.missing]
        effects_rows.append(row)
    attempts_rows: list[list[Any]] = [
        [p, result.effects[p].attempts] + ([result.naive[p].attempts] if result.naive else [])
        for p in PROVIDERS
    ]
    run_rows: list[list[Any]] = [
        ["customers", result.config.customers],
        ["messages in", result.messages_in],
        ["replies out", result.replies_out],
        ["conversations completed", result.conversations],
        ["worker restarts", ", ".join(f"{r['at']:g} s" for r in result.restarts) or "none"],
        ["recovery", f"{result.recovery:g} s"],
        ["time to drain after recovery (all done, backlog 0)", _seconds(result.drain_seconds)],
        ["wall time", f"{result.wall_seconds:.1f} s"],
    ]
    dlq_rows = [
        [e["name"], e["provider"] or "-", e["attempts"], e["code"] or "-", _why(e)]
        for e in result.dead_letters
    ]
    windows = [
        [w.label or w.provider, w.provider, w.endpoint, f"{w.start:g}", f"{w.end:g}"]
        for w in result.config.script.faults
    ]
    image = base64.b64encode(png).decode("ascii")
    klass = "ok" if result.exactly_once else "bad"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>antifragile demo report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>antifragile demo report</h1>",
        f"<p class='{klass}'>{html.escape(verdict(result))}</p>",
        f"<p class='caption'>fault script “{html.escape(result.config.script.name)}”, "
        f"seed {result.config.seed}, {result.config.customers} customers"
        f"{', quick' if result.config.quick else ''}.</p>",
        "<h2>Timeline</h2>",
        f"<img alt='timeline: provider health, breakers, backlog, load' "
        f"src='data:image/png;base64,{image}'>",
        "<h2>The run</h2>",
        _table(["", ""], run_rows),
        "<h2>Side effects per provider: expected vs recorded</h2>",
        _table(effects_head, effects_rows),
        "<h2>Requests each provider received</h2>",
        _table(["provider", "antifragile"] + (["naive"] if result.naive else []), attempts_rows),
        f"<p class='caption'>naive: every call sent again at once on any error, up to "
        f"{NAIVE_RETRIES} times; no breaker, no idempotency key, no job queue.</p>",
        f"<h2>Dead-letter queue ({len(dlq_rows)})</h2>",
        _table(["job", "provider", "attempts", "code", "reason"], dlq_rows)
        if dlq_rows
        else "<p>empty</p>",
        "<h2>Fault script</h2>",
        _table(["window", "provider", "endpoint", "from (s)", "to (s)"], windows),
        "<pre>" + html.escape(json.dumps(data["script"], indent=2)) + "</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(result: DemoResult, directory: str | Path) -> ReportFiles:
    """Write ``report.html``, ``timeline.png`` and ``summary.json`` into *directory*."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    png = timeline_png(result)
    files = ReportFiles(
        html=folder / "report.html", png=folder / "timeline.png", json=folder / "summary.json"
    )
    files.png.write_bytes(png)
    files.html.write_text(report_html(result, png), encoding="utf-8")
    files.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return files
