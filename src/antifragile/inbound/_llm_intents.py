"""An intent classifier over an OpenAI-compatible chat-completions API, degrading to keywords.

::

    config = LLMIntentConfig.from_mapping(
        {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini",
         "api_key_env": "BAKERY_LLM_KEY"},
        env=os.environ,
    )
    classifier = LLMIntentClassifier(config, tenant="bakery", metrics=metrics)
    result = await classifier.classify("How much for 3 boxes? Call me on +1 555 123 4567")
    result.source                       # "llm", or "keywords" when the model could not answer

**The request.** ``POST {base_url}/chat/completions`` with ``Authorization: Bearer {key}``, the
model, a system message (the tenant's prompt and the intents it allows) and one user message:
the customer's text with phone numbers and email addresses masked (:func:`mask_personal_data`).
Nothing else about the customer goes to the model -- never the sender's number. The answer is
asked for as structured output: ``response_format`` ``json_schema`` (the default) or
``json_object`` for servers without schemas.

**Validation.** The message content must be a JSON object with an ``intent`` among the
configured ones (or ``UNKNOWN``), a ``confidence`` within [0, 1] and ``entities`` (an object of
scalars). Anything else -- a refusal, malformed JSON, an unknown intent, a confidence of 7 -- is
garbage: it is not used and counts as a failure of the model for the breaker. The entities the
keyword rules find in the text (:func:`~antifragile.inbound.extract_entities`: quantities, dates
resolved to ISO, ``has_email``...) are added to the model's, and win over them.

**Resilience.** Every call goes through a :class:`~antifragile.Policy` with a short attempt
timeout, a total timeout, one retry of transient failures under a retry budget, and a circuit
breaker. A 429 whose error code is ``insufficient_quota`` is never retried: the model is paused
for ``quota_pause`` seconds (the keyword classifier answers meanwhile). When the model is down,
slow, over its budget or answers garbage, the keyword classifier answers, so the reply still
goes out; the metric ``antifragile_intent_classifier_total{classifier, reason}`` says which
classifier answered and why the model did not.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import httpx

from antifragile.errors import (
    AuthenticationError,
    CircuitOpenError,
    ConfigurationError,
    DeadlineExceededError,
    IntegrationError,
    InvalidRequestError,
    NetworkError,
    PermanentError,
    RateLimitedError,
    RetryBudgetExhaustedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from antifragile.inbound._intents import Classifier, KeywordClassifier
from antifragile.inbound._model import Classification, Intent
from antifragile.policies import (
    SYSTEM_CLOCK,
    CircuitBreaker,
    Clock,
    Constant,
    Policy,
    Retry,
    RetryBudget,
)

if TYPE_CHECKING:
    from antifragile.observability import Metrics

_log = logging.getLogger("antifragile.inbound.llm")

#: the ``source`` of a classification the model made
LLM_SOURCE = "llm"

DEFAULT_PROMPT = (
    "You classify the intent of a customer's message to a small business. Answer with a JSON "
    "object: intent (one of the allowed intents), confidence (a number from 0 to 1) and "
    "entities (an object: quantity, unit, date, time, amount, currency when present)."
)

_PHONE = re.compile(r"(?<![\w])\+?\d[\d\s().-]{5,}\d(?!\w)")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_ENTITY_TEXT = 200


def mask_personal_data(text: str) -> str:
    """*text* with email addresses as ``[email]`` and phone numbers (7 digits or more) as
    ``[phone]`` (an ISO date is kept); what is left is all the model sees of the customer."""
    masked = _EMAIL.sub("[email]", text)

    def phone(match: re.Match[str]) -> str:
        found = match.group(0)
        if _ISO_DATE.fullmatch(found) or sum(c.isdigit() for c in found) < 7:
            return found
        return "[phone]"

    return _PHONE.sub(phone, masked)


@dataclass(frozen=True, slots=True)
class LLMIntentConfig:
    """One tenant's model: where it is, which model, its key, its prompt and intents.

    *intents* are the intents the model may answer (``UNKNOWN`` is always allowed);
    *response_format* is ``"json_schema"`` (structured outputs) or ``"json_object"``;
    *timeout* bounds one attempt, *total_timeout* the call with its retry (seconds);
    *quota_pause* is how long the model rests after ``insufficient_quota``.
    """

    base_url: str
    model: str
    api_key: str = field(repr=False)
    prompt: str = DEFAULT_PROMPT
    intents: tuple[str, ...] = tuple(i.value for i in Intent if i is not Intent.UNKNOWN)
    response_format: Literal["json_schema", "json_object"] = "json_schema"
    timeout: float = 2.0
    total_timeout: float = 4.0
    quota_pause: float = 300.0

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigurationError("base_url must be an http(s) URL")
        if not self.model:
            raise ConfigurationError("model must not be empty")
        if not self.api_key:
            raise ConfigurationError("the model's API key is empty")
        if not self.intents or not all(isinstance(i, str) and i for i in self.intents):
            raise ConfigurationError("intents must be a non-empty list of names")
        if self.response_format not in ("json_schema", "json_object"):
            raise ConfigurationError("response_format must be 'json_schema' or 'json_object'")
        for name in ("timeout", "total_timeout", "quota_pause"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(f"{name} must be a number of seconds > 0")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, env: Mapping[str, str]) -> LLMIntentConfig:
        """A tenant's settings: the key comes from the variable named ``api_key_env`` in
        *env*, or from the file its ``<name>_FILE`` variable names (never from the settings
        themselves, so it stays out of files and logs)."""
        known = {
            "base_url",
            "model",
            "api_key_env",
            "prompt",
            "intents",
            "response_format",
            "timeout",
            "total_timeout",
            "quota_pause",
        }
        if "api_key" in data:
            raise ConfigurationError(
                "the model's key is never written in the settings: name the variable holding "
                "it with api_key_env"
            )
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigurationError(f"unknown LLM intent setting(s): {', '.join(unknown)}")
        variable = data.get("api_key_env")
        if not isinstance(variable, str) or not variable:
            raise ConfigurationError("api_key_env must name the variable holding the key")
        key = env.get(variable, "") or _key_file(variable, env)
        if not key:
            raise ConfigurationError(
                f"the variable {variable} (or {variable}_FILE) holding the model's key is unset"
            )
        options = {k: v for k, v in data.items() if k != "api_key_env"}
        if "intents" in options:
            options["intents"] = tuple(options["intents"])
        try:
            return cls(api_key=key, **options)
        except TypeError as exc:
            raise ConfigurationError(f"invalid LLM intent settings: {exc}") from None


def _key_file(variable: str, env: Mapping[str, str]) -> str:
    """The content of the file ``<variable>_FILE`` names (stripped), or ``""``."""
    path = env.get(f"{variable}_FILE", "")
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as exc:
        raise ConfigurationError(
            f"{variable}_FILE: cannot read the model's key file ({exc.strerror})"
        ) from None


class QuotaExhaustedError(PermanentError):
    """The model's account has no quota left (429 ``insufficient_quota``): never retried."""


