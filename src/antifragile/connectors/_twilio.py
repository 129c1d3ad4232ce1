"""Twilio Programmable Messaging: SMS and WhatsApp messages, never sent twice blindly.

::

    async with TwilioConnector() as twilio:          # ANTIFRAGILE_TWILIO_* from the environment
        sent = await twilio.send_message("+15557654321", "Your code is 1234", from_="+15551234567")
        sent.sid                                      # "SM..."
        await twilio.send_message("whatsapp:+15557654321", "Hi", from_="whatsapp:+15551234567")

**Configuration.** ``ANTIFRAGILE_TWILIO_ACCOUNT_SID`` (``AC...``) and
``ANTIFRAGILE_TWILIO_AUTH_TOKEN`` are the HTTP Basic credentials and
``ANTIFRAGILE_TWILIO_BASE_URL`` the API's address (``https://api.twilio.com`` when unset; point
it at ``{sandbox.url}/twilio``). Arguments to :class:`TwilioConnector` override them. While the
auth token is rotated the variable holds ``"new,old"`` (the service checks webhook signatures
against each): the connector calls the API with the first, the current one.

**Limits.** A body is at most 1600 characters (checked before sending:
:class:`~antifragile.ConfigurationError`). Twilio limits REST *concurrency* per account without
publishing a figure.

**Errors.** Twilio's ``{code, message, more_info, status}`` body: its ``code`` is added to the
error's message. 429 (Twilio ``20429``: not processed, always safe to retry) is
:class:`~antifragile.RateLimitedError`; 400 :class:`~antifragile.InvalidRequestError`; 401/403
:class:`~antifragile.AuthenticationError`; 404 :class:`~antifragile.NotFoundError`.

**Default policy** (:func:`twilio_policy`): up to 5 attempts, exponential back-off from 1 s
(capped at 30 s, full jitter; a ``Retry-After`` is honoured when Twilio sends one), 10 s per
attempt, 60 s per call, a circuit breaker.

**Exactly once, by reconciliation.** ``Messages.json`` takes no idempotency key: a create sent
twice is two messages. The connector retries only what certainly did not send (a connection
never made, a 429). When the message *may* exist -- a dropped connection or a timeout after the
request was written, a 5xx, or a 201 without a ``sid`` -- it does not send blindly: it looks the
message up in the account's message log (``GET Messages.json?To=..&From=..``, newest first) for
one with the same ``To``, ``From`` (or Messaging Service) and ``Body``, created since the call
began (less *reconcile_window* seconds of clock skew). Found: that message is the answer
(``SentMessage(reconciled=True)``). Not found: the connector waits *reconcile_grace* seconds (a
create still in flight shows up) and looks again; still absent, the message was not created and
is sent again -- up to *reconcile_rounds* sends in all. When the lookup itself fails,
:class:`~antifragile.connectors.DeliveryUnknownError` (not retryable) is raised as before; when
the rounds run out with nothing created, the last (retryable) failure. The limit: Twilio cannot
tag a message, so an identical message (same numbers, same body) created by someone else inside
that window would be taken for ours -- keep bodies distinct (an order number, a code) when that
matters. With ``reconcile=False`` every ambiguous failure raises ``DeliveryUnknownError`` at
once.

**Correlation.** Twilio echoes nothing of a message but calls the ``StatusCallback`` URL it was
given, on every status change (``queued``, ``sent``, ``delivered``, ``undelivered``,
``failed``, ``read``), signed over that URL. So every message whose status callbacks can reach
the service carries ``StatusCallback=<public_url>/v1/webhooks/twilio?ref=<correlation>``:
*public_url* (``ANTIFRAGILE_PUBLIC_URL`` when not given, the service's external address) and
the correlation :func:`~antifragile.connectors.correlation_for` of the message's *reference*
(the caller's key: a job's idempotency key; a random one when not given). An explicit
*status_callback* gets ``ref=<correlation>`` added to its query instead. Without either, the
message carries no status callback.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from antifragile.connectors._base import HTTPConnector, base_url_from, masks_pii
from antifragile.connectors._correlation import correlation_for, status_callback_url, with_ref
from antifragile.connectors._messaging import (
    DeliveryUnknownError,
    messaging_policy,
    send_once,
    transport_policy,
)
from antifragile.connectors._outcome import twilio_error_answer
from antifragile.errors import (
    ConfigurationError,
    IntegrationError,
    UpstreamUnavailableError,
    redact,
)
from antifragile.http import ResilientClient
from antifragile.policies import SYSTEM_CLOCK, Clock, Exponential, Policy, Retry

BASE_URL_ENV = "ANTIFRAGILE_TWILIO_BASE_URL"
ACCOUNT_SID_ENV = "ANTIFRAGILE_TWILIO_ACCOUNT_SID"
AUTH_TOKEN_ENV = "ANTIFRAGILE_TWILIO_AUTH_TOKEN"
#: the service's external base URL, where Twilio's status callbacks are sent
PUBLIC_URL_ENV = "ANTIFRAGILE_PUBLIC_URL"
DEFAULT_BASE_URL = "https://api.twilio.com"
PROVIDER = "twilio"

#: the operation names in errors and events
SEND_MESSAGE = "send_message"
LIST_MESSAGES = "list_messages"

#: the longest message body Twilio accepts
MAX_BODY = 1600


def twilio_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`TwilioConnector` (see the module docs)."""
    return messaging_policy(PROVIDER, clock=clock, timeout=timeout)


