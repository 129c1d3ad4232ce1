"""The keyword classifier: intents of typical messages, confidence ordering, UNKNOWN below the
threshold and on ties, custom rules, and entities without personal data."""

from __future__ import annotations

from datetime import date

import pytest

from antifragile import ConfigurationError, FakeClock
from antifragile.inbound import (
    DEFAULT_RULES,
    Classification,
    Classifier,
    Intent,
    KeywordClassifier,
    extract_entities,
    find_emails,
)

# FakeClock starts on Tuesday 2023-11-14 (UTC)
TODAY = date(2023, 11, 14)


@pytest.fixture
def classifier(clock: FakeClock) -> KeywordClassifier:
    return KeywordClassifier(clock=clock)


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Hi, I'd like to order 3 boxes for tomorrow", Intent.ORDER_REQUEST),
        ("I want to buy 2 bottles please", Intent.ORDER_REQUEST),
        ("Quero fazer um pedido de 5 caixas", Intent.ORDER_REQUEST),
        ("How much do 3 boxes cost?", Intent.PRICING_INQUIRY),
        ("¿Cuánto cuesta una caja?", Intent.PRICING_INQUIRY),
        ("Can you send me a quote and your prices?", Intent.PRICING_INQUIRY),
        ("My package arrived broken, I want a refund", Intent.COMPLAINT),
        ("The delivery was late and the box damaged. Terrible.", Intent.COMPLAINT),
        ("Do you have the blue one in stock?", Intent.AVAILABILITY_INQUIRY),
        ("Is the large size available?", Intent.AVAILABILITY_INQUIRY),
        ("Can we schedule a call on friday at 3pm?", Intent.SCHEDULE_CALL),
        ("I'd like to book a demo, please call me", Intent.SCHEDULE_CALL),
        ("Podemos agendar uma ligação?", Intent.SCHEDULE_CALL),
        ("hello there", Intent.UNKNOWN),
        ("", Intent.UNKNOWN),
    ],
)
async def test_typical_messages_get_their_intent(
    classifier: KeywordClassifier, text: str, intent: Intent
) -> None:
    """Each message of the table is classified as its intent (English, Spanish, Portuguese;
    case and accents ignored), with a confidence in [0, 1] from the keyword source."""
    result = await classifier.classify(text)
    assert result.intent == intent.value
    assert 0.0 <= result.confidence <= 1.0
    assert result.source == "keywords"
    if intent is not Intent.UNKNOWN:
        assert result.confidence >= classifier.threshold


def test_confidence_grows_with_the_number_and_strength_of_matches(
    classifier: KeywordClassifier,
) -> None:
    """One word < one phrase < two words < many matches: more evidence, more confidence."""
    one_word = classifier.classify_text("price")
    phrase = classifier.classify_text("how much")
    two_words = classifier.classify_text("price and discount")
    many = classifier.classify_text("how much is the price, any discount on a quote?")
    assert {r.intent for r in (one_word, phrase, two_words, many)} == {"PRICING_INQUIRY"}
    assert one_word.confidence < phrase.confidence < two_words.confidence < many.confidence
    assert one_word.confidence == pytest.approx(0.5507, abs=1e-4)


def test_a_competing_intent_lowers_the_confidence(classifier: KeywordClassifier) -> None:
    """A message that also matches another intent is less certain than one that does not."""
    clean = classifier.classify_text("how much does it cost")
    mixed = classifier.classify_text("how much does it cost for 3 boxes")
    assert clean.intent == mixed.intent == "PRICING_INQUIRY"
    assert mixed.confidence < clean.confidence


def test_a_tie_is_unknown(classifier: KeywordClassifier) -> None:
    """Two intents with the same score say nothing: UNKNOWN, with a halved confidence."""
    result = classifier.classify_text("the price is wrong")
    assert classifier.scores("the price is wrong") == {"PRICING_INQUIRY": 1.0, "COMPLAINT": 1.0}
    assert result.intent == "UNKNOWN"
    assert result.confidence == pytest.approx(0.5507 / 2, abs=1e-3)


def test_below_the_threshold_is_unknown_with_the_best_guess_confidence(clock: FakeClock) -> None:
    """A threshold above the best guess's confidence makes the message UNKNOWN; the
    classification keeps that confidence, and a lower threshold accepts the guess."""
    strict = KeywordClassifier(threshold=0.9, clock=clock)
    lenient = KeywordClassifier(threshold=0.2, clock=clock)
    assert strict.classify_text("price").intent == "UNKNOWN"
    assert strict.classify_text("price").confidence == pytest.approx(0.5507, abs=1e-4)
    assert lenient.classify_text("price").intent == "PRICING_INQUIRY"


def test_custom_rules_replace_or_extend_the_defaults(clock: FakeClock) -> None:
    """Rules are a mapping intent -> patterns: given alone they replace the defaults; merged
    with DEFAULT_RULES they add an intent. Patterns match whole words only."""
    custom = KeywordClassifier({"RETURN_REQUEST": [r"return(?:ing)?", r"send (?:it )?back"]})
    assert custom.classify_text("I am returning it, can I send it back?").intent == (
        "RETURN_REQUEST"
    )
    assert custom.classify_text("how much is it").intent == "UNKNOWN"
    assert custom.classify_text("returns").intent == "UNKNOWN"  # whole words only
    extended = KeywordClassifier({**DEFAULT_RULES, "RETURN_REQUEST": ["return"]}, clock=clock)
    assert extended.classify_text("how much is it").intent == "PRICING_INQUIRY"
    assert extended.classify_text("I want to return it").intent == "RETURN_REQUEST"


