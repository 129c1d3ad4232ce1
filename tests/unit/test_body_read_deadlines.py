"""The body reads' deadlines (:class:`antifragile.service._bodylimit._ReadDeadlines`): the
reads of one event loop share one timer, yet each stalled read -- and only it -- times out (at
its own deadline: the timer is armed again for the reads left); a cancellation from elsewhere
stays a cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from antifragile.service._bodylimit import BodyTimeout, _Bounded, _ReadDeadlines

TIMEOUT = 0.05


def _chunks(*parts: bytes) -> Any:
    """A receive channel answering *parts* at once, then never again (a stalled client)."""
    queue = list(parts)

    async def receive() -> dict[str, Any]:
        if not queue:
            await asyncio.Event().wait()
        body = queue.pop(0)
        return {"type": "http.request", "body": body, "more_body": True}

    return receive


async def test_only_the_stalled_reads_time_out_and_each_at_its_deadline() -> None:
    deadlines = _ReadDeadlines(asyncio.get_running_loop(), TIMEOUT)
    quick = [_Bounded(_chunks(b"a", b"b"), 100, deadlines) for _ in range(50)]
    for bounded in quick:  # bodies that have arrived: no wait, no timeout
        assert (await bounded())["body"] == b"a"
        assert (await bounded())["body"] == b"b"
    assert deadlines.reads == {}

    first = _Bounded(_chunks(), 100, deadlines)
    first_task = asyncio.create_task(first())
    await asyncio.sleep(TIMEOUT / 2)
    second = _Bounded(_chunks(), 100, deadlines)
    second_task = asyncio.create_task(second())
    with pytest.raises(BodyTimeout):
        await first_task
    assert first.refused
    with pytest.raises(BodyTimeout):
        await second_task
    assert second.refused
    assert deadlines.reads == {}
    assert deadlines.timer is None

    # a later read arms the timer again
    third = _Bounded(_chunks(b"c"), 100, deadlines)
    assert (await third())["body"] == b"c"
    with pytest.raises(BodyTimeout):
        await third()


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = _ReadDeadlines(asyncio.get_running_loop(), 60.0)
    bounded = _Bounded(_chunks(), 100, deadlines)
    task = asyncio.create_task(bounded())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not bounded.refused
    assert deadlines.reads == {}
    if deadlines.timer is not None:
        deadlines.timer.cancel()


async def test_the_body_limit_still_applies() -> None:
    deadlines = _ReadDeadlines(asyncio.get_running_loop(), 60.0)
    bounded = _Bounded(_chunks(b"12345", b"67890"), 8, deadlines)
    await bounded()
    with pytest.raises(Exception, match="larger than 8 bytes"):
        await bounded()
    assert bounded.refused
    assert deadlines.reads == {}
    if deadlines.timer is not None:
        deadlines.timer.cancel()
