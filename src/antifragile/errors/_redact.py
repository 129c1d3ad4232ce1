"""Removal of secrets from text, URLs and header mappings before they reach a message.

Every string that an antifragile exception, event or log line carries about a request goes
through :func:`redact` first, so a token pasted into a URL or echoed back in an error body never
persists. The rules are deliberately broad: a false positive costs a few characters of an error
message, a false negative leaks a credential.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

REDACTED = "[REDACTED]"

#: Header names whose values are never shown (compared case-insensitively).
SENSITIVE_HEADERS: frozenset[str] = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-shopify-access-token",
        "x-hub-signature",
        "x-hub-signature-256",
        "x-twilio-signature",
        "x-shopify-hmac-sha256",
        "x-hubspot-signature",
        "x-hubspot-signature-v3",
        "x-cal-signature-256",
        "svix-signature",
        "x-twilio-email-event-webhook-signature",
    }
)

_SECRET_PARAM = (
    r"(?:access_?token|api_?key|apikey|auth_?token|token|secret|client_secret|password|passwd|"
    r"signature|sig|key|hub\.verify_token|verify_token)"
)

_PATTERNS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # Authorization-style header lines and JSON fields: "Authorization: Bearer xyz"
    (
        re.compile(
            r"(?i)\b(authorization|proxy-authorization|x-api-key|api-key|x-shopify-access-token)"
            r"(\"?\s*[:=]\s*\"?)(?:(bearer|basic|token)\s+)?[^\s\",;]+"
        ),
        lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) + ' ' if m.group(3) else ''}{REDACTED}",
    ),
    # Bare bearer / basic credentials anywhere
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + REDACTED),
    # Credentials in URLs: scheme://user:pass@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), r"\1" + REDACTED + "@"),
    # Secret-looking query or form parameters: ?token=abc&x=1
    (
        re.compile(r"(?i)([?&;]|\b)(" + _SECRET_PARAM + r")=([^&\s\"']+)"),
        r"\1\2=" + REDACTED,
    ),
    # JSON fields with secret names: "api_key": "abc"
    (
        re.compile(r"(?i)(\"" + _SECRET_PARAM + r"\"\s*:\s*\")[^\"]*(\")"),
        r"\1" + REDACTED + r"\2",
    ),
    # Slack incoming webhook URLs: the path is the secret
    (re.compile(r"(?i)(hooks\.slack\.com/services/)[A-Za-z0-9/_-]+"), r"\1" + REDACTED),
    # Well-known key prefixes (Resend, SendGrid, Stripe-like, Shopify, Slack, Cal.com, GitHub)
    (
        re.compile(
            r"\b(?:re_[A-Za-z0-9_]{8,}|SG\.[A-Za-z0-9_.-]{16,}|sk_(?:live|test)_[A-Za-z0-9]{8,}"
            r"|shp(?:at|ca|pa|ss)_[A-Fa-f0-9]{16,}|xox[abprs]-[A-Za-z0-9-]{8,}"
            r"|cal_(?:live|test)_[A-Za-z0-9]{8,}|gh[pousr]_[A-Za-z0-9]{20,}"
            r"|EAA[A-Za-z0-9]{20,}|AC[a-f0-9]{32}:[a-f0-9]{32})\b"
        ),
        REDACTED,
    ),
    # JWTs
    (
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\b"),
        REDACTED,
    ),
)


def redact(text: str, *, secrets: Iterable[str] = ()) -> str:
    """Return *text* with credentials replaced by ``[REDACTED]``.

    *secrets* are literal values known to be secret (a client's configured token, say); they are
    removed wherever they appear, in addition to the pattern rules.
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Copy a header mapping with every sensitive value replaced by ``[REDACTED]``."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {
        name: (REDACTED if name.lower() in SENSITIVE_HEADERS else redact(value))
        for name, value in items
    }
