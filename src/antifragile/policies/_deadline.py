"""The call in progress, and the deadline visible to the code it runs.

Async timeouts cancel the call. Sync code cannot be cancelled from outside, so a sync timeout is
cooperative: the policy publishes the deadline here and code that can bound its own waiting --
:class:`~antifragile.SyncResilientClient` sets its httpx timeouts from it -- reads
:func:`time_remaining`. ``Policy(timeout_strategy="thread")`` enforces a sync timeout on code
that does not cooperate, by running it in a worker thread that is abandoned when time is up.

A call made while another policy's call is in progress inherits the outer deadline, so nested
policies never outlive the call that contains them.
"""

from __future__ import annotations

from contextvars import ContextVar

from antifragile.policies._clock import Clock


class CallInfo:
    """Per-call facts the strategies share.

    ``deadline`` is the whole call's deadline and ``attempt_deadline`` the current attempt's, both
    absolute times on ``clock.monotonic()`` (``None``: unbounded).
    """

    __slots__ = ("attempt", "attempt_deadline", "clock", "deadline", "operation", "replay_safe")

    def __init__(
        self, clock: Clock, operation: str | None = None, replay_safe: bool = True
    ) -> None:
        self.clock = clock
        self.operation = operation
        self.replay_safe = replay_safe
        self.deadline: float | None = None
        self.attempt_deadline: float | None = None
        self.attempt = 0

    def inherit(self, parent: CallInfo) -> None:
        """Bound this call by the deadline in force in *parent*."""
        bound = parent.attempt_deadline if parent.attempt_deadline is not None else parent.deadline
        if bound is not None:
            remaining = bound - parent.clock.monotonic()
            self.deadline = self.clock.monotonic() + remaining

    def remaining(self) -> float | None:
        bound = self.attempt_deadline if self.attempt_deadline is not None else self.deadline
        return None if bound is None else bound - self.clock.monotonic()


current_call: ContextVar[CallInfo | None] = ContextVar("antifragile_call", default=None)


def time_remaining() -> float | None:
    """Seconds left before the current call's nearest deadline, or ``None`` when unbounded."""
    info = current_call.get()
    return None if info is None else info.remaining()
