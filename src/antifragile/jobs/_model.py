"""What a durable job is: its states, its record, the outcomes a worker reports.

Life of a job::

    enqueue --(run_at in the future)--> scheduled --(run_at reached)--> (claimable)
    enqueue ------------------------------------------------------------> queued
    queued/scheduled/retrying --claim (lease)--> running
    running --success--> succeeded
    running --failure, attempts left--> retrying (run_at = next attempt)
    running --defer (provider breaker open)--> queued (run_at = when it half-opens; the attempt
                                                       is not counted)
    queued (deferred by the breaker or limiter) --wake_deferred (the breaker closed)--> due now
    running --permanent failure or attempts exhausted--> dead          (the dead-letter queue)
    running --release (worker stopping)--> queued (attempt not counted)
    running --lease expired (worker died)--> claimable again, automatically
    dead --redrive--> queued (attempts start again; the history is kept)
    dead --resolve/discard (with a reason)--> resolved

Ordering keys: a job enqueued with an ``ordering_key`` is claimed only when no job enqueued
before it with the same key is unfinished (scheduled, queued, running or retrying -- a job
waiting for its next attempt still holds its place) and no job of the key is running under a
live lease. A dead job lets the key go on (its later jobs run; redriven, it takes its place
again ahead of the jobs of its key still waiting); succeeded and resolved jobs are finished.
The store decides this at claim time, in the claim's own statement, so it holds across workers,
processes and crashes: a job taken over from a dead worker runs again before the jobs behind it.

Every state change is one atomic statement or transaction in the store. A job is delivered at
least once; jobs whose effects must happen once carry an idempotency key and reach providers
through idempotent operations.
"""

from __future__ import annotations

import enum
import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from antifragile.errors import ConfigurationError

JSON = Any


class JobState(enum.StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    RESOLVED = "resolved"


#: states a worker may claim from (when ``run_at <= now``), besides an expired ``running``
CLAIMABLE: frozenset[JobState] = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.RETRYING})
#: states in which a job holds back the later jobs of its ordering key
UNFINISHED: frozenset[JobState] = frozenset(
    {JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING, JobState.RETRYING}
)
#: the causes of a deferral (``last_error_code`` of a job deferred without an attempt) that
#: :meth:`~antifragile.jobs.JobQueue.wake_deferred` ends when the provider is back: its circuit
#: breaker, its rate limiter. A job in its own back-off after a real failure is ``retrying``,
#: and one deferred for another reason (a resource another job holds) keeps its time.
WAKE_CODES: tuple[str, ...] = ("CIRCUIT_OPEN", "RATE_LIMITED")
#: states a job never leaves by itself
FINAL: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.RESOLVED})


#: the last id made in this process: (milliseconds, tail), see :func:`new_job_id`
_last_id: tuple[int, int] = (0, 0)
_id_lock = threading.Lock()
_TAIL = 1 << 80
#: the system clock ids are made from (wall time, so that ids of several processes interleave)
_wall = time.time


def new_job_id() -> str:
    """A time-ordered id: 12 hex digits of milliseconds, then 20 hex digits, random for the
    first id of a millisecond.

    Ids made in one process are strictly increasing, in the order they were made: within a
    millisecond (or while the system clock stepped back) the next id is the previous one plus
    one. Jobs of equal priority and due time are claimed by id, so they start in the order
    they were enqueued."""
    global _last_id
    ms = int(_wall() * 1000)
    with _id_lock:
        last_ms, last_tail = _last_id
        if ms > last_ms:
            tail = int.from_bytes(os.urandom(10))
        else:
            ms, tail = last_ms, last_tail + 1
            if tail == _TAIL:
                ms, tail = ms + 1, 0
        _last_id = (ms, tail)
    return f"{ms:012x}{tail:020x}"