@pytest.mark.parametrize(
    ("rules", "threshold", "message"),
    [
        ({"X": ["("]}, 0.5, "invalid pattern"),
        ({"X": "word"}, 0.5, "not a str"),
        ({"UNKNOWN": ["x"]}, 0.5, "UNKNOWN has no rules"),
        ({}, 0.5, "at least one intent"),
        (None, 1.5, "threshold"),
    ],
)
def test_bad_configuration_is_refused(
    rules: dict[str, object] | None, threshold: float, message: str
) -> None:
    """Invalid patterns, a string instead of a list, rules for UNKNOWN, no rules and a
    threshold outside [0, 1] are ConfigurationErrors at construction."""
    with pytest.raises(ConfigurationError, match=message):
        KeywordClassifier(rules, threshold=threshold)  # type: ignore[arg-type]


def test_entities_quantities_amounts_dates_and_times() -> None:
    """Quantities with units, amounts with currencies, relative and ISO dates, 12h and 24h
    times are extracted; weekdays resolve to the next such day."""
    assert extract_entities("3 boxes and 2 bottles", today=TODAY) == {
        "quantity": 3,
        "unit": "boxes",
        "items": [{"quantity": 3, "unit": "boxes"}, {"quantity": 2, "unit": "bottles"}],
    }
    assert extract_entities("is $25.50 ok?") == {"amount": 25.5, "currency": "USD"}
    assert extract_entities("30 euros")["currency"] == "EUR"
    assert extract_entities("tomorrow at 3pm", today=TODAY) == {
        "date_text": "tomorrow",
        "date": "2023-11-15",
        "time": "15:00",
    }
    assert extract_entities("friday 09:30", today=TODAY)["date"] == "2023-11-17"
    assert extract_entities("tuesday", today=TODAY)["date"] == "2023-11-21"  # next week's
    assert extract_entities("mañana", today=TODAY)["date"] == "2023-11-15"
    assert extract_entities("on 2026-12-01")["date"] == "2026-12-01"
    assert extract_entities("tomorrow") == {"date_text": "tomorrow"}  # no today: words only


def test_entities_never_hold_personal_data(classifier: KeywordClassifier) -> None:
    """An email address shows only as has_email; find_emails gets it from the text itself."""
    text = "Call me on friday at 10am, I'm ada@example.com or +44 7700 900123"
    result = classifier.classify_text(text)
    assert result.entities["has_email"] is True
    dumped = repr(result.to_json())
    assert "ada@example.com" not in dumped
    assert "7700" not in dumped
    assert find_emails(text + " ADA@example.com bob@example.org.") == [
        "ada@example.com",
        "bob@example.org",
    ]


def test_relative_dates_follow_the_injected_clock_and_timezone() -> None:
    """'today' is the clock's date in the classifier's time zone."""
    clock = FakeClock(start=1_000.0 - 21 * 3600)  # 2023-11-14 01:16 UTC
    utc = KeywordClassifier(clock=clock)
    la = KeywordClassifier(clock=clock, timezone="America/Los_Angeles")
    assert utc.classify_text("today").entities["date"] == "2023-11-14"
    assert la.classify_text("today").entities["date"] == "2023-11-13"
    with pytest.raises(ConfigurationError):
        KeywordClassifier(timezone="Mars/Olympus")


async def test_keyword_classifier_is_a_classifier(classifier: KeywordClassifier) -> None:
    """The default classifier satisfies the Classifier protocol (any async classify works)."""

    class Fixed:
        async def classify(self, text: str) -> Classification:
            return Classification("ORDER_REQUEST", 1.0, source="ai")

    for candidate in (classifier, Fixed()):
        assert isinstance(candidate, Classifier)
        assert isinstance(await candidate.classify("x"), Classification)


def _pattern_by_pattern(classifier: KeywordClassifier, text: str) -> dict[str, float]:
    """The scores of *text* found by searching every pattern on its own."""
    plain = " ".join(text.casefold().split())
    scores: dict[str, float] = {}
    for intent, patterns in classifier.rules.items():
        score = 0.0
        for pattern in patterns:
            match = pattern.search(plain)
            if match is not None:
                score += 1.5 if " " in match.group(0).strip() else 1.0
        if score > 0:
            scores[intent] = score
    return scores


@pytest.mark.parametrize(
    "text",
    [
        "Hi, I would like to order 3 boxes of tea please",
        "how much is the price of shipping? hello",
        "hellothere orderly pricey",
        "cancel my order, I want a refund; where is my package",
        "talk to a human please, book a demo tomorrow",
        "",
        "ok",
    ],
)
def test_the_scores_are_those_of_each_pattern_searched_alone(text: str) -> None:
    """An intent's patterns are screened by one search of the text; the scores are exactly
    those of every pattern searched on its own -- also for rules that cannot be joined (a
    backreference) and after the rules were replaced."""
    classifier = KeywordClassifier()
    assert classifier.scores(text) == _pattern_by_pattern(classifier, text)
    custom = KeywordClassifier({"ECHO": [r"(\w+) \1", "hello"], "ORDER": ["order", "boxes"]})
    assert custom.scores(text) == _pattern_by_pattern(custom, text)
    custom.rules = {"ORDER": KeywordClassifier({"ORDER": ["tea", "ok"]}).rules["ORDER"]}
    assert custom.scores(text) == _pattern_by_pattern(custom, text)
