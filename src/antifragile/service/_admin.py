"""The admin API under ``/v1/admin``: dead letters, replies, jobs, breakers, sessions, tasks, ...

Every route needs an admin credential (:func:`~antifragile.service._auth.require_admin`) holding
the route's scope (:func:`~antifragile.service._keys.require_scope`: read for GET, operate for
actions, admin for ``/api-keys``), counts
against the client's IP limit (:func:`~antifragile.service._limits.limit_by_ip`, when the app has
``app.state.limits``) and answers the envelope. The router reads the running assistant from
``app.state.assistant`` (``jobs``, ``breakers()``, ``sessions``, ``tasks``, ``flags``).

* ``GET /dlq`` -- dead jobs (``queue``, ``name``, ``provider``, ``error_code``, ``limit``,
  ``offset``, ``include_resolved``); ``GET /dlq/{id}`` -- one, with every attempt;
* ``POST /dlq/{id}/retry`` (``{"delay": "5m"}`` optional) and ``POST /dlq/retry`` (``ids``, or
  filters, or ``"all": true``) -- redrive; ``POST /dlq/{id}/resolve`` and ``POST /dlq/resolve``
  -- close with a ``reason``; ``POST /dlq/purge`` -- delete old ones (``older_than``);
* a dead reply (``replies.send``) whose outcome is unknown: ``POST /dlq/{id}/retry`` waits for
  the provider's echo again, ``{"force": true}`` sends it anyway (its marks cleared);
  ``POST /dlq/{id}/mark-sent`` resolves it as sent by the operator;
* ``GET /messages`` (``status``, ``delivery_status``, ``tenant_id``, ``limit``, ``offset``),
  ``GET /messages/{id}`` -- outbound replies: number masked, text, job status flag, delivery
  status and times, provider message id;
* ``GET /jobs`` (``state`` repeatable, ``queue``, ``name``, ``provider``), ``GET /jobs/stats``,
  ``GET /jobs/{id}``;
* ``GET /breakers``; ``POST /breakers/{provider}/open`` (force open), ``/close`` (force closed:
  every call passes, nothing recorded), ``/reset`` (closed, working normally again);
* ``GET /sessions``, ``GET /sessions/{key}``, ``POST /sessions/{key}/reset``;
* ``GET /tasks?status=``, ``GET /tasks/{id}``, ``PATCH /tasks/{id}`` (status, assignee,
  priority, due);
* ``GET /flags``, ``GET /flags/{name}``, ``PUT /flags/{name}`` ``{"enabled": true}``;
* ``POST /api-keys`` (``scopes``, ``expires_in``; the plaintext key is in that response only),
  ``GET /api-keys``, ``DELETE /api-keys/{id}`` (revoke, with the keys it created unless
  ``cascade=false``); ``GET /whoami``.

Payloads, errors and histories are redacted (credentials) and personal data masked (phone
numbers, emails) before they are answered. A missing resource is ``404 NOT_FOUND``; a bad
body or query ``400 VALIDATION``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Mapping
from dataclasses import asdict, is_dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from antifragile.errors import ConfigurationError, ErrorCode, redact
from antifragile.inbound._flags import FeatureFlags, check_flag_name
from antifragile.inbound._replies import (
    SEND_JOB,
    Replies,
    mask_email,
    mask_phone,
)
from antifragile.jobs import (
    DeadLetterFilter,
    Job,
    JobFilter,
    JobNotFoundError,
    Jobs,
    JobState,
)
from antifragile.jobs._ids import find_job
from antifragile.jobs._view import job_view as _job_view
from antifragile.observability import mask_pii
from antifragile.policies import CircuitBreaker
from antifragile.service._auth import DEFAULT_SCOPES, Principal, admin_auth_for, require_admin
from antifragile.service._envelope import ApiError, error_responses, ok
from antifragile.service._keys import require_scope
from antifragile.service._limits import limit_by_ip
from antifragile.service._schemas import (
    ApiKeyList,
    BreakerView,
    FlagView,
    Identity,
    JobPage,
    JobView,
    MarkedSent,
    MessagePage,
    MessageView,
    NewApiKeyView,
    Purged,
    QueueStats,
    Resolved,
    ResolvedOne,
    Retried,
    RetriedOne,
    RevokedApiKeyView,
    SessionList,
    SessionReset,
    SessionView,
    TaskList,
    TaskView,
    answers,
)

# -- views ----------------------------------------------------------------------------------------

# a value that is a phone number: an optional scheme ("whatsapp:", "tel:"), a "+", then 7 to 15
# digits with separators between them -- masked wherever it appears
_PHONE = re.compile(r"^(?:[a-z]+:)?\s*\+\d[\d\s().-]*$", re.IGNORECASE)
# the same without the "+" (WhatsApp sends "447700900123"): a phone only under a personal key,
# as a bare run of digits is as likely to be an order number or a timestamp
_BARE_PHONE = re.compile(r"^(?:[a-z]+:)?\s*\(?\d[\d\s().-]*$", re.IGNORECASE)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# keys whose values are personal data when they look like it: words found anywhere in the key,
# and short words that must be a whole part of it ("to", not "total")
_PII_WORDS = ("phone", "email", "sender", "msisdn", "recipient", "mobile", "whatsapp")
_PII_PARTS = frozenset({"wa", "waid", "from", "to", "tel", "contact"})


def _digits(text: str) -> int:
    return sum(c.isdigit() for c in text)


def _personal_key(key: str | None) -> bool:
    lowered = (key or "").lower()
    if any(word in lowered for word in _PII_WORDS):
        return True
    return any(part in _PII_PARTS for part in re.split(r"[^a-z0-9]+", lowered))


def mask_personal(value: Any, key: str | None = None) -> Any:
    """A copy of *value* (JSON) with phone numbers and emails masked, and credentials redacted.

    A string is masked by its shape: an email address, or a phone number (``+4477...``,
    ``whatsapp:+4477...``) wherever it is; a bare run of 7 to 15 digits only under a personal
    key (``phone``, ``wa_id``, ``to``...). A value that does not look like personal data stays
    readable whatever its key (``jobs.email``, ``summary_email_id``: job ids, wamids, uuids);
    phone numbers and emails inside a free text (an error message) are masked in place.
    """
    if isinstance(value, Mapping):
        return {k: mask_personal(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_personal(item, key) for item in value]
    if isinstance(value, str):
        text = value.strip()
        if _EMAIL.match(text):
            return mask_email(text)
        phone_digits = 7 <= _digits(text) <= 15
        if phone_digits and _PHONE.match(text):
            return mask_phone(text)
        if phone_digits and _personal_key(key) and _BARE_PHONE.match(text):
            return mask_phone(text)
        if any(c.isspace() for c in text):  # a free text, never an id
            return mask_pii(redact(value))
        return redact(value)
    return value


def job_view(job: Job) -> dict[str, Any]:
    """A job as the API shows it: payload and history redacted, personal data masked."""
    return _job_view(job, mask=mask_personal)


async def fresh_breaker_views(breakers: Mapping[str, CircuitBreaker]) -> list[dict[str, Any]]:
    """The views of *breakers*, in name order, each as judged now: a breaker whose state lives
    in a store (``shares_state``) reads its record and window totals first, so that another
    process's transitions and calls show."""
    reads: list[Awaitable[Any]] = []
    for breaker in breakers.values():
        refresh = getattr(breaker, "refresh", None) if breaker.shares_state else None
        if refresh is not None:
            reads.append(refresh())
    if reads:
        await asyncio.gather(*reads)
    return [breaker_view(name, breakers[name]) for name in sorted(breakers)]


