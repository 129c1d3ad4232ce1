"""Erasure: every record about one person -- found by phone number or email address -- deleted.

::

    report = await erase(jobs, phone="+447700900123")            # or email="ada@example.com"
    report.counts   # {"inbox": 5, "sessions": 1, "outbound_messages": 5, "tasks": 1, ...}

**What is looked at.** Every record of the store beside the job queue: the inbox (the messages
as received), every job -- its payload, result, saga state, errors and history -- dead ones
(the dead-letter queue) included, and every key-value record (sessions, outbound messages and
their delivery records, tasks, echoes, the in-flight marks of Slack posts, alerts...). A
record is about the person when its key or its JSON holds

* the phone number, in any spelling of its digits (``+44 7700 900123``, ``447700900123``,
  ``whatsapp:+447700900123``, ``%2B447700900123``) -- never as part of a longer number;
* the email address, in any case (``%40`` for ``@`` too);
* the person's **reference** (:func:`~antifragile.observability.reference` under every
  configured data key and without one), which job payloads carry instead of the value;
* the hash a session's key is made of (``session:{tenant}:{hash(phone)[:24]}``), and the
  ordering key of the person's inbound jobs (for the tenants named) -- under every configured
  data key and unkeyed.

Beside them, the idempotency records of the store (:class:`~antifragile.stores.IdempotencyStore`:
claims of effects, with their keys and stored results) are searched the same way.

**What happens.** Inbox entries, key-value records and idempotency records are deleted. Jobs in
a final state (succeeded, dead, resolved) are deleted. A job still **waiting** (scheduled,
queued, retrying) is cancelled -- deleted before a worker claims it, counted under
``jobs_cancelled``: it would only act on a person who asked to be forgotten. A job **running**
is not pulled from under its worker -- its payload holds references only, and what it names is
gone -- and is counted under ``jobs_pending``: erase again once it has finished. The counts
say, per kind of record, how many were deleted (with ``dry_run``: how many would be). A second
erasure of the same person finds nothing: erasure is idempotent.

It reads every record once (the store has no index by person, on purpose): minutes for
millions of records, and it can run while the service runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from antifragile.errors import ConfigurationError
from antifragile.inbound._pipeline import sender_ordering_keys
from antifragile.inbound._replies import kv_of
from antifragile.inbound._sealing import unseal_all
from antifragile.inbound._sessions import SESSION_PURPOSE
from antifragile.jobs import FINAL, Job, JobFilter, Jobs
from antifragile.jobs._model import CLAIMABLE
from antifragile.observability import mask_email, mask_phone, reference
from antifragile.observability._personal import _UNKEYED, data_keys, lookup_hashes
from antifragile.stores import KeyValueStore

#: what each key-value prefix holds, as the counts name it
KV_KINDS: Mapping[str, str] = {
    "session": "sessions",
    "outmsg": "outbound_messages",
    "outref": "outbound_messages",
    "outmsg-by-provider": "outbound_messages",
    "delivery": "deliveries",
    "task": "tasks",
    "echo": "echoes",
    "sending": "sending_marks",
    "alert": "alerts",
}
#: the count of the idempotency records erased
IDEMPOTENCY = "idempotency"
#: the count of the waiting jobs cancelled
CANCELLED = "jobs_cancelled"
#: records read per page
_PAGE = 500
#: key-value records read at most (the store's scan takes one limit)
_KV_LIMIT = 10_000_000


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What an erasure deleted (or, with ``dry_run``, would delete): a count per kind of
    record (``inbox``, ``jobs``, ``dlq``, ``sessions``, ``outbound_messages``, ``tasks``...;
    ``jobs_cancelled`` the waiting jobs deleted, ``idempotency`` the idempotency records) and
    ``jobs_pending``, the matching jobs still running (left to finish)."""

    subject: str
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    jobs_pending: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "dry_run": self.dry_run,
            "erased": dict(sorted(self.counts.items())),
            "total": self.total,
            "jobs_pending": self.jobs_pending,
        }


