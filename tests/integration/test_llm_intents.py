"""The LLM intent classifier against the OpenAI-compatible simulator over real HTTP: a good
answer is used; every fault kind (5xx, 429 with ``retry-after``, ``insufficient_quota``, a hang,
a malformed body, garbage content) makes the keyword classifier answer, and the message
pipeline still replies; no phone number or email address reaches the model."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from antifragile import ConfigurationError, Constant, FakeClock, Policy, Retry, RetryBudget
from antifragile.inbound import (
    KeywordClassifier,
    LLMIntentClassifier,
    LLMIntentConfig,
    TenantClassifiers,
    mask_personal_data,
)
from antifragile.jobs import JobState
from antifragile.observability import Metrics
from antifragile.sandbox import (
    DEFAULT_CHAT_RULES,
    ChatRule,
    OpenAISimulator,
    ProviderFault,
    ProviderSandbox,
)
from tests.integration.test_sessions import (
    CONTACT,
    TENANT,
    Providers,
    build,
    process_once,
    simulators,
)
from tests.integration.test_sessions import providers as providers

KEY = "sk-test-llm-key"
TEXT = "What is the price of a cake? I'm ada@example.com, +44 7700 900123"
RULES = (
    ChatRule(r"shouting", "SHOUTING", 0.9),
    ChatRule(r"overconfident", "ORDER_REQUEST", 7.0),
    ChatRule(r"chatter", content="Sure! The intent is probably pricing."),
    ChatRule(r"croissants", "ORDER_REQUEST", 0.95, {"product": "croissants", "quantity": 12}),
    *DEFAULT_CHAT_RULES,
)

#: fault id -> (faults for the next requests, text, fallback reason, requests that reach it)
FAULTS: dict[str, tuple[list[ProviderFault], str, str, int]] = {
    "5xx": ([ProviderFault.error(503)] * 2, TEXT, "unavailable", 2),
    "429-retry-after": ([ProviderFault.rate_limited(30)], TEXT, "rate_limited", 1),
    "insufficient_quota": ([ProviderFault.error(429, code=1)], TEXT, "quota", 1),
    "hang": ([ProviderFault.hang()] * 2, TEXT, "timeout", 2),
    "malformed-body": ([ProviderFault.malformed()], TEXT, "garbage", 1),
    "unknown-intent": ([], "shouting about the price", "garbage", 1),
    "confidence-out-of-range": ([], "overconfident price", "garbage", 1),
    "content-not-json": ([], "chatter about the price", "garbage", 1),
}


@pytest.fixture
def sandbox() -> Iterator[ProviderSandbox]:
    """The session's providers and the model, one sandbox."""
    with ProviderSandbox([*simulators(), OpenAISimulator(rules=RULES, api_key=KEY)]) as running:
        yield running


def _config(sandbox: ProviderSandbox, *, hangs: bool = False, **options: Any) -> LLMIntentConfig:
    """Short timeouts only where the model hangs: elsewhere a loaded machine must never turn
    an answer into a timeout."""
    return LLMIntentConfig(
        base_url=f"{sandbox.base_url('openai')}/v1",
        model="gpt-4o-mini",
        api_key=KEY,
        timeout=0.3 if hangs else 10.0,
        total_timeout=1.0 if hangs else 20.0,
        **options,
    )


@pytest.fixture
async def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def classifier(
    request: pytest.FixtureRequest, sandbox: ProviderSandbox, clock: FakeClock, metrics: Metrics
) -> AsyncIterator[LLMIntentClassifier]:
    hangs = getattr(request.node, "callspec", None) is not None and (
        request.node.callspec.params.get("fault") == "hang"
    )
    made = LLMIntentClassifier(
        _config(sandbox, hangs=hangs), tenant="acme", clock=clock, metrics=metrics
    )
    yield made
    await made.aclose()


def _model_requests(sandbox: ProviderSandbox) -> list[Any]:
    return [r for r in sandbox.requests if r.path.startswith("/openai/")]


def _counted(metrics: Metrics) -> dict[tuple[str, str], float]:
    text = generate_latest(metrics.registry).decode()
    counted: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("antifragile_intent_classifier_total{"):
            labels, _, value = line.partition("} ")
            pairs = dict(p.split("=") for p in labels.split("{", 1)[1].split(","))
            counted[(pairs["classifier"].strip('"'), pairs["reason"].strip('"'))] = float(value)
    return counted


