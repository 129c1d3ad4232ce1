"""What the routes of one app share: its settings, its assistant once open, its readiness."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, Unpack

from antifragile.errors import ErrorCode
from antifragile.service._envelope import ApiError

if TYPE_CHECKING:
    from antifragile.inbound._model import InboundEvent
    from antifragile.jobs import Jobs, Recorded, Scheduler, SchedulerOptions, Worker, WorkerOptions
    from antifragile.policies import CircuitBreaker
    from antifragile.service._settings import Settings


class ServiceAssistant(Protocol):
    """What the app needs of an assistant (:class:`~antifragile.service.Assistant` is one)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def jobs(self) -> Jobs: ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ingest(
        self, events: Sequence[InboundEvent], *, request_id: str | None = None
    ) -> list[Recorded]: ...

    def worker(self, **options: Unpack[WorkerOptions]) -> Worker: ...

    def scheduler(self, **options: Unpack[SchedulerOptions]) -> Scheduler: ...

    def breakers(self) -> dict[str, CircuitBreaker]: ...

    # optional: ``state_store`` -- the open store shared by every process (Redis when
    # configured); ``/health`` pings it as the ``redis`` dependency when Redis is configured


@dataclass(eq=False)
class ServiceState:
    """Held by the app as ``app.state.service``; the lifespan fills in ``assistant`` and
    ``ready``."""

    settings: Settings
    assistant: ServiceAssistant | None = None
    #: ``time.monotonic()`` when the app was created (for ``uptime``)
    started: float = field(default_factory=time.monotonic)
    #: True between the end of the lifespan's start-up and the start of its shutdown
    ready: bool = False

    def require_assistant(self) -> ServiceAssistant:
        """The open assistant, or a 503 while the service starts or stops."""
        assistant = self.assistant
        if assistant is None:
            raise ApiError(
                503,
                ErrorCode.STORE_UNAVAILABLE,
                "the service is starting or stopping; try again shortly",
                retryable=True,
                headers={"Retry-After": "1"},
            )
        return assistant