def breaker_view(name: str, breaker: CircuitBreaker) -> dict[str, Any]:
    snapshot = breaker.snapshot
    return {
        "provider": name,
        "state": breaker.state.value,
        "generation": snapshot.generation,
        "open_until": snapshot.open_until or None,
        "consecutive_opens": snapshot.consecutive_opens,
        "metrics": breaker.metrics(),
    }


# -- bodies ---------------------------------------------------------------------------------------

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)

DurationValue = Annotated[
    float | str,
    Field(description="seconds, or a duration such as 90s, 15m, 2h, 7d, 1w", examples=["7d"]),
]


#: the longest duration the admin API takes (ten years, in seconds)
MAX_DURATION = 10 * 365 * 86400.0
#: the largest ``offset`` a listing takes
MAX_OFFSET = 1_000_000


def _seconds(value: float | str | None, field: str) -> float | None:
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and len(value) <= 32:
        match = _DURATION.match(value)
        if match is not None:
            seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds is not None and 0 <= seconds <= MAX_DURATION:  # refuses nan and inf too
        return seconds
    raise ApiError(
        400,
        ErrorCode.VALIDATION,
        f"{field}: not a duration (seconds, or e.g. 90s, 15m, 2h, 7d; ten years at most)",
    )


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeadLetterSelection(_Body):
    """Which dead jobs: their ``ids``, or filters (every one set must match), or ``all``."""

    ids: list[str] = Field(default_factory=list, max_length=1000)
    queue: str | None = None
    name: str | None = None
    provider: str | None = None
    error_code: str | None = None
    older_than: DurationValue | None = None
    newer_than: DurationValue | None = None
    all: bool = Field(False, description="every dead job matching the filters (or every one)")

    def target(self) -> DeadLetterFilter:
        flt = DeadLetterFilter(
            queue=self.queue,
            name=self.name,
            provider=self.provider,
            error_code=self.error_code,
            older_than=_seconds(self.older_than, "older_than"),
            newer_than=_seconds(self.newer_than, "newer_than"),
        )
        has_filter = flt != DeadLetterFilter()
        if self.ids and (self.all or has_filter):
            raise ApiError(400, ErrorCode.VALIDATION, "give ids, or filters / all, not both")
        if not self.ids and not self.all and not has_filter:
            raise ApiError(
                400, ErrorCode.VALIDATION, "name the jobs: give ids, filters, or all: true"
            )
        return DeadLetterFilter(ids=tuple(self.ids)) if self.ids else flt


