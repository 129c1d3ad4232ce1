"""Conversation flows: the questions an assistant asks a new contact, one at a time.

A :class:`Flow` is a greeting, ordered :class:`FlowStep` questions, a completion message and the
graceful reply the service answers with when processing fails. Each step names the field its
answer is stored under and how the answer is validated:

=====================  ===================================================================
``validate``           accepts (and stores)
=====================  ===================================================================
``nonempty``           any text with a letter or digit (whitespace collapsed)
``email``              ``local@domain.tld`` (trimmed; at most 254 characters)
``phone``              7 to 15 digits, spaces, dots, dashes and brackets allowed (stored as
                       ``+digits`` when written with ``+``, else the digits)
``number``             an integer or decimal (``12``, ``-3.5``, ``2,5``; stored as written,
                       a decimal comma made a dot)
``choice:a,b,c``       one of the options, case-insensitively, or its number (``2``); the
                       option is stored as written in the flow. On WhatsApp Cloud the
                       question is sent as reply buttons or a list message, and the tapped
                       button or picked row is the answer
``regex:<pattern>``    text the pattern matches in full (stored trimmed)
=====================  ===================================================================

An invalid answer gets the step's ``error`` and the question again.

Flows come from a TOML or YAML file (:func:`load_flows`)::

    [flows.intake]
    greeting = "Hi! I'm the assistant of Acme Bakery."
    completion = "Thanks, {name}! The team will be in touch."
    graceful_reply = "Got it -- the team will get back to you shortly."

    [[flows.intake.steps]]
    field = "name"
    question = "What's your name?"

    [[flows.intake.steps]]
    field = "email"
    question = "What's your email address?"
    validate = "email"
    error = "That doesn't look like an email address."

What happens when a contact completes a flow is a list of registered actions (see
:mod:`antifragile.inbound._actions`), each run as its own durable job with a status flag on the
session: ``on_complete`` (default :data:`DEFAULT_ON_COMPLETE`, the summary email, the Shopify
customer, the HubSpot contact and the Slack message)::

    [flows.intake]
    on_complete = ["send_summary_email", "create_hubspot_contact"]

The YAML form has the same shape (a ``flows`` mapping of flow names). A step's ``question``
and ``error`` may name the fields collected before it in braces (``{name}``), ``completion``
and ``nudge`` any field of the flow, ``nudge`` also ``{question}`` (the question waiting for an
answer); ``greeting`` and ``graceful_reply`` are sent as written. Any other placeholder is a
:class:`~antifragile.ConfigurationError` when the flow is built, naming the flow, the step and
the closest allowed name (``{{`` writes a literal brace).
"""

from __future__ import annotations

import difflib
import functools
import re
import string
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from antifragile.errors import ConfigurationError
from antifragile.inbound._model import DEFAULT_GRACEFUL_REPLY

#: the validation kinds a step may use (``choice:`` and ``regex:`` take an argument)
VALIDATION_KINDS: tuple[str, ...] = ("nonempty", "email", "phone", "number", "choice", "regex")

DEFAULT_ERROR = "Sorry, I didn't catch that."
DEFAULT_GREETING = "Hi! Thanks for getting in touch."
DEFAULT_COMPLETION = "Thank you! We have everything we need and will be in touch soon."
DEFAULT_NUDGE = "Just checking in -- are you still there? {question}"
#: the actions a completed flow runs unless it names its own
DEFAULT_ON_COMPLETE: tuple[str, ...] = (
    "send_summary_email",
    "create_shopify_customer",
    "create_hubspot_contact",
    "notify_slack",
)

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]{2,}")
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?")
_PHONE_CHARS = re.compile(r"[\s().\-]")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Validator = Callable[[str], "str | None"]


def _nonempty(text: str) -> str | None:
    value = " ".join(text.split())
    return value if any(c.isalnum() for c in value) else None


def _email(text: str) -> str | None:
    value = text.strip()
    return value if len(value) <= 254 and _EMAIL.fullmatch(value) else None


def _phone(text: str) -> str | None:
    value = _PHONE_CHARS.sub("", text.strip())
    plus = value.startswith("+")
    digits = value[1:] if plus else value
    if not digits.isdigit() or not digits.isascii() or not 7 <= len(digits) <= 15:
        return None
    return f"+{digits}" if plus else digits


def _number(text: str) -> str | None:
    value = text.strip()
    return value.replace(",", ".") if _NUMBER.fullmatch(value) else None


