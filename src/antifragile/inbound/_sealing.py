"""Personal data encrypted at rest when a data key is configured.

``ANTIFRAGILE_DATA_KEYS`` holds one or more secrets, comma-separated. When it is set, the
personal parts of the records the service keeps are **sealed** before they are stored -- the
inbox's message (sender, text, profile name), a session's phone number, answers and recent
messages, an outbound message's recipient and text, a task's title and assignee -- and opened
when they are read: a copy of the database, a backup or a look at a
table shows ciphertext. Without it they are stored as they are (and this module changes
nothing).

The personal parts of each record (:data:`MESSAGE_FIELDS` of an outbound message,
:data:`TASK_FIELDS` of a task) are sealed and opened by :func:`seal_fields` and
:func:`open_fields`.

A sealed value is the JSON object ``{"$sealed": "<Fernet token>"}`` in place of the value:
Fernet (AES-128-CBC with HMAC-SHA256, from ``cryptography``) under a key derived from the
secret with SHA-256, so a secret of any length works (give it 32 random bytes' worth:
``python -c "import secrets; print(secrets.token_urlsafe(32))"``).

**Rotation.** The first key seals; every key opens. To rotate, put the new key first and keep
the old ones after it until every record sealed with them has expired (inbox 7 days,
sessions and outbound messages 30 days by default; tasks when deleted or updated), then drop
them. A sealed record none of the keys opens -- the
key that sealed it was removed too early -- is a :class:`~antifragile.ConfigurationError`
that says so, never a silent empty value.

The same keys make the references of :func:`~antifragile.observability.reference` (keyed
hashes, the first key) that job payloads carry instead of personal data.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from antifragile.errors import ConfigurationError
from antifragile.observability._personal import DATA_KEYS_ENV, data_keys

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

#: the field of a sealed value
SEALED = "$sealed"


@functools.lru_cache(maxsize=8)
def _fernet(keys: tuple[bytes, ...]) -> MultiFernet:
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError as exc:  # pragma: no cover - the service extra installs it
        raise ConfigurationError(
            f"{DATA_KEYS_ENV} needs the 'cryptography' package (pip install antifragile[service])"
        ) from exc
    derived = [
        Fernet(base64.urlsafe_b64encode(hashlib.sha256(b"antifragile seal\x00" + k).digest()))
        for k in keys
    ]
    return MultiFernet(derived)


def sealing() -> bool:
    """Whether a data key is configured (:func:`seal` seals with it)."""
    return bool(os.environ.get(DATA_KEYS_ENV))


def _current() -> MultiFernet | None:
    if not os.environ.get(DATA_KEYS_ENV):  # no data key: the common case, one look-up
        return None
    keys = tuple(data_keys())
    return _fernet(keys) if keys else None


def is_sealed(value: object) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(SEALED), str)


def seal(value: Any) -> Any:
    """*value* sealed with the current data key; *value* itself when no key is configured
    (or it is empty: ``""``, ``None``, an empty collection)."""
    fernet = _current()
    if fernet is None or value in (None, "", [], {}) or is_sealed(value):
        return value
    token = fernet.encrypt(json.dumps(value, separators=(",", ":")).encode())
    return {SEALED: token.decode("ascii")}


def unseal(value: Any) -> Any:
    """*value* opened when it is sealed (with any configured key), else itself."""
    if not is_sealed(value):
        return value
    fernet = _current()
    if fernet is None:
        raise ConfigurationError(
            f"a record is sealed with a data key and {DATA_KEYS_ENV} is not set"
        )
    from cryptography.fernet import InvalidToken

    try:
        plain = fernet.decrypt(str(value[SEALED]).encode("ascii"))
    except InvalidToken:
        raise ConfigurationError(
            f"no key in {DATA_KEYS_ENV} opens a sealed record (was its key removed before "
            "the record expired?)"
        ) from None
    return json.loads(plain)


#: the fields of an outbound message record that are about its recipient
MESSAGE_FIELDS = ("to", "text", "template", "choices")
#: the fields of a task that may name a person (a title typed by an operator, the assignee)
TASK_FIELDS = ("title", "assignee")


def seal_fields(record: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """A copy of *record* with the fields *names* sealed (:func:`seal`)."""
    if _current() is None:  # no data key: nothing is sealed
        return dict(record)
    return {k: seal(v) if k in names else v for k, v in record.items()}


def open_fields(record: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """A copy of *record* with the fields *names* opened (:func:`unseal`)."""
    return {k: unseal(v) if k in names else v for k, v in record.items()}


def unseal_all(value: Any) -> Any:
    """*value* with every sealed part, at any depth, opened (what erasure searches)."""
    if is_sealed(value):
        return unseal_all(unseal(value))
    if isinstance(value, Mapping):
        return {k: unseal_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [unseal_all(v) for v in value]
    return value
