"""How the demo reports: the live board, the closing tables, ``report.html`` and ``timeline.svg``.

The HTML report is one file with no external assets: its tables, the fault script and the
timeline plot (an SVG drawn here, without a plotting library, embedded in the page). The plot
has four panels sharing the time axis: provider health (the script's fault windows shaded, each
sample's answered and failed requests), the breaker state of each provider, the job backlog, and
the requests the providers received so far, from antifragile and from the naive baseline.
"""

from __future__ import annotations

import base64
import html
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


def headline(result: DemoResult) -> str | None:
    """What is left undone, in one line, or ``None`` when every reply was delivered and
    nothing waits for an operator (the report shows it above everything else)."""
    left = []
    if result.replies_missing:
        left.append(f"{result.replies_missing} of {result.replies_expected} replies NOT delivered")
    if result.needs_operator:
        left.append(f"{result.needs_operator} dead-letter entries need an operator")
    if not result.exactly_once:
        left.append("effects NOT exactly once")
    if result.cap_hit:
        left.append(f"the drain cap was hit at {result.deadline:g} s with work still waiting")
    return "; ".join(left) + "." if left else None


def closing(result: DemoResult) -> list[str]:
    """The last lines of the report: replies delivered, missing, entries for an operator."""
    return [
        f"replies delivered {result.replies_delivered}/{result.replies_expected}",
        f"replies missing {result.replies_missing}",
        f"DLQ entries needing an operator {result.needs_operator}",
    ]


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
        ("replies sent (WhatsApp accepted)", str(result.replies_out)),
        (
            "replies delivered (WhatsApp's delivery statuses)",
            f"{result.replies_delivered}/{result.replies_expected}",
        ),
        ("status webhooks of the sends, by fate", _fates(result)),
        ("conversations completed", f"{result.conversations}/{result.config.customers}"),
        ("worker restarts", restarts or "none"),
        ("recovery (last fault window ends)", f"{result.recovery:g} s"),
        ("time to drain after recovery (all done, backlog 0)", _seconds(result.drain_seconds)),
        ("drain cap (the run waits until)", _cap(result)),
        ("wall time", f"{result.wall_seconds:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _fates(result: DemoResult) -> str:
    return ", ".join(f"{k} {v}" for k, v in result.status_webhooks.items()) or "none"


def _cap(result: DemoResult) -> str:
    return f"{result.deadline:g} s" + (" (HIT: work still waiting)" if result.cap_hit else "")


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
        caption="A WhatsApp send whose outcome is unknown (a lost answer, a worker stopped "
        "mid-call) is never sent twice blindly: it waits for WhatsApp's status webhook (10 "
        "minutes in production, a few seconds in the demo), and only without one waits here "
        "to be reconciled.",
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
    parts: list[RenderableType] = []
    top = headline(result)
    if top is not None:
        parts.append(Text(top, style="bold white on red"))
    parts += [
        run_table(result),
        effects_table(result),
        attempts_table(result),
    ]
    if result.dead_letters:
        parts.append(dlq_table(result))
    parts.append(Text(verdict(result), style=style))
    for line in closing(result):
        parts.append(Text(line, style="bold green" if top is None else "bold red"))
    return Group(*parts)


# -- the plot ---------------------------------------------------------------------------------

_WIDTH = 1100
_LEFT = 90  # room for the lane labels
_RIGHT = 16
_LANE = 26  # height of one provider's lane
_CHART = 130  # height of a line chart
_TITLE = 30  # room above a panel for its title and legend
_GAP = 14


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


def _health(provider: str) -> Any:
    def outcome(sample: Sample) -> str | None:
        if sample.failed.get(provider):
            return "failed"
        return "answered" if sample.ok.get(provider) else None

    return outcome


def _tick_step(end: float) -> float:
    return next((s for s in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300) if end / s <= 12), 600)


