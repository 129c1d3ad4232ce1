"""Tasks: work for a person -- a support ticket, a message to review, an order to cancel.

::

    tasks = Tasks(jobs)
    ticket = await tasks.create(type="support_ticket", title="Complaint via whatsapp",
                                priority="high", source="inbox:0190...", key="ticket:0190...")
    await tasks.update(ticket["id"], status="done", assignee="ana")
    open_ones = await tasks.list(status="open")

A task is a JSON record in the key-value part of the job queue's store (``jobs.queue.store.kv``)
under ``task:<id>``::

    {"id", "type", "title", "status", "priority", "assignee", "due", "source",
     "created_at", "updated_at"}

``status`` is ``open``, ``done`` or ``cancelled``; ``priority`` ``low``, ``normal``, ``high`` or
``urgent``; ``due``, ``created_at`` and ``updated_at`` are epoch seconds (from the injected
clock); ``source`` says where the task came from (``inbox:<id>``, ``saga:<job id>:<step>``).
Titles name what to do, not who asked: no phone numbers or emails in them. A title typed by an
operator may name a person all the same, and the assignee is one: with a data key configured
(``ANTIFRAGILE_DATA_KEYS``) both are stored encrypted (:mod:`antifragile.inbound._sealing`).

**Idempotent creation.** ``create(key=...)`` derives the task id from the key (a hash of it), and
creates the record with a compare-and-set that only succeeds when the key is absent: the same key
gives the same task however many times -- and from however many processes -- it is created. A
saga step passes its own idempotency key, so a step that runs again creates no second task.
**Updates** are compare-and-set loops on the record's version, so two concurrent updates of
different fields both land.

Listing scans the ``task:`` prefix (tasks are human work: hundreds, not millions) and returns
the newest first.
"""

from __future__ import annotations

import builtins
import hashlib
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from antifragile.errors import AntifragileError, ConfigurationError, ErrorCode
from antifragile.inbound._sealing import TASK_FIELDS, open_fields, seal_fields
from antifragile.policies import Clock

if TYPE_CHECKING:
    from antifragile.jobs import Jobs
    from antifragile.stores import KeyValueStore

PREFIX = "task:"
STATUSES = ("open", "done", "cancelled")
PRIORITIES = ("low", "normal", "high", "urgent")
#: the fields :meth:`Tasks.update` may change
UPDATABLE = frozenset({"title", "status", "priority", "assignee", "due"})
#: how many records :meth:`Tasks.list` reads at most
SCAN_LIMIT = 10_000
_CAS_TRIES = 20


class TaskNotFoundError(AntifragileError, LookupError):
    """No task with this id."""

    default_code = ErrorCode.NOT_FOUND


class InvalidTaskError(ConfigurationError):
    """A task field with a value it cannot have (code ``VALIDATION``)."""

    default_code = ErrorCode.VALIDATION


class TaskConflictError(AntifragileError):
    """The task kept changing under a write (code ``CONFLICT``, retryable)."""

    default_code = ErrorCode.CONFLICT
    default_retryable = True


