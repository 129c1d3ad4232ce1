"""JSON encoding of stored values: refused before anything is written when not encodable."""

from __future__ import annotations

import json
from typing import Any

from antifragile.errors import ConfigurationError

#: what ``json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)``
#: would build on every call (an encoder keeps no state between calls)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(value: Any) -> str:
    """Compact JSON text for *value*; ConfigurationError when it is not JSON-compatible."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"value cannot be stored as JSON: {exc}") from None


def decode(text: str | bytes | None) -> Any:
    return None if text is None else json.loads(text)
