"""Calendly API v2: event types, single-use scheduling links for one customer, invitees.

::

    async with CalendlyConnector() as calendly:        # ANTIFRAGILE_CALENDLY_* from the environment
        types = await calendly.event_types()           # of the token's user
        link = await calendly.create_scheduling_link(
            event_type=types[0].uri, idempotency_key=f"book/{lead_id}", name="Ada"
        )
        link.booking_url    # https://calendly.com/d/...?utm_content=af_...&name=Ada: send it

**Configuration.** ``ANTIFRAGILE_CALENDLY_TOKEN`` holds the personal access token (or an OAuth
access token) and ``ANTIFRAGILE_CALENDLY_BASE_URL`` the API's address
(``https://api.calendly.com`` when unset; ``{sandbox.url}/calendly`` for the sandbox).
Resources are named by their URI (``https://api.calendly.com/event_types/<uuid>``).

**Default policy** (:func:`calendly_policy`): Calendly allows 500 requests per user per minute on
paid plans (50 on the free plan; webhooks need a paid plan), so a token bucket of 5 per second
(burst 20) stays well under it for the whole account; a 429's ``Retry-After`` (or
``X-RateLimit-Reset``) pauses it. Up to 5 attempts with exponential back-off from 0.5 s (capped at
10 s, full jitter); 10 s per attempt, 60 s per call; a circuit breaker for the provider.

**Errors**: 401/403 :class:`~antifragile.AuthenticationError`, 400/422
:class:`~antifragile.InvalidRequestError`, 404 :class:`~antifragile.NotFoundError`, 429
:class:`~antifragile.RateLimitedError`; Calendly's ``title`` and ``message`` are added to the
message.

**Exactly once, by design.** Calendly takes no idempotency key, but a single-use scheduling link
(``max_event_count: 1``) does nothing until a customer books through it, and a customer can only
book through the link the assistant sent. A link created by a request whose answer was lost is
never sent to anyone: it expires unused. So creating a link is safe to repeat, and the connector
retries it like a read (``replay_safe``) -- every fault ends in one link returned, at worst with an
orphan beside it. The customer-facing effect (the message carrying the link) is the messaging
connector's, with its own exactly-once strategy; the booking itself is made by the customer,
once, and reported by the ``invitee.created`` webhook.

**Correlation.** The booking URL returned carries :func:`~antifragile.connectors.correlation_for`
of the caller's key as ``utm_content`` (Calendly keeps a booking page's UTM parameters and
returns them as the invitee's ``tracking``, in ``invitee.created`` too): the webhook names the
link, and so the conversation, it was booked through. ``name`` and ``email`` prefill the page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from antifragile.connectors._base import HTTPConnector, base_url_from, masks_pii, required_from
from antifragile.connectors._correlation import correlation_for
from antifragile.connectors._resend import idempotency_key_for
from antifragile.connectors._scheduling import described, json_object
from antifragile.errors import (
    ConfigurationError,
    IntegrationError,
    UpstreamUnavailableError,
)
from antifragile.http import ResilientClient
from antifragile.policies import SYSTEM_CLOCK, Clock, Exponential, Policy, Retry, TokenBucket

BASE_URL_ENV = "ANTIFRAGILE_CALENDLY_BASE_URL"
TOKEN_ENV = "ANTIFRAGILE_CALENDLY_TOKEN"
DEFAULT_BASE_URL = "https://api.calendly.com"
PROVIDER = "calendly"
CREATE_LINK = "create_scheduling_link"
#: the booking page's query parameter that carries the correlation (returned in ``tracking``)
TRACKING_ARG = "utm_content"


def calendly_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`CalendlyConnector` (see the module docs)."""
    return Policy(
        PROVIDER,
        timeout=timeout,
        total_timeout=60.0,
        retry=Retry(attempts=5, backoff=Exponential(0.5, cap=10.0)),
        rate=TokenBucket(5.0, burst=20.0, max_wait=30.0),
        clock=clock,
    )


