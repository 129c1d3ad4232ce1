"""Removal of secrets from text, URLs and header mappings before they reach a message, and
masking of personal data (phone numbers, email addresses).

Every string that an antifragile exception, event or log line carries about a request goes
through :func:`redact` first, so a token pasted into a URL or echoed back in an error body never
persists. The rules are deliberately broad: a false positive costs a few characters of an error
message, a false negative leaks a credential.

Personal data is masked, not removed, so that a person can still tell two contacts apart:
:func:`mask_phone` and :func:`mask_email` mask one known value (``+4477•••••23``,
``a•••@example.com``); :func:`mask_values` masks the known values wherever they appear in a
text (every spelling of a phone number's digits); :func:`mask_pii` finds and masks every phone
number and email address in a free text. Pure functions without dependencies, in the bottom
layer (observability) so that every layer may use them; :mod:`antifragile.errors` re-exports them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from antifragile.observability._personal import mask_encoded

REDACTED = "[REDACTED]"

#: the character that stands for a hidden one in masked personal data
MASK = "\u2022"

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


# -- personal data ------------------------------------------------------------------------------

# a phone number: "+" and 7 to 15 digits (spaces, dots, dashes, brackets between them), or a bare
# run of 10 to 15 digits (WhatsApp sends numbers without the "+") that is not part of a longer
# word, number or hex id
_PHONE = re.compile(r"(?<![\w.\-/+])(?:\+\d(?:[\s().-]?\d){6,14}|\d{10,15})(?![\w.]*\d)(?![\w@])")
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# a value that is a phone number: an optional scheme ("whatsapp:", "tel:"), then digits and
# separators only
_PHONE_VALUE = re.compile(r"(?i)(?:[a-z]+:)?\s*\+?[\d\s().-]+")


def mask_phone(phone: str | None) -> str:
    """A phone number fit for a log line or a chat message: ``+4477•••••23``."""
    if not phone:
        return ""
    digits = "".join(c for c in phone if c.isdigit())
    if len(digits) < 7:
        return MASK * 3 + digits[-2:]
    return f"+{digits[:4]}{MASK * (len(digits) - 6)}{digits[-2:]}"


def mask_email(email: str | None) -> str:
    """An email address fit for a log line: ``a•••@example.com``."""
    if not email:
        return ""
    local, at, domain = email.partition("@")
    return f"{local[:1]}{MASK * 3}{at}{domain}"


def mask_pii(text: str) -> str:
    """*text* with every email address and phone number in it masked.

    Cheap when there is nothing to mask (two regular-expression scans); broad on purpose: a
    long run of digits that is not a phone number is masked too -- except a Unix time in
    seconds or milliseconds (a bare run of 10 or 13 digits starting with ``1``, which no phone
    number written without ``+`` can be).
    """
    if "%" in text:  # a query string's %2B447700900123 and ada%40example.com
        text = mask_encoded(text, mask_phone, mask_email)
    if "@" in text:
        text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    if any(c.isdigit() for c in text):
        text = _PHONE.sub(_mask_phone_match, text)
    return text


def _mask_phone_match(match: re.Match[str]) -> str:
    """A found phone number masked -- unless it is a bare run of digits that cannot be one
    and is a Unix time: ``1765113600`` (seconds) or ``1765113600123`` (milliseconds). A number
    written without ``+`` that starts with ``1`` is a NANP number only with exactly 11 digits
    (country code 1, then an area code that never starts with 0 or 1)."""
    found = match.group(0)
    if found[0] == "1" and len(found) != 11 and found.isdigit():
        return found
    return mask_phone(found)


def personal_values(values: Iterable[object]) -> list[str]:
    """The phone numbers and email addresses among *values*: strings (an address list such as
    ``"Ada <ada@example.com>"`` gives its addresses; a phone number may carry a scheme such as
    ``whatsapp:``), and the items of sequences and the values of mappings, recursively."""
    found: list[str] = []

    def visit(value: object, depth: int) -> None:
        if isinstance(value, str):
            found.extend(_EMAIL.findall(value))
            if _PHONE_VALUE.fullmatch(value.strip()):
                digits = sum(c.isdigit() for c in value)
                if 7 <= digits <= 15:
                    found.append(value.strip())
        elif depth < 4 and isinstance(value, Mapping):
            for item in value.values():
                visit(item, depth + 1)
        elif depth < 4 and isinstance(value, Iterable) and not isinstance(value, bytes):
            for item in value:
                visit(item, depth + 1)

    for value in values:
        visit(value, 0)
    return found


def mask_values(text: str, values: Iterable[str | None]) -> str:
    """*text* with each of the known phone numbers and email addresses in *values* masked.

    An email address is matched whatever its case; a phone number by its digits, with or
    without ``+``, a scheme or separators between them (``whatsapp:+44 7700 900123`` masks
    ``447700900123`` too). Other values are ignored (see :func:`personal_values`).
    """
    if not text:
        return text
    for value in personal_values(v for v in values if v):
        if "@" in value:
            text = re.sub(re.escape(value), mask_email(value), text, flags=re.IGNORECASE)
            continue
        digits = [c for c in value if c.isdigit()]
        spelled = r"[\s().-]*".join(digits)
        text = re.sub(rf"(?<!\d)\+?{spelled}(?!\d)", mask_phone("".join(digits)), text)
    return text
