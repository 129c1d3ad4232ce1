"""Admin authentication: hashed, rotatable API keys and RS256 JWTs (PEM key or JWKS over HTTP)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning

from antifragile import FakeClock
from antifragile.errors import ConfigurationError, redact
from antifragile.sandbox import Fault, FlakyServer, IncomingRequest
from antifragile.service._auth import (
    APIKEY_PREFIX,
    MISSING,
    NOT_CONFIGURED,
    AdminAuth,
    ApiKeys,
    CredentialsRejected,
    JwtVerifier,
    SigningKeysUnavailable,
    hash_key,
)
from antifragile.service._envelope import ApiError
from antifragile.stores._memory import MemoryStore

ISSUER = "https://clerk.example.test"
PARTY = "https://admin.example.test"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    data: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, "alg": "RS256", "use": "sig"}


def _token(
    key: rsa.RSAPrivateKey, clock: FakeClock, *, kid: str | None = "k1", **claims: Any
) -> str:
    now = clock.time()
    body: dict[str, Any] = {
        "sub": "user_1",
        "iss": ISSUER,
        "azp": PARTY,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 60,
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(body, key, algorithm="RS256", headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing + "."
    signature = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(signature)}"


# -- API keys ------------------------------------------------------------------------------------


async def test_created_keys_verify_and_only_their_hash_is_stored(clock: FakeClock) -> None:
    """A created key has the form af_<id>_<secret>, verifies as that id, and neither the key
    nor its secret appears anywhere in the store -- only its SHA-256."""
    store = MemoryStore()
    keys = ApiKeys(store.kv, clock=clock)
    created = await keys.create("ci deploys")
    assert created.key.startswith(f"af_{created.info.id}_")
    assert created.key not in repr(created)
    principal = await keys.verify(created.key)
    assert (principal.kind, principal.subject, principal.name) == (
        "api_key",
        created.info.id,
        "ci deploys",
    )
    entries = await store.kv.scan("", now=clock.time(), limit=1000)
    dumped = json.dumps([(e.key, e.value) for e in entries])
    secret = created.key.split("_", 2)[2]
    assert created.key not in dumped
    assert secret not in dumped
    stored = await store.kv.get(APIKEY_PREFIX + created.info.id, now=clock.time())
    assert stored is not None
    assert stored.value["hash"] == hashlib.sha256(created.key.encode()).hexdigest()


async def test_listing_shows_no_secrets(clock: FakeClock) -> None:
    """list() returns names, ids and dates -- no key, no hash."""
    keys = ApiKeys(MemoryStore().kv, clock=clock)
    created = await keys.create("one")
    listed = [info.to_json() for info in await keys.list()]
    assert listed == [
        {
            "id": created.info.id,
            "name": "one",
            "created_at": clock.time(),
            "revoked_at": None,
            "active": True,
            "scopes": ["read", "operate"],
            "expires_at": None,
            "last_used_at": None,
            "created_by": None,
        }
    ]
    assert hash_key(created.key) not in json.dumps(listed)


async def test_rotation_and_revocation(clock: FakeClock) -> None:
    """Several keys work at once; a revoked key stops working at once while the others go
    on; revoking twice changes nothing; an unknown id is None."""
    keys = ApiKeys(MemoryStore().kv, clock=clock)
    old = await keys.create("old")
    new = await keys.create("new")
    assert (await keys.verify(old.key)).subject == old.info.id
    assert (await keys.verify(new.key)).subject == new.info.id
    clock.advance(10)
    revoked = await keys.revoke(old.info.id)
    assert revoked is not None
    assert revoked.revoked_at == clock.time()
    with pytest.raises(CredentialsRejected):
        await keys.verify(old.key)
    assert (await keys.verify(new.key)).subject == new.info.id
    again = await keys.revoke(old.info.id)
    assert again is not None
    assert again.revoked_at == revoked.revoked_at
    assert await keys.revoke("ffffffffffffffff") is None
    assert [k.id for k in await keys.list(include_revoked=False)] == [new.info.id]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # wrong secret
        lambda key: "af_0000000000000000_" + key.split("_", 2)[2],  # unknown id
        lambda key: key.split("_", 2)[2],  # secret alone
        lambda key: "",
        lambda key: "af__",
        lambda key: "not-a-key-at-all-but-long",
    ],
)
async def test_wrong_keys_are_rejected(clock: FakeClock, mutate: Any) -> None:
    """A key with a wrong secret, an unknown id or no structure does not verify."""
    keys = ApiKeys(MemoryStore().kv, clock=clock)
    created = await keys.create("k")
    with pytest.raises(CredentialsRejected):
        await keys.verify(mutate(created.key))


async def test_bootstrap_keys_plaintext_and_hashed(clock: FakeClock) -> None:
    """Environment keys are accepted as plaintext or as sha256:<hex>; short or malformed
    ones are a ConfigurationError."""
    plain = "bootstrap-key-0123456789"
    hashed = "another-bootstrap-key-xyz"
    keys = ApiKeys(
        None,
        clock=clock,
        bootstrap=[plain, f"sha256:{hashlib.sha256(hashed.encode()).hexdigest()}"],
    )
    assert keys.has_bootstrap
    assert (await keys.verify(plain)).kind == "bootstrap_key"
    assert (await keys.verify(hashed)).subject == "env:2"
    with pytest.raises(CredentialsRejected):
        await keys.verify("bootstrap-key-0123456780")
    with pytest.raises(ConfigurationError):
        ApiKeys(None, bootstrap=["short"])
    with pytest.raises(ConfigurationError):
        ApiKeys(None, bootstrap=["sha256:abc"])


async def test_key_names_are_validated(clock: FakeClock) -> None:
    """A key needs a printable name of 1-100 characters."""
    keys = ApiKeys(MemoryStore().kv, clock=clock)
    for bad in ("", "   ", "x" * 101, "tab\there"):
        with pytest.raises(ConfigurationError):
            await keys.create(bad)


# -- JWTs with a PEM key -------------------------------------------------------------------------


def _pem_verifier(key: rsa.RSAPrivateKey, clock: FakeClock, **options: Any) -> JwtVerifier:
    return JwtVerifier(public_key=_pem(key), clock=clock, **options)


async def test_valid_rs256_token_with_pem(rsa_key: rsa.RSAPrivateKey, clock: FakeClock) -> None:
    """A token signed by the configured key, with matching iss/aud/azp, verifies."""
    verifier = _pem_verifier(
        rsa_key, clock, issuer=ISSUER, audience="admin-api", authorized_parties=[PARTY]
    )
    claims = await verifier.verify(_token(rsa_key, clock, aud="admin-api"))
    assert claims["sub"] == "user_1"


async def test_pem_from_a_file(
    rsa_key: rsa.RSAPrivateKey, clock: FakeClock, tmp_path: Path
) -> None:
    """ANTIFRAGILE_JWT_PUBLIC_KEY may name a PEM file; a non-RSA or missing key is refused."""
    path = tmp_path / "key.pem"
    path.write_text(_pem(rsa_key))
    verifier = JwtVerifier(public_key=str(path), clock=clock)
    assert (await verifier.verify(_token(rsa_key, clock)))["iss"] == ISSUER
    with pytest.raises(ConfigurationError):
        JwtVerifier(public_key=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigurationError):
        JwtVerifier(public_key="-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----")


async def test_expiry_with_leeway(rsa_key: rsa.RSAPrivateKey, clock: FakeClock) -> None:
    """A token expired less than the leeway ago passes; longer ago it is rejected; a token
    without exp is rejected."""
    verifier = _pem_verifier(rsa_key, clock, leeway=5)
    now = int(clock.time())
    await verifier.verify(_token(rsa_key, clock, exp=now - 3, iat=now - 100, nbf=now - 100))
    with pytest.raises(CredentialsRejected) as caught:
        await verifier.verify(_token(rsa_key, clock, exp=now - 6, iat=now - 100, nbf=now - 100))
    assert caught.value.reason == "token expired"
    with pytest.raises(CredentialsRejected):
        await verifier.verify(_token(rsa_key, clock, exp=None))


async def test_not_before_and_issued_at_with_leeway(
    rsa_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    """nbf or iat in the future within the leeway (clock skew) pass; beyond it they fail."""
    verifier = _pem_verifier(rsa_key, clock, leeway=5)
    now = int(clock.time())
    await verifier.verify(_token(rsa_key, clock, nbf=now + 4, iat=now + 4))
    with pytest.raises(CredentialsRejected) as nbf:
        await verifier.verify(_token(rsa_key, clock, nbf=now + 30))
    assert "nbf" in nbf.value.reason
    with pytest.raises(CredentialsRejected) as iat:
        await verifier.verify(_token(rsa_key, clock, iat=now + 30))
    assert "iat" in iat.value.reason
    clock.advance(30)  # time passes: the same token becomes valid
    await verifier.verify(_token(rsa_key, clock, nbf=now + 30, exp=now + 120))


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://evil.example.test"},
        {"aud": "someone-else"},
        {"aud": None},
        {"azp": "https://evil.example.test"},
        {"azp": None},
    ],
)
async def test_wrong_issuer_audience_or_party(
    rsa_key: rsa.RSAPrivateKey, clock: FakeClock, claims: dict[str, Any]
) -> None:
    """iss, aud and azp must match what is configured (a missing aud or azp fails too)."""
    verifier = _pem_verifier(
        rsa_key, clock, issuer=ISSUER, audience=["admin-api"], authorized_parties=[PARTY]
    )
    full = {"aud": "admin-api", **claims}
    with pytest.raises(CredentialsRejected):
        await verifier.verify(_token(rsa_key, clock, **full))


async def test_another_keys_signature_is_rejected(
    rsa_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    """A token signed by another RSA key does not verify."""
    verifier = _pem_verifier(rsa_key, clock)
    with pytest.raises(CredentialsRejected):
        await verifier.verify(_token(other_key, clock))


async def test_alg_none_and_hs256_are_rejected(
    rsa_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    """alg=none and HS256 signed with the public key as the HMAC secret (the classic
    confusion attack) are refused; so is garbage."""
    verifier = _pem_verifier(rsa_key, clock)
    now = int(clock.time())
    claims = {"sub": "attacker", "iss": ISSUER, "exp": now + 60, "iat": now}
    none = _forged({"alg": "none", "typ": "JWT"}, claims, None)
    hs256 = _forged({"alg": "HS256", "typ": "JWT"}, claims, _pem(rsa_key).encode())
    for token in (none, hs256, "eyJ.not.a-token", "x"):
        with pytest.raises(CredentialsRejected):
            await verifier.verify(token)


# -- JWTs with a JWKS served over HTTP ------------------------------------------------------------


class Jwks:
    """A JWKS endpoint on a real local HTTP server; ``keys`` can be changed (rotation)."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.server = FlakyServer(handler=self.handle)

    def handle(self, request: IncomingRequest) -> Fault | None:
        if request.path == "/.well-known/jwks.json":
            return Fault.ok(json={"keys": self.keys})
        return Fault.ok(status=404, json={"error": "not found"})

    @property
    def url(self) -> str:
        return f"{self.server.url}/.well-known/jwks.json"

    @property
    def fetches(self) -> int:
        return self.server.count("/.well-known/jwks.json")


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    endpoint = Jwks()
    with endpoint.server:
        yield endpoint


