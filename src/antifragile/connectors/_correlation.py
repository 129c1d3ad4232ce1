"""The correlation every send carries, so that the provider's status webhooks name our job.

A send is reconciled by a key -- a job's idempotency key, the ``reconcile_key`` of an
:class:`~antifragile.connectors.OutcomeUnknownError`. The message carries
:func:`correlation_for` of that key, which the provider echoes back in each status webhook:

============  ===================================================================================
WhatsApp      ``biz_opaque_callback_data`` of the message (echoed in ``statuses[]``)
Twilio        ``ref=<correlation>`` in the query of the ``StatusCallback`` URL (Twilio calls it)
SendGrid      ``custom_args.antifragile_ref`` (merged into every Event Webhook event)
Resend        the tag ``antifragile_ref`` (echoed in ``data.tags`` of its webhook events)
Cal.com       ``metadata.antifragile_ref`` of the booking (echoed in ``BOOKING_CREATED``)
============  ===================================================================================

The correlation is a digest of the key -- ``af_`` and 32 hex digits of its SHA-256 -- so it
carries no personal data whatever the key holds, fits every provider's charset and length limits
(Resend tags allow ``[A-Za-z0-9_-]`` only), and is the same for the same key in every process:
whoever waits for an echo computes it from the key it holds.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urldefrag, urlencode, urlsplit

from antifragile.errors import ConfigurationError

#: the name the correlation travels under (custom_args, tags, metadata, the URL query)
REF_ARG = "antifragile_ref"
#: the query parameter of a Twilio ``StatusCallback`` URL that carries the correlation
REF_QUERY = "ref"
#: where the service receives Twilio's messaging webhooks (status callbacks included)
TWILIO_WEBHOOK_PATH = "/v1/webhooks/twilio"

_PREFIX = "af_"


def correlation_for(key: str) -> str:
    """The correlation token sent with the message reconciled by *key* (always the same)."""
    if not key:
        raise ConfigurationError("a correlation needs a non-empty key")
    return _PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32]


def is_correlation(value: object) -> bool:
    """Whether *value* has the shape of a :func:`correlation_for` token."""
    if not isinstance(value, str) or not value.startswith(_PREFIX):
        return False
    digits = value[len(_PREFIX) :]
    return len(digits) == 32 and all(c in "0123456789abcdef" for c in digits)


def with_ref(url: str, correlation: str) -> str:
    """*url* with ``ref=<correlation>`` added to its query (before any ``#`` fragment: Twilio's
    connection overrides)."""
    base, fragment = urldefrag(url)
    separator = "&" if urlsplit(base).query else ("" if base.endswith("?") else "?")
    ref = f"{base}{separator}{urlencode({REF_QUERY: correlation})}"
    return f"{ref}#{fragment}" if fragment else ref


def status_callback_url(public_url: str, correlation: str) -> str:
    """The ``StatusCallback`` of a Twilio message: the service's Twilio webhook under
    *public_url*, with the correlation in the query."""
    return with_ref(public_url.rstrip("/") + TWILIO_WEBHOOK_PATH, correlation)