@dataclass(frozen=True, slots=True)
class SentMessage:
    """Twilio created the message: its ``sid`` (``SM...``) and first ``status`` (``queued``).

    ``reconciled`` is true when the create's answer was lost and the message was found in the
    account's message log instead. ``reference`` is the caller's key for the message,
    ``correlation`` the token its status callbacks carry (``ref=`` in their URL).
    """

    sid: str
    status: str
    to: str
    reconciled: bool = False
    reference: str | None = None
    correlation: str | None = None


def twilio_error(detail: str | None) -> tuple[int | None, str | None]:
    """Twilio's error ``code`` and ``message`` from a body excerpt."""
    if not detail:
        return None, None
    try:
        body = json.loads(detail)
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    code, message = body.get("code"), body.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        message if isinstance(message, str) else None,
    )


def _mapped(error: IntegrationError) -> IntegrationError:
    code, message = twilio_error(error.detail)
    if code is None:
        return error
    text = redact(f"{error.message}: code {code}" + (f": {message}" if message else ""))
    error.message = text
    error.args = (text,)
    return error


def current_tokens(value: str | None) -> list[str]:
    """The auth tokens of a ``ANTIFRAGILE_TWILIO_AUTH_TOKEN`` value, the current one first.

    While a token is rotated the variable holds ``"new,old"``: webhook signatures are checked
    against each, and the API is called with the first.
    """
    return [part.strip() for part in (value or "").split(",") if part.strip()]


