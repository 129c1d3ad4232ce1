"""The operator's dashboard at ``/dashboard``: one server-rendered page that refreshes itself.

It shows the last hour's graphs, the circuit breaker of each provider, the depth and lag of
each queue, the workers, the dead-letter queue (filtered by queue, provider and error code,
with a *Retry* and a *Resolve* button per job and bulk actions), the operator tasks, the
replies, the recent failures and the conversation sessions with their status flags. Every value
comes from the same views as the admin API (:func:`~antifragile.service._admin.job_view`,
:func:`~antifragile.service._admin.breaker_view`, masked session records): phone numbers and
emails are masked, credentials redacted. The buttons call the admin API's own route functions,
so a redrive from the page is exactly ``POST /v1/admin/dlq/{id}/retry``.

Routes (none of them in the OpenAPI document):

* ``GET /dashboard`` -- the page; ``GET /dashboard/panels`` -- its data as an HTML fragment
  (``queue``, ``provider``, ``error_code`` filter the dead letters), fetched again every
  :data:`REFRESH_SECONDS` by the page's script; ``GET /dashboard/assets/{name}`` -- that script
  and the style sheet (nothing is loaded from anywhere else);
* ``GET /dashboard/login``, ``POST /dashboard/login`` (form field ``api_key``: an admin API key
  or JWT), ``POST /dashboard/logout``;
* ``GET /dashboard/jobs/{id}`` -- one job's page (attempts, masked payload, actions);
  ``GET /dashboard/sessions/{key}`` -- one customer's conversation (see
  :mod:`._dashboard_views`, which also draws the graphs and lists workers and tasks);
* ``POST /dashboard/dlq/{id}/retry`` (form field ``force``: send a reply whose outcome is
  unknown anyway), ``POST /dashboard/dlq/{id}/mark-sent`` (form field ``note``) and
  ``POST /dashboard/dlq/{id}/resolve`` (form field ``reason``): JSON envelopes for the page's
  script (``Accept: application/json``), else a redirect back to the page (to the job's page
  with form field ``back=job``);
* ``POST /dashboard/dlq/bulk`` (``action`` retry or resolve, ``id`` repeated, ``reason``):
  a confirmation page listing the jobs; its own post (``confirm=1``) acts.

**Authentication.** The login form checks the credential with the admin API's
:class:`~antifragile.service._auth.AdminAuth` and opens a dashboard session: a random token in
an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` over HTTPS) scoped to ``/dashboard``;
the store's key-value part keeps only the token's SHA-256 (``dashboard:session:<hash>``) with
the principal and the session's CSRF token, expiring after :data:`SESSION_TTL` (or with the
JWT). A session of a stored API key ends as soon as that key is revoked. Every ``POST`` must
carry the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``) and, when the
browser sends an ``Origin``, come from the dashboard's own origin. An admin credential in the
``Authorization`` or ``X-API-Key`` header works too (no cookie, no CSRF token needed). Without
a credential the page redirects to the login form; the fragment and the buttons answer ``401``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from antifragile.errors import ErrorCode
from antifragile.inbound._replies import SEND_JOB, Replies
from antifragile.jobs import DeadLetterFilter, JobFilter, Jobs, JobState
from antifragile.jobs._ids import short_id
from antifragile.jobs._liveness import DEAD_AFTER
from antifragile.service._admin import (
    MarkSentBody,
    ResolveBody,
    ResolveOne,
    RetryBody,
    RetryOneForce,
    fresh_breaker_views,
    job_view,
    mask_personal,
    message_view,
    resolve_dead,
    resolve_one,
    retry_dead,
    retry_one,
)
from antifragile.service._admin import (
    mark_sent as mark_sent_one,
)
from antifragile.service._auth import (
    ALL_SCOPES,
    AdminAuth,
    Principal,
    admin_auth_for,
    credential_of,
    hash_key,
    session_binding,
)
from antifragile.service._dashboard_views import (
    conversation,
    graphs,
    job_page,
    mask_text,
    recent_activity,
    task_rows,
    worker_rows,
)
from antifragile.service._envelope import ApiError
from antifragile.service._limits import client_ip, limit_by_ip
from antifragile.service._login import LoginThrottle, account_of
from antifragile.service._pages import page_asset, page_templates
from antifragile.stores import KeyValueStore

#: the cookie that carries a dashboard session's token
COOKIE = "af_dashboard"
#: the key-value prefix of dashboard sessions (followed by the SHA-256 of the token)
SESSION_PREFIX = "dashboard:session:"
#: how long a dashboard session lasts (seconds)
SESSION_TTL = 8 * 3600.0
#: how often the page fetches its data again (seconds)
REFRESH_SECONDS = 3
#: the largest form body accepted (bytes)
MAX_FORM_BYTES = 16 * 1024

#: rows per table
DLQ_ROWS = 100
FAILURE_ROWS = 20
SESSION_ROWS = 50
#: how many recent replies the messages panel shows
MESSAGE_ROWS = 50

_ASSETS = {"dashboard.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_NOTICES = {
    "retried": "The job is back in the queue.",
    "resolved": "The job is resolved.",
    "marked": "The reply is marked as sent.",
    "refused": "That action does not apply to this job.",
    "gone": "That job is no longer in the dead-letter queue.",
    "stale": "The form was stale; try again.",
    "invalid": "Give a reason to resolve a job.",
    "none": "Tick at least one job first.",
    "bulk_retried": "The selected jobs are back in the queue.",
    "bulk_resolved": "The selected jobs are resolved.",
}
_FILTERS = ("queue", "provider", "error_code")
_INTEGRATIONS = ("email", "shopify", "hubspot", "slack")
_STATES = ("queued", "scheduled", "running", "retrying", "dead", "succeeded", "resolved")
_LOGIN_FAILED = "Those credentials were not accepted."


# -- rendering ------------------------------------------------------------------------------------


def _when(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        return "—"
    return datetime.fromtimestamp(float(value), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@cache
def _templates() -> Environment:
    return page_templates({"when": _when, "age": _age, "short_id": short_id})


def _html(template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    text = _templates().get_template(template).render(**context)
    return HTMLResponse(text, status_code=status, headers=_SECURITY_HEADERS)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_SECURITY_HEADERS)


def _compact(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- sessions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DashboardSession:
    """Who is looking at the dashboard. ``csrf`` is ``None`` for a request authenticated by a
    header credential (which a browser never sends by itself, so it needs no CSRF token)."""

    principal: Principal
    csrf: str | None = None
    key: str | None = None  # the session's key-value key (cookie sessions only)


def _token_key(token: str) -> str:
    return SESSION_PREFIX + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _assistant(request: Request) -> Any:
    assistant = getattr(request.app.state, "assistant", None)
    if assistant is None:
        raise ApiError(
            503,
            ErrorCode.STORE_UNAVAILABLE,
            "the service is starting or stopping; try again shortly",
            retryable=True,
            headers={"Retry-After": "1"},
        )
    return assistant


def _jobs(request: Request) -> Jobs:
    jobs = getattr(_assistant(request), "jobs", None)
    if not isinstance(jobs, Jobs):
        raise ApiError(503, ErrorCode.STORE_UNAVAILABLE, "the job queue is not available")
    return jobs


def _kv(request: Request) -> KeyValueStore:
    kv = getattr(getattr(_jobs(request).queue, "store", None), "kv", None)
    if kv is None:
        raise ApiError(
            503, ErrorCode.STORE_UNAVAILABLE, "dashboard sessions need a key-value store"
        )
    return kv  # type: ignore[no-any-return]


def _now(request: Request) -> float:
    return _jobs(request).clock.time()


async def _still_allowed(
    auth: AdminAuth, record: Mapping[str, Any], token: str
) -> frozenset[str] | None:
    """The scopes the session's credential still holds, or ``None`` when it no longer works:
    a stored key revoked or expired, the bootstrap key it was opened with removed (the
    session holds a keyed hash of it: :func:`session_binding`), JWTs no longer configured."""
    kind = record.get("kind")
    if kind == "api_key":
        info = await auth.keys.get(str(record.get("subject") or ""))
        if info is None or not info.active or info.expired(auth.keys.clock.time()):
            return None
        return frozenset(info.scopes)
    if kind == "bootstrap_key":
        bound = record.get("binding")
        if isinstance(bound, str) and auth.keys.bootstrap_bound(token, bound):
            return ALL_SCOPES
        return None
    return ALL_SCOPES if kind == "jwt" and auth.jwt is not None else None


async def _from_cookie(request: Request) -> DashboardSession | None:
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 200:
        return None
    kv = _kv(request)
    key = _token_key(token)
    now = _now(request)
    found = await kv.get(key, now=now)
    record = found.value if found is not None else None
    if not isinstance(record, Mapping) or not isinstance(record.get("csrf"), str):
        return None
    expires = record.get("expires_at")
    if not isinstance(expires, int | float) or expires <= now:
        await kv.delete(key, now=now)
        return None
    scopes = await _still_allowed(admin_auth_for(request), record, token)
    if scopes is None:
        await kv.delete(key, now=now)
        return None
    principal = Principal(
        record["kind"],
        str(record.get("subject") or ""),
        name=record.get("name") or None,
        scopes=scopes,
    )
    return DashboardSession(principal, csrf=record["csrf"], key=key)


async def current_session(request: Request) -> DashboardSession | None:
    """The dashboard session of *request* (cookie, else header credential), or ``None``.
    A header credential that does not authenticate is a 401."""
    session = await _from_cookie(request)
    if session is not None:
        return session
    credential = credential_of(request)
    if credential is None:
        return None
    principal = await admin_auth_for(request).authenticate(credential)
    return DashboardSession(principal)


async def require_session(request: Request) -> DashboardSession:
    """FastAPI dependency of the data routes: the session, or a 401 envelope."""
    session = await current_session(request)
    if session is None:
        raise ApiError(
            401,
            ErrorCode.AUTH,
            "sign in at /dashboard/login, or send an admin credential",
            headers={"WWW-Authenticate": 'Bearer realm="antifragile-admin"'},
        )
    request.state.principal = session.principal
    return session


async def _open_session(
    request: Request, principal: Principal, credential: str
) -> tuple[str, float]:
    now = _now(request)
    ttl = SESSION_TTL
    exp = principal.claims.get("exp") if principal.kind == "jwt" else None
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        ttl = max(1.0, min(ttl, float(exp) - now))
    token = secrets.token_urlsafe(32)
    record = {
        "kind": principal.kind,
        "subject": principal.subject,
        "name": principal.name,
        "csrf": secrets.token_urlsafe(32),
        "created_at": now,
        "expires_at": now + ttl,
    }
    if principal.kind == "bootstrap_key":  # bound to that key: removing it ends the session
        record["binding"] = session_binding(token, hash_key(credential))
    await _kv(request).set(_token_key(token), record, now=now, ttl=ttl)
    return token, ttl


# -- forms and CSRF -------------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, str]:
    """The request's URL-encoded form (bounded; the last value of a repeated field wins)."""
    return dict(await _form_pairs(request))