class RetryBody(DeadLetterSelection):
    delay: DurationValue = Field(0.0, description="run them after this long")


class ResolveBody(DeadLetterSelection):
    reason: str = Field(min_length=1, max_length=1000, description="why they are closed")


class RetryOne(_Body):
    delay: DurationValue = Field(0.0, description="run it after this long")


class RetryOneForce(_Body):
    delay: DurationValue = Field(0.0, description="run it after this long")
    force: bool = Field(
        False,
        description="send anyway: a reply whose earlier send may have happened is sent again "
        "(its sending/awaiting marks cleared); without it the retried job waits for the "
        "provider's status echo again",
    )


class MarkSentBody(_Body):
    note: str | None = Field(None, max_length=1000, description="how the operator knows")


class ResolveOne(_Body):
    reason: str = Field(min_length=1, max_length=1000, description="why it is closed")


class PurgeBody(_Body):
    """Delete dead and resolved jobs whose last change is older than ``older_than``."""

    older_than: DurationValue
    queue: str | None = None
    name: str | None = None
    provider: str | None = None
    error_code: str | None = None
    resolved_only: bool = False


class TaskChanges(_Body):
    status: str | None = Field(None, min_length=1, max_length=50)
    assignee: str | None = Field(None, max_length=200)
    priority: str | None = Field(None, min_length=1, max_length=50)
    due: float | None = Field(None, ge=0, le=1e11, description="epoch seconds", allow_inf_nan=False)


class FlagBody(_Body):
    enabled: bool = Field(strict=True)


class NewKeyBody(_Body):
    name: str = Field(min_length=1, max_length=100, description="who or what uses the key")
    scopes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SCOPES),
        max_length=3,
        description="read, operate and/or admin (each includes the ones before it)",
    )
    expires_in: DurationValue | None = Field(None, description="the key stops working after this")


# -- helpers --------------------------------------------------------------------------------------


def _assistant(request: Request) -> Any:
    assistant = getattr(request.app.state, "assistant", None)
    if assistant is None:
        raise ApiError(503, ErrorCode.STORE_UNAVAILABLE, "the service is starting; retry later")
    return assistant


def _jobs(request: Request) -> Jobs:
    jobs = getattr(_assistant(request), "jobs", None)
    if not isinstance(jobs, Jobs):
        raise ApiError(503, ErrorCode.STORE_UNAVAILABLE, "the job queue is not available")
    return jobs


def _part(request: Request, name: str) -> Any:
    part = getattr(_assistant(request), name, None)
    if part is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"this service has no {name}")
    return part


def _not_found(what: str) -> ApiError:
    return ApiError(404, ErrorCode.NOT_FOUND, what)


async def _dead(jobs: Jobs, job_id: str) -> Job:
    job = await jobs.get(job_id)
    if job is None or job.state is not JobState.DEAD:
        state = "" if job is None else f" (it is {job.state.value})"
        raise _not_found(f"no dead job with id {job_id!r}{state}")
    return job


def _bad(exc: ConfigurationError) -> ApiError:
    return ApiError(400, ErrorCode.VALIDATION, exc.message)


def _dump(value: Any) -> Any:
    """A record (dict, dataclass with ``to_json``/``to_dict``) as JSON."""
    for method in ("to_json", "to_dict"):
        fn = getattr(value, method, None)
        if callable(fn):
            return fn()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def _who(principal: Principal) -> str:
    return principal.name or principal.subject


def _creator(principal: Principal) -> str:
    """What a new key records as its maker: a key id, ``env:<n>``, or ``jwt:<sub>``."""
    return f"jwt:{principal.subject}" if principal.kind == "jwt" else principal.subject


def _replies(request: Request) -> Replies:
    replies = _part(request, "replies")
    if not isinstance(replies, Replies):
        raise _not_found("this service sends no replies")
    return replies