def _choice(options: tuple[str, ...]) -> Validator:
    folded = {option.casefold(): option for option in options}

    def check(text: str) -> str | None:
        value = " ".join(text.split())
        if value.isdigit() and 1 <= int(value) <= len(options):
            return options[int(value) - 1]
        return folded.get(value.casefold())

    return check


def _regex(pattern: re.Pattern[str]) -> Validator:
    def check(text: str) -> str | None:
        value = text.strip()
        return value if pattern.fullmatch(value) else None

    return check


@functools.lru_cache(maxsize=256)
def validator(spec: str) -> Validator:
    """The check of a ``validate`` spec: a function from an answer to the value to store, or
    ``None`` when the answer is invalid. A malformed spec raises ConfigurationError."""
    kind, sep, argument = spec.partition(":")
    kind = kind.strip()
    if kind == "nonempty" and not sep:
        return _nonempty
    if kind == "email" and not sep:
        return _email
    if kind == "phone" and not sep:
        return _phone
    if kind == "number" and not sep:
        return _number
    if kind == "choice":
        options = tuple(o.strip() for o in argument.split(",") if o.strip())
        if not options:
            raise ConfigurationError(
                f"validate {spec!r}: a choice needs options, e.g. 'choice:morning,afternoon'"
            )
        return _choice(options)
    if kind == "regex":
        if not argument:
            raise ConfigurationError(f"validate {spec!r}: a regex needs a pattern")
        try:
            compiled = re.compile(argument)
        except re.error as exc:
            raise ConfigurationError(f"validate {spec!r}: not a valid pattern: {exc}") from None
        return _regex(compiled)
    raise ConfigurationError(
        f"unknown validation {spec!r}; one of nonempty, email, phone, number, choice:a,b,c, "
        "regex:<pattern>"
    )


