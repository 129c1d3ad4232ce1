"""Fixtures shared by the integration tests.

``clock`` is a :class:`FakeClock` at its default start, for any test that drives time itself.
``schema`` is a scratch PostgreSQL schema of the test's own, ``queue`` a
:class:`PostgresJobQueue` in it on a store that reads ``clock`` (test_postgres_jobs,
test_postgres_group_ingest, test_wakeups). A module that defines a fixture of one of these names
uses its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from antifragile import FakeClock
from antifragile.jobs._postgres import PostgresJobQueue
from tests.integration._postgres import open_queue, scratch_schema


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    """A schema of this test's own, dropped afterwards whatever happened."""
    with scratch_schema(postgres_url, "jobs") as name:
        yield name


@pytest.fixture
async def queue(
    postgres_url: str, schema: str, clock: FakeClock
) -> AsyncIterator[PostgresJobQueue]:
    async with open_queue(postgres_url, schema, clock=clock) as queue:
        yield queue