async def _form_pairs(request: Request, fields: int = 20) -> list[tuple[str, str]]:
    """The request's URL-encoded form as (name, value) pairs, at most *fields* of them."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type not in ("", "application/x-www-form-urlencoded"):
        raise ApiError(
            415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "send an application/x-www-form-urlencoded form"
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, ErrorCode.PAYLOAD_TOO_LARGE, "the form is too large")
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=fields)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, ErrorCode.BAD_REQUEST, "the form could not be read") from None


def _check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        raise ApiError(403, ErrorCode.FORBIDDEN, "cross-origin form posts are refused")


def _check_csrf(request: Request, session: DashboardSession, form: Mapping[str, str]) -> None:
    _check_origin(request)
    if session.csrf is None:
        return
    presented = request.headers.get("x-csrf-token") or form.get("csrf") or ""
    if not hmac.compare_digest(presented.encode(), session.csrf.encode()):
        raise ApiError(
            403, ErrorCode.FORBIDDEN, "missing or stale CSRF token: reload the dashboard"
        )


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _back(form: Mapping[str, str], notice: str, job_id: str | None = None) -> RedirectResponse:
    """Back to the page the form was on: the job's page (form field ``back=job``), else the
    dashboard with its filters."""
    if job_id is not None and form.get("back") == "job":
        return _redirect(f"/dashboard/jobs/{quote(job_id, safe='')}?notice={notice}")
    query = {name: form[name] for name in _FILTERS if form.get(name)}
    query["notice"] = notice
    return _redirect("/dashboard?" + urlencode(query))


# -- the data -------------------------------------------------------------------------------------


def _filters(queue: str | None, provider: str | None, error_code: str | None) -> dict[str, str]:
    given = {"queue": queue, "provider": provider, "error_code": error_code}
    return {k: v.strip()[:100] for k, v in given.items() if v and v.strip()}


def _dead_row(view: Mapping[str, Any], message: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {
        "message": None if message is None else dict(message),
        "id": view["id"],
        "name": view["name"],
        "queue": view["queue"],
        "provider": view["provider"] or "",
        "attempts": view["attempts"],
        "error_code": view["last_error_code"] or "",
        "error": mask_text(view["last_error"] or view["reason"]),
        "died_at": view["updated_at"],
        "payload": _compact(view["payload"]),
    }


def _session_row(record: Mapping[str, Any]) -> dict[str, Any]:
    safe = mask_personal(dict(record))
    return {
        "key": str(safe.get("key") or "")[-12:],
        "full_key": str(record.get("key") or ""),
        "tenant": safe.get("tenant_id") or "",
        "flow": safe.get("flow") or "",
        "channel": safe.get("channel") or "",
        "phone": safe.get("phone") or "",
        "progress": safe.get("progress_status") or "",
        "flags": {name: safe.get(f"{name}_status") or "none" for name in _INTEGRATIONS},
        "fields": len(safe.get("fields") or ()),
        "last_active": safe.get("last_active"),
    }


async def _panels(request: Request, filters: Mapping[str, str]) -> dict[str, Any]:
    assistant = _assistant(request)
    jobs = _jobs(request)
    now = jobs.clock.time()
    source = getattr(assistant, "breakers", None)
    found = source() if callable(source) else source
    breakers = dict(found or {})
    stats = await jobs.stats()
    queues = [
        {
            "queue": entry.queue,
            "counts": {state: entry.counts.get(state, 0) for state in _STATES},
            "depth": sum(entry.counts.get(s, 0) for s in ("queued", "scheduled", "retrying")),
            "lag": None if entry.oldest_ready_at is None else max(0.0, now - entry.oldest_ready_at),
        }
        for entry in stats
    ]
    flt = DeadLetterFilter(
        queue=filters.get("queue"),
        provider=filters.get("provider"),
        error_code=filters.get("error_code"),
    )
    replies = getattr(assistant, "replies", None)
    replies = replies if isinstance(replies, Replies) else None
    dead = []
    for job in await jobs.dlq.list(flt, limit=DLQ_ROWS):
        message = None
        payload = job.payload if isinstance(job.payload, dict) else {}
        message_id = payload.get("message_id")
        if replies is not None and job.name == SEND_JOB and isinstance(message_id, str):
            record = await replies.get(message_id)
            message = None if record is None else message_view(record)
        dead.append(_dead_row(job_view(job), message))
    messages = []
    if replies is not None:
        messages = [message_view(r) for r in await replies.recent(limit=MESSAGE_ROWS)]
    recent = await jobs.find(JobFilter(newer_than=now - 86400.0), limit=500)
    failures = sorted(
        (job for job in recent if job.last_failed_at is not None),
        key=lambda job: job.last_failed_at or 0.0,
        reverse=True,
    )[:FAILURE_ROWS]
    sessions_part = getattr(assistant, "sessions", None)
    sessions: Sequence[Mapping[str, Any]] = []
    if sessions_part is not None:
        sessions = await sessions_part.list(limit=SESSION_ROWS)
    ready = [entry.oldest_ready_at for entry in stats if entry.oldest_ready_at is not None]
    found = await recent_activity(jobs, now=now, oldest_ready_at=min(ready, default=None))
    return {
        "now": now,
        "graphs": graphs(found),
        "workers": await worker_rows(
            jobs,
            now=now,
            dead_after=getattr(
                getattr(request.app.state, "settings", None), "worker_dead_after", DEAD_AFTER
            ),
        ),
        "tasks": await task_rows(getattr(assistant, "tasks", None)),
        "filters": filters,
        "breakers": await fresh_breaker_views(breakers),
        "queues": queues,
        "dead": dead,
        "failures": [
            {
                "id": job.id,
                "name": job.name,
                "queue": job.queue,
                "provider": job.provider or "",
                "state": job.state.value,
                "attempts": job.attempts,
                "error_code": job.last_error_code or "",
                "error": mask_text(job_view(job)["last_error"]),
                "failed_at": job.last_failed_at,
            }
            for job in failures
        ],
        "sessions": [_session_row(record) for record in sessions],
        "messages": messages,
    }


# -- routes ---------------------------------------------------------------------------------------

router = APIRouter(
    prefix="/dashboard", include_in_schema=False, dependencies=[Depends(limit_by_ip)]
)
Session = Annotated[DashboardSession, Depends(require_session)]


async def require_operator(session: Session) -> DashboardSession:
    """The session of an action (retry, resolve, mark sent): its key needs ``operate``."""
    if not session.principal.can("operate"):
        raise ApiError(
            403, ErrorCode.FORBIDDEN, "this credential does not hold the 'operate' scope"
        )
    return session


Operator = Annotated[DashboardSession, Depends(require_operator)]
Filter = Annotated[str | None, Query(max_length=200)]
JobId = Annotated[str, Path(min_length=1, max_length=100)]


@router.get("")
async def page(
    request: Request,
    queue: Filter = None,
    provider: Filter = None,
    error_code: Filter = None,
    notice: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """The dashboard, or a redirect to the login form."""
    session = await current_session(request)
    if session is None:
        response = _redirect("/dashboard/login")
        if COOKIE in request.cookies:
            response.delete_cookie(COOKIE, path="/dashboard")
        return response
    filters = _filters(queue, provider, error_code)
    data = await _panels(request, filters)
    return _html(
        "dashboard.html",
        session=session,
        refresh=REFRESH_SECONDS,
        notice=_NOTICES.get(notice or "", ""),
        **data,
    )


@router.get("/panels")
async def panels(
    request: Request,
    session: Session,
    queue: Filter = None,
    provider: Filter = None,
    error_code: Filter = None,
) -> HTMLResponse:
    """The page's data as an HTML fragment (the page's script swaps it in)."""
    data = await _panels(request, _filters(queue, provider, error_code))
    return _html("dashboard_panels.html", session=session, **data)


@router.get("/assets/{name}")
async def asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, f"no dashboard asset {name[:40]!r}")
    headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return Response(page_asset(name), media_type=media_type, headers=headers)


@router.get("/login")
async def login_form(request: Request) -> Response:
    if await _from_cookie(request) is not None:
        return _redirect("/dashboard")
    return _html("dashboard_login.html", error="")


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the credential in the form; on success open a session and go to the page."""
    _check_origin(request)
    form = await _form(request)
    credential = form.get("api_key", "").strip()
    throttle, ip, account = _throttle(request), client_ip(request), account_of(credential)
    wait = await throttle.wait(ip, account)
    if wait > 0:
        raise ApiError(
            429,
            ErrorCode.RATE_LIMITED,
            "too many failed sign-ins; wait before trying again",
            retryable=True,
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    try:
        principal = await admin_auth_for(request).authenticate(credential or None)
    except ApiError as exc:
        if exc.status != 401:
            raise
        if credential:
            await throttle.failed(ip, account)
        message = _LOGIN_FAILED if credential else "Enter an admin API key."
        if not admin_auth_for(request).configured:
            message = exc.message
        return _html("dashboard_login.html", status=401, error=message)
    await throttle.succeeded(ip, account)
    token, ttl = await _open_session(request, principal, credential)
    response = _redirect("/dashboard")
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(ttl),
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=_over_tls(request),
    )
    return response


