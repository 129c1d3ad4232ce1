"""Masking personal data -- phone numbers and email addresses -- for logs and messages.

:func:`mask_phone` and :func:`mask_email` mask one known value (``+4477•••••23``,
``a•••@example.com``); :func:`mask_pii` finds and masks every phone number and email address in
a free text. Secrets (tokens, keys, signatures) are :func:`antifragile.redact`'s business; the
log processors apply both.

Pure functions without dependencies, so every layer may use them; they live in
:mod:`antifragile.errors` (the lowest layer) and are re-exported here.
"""

from __future__ import annotations

# one implementation, in the errors layer (the lowest: connectors mask their errors with it)
from antifragile.errors._redact import MASK, mask_email, mask_phone, mask_pii

__all__ = ["MASK", "mask_email", "mask_phone", "mask_pii"]
