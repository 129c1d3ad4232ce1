"""What the messaging connectors (WhatsApp Cloud, Twilio) share: sending without idempotency.

Neither WhatsApp Cloud's ``/messages`` nor Twilio's ``Messages.json`` takes an idempotency key,
so a request sent twice is a message sent twice. The connectors therefore retry only failures
that certainly did *not* send the message -- the connection was never made, or the provider
refused the request without acting on it (throttling) -- and turn every failure after which the
message *may* have gone out (a dropped connection or a timeout after the request was written,
a 5xx, a success answer that does not parse) into :class:`DeliveryUnknownError`. That error is
an :class:`~antifragile.connectors.OutcomeUnknownError`, not retryable: a durable job stops on
it (``dead``) instead of sending again, and the caller reconciles (status webhooks, the
provider's message log) or decides to resend knowingly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from antifragile.connectors._outcome import OutcomeUnknownError
from antifragile.errors import (
    IntegrationError,
    RejectedError,
    TransientError,
)
from antifragile.observability._redaction import mask_phone, mask_values
from antifragile.policies import SYSTEM_CLOCK, Clock, Exponential, Policy, Retry

T = TypeVar("T")


class DeliveryUnknownError(OutcomeUnknownError):
    """The message may or may not have been sent; sending again could duplicate it.

    An :class:`~antifragile.connectors.OutcomeUnknownError`: not retryable (a durable job
    stops on it). ``to`` is the recipient and ``fields`` what was asked, so that the send can
    be reconciled or reviewed (attributes only: the message names the recipient masked,
    ``+4477•••••23``); ``__cause__`` is the failure that made the outcome unknown.
    """

    def __init__(
        self,
        message: str,
        *,
        to: str | None = None,
        fields: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("replay_safe", False)
        super().__init__(message, **kwargs)
        self.to = to
        self.fields = dict(fields or {})


def transport_policy(provider: str, *, clock: Clock, timeout: float) -> Policy:
    """The policy of a connector's inner HTTP client: one attempt, a timeout, nothing else
    (retries, pacing and the breaker are the connector's outer policy)."""
    return Policy(
        provider,
        timeout=timeout,
        total_timeout=None,
        retry=None,
        budget=None,
        breaker=None,
        clock=clock,
    )


def messaging_policy(
    provider: str,
    *,
    clock: Clock = SYSTEM_CLOCK,
    timeout: float = 10.0,
    attempts: int = 5,
) -> Policy:
    """A connector's outer policy: up to *attempts* tries with exponential back-off from 1 s
    (capped at 30 s, full jitter), 60 s per call, a circuit breaker. The connector runs it with
    ``replay_safe=False``: only failures that did not send are retried."""
    return Policy(
        provider,
        timeout=timeout,
        total_timeout=60.0,
        retry=Retry(attempts=attempts, backoff=Exponential(1.0, cap=30.0)),
        clock=clock,
    )


def is_ambiguous(error: IntegrationError) -> bool:
    """Whether the message may have been sent although *error* was raised."""
    if isinstance(error, RejectedError) or error.replay_safe:
        return False
    return isinstance(error, TransientError) or (error.status or 0) >= 500


async def send_once(
    policy: Policy,
    attempt: Callable[[], Awaitable[T]],
    *,
    provider: str,
    operation: str,
    to: str,
    fields: dict[str, Any],
    reconcile_key: str | None = None,
) -> T:
    """Run *attempt* through *policy* without blind resends (see the module docs); an
    ambiguous failure raises :class:`DeliveryUnknownError` with *reconcile_key*."""
    try:
        return await policy.arun(attempt, operation=operation, replay_safe=False)
    except IntegrationError as exc:
        if not is_ambiguous(exc):
            raise
        unknown = DeliveryUnknownError(
            f"the message to {mask_phone(to)} may have been sent "
            f"({type(exc).__name__}: {mask_values(exc.message, [to])}); "
            "not sent again",
            provider=provider,
            operation=operation,
            status=exc.status,
            request_id=exc.request_id,
            attempts=exc.attempts,
            detail=None if exc.detail is None else mask_values(exc.detail, [to]),
            to=to,
            fields=fields,
            reconcile_key=reconcile_key,
        )
        unknown.give_up_reason = "unsafe_to_replay"
        raise unknown from exc
