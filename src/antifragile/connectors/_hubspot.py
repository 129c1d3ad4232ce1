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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx

from antifragile.connectors._base import HTTPConnector, base_url_from, masks_pii, required_from
from antifragile.connectors._outcome import hubspot_error_answer
from antifragile.connectors._quota import QuotaPause, paused_refusal, until_daily_reset
from antifragile.errors import (
    ConfigurationError,
    ConflictError,
    IntegrationError,
    InvalidRequestError,
    RateLimitedError,
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
from antifragile.stores import KeyValueStore

BASE_URL_ENV = "ANTIFRAGILE_HUBSPOT_BASE_URL"
ACCESS_TOKEN_ENV = "ANTIFRAGILE_HUBSPOT_ACCESS_TOKEN"
DEFAULT_BASE_URL = "https://api.hubapi.com"
PROVIDER = "hubspot"

#: operation names in errors and events
CREATE_CONTACT = "create_contact"
UPDATE_CONTACT = "update_contact"

UPSERT_CONTACTS = "upsert_contacts"
FIND_CONTACT = "find_contact"

CONTACTS = "/crm/v3/objects/contacts"
#: the inputs one batch request carries at most
BATCH_LIMIT = 100

_EXISTING_ID = re.compile(r"Existing ID: (\d+)")

#: HubSpot's burst window when a 429 names it without the interval header
DEFAULT_INTERVAL = 10.0
#: the 429 ``policyName`` values of the burst limit (``SECONDLY`` is the older name)
BURST_POLICIES: dict[str, float] = {"TEN_SECONDLY_ROLLING": DEFAULT_INTERVAL, "SECONDLY": 1.0}
DAILY_POLICY = "DAILY"


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


#: an email HubSpot could take: something@domain.tld, no spaces
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


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
        daily_reset_timezone: str = "UTC",
        quota_store: KeyValueStore | None = None,
    ) -> None:
        try:
            self.daily_reset_zone: tzinfo = ZoneInfo(daily_reset_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"daily_reset_timezone {daily_reset_timezone!r} is not a known time zone"
            ) from None
        self.clock = clock
        self._quota = QuotaPause(PROVIDER, clock=clock, kv=quota_store)
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
        self.client.refine = self._refine

    @property
    def daily_paused_until(self) -> float | None:
        """Epoch seconds until which HubSpot's daily limit is spent (``None``: not known to
        be); shared by the processes of the registry's store when there is one."""
        return self._quota.until

    @daily_paused_until.setter
    def daily_paused_until(self, until: float | None) -> None:
        self._quota.until = until

    def _refine(self, error: IntegrationError, response: httpx.Response) -> IntegrationError:
        """A 429's real wait: the burst window (``X-HubSpot-RateLimit-Interval-Milliseconds``,
        else 10 s) when HubSpot sends no ``Retry-After``; the next daily reset for ``DAILY``,
        with the limiter paused until then."""
        if not isinstance(error, RateLimitedError):
            return error
        policy_name = _hubspot_error(response.text).get("policyName")
        wait: float | None = None
        if policy_name == DAILY_POLICY:
            now = self.clock.time()
            wait = until_daily_reset(now, self.daily_reset_zone)
            self._quota.start(now + wait)
        elif policy_name in BURST_POLICIES and "retry-after" not in response.headers:
            announced = response.headers.get("x-hubspot-ratelimit-interval-milliseconds", "")
            try:
                wait = float(announced) / 1000.0
            except ValueError:
                wait = BURST_POLICIES[str(policy_name)]
            if not wait > 0:
                wait = BURST_POLICIES[str(policy_name)]
        if wait is None:
            return error
        error.retry_after = wait
        if self.policy.rate is not None:
            self.policy.rate.pause(wait)
        return error

    async def _send(
        self, method: str, url: str, body: dict[str, Any], operation: str, replay_safe: bool
    ) -> httpx.Response:
        await self._quota.sync()
        paused = paused_refusal(
            PROVIDER, operation, self._quota.until, self.clock.time(), "the daily limit is spent"
        )
        if paused is not None:
            raise paused
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
            await self._quota.sync()  # a DAILY 429 pauses the other processes too
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

    @masks_pii("contacts")
    async def upsert_contacts(
        self, contacts: Mapping[str, Mapping[str, str]] | Sequence[tuple[str, Mapping[str, str]]]
    ) -> list[Contact]:
        """Create or update several contacts by email (``POST .../contacts/batch/upsert`` with
        ``idProperty: "email"``), at most 100 per request: what draining a backlog needs, in
        one request per 100 contacts instead of one each.

        *contacts* maps each email to its properties. Upserting by email is naturally
        idempotent, so an ambiguous failure is retried. Returns one :class:`Contact` per
        email, in order (``created`` is HubSpot's ``new``); a batch HubSpot answers with
        errors (207) raises :class:`~antifragile.InvalidRequestError` naming how many failed.
        """
        items = list(contacts.items()) if isinstance(contacts, Mapping) else list(contacts)
        inputs: list[dict[str, Any]] = []
        for email, properties in items:
            if not email or not email.strip():
                raise ConfigurationError("upsert_contacts needs an email for each contact")
            props = {str(k): str(v) for k, v in properties.items()}
            inputs.append({"idProperty": "email", "id": email.strip(), "properties": props})
        if len({i["id"].lower() for i in inputs}) != len(inputs):
            raise ConfigurationError("upsert_contacts got the same email twice")
        found: list[Contact] = []
        for start in range(0, len(inputs), BATCH_LIMIT):
            chunk = inputs[start : start + BATCH_LIMIT]
            response = await self._send(
                "POST",
                f"{CONTACTS}/batch/upsert",
                {"inputs": chunk},
                UPSERT_CONTACTS,
                replay_safe=True,
            )
            found.extend(self._upserted(response, chunk))
        return found

    @masks_pii("contacts")
    async def upsert_contacts_each(
        self, contacts: Sequence[tuple[str, Mapping[str, str]]]
    ) -> list[Contact | IntegrationError]:
        """Like :meth:`upsert_contacts` (at most 100 per request), but one answer per contact:
        its :class:`Contact`, or the error that concerns it alone.

        A contact without a plausible email is answered with an
        :class:`~antifragile.InvalidRequestError` and not sent. When HubSpot refuses a batch
        for its content (a 4xx other than 429, or a 207 with errors), each of its contacts is
        sent alone, so that only the contacts it refuses get errors. A transient failure of a
        batch (429, 5xx, a timeout, after the policy's retries) is the answer of each of its
        contacts. Emails repeated (in any case) are sent once and answered alike.
        """
        answers: list[Contact | IntegrationError | None] = [None] * len(contacts)
        unique: dict[str, tuple[str, Mapping[str, str]]] = {}
        for index, (email, properties) in enumerate(contacts):
            address = (email or "").strip()
            if not _EMAIL.fullmatch(address):
                answers[index] = InvalidRequestError(
                    "a HubSpot contact needs a valid email",
                    provider=PROVIDER,
                    operation=UPSERT_CONTACTS,
                )
                continue
            unique[address.lower()] = (address, {**properties, "email": address})
        keys = list(unique)
        found: dict[str, Contact | IntegrationError] = {}
        for start in range(0, len(keys), BATCH_LIMIT):
            chunk = keys[start : start + BATCH_LIMIT]
            try:
                done = await self.upsert_contacts([unique[key] for key in chunk])
            except IntegrationError as exc:
                if exc.retryable or len(chunk) == 1:  # it concerns the whole batch
                    found.update(dict.fromkeys(chunk, exc))
                    continue
                for key in chunk:  # find the contacts HubSpot refuses, one by one
                    try:
                        found[key] = (await self.upsert_contacts([unique[key]]))[0]
                    except IntegrationError as alone:
                        found[key] = alone
                continue
            found.update(zip(chunk, done, strict=True))
        for index, (email, _) in enumerate(contacts):
            if answers[index] is None:
                answers[index] = found[(email or "").strip().lower()]
        return [answer for answer in answers if answer is not None]

    def _upserted(self, response: httpx.Response, chunk: list[dict[str, Any]]) -> list[Contact]:
        expected = len(chunk)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        results = answer.get("results") if isinstance(answer, dict) else None
        errors = answer.get("errors") if isinstance(answer, dict) else None
        if errors:
            raise InvalidRequestError(
                f"HubSpot upserted {len(results or [])} of {expected} contacts; "
                f"{len(errors)} failed",
                provider=PROVIDER,
                operation=UPSERT_CONTACTS,
                status=response.status_code,
                detail=redact(json.dumps(errors)[:500]),
            )
        if not isinstance(results, list) or len(results) != expected:
            raise self._malformed(response, UPSERT_CONTACTS)
        contacts: list[Contact] = []
        for result in results:
            contact_id = result.get("id") if isinstance(result, dict) else None
            if not isinstance(contact_id, str):
                raise self._malformed(response, UPSERT_CONTACTS)
            properties = result.get("properties") or {}
            contacts.append(
                Contact(
                    contact_id,
                    created=bool(result.get("new")),
                    properties={str(k): str(v) for k, v in properties.items() if v is not None},
                )
            )
        # HubSpot's results are not promised in input order: put them back in it
        by_email = {c.properties.get("email", "").lower(): c for c in contacts}
        return [
            by_email.get(str(item["id"]).lower(), contact)
            for item, contact in zip(chunk, contacts, strict=True)
        ]

    @masks_pii("email")
    async def find_contact(self, email: str) -> Contact | None:
        """The contact with *email* (``POST .../contacts/search``, ``email EQ``), or ``None``.
        HubSpot's search index lags writes by a few seconds."""
        if not email or not email.strip():
            raise ConfigurationError("find_contact needs an email")
        body = {
            "filterGroups": [
                {"filters": [{"propertyName": "email", "operator": "EQ", "value": email.strip()}]}
            ],
            "properties": ["email", "firstname", "lastname"],
            "limit": 1,
        }
        response = await self._send(
            "POST", f"{CONTACTS}/search", body, FIND_CONTACT, replay_safe=True
        )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            raise self._malformed(response, FIND_CONTACT)
        if not results:
            return None
        contact_id, properties = results[0].get("id"), results[0].get("properties") or {}
        if not isinstance(contact_id, str):
            raise self._malformed(response, FIND_CONTACT)
        return Contact(contact_id, created=False, properties=dict(properties))

    def __repr__(self) -> str:
        return f"HubSpotConnector(base_url={self.base_url!r})"
