"""Slack incoming webhooks: post a message, never twice by accident.

::

    async with SlackConnector() as slack:            # ANTIFRAGILE_SLACK_WEBHOOK_URL
        try:
            await slack.post_message("Order 1 is in.", reference="order/1")
        except OutcomeUnknownError as unknown:
            ...  # it may be in the channel: look before posting again (unknown.reconcile_key)

**Configuration.** ``ANTIFRAGILE_SLACK_WEBHOOK_URL`` holds the webhook's URL
(``https://hooks.slack.com/services/T.../B.../...``; point it at
``{sandbox.url}/slack/services/T.../B.../...`` or any stand-in server); the ``webhook_url``
argument overrides it. **The URL is the secret**: whoever has it can post. The connector keeps
its path out of every error message and ``repr`` (they name the host only), and redacts it from
the request lines the ``httpx`` logger writes at INFO level while the connector is open.

**Default policy** (:func:`slack_policy`): Slack accepts about one message per second per
webhook, with short bursts, so a token bucket of 1 per second (burst 1) paces posts; a 429's
``Retry-After`` (seconds) pauses it and is honoured by the retry. Up to 4 attempts with
exponential back-off from 1 s (capped at 30 s, full jitter) -- for what is safe to send again
only, see below; 10 s per attempt, 60 s per call; a circuit breaker for the provider.

**Errors.** Slack answers errors in plain text (``invalid_payload``, ``no_text``,
``invalid_token``, ``channel_not_found``...); the string is added to the message of the
antifragile error: 400 :class:`~antifragile.InvalidRequestError`, 403
:class:`~antifragile.AuthenticationError`, 404/410 :class:`~antifragile.NotFoundError` (all
permanent: do not retry), 429 :class:`~antifragile.RateLimitedError`.

**Success is 200 with the body ``ok``** and nothing else. A 200 whose body is one of Slack's
error strings is that refusal (the post was not made: the error class above for the string's
usual status). Any other 200 body -- empty, JSON, an HTML page from something in between -- does
not say whether the post was made: it is an ambiguous failure (below), never taken for success.

**At most once, by default.** Slack has no idempotency key and no way to look a webhook post
up: a post sent again after its answer was lost shows twice. So the connector only sends a post
again when Slack certainly did not act on it -- a 429 (a refusal), or a failure before the
request left this process (connection refused). When the request reached Slack and no clear
answer came back -- the connection dropped, the attempt timed out, a 5xx -- the post may or may
not be in the channel: the connector does **not** send it again and raises
:class:`~antifragile.connectors.OutcomeUnknownError` (not retryable, so a durable job stops on
it and lands in the dead-letter queue for review) with ``reconcile_key`` set to the caller's
``reference``. The caller decides: check the channel, then post again or not. Posts are never
lost silently and never duplicated by the connector; the price is that a few need a human (or
a reconciliation step) to decide.

With ``retry_ambiguous=True`` the connector trades this for *at least once*: ambiguous failures
are retried like any other, and a post whose answer was lost appears twice. Use it for alerts
where a duplicate is harmless and a missing message is not.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from antifragile.connectors._base import HTTPConnector, required_from
from antifragile.connectors._outcome import outcome_unknown, slack_error_answer
from antifragile.errors import (
    AuthenticationError,
    ConfigurationError,
    IntegrationError,
    InvalidRequestError,
    NotFoundError,
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

WEBHOOK_URL_ENV = "ANTIFRAGILE_SLACK_WEBHOOK_URL"
PROVIDER = "slack"

#: the operation name in errors and events (never the URL: it is the secret)
POST_MESSAGE = "post_message"

#: Slack's success answer: HTTP 200, ``text/plain`` body ``ok``
_OK = "ok"

#: Slack's webhook error strings (refusals: nothing was posted) -> the error for their status
_REFUSALS: dict[str, type[IntegrationError]] = {
    **dict.fromkeys(
        ("invalid_payload", "no_text", "too_many_attachments", "user_not_found"),
        InvalidRequestError,
    ),
    **dict.fromkeys(
        ("action_prohibited", "invalid_token", "posting_to_general_channel_denied"),
        AuthenticationError,
    ),
    **dict.fromkeys(
        (
            "channel_not_found",
            "channel_is_archived",
            "no_service",
            "no_service_id",
            "no_team",
            "team_disabled",
            "no_active_hooks",
        ),
        NotFoundError,
    ),
}


class _HideHooks(logging.Filter):
    """Redacts webhook secrets from the ``httpx`` logger's records (it logs request URLs)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[int, tuple[str, ...]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            hidden = redact(message, secrets=[s for v in self.secrets.values() for s in v])
            if hidden != message:
                record.msg, record.args = hidden, ()
        return True


_HIDE_HOOKS = _HideHooks()
logging.getLogger("httpx").addFilter(_HIDE_HOOKS)


def slack_policy(*, clock: Clock = SYSTEM_CLOCK, timeout: float = 10.0) -> Policy:
    """The default policy of :class:`SlackConnector` (see the module docs)."""
    return Policy(
        PROVIDER,
        timeout=timeout,
        total_timeout=60.0,
        retry=Retry(attempts=4, backoff=Exponential(1.0, cap=30.0)),
        rate=TokenBucket(1.0, burst=1.0, max_wait=30.0),
        clock=clock,
    )


