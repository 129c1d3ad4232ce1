"""Intents: what a customer's message asks for, with a confidence, and the entities in it.

::

    classifier = KeywordClassifier()                       # the default rules, threshold 0.5
    result = await classifier.classify("Hi, I'd like to order 3 boxes for tomorrow")
    result.intent, result.confidence                       # ('ORDER_REQUEST', 0.8...)
    result.entities                                        # {'quantity': 3, 'unit': 'boxes',
                                                           #  'date': '2026-11-23', ...}

Any object with ``async def classify(text) -> Classification`` is a :class:`Classifier` (an AI
model behind an API, say); :class:`KeywordClassifier` is the default, with no I/O.

**Rules.** A rule set maps an intent to regular expressions (:data:`DEFAULT_RULES`: English and
a few common Spanish and Portuguese words). Patterns match whole words, case- and
accent-insensitively (``cuanto`` matches "cuánto"). Pass your own mapping to replace the rules,
or ``{**DEFAULT_RULES, "RETURN_REQUEST": [...]}`` to extend them.

**Confidence.** Every pattern that matches adds its strength to its intent's score: 1 for a
one-word match, 1.5 for a match of several words (a phrase says more than a word). The best
intent's confidence is ``1 - exp(-0.8 * score)`` -- about 0.55 for one word, 0.70 for a phrase
or a word and a half, 0.80 for two words, 0.91 for three -- and shrinks when another intent
scores too: it is multiplied by ``1 - 0.5 * runner_up / best``. Below the threshold -- and
always on an exact tie, which says nothing -- the message is ``UNKNOWN``, with the confidence of
its best guess.

**Entities** (:func:`extract_entities`) are what the handlers and actions may use without
reading the message again: a quantity and its unit ("3 boxes"), a date ("tomorrow", "friday",
"2026-12-01"; an ISO date from the classifier's clock), a time ("3pm", "15:30"), an amount with
its currency ("$25", "30 euros"). They never hold personal data: an email address in the message
shows only as ``has_email: True`` (actions find the address in the stored event with
:func:`find_emails`), so a classification may go into job payloads and logs.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from antifragile.errors import ConfigurationError
from antifragile.inbound._model import Classification, Intent
from antifragile.policies import SYSTEM_CLOCK, Clock

#: the classifier's ``source`` in the classifications it makes
KEYWORDS_SOURCE = "keywords"

#: the default rules: intent -> patterns (regular expressions, matched as whole words)
DEFAULT_RULES: Mapping[str, Sequence[str]] = {
    Intent.ORDER_REQUEST: (
        r"orders?",
        r"buy",
        r"purchase",
        r"(?:i'?d|i would) like to (?:buy|order|get)",
        r"i want to (?:buy|order|get)",
        r"place an order",
        r"\d+\s*(?:x\s*)?(?:boxes|box|units?|pieces?|pcs|packs?|bottles?|cases?|bags?|kg)",
        r"pedido",
        r"comprar",
        r"quiero",
        r"quero",
        r"encomenda",
    ),
    Intent.PRICING_INQUIRY: (
        r"prices?",
        r"pricing",
        r"how much",
        r"costs?",
        r"quote",
        r"discounts?",
        r"rates?",
        r"precios?",
        r"cuanto cuesta",
        r"quanto custa",
        r"precos?",
        r"cotizacion",
        r"orcamento",
    ),
    Intent.COMPLAINT: (
        r"complaint",
        r"complain",
        r"broken",
        r"damaged",
        r"refund",
        r"wrong",
        r"late",
        r"never (?:arrived|came|received)",
        r"not (?:happy|satisfied|working)",
        r"terrible",
        r"awful",
        r"disappointed",
        r"queja",
        r"reclamo",
        r"reclamacao",
        r"roto",
        r"quebrado",
        r"reembolso",
    ),
    Intent.AVAILABILITY_INQUIRY: (
        r"in stock",
        r"out of stock",
        r"stock",
        r"available",
        r"availability",
        r"do you (?:have|sell|carry)",
        r"disponibles?",
        r"disponivel",
        r"tienen",
        r"voces tem",
    ),
    Intent.SCHEDULE_CALL: (
        r"call",
        r"call me",
        r"schedule",
        r"book a (?:call|meeting|demo)",
        r"meeting",
        r"appointment",
        r"demo",
        r"talk to (?:someone|a person|sales|a human)",
        r"llamada",
        r"llamame",
        r"cita",
        r"reunion",
        r"ligacao",
        r"agendar",
    ),
}

_SPREAD = 0.8  # confidence = 1 - exp(-_SPREAD * score)
_TIE_PENALTY = 0.5  # a runner-up scoring as much as the best halves its confidence
_PHRASE_STRENGTH = 1.5
_UNKNOWN = Intent.UNKNOWN.value


@runtime_checkable
class Classifier(Protocol):
    """Anything that tells the intent of a message's text."""

    async def classify(self, text: str) -> Classification: ...