async def _reply_of(request: Request, job: Job) -> tuple[Replies, str, dict[str, Any] | None]:
    """The replies, message id and stored record a ``replies.send`` job sends (record
    ``None`` when the job is no such job or its record is gone)."""
    payload = job.payload if isinstance(job.payload, dict) else {}
    message_id = payload.get("message_id")
    if job.name != SEND_JOB or not isinstance(message_id, str):
        raise ApiError(409, "NOT_A_REPLY", f"job {job.id!r} is not a {SEND_JOB} job")
    replies = _replies(request)
    return replies, message_id, await replies.get(message_id)


_MESSAGE_FIELDS = (
    "id",
    "tenant_id",
    "channel",
    "status",
    "provider",
    "provider_message_id",
    "provider_status",
    "delivery_status",
    "delivery_times",
    "delivery_error_code",
    "error_code",
    "created_at",
    "sent_at",
    "sending_since",
    "awaiting_since",
    "correlation",
    "forced_by",
    "forced_at",
    "marked_sent_by",
    "marked_sent_at",
    "task_id",
)


def message_view(
    record: Mapping[str, Any], *, text: bool = True, job: Job | None = None
) -> dict[str, Any]:
    """A stored reply as admins see it: the number masked, the text (when *text*), the job's
    status flag and the delivery status and times."""
    view: dict[str, Any] = {name: record.get(name) for name in _MESSAGE_FIELDS}
    to = str(record.get("to") or "")
    view["to"] = mask_phone(to.removeprefix("whatsapp:")) if to else None
    view["unknown_outcome"] = Replies.unknown_outcome(record)
    if text:
        view["text"] = record.get("text")
    if job is not None:
        view["job"] = {"id": job.id, "state": job.state.value}
    return view


Limit = Annotated[int, Query(ge=1, le=500, description="items per page")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]


async def _job_named(
    request: Request,
    job_id: Annotated[
        str,
        Path(
            min_length=1,
            max_length=100,
            description="the job's id, its short id (last 10 characters) or at least 4 of its "
            "first or last hex digits",
        ),
    ],
) -> str:
    """The full id of the job *job_id* names (:func:`~antifragile.jobs._ids.find_job`): ``400
    BAD_REQUEST`` for text that cannot be an id, ``409 CONFLICT`` naming the candidates when
    it matches several jobs, ``404`` when none."""
    try:
        job = await find_job(_jobs(request).queue, job_id)
    except JobNotFoundError as exc:
        if exc.code == ErrorCode.BAD_REQUEST:
            raise ApiError(400, ErrorCode.BAD_REQUEST, exc.message) from None
        if exc.code == ErrorCode.CONFLICT:
            raise ApiError(409, ErrorCode.CONFLICT, exc.message) from None
        raise _not_found(exc.message) from None
    return job.id


#: a job named as an operator types it (full id, short id, prefix or ending), as its full id
JobId = Annotated[str, Depends(_job_named)]
#: a stored reply's id
MessageId = Annotated[str, Path(min_length=1, max_length=100)]

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    # the client's IP limit first: it also bounds guessing at credentials
    dependencies=[Depends(limit_by_ip), Depends(require_admin), Depends(require_scope)],
    responses=error_responses(400, 401, 403, 404, 429, 500, 503),
)

# -- the dead-letter queue ----------------------------------------------------------------------


@router.get(
    "/dlq", summary="List dead jobs", responses=answers(JobPage, "Dead jobs, most recent first")
)
async def list_dead(
    request: Request,
    queue: str | None = None,
    name: str | None = None,
    provider: str | None = None,
    error_code: str | None = None,
    include_resolved: bool = False,
    limit: Limit = 50,
    offset: Offset = 0,
) -> JSONResponse:
    """Dead jobs, the most recent first, with their last error (payloads redacted)."""
    jobs = _jobs(request)
    flt = DeadLetterFilter(queue=queue, name=name, provider=provider, error_code=error_code)
    found = await jobs.dlq.list(flt, limit=limit, offset=offset, include_resolved=include_resolved)
    return ok({"items": [job_view(job) for job in found], "limit": limit, "offset": offset})


@router.post(
    "/dlq/retry",
    summary="Redrive dead jobs by ids or filter",
    responses=answers(Retried, "How many jobs were redriven"),
)
async def retry_dead(request: Request, body: RetryBody) -> JSONResponse:
    """Send the dead jobs named back to the queue (attempts counted again, history kept)."""
    jobs = _jobs(request)
    target = body.target()
    delay = _seconds(body.delay, "delay") or 0.0
    if target.ids:
        named = [await _dead(jobs, job_id) for job_id in target.ids]
        await _wait_again(request, named)
        count = await jobs.dlq.retry(list(target.ids), delay=delay)
    else:
        if target.name in (None, SEND_JOB):
            await _wait_again(request, await jobs.dlq.list(target, limit=1000))
        count = await jobs.dlq.retry(target, delay=delay)
    return ok({"retried": count})


