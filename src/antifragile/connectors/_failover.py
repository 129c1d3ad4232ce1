"""An ordered chain of email providers: the first healthy one sends, exactly once overall.

::

    chain = connectors.email_chain()                  # ANTIFRAGILE_EMAIL_CHAIN=resend,sendgrid,smtp
    sent = await chain.send_email(
        sender="Shop <orders@shop.example>",
        to="owner@shop.example",
        subject="New order",
        text="...",
        idempotency_key=f"order-summary/{order_id}",
    )
    sent.provider, sent.id                            # who sent it, and its id there
    chain.serving()                                   # the provider the next email goes to

    # several mailboxes, or connectors you built yourself (yours to close)
    chain = EmailChain({"smtp-a": SMTPConnector(host="a.example"),
                        "smtp-b": SMTPConnector(host="b.example")})

**Order.** Every email starts at the first provider of the chain (the primary). A provider is
*skipped* without being asked when its circuit breaker is open or its sending quota is spent
(Resend's ``daily_quota_exceeded`` / ``monthly_quota_exceeded`` pause its sends until the
reset); it is *passed over* when it refuses the email for reasons of its own: a circuit, bulkhead
or retry-budget rejection, a 429, an authentication or configuration error, a 5xx answered in
the provider's own error format after the connector's retries. The next provider then sends.
A request the email itself is wrong for (400/422, an idempotency conflict) is raised: another
provider would refuse it too. Once the primary's breaker closes again (after its open time, a
half-open probe succeeds) the next email goes to the primary: traffic returns by itself.

**Exactly once.** The caller's *idempotency_key* is the same at every provider: Resend gets it
as ``Idempotency-Key``, SendGrid as ``custom_args``, SMTP as the ``Message-ID`` -- so a repeat at
one provider is deduplicated or reconcilable there. A send whose outcome is **unknown** at one
provider (the request went out and its answer was lost: a reset or timeout after sending, a
gateway's bodiless 502/504, the connectors' :class:`OutcomeUnknownError`) is recorded under the
key (in the store's key-value table when the chain has one: a restarted worker still knows) and
blocks every other provider for that key until it is *settled*:

* *reconciled* -- at a provider that deduplicates by key (Resend), the same request is sent
  again to that provider alone: its answer is the first send's (the email went out once) or a
  fresh send; with a *reconcile* function (``(provider, key) -> True | False | None``: sent, not
  sent, still unknown), e.g. a lookup of SendGrid's Event Webhook events, its answer settles it;
  when it has no answer (or there is none), a connector with a ``lookup_sent(key)`` of its own
  (Mandrill searches its messages' metadata) is asked;
* *timed out* -- after *settle_window* seconds (``ANTIFRAGILE_EMAIL_SETTLE_WINDOW``, 900 by
  default) without an answer the send is taken as not made and the chain goes on (a provider
  without keys is not asked again: a second request there could be a second email).

Until then :meth:`EmailChain.send_email` raises :class:`EmailUnsettledError`, a transient
error whose ``retry_after`` is the time left, so a durable job tries again later -- never two
providers sending the same email. The window is the one place a duplicate remains possible:
an email a provider accepted without answering, and that no lookup finds within the window.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from antifragile.connectors._outcome import (
    OutcomeUnknownError,
    ProviderRefusedError,
    may_have_acted,
)
from antifragile.errors import (
    AuthenticationError,
    ConfigurationError,
    IntegrationError,
    RateLimitedError,
    RejectedError,
    TransientError,
)
from antifragile.policies import SYSTEM_CLOCK, CircuitState, Clock
from antifragile.stores import KeyValueStore
from antifragile.stores._memory import MemoryKeyValueStore

CHAIN_ENV = "ANTIFRAGILE_EMAIL_CHAIN"
SETTLE_WINDOW_ENV = "ANTIFRAGILE_EMAIL_SETTLE_WINDOW"
DEFAULT_SETTLE_WINDOW = 900.0
#: the key-value prefix of an unsettled send: ``email-unknown:<idempotency key>``
UNKNOWN_PREFIX = "email-unknown:"
#: the providers whose API deduplicates a repeated request by its key
REPLAYABLE = frozenset({"resend"})
#: the providers a chain may name (the connectors that send email)
EMAIL_PROVIDERS: tuple[str, ...] = ("resend", "sendgrid", "smtp", "mandrill")

_OPEN = frozenset({CircuitState.OPEN, CircuitState.FORCED_OPEN})

Reconcile = Callable[[str, str], Awaitable[bool | None]]


class EmailUnsettledError(TransientError):
    """An earlier send of this email has an unknown outcome at ``provider``: no other provider
    may send it until that is settled (try again after ``retry_after`` seconds)."""

    def __init__(self, message: str, *, retry_after: float, **fields: Any) -> None:
        super().__init__(message, replay_safe=True, **fields)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ChainSent:
    """The email went out through ``provider``: its id there and the caller's key."""

    provider: str
    id: str
    idempotency_key: str
    #: the providers passed over before it, in order
    passed_over: tuple[str, ...] = ()


