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

from collections.abc import Mapping

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