class _Matcher:
    """Whether a text mentions the person (see the module docs)."""

    def __init__(
        self,
        phone: str | None,
        email: str | None,
        keys: Iterable[bytes],
        tenants: Iterable[str] = (),
    ) -> None:
        patterns: list[str] = []
        literals: list[str] = []
        if phone is not None:
            digits = "".join(c for c in phone if c.isdigit())
            if not 7 <= len(digits) <= 15:
                raise ConfigurationError("a phone number has 7 to 15 digits")
            spelled = r"[\s().-]*".join(digits)
            patterns.append(rf"(?<!\d){spelled}(?!\d)")
            # the hashes of session keys and ordering keys, under every data key and unkeyed
            literals.extend(h[:24] for h in lookup_hashes(SESSION_PURPOSE, digits))
            for tenant in tenants:
                literals.extend(sender_ordering_keys(tenant, digits))
            literals.extend(reference(digits, key=key) for key in keys)
        if email is not None:
            address = email.strip()
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", address):
                raise ConfigurationError("not an email address")
            local, _, domain = address.partition("@")
            patterns.append(rf"{re.escape(local)}(?:@|%40){re.escape(domain)}")
            literals.extend(reference(address, key=key) for key in keys)
        if not patterns:
            raise ConfigurationError("erasure needs a phone number or an email address")
        patterns.extend(re.escape(literal) for literal in literals)
        self._pattern = re.compile("|".join(patterns), re.IGNORECASE)

    def __call__(self, *values: Any) -> bool:
        for value in values:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if self._pattern.search(text):
                return True
        return False


def _subject(phone: str | None, email: str | None) -> str:
    parts = [mask_phone(phone) if phone else "", mask_email(email) if email else ""]
    return " ".join(p for p in parts if p)


def _job_fields(job: Job) -> tuple[Any, ...]:
    return (
        job.payload,
        job.result,
        job.state_data,
        job.last_error,
        job.history,
        job.resolution,
        job.idempotency_key,
        job.ordering_key,
        job.context,
    )


async def _erase_idempotency(jobs: Jobs, matches: _Matcher, *, now: float, dry_run: bool) -> int:
    """Delete (count, with *dry_run*) the idempotency records of the job store about the
    person: their key, owner, fingerprint or stored result names them."""
    store = getattr(getattr(jobs.queue, "store", None), "idempotency", None)
    if store is None:
        return 0
    erased = 0
    for record in await store.scan("", now=now, limit=_KV_LIMIT):
        about = matches(record.key, record.owner or "", record.fingerprint or "", record.result)
        if about and (dry_run or await store.delete(record.key)):
            erased += 1
    return erased


async def erase(
    jobs: Jobs,
    *,
    phone: str | None = None,
    email: str | None = None,
    dry_run: bool = False,
    kv: KeyValueStore | None = None,
    tenants: Iterable[str] = (),
) -> ErasureReport:
    """Delete every record about the person with *phone* and/or *email* from *jobs*' store
    (its key-value store, or *kv*); see the module docs. *tenants* (their ids) also find the
    person's inbound jobs by their ordering key. A ConfigurationError for neither or a
    malformed value."""
    matches = _Matcher(phone, email, [*data_keys(), _UNKEYED], tenants)
    await jobs.open()
    queue = jobs.queue
    now = jobs.clock.time()
    report = ErasureReport(_subject(phone, email), dry_run)
    counts = report.counts

    inbox: list[str] = []
    offset = 0
    while True:
        page = await queue.find_inbound(limit=_PAGE, offset=offset)
        inbox.extend(entry.id for entry in page if matches(unseal_all(entry.payload)))
        if len(page) < _PAGE:
            break
        offset += _PAGE
    counts["inbox"] = len(inbox) if dry_run else await queue.delete_inbound(inbox)

    done: list[Job] = []
    waiting: list[str] = []
    pending = 0
    offset = 0
    while True:
        found = await queue.find(JobFilter(), limit=_PAGE, offset=offset)
        for job in found:
            if matches(*_job_fields(job)):
                if job.state in FINAL:
                    done.append(job)
                elif job.state in CLAIMABLE:
                    waiting.append(job.id)
                else:
                    pending += 1
        if len(found) < _PAGE:
            break
        offset += _PAGE
    dead = sum(1 for job in done if job.state.value == "dead")
    if not dry_run and done:
        await queue.purge(JobFilter(ids=tuple(job.id for job in done)), now=now)
    counts["dlq"] = dead
    counts["jobs"] = len(done) - dead
    if dry_run:
        counts[CANCELLED] = len(waiting)
    else:
        cancelled = await queue.cancel(waiting)
        counts[CANCELLED] = cancelled
        pending += len(waiting) - cancelled  # claimed meanwhile: running now
    counts[IDEMPOTENCY] = await _erase_idempotency(jobs, matches, now=now, dry_run=dry_run)

    store = kv if kv is not None else kv_of(jobs)
    for entry in await store.scan("", now=now, limit=_KV_LIMIT):
        if not matches(entry.key, unseal_all(entry.value)):
            continue
        prefix = entry.key.split(":", 1)[0]
        kind = KV_KINDS.get(prefix, f"kv:{prefix}")
        if dry_run or await store.delete(entry.key, now=now):
            counts[kind] = counts.get(kind, 0) + 1
    for kind in ("sessions", "outbound_messages", "tasks"):
        counts.setdefault(kind, 0)
    return ErasureReport(report.subject, dry_run, counts, pending)