def calendly_error_answer(response: httpx.Response) -> bool:
    """Calendly v2's own error body: ``{"title", "message", "details"?}`` -- a 5xx in it says
    Calendly failed the request as a whole."""
    body = json_object(response)
    return (
        body is not None
        and isinstance(body.get("title"), str)
        and isinstance(body.get("message"), str)
    )


@dataclass(frozen=True, slots=True)
class CalendlyEventType:
    """An event type: its ``uri``, ``name``, ``slug``, ``duration`` (minutes), whether it is
    ``active``, its public ``scheduling_url`` and Calendly's whole resource."""

    uri: str
    name: str
    slug: str
    duration: int
    active: bool
    scheduling_url: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SchedulingLink:
    """A single-use scheduling link: the ``booking_url`` to send (correlation and prefill in its
    query), the link as Calendly returned it (``raw_url``), its ``owner`` event type, the key
    and correlation it was made for."""

    booking_url: str
    raw_url: str
    owner: str
    idempotency_key: str
    correlation: str


#: how many times a link is asked for when Calendly's answer cannot be read
_LINK_ROUNDS = 3


def _link_resource(response: httpx.Response) -> dict[str, Any] | None:
    answer = json_object(response)
    resource = answer.get("resource") if answer is not None else None
    if not isinstance(resource, dict) or not isinstance(resource.get("booking_url"), str):
        return None
    return resource if resource["booking_url"] else None


def _described(error: IntegrationError) -> IntegrationError:
    return described(error, ("title", "message"))


def with_query(url: str, params: Mapping[str, str]) -> str:
    """*url* with *params* added to its query."""
    if not params:
        return url
    separator = "&" if urlsplit(url).query else "?"
    return f"{url}{separator}{urlencode(dict(params))}"


