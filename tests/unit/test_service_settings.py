"""The service settings: environment variables, the TOML file, and clear errors that never
show a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from antifragile.errors import ConfigurationError
from antifragile.inbound._model import Tenant
from antifragile.service import Rate, Settings, parse_rate


def test_defaults() -> None:
    """With nothing set: SQLite in the current directory, 1 MiB bodies, a 7-day inbox, no
    secrets, the default inbound limits."""
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///antifragile.db"
    assert settings.redis_url is None
    assert settings.webhook_max_bytes == 1024 * 1024
    assert settings.inbox_ttl == 7 * 86400
    assert settings.whatsapp_app_secrets == ()
    assert settings.jwt_leeway == 5.0
    assert settings.inbound_ip_rate == Rate(6000, 60.0)
    assert settings.inbound_sender_rate == Rate(30, 60.0)
    assert settings.tenants == {}
    assert settings.config_path is None


def test_environment_variables() -> None:
    """Every ANTIFRAGILE_* variable lands in its setting; lists are comma-separated."""
    settings = Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": "postgresql://u:pw@db/app",
            "ANTIFRAGILE_REDIS_URL": "redis://127.0.0.1:6379/0",
            "ANTIFRAGILE_PUBLIC_URL": "https://assistant.example.com",
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": "new-secret, old-secret",
            "ANTIFRAGILE_WHATSAPP_VERIFY_TOKEN": "verify-me",
            "ANTIFRAGILE_TWILIO_AUTH_TOKEN": "tw1",
            "ANTIFRAGILE_SHOPIFY_WEBHOOK_SECRET": "sh1,sh2",
            "ANTIFRAGILE_WEBHOOK_MAX_BYTES": "4096",
            "ANTIFRAGILE_INBOX_TTL": "2d",
            "ANTIFRAGILE_ADMIN_API_KEYS": "k1,k2",
            "ANTIFRAGILE_JWT_JWKS_URL": "https://issuer.example.com/.well-known/jwks.json",
            "ANTIFRAGILE_JWT_ISSUER": "https://issuer.example.com/",
            "ANTIFRAGILE_JWT_AUDIENCE": "antifragile, admin",
            "ANTIFRAGILE_JWT_AUTHORIZED_PARTIES": "https://app.example.com",
            "ANTIFRAGILE_JWT_LEEWAY": "10",
            "ANTIFRAGILE_INBOUND_IP_RATE": "100/1m",
            "ANTIFRAGILE_INBOUND_SENDER_RATE": "off",
            "ANTIFRAGILE_WORKER_CONCURRENCY": "4",
        }
    )
    assert settings.database_url == "postgresql://u:pw@db/app"
    assert settings.public_url == "https://assistant.example.com"
    assert Settings.reveal(settings.whatsapp_app_secrets) == ("new-secret", "old-secret")
    assert Settings.reveal(settings.whatsapp_verify_tokens) == ("verify-me",)
    assert Settings.reveal(settings.shopify_webhook_secrets) == ("sh1", "sh2")
    assert Settings.reveal(settings.admin_api_keys) == ("k1", "k2")
    assert settings.webhook_max_bytes == 4096
    assert settings.inbox_ttl == 2 * 86400
    assert settings.jwt_audience == ("antifragile", "admin")
    assert settings.jwt_leeway == 10.0
    assert settings.inbound_ip_rate == Rate(100, 60.0)
    assert settings.inbound_sender_rate is None
    assert settings.worker_concurrency == 4


def test_status_webhook_secrets_are_rotatable_lists() -> None:
    """The status webhooks' secrets are comma-separated secret lists (never in ``repr``); the
    SendGrid verification keys, public, a plain list."""
    settings = Settings.from_env(
        {
            "ANTIFRAGILE_SENDGRID_WEBHOOK_PUBLIC_KEY": "MFkwkey1, MFkwkey2",
            "ANTIFRAGILE_RESEND_WEBHOOK_SECRET": "whsec_new,whsec_old",
            "ANTIFRAGILE_CALCOM_WEBHOOK_SECRET": "cal1",
            "ANTIFRAGILE_HUBSPOT_WEBHOOK_SECRET": "hs-new,hs-old",
        }
    )
    assert settings.sendgrid_webhook_public_keys == ("MFkwkey1", "MFkwkey2")
    assert Settings.reveal(settings.resend_webhook_secrets) == ("whsec_new", "whsec_old")
    assert Settings.reveal(settings.calcom_webhook_secrets) == ("cal1",)
    assert Settings.reveal(settings.hubspot_webhook_secrets) == ("hs-new", "hs-old")
    shown = repr(settings)
    for secret in ("whsec_new", "whsec_old", "cal1", "hs-new", "hs-old"):
        assert secret not in shown


def test_secrets_never_show_in_repr() -> None:
    """repr/str of the settings show neither secrets nor database passwords."""
    settings = Settings.from_env(
        {
            "ANTIFRAGILE_DATABASE_URL": "postgresql://u:db-password@db/app",
            "ANTIFRAGILE_REDIS_URL": "redis://:redis-password@cache:6379/0",
            "ANTIFRAGILE_WHATSAPP_APP_SECRET": "wa-app-secret",
            "ANTIFRAGILE_TWILIO_AUTH_TOKEN": "twilio-token",
            "ANTIFRAGILE_ADMIN_API_KEYS": "admin-key",
        }
    )
    for text in (repr(settings), str(settings)):
        for secret in (
            "db-password",
            "redis-password",
            "wa-app-secret",
            "twilio-token",
            "admin-key",
        ):
            assert secret not in text


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ANTIFRAGILE_WEBHOOK_MAX_BYTES", "lots"),
        ("ANTIFRAGILE_WEBHOOK_MAX_BYTES", "0"),
        ("ANTIFRAGILE_INBOX_TTL", "soon"),
        ("ANTIFRAGILE_INBOX_TTL", "0"),
        ("ANTIFRAGILE_JWT_LEEWAY", "-1"),
        ("ANTIFRAGILE_INBOUND_IP_RATE", "fast"),
        ("ANTIFRAGILE_INBOUND_SENDER_RATE", "10/0"),
        ("ANTIFRAGILE_WORKER_CONCURRENCY", "many"),
        ("ANTIFRAGILE_REDIS_URL", "localhost"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    """A bad value is a ConfigurationError that names the variable."""
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({variable: value})


def test_rates() -> None:
    """parse_rate reads N/SECONDS (with units) and 'off'."""
    assert parse_rate("600/60") == Rate(600, 60.0)
    assert parse_rate("5/1m") == Rate(5, 60.0)
    assert parse_rate("10") == Rate(10, 1.0)
    assert parse_rate("off") is None
    assert str(Rate(30, 60.0)) == "30/60"


CONFIG = """
[service]
public_url = "https://from-file.example.com"
webhook_max_bytes = 2048
whatsapp_app_secrets = ["file-secret-1", "file-secret-2"]
inbound_ip_rate = "50/10"