async def test_a_good_answer_is_used_and_no_personal_data_reaches_the_model(
    classifier: LLMIntentClassifier, sandbox: ProviderSandbox, metrics: Metrics
) -> None:
    """The model's validated answer is the classification; the request is a chat completion
    with structured output, the bearer key, and the text with phone and email masked."""
    result = await classifier.classify(TEXT)
    assert (result.intent, result.confidence, result.source) == ("PRICING_INQUIRY", 0.93, "llm")
    (request,) = _model_requests(sandbox)
    assert request.path == "/openai/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    body = json.loads(request.body)
    assert body["model"] == "gpt-4o-mini"
    assert body["response_format"]["type"] == "json_schema"
    assert (
        "PRICING_INQUIRY"
        in body["response_format"]["json_schema"]["schema"]["properties"]["intent"]["enum"]
    )
    assert body["messages"][-1] == {
        "role": "user",
        "content": "What is the price of a cake? I'm [email], [phone]",
    }
    raw = request.body.decode()
    for secret in ("7700", "900123", "ada@example.com", CONTACT):
        assert secret not in raw
    assert _counted(metrics) == {("llm", "none"): 1.0}


async def test_the_rules_entities_join_the_models(classifier: LLMIntentClassifier) -> None:
    """The model's entities are kept; the ones the keyword rules find in the text win."""
    result = await classifier.classify("3 boxes of croissants for tomorrow, to ada@example.com")
    assert result.source == "llm"
    assert result.entities["product"] == "croissants"
    assert (result.entities["quantity"], result.entities["unit"]) == (3, "boxes")
    assert result.entities["date_text"] == "tomorrow"
    assert result.entities["has_email"] is True
    assert "ada@example.com" not in str(result.entities)


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_every_fault_kind_falls_back_to_keywords(
    fault: str, classifier: LLMIntentClassifier, sandbox: ProviderSandbox, metrics: Metrics
) -> None:
    """The keyword classifier answers, the metric names the reason, and only transient
    failures are tried again (never ``insufficient_quota``, never a far ``retry-after``)."""
    script, text, reason, reached = FAULTS[fault]
    if script:
        sandbox.faults("openai", script=script)
    result = await classifier.classify(text)
    assert result.source == "keywords"
    assert result.intent == "PRICING_INQUIRY"
    assert len(_model_requests(sandbox)) == reached
    assert _counted(metrics) == {("keywords", reason): 1.0}


async def test_insufficient_quota_pauses_the_model(
    classifier: LLMIntentClassifier, sandbox: ProviderSandbox, clock: FakeClock, metrics: Metrics
) -> None:
    """After ``insufficient_quota`` no request goes to the model until the pause ends."""
    sandbox.simulator("openai").configure({"quota": 1})
    assert (await classifier.classify(TEXT)).source == "llm"
    assert (await classifier.classify(TEXT)).source == "keywords"  # the 429 quota answer
    assert classifier.paused
    assert (await classifier.classify(TEXT)).source == "keywords"
    assert len(_model_requests(sandbox)) == 2
    clock.advance(classifier.config.quota_pause)
    sandbox.reset()  # the account is paid for again
    assert (await classifier.classify(TEXT)).source == "llm"
    assert _counted(metrics) == {("llm", "none"): 2.0, ("keywords", "quota"): 2.0}


async def test_an_open_breaker_stops_asking_the_model(
    classifier: LLMIntentClassifier, sandbox: ProviderSandbox, metrics: Metrics
) -> None:
    """With the model failing, the breaker opens and later messages do not wait for it."""
    sandbox.faults("openai", script=[ProviderFault.error(500)] * 20)
    for _ in range(6):
        assert (await classifier.classify(TEXT)).source == "keywords"
    asked = len(_model_requests(sandbox))
    assert (await classifier.classify(TEXT)).source == "keywords"
    assert len(_model_requests(sandbox)) == asked
    assert _counted(metrics)[("keywords", "circuit_open")] >= 1.0


