"""Bulkhead: a cap on calls in flight, for threads and tasks, with bounded FIFO waiting."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from antifragile import Bulkhead, BulkheadFullError, ConfigurationError
from antifragile.observability import CallRejected, RecordingObserver


class _Gauge:
    """Counts calls inside a section and remembers the most seen at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


def test_slots_are_taken_and_given_back() -> None:
    """``in_use`` counts slots taken; ``try_acquire`` fails when none is free."""
    bulkhead = Bulkhead(2)
    assert bulkhead.try_acquire()
    assert bulkhead.try_acquire()
    assert bulkhead.in_use == 2
    assert not bulkhead.try_acquire()
    bulkhead.release()
    assert bulkhead.in_use == 1
    assert repr(bulkhead) == "Bulkhead(max_concurrent=2, in_use=1)"


def test_full_bulkhead_rejects_at_once_by_default() -> None:
    """With ``max_wait=0`` (the default) a call beyond the limit is refused immediately, with
    an event: nothing else runs here that could free the slot, so a call that waited would
    never be admitted, and is refused without one."""
    observer = RecordingObserver()
    bulkhead = Bulkhead(1, name="cal", observer=observer)
    assert bulkhead.max_wait == 0
    bulkhead.acquire()
    with pytest.raises(BulkheadFullError) as caught:
        bulkhead.acquire(operation="book")
    assert caught.value.provider == "cal"
    assert caught.value.operation == "book"
    assert caught.value.code == "BULKHEAD_FULL"
    (event,) = observer.of(CallRejected)
    assert (event.by, event.policy) == ("bulkhead", "cal")
    assert bulkhead.in_use == 1


async def test_full_bulkhead_rejects_tasks_at_once_by_default() -> None:
    """The async form rejects at once too."""
    bulkhead = Bulkhead(1)
    await bulkhead.aacquire()
    with pytest.raises(BulkheadFullError):
        await bulkhead.aacquire()
    assert bulkhead.in_use == 1


# -- threads ----------------------------------------------------------------------------------


def test_threads_never_exceed_max_concurrent() -> None:
    """Sixteen threads through a bulkhead of three: never more than three inside."""
    bulkhead = Bulkhead(3, max_wait=10.0)
    gauge = _Gauge()

    def work() -> None:
        for _ in range(20):
            bulkhead.acquire()
            try:
                gauge.enter()
                assert bulkhead.in_use <= 3
                time.sleep(0.0001)
                gauge.leave()
            finally:
                bulkhead.release()

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gauge.peak <= 3
    assert bulkhead.in_use == 0


def test_a_waiting_thread_gets_the_released_slot() -> None:
    """A thread waiting within ``max_wait`` is handed the slot as soon as it is released."""
    bulkhead = Bulkhead(1, max_wait=60.0)
    bulkhead.acquire()
    got = threading.Event()

    def waiter() -> None:
        bulkhead.acquire()
        got.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert not got.wait(0.02)
    bulkhead.release()
    assert got.wait(60.0)
    thread.join()
    assert bulkhead.in_use == 1
    bulkhead.release()
    assert bulkhead.in_use == 0


def test_a_thread_waiting_longer_than_max_wait_is_rejected() -> None:
    """After ``max_wait`` without a slot, the waiting thread is refused (having waited that
    long) and leaves the queue."""
    bulkhead = Bulkhead(1, max_wait=0.03)
    bulkhead.acquire()
    started = time.monotonic()
    with pytest.raises(BulkheadFullError):
        bulkhead.acquire()
    assert time.monotonic() - started >= 0.02  # 0.03, less the timer's rounding
    bulkhead.release()
    assert bulkhead.in_use == 0
    assert bulkhead.try_acquire()  # nothing left behind by the abandoned waiter


# -- tasks ------------------------------------------------------------------------------------


