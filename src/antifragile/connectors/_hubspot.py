"""HubSpot CRM v3: create and update contacts, each contact created once.

::

    async with HubSpotConnector() as hubspot:        # ANTIFRAGILE_HUBSPOT_* from the environment
        contact = await hubspot.create_contact("ada@example.com", {"firstname": "Ada"})
        await hubspot.update_contact(contact.id, {"lastname": "Lovelace"})

**Configuration.** ``ANTIFRAGILE_HUBSPOT_ACCESS_TOKEN`` holds the private app (or OAuth) token
and ``ANTIFRAGILE_HUBSPOT_BASE_URL`` the API's address (``https://api.hubapi.com`` when unset;
point it at ``{sandbox.url}/hubspot`` or any stand-in server). Arguments to
:class:`HubSpotConnector` override both.

**Default policy** (:func:`hubspot_policy`): HubSpot allows a burst of 100 requests per rolling
10 seconds per app (Free/Starter; 190 on Professional and Enterprise), so a token bucket of 10
per second with a burst of 100 paces calls and adapts to the ``X-HubSpot-RateLimit-Max``,
``-Remaining`` and ``-Interval-Milliseconds`` headers of every answer. HubSpot does not
document ``Retry-After`` on its 429: when there is none, the interval header stands in for it
and pauses the bucket. Up to 5 attempts with exponential back-off from 0.5 s (capped at 10 s,
full jitter); 10 s per attempt, 60 s per call; a circuit breaker for the provider.

**Errors** are the antifragile taxonomy: 401/403 :class:`~antifragile.AuthenticationError`,
400 :class:`~antifragile.InvalidRequestError`, 404 :class:`~antifragile.NotFoundError`, 409
:class:`~antifragile.ConflictError` (except the duplicate-email 409 of ``create_contact``, which
is an answer, see below), 429 :class:`~antifragile.RateLimitedError`, 5xx
:class:`~antifragile.UpstreamUnavailableError`, lost connections and timeouts
:class:`~antifragile.NetworkError` / :class:`~antifragile.UpstreamTimeoutError`. HubSpot's
``category`` and ``message`` are added to the error's message; the token never appears in it.

**Exactly once.** HubSpot has no idempotency key, but a contact has a natural key: its email.
HubSpot refuses a second contact with the same email with 409 ``CONFLICT`` and the message
``"Contact already exists. Existing ID: N"``. :meth:`HubSpotConnector.create_contact` therefore
treats a create as safe to replay: an *ambiguous* failure (the connection drops or times out
after HubSpot may have created the contact) is retried in-process, and a call that still fails
goes to the caller (a durable job retries it later). When an earlier attempt did create the
contact, the retry gets the 409, and the connector returns the existing id parsed from the
message (``Contact(id, created=False)``) instead of raising -- the same contact, never a second
one. ``created=False`` means "HubSpot already had it": possibly from an earlier attempt of this
very call, possibly from someone else. The email is therefore required: a create without it
would have no natural key. ``update_contact`` sets properties to given values, which is
idempotent, so it is replayed too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from antifragile.connectors._base import HTTPConnector, base_url_from, masks_pii, required_from
from antifragile.connectors._outcome import hubspot_error_answer
from antifragile.errors import (
    ConfigurationError,
    ConflictError,
    IntegrationError,
    UpstreamUnavailableError,
    redact,
)
from antifragile.http import ResilientClient
from antifragile.policies import (
    SYSTEM_CLOCK,
    Clock,
    Exponential,
    Policy,
    Retry,
    TokenBucket,
)

BASE_URL_ENV = "ANTIFRAGILE_HUBSPOT_BASE_URL"
ACCESS_TOKEN_ENV = "ANTIFRAGILE_HUBSPOT_ACCESS_TOKEN"
DEFAULT_BASE_URL = "https://api.hubapi.com"
PROVIDER = "hubspot"

#: operation names in errors and events
CREATE_CONTACT = "create_contact"
UPDATE_CONTACT = "update_contact"

CONTACTS = "/crm/v3/objects/contacts"

_EXISTING_ID = re.compile(r"Existing ID: (\d+)")


def hubspot_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`HubSpotConnector` (see the module docs)."""
    return Policy(
        PROVIDER,
        timeout=timeout,
        total_timeout=60.0,
        retry=Retry(attempts=5, backoff=Exponential(0.5, cap=10.0)),
        rate=TokenBucket(10.0, burst=100.0, max_wait=10.0),
        clock=clock,
    )


@dataclass(frozen=True, slots=True)
class Contact:
    """A HubSpot contact: its ``id``; ``created`` is False when HubSpot already had it (409)."""

    id: str
    created: bool = True
    properties: Mapping[str, str] = field(default_factory=dict)


def _hubspot_error(detail: str | None) -> dict[str, Any]:
    """HubSpot's error body, parsed from an error excerpt (empty when it is not one)."""
    if not detail:
        return {}
    try:
        body = json.loads(detail)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def existing_id(error: IntegrationError) -> str | None:
    """The contact id in a 409 ``"Contact already exists. Existing ID: N"``, if that is one."""
    if not isinstance(error, ConflictError):
        return None
    message = _hubspot_error(error.detail).get("message")
    found = _EXISTING_ID.search(message if isinstance(message, str) else (error.detail or ""))
    return found.group(1) if found else None


