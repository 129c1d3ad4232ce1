"""What the dashboard shows beyond the admin API's views: the last hour's activity drawn as
inline SVG, the workers, the operator tasks, one job's page and one customer's conversation.

Everything here is read from the job store (jobs, their attempt histories, leases, the inbox
and the stored replies) and masked before it reaches a template: phone numbers and emails in
free text (:func:`mask_text`), personal fields in payloads (the admin API's ``mask_personal``).

**Graphs** (:func:`activity`, :func:`bar_chart`): per minute of the last hour, jobs that
succeeded, failed attempts, and the queue lag -- the longest a job waited between becoming due
and starting (the current minute also counts the oldest job still waiting). They are computed
from the :data:`GRAPH_JOBS` most recently changed jobs, and drawn on the server as ``<svg>``
(no script, no library, nothing loaded from elsewhere).

**Workers** (:func:`worker_rows`): the one place the workers panel reads: every worker's
heartbeat row (:mod:`antifragile.jobs._liveness`; alive, or silent once it is older than the
dead-after threshold) with the jobs whose leases it holds, plus any other owner of a live lease
(a worker that writes no heartbeat).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

from antifragile.inbound._replies import Replies
from antifragile.jobs import Job, JobFilter, Jobs, JobState
from antifragile.jobs._liveness import DEAD_AFTER
from antifragile.jobs._view import attempts_of
from antifragile.observability._redaction import mask_email, mask_phone
from antifragile.service._admin import job_view, mask_personal, message_view

_log = logging.getLogger("antifragile.service.dashboard")

#: the graphs' span and bar width (seconds)
GRAPH_WINDOW = 3600.0
GRAPH_BUCKET = 60.0
#: how many recently changed jobs the graphs are computed from
GRAPH_JOBS = 2000
#: rows of the workers and tasks panels
WORKER_JOBS = 500
TASK_ROWS = 50
#: how many inbox entries and replies a conversation is looked for in
CONVERSATION_SCAN = 1000

_EMAIL_IN_TEXT = re.compile(r"[^\s@<>\"'(),;:]+@[^\s@<>\"'(),;:]+\.[A-Za-z]{2,}")
_PHONE_IN_TEXT = re.compile(r"(?<![\w+])\+?\d[\d\s().-]{5,18}\d(?!\w)")


def mask_text(text: str | None) -> str:
    """Free text (an error message) with email addresses and phone numbers inside it masked."""
    if not text:
        return ""
    masked = _EMAIL_IN_TEXT.sub(lambda m: mask_email(m.group(0)), text)

    def phone(match: re.Match[str]) -> str:
        found = match.group(0)
        return mask_phone(found) if sum(c.isdigit() for c in found) >= 7 else found

    return _PHONE_IN_TEXT.sub(phone, masked)


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


# -- graphs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Activity:
    """Per minute of the last hour (oldest first): jobs succeeded, attempts failed, and the
    longest wait before a start (seconds)."""

    start: float
    succeeded: tuple[int, ...]
    failed: tuple[int, ...]
    lag: tuple[float, ...]


def activity(jobs: Sequence[Job], *, now: float, oldest_ready_at: float | None) -> Activity:
    """The last hour's :class:`Activity` from *jobs* (see the module docs)."""
    size = int(GRAPH_WINDOW // GRAPH_BUCKET)
    start = now - GRAPH_WINDOW
    succeeded = [0] * size
    failed = [0] * size
    lag = [0.0] * size

    def slot(at: float | None) -> int | None:
        if at is None:
            return None
        index = int((at - start) // GRAPH_BUCKET)
        return index if 0 <= index < size else None

    def waited(at: float, ready: float) -> None:
        index = slot(at)
        if index is not None:
            lag[index] = max(lag[index], max(0.0, at - ready))

    for job in jobs:
        if job.state is JobState.SUCCEEDED and (index := slot(job.updated_at)) is not None:
            succeeded[index] += 1
        records = attempts_of(job)
        ready = job.created_at
        for number, record in enumerate(records):
            started = _number(record.get("started_at"))
            if started is None:
                continue
            if number == len(records) - 1 and job.run_at is not None and job.run_at <= started:
                ready = job.run_at  # the last attempt was due at the job's run_at
            waited(started, ready)
            duration = _number(record.get("duration")) or 0.0
            if record.get("code") and (index := slot(started + duration)) is not None:
                failed[index] += 1
            ready = started + duration + (_number(record.get("delay")) or 0.0)
        if not records and job.state is JobState.SUCCEEDED and job.run_at is not None:
            waited(job.updated_at, job.run_at)  # its only attempt's start is not kept
    if oldest_ready_at is not None:
        lag[-1] = max(lag[-1], max(0.0, now - oldest_ready_at))
    return Activity(start, tuple(succeeded), tuple(failed), tuple(lag))


async def recent_activity(jobs: Jobs, *, now: float, oldest_ready_at: float | None) -> Activity:
    found = await jobs.find(JobFilter(newer_than=now - GRAPH_WINDOW), limit=GRAPH_JOBS)
    return activity(found, now=now, oldest_ready_at=oldest_ready_at)


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 1.0
    scale = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * scale:
            return float(step * scale)
    return float(10 * scale)  # pragma: no cover - the loop always returns


def _amount(value: float, unit: str) -> str:
    if unit == "s":
        if value >= 3600:
            return f"{value / 3600:.1f} h"
        if value >= 60:
            return f"{value / 60:.1f} min"
        return f"{value:.1f} s"
    return f"{value:g}"


def bar_chart(
    values: Sequence[float], *, start: float, title: str, unit: str = "", kind: str = "ok"
) -> Markup:
    """*values* (one per :data:`GRAPH_BUCKET` from *start*) as an inline ``<svg>`` bar chart
    that scales to its container; each bar has a tooltip (``<title>``)."""
    width, height, left, bottom, top_pad = 600, 130, 46, 18, 8
    plot_w, plot_h = width - left - 4, height - bottom - top_pad
    top = _nice_ceiling(max(values, default=0.0))
    bar = plot_w / max(1, len(values))
    total = sum(values)
    summary = (
        f"{title}: largest {_amount(max(values, default=0.0), unit)}"
        if unit == "s"
        else f"{title}: {total:g} in the last hour"
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(summary)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(summary)}</title>",
        f'<line class="axis" x1="{left}" y1="{top_pad + plot_h}" x2="{width - 4}" '
        f'y2="{top_pad + plot_h}"/>',
        f'<text class="tick" x="{left - 4}" y="{top_pad + 8}" text-anchor="end">'
        f"{escape(_amount(top, unit))}</text>",
        f'<text class="tick" x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end">0</text>',
    ]
    for index, value in enumerate(values):
        if value <= 0:
            continue
        h = max(1.0, plot_h * value / top)
        x = left + index * bar
        at = datetime.fromtimestamp(start + index * GRAPH_BUCKET, UTC).strftime("%H:%M")
        parts.append(
            f'<rect class="bar bar-{escape(kind)}" x="{x + 0.5:.1f}" y="{top_pad + plot_h - h:.1f}"'
            f' width="{max(1.0, bar - 1):.1f}" height="{h:.1f}">'
            f"<title>{at} UTC: {escape(_amount(value, unit))}</title></rect>"
        )
    for fraction, label in ((0.0, "60 min ago"), (0.5, "30 min ago"), (1.0, "now")):
        anchor = {0.0: "start", 0.5: "middle", 1.0: "end"}[fraction]
        parts.append(
            f'<text class="tick" x="{left + fraction * plot_w:.1f}" y="{height - 4}" '
            f'text-anchor="{anchor}">{label}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def graphs(found: Activity) -> list[dict[str, Any]]:
    """The three graphs of the page: a title, a one-line figure and the SVG."""
    return [
        {
            "id": "graph-throughput",
            "title": "Jobs succeeded per minute",
            "figure": f"{sum(found.succeeded)} in the last hour",
            "svg": bar_chart(found.succeeded, start=found.start, title="Jobs succeeded"),
        },
        {
            "id": "graph-failures",
            "title": "Failed attempts per minute",
            "figure": f"{sum(found.failed)} in the last hour",
            "svg": bar_chart(found.failed, start=found.start, title="Failed attempts", kind="bad"),
        },
        {
            "id": "graph-lag",
            "title": "Queue lag (longest wait before a start)",
            "figure": f"now {_amount(found.lag[-1], 's')}" if found.lag else "",
            "svg": bar_chart(
                found.lag, start=found.start, title="Queue lag", unit="s", kind="warn"
            ),
        },
    ]


# -- workers and tasks ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A worker as the store knows it."""

    name: str
    jobs: int
    #: the queues it serves (its heartbeat), else those of the jobs it holds; empty: every queue
    queues: tuple[str, ...]
    #: when the worker last showed it was alive (epoch seconds), if the store says
    last_seen: float | None
    #: until when its leases run (epoch seconds): past that, its jobs go to other workers
    lease_until: float | None
    #: alive (a recent heartbeat or a live lease), or silent (its heartbeat is stale)
    alive: bool = True
    #: when it started (epoch seconds), from its heartbeat
    started_at: float | None = None


async def worker_rows(jobs: Jobs, *, now: float, dead_after: float = DEAD_AFTER) -> list[WorkerRow]:
    """The workers the job store knows of (see the module docs): every heartbeat row of a
    worker (alive, or silent for *dead_after* seconds), with the jobs it holds, and any other
    owner of a live lease; alive first, busiest first."""
    running = await jobs.find(JobFilter(states=(JobState.RUNNING,)), limit=WORKER_JOBS)
    owners: dict[str, list[Job]] = {}
    for job in running:
        if job.lease_owner and (job.lease_until is None or job.lease_until > now):
            owners.setdefault(job.lease_owner, []).append(job)
    try:
        beats = [beat for beat in await jobs.queue.processes() if beat.kind == "worker"]
    except Exception as exc:  # the panel still shows the lease owners
        _log.warning("dashboard: heartbeats not readable: %s", type(exc).__name__)
        beats = []
    rows = []
    for beat in beats:
        held = owners.pop(beat.id, [])
        rows.append(
            WorkerRow(
                name=beat.id,
                jobs=len(held),
                queues=beat.queues or (),
                last_seen=max([beat.last_seen, *(job.updated_at for job in held)]),
                lease_until=max((job.lease_until or 0.0) for job in held) or None if held else None,
                alive=bool(held) or beat.alive(now=now, threshold=dead_after),
                started_at=beat.started_at,
            )
        )
    rows.extend(
        WorkerRow(
            name=owner,
            jobs=len(held),
            queues=tuple(sorted({job.queue for job in held})),
            last_seen=max(job.updated_at for job in held),
            lease_until=max((job.lease_until or 0.0) for job in held) or None,
        )
        for owner, held in owners.items()
    )
    return sorted(rows, key=lambda row: (not row.alive, -row.jobs, row.name))


def task_row(task: Mapping[str, Any]) -> dict[str, Any]:
    safe = mask_personal(dict(task))
    return {
        "id": str(safe.get("id") or ""),
        "type": safe.get("type") or "",
        "title": mask_text(str(safe.get("title") or "")),
        "status": safe.get("status") or "",
        "priority": safe.get("priority") or "",
        "assignee": safe.get("assignee") or "",
        "due": safe.get("due"),
        "source": mask_text(str(safe.get("source") or "")),
        "created_at": safe.get("created_at"),
    }


async def task_rows(tasks: Any) -> list[dict[str, Any]]:
    """Open tasks first (most urgent, then newest), then the others: at most
    :data:`TASK_ROWS`."""
    if tasks is None:
        return []
    found = await tasks.list(limit=TASK_ROWS)
    rank = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
    found.sort(
        key=lambda t: (
            t.get("status") != "open",
            rank.get(str(t.get("priority")), 4),
            -float(t.get("created_at") or 0.0),
        )
    )
    return [task_row(task) for task in found]


# -- one job --------------------------------------------------------------------------------------


def job_page(job: Job, message: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the job page shows: the masked view, its payload and result as indented JSON,
    every attempt and the reply it sends (if it is one)."""
    view = job_view(job)
    attempts = []
    for record in view["history"]:
        attempts.append(
            {
                "number": record.get("number"),
                "started_at": record.get("started_at"),
                "duration": _number(record.get("duration")),
                "code": record.get("code") or "",
                "status": record.get("status"),
                "message": mask_text(str(record.get("message") or "")),
                "delay": _number(record.get("delay")),
            }
        )
    return {
        "job": view,
        "error": mask_text(view["last_error"]),
        "reason": mask_text(view["reason"]),
        "resolution": mask_text(view["resolution"]),
        "payload": json.dumps(view["payload"], indent=2, ensure_ascii=False, default=str),
        "result": json.dumps(view["result"], indent=2, ensure_ascii=False, default=str),
        "attempts": attempts,
        "message": None if message is None else dict(message),
    }


# -- one conversation -----------------------------------------------------------------------------


def _digits(value: Any) -> str:
    return "".join(c for c in str(value or "") if c.isdigit())


async def conversation(
    jobs: Jobs, replies: Replies | None, session: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The customer's messages (from the inbox) and the replies sent to them (with their
    delivery status), oldest first, every text masked."""
    phone = _digits(session.get("phone"))
    if not phone:
        return []
    turns: list[dict[str, Any]] = []
    for entry in await jobs.queue.find_inbound(limit=CONVERSATION_SCAN):
        payload = entry.payload if isinstance(entry.payload, Mapping) else {}
        if payload.get("kind") != "message" or _digits(payload.get("sender")) != phone:
            continue
        turns.append(
            {
                "direction": "in",
                "id": entry.id,
                "at": entry.received_at,
                "channel": entry.channel,
                "text": mask_text(str(payload.get("text") or "")),
            }
        )
    if replies is not None:
        tenant = session.get("tenant_id")
        found = await replies.recent(
            tenant_id=str(tenant) if tenant else None,
            limit=CONVERSATION_SCAN,
            scan_limit=CONVERSATION_SCAN * 5,
        )
        for record in found:
            if _digits(record.get("to")) != phone:
                continue
            view = message_view(record)
            turns.append(
                {
                    "direction": "out",
                    "id": view["id"],
                    "at": view.get("created_at"),
                    "channel": view.get("channel") or "",
                    "text": mask_text(str(view.get("text") or "")),
                    "status": view.get("status") or "",
                    "delivery_status": view.get("delivery_status") or "",
                    "delivery_error_code": view.get("delivery_error_code") or "",
                    "unknown_outcome": view.get("unknown_outcome"),
                }
            )
    turns.sort(key=lambda turn: float(turn.get("at") or 0.0))
    return turns