class _Canvas:
    """A few SVG primitives on a time axis from 0 to *end* seconds."""

    def __init__(self, end: float) -> None:
        self.end = end
        self.parts: list[str] = []

    def x(self, t: float) -> float:
        return round(_LEFT + (_WIDTH - _LEFT - _RIGHT) * min(max(t, 0.0), self.end) / self.end, 2)

    def rect(self, t0: float, t1: float, y: float, height: float, fill: str) -> None:
        x0, x1 = self.x(t0), self.x(t1)
        self.parts.append(
            f'<rect x="{x0}" y="{y:.2f}" width="{max(x1 - x0, 0.5):.2f}" '
            f'height="{height:.2f}" fill="{fill}"/>'
        )

    def text(self, x: float, y: float, text: str, **attributes: str) -> None:
        extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attributes.items())
        self.parts.append(f'<text x="{x:.2f}" y="{y:.2f}"{extra}>{html.escape(text)}</text>')

    def line(
        self, x0: float, y0: float, x1: float, y1: float, stroke: str, **attributes: str
    ) -> None:
        extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attributes.items())
        self.parts.append(
            f'<line x1="{x0:.2f}" y1="{y0:.2f}" x2="{x1:.2f}" y2="{y1:.2f}" '
            f'stroke="{stroke}"{extra}/>'
        )

    def title(self, y: float, text: str, legend: list[tuple[str, str]]) -> None:
        self.text(_LEFT, y + 18, text, font_size="14", font_weight="bold")
        x = _WIDTH - _RIGHT
        for label, colour in reversed(legend):
            x -= 7 * len(label) + 30
            self.parts.append(
                f'<rect x="{x:.2f}" y="{y + 8:.2f}" width="12" height="12" fill="{colour}"/>'
            )
            self.text(x + 16, y + 18, label, font_size="11")

    def frame(self, y: float, height: float) -> None:
        self.parts.append(
            f'<rect x="{_LEFT}" y="{y:.2f}" width="{_WIDTH - _LEFT - _RIGHT}" '
            f'height="{height:.2f}" fill="none" stroke="#bdbdbd"/>'
        )

    def lanes(self, y: float) -> dict[str, float]:
        """The top of each provider's lane, labelled."""
        tops = {p: y + i * _LANE for i, p in enumerate(PROVIDERS)}
        for provider, top in tops.items():
            self.text(_LEFT - 8, top + _LANE / 2 + 4, provider, font_size="12", text_anchor="end")
        return tops

    def series(
        self, y: float, values: list[tuple[list[float], list[int], str, str]], label: str
    ) -> None:
        """Line charts of (times, values, colour, dash) sharing one y axis from 0."""
        top = max([max(v, default=0) for _, v, _, _ in values] + [1]) * 1.1
        for ts, vs, colour, dash in values:
            points = " ".join(
                f"{self.x(t)},{y + _CHART - _CHART * v / top:.2f}"
                for t, v in zip(ts, vs, strict=True)
            )
            extra = f' stroke-dasharray="{dash}"' if dash else ""
            self.parts.append(
                f'<polyline points="{points}" fill="none" stroke="{colour}" '
                f'stroke-width="1.6"{extra}/>'
            )
        for value in (0, round(top / 1.1)):
            at = y + _CHART - _CHART * value / top
            self.text(_LEFT - 6, at + 4, str(value), font_size="11", text_anchor="end")
            self.line(_LEFT, at, _WIDTH - _RIGHT, at, "#eeeeee")
        self.text(
            14, y + _CHART / 2, label, font_size="11", transform=f"rotate(-90 14 {y + _CHART / 2})"
        )

    def markers(self, y: float, height: float, marks: list[tuple[float, str, str]]) -> None:
        for at, colour, dash in marks:
            self.line(self.x(at), y, self.x(at), y + height, colour, stroke_dasharray=dash)


