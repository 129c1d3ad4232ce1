"""Masking personal data -- phone numbers and email addresses -- for logs and messages.

:func:`mask_phone` and :func:`mask_email` mask one known value (``+4477•••••23``,
``a•••@example.com``); :func:`mask_pii` finds and masks every phone number and email address in
a free text. Secrets (tokens, keys, signatures) are :func:`antifragile.redact`'s business; the
log processors apply both.

Pure functions without dependencies, so every layer may use them.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "mask_email", "mask_phone", "mask_pii"]

#: the character that stands for a hidden one
MASK = "\u2022"

# a phone number: "+" and 7 to 15 digits (spaces, dots, dashes, brackets between them), or a bare
# run of 10 to 15 digits (WhatsApp sends numbers without the "+") that is not part of a longer
# word, number or hex id
_PHONE = re.compile(r"(?<![\w.\-/+])(?:\+\d(?:[\s().-]?\d){6,14}|\d{10,15})(?![\w.]*\d)(?![\w@])")
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


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
    long run of digits that is not a phone number is masked too.
    """
    if "@" in text:
        text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    if any(c.isdigit() for c in text):
        text = _PHONE.sub(lambda m: mask_phone(m.group(0)), text)
    return text
