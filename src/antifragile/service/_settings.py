"""The service's configuration: environment variables ``ANTIFRAGILE_*`` and an optional TOML file.

``Settings.from_env()`` reads the environment (or a mapping given in its place) and the TOML file
named by ``ANTIFRAGILE_CONFIG`` (or *config_path*). The file may hold::

    [service]            # any Settings field by name (an environment variable wins over it)
    public_url = "https://assistant.example.com"
    webhook_max_bytes = 524288

    [tenants.acme]       # one table per tenant: the fields of antifragile.inbound.Tenant
    name = "Acme"
    whatsapp_phone_number_id = "106540352242922"
    [tenants.acme.llm]   # the tenant's intent model (antifragile.inbound LLMIntentConfig)
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini"
    api_key_env = "ACME_OPENAI_API_KEY"   # the variable holding the key (or <it>_FILE)

    [flows.intake]       # conversation flows, kept raw (see antifragile.inbound load_flows)
    [providers.shopify]  # policy overrides per provider, kept raw
    [features]           # feature defaults, kept raw

Webhook secrets are comma-separated lists, so a secret can be rotated (both accepted for a
while); they are held as :class:`pydantic.SecretStr`, so ``repr``, logs and error messages never
show them. A bad value raises :class:`~antifragile.ConfigurationError` naming the variable and
never echoing a secret.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from antifragile.errors import ConfigurationError, redact
from antifragile.inbound._media import DEFAULT_MEDIA_MAX_BYTES
from antifragile.inbound._model import Tenant

PREFIX = "ANTIFRAGILE_"
CONFIG_ENV = "ANTIFRAGILE_CONFIG"
DEFAULT_DATABASE_URL = "sqlite:///antifragile.db"
DEFAULT_WEBHOOK_MAX_BYTES = 1024 * 1024
DEFAULT_INBOX_TTL = 7 * 24 * 3600.0


class Rate(NamedTuple):
    """``limit`` requests per ``period`` seconds (written ``"600/60"``)."""

    limit: int
    period: float

    def __str__(self) -> str:
        return f"{self.limit}/{self.period:g}"


class Settings(BaseModel):
    """Everything the service reads from its environment. Immutable; build it with
    :meth:`from_env`, or directly (``Settings(database_url=...)``) in tests."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    #: the job queue's and inbox's database (``sqlite:///...`` or ``postgresql://...``)
    database_url: str = DEFAULT_DATABASE_URL
    #: a Redis store for the state every process shares -- the providers' circuit breakers and
    #: the per-sender limit (optional; without it the job database holds them)
    redis_url: str | None = None
    #: the TOML file these settings were read from
    config_path: Path | None = None
    #: the external base URL (scheme, host, optional path prefix) providers call the service on;
    #: the Twilio signature is checked over it plus the request's path and query
    public_url: str | None = None

    whatsapp_app_secrets: tuple[SecretStr, ...] = ()
    whatsapp_verify_tokens: tuple[SecretStr, ...] = ()
    twilio_auth_tokens: tuple[SecretStr, ...] = ()
    shopify_webhook_secrets: tuple[SecretStr, ...] = ()
    #: the SendGrid Event Webhook's verification public keys (base64 DER, or PEM): not secret
    sendgrid_webhook_public_keys: tuple[str, ...] = ()
    resend_webhook_secrets: tuple[SecretStr, ...] = ()
    calcom_webhook_secrets: tuple[SecretStr, ...] = ()
    hubspot_webhook_secrets: tuple[SecretStr, ...] = ()
    #: the Mandrill webhook's keys, and its URL exactly as configured at Mandrill (the
    #: signature covers it; default: the public URL + /v1/webhooks/mandrill)
    mandrill_webhook_keys: tuple[SecretStr, ...] = ()
    mandrill_webhook_url: str | None = None
    calendly_webhook_signing_keys: tuple[SecretStr, ...] = ()
    #: Acuity signs its webhooks with the account's API key
    acuity_webhook_keys: tuple[SecretStr, ...] = ()

    #: the largest webhook body accepted (bytes)
    webhook_max_bytes: Annotated[int, Field(ge=1)] = DEFAULT_WEBHOOK_MAX_BYTES
    #: how long an inbound event's dedup record is kept (seconds)
    inbox_ttl: Annotated[float, Field(gt=0, allow_inf_nan=False)] = DEFAULT_INBOX_TTL

    admin_api_keys: tuple[SecretStr, ...] = ()
    jwt_jwks_url: str | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: tuple[str, ...] = ()
    jwt_authorized_parties: tuple[str, ...] = ()
    jwt_leeway: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 5.0

    #: inbound requests per client IP (counted in each process), and messages per sender
    #: (counted across processes in the shared-state store) (``None``: unlimited)
    inbound_ip_rate: Rate | None = Rate(6000, 60.0)
    inbound_sender_rate: Rate | None = Rate(30, 60.0)

    #: the edge (service._bodylimit, service._keys): body limits of the admin API and of the
    #: dashboard's forms (bytes), how long a body may stall (seconds), credentials for the API
    #: docs, and the explicit opt-out from JWT issuer and audience checks
    api_max_bytes: Annotated[int, Field(ge=1)] = 256 * 1024
    dashboard_max_bytes: Annotated[int, Field(ge=1)] = 16 * 1024
    body_read_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 30.0
    docs_require_auth: bool = False
    jwt_allow_any_issuer_audience: bool = False
    #: without a public URL, the Host values a Twilio or HubSpot delivery may name
    allowed_hosts: tuple[str, ...] = ()

    #: jobs in flight at most in the service's own worker
    worker_concurrency: Annotated[int, Field(ge=1)] = 10

    #: alerts (antifragile.inbound._alerts): post them to Slack (the Slack connector's
    #: webhook), email them to these recipients (Resend), the dead jobs and the failure rate
    #: that fire them, and the window a condition fires at most once in (seconds)
    alert_slack: bool = False
    alert_email: tuple[SecretStr, ...] = ()
    alert_dlq_threshold: Annotated[int, Field(ge=1)] = 10
    alert_error_rate: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.5
    alert_window: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 900.0

    #: the API reference at /docs, rendered from the package (off: no /docs page)
    api_docs: bool = True
    #: liveness (antifragile.jobs._liveness): whether /health expects workers in other
    #: processes (degraded while none is alive), when a silent process counts as dead, and the
    #: queue lag (age of the oldest due job) that degrades /health (seconds)
    expect_workers: bool = False
    worker_dead_after: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    queue_lag_threshold: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 300.0
    #: retention (antifragile.jobs._retention): how long the scheduler keeps succeeded jobs
    #: and resolved dead-letter jobs (seconds)
    retention_succeeded: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 7 * 86400.0
    retention_resolved: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 30 * 86400.0

    #: inbound WhatsApp media (antifragile.inbound._media): where the media of tenants with
    #: ``whatsapp_media_download = "on"`` are stored (``None``: not stored, unless a hook
    #: takes them), and the largest one downloaded (bytes)
    whatsapp_media_dir: Path | None = None
    whatsapp_media_max_bytes: Annotated[int, Field(ge=1)] = DEFAULT_MEDIA_MAX_BYTES

    #: the raw tables of the config file
    service: dict[str, Any] = {}
    tenants: dict[str, Tenant] = {}
    #: each tenant's ``[tenants.<id>.llm]`` table, raw (the model's key is never in it)
    tenant_llm: dict[str, dict[str, Any]] = {}
    flows: dict[str, Any] = {}
    providers: dict[str, Any] = {}
    features: dict[str, Any] = {}

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            if name in ("database_url", "redis_url", "jwt_jwks_url") and isinstance(value, str):
                value = safe_url(value)
            yield name, value

    def tenant_list(self) -> list[Tenant]:
        """The configured tenants, in the file's order."""
        return list(self.tenants.values())

    # -- the secrets as plain strings (for verification only) ---------------------------------

    @staticmethod
    def reveal(values: tuple[SecretStr, ...]) -> tuple[str, ...]:
        """The plain values of a secret list (hand them to a verifier, never to a log)."""
        return tuple(value.get_secret_value() for value in values)

    # -- building -----------------------------------------------------------------------------

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        config_path: str | Path | None = None,
    ) -> Settings:
        """Settings from *environ* (default ``os.environ``) and the TOML file *config_path*
        (default: ``ANTIFRAGILE_CONFIG``, else none). Environment variables win over the file's
        ``[service]`` table."""
        env = os.environ if environ is None else environ
        path_text = str(config_path) if config_path is not None else env.get(CONFIG_ENV)
        values: dict[str, Any] = {}
        if path_text:
            values.update(_load_file(Path(path_text)))
        for name, spec in _FIELDS.items():
            raw = env.get(spec.env)
            if raw is None or (raw.strip() == "" and name not in _BLANK_MEANS_NONE):
                continue
            values[name] = spec.parse(raw, spec.env)
        try:
            return cls(**values)
        except ValidationError as exc:
            raise _config_error(exc, source="settings") from None


