"""Mailchimp Marketing: add a contact to a business's audience (list), naturally idempotent.

::

    async with MailchimpConnector() as mailchimp:    # ANTIFRAGILE_MAILCHIMP_* from the environment
        member = await mailchimp.upsert_member(
            "ada@example.com", merge_fields={"FNAME": "Ada"}, list_id="a1b2c3d4e5"
        )
        member.id                                     # the subscriber hash

**Configuration.** ``ANTIFRAGILE_MAILCHIMP_API_KEY`` holds the API key; its suffix after the
last ``-`` is the data centre (``...-us21`` -> ``us21``), which makes the default address
``https://us21.api.mailchimp.com/3.0`` (``ANTIFRAGILE_MAILCHIMP_BASE_URL`` overrides it;
``{sandbox.url}/mailchimp`` for the sandbox). ``ANTIFRAGILE_MAILCHIMP_LIST_ID`` is the audience
used when none is given (a tenant's ``mailchimp_list_id`` names its own) and
``ANTIFRAGILE_MAILCHIMP_STATUS_IF_NEW`` a new member's status (``pending`` by default: Mailchimp
asks the contact to confirm -- double opt-in -- before any campaign reaches them). Authentication is
HTTP Basic with any user name and the key as password.

**Default policy** (:func:`mailchimp_policy`): Mailchimp allows **10 simultaneous connections**
per user account and answers 429 beyond them (no rate-limit headers), so a bulkhead of 10
concurrent calls (a call waits up to 30 s for a slot) keeps this process under the limit --
several processes sharing one account share the 10: give each a smaller bulkhead through a
policy override. Up to 5 attempts with exponential back-off from 0.5 s (capped at 10 s, full
jitter); 10 s per attempt (Mailchimp itself gives up after 120 s), 60 s per call; a circuit
breaker for the provider.

**Errors** are Mailchimp's ``application/problem+json`` (``{"type", "title", "status",
"detail", "instance"}``); its ``title`` and ``detail`` are added to the message (an email
address in them is masked): 401/403 :class:`~antifragile.AuthenticationError`, 400
:class:`~antifragile.InvalidRequestError` (``Invalid Resource``, ``Forgotten Email Not
Subscribed``...), 404 :class:`~antifragile.NotFoundError` (an unknown list), 429
:class:`~antifragile.RateLimitedError`, 5xx :class:`~antifragile.UpstreamUnavailableError`.

**Exactly once.** ``PUT /lists/{list_id}/members/{subscriber_hash}`` -- the hash is the MD5 hex
of the lower-cased address (:func:`subscriber_hash`) -- creates the member or updates it: the
same request twice leaves one member with the same fields. So every failure, ambiguous ones
included (a 200 whose body is not the member is asked again up to 3 times), is safely retried
in-process and by a durable job, and no reconciliation is needed.
``status_if_new`` applies only when the member is created: an existing member's subscription
status (an unsubscribe, say) is never changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from antifragile.connectors._base import HTTPConnector, masks_pii, required_from
from antifragile.errors import (
    ConfigurationError,
    IntegrationError,
    UpstreamUnavailableError,
    redact,
)
from antifragile.http import ResilientClient
from antifragile.policies import SYSTEM_CLOCK, Bulkhead, Clock, Exponential, Policy, Retry

BASE_URL_ENV = "ANTIFRAGILE_MAILCHIMP_BASE_URL"
API_KEY_ENV = "ANTIFRAGILE_MAILCHIMP_API_KEY"
LIST_ID_ENV = "ANTIFRAGILE_MAILCHIMP_LIST_ID"
STATUS_ENV = "ANTIFRAGILE_MAILCHIMP_STATUS_IF_NEW"
#: a new member's status unless configured: ``pending`` -- Mailchimp asks the contact to
#: confirm (double opt-in) before any campaign reaches them
DEFAULT_STATUS_IF_NEW = "pending"
PROVIDER = "mailchimp"
UPSERT_MEMBER = "upsert_member"
#: Mailchimp's limit of simultaneous connections per user account
MAX_CONNECTIONS = 10

#: how often a 200 without the member is asked again (the PUT is safe to repeat)
_MALFORMED_TRIES = 3
#: the subscription statuses a new member may get
STATUSES = frozenset({"subscribed", "unsubscribed", "cleaned", "pending", "transactional"})

__all__ = ["MailchimpConnector", "Member", "mailchimp_policy", "subscriber_hash"]


def mailchimp_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`MailchimpConnector` (see the module docs)."""
    return Policy(
        PROVIDER,
        timeout=timeout,
        total_timeout=60.0,
        retry=Retry(attempts=5, backoff=Exponential(0.5, cap=10.0)),
        bulkhead=Bulkhead(MAX_CONNECTIONS, max_wait=30.0, name=PROVIDER),
        clock=clock,
    )


def subscriber_hash(email: str) -> str:
    """Mailchimp's id of a list member: the MD5 hex digest of the lower-cased address."""
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