async def _wait_again(request: Request, dead: list[Job]) -> None:
    """Before a redrive: each reply among *dead* whose outcome is unknown waits for its echo
    afresh (rather than dying again at once)."""
    replies = getattr(_assistant(request), "replies", None)
    if not isinstance(replies, Replies):
        return
    for job in dead:
        if job.name != SEND_JOB:
            continue
        _, message_id, record = await _reply_of(request, job)
        if record is not None and Replies.unknown_outcome(record):
            await replies.wait_again(message_id)


@router.post(
    "/dlq/resolve",
    summary="Resolve dead jobs by ids or filter",
    responses=answers(Resolved, "How many jobs were resolved"),
)
async def resolve_dead(request: Request, body: ResolveBody) -> JSONResponse:
    """Close the dead jobs named, with a reason."""
    jobs = _jobs(request)
    target = body.target()
    if not body.reason.strip():
        raise ApiError(400, ErrorCode.VALIDATION, "reason: say why these jobs are closed")
    if target.ids:
        for job_id in target.ids:
            await _dead(jobs, job_id)
        count = await jobs.dlq.resolve(list(target.ids), reason=body.reason)
    else:
        count = await jobs.dlq.resolve(target, reason=body.reason)
    return ok({"resolved": count})


@router.post(
    "/dlq/purge",
    summary="Delete old dead and resolved jobs",
    responses=answers(Purged, "How many jobs were deleted"),
)
async def purge_dead(request: Request, body: PurgeBody) -> JSONResponse:
    """Delete dead (unless ``resolved_only``) and resolved jobs older than ``older_than``."""
    jobs = _jobs(request)
    age = _seconds(body.older_than, "older_than")
    assert age is not None
    flt = DeadLetterFilter(
        queue=body.queue, name=body.name, provider=body.provider, error_code=body.error_code
    )
    count = await jobs.dlq.purge(age, where=flt, include_dead=not body.resolved_only)
    return ok({"purged": count})


@router.get(
    "/dlq/{job_id}",
    summary="Show one dead job",
    responses=answers(JobView, "The dead job with every attempt"),
)
async def show_dead(request: Request, job_id: JobId) -> JSONResponse:
    """One dead (or resolved) job with its redacted payload and every attempt; a
    ``replies.send`` job also shows its ``message`` (number masked, text, delivery status)."""
    try:
        job = await _jobs(request).dlq.show(job_id)
    except JobNotFoundError as exc:
        raise _not_found(exc.message) from None
    return ok(await _with_message(request, job))


async def _with_message(request: Request, job: Job) -> dict[str, Any]:
    view = job_view(job)
    if job.name == SEND_JOB and getattr(_assistant(request), "replies", None) is not None:
        try:
            _, _, record = await _reply_of(request, job)
        except ApiError:
            record = None
        if record is not None:
            view["message"] = message_view(record)
    return view


@router.post(
    "/dlq/{job_id}/retry",
    summary="Redrive one dead job",
    responses=answers(RetriedOne, "The job, back in the queue"),
)
async def retry_one(
    request: Request,
    job_id: JobId,
    principal: Annotated[Principal, Depends(require_admin)],
    body: Annotated[RetryOneForce | None, Body()] = None,
) -> JSONResponse:
    """Send the dead job back to the queue. ``force`` ("send anyway") is for a reply whose
    outcome is unknown: its marks are cleared so the job really sends again; a job that is
    not such a reply answers ``409 NOT_UNKNOWN_OUTCOME``."""
    jobs = _jobs(request)
    job = await _dead(jobs, job_id)
    delay = _seconds(body.delay if body is not None else 0.0, "delay") or 0.0
    if body is not None and body.force:
        replies, message_id, record = await _reply_of(request, job)
        if record is None or not Replies.unknown_outcome(record):
            raise ApiError(
                409,
                "NOT_UNKNOWN_OUTCOME",
                f"job {job_id!r} is not a reply whose outcome is unknown; retry it without force",
            )
        await replies.force(message_id, by=_who(principal))
    else:
        # without force: a fresh wait for the echo (and the lookup), not a death at once
        await _wait_again(request, [job])
    count = await jobs.dlq.retry([job_id], delay=delay)
    after = await jobs.get(job_id)
    return ok({"retried": count, "job": None if after is None else job_view(after)})


