"""Who may use the admin API: API keys (hashed, rotatable) and RS256 JWTs (JWKS or a PEM key).

A request to ``/v1/admin/...`` carries one credential::

    Authorization: Bearer af_3f9c0a1b2c3d4e5f_kP...      # an API key
    Authorization: Bearer eyJhbGciOiJSUzI1NiIs...         # a JWT
    X-API-Key: af_3f9c0a1b2c3d4e5f_kP...                  # an API key

**API keys** have the form ``af_<id>_<secret>``. Only the SHA-256 of a key is stored, in the
key-value entry ``apikey:<id>`` (``{name, hash, created_at, revoked_at, scopes, expires_at,
last_used_at, created_by}``; a record without ``scopes``, from before they existed, holds every
scope). A key holds scopes (:data:`SCOPES`: read, operate, admin), may expire, records its last
use (at most once a minute) and who created it; revoking it revokes the keys it created, to
any depth, unless ``cascade=False``. Bootstrap keys are refused when they are easy to guess
(:mod:`antifragile.service._entropy`). A key is looked up
by its id and checked by a constant-time comparison of hashes, so the plaintext exists only in
the response that created it. Several keys are active at once (rotate: create the new one, move
the clients, revoke the old one). Keys given in ``ANTIFRAGILE_ADMIN_API_KEYS`` (comma-separated,
plaintext or ``sha256:<hex>``) are accepted too -- the way to make the first call.

**JWTs** are accepted only when signed with RS256 (``none`` and the HMAC algorithms are refused
before anything else), by a key from the JWKS at ``ANTIFRAGILE_JWT_JWKS_URL`` (fetched over
HTTPS -- plain HTTP only on loopback --, cached, fetched again when a token names an unknown
``kid``, at most every ``jwks_min_refresh`` seconds) or by the PEM key in
``ANTIFRAGILE_JWT_PUBLIC_KEY`` (RSA keys of 2048 bits at least, from either). The settings need
an issuer and an audience with a JWT key (:func:`check_issuer_audience`), unless
``ANTIFRAGILE_JWT_ALLOW_ANY_ISSUER_AUDIENCE`` is on. ``exp`` is required; ``exp``, ``nbf`` and
``iat`` are checked against the injected clock with ``ANTIFRAGILE_JWT_LEEWAY`` seconds of
leeway; ``iss``, ``aud`` and ``azp`` (the authorized party, as in Clerk session tokens) when
configured.

Any failure is a 401 ``AUTH`` envelope with ``WWW-Authenticate: Bearer`` and the same message --
never which part of a credential was wrong (the reason goes to the log, without the credential).
With neither bootstrap keys nor a JWT key configured, the admin API refuses every request with a
message that says how to configure it: secure by default.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from antifragile.errors import AntifragileError, ConfigurationError, ErrorCode, StoreError
from antifragile.jobs import Jobs
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.service._entropy import weakness
from antifragile.service._envelope import ApiError
from antifragile.stores import KeyValueStore

_log = logging.getLogger("antifragile.service.auth")

#: the key-value prefix of stored API keys
APIKEY_PREFIX = "apikey:"
#: the prefix of every API key this module issues
KEY_PREFIX = "af_"
#: the one JWT signing algorithm accepted
JWT_ALGORITHM = "RS256"
#: the shortest RSA key accepted for JWTs (from a PEM key or a JWKS)
MIN_RSA_BITS = 2048

WWW_AUTHENTICATE = 'Bearer realm="antifragile-admin"'
NOT_CONFIGURED = (
    "admin API authentication is not configured: set ANTIFRAGILE_ADMIN_API_KEYS (one or more "
    "API keys) or ANTIFRAGILE_JWT_JWKS_URL / ANTIFRAGILE_JWT_PUBLIC_KEY (JWTs), then restart"
)
#: the 401 message without credentials; worded so that redaction (which hides whatever follows
#: "Authorization:" or "Bearer") leaves it whole
MISSING = (
    "credentials required: send an API key or a JWT as a Bearer token in the Authorization "
    "header, or an API key in the X-API-Key header"
)
INVALID = "invalid or expired credentials"


class CredentialsRejected(AntifragileError):
    """A credential did not authenticate. ``reason`` says why -- for logs and tests only; the
    response never tells it."""

    default_code = ErrorCode.AUTH

    def __init__(self, reason: str) -> None:
        super().__init__(INVALID)
        self.reason = reason


class SigningKeysUnavailable(AntifragileError):
    """The JWKS could not be fetched and no key is cached: tokens cannot be checked now."""

    default_code = ErrorCode.UPSTREAM_UNAVAILABLE
    default_retryable = True


#: what an admin credential may do: ``read`` (every GET), ``operate`` (actions: retry, resolve,
#: breakers, flags, tasks, sessions, ai-results) and ``admin`` (API key management); each one
#: includes the ones before it
SCOPES: tuple[str, ...] = ("read", "operate", "admin")
#: the scopes of a key created without any named
DEFAULT_SCOPES: tuple[str, ...] = ("read", "operate")
ALL_SCOPES = frozenset(SCOPES)
#: how often a key's last-used time is written at most (seconds)
LAST_USED_EVERY = 60.0


def expand_scopes(names: Iterable[str]) -> tuple[str, ...]:
    """The scopes *names* grant (each includes the ones below it), in order; ConfigurationError
    for an unknown name or none at all."""
    wanted = [str(n).strip().lower() for n in names if str(n).strip()]
    unknown = sorted(set(wanted) - ALL_SCOPES)
    if unknown or not wanted:
        raise ConfigurationError(
            f"scopes are some of {', '.join(SCOPES)}" + (f"; unknown: {unknown}" if unknown else "")
        )
    top = max(SCOPES.index(n) for n in wanted)
    return SCOPES[: top + 1]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made an admin request: ``kind`` of credential, ``subject`` (a key id, ``env:<n>``
    for a bootstrap key, or the token's ``sub``) and the ``scopes`` it holds (bootstrap keys and
    JWTs hold every scope)."""

    kind: Literal["api_key", "bootstrap_key", "jwt"]
    subject: str
    name: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    scopes: frozenset[str] = ALL_SCOPES

    def can(self, scope: str) -> bool:
        return scope in self.scopes