def normalize(text: str) -> str:
    """*text* lower-cased, accents removed (``"Cuánto"`` -> ``"cuanto"``), spaces collapsed."""
    if text.isascii():  # nothing to decompose, no accent to remove
        return " ".join(text.casefold().split())
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().replace("\u2019", "'").split())


#: what a rule's pattern is wrapped in: it matches whole words only
_BEFORE, _AFTER = r"(?<!\w)(?:", r")(?!\w)"


def _inner(pattern: re.Pattern[str]) -> str | None:
    """The rule inside *pattern* made by :func:`_compile` (``None``: not made by it)."""
    text = pattern.pattern
    if text.startswith(_BEFORE) and text.endswith(_AFTER):
        return text[len(_BEFORE) : -len(_AFTER)]
    return None


def _compile(intent: str, pattern: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigurationError(f"intent {intent!r}: a pattern must be a non-empty string")
    try:
        return re.compile(f"{_BEFORE}{normalize(pattern)}{_AFTER}")
    except re.error as exc:
        raise ConfigurationError(f"intent {intent!r}: invalid pattern {pattern!r}: {exc}") from None


# -- entities ----------------------------------------------------------------------------------

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_QUANTITY = re.compile(
    r"(?<![\w.])(\d{1,6})\s*(?:x\s*)?"
    r"(boxes|box|units?|pieces?|pcs|packs?|bottles?|cases?|bags?|kg|items?"
    r"|cajas?|caixas?|unidades?|botellas?|garrafas?|paquetes?|pacotes?)(?!\w)"
)
_AMOUNT_BEFORE = re.compile(r"(\$|usd|us\$|€|eur|£|gbp|r\$)\s?(\d+(?:[.,]\d{1,2})?)(?![\d])")
_AMOUNT_AFTER = re.compile(
    r"(?<![\w.])(\d+(?:[.,]\d{1,2})?)\s?(dollars?|usd|euros?|eur|pounds?|gbp|reais|real|pesos?)"
    r"(?!\w)"
)
_CURRENCIES = {
    "$": "USD",
    "usd": "USD",
    "us$": "USD",
    "dollar": "USD",
    "dollars": "USD",
    "€": "EUR",
    "eur": "EUR",
    "euro": "EUR",
    "euros": "EUR",
    "£": "GBP",
    "gbp": "GBP",
    "pound": "GBP",
    "pounds": "GBP",
    "r$": "BRL",
    "reais": "BRL",
    "real": "BRL",
    "peso": "MXN",
    "pesos": "MXN",
}
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
_TIME_12 = re.compile(r"(?<![\w:])(\d{1,2})(?::(\d{2}))?\s?(am|pm)(?!\w)")
_TIME_24 = re.compile(r"(?<![\w:])([01]?\d|2[0-3]):([0-5]\d)(?![\w:])")
_RELATIVE_DAYS: Mapping[str, int] = {
    "today": 0,
    "hoy": 0,
    "hoje": 0,
    "tomorrow": 1,
    "manana": 1,
    "amanha": 1,
    "day after tomorrow": 2,
    "pasado manana": 2,
    "depois de amanha": 2,
}
_WEEKDAYS: Mapping[str, int] = {
    **{d: i for i, d in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday"))},
    "saturday": 5,
    "sunday": 6,
    **{d: i for i, d in enumerate(("lunes", "martes", "miercoles", "jueves", "viernes"))},
    "sabado": 5,
    "domingo": 6,
    **{f"{d}-feira": i for i, d in enumerate(("segunda", "terca", "quarta", "quinta", "sexta"))},
}
_DAY_WORDS = re.compile(
    r"(?<!\w)("
    + "|".join(re.escape(w) for w in sorted([*_RELATIVE_DAYS, *_WEEKDAYS], key=len, reverse=True))
    + r")(?!\w)"
)


def find_emails(text: str | None) -> list[str]:
    """The email addresses in *text*, in order, without repeats (personal data: keep them in
    the store, never in payloads or logs)."""
    found: list[str] = []
    for match in _EMAIL.finditer(text or ""):
        address = match.group(0).strip(".")
        if address.lower() not in (f.lower() for f in found):
            found.append(address)
    return found


def _number(text: str) -> float:
    return float(text.replace(",", "."))


def _day(words: str, today: date) -> date:
    if words in _RELATIVE_DAYS:
        return today + timedelta(days=_RELATIVE_DAYS[words])
    ahead = (_WEEKDAYS[words] - today.weekday()) % 7
    return today + timedelta(days=ahead or 7)  # "friday" on a Friday: next week's


def extract_entities(text: str | None, *, today: date | None = None) -> dict[str, Any]:
    """The entities of *text* (see the module docs); *today* resolves relative dates (none
    given: dates are kept as the words only, ``date_text``)."""
    return _entities(text, normalize(text or ""), today)


def _entities(text: str | None, plain: str, today: date | None) -> dict[str, Any]:
    """:func:`extract_entities` of *text*, whose normalized form is *plain*."""
    entities: dict[str, Any] = {}
    items = [{"quantity": int(m.group(1)), "unit": m.group(2)} for m in _QUANTITY.finditer(plain)]
    if items:
        entities["quantity"] = items[0]["quantity"]
        entities["unit"] = items[0]["unit"]
        if len(items) > 1:
            entities["items"] = items
    amount = _AMOUNT_BEFORE.search(plain)
    if amount is not None:
        entities["amount"] = _number(amount.group(2))
        entities["currency"] = _CURRENCIES[amount.group(1)]
    else:
        after = _AMOUNT_AFTER.search(plain)
        if after is not None:
            entities["amount"] = _number(after.group(1))
            entities["currency"] = _CURRENCIES[after.group(2)]
    iso = _ISO_DATE.search(plain)
    if iso is not None:
        try:
            entities["date"] = date(*(int(g) for g in iso.groups())).isoformat()
        except ValueError:
            pass
    if "date" not in entities:
        day = _DAY_WORDS.search(plain)
        if day is not None:
            entities["date_text"] = day.group(1)
            if today is not None:
                entities["date"] = _day(day.group(1), today).isoformat()
    twelve = _TIME_12.search(plain)
    if twelve is not None and 1 <= int(twelve.group(1)) <= 12:
        hour = int(twelve.group(1)) % 12 + (12 if twelve.group(3) == "pm" else 0)
        entities["time"] = f"{hour:02d}:{int(twelve.group(2) or 0):02d}"
    else:
        clock = _TIME_24.search(plain)
        if clock is not None:
            entities["time"] = f"{int(clock.group(1)):02d}:{clock.group(2)}"
    if find_emails(text):
        entities["has_email"] = True
    return entities


# -- the classifier ----------------------------------------------------------------------------


class KeywordClassifier:
    """The default :class:`Classifier`: keyword rules per intent (see the module docs).

    *rules* maps intents to patterns (:data:`DEFAULT_RULES` when ``None``); *threshold* is the
    confidence below which a message is ``UNKNOWN``; *clock* and *timezone* resolve relative
    dates ("tomorrow") in the entities.
    """

    def __init__(
        self,
        rules: Mapping[str, Sequence[str]] | None = None,
        *,
        threshold: float = 0.5,
        clock: Clock = SYSTEM_CLOCK,
        timezone: str = "UTC",
    ) -> None:
        if isinstance(threshold, bool) or not 0.0 <= threshold <= 1.0:
            raise ConfigurationError(f"threshold must be within [0, 1], got {threshold!r}")
        try:
            self._zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"unknown time zone {timezone!r}") from None
        source = DEFAULT_RULES if rules is None else rules
        compiled: dict[str, tuple[re.Pattern[str], ...]] = {}
        for intent, patterns in source.items():
            name = str(intent)
            if not name:
                raise ConfigurationError("an intent name must not be empty")
            if name == Intent.UNKNOWN:
                raise ConfigurationError("UNKNOWN has no rules: it is what matches nothing")
            if isinstance(patterns, str):
                raise ConfigurationError(f"intent {name!r}: give a list of patterns, not a str")
            compiled[name] = tuple(_compile(name, p) for p in patterns)
        if not compiled:
            raise ConfigurationError("a KeywordClassifier needs at least one intent with rules")
        self.rules = compiled
        #: by intent: its patterns and the one pattern that screens for them (``_screen``)
        self._screens: dict[str, tuple[tuple[re.Pattern[str], ...], re.Pattern[str] | None]] = {}
        self.threshold = float(threshold)
        self.clock = clock
        self.timezone = timezone

    def __repr__(self) -> str:
        return f"KeywordClassifier(intents={sorted(self.rules)!r}, threshold={self.threshold})"

    def scores(self, text: str) -> dict[str, float]:
        """The score of every intent whose rules match *text* (see the module docs)."""
        return self._scores(normalize(text))

    def _scores(self, plain: str) -> dict[str, float]:
        scores: dict[str, float] = {}
        for intent, patterns in self.rules.items():
            screen = self._screen(intent, patterns)
            if screen is not None and screen.search(plain) is None:
                continue  # none of the intent's patterns matches
            score = 0.0
            for pattern in patterns:
                match = pattern.search(plain)
                if match is not None:
                    score += _PHRASE_STRENGTH if " " in match.group(0).strip() else 1.0
            if score > 0:
                scores[intent] = score
        return scores

    def _screen(self, intent: str, patterns: tuple[re.Pattern[str], ...]) -> re.Pattern[str] | None:
        """One pattern matching where any of *patterns* matches (a message's text is searched
        once per intent, not once per pattern, for the intents it does not mention), or
        ``None`` when they cannot be joined (capturing groups: a backreference would change
        its meaning)."""
        known = self._screens.get(intent)
        if known is not None and known[0] is patterns:
            return known[1]
        screen: re.Pattern[str] | None = None
        inner = [_inner(p) for p in patterns]
        if len(patterns) > 1 and all(
            p.groups == 0 and p.flags == patterns[0].flags and i is not None
            for p, i in zip(patterns, inner, strict=True)
        ):
            try:
                screen = re.compile(
                    _BEFORE + "|".join(f"(?:{i})" for i in inner) + _AFTER, patterns[0].flags
                )
            except re.error:
                screen = None
        self._screens[intent] = (patterns, screen)
        return screen

    def classify_text(self, text: str) -> Classification:
        """:meth:`classify` without the ``await`` (it does no I/O)."""
        today = datetime.fromtimestamp(self.clock.time(), self._zone).date()
        plain = normalize(text)
        entities = _entities(text, plain, today)
        ranked = sorted(self._scores(plain).items(), key=lambda item: -item[1])
        if not ranked:
            return Classification(_UNKNOWN, 0.0, entities, KEYWORDS_SOURCE)
        best_intent, best = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
        confidence = (1.0 - math.exp(-_SPREAD * best)) * (1.0 - _TIE_PENALTY * runner_up / best)
        confidence = round(min(1.0, max(0.0, confidence)), 4)
        if confidence < self.threshold or runner_up == best:
            return Classification(_UNKNOWN, confidence, entities, KEYWORDS_SOURCE)
        return Classification(best_intent, confidence, entities, KEYWORDS_SOURCE)

    async def classify(self, text: str) -> Classification:
        """The intent of *text*, its confidence and entities (see the module docs)."""
        return self.classify_text(text)
