"""A Mailchimp Marketing simulator: add or update a list member, 10 connections at once.

* **Auth** -- HTTP Basic, any user name, the API key as password. None, or a key outside
  ``api_keys`` (when given), is 401 ``API Key Invalid``.
* **Lists** -- ``lists`` are the audiences that exist (any id when ``None``); another is 404
  ``Resource Not Found``.
* **Upsert** -- ``PUT /lists/{list_id}/members/{subscriber_hash}`` with ``{"email_address",
  "status_if_new", "status"?, "merge_fields"?}``: the hash must be the MD5 hex of the lower-cased
  ``email_address`` and a new member needs ``status_if_new`` (or ``status``), else 400
  ``Invalid Resource`` with ``errors[{field, message}]``. A new member is created with that
  status, an existing one has its merge fields updated and keeps its status (unless ``status``
  is given); 200 with the member (``id`` = the hash, ``email_address``, ``status``,
  ``merge_fields``, ``list_id``). Each creation or change is recorded as an effect whose
  ``idempotency_key`` is ``<list_id>/<hash>``; the same request again changes nothing and
  records nothing -- so the effect log counts what the upserts did, not how often they came.
  ``GET`` the same path reads a member (404 when absent).
* **Errors** -- ``application/problem+json`` ``{"type", "title", "status", "detail",
  "instance"}``.
* **Connections** -- Mailchimp allows ``max_connections`` (10) simultaneous connections per
  account: a request arriving while that many others hold one is 429 ``Too Many Requests``
  (no rate-limit headers). A request holds its connection for ``hold`` seconds from its
  arrival (0: answered at once); give the endpoint the same ``latency`` in the fault plan so
  the client waits that long too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from antifragile.sandbox._server import IncomingRequest
from antifragile.sandbox._simulator import Call, Reply, Route, Simulator

_PROBLEM_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"
_STATUSES = frozenset({"subscribed", "unsubscribed", "cleaned", "pending", "transactional"})
_TITLES: dict[int, tuple[str, str]] = {
    400: ("Invalid Resource", "The resource submitted could not be validated."),
    401: (
        "API Key Invalid",
        "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
    ),
    403: ("Forbidden", "You don't have permission to access this resource."),
    404: ("Resource Not Found", "The requested resource could not be found."),
    405: ("Method Not Allowed", "The requested method and resource are not compatible."),
    429: ("Too Many Requests", "You have exceeded the limit of 10 simultaneous connections."),
    500: ("Internal Server Error", "An unexpected internal error has occurred."),
    503: ("Service Unavailable", "This service is temporarily unavailable."),
}


def _hash(email: str) -> str:
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


class MailchimpSimulator(Simulator):
    """Mailchimp's list-member upsert with its Basic auth, problem+json errors and
    simultaneous-connection limit."""

    name = "mailchimp"
    settable = frozenset({"max_connections", "hold"})

    def __init__(
        self,
        *,
        api_keys: Iterable[str] | None = None,
        lists: Iterable[str] | None = None,
        max_connections: int = 10,
        hold: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_keys = None if api_keys is None else frozenset(api_keys)
        self.lists = None if lists is None else frozenset(lists)
        self.max_connections = max_connections
        self.hold = hold
        self._clock = clock
        self._lock = threading.Lock()
        self._busy: list[float] = []
        self._members: dict[tuple[str, str], dict[str, Any]] = {}
        #: the most connections held at once so far
        self.peak_connections = 0
        super().__init__()

    def routes(self) -> Iterable[Route]:
        path = "/lists/{list_id}/members/{subscriber_hash}"
        return [Route("PUT", path, self.upsert), Route("GET", path, self.member)]

    def reset(self) -> None:
        with self._lock:
            self._busy.clear()
            self._members.clear()
            self.peak_connections = 0

    def members(self, list_id: str) -> list[dict[str, Any]]:
        """The members of *list_id*, in the order they were added."""
        with self._lock:
            return [dict(m) for (lst, _), m in self._members.items() if lst == list_id]

    # -- the provider's answers -----------------------------------------------------------------

    def error(
        self, status: int, message: str | None = None, errors: list[dict[str, str]] | None = None
    ) -> Reply:
        title, detail = _TITLES.get(status, _TITLES[500] if status >= 500 else _TITLES[400])
        body: dict[str, Any] = {
            "type": _PROBLEM_TYPE,
            "title": title,
            "status": status,
            "detail": message or detail,
            "instance": str(uuid.uuid4()),
        }
        if errors:
            body["errors"] = errors
        return Reply(status, body, headers={"content-type": "application/problem+json"})

    def rate_limited(self, retry_after: float) -> Reply:
        return self.error(429)

    def decorate(self, request: IncomingRequest, reply: Reply) -> Reply:
        return reply.with_headers({"X-Request-Id": str(uuid.uuid4())})

    def throttle(self, request: IncomingRequest) -> Reply | None:
        now = self._clock()
        with self._lock:
            self._busy = [t for t in self._busy if t + self.hold > now]
            if len(self._busy) >= self.max_connections:
                return self.error(429)
            self._busy.append(now)
            self.peak_connections = max(self.peak_connections, len(self._busy))
        return None

    def authenticate(self, request: IncomingRequest) -> Reply | None:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, ValueError):
            decoded = ""
        _, sep, key = decoded.partition(":")
        if scheme.lower() != "basic" or not sep or not key:
            return self.error(401)
        if self.api_keys is not None and key not in self.api_keys:
            return self.error(401)
        return None

    # -- members --------------------------------------------------------------------------------

    def _known(self, list_id: str) -> Reply | None:
        if self.lists is not None and list_id not in self.lists:
            return self.error(404, f"The requested resource could not be found: list {list_id}")
        return None

    def member(self, call: Call) -> Reply:
        list_id, member_id = call.params["list_id"], call.params["subscriber_hash"]
        missing = self._known(list_id)
        if missing is not None:
            return missing
        with self._lock:
            found = self._members.get((list_id, member_id.lower()))
        return Reply(200, dict(found)) if found is not None else self.error(404)

    def upsert(self, call: Call) -> Reply:
        list_id, member_id = call.params["list_id"], call.params["subscriber_hash"].lower()
        missing = self._known(list_id)
        if missing is not None:
            return missing
        try:
            body = call.json()
        except ValueError:
            return self.error(400, "We encountered an unspecified JSON parsing error.")
        if not isinstance(body, dict):
            return self.error(400)
        email = body.get("email_address")
        if not isinstance(email, str) or "@" not in email:
            return self.error(
                400,
                errors=[{"field": "email_address", "message": "This value should not be blank."}],
            )
        if _hash(email) != member_id:
            return self.error(
                400, "The subscriber hash does not match the lower-cased email address."
            )
        fields = body.get("merge_fields")
        if fields is not None and not isinstance(fields, dict):
            return self.error(
                400, errors=[{"field": "merge_fields", "message": "Schema describes object"}]
            )
        status = body.get("status")
        status_if_new = body.get("status_if_new")
        for name, value in (("status", status), ("status_if_new", status_if_new)):
            if value is not None and value not in _STATUSES:
                return self.error(400, errors=[{"field": name, "message": "Invalid value"}])
        with self._lock:
            existing = self._members.get((list_id, member_id))
            if existing is None and status is None and status_if_new is None:
                return self.error(
                    400,
                    errors=[{"field": "status_if_new", "message": "This value is required."}],
                )
            member = dict(
                existing
                or {
                    "id": member_id,
                    "email_address": email.strip(),
                    "list_id": list_id,
                    "status": status or status_if_new,
                    "merge_fields": {},
                }
            )
            if status is not None:
                member["status"] = status
            member["merge_fields"] = {**member["merge_fields"], **(fields or {})}
            changed = member != existing
            self._members[(list_id, member_id)] = member
        if changed:  # the same PUT again changes nothing: no new effect
            call.commit(member_id, body, f"{list_id}/{member_id}")
        return Reply(200, member)