def safe_url(url: str) -> str:
    """*url* with any password (and secret-looking query values) masked, for display."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        userinfo, _, host = rest.partition("@")
        user = userinfo.split(":", 1)[0]
        rest = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
        url = f"{scheme}://{rest}"
    return redact(url)


# -- parsing one variable -------------------------------------------------------------------------


class _Field(NamedTuple):
    env: str
    parse: Any  # Callable[[str, str], Any]
    secret: bool = False


def _text(raw: str, env: str) -> str:
    return raw.strip()


def _optional_text(raw: str, env: str) -> str | None:
    return raw.strip() or None


def _url(raw: str, env: str) -> str | None:
    text = raw.strip()
    if not text:
        return None
    if "://" not in text:
        raise ConfigurationError(f"{env} must be a URL (scheme://...), got {redact(text)!r}")
    return text


def _list(raw: str, env: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _secrets(raw: str, env: str) -> tuple[SecretStr, ...]:
    return tuple(SecretStr(part) for part in _list(raw, env))


def _positive_int(raw: str, env: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigurationError(f"{env} must be a whole number, got {raw.strip()!r}") from None
    if value < 1:
        raise ConfigurationError(f"{env} must be >= 1, got {value}")
    return value


def _seconds(raw: str, env: str) -> float:
    text = raw.strip().lower()
    scale = 1.0
    for suffix, size in (("s", 1.0), ("m", 60.0), ("h", 3600.0), ("d", 86400.0)):
        if text.endswith(suffix):
            text, scale = text[:-1].strip(), size
            break
    try:
        value = float(text) * scale
    except ValueError:
        raise ConfigurationError(
            f"{env} must be a number of seconds (or 15m, 2h, 7d), got {raw.strip()!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{env} must be a finite number of seconds >= 0")
    return value


def _switch(raw: str, env: str) -> bool:
    text = raw.strip().lower()
    if text in ("1", "on", "true", "yes"):
        return True
    if text in ("0", "off", "false", "no", ""):
        return False
    raise ConfigurationError(f"{env} must be on or off, got {raw.strip()!r}")


def _fraction(raw: str, env: str) -> float:
    """``0.5`` or ``50%`` -> 0.5."""
    text = raw.strip()
    scale = 100.0 if text.endswith("%") else 1.0
    try:
        value = float(text.rstrip("%").strip()) / scale
    except ValueError:
        value = math.nan
    if not 0.0 < value <= 1.0:
        raise ConfigurationError(
            f"{env} must be a fraction in (0, 1] or a percentage, got {text!r}"
        )
    return value


def parse_rate(raw: str, env: str = "rate") -> Rate | None:
    """``"600/60"`` -> ``Rate(600, 60.0)``; ``""``, ``"off"`` or ``"0"`` -> ``None``."""
    text = raw.strip().lower()
    if text in ("", "off", "none", "0"):
        return None
    limit_text, slash, period_text = text.partition("/")
    try:
        limit = int(limit_text)
        period = _seconds(period_text, env) if slash else 1.0
    except (ValueError, ConfigurationError):
        limit, period = -1, -1.0
    if limit < 1 or not period > 0:
        raise ConfigurationError(
            f"{env} must look like 'requests/seconds' (e.g. 600/60) or 'off', got {raw.strip()!r}"
        )
    return Rate(limit, period)


_FIELDS: dict[str, _Field] = {
    "database_url": _Field("ANTIFRAGILE_DATABASE_URL", _text),
    "redis_url": _Field("ANTIFRAGILE_REDIS_URL", _url),
    "public_url": _Field("ANTIFRAGILE_PUBLIC_URL", _url),
    "whatsapp_app_secrets": _Field("ANTIFRAGILE_WHATSAPP_APP_SECRET", _secrets, True),
    "whatsapp_verify_tokens": _Field("ANTIFRAGILE_WHATSAPP_VERIFY_TOKEN", _secrets, True),
    "twilio_auth_tokens": _Field("ANTIFRAGILE_TWILIO_AUTH_TOKEN", _secrets, True),
    "shopify_webhook_secrets": _Field("ANTIFRAGILE_SHOPIFY_WEBHOOK_SECRET", _secrets, True),
    "sendgrid_webhook_public_keys": _Field("ANTIFRAGILE_SENDGRID_WEBHOOK_PUBLIC_KEY", _list),
    "resend_webhook_secrets": _Field("ANTIFRAGILE_RESEND_WEBHOOK_SECRET", _secrets, True),
    "calcom_webhook_secrets": _Field("ANTIFRAGILE_CALCOM_WEBHOOK_SECRET", _secrets, True),
    "hubspot_webhook_secrets": _Field("ANTIFRAGILE_HUBSPOT_WEBHOOK_SECRET", _secrets, True),
    "mandrill_webhook_keys": _Field("ANTIFRAGILE_MANDRILL_WEBHOOK_KEY", _secrets, True),
    "mandrill_webhook_url": _Field("ANTIFRAGILE_MANDRILL_WEBHOOK_URL", _url),
    "calendly_webhook_signing_keys": _Field(
        "ANTIFRAGILE_CALENDLY_WEBHOOK_SIGNING_KEY", _secrets, True
    ),
    "acuity_webhook_keys": _Field("ANTIFRAGILE_ACUITY_WEBHOOK_KEY", _secrets, True),
    "webhook_max_bytes": _Field("ANTIFRAGILE_WEBHOOK_MAX_BYTES", _positive_int),
    "inbox_ttl": _Field("ANTIFRAGILE_INBOX_TTL", _seconds),
    "admin_api_keys": _Field("ANTIFRAGILE_ADMIN_API_KEYS", _secrets, True),
    "jwt_jwks_url": _Field("ANTIFRAGILE_JWT_JWKS_URL", _url),
    "jwt_public_key": _Field("ANTIFRAGILE_JWT_PUBLIC_KEY", _optional_text),
    "jwt_issuer": _Field("ANTIFRAGILE_JWT_ISSUER", _optional_text),
    "jwt_audience": _Field("ANTIFRAGILE_JWT_AUDIENCE", _list),
    "jwt_authorized_parties": _Field("ANTIFRAGILE_JWT_AUTHORIZED_PARTIES", _list),
    "jwt_leeway": _Field("ANTIFRAGILE_JWT_LEEWAY", _seconds),
    "inbound_ip_rate": _Field("ANTIFRAGILE_INBOUND_IP_RATE", parse_rate),
    "inbound_sender_rate": _Field("ANTIFRAGILE_INBOUND_SENDER_RATE", parse_rate),
    "worker_concurrency": _Field("ANTIFRAGILE_WORKER_CONCURRENCY", _positive_int),
    "api_max_bytes": _Field("ANTIFRAGILE_API_MAX_BYTES", _positive_int),
    "dashboard_max_bytes": _Field("ANTIFRAGILE_DASHBOARD_MAX_BYTES", _positive_int),
    "body_read_timeout": _Field("ANTIFRAGILE_BODY_READ_TIMEOUT", _seconds),
    "docs_require_auth": _Field("ANTIFRAGILE_DOCS_REQUIRE_AUTH", _switch),
    "jwt_allow_any_issuer_audience": _Field("ANTIFRAGILE_JWT_ALLOW_ANY_ISSUER_AUDIENCE", _switch),
    "allowed_hosts": _Field("ANTIFRAGILE_ALLOWED_HOSTS", _list),
    "alert_slack": _Field("ANTIFRAGILE_ALERT_SLACK", _switch),
    "api_docs": _Field("ANTIFRAGILE_API_DOCS", _switch),
    "alert_email": _Field("ANTIFRAGILE_ALERT_EMAIL", _secrets, True),
    "alert_dlq_threshold": _Field("ANTIFRAGILE_ALERT_DLQ_THRESHOLD", _positive_int),
    "alert_error_rate": _Field("ANTIFRAGILE_ALERT_ERROR_RATE", _fraction),
    "alert_window": _Field("ANTIFRAGILE_ALERT_WINDOW", _seconds),
    "expect_workers": _Field("ANTIFRAGILE_EXPECT_WORKERS", _switch),
    "worker_dead_after": _Field("ANTIFRAGILE_WORKER_DEAD_AFTER", _seconds),
    "queue_lag_threshold": _Field("ANTIFRAGILE_QUEUE_LAG_THRESHOLD", _seconds),
    "retention_succeeded": _Field("ANTIFRAGILE_RETENTION_SUCCEEDED", _seconds),
    "retention_resolved": _Field("ANTIFRAGILE_RETENTION_RESOLVED", _seconds),
    "whatsapp_media_dir": _Field("ANTIFRAGILE_WHATSAPP_MEDIA_DIR", _optional_text),
    "whatsapp_media_max_bytes": _Field("ANTIFRAGILE_WHATSAPP_MEDIA_MAX_BYTES", _positive_int),
}
# variables whose empty value means "none" (rather than "not set")
_BLANK_MEANS_NONE = frozenset({"inbound_ip_rate", "inbound_sender_rate"})

#: the environment variable of each setting, for documentation and error messages
ENVIRONMENT: dict[str, str] = {name: spec.env for name, spec in _FIELDS.items()}
_SECRET_FIELDS = frozenset(name for name, spec in _FIELDS.items() if spec.secret)
_TENANT_FIELDS = frozenset(f.name for f in dataclass_fields(Tenant)) - {"id"}


def _config_error(exc: ValidationError, *, source: str) -> ConfigurationError:
    """A ConfigurationError naming the bad settings (their variables), never their values."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        name = str(error["loc"][0]) if error["loc"] else "?"
        where = f"{ENVIRONMENT[name]} ({name})" if name in ENVIRONMENT else name
        if name in _SECRET_FIELDS:
            problems.append(f"{where}: invalid value")
        else:
            problems.append(f"{where}: {error['msg']}")
    return ConfigurationError(f"invalid {source}: " + "; ".join(problems))


