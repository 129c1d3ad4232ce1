"""Task records in a real SQLite store: idempotent creation (also under concurrency), listing
with filters, updates that do not lose each other, and clear errors for bad input."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path

import pytest

from antifragile import FakeClock
from antifragile.inbound import InvalidTaskError, TaskNotFoundError, Tasks
from antifragile.jobs import Jobs


@pytest.fixture
async def jobs(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Jobs]:
    async with Jobs(database_url=f"sqlite:///{tmp_path / 'tasks.db'}", clock=clock) as opened:
        yield opened


@pytest.fixture
def tasks(jobs: Jobs) -> Tasks:
    return Tasks(jobs)


async def test_create_stores_the_record_under_task_id(
    tasks: Tasks, jobs: Jobs, clock: FakeClock
) -> None:
    """A new task is open, with the given fields and the clock's time, stored in the KV under
    ``task:<id>``."""
    task = await tasks.create(
        type="review", title="Look at it", priority="urgent", due=clock.time() + 3600
    )
    assert task["status"] == "open"
    assert task["created_at"] == task["updated_at"] == clock.time()
    stored = await jobs.queue.store.kv.get(f"task:{task['id']}", now=clock.time())
    assert stored is not None
    assert stored.value == task
    assert await tasks.get(task["id"]) == task
    assert await tasks.get("t-missing") is None


async def test_the_same_key_gives_the_same_task_even_concurrently(tasks: Tasks) -> None:
    """Creating with one key twenty times at once makes one task; every call returns it."""
    made = await asyncio.gather(
        *(tasks.create(type="ticket", title=f"try {n}", key="inbox:1") for n in range(20))
    )
    assert len({t["id"] for t in made}) == 1
    assert len({t["title"] for t in made}) == 1
    assert len(await tasks.list()) == 1
    other = await tasks.create(type="ticket", title="other", key="inbox:2")
    assert other["id"] != made[0]["id"]


async def test_list_filters_by_status_and_type_newest_first(tasks: Tasks, clock: FakeClock) -> None:
    """list() returns the newest first, filtered by status and type, cut at limit."""
    first = await tasks.create(type="review", title="one")
    clock.advance(1)
    second = await tasks.create(type="support_ticket", title="two")
    clock.advance(1)
    third = await tasks.create(type="review", title="three")
    await tasks.update(second["id"], status="done")
    assert [t["id"] for t in await tasks.list()] == [third["id"], second["id"], first["id"]]
    assert [t["id"] for t in await tasks.list(status="open")] == [third["id"], first["id"]]
    assert [t["id"] for t in await tasks.list(status="done")] == [second["id"]]
    assert [t["id"] for t in await tasks.list(type="review", limit=1)] == [third["id"]]


async def test_concurrent_updates_of_different_fields_both_land(
    tasks: Tasks, clock: FakeClock
) -> None:
    """Updates are compare-and-set loops: an assignee and a status set at once both stay."""
    task = await tasks.create(type="review", title="x")
    clock.advance(5)
    await asyncio.gather(
        tasks.update(task["id"], assignee="ana"), tasks.update(task["id"], status="done")
    )
    updated = await tasks.get(task["id"])
    assert updated is not None
    assert (updated["assignee"], updated["status"]) == ("ana", "done")
    assert updated["updated_at"] == clock.time()
    assert updated["created_at"] == task["created_at"]


async def test_bad_input_is_a_validation_error(tasks: Tasks) -> None:
    """Unknown status/priority/fields, empty titles and unknown ids are clear errors with
    stable codes (VALIDATION, NOT_FOUND)."""
    task = await tasks.create(type="review", title="x")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: tasks.create(type="review", title=" "),
        lambda: tasks.create(type="review", title="x", priority="asap"),
        lambda: tasks.update(task["id"], status="closed"),
        lambda: tasks.update(task["id"], id="other"),
        lambda: tasks.list(status="archived"),
    ]
    for call in calls:
        with pytest.raises(InvalidTaskError) as caught:
            await call()
        assert caught.value.code == "VALIDATION"
    with pytest.raises(TaskNotFoundError) as missing:
        await tasks.update("t-missing", status="done")
    assert missing.value.code == "NOT_FOUND"


async def test_with_a_data_key_title_and_assignee_are_stored_encrypted(
    tasks: Tasks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A title an operator typed may name a customer, and the assignee is a person: with
    ANTIFRAGILE_DATA_KEYS both are ciphertext in the store, and every read (get, list, the
    record an update answers) shows them as written; an update keeps them sealed."""
    monkeypatch.setenv("ANTIFRAGILE_DATA_KEYS", "task-key-3f9b1d7c5e2a4086b1d3f5a7c9e0b2d4")
    task = await tasks.create(
        type="call", title="Call Ada Lovelace back", assignee="ana@shop.example"
    )

    def raw() -> str:
        with closing(sqlite3.connect(tmp_path / "tasks.db")) as conn:
            return str(conn.execute("SELECT value FROM antifragile_kv").fetchall())

    assert "Ada Lovelace" not in raw()
    assert "ana@shop.example" not in raw()
    assert "$sealed" in raw()
    assert await tasks.get(task["id"]) == task
    updated = await tasks.update(task["id"], status="done", assignee="bo@shop.example")
    assert updated["title"] == "Call Ada Lovelace back"
    assert updated["assignee"] == "bo@shop.example"
    assert "bo@shop.example" not in raw()
    (listed,) = await tasks.list()
    assert (listed["title"], listed["assignee"], listed["status"]) == (
        "Call Ada Lovelace back",
        "bo@shop.example",
        "done",
    )