class _Keep(dict[str, Any]):
    """Format values that leave unknown ``{placeholders}`` as they are."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(text: str, values: Mapping[str, Any]) -> str:
    """*text* with ``{field}`` placeholders filled from *values* (unknown ones kept; text that
    is not a valid format string is returned as it is)."""
    if "{" not in text:
        return text
    try:
        return string.Formatter().vformat(text, (), _Keep(values))
    except (ValueError, IndexError, AttributeError, KeyError):
        return text


def placeholders(text: str) -> list[str]:
    """The names of the ``{placeholders}`` in *text* (``{{`` is a literal brace; the name of
    ``{order.number}`` is ``order``); none when *text* is not a valid format string, which
    :func:`render` sends as written."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        return names
    for _literal, field, _spec, _conversion in parsed:
        if field is None:
            continue
        match = _FIELD.match(field)
        names.append(match.group(0) if match else field)
    return names


def placeholder_scopes(flow: Flow) -> list[tuple[str, str, frozenset[str]]]:
    """Each text of *flow* that may hold placeholders: (where, the text, the names it is
    rendered with). A step's question and error see the fields of the steps before it; the
    completion and the nudge every field (the nudge ``{question}`` too); the greeting and
    the graceful reply are sent as written."""
    scopes: list[tuple[str, str, frozenset[str]]] = [
        ("greeting", flow.greeting, frozenset()),
        ("graceful_reply", flow.graceful_reply, frozenset()),
    ]
    earlier: set[str] = set()
    for index, step in enumerate(flow.steps):
        where = f"step {index + 1} ({step.field})"
        scopes.append((f"{where} question", step.question, frozenset(earlier)))
        scopes.append((f"{where} error", step.error, frozenset(earlier)))
        earlier.add(step.field)
    scopes.append(("completion", flow.completion, frozenset(earlier)))
    scopes.append(("nudge", flow.nudge, frozenset({*earlier, "question"})))
    return scopes


@dataclass(frozen=True, slots=True)
class FlowStep:
    """One question: the *field* its answer is stored under, the *question*, how the answer
    is validated (see the module docs) and the *error* an invalid answer gets."""

    field: str
    question: str
    validate: str = "nonempty"
    error: str = DEFAULT_ERROR

    def __post_init__(self) -> None:
        if not isinstance(self.field, str) or not _FIELD.fullmatch(self.field):
            raise ConfigurationError(
                f"a step's field must be an identifier (letters, digits, '_'), got {self.field!r}"
            )
        if not isinstance(self.question, str) or not self.question.strip():
            raise ConfigurationError(f"step {self.field!r}: the question must not be empty")
        if not isinstance(self.validate, str):
            raise ConfigurationError(f"step {self.field!r}: validate must be a string")
        if not isinstance(self.error, str) or not self.error.strip():
            raise ConfigurationError(f"step {self.field!r}: the error text must not be empty")
        validator(self.validate)  # a malformed spec fails here, at load time

    @property
    def kind(self) -> str:
        """The validation kind (``email``, ``choice``...), without its argument."""
        return self.validate.partition(":")[0].strip()

    @property
    def options(self) -> tuple[str, ...]:
        """The options of a ``choice`` step, in order (empty for other kinds)."""
        if self.kind != "choice":
            return ()
        argument = self.validate.partition(":")[2]
        return tuple(o.strip() for o in argument.split(",") if o.strip())

    def check(self, answer: str | None) -> str | None:
        """The value to store for *answer*, or ``None`` when it is invalid."""
        if answer is None:
            return None
        return validator(self.validate)(answer)


@dataclass(frozen=True, slots=True)
class Flow:
    """A named sequence of questions with its greeting, completion and graceful reply.

    *nudge* is sent once to a contact who stopped answering (``{question}``: the question
    waiting for an answer). *on_complete* names the actions a completed flow runs, in order
    (each a durable job of its own); empty, completion runs none.
    """

    name: str
    steps: tuple[FlowStep, ...]
    greeting: str = DEFAULT_GREETING
    completion: str = DEFAULT_COMPLETION
    graceful_reply: str = DEFAULT_GRACEFUL_REPLY
    nudge: str = DEFAULT_NUDGE
    on_complete: tuple[str, ...] = DEFAULT_ON_COMPLETE

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigurationError("a flow needs a name")
        if not isinstance(self.on_complete, tuple) or not all(
            isinstance(a, str) and a.strip() for a in self.on_complete
        ):
            raise ConfigurationError(
                f"flow {self.name!r}: on_complete must be a list of action names"
            )
        if len(set(self.on_complete)) != len(self.on_complete):
            raise ConfigurationError(f"flow {self.name!r}: on_complete names an action twice")
        if not isinstance(self.steps, tuple) or not self.steps:
            raise ConfigurationError(f"flow {self.name!r}: needs at least one step")
        if not all(isinstance(step, FlowStep) for step in self.steps):
            raise ConfigurationError(f"flow {self.name!r}: every step must be a FlowStep")
        seen: set[str] = set()
        for step in self.steps:
            if step.field in seen:
                raise ConfigurationError(
                    f"flow {self.name!r}: the field {step.field!r} is asked twice"
                )
            seen.add(step.field)
        for name in ("greeting", "completion", "graceful_reply", "nudge"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(f"flow {self.name!r}: {name} must be non-empty text")
        self._check_placeholders()

    def _check_placeholders(self) -> None:
        """Every ``{placeholder}`` names a value the text is rendered with (see
        :func:`placeholder_scopes`); a misspelt one would reach the customer as written."""
        for where, text, known in placeholder_scopes(self):
            for name in placeholders(text):
                if name in known:
                    continue
                match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
                hint = f"did you mean {{{match[0]}}}? " if match else ""
                allowed = ", ".join(f"{{{k}}}" for k in sorted(known)) or "none (sent as written)"
                raise ConfigurationError(
                    f"flow {self.name!r}, {where}: unknown placeholder {{{name}}}; {hint}"
                    f"allowed here: {allowed}"
                )

    def field_of(self, kind: str) -> str | None:
        """The field of the first step validated as *kind* (``email``, ``phone``...)."""
        for step in self.steps:
            if step.kind == kind:
                return step.field
        return None


DEFAULT_FLOW = Flow(
    name="intake",
    greeting="Hi there! Thanks for reaching out. I'll ask a few quick questions so the "
    "right person can help you.",
    steps=(
        FlowStep("name", "First, what's your name?", error="Sorry, I didn't catch your name."),
        FlowStep(
            "email",
            "Thanks, {name}! What's the best email address to reach you?",
            validate="email",
            error="Hmm, that doesn't look like an email address (like ada@example.com).",
        ),
        FlowStep(
            "need",
            "What can we help you with?",
            error="Could you tell me a little about what you need?",
        ),
        FlowStep(
            "contact_time",
            "When's a good time for us to get in touch (for example 'weekday mornings')?",
            error="Could you tell me when suits you best?",
        ),
    ),
    completion="Thank you, {name}! We have everything we need, and someone from the team "
    "will be in touch soon.",
)

#: the flows every deployment has unless a flows file replaces them
DEFAULT_FLOWS: Mapping[str, Flow] = {DEFAULT_FLOW.name: DEFAULT_FLOW}

_STEP_KEYS = frozenset({"field", "question", "validate", "error"})
_FLOW_KEYS = frozenset(
    {"greeting", "completion", "graceful_reply", "nudge", "steps", "on_complete"}
)


def _step(flow: str, index: int, data: Any, source: str) -> FlowStep:
    where = f"{source}: flow {flow!r}, step {index + 1}"
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{where}: a step is a table with field and question")
    unknown = sorted(set(map(str, data)) - _STEP_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key(s) {', '.join(unknown)}; a step has field, question, "
            "validate, error"
        )
    for required in ("field", "question"):
        if not isinstance(data.get(required), str):
            raise ConfigurationError(f"{where}: {required!r} is required and must be text")
    for optional in ("validate", "error"):
        if optional in data and not isinstance(data[optional], str):
            raise ConfigurationError(f"{where}: {optional!r} must be text")
    try:
        return FlowStep(**{str(k): v for k, v in data.items()})
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc.message}") from None


def _flow(name: str, data: Any, source: str) -> Flow:
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{source}: flow {name!r} must be a table")
    unknown = sorted(set(map(str, data)) - _FLOW_KEYS)
    if unknown:
        raise ConfigurationError(
            f"{source}: flow {name!r}: unknown key(s) {', '.join(unknown)}; a flow has "
            "greeting, completion, graceful_reply, nudge, steps and on_complete"
        )
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ConfigurationError(f"{source}: flow {name!r} needs a non-empty list of steps")
    texts: dict[str, str] = {}
    for key in ("greeting", "completion", "graceful_reply", "nudge"):
        if key in data:
            if not isinstance(data[key], str):
                raise ConfigurationError(f"{source}: flow {name!r}: {key!r} must be text")
            texts[key] = data[key]
    parsed = tuple(_step(name, i, step, source) for i, step in enumerate(steps))
    actions = data.get("on_complete", list(DEFAULT_ON_COMPLETE))
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        raise ConfigurationError(
            f"{source}: flow {name!r}: 'on_complete' must be a list of action names"
        )
    try:
        return Flow(name=name, steps=parsed, on_complete=tuple(actions), **texts)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{source}: {exc.message}") from None


def flows_from_mapping(
    flows: Mapping[str, Any] | None, *, source: str = "flows", defaults: bool = True
) -> dict[str, Flow]:
    """The flows of a ``flows`` table (``{name: {greeting, steps: [...]...}}``), by name.

    With *defaults* the built-in flows (:data:`DEFAULT_FLOWS`) are included unless the table
    defines a flow of the same name (so an empty or missing table gives the built-in ones).
    """
    if flows is None:
        flows = {}
    if not isinstance(flows, Mapping):
        raise ConfigurationError(f"{source}: 'flows' must be a table of flows by name")
    result: dict[str, Flow] = dict(DEFAULT_FLOWS) if defaults else {}
    for name, data in flows.items():
        result[str(name)] = _flow(str(name), data, source)
    return result


def parse_flows(
    document: Mapping[str, Any], *, source: str = "flows", defaults: bool = True
) -> dict[str, Flow]:
    """The flows of a parsed document (``{"flows": {name: {...}}}``), by name (see
    :func:`flows_from_mapping`); a document without flows is a ConfigurationError."""
    if not isinstance(document, Mapping):
        raise ConfigurationError(f"{source}: expected a table with a 'flows' section")
    flows = document.get("flows")
    if not isinstance(flows, Mapping) or not flows:
        raise ConfigurationError(
            f"{source}: no flows found; expected a 'flows' section such as [flows.intake]"
        )
    return flows_from_mapping(flows, source=source, defaults=defaults)


def load_flows(path: str | Path, *, defaults: bool = True) -> dict[str, Flow]:
    """The flows defined in the TOML (``.toml``) or YAML (``.yaml``/``.yml``) file at *path*,
    by name, plus the built-in ones it does not redefine (unless ``defaults=False``).

    A missing, unreadable or malformed file, or a flow that breaks a rule (no steps, an
    unknown validation, a repeated field...), raises ConfigurationError naming the file and
    the flow.
    """
    file = Path(path)
    source = file.name
    suffix = file.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigurationError(
            f"{source}: flows are read from a .toml, .yaml or .yml file, not {suffix or 'this'}"
        )
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"flows file {str(file)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"flows file {str(file)!r} cannot be read: {exc}") from None
    document: Any
    if suffix == ".toml":
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{source} is not valid TOML: {exc}") from None
    else:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigurationError(f"{source} is not valid YAML{where}") from None
    if document is None:
        document = {}
    return parse_flows(document, source=source, defaults=defaults)