def task_id_for(key: str) -> str:
    """The id of the task created with idempotency *key* (always the same for one key)."""
    if not key:
        raise InvalidTaskError("a task key must not be empty")
    return "t" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidTaskError(f"task {field} must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def _due(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTaskError(f"task due must be epoch seconds or None; got {value!r}")
    return float(value)


def _text(field: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidTaskError(f"task {field} must be a non-empty string")
    return value.strip()


class Tasks:
    """Task records in a store's key-value part (see the module docs).

    Give it the :class:`~antifragile.jobs.Jobs` whose queue's store keeps them (read when
    used, so the jobs may be opened later) or a :class:`~antifragile.stores.KeyValueStore`;
    *clock* defaults to the jobs' clock.
    """

    def __init__(
        self,
        jobs: Jobs | None = None,
        *,
        kv: KeyValueStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        if (jobs is None) == (kv is None):
            raise ConfigurationError("Tasks needs either jobs or kv")
        self._jobs = jobs
        self._kv = kv
        if clock is None:
            if jobs is None:
                raise ConfigurationError("Tasks on a bare kv needs a clock")
            clock = jobs.clock
        self.clock = clock

    @property
    def kv(self) -> KeyValueStore:
        if self._kv is not None:
            return self._kv
        assert self._jobs is not None
        return self._jobs.queue.store.kv

    def _now(self) -> float:
        return self.clock.time()

    async def create(
        self,
        *,
        type: str,
        title: str,
        priority: str = "normal",
        assignee: str | None = None,
        due: float | None = None,
        source: str | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Create an open task; with *key*, the task that key created first if there is one."""
        now = self._now()
        record: dict[str, Any] = {
            "id": task_id_for(key) if key is not None else "t" + uuid.uuid4().hex[:24],
            "type": _text("type", type),
            "title": _text("title", title),
            "status": "open",
            "priority": _choice("priority", priority, PRIORITIES),
            "assignee": _text("assignee", assignee, optional=True),
            "due": _due(due),
            "source": _text("source", source, optional=True),
            "created_at": now,
            "updated_at": now,
        }
        storage_key = PREFIX + record["id"]
        for _ in range(_CAS_TRIES):
            written = await self.kv.compare_and_set(
                storage_key, seal_fields(record, TASK_FIELDS), expected_version=None, now=now
            )
            if written is not None:
                return record
            existing = await self.kv.get(storage_key, now=now)
            if existing is not None and isinstance(existing.value, dict):
                return open_fields(existing.value, TASK_FIELDS)
        raise TaskConflictError(f"task {record['id']} could not be created (it keeps changing)")

    async def get(self, id: str) -> dict[str, Any] | None:
        """The task *id*, or ``None``."""
        found = await self.kv.get(PREFIX + id, now=self._now())
        if found is None or not isinstance(found.value, dict):
            return None
        return open_fields(found.value, TASK_FIELDS)

    async def list(
        self, status: str | None = None, limit: int = 100, *, type: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Tasks (with *status* / of *type* when given), newest first, at most *limit*."""
        if status is not None:
            _choice("status", status, STATUSES)
        if limit < 1:
            raise InvalidTaskError("limit must be >= 1")
        entries = await self.kv.scan(PREFIX, now=self._now(), limit=SCAN_LIMIT)
        found = [
            open_fields(e.value, TASK_FIELDS)
            for e in entries
            if isinstance(e.value, dict)
            and (status is None or e.value.get("status") == status)
            and (type is None or e.value.get("type") == type)
        ]
        found.sort(key=lambda t: (-float(t.get("created_at") or 0.0), str(t.get("id"))))
        return found[:limit]

    async def update(self, id: str, /, **changes: Any) -> dict[str, Any]:
        """Change fields of task *id* (``status``, ``priority``, ``assignee``, ``due``,
        ``title``); the record afterwards. An unknown id is :class:`TaskNotFoundError`."""
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise InvalidTaskError(
                f"cannot update task field(s) {', '.join(sorted(unknown))}; "
                f"updatable: {', '.join(sorted(UPDATABLE))}"
            )
        checked: dict[str, Any] = {}
        for field, value in changes.items():
            if field == "status":
                checked[field] = _choice("status", value, STATUSES)
            elif field == "priority":
                checked[field] = _choice("priority", value, PRIORITIES)
            elif field == "due":
                checked[field] = _due(value)
            elif field == "assignee":
                checked[field] = _text("assignee", value, optional=True)
            else:
                checked[field] = _text(field, value)
        key = PREFIX + id
        for _ in range(_CAS_TRIES):
            now = self._now()
            current = await self.kv.get(key, now=now)
            if current is None or not isinstance(current.value, Mapping):
                raise TaskNotFoundError(f"no task {id!r}")
            record = {**open_fields(current.value, TASK_FIELDS), **checked, "updated_at": now}
            written = await self.kv.compare_and_set(
                key, seal_fields(record, TASK_FIELDS), expected_version=current.version, now=now
            )
            if written is not None:
                return record
        raise TaskConflictError(f"task {id!r} keeps changing; update not applied")