def _split(url: str) -> tuple[str, str]:
    """``(scheme://host[:port], /path)`` of a webhook URL; the URL itself never in errors."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or len(parts.path) <= 1:
        raise ConfigurationError(
            f"{WEBHOOK_URL_ENV} must be an http(s) URL with the webhook's path "
            "(https://hooks.slack.com/services/T.../B.../...)"
        )
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{parts.scheme}://{parts.netloc}", path


class SlackConnector(HTTPConnector):
    """A Slack incoming webhook behind a :class:`~antifragile.ResilientClient`.

    *webhook_url* defaults to ``ANTIFRAGILE_SLACK_WEBHOOK_URL``; *policy* to
    :func:`slack_policy` on *clock* with *timeout* seconds per attempt. With
    *retry_ambiguous* a post whose answer was lost is sent again (at least once, duplicates
    possible) instead of raising :class:`~antifragile.connectors.OutcomeUnknownError`.
    *client* is an ``httpx.AsyncClient`` to use (yours to close).
    """

    provider = PROVIDER

    def __init__(
        self,
        webhook_url: str | None = None,
        *,
        policy: Policy | None = None,
        timeout: float = 10.0,
        clock: Clock = SYSTEM_CLOCK,
        retry_ambiguous: bool = False,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        url = required_from(
            webhook_url, WEBHOOK_URL_ENV, needs="Slack needs a webhook URL", arg="webhook_url"
        )
        self.base_url, self._path = _split(url)
        self.retry_ambiguous = retry_ambiguous
        self.policy = policy if policy is not None else slack_policy(clock=clock, timeout=timeout)
        segments = [s for s in self._path.split("?")[0].split("/") if s]
        # the whole URL, its path and its last segment (the token part) are never shown
        self._secrets = [url.strip(), self._path, *segments[-1:]]
        self.client = ResilientClient(
            PROVIDER,
            base_url=self.base_url,
            policy=self.policy,
            timeout=timeout,
            client=client,
            secrets=self._secrets,
            not_processed=slack_error_answer,
        )
        _HIDE_HOOKS.secrets[id(self)] = tuple(self._secrets)

    async def aclose(self) -> None:
        _HIDE_HOOKS.secrets.pop(id(self), None)
        await self.client.aclose()

    def _mapped(self, error: IntegrationError, reference: str) -> IntegrationError:
        """Slack's error string added to *error*; an ambiguous failure made OutcomeUnknown."""
        text = (error.detail or "").strip()
        if text and len(text) <= 64 and text.replace("_", "").isalnum():
            message = redact(f"{error.message}: {text}", secrets=self._secrets)
            error.message = message
            error.args = (message,)
        if self.retry_ambiguous:
            return error
        return outcome_unknown(error, reference)

    async def post_message(
        self,
        text: str,
        *,
        reference: str | None = None,
        blocks: Sequence[Mapping[str, Any]] | None = None,
        thread_ts: str | None = None,
        mrkdwn: bool | None = None,
        unfurl_links: bool | None = None,
    ) -> str:
        """Post *text* (``POST`` to the webhook); returns the *reference* of the post.

        *reference* is the caller's name for this post (an order number, an alert id); it
        becomes the ``reconcile_key`` of an :class:`~antifragile.connectors.OutcomeUnknownError`
        when Slack may or may not have posted it (a new uuid when not given). Slack answers
        ``ok`` and nothing else: there is no message id to return.
        """
        if not text and not blocks:
            raise ConfigurationError("a Slack message needs text or blocks")
        reference = reference or str(uuid.uuid4())
        body: dict[str, Any] = {"text": text}
        optional: dict[str, Any] = {
            "blocks": None if blocks is None else [dict(b) for b in blocks],
            "thread_ts": thread_ts,
            "mrkdwn": mrkdwn,
            "unfurl_links": unfurl_links,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        try:
            response = await self.client.post(
                self._path,
                json=body,
                operation=POST_MESSAGE,
                replay_safe=True if self.retry_ambiguous else None,
            )
        except IntegrationError as exc:
            mapped = self._mapped(exc, reference)
            if mapped is exc:
                raise
            raise mapped from exc
        answer = response.text.strip()
        if answer != _OK:
            raise self._not_ok(response, answer, reference)
        return reference

    def _not_ok(self, response: httpx.Response, answer: str, reference: str) -> IntegrationError:
        """The error a 2xx answer other than ``ok`` stands for (module docs)."""
        request_id = response.request.headers.get(self.client.request_id_header)
        refusal = _REFUSALS.get(answer)
        if refusal is not None:
            return refusal(
                f"Slack refused the post: {answer}",
                provider=PROVIDER,
                operation=POST_MESSAGE,
                status=response.status_code,
                request_id=request_id,
                detail=answer,
            )
        error = UpstreamUnavailableError(
            f"Slack answered {response.status_code} without 'ok': the post may or may not "
            "have been made",
            provider=PROVIDER,
            operation=POST_MESSAGE,
            status=response.status_code,
            request_id=request_id,
            replay_safe=False,
            detail=redact(answer[:500], secrets=self._secrets) or "(empty body)",
        )
        # at least once (retry_ambiguous): a transient error a durable job retries;
        # otherwise an OutcomeUnknownError carrying the reference
        return self._mapped(error, reference)

    def __repr__(self) -> str:
        return f"SlackConnector(host={self.base_url!r})"