def _mapped(error: IntegrationError) -> IntegrationError:
    """*error* with HubSpot's category (or errorType/policyName) and message in its message."""
    body = _hubspot_error(error.detail)
    label = body.get("category") or body.get("errorType")
    if not isinstance(label, str):
        return error
    policy_name = body.get("policyName")
    if isinstance(policy_name, str):
        label = f"{label} ({policy_name})"
    message = body.get("message")
    text = redact(
        f"{error.message}: {label}" + (f": {message}" if isinstance(message, str) else "")
    )
    error.message = text
    error.args = (text,)
    return error


def _properties(response: httpx.Response) -> tuple[str | None, dict[str, str]]:
    try:
        answer = response.json()
    except ValueError:
        return None, {}
    if not isinstance(answer, dict):
        return None, {}
    contact_id, properties = answer.get("id"), answer.get("properties")
    props = (
        {str(k): str(v) for k, v in properties.items() if v is not None}
        if isinstance(properties, dict)
        else {}
    )
    return (contact_id if isinstance(contact_id, str) and contact_id else None), props


class HubSpotConnector(HTTPConnector):
    """HubSpot's CRM API behind a :class:`~antifragile.ResilientClient` (see the module docs).

    *access_token* and *base_url* default to ``ANTIFRAGILE_HUBSPOT_ACCESS_TOKEN`` and
    ``ANTIFRAGILE_HUBSPOT_BASE_URL``; *policy* to :func:`hubspot_policy` on *clock* with
    *timeout* seconds per attempt. *client* is an ``httpx.AsyncClient`` to use (yours to
    close).
    """

    provider = PROVIDER

    def __init__(
        self,
        access_token: str | None = None,
        *,
        base_url: str | None = None,
        policy: Policy | None = None,
        timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        token = required_from(
            access_token,
            ACCESS_TOKEN_ENV,
            needs="HubSpot needs an access token",
            arg="access_token",
        )
        self.base_url = base_url_from(base_url, BASE_URL_ENV, DEFAULT_BASE_URL)
        self.policy = policy if policy is not None else hubspot_policy(clock=clock, timeout=timeout)
        self._auth = {"authorization": f"Bearer {token}"}
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=self.policy,
            timeout=timeout,
            client=client,
            secrets=[token],
            not_processed=hubspot_error_answer,
        )

    async def _send(
        self, method: str, url: str, body: dict[str, Any], operation: str, replay_safe: bool
    ) -> httpx.Response:
        try:
            return await self.client.request(
                method,
                url,
                json=body,
                headers=self._auth,
                operation=operation,
                replay_safe=replay_safe,
            )
        except IntegrationError as exc:
            _mapped(exc)  # the same error, HubSpot's category added to its message
            raise

    def _malformed(self, response: httpx.Response, operation: str) -> UpstreamUnavailableError:
        return UpstreamUnavailableError(
            f"HubSpot answered {response.status_code} without a contact id (malformed body)",
            provider=PROVIDER,
            operation=operation,
            status=response.status_code,
            request_id=response.request.headers.get("x-request-id"),
            replay_safe=True,
            detail=response.text[:500],
        )

    @masks_pii("email", "properties")
    async def create_contact(
        self, email: str, properties: Mapping[str, str] | None = None
    ) -> Contact:
        """Create the contact with *email* (``POST /crm/v3/objects/contacts``), once.

        Returns ``Contact(id, created=True)`` for a new contact and ``Contact(id,
        created=False)`` when HubSpot already had one with this email (409: the id comes from
        HubSpot's message). Raises an :class:`~antifragile.IntegrationError` subclass otherwise.
        """
        if not email or not email.strip():
            raise ConfigurationError("create_contact needs an email (its natural key)")
        props = {str(k): str(v) for k, v in (properties or {}).items()}
        props["email"] = email.strip()
        try:
            response = await self._send(
                "POST", CONTACTS, {"properties": props}, CREATE_CONTACT, replay_safe=True
            )
        except ConflictError as exc:
            found = existing_id(exc)
            if found is None:
                raise
            return Contact(found, created=False)
        contact_id, answered = _properties(response)
        if contact_id is None:
            raise self._malformed(response, CREATE_CONTACT)
        return Contact(contact_id, created=True, properties=answered)

    @masks_pii("properties")
    async def update_contact(self, contact_id: str, properties: Mapping[str, str]) -> Contact:
        """Set *properties* of contact *contact_id* (``PATCH .../contacts/{id}``).

        Setting properties to given values is idempotent, so ambiguous failures are retried.
        An unknown id is a :class:`~antifragile.NotFoundError`; an email that another contact
        has is a :class:`~antifragile.ConflictError`.
        """
        if not contact_id or not contact_id.isdigit():
            raise ConfigurationError(f"a HubSpot contact id is numeric, got {contact_id!r}")
        props = {str(k): str(v) for k, v in properties.items()}
        response = await self._send(
            "PATCH",
            f"{CONTACTS}/{contact_id}",
            {"properties": props},
            UPDATE_CONTACT,
            replay_safe=True,
        )
        answered_id, answered = _properties(response)
        if answered_id is None:
            raise self._malformed(response, UPDATE_CONTACT)
        return Contact(answered_id, created=False, properties=answered)

    def __repr__(self) -> str:
        return f"HubSpotConnector(base_url={self.base_url!r})"