async def test_json_object_mode_and_the_tenant_settings(
    sandbox: ProviderSandbox, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant's settings name the variable holding the key; ``json_object`` mode asks for
    a JSON object without a schema; bad settings are refused before use."""
    monkeypatch.setenv("ACME_LLM_KEY", KEY)
    settings = {
        "base_url": f"{sandbox.base_url('openai')}/v1",
        "model": "grok-3-mini",
        "api_key_env": "ACME_LLM_KEY",
        "response_format": "json_object",
        "intents": ["PRICING_INQUIRY", "ORDER_REQUEST"],
    }
    config = LLMIntentConfig.from_mapping(settings, env=os.environ)
    assert KEY not in repr(config)
    made = LLMIntentClassifier(config, clock=clock)
    try:
        assert (await made.classify("the price please")).source == "llm"
    finally:
        await made.aclose()
    (request,) = _model_requests(sandbox)
    assert json.loads(request.body)["response_format"] == {"type": "json_object"}
    with pytest.raises(ConfigurationError, match="unset"):
        LLMIntentConfig.from_mapping({**settings, "api_key_env": "NOT_SET_ANYWHERE"}, env={})
    with pytest.raises(ConfigurationError, match="never written in the settings"):
        LLMIntentConfig.from_mapping({**settings, "api_key": KEY}, env=os.environ)
    with pytest.raises(ConfigurationError, match="unknown"):
        LLMIntentConfig.from_mapping({**settings, "temperature": 0}, env=os.environ)
    with pytest.raises(ConfigurationError, match="timeout"):
        LLMIntentConfig.from_mapping({**settings, "timeout": 0}, env=os.environ)


async def test_tenant_classifiers_route_by_tenant(classifier: LLMIntentClassifier) -> None:
    """Each tenant has its classifier; the others, and calls without a tenant, the default."""
    keywords = KeywordClassifier()
    tenants = TenantClassifiers({"acme": classifier}, default=keywords)
    assert (await tenants.classify_for("acme", TEXT)).source == "llm"
    assert (await tenants.classify_for("other", TEXT)).source == "keywords"
    assert (await tenants.classify(TEXT)).source == "keywords"
    await tenants.aclose()
    assert classifier._client.is_closed


async def test_a_refused_key_is_not_retried(
    sandbox: ProviderSandbox, clock: FakeClock, metrics: Metrics
) -> None:
    """A 401 is the tenant's mistake, not the model's: asked once, the keywords answer."""
    config = LLMIntentConfig(
        base_url=f"{sandbox.base_url('openai')}/v1", model="gpt-4o-mini", api_key="sk-wrong"
    )
    made = LLMIntentClassifier(config, clock=clock, metrics=metrics)
    try:
        assert (await made.classify(TEXT)).source == "keywords"
    finally:
        await made.aclose()
    (request,) = _model_requests(sandbox)
    assert request.headers["authorization"] == "Bearer sk-wrong"
    assert _counted(metrics) == {("keywords", "error"): 1.0}


async def test_a_spent_retry_budget_stops_the_retry(
    sandbox: ProviderSandbox, clock: FakeClock, metrics: Metrics
) -> None:
    """With no retry budget left, a 5xx is not tried again: the keywords answer at once."""
    config = _config(sandbox)
    policy = Policy(
        "llm-intents:acme",
        timeout=config.timeout,
        total_timeout=config.total_timeout,
        retry=Retry(attempts=2, backoff=Constant(0.1)),
        budget=RetryBudget(0.0, min_retries_per_second=0.0, clock=clock),
        breaker=None,
        clock=clock,
    )
    made = LLMIntentClassifier(config, policy=policy, clock=clock, metrics=metrics)
    sandbox.faults("openai", script=[ProviderFault.error(503)] * 2)
    try:
        assert (await made.classify(TEXT)).source == "keywords"
    finally:
        await made.aclose()
    assert len(_model_requests(sandbox)) == 1
    assert _counted(metrics) == {("keywords", "retry_budget"): 1.0}


def test_masking_keeps_quantities_and_times() -> None:
    assert mask_personal_data("3 boxes at 15:30 on 2026-12-01") == "3 boxes at 15:30 on 2026-12-01"
    assert mask_personal_data("call 555-123-4567 or +1 (555) 123 4567") == (
        "call [phone] or [phone]"
    )


@pytest.mark.parametrize("fault", ["good", "5xx", "hang", "insufficient_quota", "unknown-intent"])
async def test_the_pipeline_replies_whichever_classifier_answers(
    fault: str,
    tmp_path: Path,
    clock: FakeClock,
    sandbox: ProviderSandbox,
    providers: Providers,
) -> None:
    """The ``inbound.process`` job classifies through the tenant's model (or the keywords when
    it fails) and the contact's reply goes out through the WhatsApp simulator either way."""
    text = TEXT
    if fault != "good":
        script, text, _, _ = FAULTS[fault]
        if script:
            sandbox.faults("openai", script=script)
    world = build(tmp_path, clock, sandbox, providers)
    llm = LLMIntentClassifier(
        _config(sandbox, hangs=fault == "hang"), tenant=TENANT.id, clock=clock
    )
    try:
        job, _ = await process_once(world, providers, TenantClassifiers({TENANT.id: llm}), text)
    finally:
        await llm.aclose()
    assert job.state is JobState.SUCCEEDED
    assert job.result is not None
    assert job.result["status"] == "replied"
    assert job.result["classified_by"] == ("llm" if fault == "good" else "keywords")
    assert job.result["intent"] == "PRICING_INQUIRY"
    (sent,) = world.effects("whatsapp")
    assert sent.data["to"] == CONTACT
    for request in _model_requests(sandbox):
        assert CONTACT not in request.body.decode()
