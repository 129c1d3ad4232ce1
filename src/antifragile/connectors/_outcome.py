"""The error of a call whose outcome is unknown, for providers without idempotency keys.

When a provider cannot deduplicate a repeated request (SendGrid, SMTP, Cal.com), a request that
reached it and then failed without a clear answer -- the connection dropped, the attempt timed
out, a 5xx came back -- may or may not have taken effect. Sending it again could duplicate the
effect, so the connectors never do: they raise :class:`OutcomeUnknownError` instead, carrying the
key the request was tagged with, for reconciliation (the provider's event webhook, activity log
or the recipient's Message-ID). It is not retryable: a durable job stops on it (dead-letter
queue) rather than sending again.
"""

from __future__ import annotations

from typing import Any

from antifragile.errors import ErrorCode, IntegrationError, PermanentError


class OutcomeUnknownError(PermanentError):
    """The request reached the provider, which may have acted; it was **not** sent again.

    ``reconcile_key`` is the key the request carried (SendGrid ``custom_args``, an SMTP
    ``Message-ID``, Cal.com booking ``metadata``): look it up before deciding to send again.
    """

    default_code = ErrorCode.UPSTREAM_ERROR

    def __init__(self, message: str, *, reconcile_key: str | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.reconcile_key = reconcile_key


def outcome_unknown(error: IntegrationError, reconcile_key: str) -> IntegrationError:
    """*error* as an :class:`OutcomeUnknownError` when it is ambiguous, else *error* itself.

    Ambiguous: a transient failure after the request may have been handled (``replay_safe``
    false). Rate limits, refusals before sending and permanent 4xx answers are not.
    """
    if error.replay_safe or isinstance(error, PermanentError) or not error.retryable:
        return error
    unknown = OutcomeUnknownError(
        f"outcome unknown, not sent again (reconcile with {reconcile_key!r}): {error.message}",
        provider=error.provider,
        operation=error.operation,
        status=error.status,
        request_id=error.request_id,
        replay_safe=False,
        attempts=error.attempts,
        detail=error.detail,
        reconcile_key=reconcile_key,
    )
    unknown.give_up_reason = error.give_up_reason
    return unknown