class TwilioConnector(HTTPConnector):
    """Twilio's Messages resource (see the module docs).

    *account_sid*, *auth_token* and *base_url* default to the ``ANTIFRAGILE_TWILIO_*``
    environment variables (of comma-separated tokens, the first: :func:`current_tokens`);
    *policy* to :func:`twilio_policy` on *clock* with *timeout* seconds per attempt. *client*
    is an ``httpx.AsyncClient`` to use (yours to close). *reconcile*, *reconcile_grace*,
    *reconcile_window* and *reconcile_rounds* tune the lookup after an ambiguous failure (see
    the module docs).
    """

    provider = PROVIDER

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        base_url: str | None = None,
        policy: Policy | None = None,
        timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        client: httpx.AsyncClient | None = None,
        reconcile: bool = True,
        reconcile_grace: float = 2.0,
        reconcile_window: float = 60.0,
        reconcile_rounds: int = 3,
        public_url: str | None = None,
    ) -> None:
        if reconcile_grace < 0 or reconcile_window < 0 or reconcile_rounds < 1:
            raise ConfigurationError(
                "reconcile_grace and reconcile_window must be >= 0 and reconcile_rounds >= 1"
            )
        sid = account_sid or os.environ.get(ACCOUNT_SID_ENV)
        tokens = current_tokens(auth_token or os.environ.get(AUTH_TOKEN_ENV))
        token = tokens[0] if tokens else None
        if not sid or not token:
            raise ConfigurationError(
                "Twilio needs an account SID and auth token: pass account_sid= and auth_token= "
                f"or set {ACCOUNT_SID_ENV} and {AUTH_TOKEN_ENV}"
            )
        self.account_sid = sid
        public = public_url or os.environ.get(PUBLIC_URL_ENV)
        self.public_url = public.rstrip("/") if public else None
        self.reconcile = reconcile
        self.reconcile_grace = float(reconcile_grace)
        self.reconcile_window = float(reconcile_window)
        self.reconcile_rounds = int(reconcile_rounds)
        self._clock = clock
        # lookups are the safety net of ambiguous sends: retried, and not refused by the
        # breaker that the failing sends may have opened
        self._lookup_policy = Policy(
            PROVIDER,
            timeout=timeout,
            total_timeout=30.0,
            retry=Retry(attempts=3, backoff=Exponential(0.5, cap=5.0)),
            budget=None,
            breaker=None,
            clock=clock,
        )
        self.base_url = base_url_from(base_url, BASE_URL_ENV, DEFAULT_BASE_URL)
        self.policy = policy if policy is not None else twilio_policy(clock=clock, timeout=timeout)
        basic = base64.b64encode(f"{sid}:{token}".encode()).decode()
        self._auth = {"authorization": f"Basic {basic}"}
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=transport_policy(PROVIDER, clock=clock, timeout=timeout),
            timeout=timeout,
            client=client,
            secrets=[*tokens, basic],
            not_processed=twilio_error_answer,
        )

    @masks_pii("to", "from_")
    async def send_message(
        self,
        to: str,
        body: str,
        from_: str | None = None,
        *,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        reference: str | None = None,
    ) -> SentMessage:
        """Send *body* to *to* (``+E.164`` for SMS, ``whatsapp:+E.164`` for WhatsApp) from
        *from_* (same channel) or through *messaging_service_sid*. *reference* is the caller's
        key for the message; its correlation rides in the ``StatusCallback`` URL (module docs).

        After an ambiguous failure the message is looked up in the account's message log
        before it is sent again (see the module docs). Raises
        :class:`~antifragile.connectors.DeliveryUnknownError` when the message may have been
        created and the lookup could not tell, else an :class:`~antifragile.IntegrationError`
        subclass when Twilio refuses it.
        """
        if not from_ and not messaging_service_sid:
            raise ConfigurationError("a Twilio message needs from_ or messaging_service_sid")
        if not body:
            raise ConfigurationError("a Twilio message needs a body")
        if len(body) > MAX_BODY:
            raise ConfigurationError(
                f"a Twilio message body is at most {MAX_BODY} characters (got {len(body)})"
            )
        form = {"To": to, "Body": body}
        if from_:
            form["From"] = from_
        if messaging_service_sid:
            form["MessagingServiceSid"] = messaging_service_sid
        reference = reference or str(uuid.uuid4())
        correlation = correlation_for(reference)
        if status_callback:
            form["StatusCallback"] = with_ref(status_callback, correlation)
        elif self.public_url:
            form["StatusCallback"] = status_callback_url(self.public_url, correlation)
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

        async def attempt() -> SentMessage:
            try:
                response = await self.client.post(
                    path, data=form, headers=self._auth, operation=SEND_MESSAGE
                )
            except IntegrationError as exc:
                raise _mapped(exc) from exc.__cause__
            return self._created(response, to)

        started = self._clock.time()
        rounds = self.reconcile_rounds if self.reconcile else 1
        for round_ in range(1, rounds + 1):
            try:
                sent = await send_once(
                    self.policy,
                    attempt,
                    provider=PROVIDER,
                    operation=SEND_MESSAGE,
                    to=to,
                    fields=dict(form),
                    reconcile_key=reference,
                )
                return replace(sent, reference=reference, correlation=correlation)
            except DeliveryUnknownError as unknown:
                if not self.reconcile:
                    raise
                try:
                    found = await self._reconcile(form, started)
                except IntegrationError as lookup:
                    unknown.give_up_reason = "reconcile_failed"
                    raise unknown from lookup
                if found is not None:
                    return replace(found, reference=reference, correlation=correlation)
                # not in the message log after the grace period: it was never created
                if round_ == rounds:
                    cause = unknown.__cause__
                    if isinstance(cause, IntegrationError) and cause.retryable:
                        raise cause from None  # nothing was sent: a later try may send
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    @masks_pii("to", "from_")
    async def list_messages(
        self,
        *,
        to: str | None = None,
        from_: str | None = None,
        date_sent_after: datetime | None = None,
        page_size: int = 50,
    ) -> list[dict[str, Any]]:
        """The account's messages, newest first (one page of *page_size*): ``GET
        Messages.json`` filtered by ``To``, ``From`` and ``DateSent>`` (the UTC day of
        *date_sent_after*). Safe to replay: retried (3 attempts), without the sends' breaker."""
        params: dict[str, str] = {"PageSize": str(page_size)}
        if to:
            params["To"] = to
        if from_:
            params["From"] = from_
        if date_sent_after is not None:
            params["DateSent>"] = date_sent_after.astimezone(UTC).date().isoformat()
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

        async def attempt() -> list[dict[str, Any]]:
            try:
                response = await self.client.get(
                    path, params=params, headers=self._auth, operation=LIST_MESSAGES
                )
            except IntegrationError as exc:
                raise _mapped(exc) from exc.__cause__
            try:
                answer = response.json()
            except ValueError:
                answer = None
            messages = answer.get("messages") if isinstance(answer, dict) else None
            if not isinstance(messages, list):
                raise UpstreamUnavailableError(
                    "Twilio answered without a messages list (malformed body)",
                    provider=PROVIDER,
                    operation=LIST_MESSAGES,
                    status=response.status_code,
                    replay_safe=True,
                    detail=response.text[:200],
                )
            return [m for m in messages if isinstance(m, dict)]

        return await self._lookup_policy.arun(attempt, operation=LIST_MESSAGES, replay_safe=True)

    async def find_sent(
        self, to: str, body: str, *, from_: str | None = None, since: float
    ) -> SentMessage | None:
        """The message to *to* with *body* (from *from_*) created at or after *since* (epoch
        seconds, less *reconcile_window* of clock skew), from the message log; ``None`` when
        absent. How a send whose outcome stayed unknown is looked up later."""
        form = {"To": to, "Body": body}
        if from_:
            form["From"] = from_
        started = datetime.fromtimestamp(since - self.reconcile_window, UTC)
        return _match(await self.list_messages(to=to, from_=from_, page_size=50), form, started)

    async def _reconcile(self, form: dict[str, str], started: float) -> SentMessage | None:
        """The message of *form* created since *started*, from the message log, or ``None``
        when it is still absent after the grace period."""
        since = datetime.fromtimestamp(started - self.reconcile_window, UTC)
        for look in range(2):
            if look:
                if self.reconcile_grace <= 0:
                    break
                await self._clock.asleep(self.reconcile_grace)
            found = _match(
                await self.list_messages(to=form["To"], from_=form.get("From"), page_size=50),
                form,
                since,
            )
            if found is not None:
                return found
        return None

    def _created(self, response: httpx.Response, to: str) -> SentMessage:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        sid = answer.get("sid") if isinstance(answer, dict) else None
        if not isinstance(sid, str) or not sid:
            raise DeliveryUnknownError(
                "Twilio answered without a message sid (malformed body): the message may "
                "have been created; not sent again",
                provider=PROVIDER,
                operation=SEND_MESSAGE,
                status=response.status_code,
                request_id=response.request.headers.get("x-request-id"),
                detail=response.text[:500],
                to=to,
            )
        status = answer.get("status") if isinstance(answer, dict) else None
        return SentMessage(sid, status if isinstance(status, str) else "queued", to)

    def __repr__(self) -> str:
        return f"TwilioConnector(base_url={self.base_url!r}, account_sid={self.account_sid!r})"


def _created_at(message: dict[str, Any]) -> datetime | None:
    value = message.get("date_created")
    if not isinstance(value, str):
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _match(
    messages: list[dict[str, Any]], form: dict[str, str], since: datetime
) -> SentMessage | None:
    """The oldest message of the log that is *form*'s (same To, From or Messaging Service,
    Body) and was created at or after *since*."""
    sender = form.get("From")
    service = form.get("MessagingServiceSid")
    candidates: list[tuple[datetime, SentMessage]] = []
    for message in messages:
        created = _created_at(message)
        sid = message.get("sid")
        if created is None or created < since - timedelta(seconds=1):
            continue
        if not isinstance(sid, str) or message.get("to") != form["To"]:
            continue
        if message.get("body") != form["Body"]:
            continue
        if sender and message.get("from") != sender:
            continue
        if not sender and message.get("messaging_service_sid") != service:
            continue
        status = message.get("status")
        candidates.append(
            (
                created,
                SentMessage(
                    sid,
                    status if isinstance(status, str) else "queued",
                    form["To"],
                    reconciled=True,
                ),
            )
        )
    if not candidates:
        return None
    return min(candidates, key=lambda pair: pair[0])[1]