def hash_key(key: str) -> str:
    """The stored form of an API key: SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def session_binding(token: str, key_hash: str) -> str:
    """A keyed hash binding a session (its secret *token*) to the key it was opened with (the
    key's :func:`hash_key`): stored with the session, useless without the token."""
    return hmac.new(token.encode(), key_hash.encode(), hashlib.sha256).hexdigest()


def _parse_key(key: str) -> tuple[str, str] | None:
    """``(id, secret)`` of an ``af_<id>_<secret>`` key, else ``None``."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or not secret or not key_id or len(key_id) > 64 or not key_id.isalnum():
        return None
    return key_id, secret


def _kv_of(source: KeyValueStore | Jobs) -> KeyValueStore:
    if not isinstance(source, Jobs):
        return source
    kv = getattr(getattr(source.queue, "store", None), "kv", None)
    if kv is None:
        raise ConfigurationError("API keys need a job queue on a store with a key-value part")
    return kv  # type: ignore[no-any-return]


# -- API keys ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """A stored API key, without its secret."""

    id: str
    name: str
    created_at: float
    revoked_at: float | None = None
    scopes: tuple[str, ...] = SCOPES
    expires_at: float | None = None
    last_used_at: float | None = None
    created_by: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "active": self.active,
            "scopes": list(self.scopes),
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "created_by": self.created_by,
        }


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key just created: ``key`` is its plaintext, shown this once and never stored."""

    info: ApiKeyInfo
    key: str = field(repr=False)


def _optional_time(value: Any) -> float | None:
    return None if value is None else float(value)


def _info(key_id: str, value: Any) -> ApiKeyInfo | None:
    if not isinstance(value, Mapping) or not isinstance(value.get("hash"), str):
        return None
    scopes = value.get("scopes")
    creator = value.get("created_by")
    return ApiKeyInfo(
        id=key_id,
        name=str(value.get("name") or ""),
        created_at=float(value.get("created_at") or 0.0),
        revoked_at=_optional_time(value.get("revoked_at")),
        # a key stored before scopes existed was made by an admin and could do everything
        scopes=tuple(str(n) for n in scopes) if isinstance(scopes, list) else SCOPES,
        expires_at=_optional_time(value.get("expires_at")),
        last_used_at=_optional_time(value.get("last_used_at")),
        created_by=None if creator is None else str(creator),
    )


class ApiKeys:
    """Admin API keys: issued and revoked here, stored hashed in *kv* (a key-value store, or a
    :class:`Jobs` whose queue's store holds them); *bootstrap* keys (plaintext or
    ``sha256:<hex>``) come from the environment and cannot be revoked here."""

    def __init__(
        self,
        kv: KeyValueStore | Jobs | None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        bootstrap: Iterable[str | SecretStr] = (),
    ) -> None:
        self._source = kv
        self.clock = clock
        hashes: list[str] = []
        for item in bootstrap:
            text = (item.get_secret_value() if isinstance(item, SecretStr) else item).strip()
            if not text:
                continue
            if text.lower().startswith("sha256:"):
                digest = text[len("sha256:") :].strip().lower()
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ConfigurationError(
                        "ANTIFRAGILE_ADMIN_API_KEYS: a 'sha256:' entry must be 64 hex digits"
                    )
                hashes.append(digest)
            else:
                if len(text) < 16:
                    raise ConfigurationError(
                        "ANTIFRAGILE_ADMIN_API_KEYS: every key must be at least 16 characters"
                    )
                weak = weakness(text)
                if weak is not None:  # the key itself is never in the message
                    raise ConfigurationError(
                        f"ANTIFRAGILE_ADMIN_API_KEYS: key {len(hashes) + 1} is too easy to "
                        f"guess ({weak}); use a random one, e.g. openssl rand -base64 24"
                    )
                hashes.append(hash_key(text))
        self._bootstrap: tuple[str, ...] = tuple(hashes)

    @property
    def has_bootstrap(self) -> bool:
        return bool(self._bootstrap)

    def bootstrap_bound(self, token: str, binding: str) -> bool:
        """Whether *binding* (:func:`session_binding` of *token* and a key's hash) names one of
        the bootstrap keys configured now."""
        found = False
        for digest in self._bootstrap:  # every one compared: the time tells nothing
            found |= hmac.compare_digest(session_binding(token, digest), binding)
        return found

    @property
    def kv(self) -> KeyValueStore:
        if self._source is None:
            raise ConfigurationError("API keys cannot be managed: no store was given")
        return _kv_of(self._source)

    async def create(
        self,
        name: str,
        *,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        expires_in: float | None = None,
        created_by: str | None = None,
    ) -> NewApiKey:
        """Issue a key named *name* holding *scopes* (see :data:`SCOPES`), expiring after
        *expires_in* seconds (never when ``None``), made by the key id *created_by*; the
        returned plaintext is not kept anywhere."""
        name = (name or "").strip()
        if not name or len(name) > 100 or not name.isprintable():
            raise ConfigurationError("an API key needs a name: 1-100 printable characters")
        granted = expand_scopes(scopes)
        if expires_in is not None and not 0 < expires_in <= 10 * 365 * 86400.0:
            raise ConfigurationError("an API key expires after 0 seconds to ten years")
        now = self.clock.time()
        expires_at = None if expires_in is None else now + expires_in
        while True:
            key_id = secrets.token_hex(8)
            key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            record = {
                "name": name,
                "hash": hash_key(key),
                "created_at": now,
                "revoked_at": None,
                "scopes": list(granted),
                "expires_at": expires_at,
                "last_used_at": None,
                "created_by": created_by,
            }
            stored = await self.kv.compare_and_set(
                APIKEY_PREFIX + key_id, record, expected_version=None, now=now
            )
            if stored is not None:  # an id collision (vanishingly rare) draws again
                info = ApiKeyInfo(key_id, name, now, None, granted, expires_at, None, created_by)
                return NewApiKey(info, key)

    async def get(self, key_id: str) -> ApiKeyInfo | None:
        record = await self.kv.get(APIKEY_PREFIX + key_id, now=self.clock.time())
        return None if record is None else _info(key_id, record.value)

    async def list(self, *, include_revoked: bool = True) -> list[ApiKeyInfo]:
        """Stored keys (never their hashes), oldest first."""
        entries = await self.kv.scan(APIKEY_PREFIX, now=self.clock.time(), limit=10_000)
        found = [_info(entry.key[len(APIKEY_PREFIX) :], entry.value) for entry in entries]
        keys = [info for info in found if info is not None]
        if not include_revoked:
            keys = [info for info in keys if info.active]
        return sorted(keys, key=lambda info: (info.created_at, info.id))

    async def revoke(self, key_id: str, *, cascade: bool = True) -> ApiKeyInfo | None:
        """Revoke a stored key (it stops working at once); ``None`` when there is no such key.
        With *cascade* (the default) the keys it created, and theirs, are revoked too -- so a
        leaked key cannot leave a successor behind. Revoking a revoked key changes nothing
        (but still cascades)."""
        return (await self.revoke_all(key_id, cascade=cascade))[0]

    async def revoke_all(
        self, key_id: str, *, cascade: bool = True
    ) -> tuple[ApiKeyInfo | None, builtins.list[str]]:
        """:meth:`revoke`, and the ids of the other keys the cascade revoked now."""
        current = await self.get(key_id)
        if current is None:
            return None, []
        now = self.clock.time()
        if current.revoked_at is None:
            merged = await self.kv.merge(APIKEY_PREFIX + key_id, {"revoked_at": now}, now=now)
            current = _info(key_id, merged.value) or current
        if not cascade:
            return current, []
        keys = await self.list()
        doomed = {key_id}
        grew = True
        while grew:  # the keys made by a doomed key are doomed, to any depth
            grew = False
            for info in keys:
                if info.created_by in doomed and info.id not in doomed:
                    doomed.add(info.id)
                    grew = True
        also: builtins.list[str] = []
        for info in keys:
            if info.id in doomed and info.id != key_id and info.active:
                await self.kv.merge(APIKEY_PREFIX + info.id, {"revoked_at": now}, now=now)
                also.append(info.id)
        return current, also

    async def verify(self, presented: str) -> Principal:
        """The principal of an API key; raises :class:`CredentialsRejected` otherwise."""
        digest = hash_key(presented)
        for index, expected in enumerate(self._bootstrap):
            if hmac.compare_digest(digest, expected):
                return Principal("bootstrap_key", f"env:{index + 1}")
        parsed = _parse_key(presented)
        if parsed is None or self._source is None:
            raise CredentialsRejected("not a known API key")
        key_id = parsed[0]
        record = await self.kv.get(APIKEY_PREFIX + key_id, now=self.clock.time())
        value = record.value if record is not None else None
        stored = value.get("hash") if isinstance(value, Mapping) else None
        # compare even when there is no such key, so that both cases take the same time
        matches = hmac.compare_digest(digest, stored if isinstance(stored, str) else "0" * 64)
        if not matches or not isinstance(value, Mapping):
            raise CredentialsRejected("unknown API key id or wrong secret")
        if value.get("revoked_at") is not None:
            raise CredentialsRejected("revoked API key")
        info = _info(key_id, value)
        now = self.clock.time()
        if info is None or info.expired(now):
            raise CredentialsRejected("expired API key")
        if info.last_used_at is None or now - info.last_used_at >= LAST_USED_EVERY:
            try:  # at most one write a minute per key, and never a refusal for it
                await self.kv.merge(APIKEY_PREFIX + key_id, {"last_used_at": now}, now=now)
            except StoreError as exc:
                _log.warning("the last use of an API key could not be recorded: %s", exc.code)
        return Principal("api_key", key_id, name=info.name, scopes=frozenset(info.scopes))


# -- JWTs ----------------------------------------------------------------------------------------


def _load_public_key(text: str) -> RSAPublicKey:
    pem = text.strip()
    if not pem.startswith("-----BEGIN"):
        path = Path(pem).expanduser()
        try:
            pem = path.read_text(encoding="utf-8")
        except OSError:
            raise ConfigurationError(
                "ANTIFRAGILE_JWT_PUBLIC_KEY is neither PEM text nor a readable file"
            ) from None
    try:
        key = load_pem_public_key(pem.encode("utf-8"))
    except ValueError:
        raise ConfigurationError("ANTIFRAGILE_JWT_PUBLIC_KEY is not a PEM public key") from None
    if not isinstance(key, RSAPublicKey):
        raise ConfigurationError("ANTIFRAGILE_JWT_PUBLIC_KEY must be an RSA public key (RS256)")
    if key.key_size < MIN_RSA_BITS:
        raise ConfigurationError("ANTIFRAGILE_JWT_PUBLIC_KEY: RSA keys shorter than 2048 bits")
    return key


def _check_jwks_url(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if parts.scheme == "https" or (parts.scheme == "http" and loopback):
        return url
    raise ConfigurationError(
        "ANTIFRAGILE_JWT_JWKS_URL must be an https:// URL (http:// only on localhost)"
    )


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CredentialsRejected(f"claim {name} is not a number")
    return float(value)


class JwtVerifier:
    """Checks RS256 JWTs against a JWKS URL or a PEM public key (see the module docs)."""

    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        public_key: str | None = None,
        issuer: str | None = None,
        audience: Sequence[str] | str = (),
        authorized_parties: Sequence[str] = (),
        leeway: float = 5.0,
        clock: Clock = SYSTEM_CLOCK,
        jwks_ttl: float = 300.0,
        jwks_min_refresh: float = 30.0,
        http_timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if (jwks_url is None) == (public_key is None):
            raise ConfigurationError("give a JWKS URL or a PEM public key for JWTs (one of them)")
        if not leeway >= 0:
            raise ConfigurationError("the JWT leeway must be >= 0 seconds")
        self.jwks_url = None if jwks_url is None else _check_jwks_url(jwks_url)
        self._pem = None if public_key is None else _load_public_key(public_key)
        self.issuer = issuer or None
        self.audience = (audience,) if isinstance(audience, str) else tuple(audience)
        self.authorized_parties = frozenset(authorized_parties)
        self.leeway = float(leeway)
        self.clock = clock
        self.jwks_ttl = float(jwks_ttl)
        self.jwks_min_refresh = float(jwks_min_refresh)
        self.http_timeout = float(http_timeout)
        self._transport = transport
        self._keys: dict[str, Any] = {}  # kid -> public key object
        self._fetched_at: float | None = None  # monotonic time of the last fetch attempt
        self._loaded_at: float | None = None  # ... and of the last successful one
        self._lock = asyncio.Lock()
        self.fetches = 0

    # -- the key set --------------------------------------------------------------------------

    async def _fetch(self) -> None:
        self.fetches += 1
        self._fetched_at = self.clock.monotonic()
        assert self.jwks_url is not None
        try:
            async with httpx.AsyncClient(
                timeout=self.http_timeout, transport=self._transport
            ) as client:
                response = await client.get(self.jwks_url, headers={"Accept": "application/json"})
                response.raise_for_status()
                data = response.json()
            jwk_set = jwt.PyJWKSet.from_dict(data if isinstance(data, dict) else {})
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            _log.warning(
                "JWKS fetch failed (%s); %d cached key(s) kept", type(exc).__name__, len(self._keys)
            )
            return
        keys: dict[str, Any] = {}
        for jwk in jwk_set.keys:
            if jwk.key_type != "RSA" or jwk.public_key_use not in (None, "sig"):
                continue
            if jwk.algorithm_name != JWT_ALGORITHM:
                continue
            size = getattr(jwk.key, "key_size", 0)
            if size < MIN_RSA_BITS:  # as for a PEM key: a short RSA key is refused
                _log.warning("JWKS key %r refused: RSA keys shorter than 2048 bits", jwk.key_id)
                continue
            keys[jwk.key_id or ""] = jwk.key
        self._keys = keys
        self._loaded_at = self._fetched_at

    async def _jwks_key(self, kid: str | None) -> Any:
        now = self.clock.monotonic()
        stale = self._loaded_at is None or now - self._loaded_at >= self.jwks_ttl
        missing = (kid or "") not in self._keys and not (kid is None and len(self._keys) == 1)
        may_refetch = self._fetched_at is None or now - self._fetched_at >= self.jwks_min_refresh
        if (stale or missing) and may_refetch:
            async with self._lock:
                fetched = self._fetched_at
                if fetched is None or self.clock.monotonic() - fetched >= self.jwks_min_refresh:
                    await self._fetch()
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            if not self._keys and self._loaded_at is None:
                raise SigningKeysUnavailable("the token signing keys cannot be fetched right now")
            raise CredentialsRejected("token has no kid and the key set has several keys")
        key = self._keys.get(kid)
        if key is None:
            if self._loaded_at is None:
                raise SigningKeysUnavailable("the token signing keys cannot be fetched right now")
            raise CredentialsRejected("unknown kid")
        return key

    # -- verification -------------------------------------------------------------------------

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; raises :class:`CredentialsRejected` (or
        :class:`SigningKeysUnavailable` when no key could ever be fetched)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise CredentialsRejected("malformed token") from None
        if header.get("alg") != JWT_ALGORITHM:
            raise CredentialsRejected(f"algorithm {str(header.get('alg'))[:16]!r} is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise CredentialsRejected("kid is not a string")
        key = self._pem if self._pem is not None else await self._jwks_key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[JWT_ALGORITHM],
                audience=list(self.audience) or None,
                issuer=self.issuer,
                options={
                    "require": ["exp"],
                    "verify_exp": False,  # checked below against the injected clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": bool(self.audience),
                    "verify_iss": self.issuer is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise CredentialsRejected(f"token rejected: {type(exc).__name__}") from None
        self._check_times(claims)
        if self.authorized_parties and claims.get("azp") not in self.authorized_parties:
            raise CredentialsRejected("azp is not an authorized party")
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        now = self.clock.time()
        exp = _number(claims, "exp")
        if exp is None or exp <= now - self.leeway:
            raise CredentialsRejected("token expired")
        nbf = _number(claims, "nbf")
        if nbf is not None and nbf > now + self.leeway:
            raise CredentialsRejected("token not valid yet (nbf)")
        iat = _number(claims, "iat")
        if iat is not None and iat > now + self.leeway:
            raise CredentialsRejected("token issued in the future (iat)")


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


# -- the admin check -----------------------------------------------------------------------------


class AdminAuth:
    """Authenticates admin requests with *keys* and, when given, *jwt*."""

    def __init__(self, keys: ApiKeys, jwt: JwtVerifier | None = None) -> None:
        self.keys = keys
        self.jwt = jwt

    @property
    def configured(self) -> bool:
        """Whether an operator configured any way in (bootstrap keys or a JWT key)."""
        return self.keys.has_bootstrap or self.jwt is not None

    @classmethod
    def from_settings(
        cls, settings: Any, *, kv: KeyValueStore | Jobs | None, clock: Clock = SYSTEM_CLOCK
    ) -> AdminAuth:
        """From the service settings' ``admin_api_keys`` and ``jwt_*`` fields."""
        keys = ApiKeys(kv, clock=clock, bootstrap=getattr(settings, "admin_api_keys", ()))
        jwks_url = getattr(settings, "jwt_jwks_url", None)
        public_key = getattr(settings, "jwt_public_key", None)
        verifier = None
        if jwks_url or public_key:
            if jwks_url and public_key:
                raise ConfigurationError(
                    "set ANTIFRAGILE_JWT_JWKS_URL or ANTIFRAGILE_JWT_PUBLIC_KEY, not both"
                )
            check_issuer_audience(settings)
            verifier = JwtVerifier(
                jwks_url=jwks_url or None,
                public_key=public_key or None,
                issuer=getattr(settings, "jwt_issuer", None),
                audience=tuple(getattr(settings, "jwt_audience", ()) or ()),
                authorized_parties=tuple(getattr(settings, "jwt_authorized_parties", ()) or ()),
                leeway=float(getattr(settings, "jwt_leeway", 5.0)),
                clock=clock,
            )
        return cls(keys, verifier)

    async def authenticate(self, credential: str | None) -> Principal:
        """The principal of *credential* (the bearer token or API key presented); raises an
        :class:`ApiError` (401, or 503 when it cannot be checked now) otherwise."""
        if not credential:
            raise _unauthorized(MISSING if self.configured else NOT_CONFIGURED)
        started = time.perf_counter()
        try:
            if self.jwt is not None and _looks_like_jwt(credential):
                claims = await self.jwt.verify(credential)
                subject = str(claims.get("sub") or "")
                return Principal("jwt", subject, claims=claims)
            return await self.keys.verify(credential)
        except CredentialsRejected as exc:
            _log.info(
                "admin request refused: %s (%.1f ms)",
                exc.reason,
                (time.perf_counter() - started) * 1000,
            )
            raise _unauthorized(INVALID if self.configured else NOT_CONFIGURED) from None
        except SigningKeysUnavailable as exc:
            raise ApiError(
                503, ErrorCode.UPSTREAM_UNAVAILABLE, exc.message, retryable=True
            ) from None
        except (StoreError, ConfigurationError) as exc:
            _log.warning("admin credentials could not be checked: %s", exc.code)
            raise ApiError(
                503,
                ErrorCode.STORE_UNAVAILABLE,
                "credentials cannot be checked right now",
                retryable=True,
            ) from None


def check_issuer_audience(settings: Any) -> None:
    """A JWT key without ``iss`` and ``aud`` checks makes any token that key signed (for any
    application) an admin: refused unless explicitly allowed, and then logged."""
    issuer = getattr(settings, "jwt_issuer", None)
    audience = tuple(getattr(settings, "jwt_audience", ()) or ())
    if issuer and audience:
        return
    if getattr(settings, "jwt_allow_any_issuer_audience", False):
        _log.warning(
            "admin JWTs are accepted without %s checks "
            "(ANTIFRAGILE_JWT_ALLOW_ANY_ISSUER_AUDIENCE is on)",
            " and ".join(n for n, v in (("issuer", issuer), ("audience", audience)) if not v),
        )
        return
    raise ConfigurationError(
        "a JWT key (ANTIFRAGILE_JWT_JWKS_URL / ANTIFRAGILE_JWT_PUBLIC_KEY) needs "
        "ANTIFRAGILE_JWT_ISSUER and ANTIFRAGILE_JWT_AUDIENCE, so that only tokens issued for "
        "this service are admins (or set ANTIFRAGILE_JWT_ALLOW_ANY_ISSUER_AUDIENCE=on)"
    )


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, ErrorCode.AUTH, message, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


def admin_auth_for(request: Request) -> AdminAuth:
    """The app's :class:`AdminAuth`: ``app.state.admin_auth``, else built once from
    ``app.state.settings`` (or the assistant's) and the assistant's job store."""
    state = request.app.state
    auth: AdminAuth | None = getattr(state, "admin_auth", None)
    if auth is None:
        assistant = getattr(state, "assistant", None)
        settings = getattr(state, "settings", None) or getattr(assistant, "settings", None)
        jobs = getattr(assistant, "jobs", None)
        clock = getattr(assistant, "clock", SYSTEM_CLOCK)
        auth = AdminAuth.from_settings(
            settings, kv=jobs if isinstance(jobs, Jobs) else None, clock=clock
        )
        if isinstance(jobs, Jobs):  # kept once the assistant is there (not while it starts)
            state.admin_auth = auth
    return auth


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminBearer",
    description="An admin API key (af_...) or an RS256 JWT",
)
_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="AdminApiKey", description="An admin API key"
)


async def require_admin(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> Principal:
    """FastAPI dependency of every admin route: the caller's :class:`Principal`, or a 401
    (the principal :class:`~antifragile.service._bodylimit.EdgeGuard` found before the body
    was read, when it did)."""
    known = getattr(request.state, "principal", None)
    if isinstance(known, Principal):
        return known
    auth = admin_auth_for(request)
    credential = bearer.credentials.strip() if bearer is not None else (api_key or "").strip()
    principal = await auth.authenticate(credential or None)
    request.state.principal = principal
    return principal


def credential_of(request: Request) -> str | None:
    """The credential a request presents: a Bearer token, else the ``X-API-Key`` header."""
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key", "").strip() or None