class GarbageAnswerError(IntegrationError):
    """The model answered, but not a valid classification (not retried; counts for the
    breaker)."""

    default_retryable = False


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def _failure(response: httpx.Response) -> IntegrationError:
    status = response.status_code
    where: dict[str, Any] = {"provider": "llm", "operation": "chat.completions", "status": status}
    if status == 429:
        if _error_code(response) == "insufficient_quota":
            return QuotaExhaustedError("insufficient_quota", code="QUOTA_EXHAUSTED", **where)
        return RateLimitedError("rate limited", retry_after=_retry_after(response), **where)
    if status in (401, 403):
        return AuthenticationError("the model refused the key", **where)
    if status == 408:
        return UpstreamTimeoutError("request timeout", **where)
    if status >= 500:
        return UpstreamUnavailableError("unavailable", retry_after=_retry_after(response), **where)
    return InvalidRequestError("refused the request", **where)


def _scalar(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= _MAX_ENTITY_TEXT
    return value is None or isinstance(value, bool | int | float)


def parse_answer(body: Any, intents: Sequence[str]) -> Classification:
    """The classification in a chat-completions answer *body*, validated; raises
    :class:`GarbageAnswerError` when it is not one."""

    def garbage(why: str) -> GarbageAnswerError:
        return GarbageAnswerError(why, provider="llm", operation="chat.completions")

    try:
        message = body["choices"][0]["message"]
        content = message["content"]
    except (KeyError, IndexError, TypeError):
        raise garbage("no message content in the answer") from None
    if not isinstance(content, str):
        raise garbage("the model refused or gave no content")
    try:
        data = json.loads(content)
    except ValueError:
        raise garbage("the content is not JSON") from None
    if not isinstance(data, dict):
        raise garbage("the content is not a JSON object")
    intent = data.get("intent")
    if not isinstance(intent, str) or (intent not in intents and intent != Intent.UNKNOWN):
        raise garbage("the intent is not one of the allowed ones")
    confidence = data.get("confidence")
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not 0.0 <= confidence <= 1.0
    ):
        raise garbage("the confidence is not a number within [0, 1]")
    entities = data.get("entities", {})
    if entities is None:
        entities = {}
    if not isinstance(entities, dict) or not all(
        isinstance(k, str) and _scalar(v) for k, v in entities.items()
    ):
        raise garbage("the entities are not an object of scalars")
    kept = {k: mask_personal_data(v) if isinstance(v, str) else v for k, v in entities.items()}
    return Classification(intent, float(confidence), kept, LLM_SOURCE)


