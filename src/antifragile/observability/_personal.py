"""Personal data in stored structures: found by the name of its field and by the shape of its
value, and replaced by a **reference** -- a keyed hash that stands for the value.

Job payloads carry references, not people: :func:`pseudonymise` returns a copy of a JSON value
in which

* the value of every field whose **name** says it is about a person -- ``email``,
  ``e_mail``, ``customerEmail``, ``phone_number``, ``mobile``, ``msisdn``, ``name``,
  ``full_name``, ``address``, ``street``, ``postcode``, ``dob``, ``birth_date``... (names are
  compared by their words and by their letters with the separators removed; ``tenant_name``,
  ``job_name``, ``hostname`` and ``filename`` are not a person's) -- is replaced whole;
* every **email address** and every **E.164 phone number** -- ``+`` or its URL encoding
  ``%2B`` followed by 7 to 15 digits -- inside any other string is replaced where it stands
  (the rest of the text is kept). A bare run of digits in a field not named for a phone is
  kept: epoch timestamps and ids are not phone numbers;

at any depth of mappings and lists. The reference is ``pii_`` and 24 hex digits of an
HMAC-SHA256 of the normalised value (an email lower-cased, a phone number its digits only, so
``+44 7700 900123``, ``%2B447700900123`` and ``whatsapp:+447700900123`` are one reference),
keyed with the first key of ``ANTIFRAGILE_DATA_KEYS`` when one is configured. The same person
always gets the same reference, so a job can still match, count or look up what it is about,
and erasure (:mod:`antifragile.service._erasure`) finds every record holding it; the value
itself cannot be read back from it.

Pure functions in the bottom layer, so that every layer may use them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from typing import Any

#: the environment variable of the data keys (comma-separated; the first one is current)
DATA_KEYS_ENV = "ANTIFRAGILE_DATA_KEYS"
#: what every reference starts with
REFERENCE_PREFIX = "pii_"
#: the key of references when no data key is configured (they are then pseudonyms that anyone
#: with this source can test a guess against: configure a key)
_UNKEYED = b"antifragile personal-data reference v1"

_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
#: words that make a field a person's
_PERSONAL_WORDS = frozenset(
    {
        "email",
        "emails",
        "mail",
        "phone",
        "phones",
        "mobile",
        "msisdn",
        "tel",
        "telephone",
        "cell",
        "name",
        "names",
        "surname",
        "address",
        "addresses",
        "street",
        "postcode",
        "zip",
        "dob",
        "birth",
        "birthday",
        "birthdate",
        "ssn",
        "passport",
        "iban",
    }
)
#: spellings without separators (``phonenumber``, ``e-mail``, ``firstName``)
_PERSONAL_PARTS = (
    "email",
    "phone",
    "mobile",
    "msisdn",
    "address",
    "street",
    "birth",
    "postcode",
    "surname",
    "fullname",
    "firstname",
    "lastname",
    "givenname",
    "familyname",
    "displayname",
    "profilename",
    "username",
    "customername",
    "contactname",
)
#: a ``name`` after one of these words names a thing, not a person (``tenant_name``)
_THING_WORDS = frozenset(
    {
        "tenant",
        "business",
        "shop",
        "company",
        "job",
        "queue",
        "step",
        "flow",
        "handler",
        "saga",
        "action",
        "template",
        "file",
        "host",
        "provider",
        "event",
        "intent",
        "task",
        "field",
        "column",
        "table",
        "key",
        "product",
        "item",
        "variant",
        "domain",
        "server",
        "service",
        "metric",
        "condition",
    }
)

#: a field whose last word is one of these is *about* the data, not the data (``email_status``,
#: ``phone_number_id`` -- a business's WhatsApp number's id --, ``email_sent``)
_ABOUT_WORDS = frozenset(
    {
        "id",
        "ids",
        "status",
        "sent",
        "count",
        "enabled",
        "verified",
        "template",
        "subject",
        "type",
        "kind",
        "provider",
        "flag",
        "state",
        "at",
        "error",
        "code",
        "consent",
        "opt",
        "in",
        "out",
    }
)

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
#: E.164: "+" (or "%2B") and 7 to 15 digits, single spaces, dots or dashes allowed between
_E164 = re.compile(r"(?<![\w+%])(?:\+|%2[Bb])\d(?:[ .-]?\d){6,14}(?![\d])")


@functools.lru_cache(maxsize=4096)
def personal_key(name: str) -> bool:
    """Whether a field called *name* holds data about a person (see the module docs)."""
    words = [w.lower() for w in _WORD.findall(name)]
    if not words or words[-1] in _ABOUT_WORDS:
        return False
    for index, word in enumerate(words):
        if word in _PERSONAL_WORDS and not (
            word in ("name", "names") and index > 0 and words[index - 1] in _THING_WORDS
        ):
            return True
    joined = "".join(words)
    return any(part in joined for part in _PERSONAL_PARTS)


@functools.lru_cache(maxsize=8)
def _parse_keys(raw: str) -> tuple[bytes, ...]:
    """The data keys *raw* (the variable's value) names, current first; parsed once per value,
    so a changed value -- a key rotated in -- is parsed anew."""
    return tuple(k.strip().encode() for k in raw.split(",") if k.strip())


def data_keys(environ: Mapping[str, str] | None = None) -> list[bytes]:
    """The configured data keys, current first (``ANTIFRAGILE_DATA_KEYS``: comma-separated)."""
    return list(_parse_keys((os.environ if environ is None else environ).get(DATA_KEYS_ENV, "")))


def current_data_key() -> bytes | None:
    """The current data key (``ANTIFRAGILE_DATA_KEYS``' first), ``None`` without one: the
    variable is read on every call (a rotated key applies at once), its value parsed once."""
    keys = _parse_keys(os.environ.get(DATA_KEYS_ENV, ""))
    return keys[0] if keys else None


def lookup_hash(purpose: str, text: str, *, key: bytes | None) -> str:
    """The hex hash a record about a person is found by (a session's key, an ordering key, a
    rate-limit bucket): HMAC-SHA256 of *purpose* and *text* under *key* -- a data key -- or,
    with ``None``, the plain SHA-256 of *text* that records written without a data key carry
    (which anyone who reads the store can match against guessed phone numbers)."""
    if key is None:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    message = f"{purpose}\x00{text}".encode("utf-8", "surrogatepass")
    return hmac.digest(key, message, "sha256").hex()  # hmac.new(...).hexdigest(), in one call


def lookup_hashes(purpose: str, text: str) -> list[str]:
    """The hashes a record about *text* may be stored under, newest first: under each
    configured data key (the current one first), then unkeyed (records written before a key
    was configured). Without a data key: the unkeyed one alone. A look-up tries them in this
    order and moves a record found under an older one (see :mod:`antifragile.inbound`)."""
    found = [lookup_hash(purpose, text, key=key) for key in data_keys()]
    found.append(lookup_hash(purpose, text, key=None))
    return list(dict.fromkeys(found))


def current_lookup_hash(purpose: str, text: str) -> str:
    """The hash a record about *text* is written under now (:func:`lookup_hashes`' first)."""
    return lookup_hash(purpose, text, key=current_data_key())


def normalise(value: str) -> str:
    """The form of a personal value its reference is computed from: an email address
    lower-cased, a phone number (``+``/``%2B``, a scheme, separators) its digits only, any
    other text with its whitespace collapsed, case-folded."""
    text = value.strip()
    decoded = re.sub(r"(?i)%40", "@", re.sub(r"(?i)%2B", "+", text))
    if _EMAIL.fullmatch(decoded):
        return decoded.lower()
    digits = re.sub(r"[\s().+-]", "", decoded.split(":", 1)[-1] if ":" in decoded else decoded)
    if digits.isdigit() and 7 <= len(digits) <= 15:
        return digits
    return " ".join(text.split()).casefold()


def reference(value: str, *, key: bytes | None = None) -> str:
    """The reference of a personal *value*: ``pii_`` and 24 hex digits of its keyed hash
    (*key*, else the current data key, else a fixed one)."""
    if key is None:
        keys = data_keys()
        key = keys[0] if keys else _UNKEYED
    digest = hmac.new(key, normalise(value).encode(), hashlib.sha256).digest()
    return REFERENCE_PREFIX + base64.b16encode(digest[:12]).decode().lower()


def is_reference(value: object) -> bool:
    return isinstance(value, str) and value.startswith(REFERENCE_PREFIX) and len(value) == 28


class _Key:
    """The key of references, looked up only when a payload holds something to replace."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key

    def __call__(self) -> bytes:
        if self._key is None:
            keys = data_keys()
            self._key = keys[0] if keys else _UNKEYED
        return self._key


def _replace_shapes(text: str, key: _Key) -> str:
    if "@" in text or "%40" in text:
        text = _EMAIL.sub(lambda m: reference(m.group(0), key=key()), text)
    if "+" in text or "%2" in text:
        text = _E164.sub(lambda m: reference(m.group(0), key=key()), text)
    return text


def _whole(value: Any, key: _Key) -> Any:
    """The reference of a personal field's value (kept: ``None``, booleans, references)."""
    if value is None or isinstance(value, bool) or is_reference(value):
        return value
    if isinstance(value, str):
        return reference(value, key=key()) if value.strip() else value
    if isinstance(value, int | float):
        return reference(str(value), key=key())
    if isinstance(value, list | tuple):
        return [_whole(item, key) for item in value]
    if isinstance(value, Mapping):
        return {k: _whole(v, key) for k, v in value.items()}
    return reference(str(value), key=key())


#: JSON scalars that hold no personal data on their own (checked before the costlier
#: ``isinstance`` tests; a personal field's number is replaced by ``_whole``)
_PLAIN: frozenset[type] = frozenset({int, float, bool})


def pseudonymise(value: Any, *, key: bytes | None = None) -> Any:
    """A copy of the JSON *value* with personal data replaced by references (module docs);
    *value* itself when there is none (cheap: one pass, no copy of an unchanged value)."""
    return _visit(value, _Key(key))


def _visit(value: Any, key: _Key) -> Any:
    if value is None or type(value) in _PLAIN:
        return value
    if isinstance(value, str):
        new = _replace_shapes(value, key)
        return value if new == value else new
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        changed = False
        for name, item in value.items():
            new = (
                _whole(item, key)
                if isinstance(name, str) and personal_key(name)
                else _visit(item, key)
            )
            changed = changed or new is not item
            out[name] = new
        return out if changed else value
    if isinstance(value, list | tuple):
        items = [_visit(item, key) for item in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items
    return value


_ENCODED_PHONE = re.compile(r"(?i)(?<![\w%])%2B\d(?:[ .-]?\d){6,14}(?!\d)")
_ENCODED_EMAIL = re.compile(
    r"(?i)(?<![\w.%+-])[A-Za-z0-9._+-]+%40[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
)


def mask_encoded(text: str, mask_phone: Any, mask_email: Any) -> str:
    """*text* with URL-encoded phone numbers (``%2B447700900123``) and email addresses
    (``ada%40example.com``) -- what a query string carries -- masked by *mask_phone* and
    *mask_email*."""
    if "%2" in text:
        text = _ENCODED_PHONE.sub(lambda m: mask_phone(m.group(0)[3:]), text)
    if "%40" in text:
        text = _ENCODED_EMAIL.sub(lambda m: mask_email(re.sub(r"%40", "@", m.group(0))), text)
    return text
