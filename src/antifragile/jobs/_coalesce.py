"""Coalescing: jobs running at once in one worker hand their items to one batch request.

A job whose work a provider can take in batches (HubSpot's batch upsert, up to 100 contacts)
calls ``await coalescer.submit(item)`` instead of sending its own request. Items submitted
while a batch is collecting join it; the batch is sent when it holds ``max_size`` items or
``linger`` seconds after its first item (event-loop time), and each ``submit`` returns its own
item's answer -- or raises its own item's error::

    upsert = Coalescer(send_contacts, max_size=100)

    @jobs.job("contact", provider="hubspot")
    async def contact(ctx: JobContext, email: str) -> str:
        return (await upsert.submit(email)).id

Every job stays a job of its own: it is claimed, leased, heartbeated, ordered by its ordering
key and completed by the worker as before, and it completes only once the batch answered for
its item. *send* returns one answer per item, in order: an exception instance in its place fails
that job alone (retried or dead-lettered by its retry policy); an exception *send* raises fails
every job of the batch alike (a transient one retries them all). A job cancelled while it waits
(its lease lost, the worker stopping) leaves the batch: its item may still be sent, so *send*
must be idempotent -- an upsert by a natural key, as every job's side effect should be. The
batch is sent in the context of the job whose item opened it (its request id is the request's).

How big the batches get follows from how many jobs of the kind run at once: a worker runs at
most ``concurrency`` jobs and claims at most ``batch`` per round, so batches of 100 need a
worker with ``concurrency`` and ``batch`` of at least 100 on the jobs' queue. When jobs pile up
(a provider's breaker was open, then it closed and every deferred job became due at once), a
worker draining them sends one request per ``max_size`` jobs instead of one per job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from antifragile.errors import ConfigurationError

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")

#: how long a batch waits for more items after its first one, by default (seconds)
DEFAULT_LINGER = 0.01


class Coalescer(Generic[T, R]):
    """Collects items submitted at once into batches of at most *max_size* for *send*.

    *send* takes the items of one batch and returns one answer per item, in order; an
    :class:`Exception` instance in an item's place is raised to that item's caller alone. An
    exception *send* raises is raised to every caller of the batch. *linger* is how long a
    batch waits for more items after its first (seconds, on the event loop's timer).
    """

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
        *,
        max_size: int = 100,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        if not isinstance(max_size, int) or max_size < 1:
            raise ConfigurationError(f"max_size must be an int >= 1, got {max_size!r}")
        if not linger >= 0:
            raise ConfigurationError(f"linger must be >= 0 seconds, got {linger!r}")
        self._send = send
        self.max_size = max_size
        self.linger = float(linger)
        self._items: list[T] = []
        self._waiters: list[asyncio.Future[R]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        #: batches sent so far, and the items they held
        self.batches = 0
        self.items = 0

    def __repr__(self) -> str:
        return f"Coalescer(max_size={self.max_size}, waiting={len(self._items)})"

    async def submit(self, item: T) -> R:
        """Add *item* to the batch being collected; its answer once the batch is sent."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._waiters.append(waiter)
        if len(self._items) >= self.max_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.linger, self._flush)
        return await waiter

    async def drain(self) -> None:
        """Send what is collecting now and wait until every batch sent has answered."""
        self._flush()
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, waiters = self._items, self._waiters
        self._items, self._waiters = [], []
        if not items:
            return
        task = asyncio.get_running_loop().create_task(self._deliver(items, waiters))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, items: list[T], waiters: list[asyncio.Future[R]]) -> None:
        self.batches += 1
        self.items += len(items)
        try:
            answers = list(await self._send(items))
            if len(answers) != len(items):
                raise RuntimeError(f"a batch of {len(items)} item(s) got {len(answers)} answer(s)")
        except Exception as exc:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        except asyncio.CancelledError:
            for waiter in waiters:
                waiter.cancel()
            raise
        for waiter, answer in zip(waiters, answers, strict=True):
            if waiter.done():  # its job was cancelled while waiting
                continue
            if isinstance(answer, Exception):
                waiter.set_exception(answer)
            else:
                with contextlib.suppress(asyncio.InvalidStateError):
                    waiter.set_result(answer)