async def test_jwks_over_http_verifies_and_is_cached(
    jwks: Jwks, rsa_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    """Keys are fetched from the JWKS URL over HTTP once, then served from the cache until
    its TTL passes."""
    jwks.keys = [_jwk(rsa_key, "k1")]
    verifier = JwtVerifier(jwks_url=jwks.url, clock=clock, issuer=ISSUER, jwks_ttl=300)
    for _ in range(5):
        assert (await verifier.verify(_token(rsa_key, clock)))["sub"] == "user_1"
    assert jwks.fetches == 1
    clock.advance(301)
    await verifier.verify(_token(rsa_key, clock))
    assert jwks.fetches == 2


async def test_unknown_kid_is_rejected_and_refetches_are_bounded(
    jwks: Jwks, rsa_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    """A token naming an unknown kid is rejected; it triggers at most one refetch per
    jwks_min_refresh, after which a rotated-in key is found."""
    jwks.keys = [_jwk(rsa_key, "k1")]
    verifier = JwtVerifier(jwks_url=jwks.url, clock=clock, jwks_min_refresh=30)
    await verifier.verify(_token(rsa_key, clock))
    for _ in range(10):
        with pytest.raises(CredentialsRejected) as caught:
            await verifier.verify(_token(other_key, clock, kid="k2"))
        assert caught.value.reason == "unknown kid"
    assert jwks.fetches == 1  # no refetch within 30 s of the last one
    jwks.keys = [_jwk(rsa_key, "k1"), _jwk(other_key, "k2")]  # rotation at the issuer
    clock.advance(31)
    assert (await verifier.verify(_token(other_key, clock, kid="k2")))["sub"] == "user_1"
    assert jwks.fetches == 2


async def test_jwks_keys_of_other_types_are_ignored(
    jwks: Jwks, rsa_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    """An HMAC (oct) key in the set is never used: an HS256 token naming it is refused."""
    secret = b"shared-secret-shared-secret-0123"
    jwks.keys = [
        _jwk(rsa_key, "k1"),
        {"kty": "oct", "kid": "hmac", "k": _b64(secret), "alg": "HS256"},
    ]
    verifier = JwtVerifier(jwks_url=jwks.url, clock=clock)
    now = int(clock.time())
    forged = _forged(
        {"alg": "HS256", "kid": "hmac"}, {"sub": "x", "exp": now + 60, "iat": now}, secret
    )
    with pytest.raises(CredentialsRejected):
        await verifier.verify(forged)
    await verifier.verify(_token(rsa_key, clock))


async def test_unreachable_jwks_without_cache_is_unavailable(clock: FakeClock) -> None:
    """When the JWKS was never fetched, tokens cannot be checked: SigningKeysUnavailable
    (answered 503, not 401)."""
    server = FlakyServer(default=Fault.ok(status=500, json={"error": "down"}))
    with server:
        verifier = JwtVerifier(jwks_url=f"{server.url}/jwks.json", clock=clock)
        token = jwt.encode(
            {"sub": "x", "exp": int(clock.time()) + 60},
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        with pytest.raises(SigningKeysUnavailable):
            await verifier.verify(token)


def test_jwks_url_must_be_https_except_on_loopback() -> None:
    """http:// JWKS URLs are refused unless they point at this machine."""
    JwtVerifier(jwks_url="https://clerk.example.test/.well-known/jwks.json")
    JwtVerifier(jwks_url="http://127.0.0.1:9999/jwks.json")
    JwtVerifier(jwks_url="http://localhost:9999/jwks.json")
    with pytest.raises(ConfigurationError):
        JwtVerifier(jwks_url="http://clerk.example.test/jwks.json")
    with pytest.raises(ConfigurationError):
        JwtVerifier()


# -- the admin check ------------------------------------------------------------------------------


async def test_nothing_configured_refuses_with_instructions(clock: FakeClock) -> None:
    """With no bootstrap key and no JWT key, every request is refused (401) with a message
    saying how to configure authentication."""
    auth = AdminAuth(ApiKeys(MemoryStore().kv, clock=clock))
    assert not auth.configured
    for credential in (None, "af_0123456789abcdef_whatever", "anything"):
        with pytest.raises(ApiError) as caught:
            await auth.authenticate(credential)
        assert caught.value.status == 401
        assert caught.value.message == NOT_CONFIGURED
        assert caught.value.headers is not None
        assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")


async def test_missing_credentials_message_survives_redaction(clock: FakeClock) -> None:
    """Without a credential a configured check answers 401 with a message that says how to
    send one, and that the redaction every error message goes through leaves whole."""
    auth = AdminAuth(ApiKeys(MemoryStore().kv, clock=clock, bootstrap=["bootstrap-key-0123456789"]))
    with pytest.raises(ApiError) as caught:
        await auth.authenticate(None)
    assert caught.value.status == 401
    assert caught.value.message == MISSING
    assert redact(MISSING) == MISSING
    for words in ("API key", "JWT", "Bearer", "Authorization header", "X-API-Key"):
        assert words in MISSING


async def test_failures_do_not_say_what_was_wrong(
    rsa_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    """A wrong secret, an unknown key id, an expired JWT and a forged JWT all get the same
    401 message."""
    store = MemoryStore()
    keys = ApiKeys(store.kv, clock=clock, bootstrap=["bootstrap-key-0123456789"])
    auth = AdminAuth(keys, _pem_verifier(rsa_key, clock))
    created = await keys.create("k")
    now = int(clock.time())
    bad = [
        created.key[:-2] + "zz",
        "af_ffffffffffffffff_" + created.key.split("_", 2)[2],
        _token(rsa_key, clock, exp=now - 100, iat=now - 200, nbf=now - 200),
        _forged({"alg": "none"}, {"sub": "x", "exp": now + 60}, None),
    ]
    messages = set()
    for credential in bad:
        with pytest.raises(ApiError) as caught:
            await auth.authenticate(credential)
        assert caught.value.status == 401
        messages.add(caught.value.message)
    assert len(messages) == 1
    assert (await auth.authenticate(created.key)).kind == "api_key"
    assert (await auth.authenticate(_token(rsa_key, clock))).kind == "jwt"


# -- issuer, audience and key size ----------------------------------------------------------------


def test_a_jwt_key_needs_an_issuer_and_an_audience(
    rsa_key: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    """With only a PEM key (or a JWKS URL), any token that key signed was an admin: now the
    settings are refused unless both issuer and audience are set, or the opt-out is on --
    which is logged."""
    from antifragile.service import Settings

    pem = _pem(rsa_key)
    for env in (
        {"ANTIFRAGILE_JWT_PUBLIC_KEY": pem},
        {"ANTIFRAGILE_JWT_PUBLIC_KEY": pem, "ANTIFRAGILE_JWT_ISSUER": ISSUER},
        {"ANTIFRAGILE_JWT_JWKS_URL": "https://issuer.test/jwks", "ANTIFRAGILE_JWT_AUDIENCE": "a"},
    ):
        with pytest.raises(ConfigurationError, match="ANTIFRAGILE_JWT_AUDIENCE"):
            AdminAuth.from_settings(Settings.from_env(env), kv=None)
    full = {"ANTIFRAGILE_JWT_ISSUER": ISSUER, "ANTIFRAGILE_JWT_AUDIENCE": "admin"}
    assert AdminAuth.from_settings(
        Settings.from_env({"ANTIFRAGILE_JWT_PUBLIC_KEY": pem, **full}), kv=None
    ).configured
    caplog.set_level("WARNING", logger="antifragile.service.auth")
    opted = {"ANTIFRAGILE_JWT_PUBLIC_KEY": pem, "ANTIFRAGILE_JWT_ALLOW_ANY_ISSUER_AUDIENCE": "on"}
    assert AdminAuth.from_settings(Settings.from_env(opted), kv=None).jwt is not None
    assert "without issuer and audience checks" in caplog.text


async def test_a_token_for_another_audience_is_refused(
    rsa_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    """A token the same key signed for another application (another ``aud``) is no admin."""
    verifier = _pem_verifier(rsa_key, clock, issuer=ISSUER, audience="antifragile")
    assert (await verifier.verify(_token(rsa_key, clock, aud="antifragile")))["sub"] == "user_1"
    for aud in ("another-app", None):
        with pytest.raises(CredentialsRejected):
            await verifier.verify(_token(rsa_key, clock, aud=aud))


async def test_short_rsa_keys_from_a_jwks_are_refused(
    jwks: Jwks, rsa_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    """A 1024-bit key in the JWKS is dropped, as a PEM key of that size is refused: a token it
    signed is rejected; the 2048-bit key next to it still works."""
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwks.keys = [_jwk(short, "weak"), _jwk(rsa_key, "k1")]
    verifier = JwtVerifier(jwks_url=jwks.url, clock=clock, jwks_min_refresh=0)
    with warnings.catch_warnings():  # the attacker's side signs with the short key anyway
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        weak = _token(short, clock, kid="weak")
    with pytest.raises(CredentialsRejected):
        await verifier.verify(weak)
    assert (await verifier.verify(_token(rsa_key, clock)))["sub"] == "user_1"
    with pytest.raises(ConfigurationError, match="2048"):
        JwtVerifier(public_key=_pem(short))


async def test_a_key_stored_before_scopes_keeps_every_scope(clock: FakeClock) -> None:
    """A key record without ``scopes`` (stored by an earlier version, when every key could do
    everything and only admins made keys) still holds every scope after the upgrade."""
    store = MemoryStore()
    keys = ApiKeys(store.kv, clock=clock)
    key = "af_0123456789abcdef_legacysecret"
    record = {"name": "old", "hash": hash_key(key), "created_at": 1.0, "revoked_at": None}
    await store.kv.set(APIKEY_PREFIX + "0123456789abcdef", record, now=clock.time())
    principal = await keys.verify(key)
    assert principal.scopes == frozenset({"read", "operate", "admin"})


@pytest.mark.parametrize(
    "weak", ["aaaaaaaaaaaaaaaa", "abcdefghijklmnop", "0123456789abcdef", "passwordpassword"]
)
def test_low_entropy_bootstrap_keys_are_refused(weak: str) -> None:
    """Long enough is not enough: a key of few distinct characters, of runs, or of little
    estimated entropy is refused -- and the message never holds the key."""
    with pytest.raises(ConfigurationError, match="too easy to guess") as refused:
        ApiKeys(None, bootstrap=["a-Strong-random-K3y-9f3Qz7Lm", weak])
    assert weak not in str(refused.value)
    assert "key 2" in str(refused.value)
    ApiKeys(None, bootstrap=[f"sha256:{hash_key(weak)}"])  # a hash cannot be judged: accepted


def test_a_weak_bootstrap_key_stops_the_app_at_start() -> None:
    """The check runs when the app's middleware is built (at start-up), not at the first
    admin request."""
    from antifragile.service import Settings
    from antifragile.service._bodylimit import EdgeGuard

    settings = Settings.from_env({"ANTIFRAGILE_ADMIN_API_KEYS": "aaaaaaaaaaaaaaaa"})
    with pytest.raises(ConfigurationError, match="too easy to guess"):
        EdgeGuard(lambda scope, receive, send: None, settings)  # type: ignore[arg-type,return-value]