def chain_from(value: str | None) -> tuple[str, ...]:
    """The providers named by a ``resend,sendgrid,smtp`` setting (``("resend",)`` if empty)."""
    names = tuple(n.strip().lower() for n in (value or "").split(",") if n.strip())
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{CHAIN_ENV} names a provider twice: {value!r}")
    unknown = [n for n in names if n not in EMAIL_PROVIDERS]
    if unknown:
        raise ConfigurationError(
            f"{CHAIN_ENV}: {', '.join(unknown)} cannot send email; "
            f"the chain's providers are {', '.join(EMAIL_PROVIDERS)}"
        )
    return names or ("resend",)


def settle_window_from(value: str | None) -> float:
    if not value:
        return DEFAULT_SETTLE_WINDOW
    try:
        window = float(value)
    except ValueError:
        raise ConfigurationError(f"{SETTLE_WINDOW_ENV} is a number of seconds") from None
    if window < 0:
        raise ConfigurationError(f"{SETTLE_WINDOW_ENV} must not be negative")
    return window


def _provider_of(connector: Any, name: str) -> str:
    provider = getattr(connector, "provider", None)
    return provider if isinstance(provider, str) else name


def _available(connector: Any, now: float) -> bool:
    """Whether *connector* may be asked now: its breaker is not open, its quota not spent."""
    breaker = getattr(getattr(connector, "policy", None), "breaker", None)
    if breaker is not None and getattr(breaker, "state", None) in _OPEN:
        return False
    paused = getattr(connector, "quota_paused_until", None)
    return not (isinstance(paused, int | float) and now < paused)


def _lookup(connector: Any) -> Callable[[str], Awaitable[bool | None]] | None:
    """The connector's own lookup of a send by the caller's key (Mandrill's
    ``lookup_sent``: a search of its message metadata), if it has one."""
    lookup = getattr(connector, "lookup_sent", None)
    return lookup if callable(lookup) else None


def verdict(provider: str, error: BaseException) -> str:
    """What a failed send at *provider* calls for: ``"next"`` (nothing was sent: the next
    provider may send), ``"unknown"`` (it may have been sent) or ``"raise"``."""
    if isinstance(error, OutcomeUnknownError):
        return "unknown"
    if isinstance(error, ConfigurationError | ProviderRefusedError):
        return "next"
    if not isinstance(error, IntegrationError):
        return "raise"
    # a send that may have been made blocks every other provider until it is settled
    if may_have_acted(error, keyed=provider in REPLAYABLE):
        return "unknown"
    if isinstance(error, RejectedError | RateLimitedError | AuthenticationError):
        return "next"
    if error.retryable or (error.status is not None and error.status >= 500):
        return "next"
    return "raise"  # 400/422, a key conflict: the email itself is refused


def _email_for(connector: Any, name: str, email: dict[str, Any]) -> dict[str, Any]:
    """*email* as *connector* takes it: SendGrid wants ``"Name <a@b>"`` as name and email."""
    sender = email["sender"]
    if _provider_of(connector, name) != "sendgrid" or not isinstance(sender, str):
        return email
    display, address = parseaddr(sender)
    if not address:
        return email
    return {**email, "sender": {"email": address, "name": display} if display else address}