[tenants.acme]
name = "Acme"
whatsapp_phone_number_id = "106540352242922"
owner_email = "owner@acme.test"

[tenants.bolt]
name = "Bolt"
twilio_number = "+15550001111"
flow = "support"

[flows.intake]
greeting = "Hi!"

[[flows.intake.steps]]
field = "name"
question = "Your name?"

[providers.shopify]
timeout = 5

[features]
ai_classifier = false
"""


def test_config_file(tmp_path: Path) -> None:
    """The TOML file's [service] sets any setting; tenants become Tenant objects; flows,
    providers and features are kept raw."""
    path = tmp_path / "antifragile.toml"
    path.write_text(CONFIG)
    settings = Settings.from_env({"ANTIFRAGILE_CONFIG": str(path)})
    assert settings.config_path == path
    assert settings.public_url == "https://from-file.example.com"
    assert settings.webhook_max_bytes == 2048
    assert Settings.reveal(settings.whatsapp_app_secrets) == ("file-secret-1", "file-secret-2")
    assert settings.inbound_ip_rate == Rate(50, 10.0)
    assert settings.tenants["acme"] == Tenant(
        id="acme",
        name="Acme",
        whatsapp_phone_number_id="106540352242922",
        owner_email="owner@acme.test",
    )
    assert settings.tenants["bolt"].flow == "support"
    assert [t.id for t in settings.tenant_list()] == ["acme", "bolt"]
    assert settings.flows["intake"]["steps"][0]["field"] == "name"
    assert settings.providers == {"shopify": {"timeout": 5}}
    assert settings.features == {"ai_classifier": False}
    assert "file-secret" not in repr(settings)


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    """A variable overrides the same setting in the file's [service] table."""
    path = tmp_path / "antifragile.toml"
    path.write_text(CONFIG)
    settings = Settings.from_env({"ANTIFRAGILE_WEBHOOK_MAX_BYTES": "999"}, config_path=path)
    assert settings.webhook_max_bytes == 999
    assert settings.public_url == "https://from-file.example.com"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[service]\nno_such = 1\n", "no setting 'no_such'"),
        ("[tenants.acme]\ncolour = 'red'\n", r"tenants.acme.*colour"),
        ("[tenants.acme]\nname = 5\n", r"tenants.acme.*must be strings"),
        ("[other]\nx = 1\n", "unknown table"),
        ("[service\n", "not valid TOML"),
        ("[service]\nwebhook_max_bytes = 'big'\n", "webhook_max_bytes"),
        ("[service]\ninbound_ip_rate = 5\n", "inbound_ip_rate"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, expected: str) -> None:
    """A bad config file is a ConfigurationError saying what is wrong."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=expected):
        Settings.from_env({}, config_path=path)


def test_missing_config_file(tmp_path: Path) -> None:
    """A config path that does not exist is an error naming ANTIFRAGILE_CONFIG."""
    with pytest.raises(ConfigurationError, match="ANTIFRAGILE_CONFIG"):
        Settings.from_env({"ANTIFRAGILE_CONFIG": str(tmp_path / "missing.toml")})


def test_a_bad_secret_is_never_echoed(tmp_path: Path) -> None:
    """A secret of the wrong type in the file is reported without its value."""
    path = tmp_path / "bad.toml"
    path.write_text("[service]\nadmin_api_keys = [1234567890]\n")
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({}, config_path=path)
    assert "1234567890" not in str(caught.value)
