"""Concurrent webhooks' inbox records through the service's :class:`Assistant`: recorded in
shared transactions, and a request whose entries cannot be recorded fails alone.

On SQLite and PostgreSQL. A trigger refuses the inbox entry of one event id (a record failing
mid-transaction); the requests that went into the same batch are recorded all the same.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from antifragile.errors import StoreError
from antifragile.inbound import Channel, EventKind, InboundEvent
from antifragile.jobs import JobFilter, Recorded
from antifragile.service import Assistant, Settings

REFUSED = "wamid.refused"


def message(event_id: str) -> InboundEvent:
    return InboundEvent(
        Channel.WHATSAPP, event_id, EventKind.MESSAGE, "106540352242922", sender="447700900123"
    )


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database whose inbox refuses the entry of :data:`REFUSED`."""
    if request.param == "sqlite":
        path = tmp_path / "ingest.db"
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_url")
    schema = f"ingest_{uuid.uuid4().hex[:12]}"
    yield f"{url}?schema={schema}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def _refuse(url: str) -> None:
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as raw:
            raw.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON antifragile_inbox "
                f"WHEN NEW.event_id = '{REFUSED}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
            raw.commit()
        return
    base, _, schema = url.partition("?schema=")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(
            f'CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$ '
            f"BEGIN IF NEW.event_id = '{REFUSED}' THEN RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$".encode()
        )
        conn.execute(
            f'CREATE TRIGGER refuse BEFORE INSERT ON "{schema}".antifragile_inbox '
            f'FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse()'.encode()
        )


@pytest.fixture
async def assistant(database: str) -> AsyncIterator[Assistant]:
    settings = Settings.from_env({"ANTIFRAGILE_DATABASE_URL": database})
    async with Assistant(settings) as opened:
        _refuse(database)
        yield opened


async def test_concurrent_webhooks_are_each_recorded_with_their_job(assistant: Assistant) -> None:
    results = await asyncio.wait_for(
        asyncio.gather(*(assistant.ingest([message(f"wamid.{i}")]) for i in range(30))), 60
    )
    assert all(batch[0].created for batch in results)
    assert len({batch[0].id for batch in results}) == 30
    jobs = await assistant.jobs.find(JobFilter(queue="inbound"), limit=100)
    assert {job.id for job in jobs} == {batch[0].job_id for batch in results}


async def test_a_request_whose_entry_is_refused_fails_alone(assistant: Assistant) -> None:
    """Requests recorded in one batch with one whose entry the database refuses: that one gets
    the error and records nothing; every other is recorded with its job."""
    calls = [assistant.ingest([message(f"wamid.ok-{i}")]) for i in range(3)]
    calls.insert(2, assistant.ingest([message("wamid.with-it"), message(REFUSED)]))
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 60)
    assert isinstance(results[2], StoreError)
    recorded: list[Recorded] = []
    for result in (results[0], results[1], results[3]):
        assert not isinstance(result, BaseException)
        recorded.extend(result)
    assert all(r.created for r in recorded)
    inbox = await assistant.jobs.queue.find_inbound(limit=100)
    assert {e.event_id for e in inbox} == {"wamid.ok-0", "wamid.ok-1", "wamid.ok-2"}
    assert len(await assistant.jobs.find(JobFilter(queue="inbound"), limit=100)) == 3