def _over_tls(request: Request) -> bool:
    """Whether the cookie must be ``Secure``: the request came over TLS (directly, or through
    a proxy trusted with ``--proxy-headers``) or the service's public URL is https."""
    public = getattr(getattr(request.app.state, "settings", None), "public_url", None) or ""
    return request.url.scheme == "https" or public.lower().startswith("https://")


def _throttle(request: Request) -> LoginThrottle:
    """The app's sign-in backoff, shared through the assistant's shared-state store (Redis,
    else the job database) while it has one."""
    throttle: LoginThrottle | None = getattr(request.app.state, "login_throttle", None)
    if throttle is None:
        throttle = LoginThrottle(clock=_jobs(request).clock)
        request.app.state.login_throttle = throttle
    state_store = getattr(_assistant(request), "state_store", None)
    throttle.store = getattr(state_store, "kv", None)
    return throttle


@router.post("/logout")
async def logout(request: Request, session: Session) -> Response:
    form = await _form(request)
    _check_csrf(request, session, form)
    if session.key is not None:
        await _kv(request).delete(session.key, now=_now(request))
    response = _redirect("/dashboard/login")
    response.delete_cookie(COOKIE, path="/dashboard")
    return response


@router.post("/dlq/{job_id}/retry")
async def retry(request: Request, session: Operator, job_id: JobId) -> Response:
    """Redrive one dead job -- the admin API's ``POST /v1/admin/dlq/{id}/retry`` (form field
    ``force`` set: "send anyway", for a reply whose outcome is unknown)."""
    form = await _form(request)
    _check_csrf(request, session, form)
    force = form.get("force", "") not in ("", "0", "false")
    try:
        answer = await retry_one(
            request, job_id, session.principal, RetryOneForce(delay=0.0, force=force)
        )
    except ApiError as exc:
        if _wants_json(request) or exc.status not in (404, 409):
            raise
        return _back(form, "gone" if exc.status == 404 else "refused", job_id)
    return answer if _wants_json(request) else _back(form, "retried", job_id)