class EmailChain:
    """Send through the first healthy provider of an ordered chain (see the module docs).

    *senders* maps a name to a connector with ``send_email`` (Resend, SendGrid, SMTP), in the
    chain's order. *kv* keeps unsettled sends (process memory without it); *settle_window* is
    how long an unknown outcome blocks the chain; *reconcile* settles one at a provider that
    cannot be asked again.
    """

    def __init__(
        self,
        senders: Mapping[str, Any],
        *,
        kv: KeyValueStore | None = None,
        settle_window: float = DEFAULT_SETTLE_WINDOW,
        reconcile: Reconcile | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not senders:
            raise ConfigurationError("an email chain needs at least one provider")
        self.senders = dict(senders)
        self.kv: KeyValueStore = kv if kv is not None else MemoryKeyValueStore(threading.Lock())
        self.settle_window = settle_window
        self.reconcile = reconcile
        self.clock = clock
        #: the provider that sent the last email (``None`` before the first)
        self.last_provider: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.senders)

    def serving(self) -> str | None:
        """The provider the next email goes to: the first one whose breaker is not open and
        whose quota is not spent (``None`` when none is)."""
        now = self.clock.time()
        return next((n for n, c in self.senders.items() if _available(c, now)), None)

    async def send_email(
        self,
        *,
        sender: str,
        to: str | Sequence[str],
        subject: str,
        idempotency_key: str,
        text: str | None = None,
        html: str | None = None,
    ) -> ChainSent:
        """Send one email through the chain, exactly once per *idempotency_key*.

        Raises :class:`EmailUnsettledError` while an earlier send's outcome is unknown, the
        last provider's error when every provider refused, and a refusal of the email itself
        (400/422) at once.
        """
        email = {"sender": sender, "to": to, "subject": subject, "text": text, "html": html}
        record_key = UNKNOWN_PREFIX + idempotency_key
        excluded: set[str] = set()
        found = await self.kv.get(record_key, now=self.clock.time())
        if found is not None and isinstance(found.value, dict):
            settled = await self._settle(found.value, email, idempotency_key)
            if isinstance(settled, ChainSent):
                return settled
            excluded |= settled
        passed: list[str] = []
        last: BaseException | None = None
        for name, connector in self.senders.items():
            if name in excluded:
                continue
            if not _available(connector, self.clock.time()):
                passed.append(name)
                continue
            try:
                sent = await connector.send_email(
                    **_email_for(connector, name, email), idempotency_key=idempotency_key
                )
            except Exception as exc:
                what = verdict(_provider_of(connector, name), exc)
                if what == "raise":
                    raise
                if what == "unknown":
                    now = self.clock.time()
                    await self.kv.set(
                        record_key,
                        {"provider": name, "since": now},
                        now=now,
                        ttl=self.settle_window + 86_400.0,
                    )
                    raise self._unsettled(name, self.settle_window) from exc
                passed.append(name)
                last = exc
                continue
            return self._sent(name, sent, idempotency_key, passed)
        if last is not None:
            raise last
        raise EmailUnsettledError(
            "no email provider of the chain is available (breakers open or quotas spent)",
            provider=self.names[0],
            operation="send_email",
            retry_after=1.0,
        )

    async def _settle(
        self, record: dict[str, Any], email: dict[str, Any], key: str
    ) -> ChainSent | set[str]:
        """Settle the unknown send *record*: the email sent there, or the providers the chain
        must leave out now that it is settled as not sent (raises while it is not settled)."""
        name = str(record.get("provider"))
        since = float(record.get("since") or 0.0)
        connector = self.senders.get(name)
        record_key = UNKNOWN_PREFIX + key
        if connector is not None and _provider_of(connector, name) in REPLAYABLE:
            if _available(connector, self.clock.time()):
                try:
                    sent = await connector.send_email(
                        **_email_for(connector, name, email), idempotency_key=key
                    )
                except Exception as exc:
                    if verdict(_provider_of(connector, name), exc) == "raise":
                        raise
                else:
                    await self.kv.delete(record_key, now=self.clock.time())
                    return self._sent(name, sent, key, ())
        elif connector is not None and (self.reconcile is not None or _lookup(connector)):
            lookup = _lookup(connector)
            found = await self.reconcile(name, key) if self.reconcile is not None else None
            if found is None and lookup is not None:
                found = await lookup(key)
            if found is True:
                await self.kv.delete(record_key, now=self.clock.time())
                return ChainSent(name, "", key)
            if found is False:
                await self.kv.delete(record_key, now=self.clock.time())
                return set()
        left = since + self.settle_window - self.clock.time()
        if left > 0:
            raise self._unsettled(name, left)
        await self.kv.delete(record_key, now=self.clock.time())
        replayable = connector is not None and _provider_of(connector, name) in REPLAYABLE
        return set() if replayable else {name}

    def _unsettled(self, provider: str, left: float) -> EmailUnsettledError:
        return EmailUnsettledError(
            f"the outcome of this email at {provider} is unknown; no other provider sends it "
            f"until it is settled (at most {left:.0f} s)",
            provider=provider,
            operation="send_email",
            retry_after=left,
        )

    def _sent(self, name: str, sent: Any, key: str, passed: Sequence[str]) -> ChainSent:
        self.last_provider = name
        email_id = getattr(sent, "id", None) or getattr(sent, "message_id", None) or ""
        return ChainSent(name, str(email_id), key, tuple(passed))

    def __repr__(self) -> str:
        return f"EmailChain({list(self.senders)!r})"


def email_chain_from_env(
    build: Callable[[str], Any],
    *,
    kv: KeyValueStore | None = None,
    clock: Clock = SYSTEM_CLOCK,
    providers: Sequence[str] | None = None,
) -> EmailChain:
    """The chain named by ``ANTIFRAGILE_EMAIL_CHAIN`` (or *providers*), each connector from
    *build*; the window from ``ANTIFRAGILE_EMAIL_SETTLE_WINDOW``."""
    names = tuple(providers) if providers else chain_from(os.environ.get(CHAIN_ENV))
    return EmailChain(
        {name: build(name) for name in names},
        kv=kv,
        settle_window=settle_window_from(os.environ.get(SETTLE_WINDOW_ENV)),
        clock=clock,
    )


def email_serving(connectors: Any) -> str | None:
    """The provider an email chain configured by ``ANTIFRAGILE_EMAIL_CHAIN`` serves from now
    (``"none"`` when none is available); ``None`` without that setting or *connectors*."""
    if not os.environ.get(CHAIN_ENV) or connectors is None:
        return None
    try:
        return connectors.email_chain().serving() or "none"
    except ConfigurationError:
        return "misconfigured"