@dataclass(frozen=True, slots=True)
class StatusFlag:
    """An entity flag the store updates in the same transaction as the job's state.

    The KV entry ``key`` (a JSON object) gets ``field`` set to ``pending`` when the job is
    enqueued (and while it is retried), ``succeeded`` when it succeeds and ``failed`` when it
    goes dead -- so a flag never says "sent" for an email that was not sent.
    """

    key: str
    field: str
    pending: str = "pending"
    succeeded: str = "sent"
    failed: str = "failed"

    def to_json(self) -> dict[str, str]:
        return {
            "key": self.key,
            "field": self.field,
            "pending": self.pending,
            "succeeded": self.succeeded,
            "failed": self.failed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> StatusFlag:
        return cls(**data)


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue (validated and encoded already).

    ``context`` is the context of the request that caused the job (``request_id``, trace
    context, small string keys; see :mod:`antifragile.observability`): the worker runs the job
    in it. ``None`` or empty: nothing to carry.
    """

    name: str
    queue: str
    payload: JSON
    run_at: float
    max_attempts: int
    id: str = field(default_factory=new_job_id)
    priority: int = 0
    payload_version: int = 1
    idempotency_key: str | None = None
    provider: str | None = None
    timeout: float | None = None
    status_flag: StatusFlag | None = None
    state_data: JSON = None
    context: Mapping[str, str] | None = None
    ordering_key: str | None = None

    def __post_init__(self) -> None:
        if self.ordering_key is not None and (not self.ordering_key or "\x00" in self.ordering_key):
            raise ConfigurationError(
                "an ordering key must be a non-empty string without NUL characters"
            )


@dataclass(frozen=True, slots=True)
class Job:
    """A job as stored; ``context`` is the one it was enqueued with (empty when none).

    ``ordering_seq`` is the job's place among the jobs of its ``ordering_key`` (growing in
    enqueue order; ``None`` without a key)."""

    id: str
    name: str
    queue: str
    state: JobState
    priority: int
    payload: JSON
    payload_version: int
    idempotency_key: str | None
    attempts: int
    max_attempts: int
    run_at: float
    created_at: float
    updated_at: float
    provider: str | None = None
    timeout: float | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    first_failed_at: float | None = None
    last_failed_at: float | None = None
    last_error_code: str | None = None
    last_error: str | None = None
    history: tuple[dict[str, Any], ...] = ()
    result: JSON = None
    resolution: str | None = None
    status_flag: StatusFlag | None = None
    state_data: JSON = None
    context: dict[str, str] = field(default_factory=dict)
    ordering_key: str | None = None
    ordering_seq: int | None = None


#: the setters of Job's slots, in field order (see :func:`build_job`)
_JOB_SLOTS = tuple(Job.__dict__[f.name].__set__ for f in fields(Job))


def build_job(*values: Any) -> Job:
    """The :class:`Job` ``Job(*values)`` makes -- *values* are all its fields, in order --
    made faster: the frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``, which costs as much again as reading the row it comes from. The
    queues turn every claimed row into a job with it."""
    job = object.__new__(Job)
    for set_field, value in zip(_JOB_SLOTS, values, strict=True):
        set_field(job, value)
    return job


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The result of enqueueing one job: its id, and whether this call created it (``False``
    when a job with the same idempotency key already existed -- ``id`` is then that job's)."""

    id: str
    created: bool


