"""A job as operators see it: JSON, with credentials redacted (the CLI and the admin API)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from antifragile.errors import redact
from antifragile.jobs._ids import short_id
from antifragile.jobs._model import Job
from antifragile.jobs._payload import redact_payload


def _same(value: Any) -> Any:
    return value


def attempts_of(job: Job) -> list[dict[str, Any]]:
    """The attempt records of *job*'s history (oldest first)."""
    return [dict(record) for record in job.history if isinstance(record, dict)]


def reason_of(job: Job) -> str | None:
    """Why the last attempt that says so ended as it did (``attempts_exhausted``...)."""
    for record in reversed(attempts_of(job)):
        if record.get("reason"):
            return str(record["reason"])
    return None


def job_view(job: Job, *, mask: Callable[[Any], Any] = _same) -> dict[str, Any]:
    """*job* as JSON: payload, result, errors and history with credentials redacted, and
    passed through *mask* (the admin API masks personal data with it)."""
    reason = reason_of(job)
    return {
        "id": job.id,
        "short_id": short_id(job.id),
        "name": job.name,
        "queue": job.queue,
        "state": job.state.value,
        "provider": job.provider,
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "idempotency_key": job.idempotency_key,
        "ordering_key": job.ordering_key,
        "request_id": job.context.get("request_id"),
        "payload_version": job.payload_version,
        "payload": mask(redact_payload(job.payload)),
        "result": mask(redact_payload(job.result)),
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "run_at": job.run_at,
        "first_failed_at": job.first_failed_at,
        "last_failed_at": job.last_failed_at,
        "last_error_code": job.last_error_code,
        "last_error": None if job.last_error is None else mask(redact(job.last_error)),
        "reason": None if reason is None else mask(redact(reason)),
        "resolution": None if job.resolution is None else mask(redact(job.resolution)),
        "history": [
            mask(redact_payload({**record, "message": redact(str(record.get("message") or ""))}))
            for record in attempts_of(job)
        ],
    }
