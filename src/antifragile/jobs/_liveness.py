"""Liveness: every worker and scheduler keeps a heartbeat row in the job database.

A process records itself (:class:`~antifragile.jobs.ProcessBeat`: id, kind, host, pid, queues,
``started_at``, ``last_seen``) when it starts, refreshes ``last_seen`` every *interval* seconds
of its clock, and deletes its row when it stops gracefully. A row not refreshed for
``dead_after`` seconds belongs to a process that died (killed, crashed, its machine gone); the
scheduler's retention pass deletes such rows after a day. :func:`liveness` summarises the rows
for ``/health``, the CLI and the alerts.

Writing a heartbeat is one upsert; a failed write is logged and tried again at the next beat
(the process keeps working: a database that does not answer is reported elsewhere).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from antifragile.jobs._model import ProcessBeat
from antifragile.jobs._protocol import JobQueue
from antifragile.policies import Clock

_log = logging.getLogger("antifragile.jobs.liveness")

#: how often a process refreshes its row (seconds of its clock)
BEAT_INTERVAL = 10.0
#: a process not seen for this long is dead (seconds); several missed beats, not one
DEAD_AFTER = 60.0


def process_id(kind: str) -> str:
    """A new id for a process of *kind*: ``host:pid:kind:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{kind}:{uuid.uuid4().hex[:8]}"


class Presence:
    """The heartbeat row of one process. ``await beat()`` as often as convenient: it writes
    when *interval* seconds of *clock* have passed since the last write (``force=True``:
    always); ``await leave()`` on a graceful stop."""

    def __init__(
        self,
        queue: Callable[[], JobQueue],
        *,
        kind: str,
        clock: Clock,
        queues: Sequence[str] | None = None,
        interval: float = BEAT_INTERVAL,
        id: str | None = None,
    ) -> None:
        self._queue = queue
        self.kind = kind
        self.clock = clock
        self.queues = None if queues is None else tuple(queues)
        self.interval = float(interval)
        self.id = id or process_id(kind)
        self.started_at: float | None = None
        self._last: float | None = None

    def __repr__(self) -> str:
        return f"Presence({self.id!r})"

    async def beat(self, *, force: bool = False) -> bool:
        """Refresh the row when due; whether it was written."""
        moment = self.clock.monotonic()
        if not force and self._last is not None and moment - self._last < self.interval:
            return False
        now = self.clock.time()
        if self.started_at is None:
            self.started_at = now
        record = ProcessBeat(
            self.id, self.kind, socket.gethostname(), os.getpid(), self.queues, self.started_at, now
        )
        try:
            await self._queue().beat(record, now=now)
        except Exception as exc:  # the next beat tries again
            _log.warning("%s %s: heartbeat not recorded: %s", self.kind, self.id, exc)
            return False
        self._last = moment
        return True

    async def leave(self) -> None:
        """Delete the row (a graceful stop); a failure is logged (the row then ages out)."""
        if self._last is None:
            return
        try:
            await self._queue().leave(self.id)
        except Exception as exc:
            _log.warning("%s %s: heartbeat row not removed: %s", self.kind, self.id, exc)
        self._last = None


@dataclass(frozen=True, slots=True)
class KindLiveness:
    """The processes of one kind: how many are alive, how many rows are stale (dead), and when
    any of them was seen last (epoch seconds; ``None`` when none ever was)."""

    alive: int
    dead: int
    last_seen: float | None

    def to_json(self) -> dict[str, float | int | None]:
        return {"alive": self.alive, "dead": self.dead, "last_seen": self.last_seen}


def liveness(
    processes: Sequence[ProcessBeat], *, now: float, dead_after: float = DEAD_AFTER
) -> dict[str, KindLiveness]:
    """Per kind (``worker``, ``scheduler``), the summary of *processes* at *now*."""
    summary: dict[str, KindLiveness] = {}
    for kind in ("worker", "scheduler"):
        rows = [p for p in processes if p.kind == kind]
        alive = sum(1 for p in rows if p.alive(now=now, threshold=dead_after))
        last = max((p.last_seen for p in rows), default=None)
        summary[kind] = KindLiveness(alive, len(rows) - alive, last)
    return summary
