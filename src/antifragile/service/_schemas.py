"""The ``data`` of every JSON answer of the admin API, as pydantic models (for OpenAPI).

The routes build their answers as plain dictionaries (the views of :mod:`._admin`); these models
describe those dictionaries field by field, so that ``/openapi.json`` documents what each route
answers, and a test checks real answers against them. :func:`answers` is the ``responses=``
argument of a route: its success envelope, with the model in ``data``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from antifragile.errors import SuccessEnvelope


class _View(BaseModel):
    # a view may carry fields added later: they are documented here when they are added
    model_config = ConfigDict(extra="allow")


def answers(model: Any, description: str, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route answering ``{"success": true, "data": <model>}``."""
    return {status: {"model": SuccessEnvelope[model], "description": description}}


# -- jobs and dead letters ------------------------------------------------------------------------


class AttemptView(_View):
    """One attempt of a job (its history, oldest first), credentials redacted."""

    number: int | None = None
    started_at: float | None = None
    duration: float | None = Field(None, description="seconds the attempt ran")
    code: str | None = Field(None, description="the error code (none: it succeeded)")
    message: str = ""
    status: int | None = Field(None, description="the provider's HTTP status")
    retryable: bool | None = None
    delay: float | None = Field(None, description="seconds until the next attempt")
    reason: str | None = None


class JobRef(BaseModel):
    id: str
    state: str


class MessageView(_View):
    """A stored reply: number masked, job status flag, delivery status and times."""

    id: str
    tenant_id: str | None = None
    channel: str | None = None
    to: str | None = Field(None, description="the number, masked")
    text: str | None = Field(None, description="only when one reply is shown")
    status: str | None = Field(None, description="the send job's status flag")
    provider: str | None = None
    provider_message_id: str | None = None
    provider_status: str | None = None
    delivery_status: str | None = None
    delivery_times: dict[str, float] | None = None
    delivery_error_code: str | None = None
    error_code: str | None = None
    created_at: float | None = None
    sent_at: float | None = None
    sending_since: float | None = None
    awaiting_since: float | None = None
    correlation: str | None = None
    forced_by: str | None = None
    forced_at: float | None = None
    marked_sent_by: str | None = None
    marked_sent_at: float | None = None
    task_id: str | None = None
    unknown_outcome: bool = False
    job: JobRef | None = None


class JobView(_View):
    """A job: payload, result, errors and history redacted, personal data masked."""

    id: str
    name: str
    queue: str
    state: str = Field(description="queued, scheduled, running, retrying, dead, ...")
    provider: str | None = None
    priority: int = 0
    attempts: int
    max_attempts: int
    idempotency_key: str | None = None
    ordering_key: str | None = None
    request_id: str | None = None
    payload_version: int | None = None
    payload: Any = None
    result: Any = None
    created_at: float
    updated_at: float
    run_at: float | None = None
    first_failed_at: float | None = None
    last_failed_at: float | None = None
    last_error_code: str | None = None
    last_error: str | None = None
    reason: str | None = Field(None, description="why the last attempt ended as it did")
    resolution: str | None = None
    history: list[AttemptView] = []
    message: MessageView | None = Field(None, description="a replies.send job's reply")


class JobPage(BaseModel):
    items: list[JobView]
    limit: int
    offset: int


class MessagePage(BaseModel):
    items: list[MessageView]
    limit: int
    offset: int


class Retried(BaseModel):
    retried: int = Field(description="how many jobs went back to the queue")


class Resolved(BaseModel):
    resolved: int = Field(description="how many jobs were closed")


class Purged(BaseModel):
    purged: int = Field(description="how many jobs were deleted")


class RetriedOne(Retried):
    job: JobView | None


class ResolvedOne(Resolved):
    job: JobView | None


class MarkedSent(BaseModel):
    job: JobView | None
    message: MessageView


class QueueStats(BaseModel):
    queue: str
    counts: dict[str, int] = Field(description="jobs per state")
    oldest_ready_at: float | None
    lag: float | None = Field(description="seconds the oldest ready job has waited")


# -- breakers, sessions, tasks, flags, keys ------------------------------------------------------


class BreakerMetrics(_View):
    calls: float
    failures: float
    slow_calls: float
    failure_rate: float
    slow_call_rate: float


class BreakerView(BaseModel):
    provider: str
    state: str = Field(description="closed, open, half_open, forced_open or disabled")
    generation: int
    open_until: float | None
    consecutive_opens: int
    metrics: BreakerMetrics


class SessionView(_View):
    """A conversation session: phone and emails masked."""

    key: str
    tenant_id: str | None = None
    flow: str | None = None
    channel: str | None = None
    phone: str | None = None
    progress_status: str | None = None
    last_active: float | None = None


class SessionList(BaseModel):
    items: list[SessionView]


class SessionReset(BaseModel):
    key: str
    reset: bool


class TaskView(_View):
    """Work for a person (a support ticket, a message to review)."""

    id: str
    type: str
    title: str
    status: str = Field(description="open, done or cancelled")
    priority: str = Field(description="low, normal, high or urgent")
    assignee: str | None = None
    due: float | None = None
    source: str | None = None
    created_at: float
    updated_at: float


class TaskList(BaseModel):
    items: list[TaskView]


class FlagView(BaseModel):
    name: str
    enabled: bool
    default: bool | None


class ApiKeyView(BaseModel):
    id: str
    name: str
    created_at: float
    revoked_at: float | None
    active: bool
    scopes: list[str] = Field(description="read, operate and/or admin")
    expires_at: float | None = Field(description="when the key stops working (none: never)")
    last_used_at: float | None = Field(description="last accepted use (updated once a minute)")
    created_by: str | None = Field(description="the key that created this one, if any")


class RevokedApiKeyView(ApiKeyView):
    also_revoked: list[str] = Field(description="the keys it created, revoked with it")


class NewApiKeyView(ApiKeyView):
    key: str = Field(description="the plaintext key: shown in this answer only")


class ApiKeyList(BaseModel):
    items: list[ApiKeyView]


class Identity(BaseModel):
    kind: str = Field(description="api_key, bootstrap_key or jwt")
    subject: str
    name: str | None


# -- alerts, AI results, readiness ---------------------------------------------------------------


class AlertRecord(_View):
    key: str
    condition: str | None = None
    subject: str | None = None
    state: str | None = Field(None, description="firing or resolved")


class AlertsView(BaseModel):
    items: list[AlertRecord]
    channels: list[str]
    window: float
    dlq_threshold: int
    error_rate: float


class AIAccepted(BaseModel):
    inbox_id: str
    job_id: str | None
    duplicate: bool = Field(description="true when the message id was seen before")


class Readiness(BaseModel):
    ready: bool