# -- the TOML file --------------------------------------------------------------------------------


def _table(data: Mapping[str, Any], name: str, path: Path) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigurationError(f"{path}: [{name}] must be a table")
    return value


def _coerce_file_value(name: str, value: Any, path: Path) -> Any:
    """A ``[service]`` value as the field wants it (lists for secret lists, '600/60' rates)."""
    spec = _FIELDS.get(name)
    where = f"{path} [service].{name}"
    if spec is not None and spec.parse is _secrets:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise ConfigurationError(f"{where} must be a string or a list of strings")
        return tuple(SecretStr(v) for item in items for v in _list(item, where))
    if spec is not None and spec.parse is parse_rate:
        if isinstance(value, str):
            return parse_rate(value, where)
        raise ConfigurationError(f"{where} must be a string like '600/60' or 'off'")
    if spec is not None and spec.parse is _list and isinstance(value, str):
        return _list(value, where)
    if spec is not None and spec.parse is _seconds and isinstance(value, str):
        return _seconds(value, where)
    if spec is not None and spec.parse in (_fraction, _switch) and isinstance(value, str):
        return spec.parse(value, where)
    return value


def _load_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigurationError(f"{CONFIG_ENV}: no config file at {str(path)!r}") from None
    except OSError as exc:
        raise ConfigurationError(
            f"{CONFIG_ENV}: cannot read {str(path)!r}: {exc.strerror}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{CONFIG_ENV}: {str(path)!r} is not valid TOML: {exc}") from None
    known = {"service", "tenants", "flows", "providers", "features"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown table(s) {', '.join(unknown)} (expected: {', '.join(sorted(known))})"
        )
    service = _table(data, "service", path)
    values: dict[str, Any] = {}
    settable = set(Settings.model_fields) - {
        "service",
        "tenants",
        "tenant_llm",
        "flows",
        "providers",
        "features",
    }
    for name, value in service.items():
        if name not in settable:
            raise ConfigurationError(f"{path}: [service] has no setting {name!r}")
        values[name] = _coerce_file_value(name, value, path)
    tenants: dict[str, Tenant] = {}
    tenant_llm: dict[str, dict[str, Any]] = {}
    for tenant_id, table in _table(data, "tenants", path).items():
        if not isinstance(table, dict):
            raise ConfigurationError(f"{path}: [tenants.{tenant_id}] must be a table")
        if "llm" in table:
            table = dict(table)
            llm = table.pop("llm")
            if not isinstance(llm, dict):
                raise ConfigurationError(f"{path}: [tenants.{tenant_id}.llm] must be a table")
            if "api_key" in llm:  # kept out of the settings: never held, never shown
                raise ConfigurationError(
                    f"{path}: [tenants.{tenant_id}.llm] holds api_key: the model's key is "
                    "never written in the settings; name the variable holding it with api_key_env"
                )
            tenant_llm[tenant_id] = llm
        unknown = sorted(set(table) - _TENANT_FIELDS)
        if unknown:
            raise ConfigurationError(
                f"{path}: [tenants.{tenant_id}] has unknown field(s) {', '.join(unknown)}"
            )
        bad = sorted(k for k, v in table.items() if v is not None and not isinstance(v, str))
        if bad:
            raise ConfigurationError(
                f"{path}: [tenants.{tenant_id}] field(s) {', '.join(bad)} must be strings"
            )
        tenants[tenant_id] = Tenant(id=tenant_id, **table)
    values.update(
        config_path=path,
        # secrets live only in their SecretStr fields, never in the raw table
        service={k: ("***" if k in _SECRET_FIELDS else v) for k, v in service.items()},
        tenants=tenants,
        tenant_llm=tenant_llm,
        flows=_table(data, "flows", path),
        providers=_table(data, "providers", path),
        features=_table(data, "features", path),
    )
    return values