def data_center(api_key: str) -> str:
    """The data centre a Mailchimp API key belongs to (the part after its last ``-``)."""
    _, sep, dc = api_key.rpartition("-")
    if not sep or not dc.isalnum():
        raise ConfigurationError("a Mailchimp API key ends in -<data centre> (e.g. -us21)")
    return dc


@dataclass(frozen=True, slots=True)
class Member:
    """The audience member after the upsert: its ``id`` (the subscriber hash), the list and
    its subscription ``status``."""

    id: str
    list_id: str
    status: str


def _problem(detail: str | None) -> str | None:
    """``title: detail`` of Mailchimp's problem+json body, if it is one."""
    try:
        body = json.loads(detail or "")
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("title"), str):
        return None
    text = str(body["title"])
    if isinstance(body.get("detail"), str) and body["detail"]:
        text += f": {body['detail']}"
    return text


class MailchimpConnector(HTTPConnector):
    """Mailchimp's Marketing API behind a :class:`~antifragile.ResilientClient` (module docs).

    *api_key*, *base_url* and *list_id* default to ``ANTIFRAGILE_MAILCHIMP_API_KEY``,
    ``ANTIFRAGILE_MAILCHIMP_BASE_URL`` (else the key's data centre) and
    ``ANTIFRAGILE_MAILCHIMP_LIST_ID``; *policy* to :func:`mailchimp_policy` on *clock* with
    *timeout* seconds per attempt. *client* is an ``httpx.AsyncClient`` to use (yours to close).
    """

    provider = PROVIDER

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        list_id: str | None = None,
        status_if_new: str | None = None,
        policy: Policy | None = None,
        timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        key = required_from(api_key, API_KEY_ENV, needs="Mailchimp needs an API key", arg="api_key")
        given = base_url or os.environ.get(BASE_URL_ENV)
        self.base_url = (given or f"https://{data_center(key)}.api.mailchimp.com/3.0").rstrip("/")
        self.list_id = list_id or os.environ.get(LIST_ID_ENV) or None
        self.status_if_new = (
            status_if_new or os.environ.get(STATUS_ENV) or DEFAULT_STATUS_IF_NEW
        ).strip()
        if self.status_if_new not in STATUSES:
            raise ConfigurationError(f"status_if_new is one of {', '.join(sorted(STATUSES))}")
        self.policy = (
            policy if policy is not None else mailchimp_policy(clock=clock, timeout=timeout)
        )
        basic = base64.b64encode(f"antifragile:{key}".encode()).decode()
        self._auth = {"authorization": f"Basic {basic}"}
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=self.policy,
            timeout=timeout,
            client=client,
            secrets=[key, basic],
        )

    @masks_pii("email", "merge_fields")
    async def upsert_member(
        self,
        email: str,
        *,
        list_id: str | None = None,
        status_if_new: str | None = None,
        merge_fields: Mapping[str, str] | None = None,
    ) -> Member:
        """Add *email* to the audience *list_id* (default: the connector's), or update its
        *merge_fields* when it is there already (``PUT`` by :func:`subscriber_hash`)."""
        audience = list_id or self.list_id
        if not audience:
            raise ConfigurationError(f"no Mailchimp list: pass list_id= or set {LIST_ID_ENV}")
        status_if_new = status_if_new or self.status_if_new
        if status_if_new not in STATUSES:
            raise ConfigurationError(f"status_if_new is one of {', '.join(sorted(STATUSES))}")
        if "@" not in email:
            raise ConfigurationError("an audience member needs an email address")
        member_id = subscriber_hash(email)
        body: dict[str, Any] = {"email_address": email.strip(), "status_if_new": status_if_new}
        if merge_fields:
            body["merge_fields"] = dict(merge_fields)
        for _ in range(_MALFORMED_TRIES):
            answer = await self._put(f"/lists/{audience}/members/{member_id}", body)
            if isinstance(answer, dict) and isinstance(answer.get("id"), str):
                status = answer.get("status")
                return Member(answer["id"], audience, status if isinstance(status, str) else "")
        # a PUT is safe to send again: a durable job retries it
        raise UpstreamUnavailableError(
            "Mailchimp answered without the member (malformed body)",
            provider=PROVIDER,
            operation=UPSERT_MEMBER,
            status=200,
            replay_safe=True,
        )

    async def _put(self, path: str, body: dict[str, Any]) -> Any:
        """The JSON answer to ``PUT path`` (``None`` when it is not JSON)."""
        try:
            response = await self.client.put(
                path, json=body, headers=self._auth, operation=UPSERT_MEMBER
            )
        except IntegrationError as exc:
            problem = _problem(exc.detail)
            if problem is not None:
                exc.message = redact(f"{exc.message}: {problem}")
                exc.args = (exc.message,)
            raise
        try:
            return response.json()
        except ValueError:
            return None

    def __repr__(self) -> str:
        return f"MailchimpConnector(base_url={self.base_url!r})"
