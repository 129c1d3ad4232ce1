"""What the scheduling connectors (Calendly, Acuity) share: reading their error bodies."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx

from antifragile.errors import IntegrationError, redact


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The response's body when it is a JSON object, else ``None``."""
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def error_text(detail: str | None, keys: Sequence[str]) -> str | None:
    """The string fields *keys* of the JSON error body *detail*, joined by ``": "``."""
    if not detail:
        return None
    try:
        body = json.loads(detail)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    parts = [body.get(k) for k in keys]
    return ": ".join(p for p in parts if isinstance(p, str)) or None


def described(error: IntegrationError, keys: Sequence[str]) -> IntegrationError:
    """*error* with the provider's own words (the fields *keys* of its body) in its message."""
    text = error_text(error.detail, keys)
    if text is not None:
        message = redact(f"{error.message}: {text}")
        error.message = message
        error.args = (message,)
    return error