OutcomeKind = Literal["succeeded", "retry", "defer", "dead", "release"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker reports for a job it holds.

    * ``succeeded``: ``result`` is stored;
    * ``retry``: the attempt failed, the job runs again at ``run_at`` (attempts + 1);
    * ``defer``: not attempted (the provider's breaker is open); runs at ``run_at``, attempts
      unchanged; ``error_code`` (when given) records why -- ``CIRCUIT_OPEN`` or
      ``RATE_LIMITED`` make the job one that :meth:`~antifragile.jobs.JobQueue.wake_deferred`
      brings forward -- as the job's last error, not as a failure;
    * ``dead``: failed for good (attempts + 1): the job enters the dead-letter queue;
    * ``release``: not finished (the worker is stopping): claimable again at once, attempts
      unchanged.

    ``attempt`` is the record appended to the job's history (``number``, ``started_at``,
    ``duration``, ``code``, ``message``, ``status``; redacted) for ``retry`` and ``dead``, and
    for ``succeeded`` when the caller wants it kept. ``attempted=False`` on ``dead`` sends a job
    to the dead-letter queue without counting an attempt (its attempts were already used up,
    e.g. by workers that died running it).
    """

    job_id: str
    kind: OutcomeKind
    run_at: float | None = None
    result: JSON = None
    attempt: dict[str, Any] | None = None
    error_code: str | None = None
    error: str | None = None
    attempted: bool = True


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs an operator means: every field that is set must match."""

    states: tuple[JobState, ...] = ()
    queue: str | None = None
    name: str | None = None
    provider: str | None = None
    error_code: str | None = None
    older_than: float | None = None  # updated_at < this (epoch seconds)
    newer_than: float | None = None  # updated_at >= this
    ids: tuple[str, ...] = ()
    #: jobs whose id starts or ends with this (lower-case hex: a prefix or the short id)
    id_part: str | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Depth and lag of one queue: jobs per state, and the age of the oldest ready job."""

    queue: str
    counts: dict[str, int]
    oldest_ready_at: float | None


# -- the inbox ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewInboxEntry:
    """An inbound event to record (see :meth:`~antifragile.jobs.JobQueue.record_inbound`).

    ``(channel, event_id)`` identifies the event: while an entry for it lives (``ttl`` seconds
    from when it was recorded) a redelivery is a duplicate. ``payload`` is the event itself
    (it may hold personal data, which is why it stays here and is never copied into the job:
    the job's payload names this entry's ``id``). ``job`` is enqueued in the same transaction
    when the entry is new, and not at all for a duplicate.
    """

    channel: str
    event_id: str
    kind: str
    tenant_key: str
    payload: JSON
    ttl: float
    job: NewJob | None
    id: str = field(default_factory=new_job_id)
    request_id: str | None = None

    def __post_init__(self) -> None:
        if not self.channel or not self.event_id:
            raise ConfigurationError(
                "an inbox entry needs a non-empty channel and event id, got "
                f"{self.channel!r} and {self.event_id!r}"
            )
        if isinstance(self.ttl, bool) or not 0 < self.ttl < math.inf:
            raise ConfigurationError(
                f"an inbox entry's ttl must be a positive number of seconds, got {self.ttl!r}"
            )
        for name in ("channel", "event_id", "kind", "tenant_key"):
            if "\x00" in getattr(self, name):
                raise ConfigurationError(f"an inbox entry's {name} holds a NUL character")


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """An inbound event as recorded; ``job_id`` names the job enqueued with it (if any)."""

    id: str
    channel: str
    event_id: str
    kind: str
    tenant_key: str
    payload: JSON
    received_at: float
    expires_at: float
    job_id: str | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording one inbound event did: ``created=True`` when the entry is new (its job, if
    any, was enqueued with it); ``created=False`` for a duplicate -- ``id`` and ``job_id`` are
    then the first entry's, and nothing was enqueued."""

    id: str
    created: bool
    job_id: str | None


# -- liveness ------------------------------------------------------------------------------------

#: the kinds of process that record heartbeats
PROCESS_KINDS = frozenset({"worker", "scheduler", "service"})


@dataclass(frozen=True, slots=True)
class ProcessBeat:
    """A worker's, scheduler's or service's heartbeat record (see
    :meth:`~antifragile.jobs.JobQueue.beat`): who it is, since when it runs, when it was last
    seen. ``queues`` is ``None`` for a process serving every queue."""

    id: str
    kind: str
    host: str
    pid: int
    queues: tuple[str, ...] | None
    started_at: float
    last_seen: float

    def __post_init__(self) -> None:
        if self.kind not in PROCESS_KINDS:
            raise ConfigurationError(
                f"a process kind is one of {sorted(PROCESS_KINDS)}, got {self.kind!r}"
            )
        for name in ("id", "host"):
            value = getattr(self, name)
            if not value or "\x00" in value:
                raise ConfigurationError(f"a process's {name} must be a non-empty text")

    def alive(self, *, now: float, threshold: float) -> bool:
        """Whether the process was seen within *threshold* seconds of *now*."""
        return self.last_seen > now - threshold