async def test_tasks_never_exceed_max_concurrent() -> None:
    """Fifty tasks through a bulkhead of four: never more than four inside."""
    bulkhead = Bulkhead(4, max_wait=10.0)
    gauge = _Gauge()

    async def work() -> None:
        await bulkhead.aacquire()
        try:
            gauge.enter()
            assert bulkhead.in_use <= 4
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            gauge.leave()
        finally:
            bulkhead.release()

    await asyncio.gather(*(work() for _ in range(50)))
    assert gauge.peak == 4
    assert bulkhead.in_use == 0


async def test_waiting_tasks_are_served_first_come_first_served() -> None:
    """Slots are handed over in the order the tasks started waiting."""
    bulkhead = Bulkhead(1, max_wait=10.0)
    await bulkhead.aacquire()
    order: list[int] = []

    async def waiter(n: int) -> None:
        await bulkhead.aacquire()
        order.append(n)
        await asyncio.sleep(0)
        bulkhead.release()

    tasks = []
    for n in range(5):
        tasks.append(asyncio.create_task(waiter(n)))
        await asyncio.sleep(0)  # let it queue before the next one
    bulkhead.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert bulkhead.in_use == 0


async def test_a_task_waiting_longer_than_max_wait_is_rejected() -> None:
    """An async waiter is refused after ``max_wait`` and takes no slot."""
    bulkhead = Bulkhead(1, max_wait=0.02)
    await bulkhead.aacquire()
    with pytest.raises(BulkheadFullError):
        await bulkhead.aacquire()
    bulkhead.release()
    assert bulkhead.in_use == 0


async def test_cancelled_waiter_leaves_the_queue() -> None:
    """A task cancelled while queued does not take the next slot."""
    bulkhead = Bulkhead(1, max_wait=10.0)
    await bulkhead.aacquire()
    task = asyncio.create_task(bulkhead.aacquire())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    bulkhead.release()
    assert bulkhead.in_use == 0
    assert bulkhead.try_acquire()


async def test_waiter_cancelled_after_the_handover_gives_the_slot_back() -> None:
    """A slot handed to a task that is cancelled before it resumes is not lost."""
    bulkhead = Bulkhead(1, max_wait=10.0)
    await bulkhead.aacquire()
    task = asyncio.create_task(bulkhead.aacquire())
    await asyncio.sleep(0)
    bulkhead.release()  # hands the slot to the waiting task...
    assert bulkhead.in_use == 1
    task.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bulkhead.in_use == 0


async def test_handover_to_the_next_waiter_after_a_cancelled_one() -> None:
    """A cancelled waiter's handed-over slot goes on to the next in line."""
    bulkhead = Bulkhead(1, max_wait=10.0)
    await bulkhead.aacquire()
    first = asyncio.create_task(bulkhead.aacquire())
    await asyncio.sleep(0)
    second = asyncio.create_task(bulkhead.aacquire())
    await asyncio.sleep(0)
    bulkhead.release()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 60.0)
    assert bulkhead.in_use == 1


async def test_threads_and_tasks_share_one_bulkhead() -> None:
    """A slot released by a thread wakes a task waiting on the event loop."""
    bulkhead = Bulkhead(1, max_wait=60.0)
    bulkhead.acquire()
    task = asyncio.create_task(bulkhead.aacquire())
    await asyncio.sleep(0)
    timer = threading.Timer(0.01, bulkhead.release)
    timer.start()
    await asyncio.wait_for(task, 60.0)
    timer.join()
    assert bulkhead.in_use == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: Bulkhead(0),
        lambda: Bulkhead(-1),
        lambda: Bulkhead(2.5),  # type: ignore[arg-type]
        lambda: Bulkhead(1, max_wait=-1.0),
        lambda: Bulkhead(1, max_wait=float("nan")),
    ],
)
def test_invalid_bulkheads_are_rejected(make: Callable[[], Bulkhead]) -> None:
    """Fewer than one slot, fractional slots and negative waits are misuse."""
    with pytest.raises(ConfigurationError):
        make()