class CalendlyConnector(HTTPConnector):
    """Calendly's API v2 behind a :class:`~antifragile.ResilientClient` (see the module docs).

    *token* and *base_url* default to ``ANTIFRAGILE_CALENDLY_TOKEN`` and
    ``ANTIFRAGILE_CALENDLY_BASE_URL``; *policy* to :func:`calendly_policy` on *clock* with
    *timeout* seconds per attempt. *client* is an ``httpx.AsyncClient`` to use (yours to close).
    """

    provider = PROVIDER

    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str | None = None,
        policy: Policy | None = None,
        timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        key = required_from(token, TOKEN_ENV, needs="Calendly needs an access token", arg="token")
        self.base_url = base_url_from(base_url, BASE_URL_ENV, DEFAULT_BASE_URL)
        self.policy = (
            policy if policy is not None else calendly_policy(clock=clock, timeout=timeout)
        )
        self._headers = {"authorization": f"Bearer {key}"}
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=self.policy,
            timeout=timeout,
            client=client,
            secrets=[key],
            not_processed=calendly_error_answer,
        )

    async def _get(self, path: str, operation: str, **params: str) -> Any:
        try:
            response = await self.client.get(
                path, params=params or None, headers=self._headers, operation=operation
            )
        except IntegrationError as exc:
            raise _described(exc) from exc
        try:
            return response.json()
        except ValueError:
            raise UpstreamUnavailableError(
                f"Calendly answered {response.status_code} with a body that is not JSON",
                provider=PROVIDER,
                operation=operation,
                status=response.status_code,
            ) from None

    async def current_user(self) -> Mapping[str, Any]:
        """The token's user (``GET /users/me``): ``uri``, ``current_organization``, ..."""
        body = await self._get("/users/me", "current_user")
        resource = body.get("resource") if isinstance(body, dict) else None
        if not isinstance(resource, dict):
            raise UpstreamUnavailableError(
                "Calendly's /users/me has no resource", provider=PROVIDER
            )
        return resource

    async def event_types(self, *, user: str | None = None) -> list[CalendlyEventType]:
        """The event types of *user* (a user URI; the token's user when omitted), first page
        (``GET /event_types?user=``)."""
        if user is None:
            user = str((await self.current_user()).get("uri", ""))
        body = await self._get("/event_types", "event_types", user=user)
        found: list[CalendlyEventType] = []
        for item in body.get("collection", []) if isinstance(body, dict) else []:
            if not isinstance(item, dict) or not isinstance(item.get("uri"), str):
                continue
            found.append(
                CalendlyEventType(
                    uri=item["uri"],
                    name=str(item.get("name", "")),
                    slug=str(item.get("slug", "")),
                    duration=int(item.get("duration") or 0),
                    active=bool(item.get("active", True)),
                    scheduling_url=str(item.get("scheduling_url", "")),
                    data=item,
                )
            )
        return found

    @masks_pii("name", "email")
    async def create_scheduling_link(
        self,
        *,
        event_type: str,
        idempotency_key: str,
        name: str | None = None,
        email: str | None = None,
    ) -> SchedulingLink:
        """A single-use link to book *event_type* (its URI) -- ``POST /scheduling_links``
        with ``max_event_count: 1`` -- made for *idempotency_key* (whose correlation the
        booking URL carries) and prefilled with *name* and *email*. Safe to repeat (see the
        module docs): retried after any failure the policy retries."""
        if not event_type:
            raise ConfigurationError("a scheduling link needs an event type URI")
        key = idempotency_key_for("scheduling-link", idempotency_key)
        body = {"max_event_count": 1, "owner": event_type, "owner_type": "EventType"}
        resource: dict[str, Any] | None = None
        for _ in range(_LINK_ROUNDS):  # an unreadable answer: ask again (safe, see above)
            try:
                response = await self.client.post(
                    "/scheduling_links",
                    json=body,
                    headers=self._headers,
                    operation=CREATE_LINK,
                    replay_safe=True,  # an unsent single-use link books nothing
                )
            except IntegrationError as exc:
                raise _described(exc) from exc
            resource = _link_resource(response)
            if resource is not None:
                break
        if resource is None:
            raise UpstreamUnavailableError(
                f"Calendly answered {response.status_code} without a booking_url",
                provider=PROVIDER,
                operation=CREATE_LINK,
                status=response.status_code,
                detail=response.text[:500],
            )
        url = str(resource["booking_url"])
        correlation = correlation_for(key)
        params = {TRACKING_ARG: correlation}
        if name:
            params["name"] = name
        if email:
            params["email"] = email
        return SchedulingLink(
            booking_url=with_query(url, params),
            raw_url=url,
            owner=str(resource.get("owner", event_type)),
            idempotency_key=key,
            correlation=correlation,
        )

    async def invitees(self, event_uuid: str) -> list[Mapping[str, Any]]:
        """The invitees of the scheduled event *event_uuid* (``GET
        /scheduled_events/{uuid}/invitees``), first page."""
        body = await self._get(f"/scheduled_events/{event_uuid}/invitees", "invitees")
        items = body.get("collection", []) if isinstance(body, dict) else []
        return [i for i in items if isinstance(i, dict)]

    @masks_pii("invitee_email")
    async def scheduled_events(
        self, *, user: str, invitee_email: str | None = None
    ) -> list[Mapping[str, Any]]:
        """The scheduled events of *user* (a user URI), of *invitee_email* when given (``GET
        /scheduled_events?user=&invitee_email=``), first page."""
        params = {"user": user}
        if invitee_email:
            params["invitee_email"] = invitee_email
        body = await self._get("/scheduled_events", "scheduled_events", **params)
        items = body.get("collection", []) if isinstance(body, dict) else []
        return [i for i in items if isinstance(i, dict)]

    def __repr__(self) -> str:
        return f"CalendlyConnector(base_url={self.base_url!r})"