def _reason(exc: BaseException) -> str:
    """The fallback reason label for why the model gave no classification."""
    if isinstance(exc, QuotaExhaustedError):
        return "quota"
    if isinstance(exc, GarbageAnswerError):
        return "garbage"
    if isinstance(exc, CircuitOpenError):
        return "circuit_open"
    if isinstance(exc, RetryBudgetExhaustedError) or (
        getattr(exc, "give_up_reason", None) == "retry_budget_exhausted"
    ):
        return "retry_budget"
    if isinstance(exc, RateLimitedError):
        return "rate_limited"
    if isinstance(exc, UpstreamTimeoutError | DeadlineExceededError):
        return "timeout"
    if isinstance(exc, UpstreamUnavailableError | NetworkError):
        return "unavailable"
    return "error"


class LLMIntentClassifier:
    """A :class:`~antifragile.inbound.Classifier` asking a chat-completions model, with the
    keyword classifier answering whenever the model cannot (see the module docs).

    *fallback* is the keyword classifier (the default rules when ``None``); *policy* replaces
    the default one (attempt timeout ``config.timeout``, total ``config.total_timeout``, two
    attempts under a retry budget, a breaker opening at half of 10 calls failing);
    *transport* goes to :class:`httpx.AsyncClient`; *metrics* counts who answered.
    """

    def __init__(
        self,
        config: LLMIntentConfig,
        *,
        tenant: str = "default",
        fallback: KeywordClassifier | None = None,
        policy: Policy | None = None,
        clock: Clock = SYSTEM_CLOCK,
        metrics: Metrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.tenant = tenant
        self.fallback = fallback if fallback is not None else KeywordClassifier(clock=clock)
        self.clock = clock
        self.metrics = metrics
        self.policy = policy or Policy(
            f"llm-intents:{tenant}",
            timeout=config.timeout,
            total_timeout=config.total_timeout,
            retry=Retry(attempts=2, backoff=Constant(0.1)),
            budget=RetryBudget(0.2, min_retries_per_second=0.5, clock=clock),
            breaker=CircuitBreaker(
                f"llm-intents:{tenant}", window=10, minimum_calls=5, open_duration=30.0
            ),
            clock=clock,
        )
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"),
            headers={"authorization": f"Bearer {config.api_key}"},
            timeout=config.total_timeout,
            transport=transport,
        )
        self._paused_until = 0.0

    def __repr__(self) -> str:
        return f"LLMIntentClassifier(tenant={self.tenant!r}, model={self.config.model!r})"

    async def aclose(self) -> None:
        await self._client.aclose()

    @property
    def paused(self) -> bool:
        """Whether the model rests after ``insufficient_quota``."""
        return self.clock.time() < self._paused_until

    def request_body(self, text: str) -> dict[str, Any]:
        """The chat-completions request for *text* (masked: see :func:`mask_personal_data`)."""
        allowed = [*self.config.intents, Intent.UNKNOWN.value]
        system = f"{self.config.prompt}\nAllowed intents: {', '.join(allowed)}."
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": mask_personal_data(text)},
            ],
            "temperature": 0,
        }
        if self.config.response_format == "json_object":
            body["response_format"] = {"type": "json_object"}
        else:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": "intent",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {
                            "intent": {"type": "string", "enum": allowed},
                            "confidence": {"type": "number"},
                            "entities": {
                                "type": "object",
                                "properties": {},
                                "additionalProperties": False,
                            },
                        },
                        "required": ["intent", "confidence", "entities"],
                        "additionalProperties": False,
                    },
                },
            }
        return body

    async def _ask(self, body: dict[str, Any]) -> Classification:
        try:
            response = await self._client.post("/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError("no answer in time", provider="llm") from exc
        except httpx.TransportError as exc:
            raise NetworkError(type(exc).__name__, provider="llm") from exc
        if response.status_code >= 400:
            raise _failure(response)
        try:
            answer = response.json()
        except ValueError:
            raise GarbageAnswerError("the answer is not JSON", provider="llm") from None
        return parse_answer(answer, self.config.intents)

    def _count(self, classifier: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.intent_classifier.labels(classifier, reason).inc()

    async def classify(self, text: str) -> Classification:
        """The model's classification of *text*, or the keyword classifier's when the model
        is paused, down, slow, over budget or answers garbage."""
        if self.paused:
            reason = "quota"
        else:
            body = self.request_body(text)
            try:
                result = await self.policy.arun(
                    lambda: self._ask(body), operation="chat.completions"
                )
            except Exception as exc:  # whatever went wrong, the keywords answer
                reason = _reason(exc)
                if reason == "quota":
                    self._paused_until = self.clock.time() + self.config.quota_pause
                _log.warning(
                    "the intent model did not answer; keywords classify",
                    extra={"tenant": self.tenant, "reason": reason},
                )
            else:
                self._count("llm", "none")
                # the entities found by the rules (dates resolved, has_email) are authoritative
                found = self.fallback.classify_text(text).entities
                return replace(result, entities={**result.entities, **found})
        self._count("keywords", reason)
        return await self.fallback.classify(text)


class TenantClassifiers:
    """A classifier per tenant (an :class:`LLMIntentClassifier` each, say), and *default* for
    the others. The message pipeline calls :meth:`classify_for` with the message's tenant."""

    def __init__(
        self, classifiers: Mapping[str, Classifier], default: Classifier | None = None
    ) -> None:
        self.classifiers = dict(classifiers)
        self.default: Classifier = default if default is not None else KeywordClassifier()

    async def classify_for(self, tenant: str, text: str) -> Classification:
        """The classification of *text* by *tenant*'s classifier (the default one if none)."""
        return await self.classifiers.get(tenant, self.default).classify(text)

    async def classify(self, text: str) -> Classification:
        """The default classifier's classification (no tenant known)."""
        return await self.default.classify(text)

    async def aclose(self) -> None:
        """Close the classifiers that hold connections."""
        for classifier in {id(c): c for c in [*self.classifiers.values(), self.default]}.values():
            close = getattr(classifier, "aclose", None)
            if callable(close):
                await close()