@router.post(
    "/dlq/{job_id}/resolve",
    summary="Resolve one dead job",
    responses=answers(ResolvedOne, "The job, resolved"),
)
async def resolve_one(request: Request, job_id: JobId, body: ResolveOne) -> JSONResponse:
    """Close the dead job with a ``reason`` (it stays listed with ``include_resolved``)."""
    jobs = _jobs(request)
    await _dead(jobs, job_id)
    if not body.reason.strip():
        raise ApiError(400, ErrorCode.VALIDATION, "reason: say why this job is closed")
    count = await jobs.dlq.resolve([job_id], reason=body.reason)
    job = await jobs.get(job_id)
    return ok({"resolved": count, "job": None if job is None else job_view(job)})


@router.post(
    "/dlq/{job_id}/mark-sent",
    summary="Close a dead reply as sent by the operator",
    responses=answers(MarkedSent, "The job resolved and its reply marked sent"),
)
async def mark_sent(
    request: Request,
    job_id: JobId,
    principal: Annotated[Principal, Depends(require_admin)],
    body: Annotated[MarkSentBody | None, Body()] = None,
) -> JSONResponse:
    """The operator knows the reply reached the customer: the job is resolved ("sent, marked
    by ..."), the reply's status flag becomes ``sent`` with who and when noted. A dead job
    that is not a reply answers ``409 NOT_A_REPLY``."""
    jobs = _jobs(request)
    job = await _dead(jobs, job_id)
    replies, message_id, record = await _reply_of(request, job)
    if record is None:
        raise ApiError(409, "NOT_A_REPLY", f"job {job_id!r} sends no stored reply")
    who = _who(principal)
    note = (body.note or "").strip() if body is not None else ""
    reason = f"sent (marked by {who})" + (f": {note}" if note else "")
    await jobs.dlq.resolve([job_id], reason=reason)
    message = await replies.mark_sent(message_id, by=who)
    found = await jobs.get(job_id)
    return ok(
        {
            "job": None if found is None else job_view(found),
            "message": message_view(message, job=found),
        }
    )


# -- outbound messages ----------------------------------------------------------------------------