@router.post("/dlq/{job_id}/mark-sent")
async def mark_sent(request: Request, session: Operator, job_id: JobId) -> Response:
    """Close a dead reply as sent -- the admin API's ``POST /v1/admin/dlq/{id}/mark-sent``."""
    form = await _form(request)
    _check_csrf(request, session, form)
    note = form.get("note", "").strip()[:1000] or None
    try:
        answer = await mark_sent_one(request, job_id, session.principal, MarkSentBody(note=note))
    except ApiError as exc:
        if _wants_json(request) or exc.status not in (404, 409):
            raise
        return _back(form, "gone" if exc.status == 404 else "refused", job_id)
    return answer if _wants_json(request) else _back(form, "marked", job_id)


@router.post("/dlq/{job_id}/resolve")
async def resolve(request: Request, session: Operator, job_id: JobId) -> Response:
    """Close one dead job with a reason -- the admin API's ``POST /v1/admin/dlq/{id}/resolve``."""
    form = await _form(request)
    _check_csrf(request, session, form)
    reason = form.get("reason", "").strip()
    if not reason or len(reason) > 1000:
        if _wants_json(request):
            raise ApiError(400, ErrorCode.VALIDATION, "reason: say why this job is closed")
        return _back(form, "invalid", job_id)
    try:
        answer = await resolve_one(request, job_id, ResolveOne(reason=reason))
    except ApiError as exc:
        if _wants_json(request) or exc.status != 404:
            raise
        return _back(form, "gone", job_id)
    return answer if _wants_json(request) else _back(form, "resolved", job_id)


