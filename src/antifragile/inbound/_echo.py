"""Waiting for the echo: what a send whose outcome is unknown does until the provider says.

A send that reached the provider and lost its answer (a reset, a timeout, a bodiless gateway
502/504) may or may not have acted. The provider's status webhooks echo the correlation the send
carried (:func:`~antifragile.connectors.correlation_for`), so instead of guessing, the job
**waits for the echo** -- durably, without holding a worker: it is deferred (no attempt counted)
and looks at its record again each time it runs, with the record saying
``awaiting echo of <correlation> since T``. Statuses land on the record as they arrive
(:class:`~antifragile.inbound.DeliveryStatuses`, forward only, compare-and-set), and the job then
decides on its next run:

* **confirmed** (:data:`CONFIRMED`: ``sent``, ``delivered``, ``read``, ``confirmed``) -- the send
  happened: the job succeeds (its status flag becomes ``sent``) with the provider's message id
  taken from the status;
* **failed** (:data:`FAILED`) -- by the provider's error code (:func:`failure_is_permanent`): a
  code that says the message can never be delivered as it is (WhatsApp ``131026`` undeliverable,
  ``131047`` outside the 24-hour window, ...; Twilio ``30003``/``30005``/``30006``/``30007``...)
  is permanent (the dead-letter queue, with the code); any other failure sends again;
* **nothing** within the provider's window (:data:`ECHO_WINDOWS`) -- looked up where the provider
  offers a lookup (Twilio's message list); else the send's *on_unknown* decides: ``resend`` sends
  again, ``review`` puts the job in the dead-letter queue as truly unknowable, carrying only the
  reconcile key (no personal data).

The job checks again every :data:`ECHO_POLL` seconds, or sooner when the window ends first.

:class:`~antifragile.inbound.Replies` does this on its message records. Any other job sends
through :meth:`Echoes.send_once`, which keeps the same wait under ``echo:<correlation>``::

    echoes = Echoes(assistant.deliveries)             # registers its status hook

    @jobs.job("orders.confirm")
    async def confirm(ctx: JobContext, order: str) -> object:
        return await echoes.send_once(
            ctx.idempotency_key, "sendgrid",
            lambda: sendgrid.send_email(..., idempotency_key=ctx.idempotency_key),
            on_unknown="review",
        )

The send must carry ``correlation_for(key)`` (the connectors do, from the key they are given:
WhatsApp and Twilio ``reference=``, SendGrid, Resend and Cal.com ``idempotency_key=``).

===========  ============  ============================================================
provider     window        after the window
===========  ============  ============================================================
WhatsApp     10 min        ``review`` (no lookup: Graph cannot list sent messages)
Twilio       10 min        looked up in the message list, then ``review``
SendGrid     10 min        ``review`` (the Event Webhook is the only echo)
Resend       10 min        ``review``
Cal.com      10 min        ``review``
===========  ============  ============================================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from antifragile.connectors import OutcomeUnknownError
from antifragile.connectors._correlation import correlation_for
from antifragile.errors import ConfigurationError, IntegrationError, PermanentError
from antifragile.inbound._delivery import (
    DELIVERY_RETENTION,
    DeliveryMatch,
    DeliveryStatus,
    DeliveryStatuses,
)
from antifragile.jobs import JobDeferred
from antifragile.policies import Clock
from antifragile.stores import KeyValueStore

#: how long a send whose outcome is unknown waits for the provider's status (seconds)
ECHO_WINDOWS: Mapping[str, float] = {
    "whatsapp": 600.0,
    "twilio": 600.0,
    "sendgrid": 600.0,
    "resend": 600.0,
    "calcom": 600.0,
}
#: the window of a provider not in :data:`ECHO_WINDOWS`
DEFAULT_ECHO_WINDOW = 600.0
#: how often a waiting job looks at its record again (seconds)
ECHO_POLL = 15.0

#: statuses that prove the send happened
CONFIRMED = frozenset({"sent", "delivered", "read", "confirmed"})
#: statuses that say the send did not reach its recipient
FAILED = frozenset({"failed", "bounced"})

#: failure codes after which sending the same message again cannot succeed
PERMANENT_CODES: Mapping[str, frozenset[str]] = {
    # Meta's error table: undeliverable, outside the 24-hour window, unsupported type, media
    # errors, template errors, blocked for policy
    "whatsapp": frozenset(
        {
            "131026",
            "131047",
            "131051",
            "131052",
            "131053",
            "132000",
            "132001",
            "132005",
            "132007",
            "132012",
            "132015",
            "132016",
            "368",
        }
    ),
    # Twilio: unreachable, unknown destination, landline, filtered, blocked, invalid number
    "twilio": frozenset({"21211", "21610", "21614", "30003", "30004", "30005", "30006", "30007"}),
}


def echo_window(provider: str, windows: Mapping[str, float] | None = None) -> float:
    """The window of *provider* (seconds): *windows* first, then :data:`ECHO_WINDOWS`."""
    if windows is not None and provider in windows:
        return float(windows[provider])
    return float(ECHO_WINDOWS.get(provider, DEFAULT_ECHO_WINDOW))


def failure_is_permanent(provider: str, code: str | None) -> bool:
    """Whether a ``failed`` status with *code* means sending again cannot succeed."""
    return code is not None and code in PERMANENT_CODES.get(provider, frozenset())


#: key prefix of what :class:`Echoes` keeps per correlation
ECHO_PREFIX = "echo:"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Echo:
    """What the provider has said about a send awaited by :class:`Echoes`: ``confirmed`` (with
    the provider's message id), ``failed`` (with its code, ``permanent`` when sending again
    cannot succeed), ``waiting`` (within the window) or ``expired`` (nothing within it)."""

    state: Literal["confirmed", "failed", "waiting", "expired"]
    provider_message_id: str | None = None
    error_code: str | None = None
    permanent: bool = False
    since: float | None = None


class Echoes:
    """Sends whose outcome is unknown, waiting for the provider's echo (see the module docs).

    Registers a hook on *deliveries* that keeps every ``sent``/``delivered``/``read``/
    ``confirmed`` and ``failed``/``bounced`` status carrying a correlation under
    ``echo:<correlation>`` (one atomic merge per status: idempotent, in any order).
    *windows* (seconds per provider) and *poll* tune the wait; *clock* (the deliveries' by
    default) is the jobs' time.
    """

    def __init__(
        self,
        deliveries: DeliveryStatuses,
        *,
        windows: Mapping[str, float] | None = None,
        poll: float = ECHO_POLL,
        clock: Clock | None = None,
    ) -> None:
        if not poll > 0:
            raise ConfigurationError(f"poll must be > 0 seconds, got {poll!r}")
        self.deliveries = deliveries
        self.clock = clock or deliveries.clock
        self.windows = dict(windows or {})
        self.poll = float(poll)
        deliveries.on_status(self._heard)

    def _kv(self) -> KeyValueStore:
        return self.deliveries._kv()

    async def _heard(self, status: DeliveryStatus, match: DeliveryMatch) -> None:
        if not status.correlation or status.status not in CONFIRMED | FAILED:
            return
        now = self.clock.time()
        await self._kv().merge(
            ECHO_PREFIX + status.correlation,
            {
                status.status: {
                    "provider_message_id": status.provider_message_id,
                    "error_code": status.error_code,
                    "at": status.occurred_at if status.occurred_at is not None else now,
                }
            },
            now=now,
            ttl=DELIVERY_RETENTION,
        )

    async def check(self, key: str, provider: str) -> Echo:
        """What is known of the send reconciled by *key* (see :class:`Echo`)."""
        now = self.clock.time()
        found = await self._kv().get(ECHO_PREFIX + correlation_for(key), now=now)
        value: dict[str, Any] = (
            found.value if found is not None and isinstance(found.value, dict) else {}
        )
        # a run that stopped in the middle of the call left only its sending mark
        since = value.get("awaiting_since", value.get("sending_since"))
        since = float(since) if isinstance(since, int | float) else None
        for status in sorted(FAILED):
            seen = value.get(status)
            if isinstance(seen, dict):
                code = seen.get("error_code")
                code = None if code is None else str(code)
                return Echo(
                    "failed", error_code=code, permanent=failure_is_permanent(provider, code)
                )
        for status in ("read", "delivered", "confirmed", "sent"):
            seen = value.get(status)
            if isinstance(seen, dict):
                pmid = seen.get("provider_message_id")
                return Echo("confirmed", provider_message_id=str(pmid) if pmid else None)
        if since is None or now < since + echo_window(provider, self.windows):
            return Echo("waiting", since=since)
        return Echo("expired", since=since)

    async def expect(self, key: str, provider: str) -> float:
        """Note that the send reconciled by *key* awaits its echo from now (kept when already
        noted); when it began waiting."""
        kv = self._kv()
        now = self.clock.time()
        entry = ECHO_PREFIX + correlation_for(key)
        found = await kv.get(entry, now=now)
        since = found.value.get("awaiting_since") if found is not None else None
        if isinstance(since, int | float):
            return float(since)
        await kv.merge(
            entry, {"awaiting_since": now, "provider": provider}, now=now, ttl=DELIVERY_RETENTION
        )
        return now

    async def forget(self, key: str) -> None:
        """Drop what is known of *key*'s send (before sending it again)."""
        await self._kv().delete(ECHO_PREFIX + correlation_for(key), now=self.clock.time())

    def deferred(self, key: str, provider: str, since: float) -> JobDeferred:
        """The deferral of a job awaiting the echo of *key* since *since*."""
        now = self.clock.time()
        ends = since + echo_window(provider, self.windows)
        return JobDeferred(
            f"awaiting echo of {correlation_for(key)} since {since:.3f}",
            delay=max(0.0, min(self.poll, ends - now)),
        )

    async def send_once(
        self,
        key: str,
        provider: str,
        send: Callable[[], Awaitable[T]],
        *,
        on_unknown: Literal["review", "resend"] = "review",
        lookup: Callable[[], Awaitable[T | None]] | None = None,
        reference: str | None = None,
    ) -> T | Echo:
        """Run *send* (which carries ``correlation_for(key)``) once, as the body of a job:
        the send's result, or the :class:`Echo` that confirmed it. An unknown outcome defers the
        job (:class:`~antifragile.jobs.JobDeferred`, no attempt counted) until the echo comes;
        a permanent failure raises :class:`~antifragile.errors.PermanentError`; nothing within
        the window: *lookup* (when given; a found result is the answer), then *on_unknown* --
        ``resend`` sends again, ``review`` raises
        :class:`~antifragile.connectors.OutcomeUnknownError` with the key to reconcile (the
        one the send carries).

        *reference* is the key whose correlation the send carries when it is not *key* (the
        SendGrid connector carries ``send-email/<key>``, Cal.com ``create-booking/<key>``: the
        ``reconcile_key`` of their errors)."""
        ref = reference or key
        echo = await self.check(ref, provider)
        if echo.state != "waiting" or echo.since is not None:
            if echo.state == "confirmed":
                return echo
            if echo.state == "failed":
                if echo.permanent:
                    raise PermanentError(
                        f"{provider} reported the send failed with code {echo.error_code}; "
                        "sending it again cannot deliver it",
                        provider=provider,
                        code="DELIVERY_FAILED",
                        detail=f"error code {echo.error_code}",
                    )
                await self.forget(ref)
            elif echo.state == "waiting":
                assert echo.since is not None
                raise self.deferred(ref, provider, echo.since)
            else:  # expired
                found = await lookup() if lookup is not None else None
                if found is not None:
                    return found
                if on_unknown == "review":
                    raise OutcomeUnknownError(
                        f"no status from {provider} within "
                        f"{echo_window(provider, self.windows):.0f} s of a send whose answer "
                        "was lost; it may have acted, so it is not sent again",
                        provider=provider,
                        replay_safe=False,
                        reconcile_key=ref,
                    )
                await self.forget(ref)
        kv = self._kv()
        entry = ECHO_PREFIX + correlation_for(ref)
        now = self.clock.time()
        await kv.merge(entry, {"sending_since": now}, now=now, ttl=DELIVERY_RETENTION)
        try:
            result = await send()
        except OutcomeUnknownError as exc:
            since = await self.expect(ref, provider)
            raise self.deferred(ref, provider, since) from exc
        except (IntegrationError, ConfigurationError):
            # refused, or never left: a later run may send it (a timeout or a cancellation
            # keeps the mark: the call may have acted)
            await kv.merge(entry, {"sending_since": None}, now=self.clock.time())
            raise
        await kv.merge(entry, {"sending_since": None}, now=self.clock.time())
        return result