@router.get(
    "/messages",
    summary="List outbound replies with their delivery status",
    responses=answers(MessagePage, "Replies, most recent first"),
)
async def list_messages(
    request: Request,
    status: str | None = None,
    delivery_status: str | None = None,
    tenant_id: str | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> JSONResponse:
    """Replies, the most recent first: number masked, job status flag, delivery status and
    times, provider message id (the text only in ``GET /messages/{id}``)."""
    replies = _replies(request)
    found = await replies.recent(
        tenant_id=tenant_id,
        status=status,
        delivery_status=delivery_status,
        limit=limit,
        offset=offset,
    )
    items = [message_view(record, text=False) for record in found]
    return ok({"items": items, "limit": limit, "offset": offset})


@router.get(
    "/messages/{message_id}",
    summary="Show one outbound reply",
    responses=answers(MessageView, "The reply"),
)
async def show_message(request: Request, message_id: MessageId) -> JSONResponse:
    """One reply: number masked, its text, job status flag, delivery status and times,
    provider message id, and any operator action on it."""
    record = await _replies(request).get(message_id)
    if record is None:
        raise _not_found(f"no message with id {message_id!r}")
    return ok(message_view(record))


# -- jobs -----------------------------------------------------------------------------------------


@router.get(
    "/jobs", summary="List jobs", responses=answers(JobPage, "Jobs, most recently changed first")
)
async def list_jobs(
    request: Request,
    state: Annotated[list[JobState] | None, Query()] = None,
    queue: str | None = None,
    name: str | None = None,
    provider: str | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> JSONResponse:
    """Jobs, the most recently changed first; ``state`` may be repeated."""
    where = JobFilter(states=tuple(state or ()), queue=queue, name=name, provider=provider)
    found = await _jobs(request).find(where, limit=limit, offset=offset)
    return ok({"items": [job_view(job) for job in found], "limit": limit, "offset": offset})


@router.get(
    "/jobs/stats",
    summary="Queue depth and lag",
    responses=answers(list[QueueStats], "One entry per queue"),
)
async def job_stats(request: Request) -> JSONResponse:
    """Jobs per state and the age of the oldest ready job, per queue."""
    jobs = _jobs(request)
    stats = await jobs.stats()
    now = jobs.clock.time()
    return ok(
        [
            {
                "queue": entry.queue,
                "counts": entry.counts,
                "oldest_ready_at": entry.oldest_ready_at,
                "lag": None
                if entry.oldest_ready_at is None
                else max(0.0, now - entry.oldest_ready_at),
            }
            for entry in stats
        ]
    )


@router.get(
    "/jobs/{job_id}",
    summary="Show one job",
    responses=answers(JobView, "The job with every attempt"),
)
async def show_job(request: Request, job_id: JobId) -> JSONResponse:
    """One job in any state, with its redacted payload and every attempt; a ``replies.send``
    job also shows its ``message``."""
    job = await _jobs(request).get(job_id)
    if job is None:
        raise _not_found(f"no job with id {job_id!r}")
    return ok(await _with_message(request, job))


# -- breakers -------------------------------------------------------------------------------------

BreakerAction = Literal["open", "close", "reset"]


def _breakers(request: Request) -> dict[str, CircuitBreaker]:
    assistant = _assistant(request)
    source = getattr(assistant, "breakers", None)
    found = source() if callable(source) else source
    return dict(found or {})


@router.get(
    "/breakers",
    summary="Circuit breaker state per provider",
    responses=answers(dict[str, BreakerView], "Breakers by provider"),
)
async def list_breakers(request: Request) -> JSONResponse:
    """Each provider's breaker as judged now: state, window counts and failure rate."""
    views = await fresh_breaker_views(_breakers(request))
    return ok({view["provider"]: view for view in views})


async def _force(breaker: CircuitBreaker, action: BreakerAction) -> None:
    shared = getattr(breaker, "aforce", None)
    target = {"open": "forced_open", "close": "disabled", "reset": "closed"}[action]
    if shared is not None and getattr(breaker, "shares_state", False):
        await shared(target)
    elif action == "open":
        breaker.force_open()
    elif action == "close":
        breaker.disable()
    else:
        breaker.reset()


@router.post(
    "/breakers/{provider}/{action}",
    summary="Force a breaker open, closed, or reset it",
    responses=answers(BreakerView, "The breaker after the change"),
)
async def force_breaker(request: Request, provider: str, action: BreakerAction) -> JSONResponse:
    """``open``: reject every call to the provider until reset; ``close``: let every call
    through and record nothing (forced closed) until reset; ``reset``: closed, window
    forgotten -- the breaker works normally again."""
    breakers = _breakers(request)
    breaker = breakers.get(provider)
    if breaker is None:
        raise _not_found(f"no circuit breaker for provider {provider!r}")
    await _force(breaker, action)
    return ok(breaker_view(provider, breaker))


# -- sessions -------------------------------------------------------------------------------------


@router.get(
    "/sessions",
    summary="List conversation sessions",
    responses=answers(SessionList, "Sessions, phones masked"),
)
async def list_sessions(
    request: Request,
    tenant_id: str | None = None,
    status: str | None = None,
    limit: Limit = 100,
) -> JSONResponse:
    """Sessions (of a tenant, with a progress status), phones masked, answers left out."""
    sessions = _part(request, "sessions")
    options: dict[str, Any] = {"tenant_id": tenant_id, "limit": limit}
    if status is not None:
        options["status"] = status
    found = await sessions.list(**options)
    return ok({"items": [mask_personal(_dump(item)) for item in found]})


@router.get(
    "/sessions/{key}",
    summary="Show one session",
    responses=answers(SessionView, "The session, personal data masked"),
)
async def show_session(request: Request, key: str) -> JSONResponse:
    """One session: its answers with phones and emails masked; the recent messages left out."""
    session = await _part(request, "sessions").get(key)
    if session is None:
        raise _not_found(f"no session {key!r}")
    record = _dump(session)
    if isinstance(record, Mapping):
        record = {k: v for k, v in record.items() if k != "recent"}
    return ok(mask_personal(record))


@router.post(
    "/sessions/{key}/reset",
    summary="Forget a session",
    responses=answers(SessionReset, "The session is forgotten"),
)
async def reset_session(request: Request, key: str) -> JSONResponse:
    """Forget the session: the contact's next message starts the flow afresh."""
    sessions = _part(request, "sessions")
    if await sessions.get(key) is None:
        raise _not_found(f"no session {key!r}")
    await sessions.reset(key)
    return ok({"key": key, "reset": True})


# -- tasks ----------------------------------------------------------------------------------------


@router.get("/tasks", summary="List tasks", responses=answers(TaskList, "Tasks, newest first"))
async def list_tasks(
    request: Request, status: str | None = None, limit: Limit = 100
) -> JSONResponse:
    """Tasks for a person (``status``: open, done or cancelled), newest first."""
    found = await _part(request, "tasks").list(status=status, limit=limit)
    return ok({"items": [mask_personal(_dump(item)) for item in found]})


@router.get("/tasks/{task_id}", summary="Show one task", responses=answers(TaskView, "The task"))
async def show_task(request: Request, task_id: str) -> JSONResponse:
    """One task, personal data masked."""
    task = await _part(request, "tasks").get(task_id)
    if task is None:
        raise _not_found(f"no task {task_id!r}")
    return ok(mask_personal(_dump(task)))


@router.patch(
    "/tasks/{task_id}",
    summary="Change a task's status, assignee, priority or due date",
    responses=answers(TaskView, "The task after the change"),
)
async def update_task(request: Request, task_id: str, body: TaskChanges) -> JSONResponse:
    """Change the fields given (status, assignee, priority, due); the others stay."""
    tasks = _part(request, "tasks")
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise ApiError(
            400, ErrorCode.VALIDATION, "nothing to change: give status, assignee, priority or due"
        )
    if await tasks.get(task_id) is None:
        raise _not_found(f"no task {task_id!r}")
    try:
        task = await tasks.update(task_id, **changes)
    except ConfigurationError as exc:
        raise _bad(exc) from None
    except LookupError:
        raise _not_found(f"no task {task_id!r}") from None
    return ok(mask_personal(_dump(task)))


# -- feature flags --------------------------------------------------------------------------------


def _flags(request: Request) -> FeatureFlags:
    flags = _part(request, "flags")
    if not isinstance(flags, FeatureFlags):
        raise _not_found("this service has no feature flags")
    return flags


def _flag_name(name: str) -> str:
    try:
        return check_flag_name(name)
    except ConfigurationError as exc:
        raise _bad(exc) from None


@router.get(
    "/flags",
    summary="Feature flags",
    responses=answers(dict[str, bool], "Every known flag with its value"),
)
async def list_flags(request: Request) -> JSONResponse:
    """Every known feature flag (defaults and stored values) with its value."""
    return ok(await _flags(request).all())


@router.get("/flags/{name}", summary="One feature flag", responses=answers(FlagView, "The flag"))
async def show_flag(request: Request, name: str) -> JSONResponse:
    """One flag: its value now and its default."""
    flags = _flags(request)
    _flag_name(name)
    return ok(
        {"name": name, "enabled": await flags.is_enabled(name), "default": flags.default(name)}
    )


@router.put(
    "/flags/{name}",
    summary="Turn a feature flag on or off",
    responses=answers(FlagView, "The flag after the change"),
)
async def set_flag(request: Request, name: str, body: FlagBody) -> JSONResponse:
    """Store the flag's value; every process sees it within its cache time."""
    flags = _flags(request)
    _flag_name(name)
    await flags.set(name, body.enabled)
    return ok({"name": name, "enabled": body.enabled, "default": flags.default(name)})


# -- API keys -------------------------------------------------------------------------------------


@router.post(
    "/api-keys",
    summary="Create an admin API key",
    status_code=201,
    responses=answers(NewApiKeyView, "The new key, with its plaintext (shown once)", status=201),
)
async def create_key(
    request: Request,
    body: NewKeyBody,
    principal: Annotated[Principal, Depends(require_admin)],
) -> JSONResponse:
    """The key's plaintext is in this response only: store it now. Needs the ``admin`` scope;
    the new key records who made it, and revoking that one revokes it too."""
    expires_in = _seconds(body.expires_in, "expires_in")
    try:
        created = await admin_auth_for(request).keys.create(
            body.name, scopes=body.scopes, expires_in=expires_in, created_by=_creator(principal)
        )
    except ConfigurationError as exc:
        raise _bad(exc) from None
    return ok({**created.info.to_json(), "key": created.key}, status=201)


@router.get(
    "/api-keys",
    summary="List admin API keys (no secrets)",
    responses=answers(ApiKeyList, "The keys, without secrets"),
)
async def list_keys(request: Request, include_revoked: bool = True) -> JSONResponse:
    """Stored admin API keys: id, name, when created and revoked; never a secret."""
    keys = await admin_auth_for(request).keys.list(include_revoked=include_revoked)
    return ok({"items": [info.to_json() for info in keys]})


@router.delete(
    "/api-keys/{key_id}",
    summary="Revoke an admin API key",
    responses=answers(RevokedApiKeyView, "The key, revoked, and the keys revoked with it"),
)
async def revoke_key(
    request: Request,
    key_id: Annotated[str, Path(min_length=1, max_length=64)],
    cascade: Annotated[
        bool, Query(description="revoke the keys this one created too (to any depth)")
    ] = True,
) -> JSONResponse:
    """Revoke the key: it and the dashboard sessions it opened stop working at once (and,
    with ``cascade``, every key it created)."""
    revoked, also = await admin_auth_for(request).keys.revoke_all(key_id, cascade=cascade)
    if revoked is None:
        raise _not_found(f"no API key {key_id!r}")
    return ok({**revoked.to_json(), "also_revoked": also})


@router.get(
    "/whoami",
    summary="The caller's identity",
    responses=answers(Identity, "Who the credential belongs to"),
)
async def whoami(principal: Annotated[Principal, Depends(require_admin)]) -> JSONResponse:
    """The kind, subject and name of the credential that made this request."""
    return ok({"kind": principal.kind, "subject": principal.subject, "name": principal.name})


#: the admin router (``app.include_router(admin_router)``)
admin_router = router
