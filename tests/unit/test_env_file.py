"""``.env`` files and ``ANTIFRAGILE_<NAME>_FILE`` secrets (antifragile.cli._environment)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from antifragile.cli._environment import apply_environment, read_env_file
from antifragile.errors import ConfigurationError


def test_a_dotenv_file_is_parsed_like_a_shell_would_read_it(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# the service\n"
        "\n"
        "export ANTIFRAGILE_DATABASE_URL=sqlite:///data/af.db\n"
        'ANTIFRAGILE_EMAIL_FROM="Acme <hi@acme.test>"\n'
        "LITERAL='$HOME\\n'\n"
        'ESCAPED="two\\nlines \\"quoted\\""\n'
        "TRAILING = value # a comment\n"
        "EMPTY=\n",
        encoding="utf-8",
    )
    assert read_env_file(path) == {
        "ANTIFRAGILE_DATABASE_URL": "sqlite:///data/af.db",
        "ANTIFRAGILE_EMAIL_FROM": "Acme <hi@acme.test>",
        "LITERAL": "$HOME\\n",
        "ESCAPED": 'two\nlines "quoted"',
        "TRAILING": "value",
        "EMPTY": "",
    }


@pytest.mark.parametrize("line", ["not a pair", "A='open", "1BAD=x"])
def test_a_bad_line_names_the_file_and_the_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "prod.env"
    path.write_text(f"OK=1\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"prod\.env, line 2"):
        read_env_file(path)


def test_the_file_fills_in_what_the_environment_lacks_and_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTIFRAGILE_LOG_LEVEL", "debug")
    monkeypatch.delenv("ANTIFRAGILE_REDIS_URL", raising=False)
    path = tmp_path / ".env"
    path.write_text(
        "ANTIFRAGILE_LOG_LEVEL=warning\nANTIFRAGILE_REDIS_URL=redis://localhost:6379/0\n",
        encoding="utf-8",
    )
    restore = apply_environment(path)
    assert os.environ["ANTIFRAGILE_LOG_LEVEL"] == "debug"  # the environment wins
    assert os.environ["ANTIFRAGILE_REDIS_URL"] == "redis://localhost:6379/0"
    restore()
    assert "ANTIFRAGILE_REDIS_URL" not in os.environ
    assert os.environ["ANTIFRAGILE_LOG_LEVEL"] == "debug"


def test_the_default_dotenv_is_read_only_when_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    environ: dict[str, str] = {}
    apply_environment(None, environ)()
    assert environ == {}
    (tmp_path / ".env").write_text("ANTIFRAGILE_APP=shop.jobs:jobs\n", encoding="utf-8")
    apply_environment(None, environ)
    assert environ == {"ANTIFRAGILE_APP": "shop.jobs:jobs"}
    with pytest.raises(ConfigurationError, match="no file at"):
        apply_environment(tmp_path / "missing.env", {})


def test_a_file_secret_is_read_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "whatsapp_app_secret"
    secret.write_text("  wa-app-secret-1\n", encoding="utf-8")
    environ = {"ANTIFRAGILE_WHATSAPP_APP_SECRET_FILE": str(secret)}
    restore = apply_environment(None, environ)
    assert environ["ANTIFRAGILE_WHATSAPP_APP_SECRET"] == "wa-app-secret-1"
    restore()
    assert environ == {"ANTIFRAGILE_WHATSAPP_APP_SECRET_FILE": str(secret)}


def test_a_file_secret_from_the_dotenv_file_counts_too(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("tw-token\n", encoding="utf-8")
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"ANTIFRAGILE_TWILIO_AUTH_TOKEN_FILE={secret}\n", encoding="utf-8")
    environ: dict[str, str] = {}
    apply_environment(dotenv, environ)
    assert environ["ANTIFRAGILE_TWILIO_AUTH_TOKEN"] == "tw-token"


def test_a_secret_given_twice_or_unreadable_changes_nothing(tmp_path: Path) -> None:
    both = {"ANTIFRAGILE_X_KEY": "a", "ANTIFRAGILE_X_KEY_FILE": str(tmp_path / "k")}
    with pytest.raises(ConfigurationError, match="both ANTIFRAGILE_X_KEY and"):
        apply_environment(None, both)
    dotenv = tmp_path / ".env"
    dotenv.write_text("ANTIFRAGILE_APP=a:b\n", encoding="utf-8")
    environ = {"ANTIFRAGILE_RESEND_API_KEY_FILE": str(tmp_path / "absent")}
    with pytest.raises(ConfigurationError) as caught:
        apply_environment(dotenv, environ)
    assert "ANTIFRAGILE_RESEND_API_KEY_FILE: cannot read the secret file" in str(caught.value)
    assert environ == {"ANTIFRAGILE_RESEND_API_KEY_FILE": str(tmp_path / "absent")}