async def _page_session(request: Request) -> DashboardSession | Response:
    session = await current_session(request)
    if session is None:
        return _redirect("/dashboard/login")
    return session


@router.get("/jobs/{job_id}")
async def job_detail(
    request: Request, job_id: JobId, notice: Annotated[str | None, Query(max_length=20)] = None
) -> Response:
    """One job: its state, masked payload and result, every attempt with its error, and the
    actions that apply (retry, resolve, mark as sent)."""
    session = await _page_session(request)
    if not isinstance(session, DashboardSession):
        return session
    jobs = _jobs(request)
    job = await jobs.get(job_id)
    if job is None:
        return _html(
            "dashboard_missing.html", status=404, session=session, what=f"job {short_id(job_id)}"
        )
    message = None
    replies = getattr(_assistant(request), "replies", None)
    payload = job.payload if isinstance(job.payload, dict) else {}
    if isinstance(replies, Replies) and job.name == SEND_JOB:
        record = await replies.get(str(payload.get("message_id") or ""))
        message = None if record is None else message_view(record)
    return _html(
        "dashboard_job.html",
        session=session,
        notice=_NOTICES.get(notice or "", ""),
        now=_now(request),
        **job_page(job, message),
    )


@router.get("/sessions/{key}")
async def conversation_page(
    request: Request, key: Annotated[str, Path(min_length=1, max_length=200)]
) -> Response:
    """One customer's conversation: their messages and the replies sent to them, with each
    reply's delivery status; numbers, emails and phone numbers in texts masked."""
    session = await current_session(request)
    if session is None:
        return _redirect("/dashboard/login")
    sessions = getattr(_assistant(request), "sessions", None)
    record = None if sessions is None else await sessions.get(key)
    if record is None:
        return _html("dashboard_missing.html", status=404, session=session, what="session")
    raw = record.to_json() if hasattr(record, "to_json") else dict(record)
    replies = getattr(_assistant(request), "replies", None)
    turns = await conversation(
        _jobs(request), replies if isinstance(replies, Replies) else None, raw
    )
    return _html(
        "dashboard_conversation.html",
        session=session,
        customer=_session_row(raw),
        turns=turns,
        now=_now(request),
    )