def timeline_svg(result: DemoResult) -> str:
    """The timeline plot as an SVG document, drawn here (no plotting library)."""
    samples = result.samples
    end = max([s.t for s in samples] + [result.recovery, result.drained_at or 0.0, 1.0]) + 0.5
    canvas = _Canvas(end)
    marks = [(result.recovery, "#43a047", "6 4")]
    marks += [(r["at"], "#6d4c41", "2 3") for r in result.restarts]
    if result.drained_at is not None:
        marks.append((result.drained_at, "#1e88e5", "6 4"))
    lanes_height = _LANE * len(PROVIDERS)
    y = 0.0

    # provider health: fault windows, then each sample's outcome
    canvas.title(
        y,
        "Provider health",
        [
            ("fault window", "#ffcdd2"),
            ("answered", "#66bb6a"),
            ("429 / 5xx / no answer", "#c62828"),
        ],
    )
    y += _TITLE
    tops = canvas.lanes(y)
    for window in result.config.script.faults:
        top = tops[window.provider]
        canvas.rect(window.start, window.end, top + 0.1 * _LANE, 0.8 * _LANE, "#ffcdd2")
    for provider, top in tops.items():
        for start, stop, outcome in _segments(samples, _health(provider)):
            if outcome is not None:
                colour = "#c62828" if outcome == "failed" else "#66bb6a"
                canvas.rect(start, stop, top + 0.35 * _LANE, 0.3 * _LANE, colour)
    canvas.markers(y, lanes_height, marks)
    canvas.frame(y, lanes_height)
    y += lanes_height + _GAP

    # breaker states
    canvas.title(
        y, "Circuit breakers", [(s, _STATE_COLOUR[s]) for s in ("closed", "half_open", "open")]
    )
    y += _TITLE
    tops = canvas.lanes(y)
    for provider, top in tops.items():
        for start, stop, state in _segments(samples, lambda s, p=provider: s.breakers.get(p)):
            if state is not None:
                colour = _STATE_COLOUR.get(state, "#90a4ae")
                canvas.rect(start, stop, top + 0.15 * _LANE, 0.7 * _LANE, colour)
    canvas.markers(y, lanes_height, marks)
    canvas.frame(y, lanes_height)
    y += lanes_height + _GAP

    # backlog, with the markers' names
    ts = [s.t for s in samples]
    canvas.title(
        y,
        "Job backlog",
        [("pending", "#1e88e5"), ("retrying", "#fb8c00"), ("dead (DLQ)", "#8e24aa")],
    )
    y += _TITLE
    canvas.series(
        y,
        [
            (ts, [s.pending for s in samples], "#1e88e5", ""),
            (ts, [s.retrying for s in samples], "#fb8c00", ""),
            (ts, [s.dead for s in samples], "#8e24aa", ""),
        ],
        "jobs",
    )
    canvas.markers(y, _CHART, marks)
    notes = [(result.recovery, "recovery")] + [(r["at"], "worker restart") for r in result.restarts]
    if result.drained_at is not None:
        notes.append((result.drained_at, "drained"))
    for at, label in notes:
        x = canvas.x(at) - 3
        canvas.text(
            x,
            y + 4,
            label,
            font_size="10",
            fill="#555555",
            text_anchor="end",
            transform=f"rotate(-90 {x:.2f} {y + 4:.2f})",
        )
    canvas.frame(y, _CHART)
    y += _CHART + _GAP

    # load on the providers
    legend = [("antifragile", "#1e88e5")] + ([("naive", "#e53935")] if result.naive else [])
    canvas.title(y, "Requests the providers received (cumulative)", legend)
    y += _TITLE
    lines = [(ts, [s.attempts for s in samples], "#1e88e5", "")]
    if result.naive:
        lines.append((ts, [s.naive_attempts for s in samples], "#e53935", ""))
    canvas.series(y, lines, "requests")
    canvas.markers(y, _CHART, marks)
    canvas.frame(y, _CHART)
    y += _CHART

    # the time axis
    step = _tick_step(end)
    tick = 0.0
    while tick <= end:
        x = canvas.x(tick)
        canvas.line(x, y, x, y + 5, "#757575")
        canvas.text(x, y + 18, f"{tick:g}", font_size="11", text_anchor="middle")
        tick += step
    canvas.text(
        (_LEFT + _WIDTH - _RIGHT) / 2,
        y + 38,
        "seconds since the first customer wrote",
        font_size="12",
        text_anchor="middle",
    )
    height = y + 48
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {_WIDTH} {height:.0f}" font-family="system-ui, sans-serif">'
        f'<rect width="100%" height="100%" fill="#ffffff"/>' + "".join(canvas.parts) + "</svg>\n"
    )


# -- the files --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportFiles:
    html: Path
    timeline: Path
    json: Path

    @property
    def png(self) -> Path:
        """The timeline's file (an SVG since 0.2; the name is kept for 0.1's callers)."""
        return self.timeline


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem}
th{background:#f5f5f5;text-align:left}td.n{text-align:right}
.ok{color:#2e7d32;font-weight:bold}.bad{color:#c62828;font-weight:bold}
.headline{background:#c62828;color:#fff;font-weight:bold;font-size:1.2rem;padding:.6rem 1rem}
.caption{color:#666;font-size:.9rem}img{max-width:100%;height:auto}pre{background:#f7f7f7;padding:1rem}
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


def report_html(result: DemoResult, svg: str) -> str:
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
        ["replies sent", result.replies_out],
        ["replies delivered", f"{result.replies_delivered}/{result.replies_expected}"],
        ["status webhooks of the sends, by fate", _fates(result)],
        ["conversations completed", result.conversations],
        ["worker restarts", ", ".join(f"{r['at']:g} s" for r in result.restarts) or "none"],
        ["recovery", f"{result.recovery:g} s"],
        ["time to drain after recovery (all done, backlog 0)", _seconds(result.drain_seconds)],
        ["drain cap (the run waits until)", _cap(result)],
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
    image = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    klass = "ok" if result.exactly_once else "bad"
    top = headline(result)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>antifragile demo report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<p class='headline'>{html.escape(top)}</p>" if top is not None else "",
        "<h1>antifragile demo report</h1>",
        f"<p class='{klass}'>{html.escape(verdict(result))}</p>",
        f"<p class='caption'>fault script “{html.escape(result.config.script.name)}”, "
        f"seed {result.config.seed}, {result.config.customers} customers"
        f"{', quick' if result.config.quick else ''}.</p>",
        "<h2>Timeline</h2>",
        f"<img alt='timeline: provider health, breakers, backlog, load' "
        f"src='data:image/svg+xml;base64,{image}'>",
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
        "<h2>In the end</h2>",
        f"<ul class='{'bad' if top else 'ok'}' id='closing'>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in closing(result))
        + "</ul>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(result: DemoResult, directory: str | Path) -> ReportFiles:
    """Write ``report.html``, ``timeline.svg`` and ``summary.json`` into *directory*."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    svg = timeline_svg(result)
    files = ReportFiles(
        html=folder / "report.html", timeline=folder / "timeline.svg", json=folder / "summary.json"
    )
    files.timeline.write_text(svg, encoding="utf-8")
    files.html.write_text(report_html(result, svg), encoding="utf-8")
    files.json.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return files
