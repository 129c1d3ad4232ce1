"""A tenant's intent model from the service's config file: ``[tenants.<id>.llm]``, its key from
the environment (or a ``*_FILE``), the model reached over real HTTP (the sandbox's OpenAI
simulator), and the simulator's ``x-ratelimit-*`` headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from antifragile import ConfigurationError
from antifragile.inbound import KeywordClassifier, TenantClassifiers
from antifragile.sandbox import OpenAISimulator, ProviderSandbox
from antifragile.service import Settings
from antifragile.service._assistant import Assistant

MODEL_KEY = "sk-sandbox-tenant"


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    with ProviderSandbox([OpenAISimulator(api_key=MODEL_KEY, requests_per_minute=3)]) as running:
        yield running


def config(tmp_path: Path, base_url: str, llm: str) -> Path:
    path = tmp_path / "service.toml"
    path.write_text(
        f"""
[tenants.bakery]
name = "Bakery"
whatsapp_phone_number_id = "1001"

[tenants.bakery.llm]
base_url = "{base_url}/v1"
model = "gpt-4o-mini"
timeout = 5.0
total_timeout = 10.0
{llm}

[tenants.florist]
name = "Florist"
whatsapp_phone_number_id = "1002"
""",
        encoding="utf-8",
    )
    return path


def settings(tmp_path: Path, path: Path) -> Settings:
    return Settings.from_env(
        {"ANTIFRAGILE_DATABASE_URL": f"sqlite:///{tmp_path / 'llm.db'}"}, config_path=path
    )


async def test_a_tenants_model_classifies_its_messages(
    tmp_path: Path, sandbox: ProviderSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bakery's ``llm`` table gives it a model (its key from ``BAKERY_MODEL_KEY``); the
    florist, without one, gets the keyword classifier; the key is not in the settings."""
    monkeypatch.setenv("BAKERY_MODEL_KEY", MODEL_KEY)
    path = config(tmp_path, sandbox.base_url("openai"), 'api_key_env = "BAKERY_MODEL_KEY"')
    loaded = settings(tmp_path, path)
    assert MODEL_KEY not in repr(loaded)
    assistant = Assistant(loaded)
    try:
        classifiers = assistant.classifier
        assert isinstance(classifiers, TenantClassifiers)
        assert set(classifiers.classifiers) == {"bakery"}
        assert isinstance(classifiers.default, KeywordClassifier)
        answer = await classifiers.classify_for("bakery", "How much for 3 boxes?")
        assert (answer.intent, answer.source) == ("PRICING_INQUIRY", "llm")
        keywords = await classifiers.classify_for("florist", "How much for 3 boxes?")
        assert keywords.source != "llm"
        assert len(sandbox.effects("openai")) == 1
    finally:
        await assistant.close()


async def test_the_key_may_come_from_a_file(
    tmp_path: Path, sandbox: ProviderSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``<api_key_env>_FILE`` names a file holding the key, as the service's own secrets."""
    secret = tmp_path / "model-key"
    secret.write_text(MODEL_KEY + "\n", encoding="utf-8")
    monkeypatch.delenv("BAKERY_MODEL_KEY", raising=False)
    monkeypatch.setenv("BAKERY_MODEL_KEY_FILE", str(secret))
    path = config(tmp_path, sandbox.base_url("openai"), 'api_key_env = "BAKERY_MODEL_KEY"')
    assistant = Assistant(settings(tmp_path, path))
    try:
        answer = await assistant.classifier.classify_for("bakery", "Can I order a cake?")  # type: ignore[attr-defined]
        assert answer.source == "llm"
    finally:
        await assistant.close()


@pytest.mark.parametrize(
    ("llm", "words"),
    [
        ('api_key = "sk-in-the-file"', "never written in the settings"),
        ('api_key_env = "NO_SUCH_MODEL_KEY"', "NO_SUCH_MODEL_KEY"),
        ('api_key_env = "BAKERY_MODEL_KEY"\nresponse_format = "xml"', "response_format"),
        ('api_key_env = "BAKERY_MODEL_KEY"\ntemperature = 1', "unknown LLM intent setting"),
    ],
)
def test_bad_model_settings_stop_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llm: str, words: str
) -> None:
    """A key written in the file, an unset key variable, a bad or unknown setting: the
    service does not start, and the error names the tenant, never a key."""
    monkeypatch.setenv("BAKERY_MODEL_KEY", MODEL_KEY)
    monkeypatch.delenv("NO_SUCH_MODEL_KEY", raising=False)
    path = config(tmp_path, "http://127.0.0.1:9", llm)
    with pytest.raises(ConfigurationError, match=words) as caught:
        Assistant(settings(tmp_path, path))
    assert "bakery" in str(caught.value)
    assert "sk-in-the-file" not in str(caught.value)


def test_an_llm_entry_must_be_a_table(tmp_path: Path) -> None:
    """``llm`` under a tenant is a table, not a string."""
    path = tmp_path / "bad.toml"
    path.write_text('[tenants.bakery]\nllm = "gpt"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"\[tenants.bakery.llm\] must be a table"):
        settings(tmp_path, path)


def test_the_openai_simulator_sends_rate_limit_headers(sandbox: ProviderSandbox) -> None:
    """Every answer carries ``x-ratelimit-*`` with durations as OpenAI writes them; past the
    requests per minute, a 429 ``rate_limit_exceeded`` with ``retry-after``."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"authorization": f"Bearer {MODEL_KEY}"}
    url = f"{sandbox.base_url('openai')}/v1/chat/completions"
    with httpx.Client(timeout=10.0) as client:
        answers = [client.post(url, json=body, headers=headers) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    first, last = answers[0].headers, answers[-1].headers
    assert first["x-ratelimit-limit-requests"] == "3"
    assert first["x-ratelimit-remaining-requests"] == "2"
    assert first["x-ratelimit-reset-requests"].endswith("s")
    assert int(first["x-ratelimit-remaining-tokens"]) < int(first["x-ratelimit-limit-tokens"])
    assert last["x-ratelimit-remaining-requests"] == "0"
    assert answers[-1].json()["error"]["code"] == "rate_limit_exceeded"
    assert float(last["retry-after"]) >= 1