_BULK_ACTIONS = ("retry", "resolve")


@router.post("/dlq/bulk")
async def bulk(request: Request, session: Session) -> Response:
    """Retry or resolve the dead jobs ticked in the table (form fields ``action``, ``id``
    repeated, ``reason`` to resolve). The first post answers a confirmation page listing the
    jobs; that page's post (``confirm=1``) acts, through the admin API's
    ``POST /v1/admin/dlq/retry`` and ``POST /v1/admin/dlq/resolve``."""
    pairs = await _form_pairs(request, fields=DLQ_ROWS + 20)
    form = dict(pairs)
    _check_csrf(request, session, form)
    action = form.get("action", "")
    if action not in _BULK_ACTIONS:
        raise ApiError(400, ErrorCode.VALIDATION, "action: retry or resolve")
    jobs = _jobs(request)
    ids = list(dict.fromkeys(value[:100] for name, value in pairs if name == "id" and value))
    dead = [job for job in [await jobs.get(i) for i in ids] if job is not None]
    dead = [job for job in dead if job.state is JobState.DEAD]
    if not dead:
        return _back(form, "none" if not ids else "gone")
    reason = form.get("reason", "").strip()[:1000]
    if form.get("confirm") != "1" or (action == "resolve" and not reason):
        return _html(
            "dashboard_confirm.html",
            session=session,
            action=action,
            jobs=[_dead_row(job_view(job)) for job in dead],
            reason=reason,
            filters={name: form[name] for name in _FILTERS if form.get(name)},
        )
    selected = [job.id for job in dead]
    if action == "retry":
        await retry_dead(request, RetryBody.model_validate({"ids": selected}))
        return _back(form, "bulk_retried")
    await resolve_dead(request, ResolveBody.model_validate({"ids": selected, "reason": reason}))
    return _back(form, "bulk_resolved")


#: the dashboard's router (``app.include_router(dashboard_router)``)
dashboard_router = router
