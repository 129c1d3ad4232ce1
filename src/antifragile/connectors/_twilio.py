"""Twilio Programmable Messaging: SMS and WhatsApp messages, never sent twice blindly.

::

    async with TwilioConnector() as twilio:          # ANTIFRAGILE_TWILIO_* from the environment
        sent = await twilio.send_message("+15557654321", "Your code is 1234", from_="+15551234567")
        sent.sid                                      # "SM..."
        await twilio.send_message("whatsapp:+15557654321", "Hi", from_="whatsapp:+15551234567")

**Configuration.** ``ANTIFRAGILE_TWILIO_ACCOUNT_SID`` (``AC...``) and
``ANTIFRAGILE_TWILIO_AUTH_TOKEN`` are the HTTP Basic credentials and
``ANTIFRAGILE_TWILIO_BASE_URL`` the API's address (``https://api.twilio.com`` when unset; point
it at ``{sandbox.url}/twilio``). Arguments to :class:`TwilioConnector` override them.

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

**Exactly once -- or flagged.** ``Messages.json`` takes no idempotency key: a create sent twice
is two messages. The connector retries only what certainly did not send (a connection never
made, a 429) and raises :class:`~antifragile.connectors.DeliveryUnknownError` (not retryable)
when the message may exist: a dropped connection or a timeout after the request was written, a
5xx, or a 201 without a ``sid``. Reconcile it (the status callback, or listing the account's
messages to that number) before sending again.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass

import httpx

from antifragile.connectors._base import HTTPConnector, base_url_from
from antifragile.connectors._messaging import (
    DeliveryUnknownError,
    messaging_policy,
    send_once,
    transport_policy,
)
from antifragile.errors import ConfigurationError, IntegrationError, redact
from antifragile.http import ResilientClient
from antifragile.policies import SYSTEM_CLOCK, Clock, Policy

BASE_URL_ENV = "ANTIFRAGILE_TWILIO_BASE_URL"
ACCOUNT_SID_ENV = "ANTIFRAGILE_TWILIO_ACCOUNT_SID"
AUTH_TOKEN_ENV = "ANTIFRAGILE_TWILIO_AUTH_TOKEN"
DEFAULT_BASE_URL = "https://api.twilio.com"
PROVIDER = "twilio"

#: the operation name in errors and events
SEND_MESSAGE = "send_message"

#: the longest message body Twilio accepts
MAX_BODY = 1600


def twilio_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`TwilioConnector` (see the module docs)."""
    return messaging_policy(PROVIDER, clock=clock, timeout=timeout)


@dataclass(frozen=True, slots=True)
class SentMessage:
    """Twilio created the message: its ``sid`` (``SM...``) and first ``status`` (``queued``)."""

    sid: str
    status: str
    to: str


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


class TwilioConnector(HTTPConnector):
    """Twilio's Messages resource (see the module docs).

    *account_sid*, *auth_token* and *base_url* default to the ``ANTIFRAGILE_TWILIO_*``
    environment variables; *policy* to :func:`twilio_policy` on *clock* with *timeout* seconds
    per attempt. *client* is an ``httpx.AsyncClient`` to use (yours to close).
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
    ) -> None:
        sid = account_sid or os.environ.get(ACCOUNT_SID_ENV)
        token = auth_token or os.environ.get(AUTH_TOKEN_ENV)
        if not sid or not token:
            raise ConfigurationError(
                "Twilio needs an account SID and auth token: pass account_sid= and auth_token= "
                f"or set {ACCOUNT_SID_ENV} and {AUTH_TOKEN_ENV}"
            )
        self.account_sid = sid
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
            secrets=[token, basic],
        )

    async def send_message(
        self,
        to: str,
        body: str,
        from_: str | None = None,
        *,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
    ) -> SentMessage:
        """Send *body* to *to* (``+E.164`` for SMS, ``whatsapp:+E.164`` for WhatsApp) from
        *from_* (same channel) or through *messaging_service_sid*.

        Raises :class:`~antifragile.connectors.DeliveryUnknownError` when the message may have
        been created (never sent again), else an :class:`~antifragile.IntegrationError`
        subclass when Twilio refuses it (see the module docs).
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
        if status_callback:
            form["StatusCallback"] = status_callback
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

        async def attempt() -> SentMessage:
            try:
                response = await self.client.post(
                    path, data=form, headers=self._auth, operation=SEND_MESSAGE
                )
            except IntegrationError as exc:
                raise _mapped(exc) from exc.__cause__
            return self._created(response, to)

        return await send_once(
            self.policy,
            attempt,
            provider=PROVIDER,
            operation=SEND_MESSAGE,
            to=to,
            fields=dict(form),
        )

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
