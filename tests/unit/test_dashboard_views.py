"""The dashboard's last-hour graphs and workers, from job records (pure logic, no store).

``activity`` buckets succeeded jobs, failed attempts and waits per minute; ``bar_chart``
draws them as SVG that parses and carries no script or external reference.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from typing import Any

from antifragile import FakeClock
from antifragile.jobs import Job, JobContext, Jobs, JobState, ProcessBeat
from antifragile.service._dashboard_views import (
    GRAPH_BUCKET,
    activity,
    bar_chart,
    task_row,
    worker_rows,
)

NOW = 1_800_000_000.0
SVG = "{http://www.w3.org/2000/svg}"


def job(**changes: Any) -> Job:
    base = Job(
        id="01a2",
        name="crm.sync_contact",
        queue="integrations",
        state=JobState.SUCCEEDED,
        priority=0,
        payload={},
        payload_version=1,
        idempotency_key=None,
        attempts=1,
        max_attempts=3,
        run_at=NOW - 600,
        created_at=NOW - 600,
        updated_at=NOW - 590,
    )
    return replace(base, **changes)


def test_activity_counts_successes_failures_and_the_longest_wait_per_minute() -> None:
    first_try = job()  # due at -600, done at -590: waited about 10 s
    retried = job(
        id="01a3",
        created_at=NOW - 1200,
        run_at=NOW - 1080,  # due again after its failed attempt (started -1190, 5 s, delay 105 s)
        updated_at=NOW - 1000,
        history=(
            {
                "number": 1,
                "started_at": NOW - 1190,
                "duration": 5.0,
                "code": "TIMEOUT",
                "delay": 105.0,
            },
            {"number": 2, "started_at": NOW - 1020, "duration": 1.0, "code": None},
        ),
    )
    dead = job(
        id="01a4",
        state=JobState.DEAD,
        updated_at=NOW - 30,
        history=({"number": 1, "started_at": NOW - 40, "duration": 2.0, "code": "HTTP_503"},),
        run_at=NOW - 45,
    )
    old = job(id="01a5", updated_at=NOW - 7200, created_at=NOW - 7300, run_at=NOW - 7300)
    found = activity([first_try, retried, dead, old], now=NOW, oldest_ready_at=NOW - 90)
    assert len(found.succeeded) == len(found.failed) == len(found.lag) == 60

    def minute(at: float) -> int:
        return int((at - (NOW - 3600)) // GRAPH_BUCKET)

    assert sum(found.succeeded) == 2  # the one from two hours ago is outside the window
    assert found.succeeded[minute(NOW - 590)] == 1
    assert found.succeeded[minute(NOW - 1000)] == 1
    assert sum(found.failed) == 2
    assert found.failed[minute(NOW - 1185)] == 1
    assert found.failed[minute(NOW - 38)] == 1
    assert found.lag[minute(NOW - 590)] == 10.0
    assert found.lag[minute(NOW - 1190)] == 10.0  # created -1200, started -1190
    assert found.lag[minute(NOW - 1020)] == 60.0  # due -1080, started -1020
    assert found.lag[-1] == 90.0  # the oldest job still waiting


def test_a_bar_chart_is_svg_with_a_tooltip_per_bar_and_nothing_external() -> None:
    values = [0.0] * 58 + [3.0, 7.0]
    drawn = str(bar_chart(values, start=NOW - 3600, title="Failed attempts", kind="bad"))
    root = ET.fromstring(drawn)
    assert root.tag == f"{SVG}svg"
    bars = root.findall(f"{SVG}rect")
    assert len(bars) == 2  # an empty minute draws nothing
    assert all(bar.get("class") == "bar bar-bad" for bar in bars)
    heights = [float(bar.get("height") or 0) for bar in bars]
    assert heights[0] < heights[1]
    assert [bar.find(f"{SVG}title").text for bar in bars] == [  # type: ignore[union-attr]
        "07:58 UTC: 3",
        "07:59 UTC: 7",
    ]
    assert "10 in the last hour" in (root.get("aria-label") or "")
    for forbidden in ("<script", "href", "style="):
        assert forbidden not in drawn
    empty = ET.fromstring(str(bar_chart([0.0] * 60, start=NOW, title="Lag", unit="s")))
    assert empty.findall(f"{SVG}rect") == []


def test_a_task_row_masks_phones_and_emails_in_its_title() -> None:
    row = task_row(
        {
            "id": "t1",
            "type": "support_ticket",
            "title": "Call +44 7700 900123 or mail ada@example.com",
            "status": "open",
            "priority": "high",
            "created_at": NOW,
        }
    )
    assert "900123" not in row["title"]
    assert "ada@example.com" not in row["title"]
    assert "a•••@example.com" in row["title"]


async def test_the_workers_are_the_owners_of_live_leases() -> None:
    """A worker shows while it holds a lease on a running job (its jobs counted, its queues
    listed); once its leases expire it no longer shows; with no lease the list is empty."""
    clock = FakeClock()
    async with Jobs(database_url="memory://", clock=clock) as jobs:

        @jobs.job(queue="email")
        async def send(ctx: JobContext, n: int) -> None: ...

        @jobs.job(queue="crm")
        async def sync(ctx: JobContext, n: int) -> None: ...

        assert await worker_rows(jobs, now=clock.time()) == []
        for n in range(3):
            await send.enqueue(n)
        await sync.enqueue(1)
        now = clock.time()
        await jobs.queue.claim(worker="host-a:1:aa", limit=3, lease=30, now=now)
        await jobs.queue.claim(worker="host-b:2:bb", limit=1, lease=60, now=now)
        rows = await worker_rows(jobs, now=now)
        assert [(row.name, row.jobs) for row in rows] == [("host-a:1:aa", 3), ("host-b:2:bb", 1)]
        assert rows[0].lease_until == now + 30
        assert set(rows[0].queues) | set(rows[1].queues) == {"email", "crm"}
        clock.advance(45)  # host-a's leases ran out: it may be gone
        later = await worker_rows(jobs, now=clock.time())
        assert [row.name for row in later] == ["host-b:2:bb"]


async def test_workers_come_from_their_heartbeats_alive_or_silent() -> None:
    """A worker that wrote a heartbeat shows even while it holds no job; one whose heartbeat
    went stale shows as silent (after the alive ones); its held jobs are counted on its row."""
    clock = FakeClock()
    async with Jobs(database_url="memory://", clock=clock) as jobs:

        @jobs.job(queue="email")
        async def send(ctx: JobContext, n: int) -> None: ...

        start = clock.time()
        await jobs.queue.beat(
            ProcessBeat("host-a:1:worker:aa", "worker", "host-a", 1, ("email",), start, start),
            now=start,
        )
        await jobs.queue.beat(
            ProcessBeat("host-s:3:scheduler:ss", "scheduler", "host-s", 3, None, start, start),
            now=start,
        )
        idle = await worker_rows(jobs, now=start)
        assert [(row.name, row.jobs, row.alive, row.queues) for row in idle] == [
            ("host-a:1:worker:aa", 0, True, ("email",))
        ]
        clock.advance(30)
        late = clock.time()
        await jobs.queue.beat(
            ProcessBeat("host-b:2:worker:bb", "worker", "host-b", 2, None, late, late), now=late
        )
        await send.enqueue(1)
        await jobs.queue.claim(worker="host-b:2:worker:bb", limit=1, lease=60, now=late)
        clock.advance(40)  # host-a silent for 70 s, host-b for 40 s (and holding a lease)
        rows = await worker_rows(jobs, now=clock.time(), dead_after=60)
        assert [(row.name, row.jobs, row.alive) for row in rows] == [
            ("host-b:2:worker:bb", 1, True),
            ("host-a:1:worker:aa", 0, False),
        ]
        assert rows[0].queues == ()
        assert rows[0].started_at == late
