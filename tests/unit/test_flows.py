"""Conversation flows: loading them from TOML and YAML, the validation kinds, clear errors for
bad files, and one turn of a session computed without I/O (``advance``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from antifragile import ConfigurationError
from antifragile.inbound import (
    DEFAULT_FLOW,
    DEFAULT_FLOWS,
    DEFAULT_ON_COMPLETE,
    Channel,
    EventKind,
    Flow,
    FlowStep,
    InboundEvent,
    SessionRecord,
    Tenant,
    flows_from_mapping,
    load_flows,
    parse_flows,
)
from antifragile.inbound._flows import render
from antifragile.inbound._sessions import advance
from antifragile.observability import mask_email, mask_phone

TOML = """
[flows.bakery]
greeting = "Hi! I'm the assistant of Acme Bakery."
completion = "Thanks, {name}! The team will be in touch."
graceful_reply = "Got it -- the team will get back to you shortly."

[[flows.bakery.steps]]
field = "name"
question = "What's your name?"

[[flows.bakery.steps]]
field = "email"
question = "What's your email, {name}?"
validate = "email"
error = "That doesn't look like an email address."

[[flows.bakery.steps]]
field = "size"
question = "Small, medium or large?"
validate = "choice:small,medium,large"
"""

YAML = """
flows:
  bakery:
    greeting: "Hi! I'm the assistant of Acme Bakery."
    completion: "Thanks, {name}!"
    steps:
      - field: name
        question: "What's your name?"
      - field: guests
        question: "How many guests?"
        validate: number
        error: "A number, please."
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_toml_flow_with_steps_texts_and_the_built_in_flow(tmp_path: Path) -> None:
    """A TOML flows file gives its flows with every step, text and validation, plus the
    built-in ``intake`` flow it does not redefine."""
    flows = load_flows(write(tmp_path, "flows.toml", TOML))
    assert set(flows) == {"bakery", "intake"}
    bakery = flows["bakery"]
    assert bakery.greeting.startswith("Hi! I'm the assistant")
    assert bakery.graceful_reply == "Got it -- the team will get back to you shortly."
    assert [s.field for s in bakery.steps] == ["name", "email", "size"]
    assert bakery.steps[1].validate == "email"
    assert bakery.steps[1].error == "That doesn't look like an email address."
    assert bakery.steps[0].validate == "nonempty"
    assert bakery.field_of("email") == "email"
    assert flows["intake"] is DEFAULT_FLOW


def test_load_yaml_flow_of_the_same_shape(tmp_path: Path) -> None:
    """A YAML file with the same shape loads the same way; ``defaults=False`` leaves the
    built-in flows out."""
    for name in ("flows.yaml", "flows.yml"):
        flows = load_flows(write(tmp_path, name, YAML), defaults=False)
        assert set(flows) == {"bakery"}
        assert flows["bakery"].steps[1].check("12") == "12"
        assert flows["bakery"].steps[1].error == "A number, please."


def test_a_file_may_redefine_the_intake_flow(tmp_path: Path) -> None:
    """A flow named ``intake`` in the file replaces the built-in one."""
    text = '[flows.intake]\n[[flows.intake.steps]]\nfield = "name"\nquestion = "Name?"\n'
    flows = load_flows(write(tmp_path, "f.toml", text))
    assert [s.field for s in flows["intake"].steps] == ["name"]


def test_flows_from_an_empty_or_missing_table_are_the_built_in_ones() -> None:
    """The service's settings may carry no flows: the built-in ones apply."""
    assert flows_from_mapping({}) == dict(DEFAULT_FLOWS)
    assert flows_from_mapping(None) == dict(DEFAULT_FLOWS)


def test_default_flow_asks_what_a_small_business_needs() -> None:
    """The built-in intake asks name, email, what they need and when to call, each with a
    friendly question and an error text."""
    assert [s.field for s in DEFAULT_FLOW.steps] == ["name", "email", "need", "contact_time"]
    assert DEFAULT_FLOW.steps[1].validate == "email"
    assert all(s.question.strip() and s.error.strip() for s in DEFAULT_FLOW.steps)


@pytest.mark.parametrize(
    ("spec", "answer", "stored"),
    [
        ("nonempty", "  Ada   Lovelace ", "Ada Lovelace"),
        ("nonempty", "   ", None),
        ("nonempty", "?!", None),
        ("email", " ada@example.com ", "ada@example.com"),
        ("email", "ada@example", None),
        ("email", "not an email", None),
        ("phone", "+44 7700 900-123", "+447700900123"),
        ("phone", "(555) 123.4567", "5551234567"),
        ("phone", "12345", None),
        ("phone", "call me", None),
        ("number", "12", "12"),
        ("number", "-3.5", "-3.5"),
        ("number", "2,5", "2.5"),
        ("number", "twelve", None),
        ("choice:Morning, Afternoon,Evening", "afternoon", "Afternoon"),
        ("choice:Morning,Afternoon,Evening", "3", "Evening"),
        ("choice:Morning,Afternoon", "4", None),
        ("choice:Morning,Afternoon", "night", None),
        (r"regex:[A-Z]{2}\d{4}", "AB1234", "AB1234"),
        (r"regex:[A-Z]{2}\d{4}", "AB12345", None),
    ],
)
def test_validation_kinds(spec: str, answer: str, stored: str | None) -> None:
    """Each validation kind accepts what it should (and stores it normalised) and refuses the
    rest."""
    assert FlowStep("x", "Question?", validate=spec).check(answer) == stored


def test_no_answer_is_invalid() -> None:
    """A message without text (an image, say) is not an answer."""
    assert FlowStep("x", "Q?").check(None) is None


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("color", "unknown validation"),
        ("choice:", "needs options"),
        ("regex:", "needs a pattern"),
        ("regex:[unclosed", "not a valid pattern"),
        ("email:x", "unknown validation"),
    ],
)
def test_bad_validation_specs_fail_at_construction(spec: str, says: str) -> None:
    """A malformed ``validate`` is a ConfigurationError when the step is made, not when a
    contact answers."""
    with pytest.raises(ConfigurationError, match=says):
        FlowStep("x", "Q?", validate=spec)


def test_flow_rules() -> None:
    """A flow needs a name and steps, a field is asked once, and texts are not empty."""
    step = FlowStep("name", "Name?")
    with pytest.raises(ConfigurationError, match="at least one step"):
        Flow("f", ())
    with pytest.raises(ConfigurationError, match="asked twice"):
        Flow("f", (step, step))
    with pytest.raises(ConfigurationError, match="needs a name"):
        Flow(" ", (step,))
    with pytest.raises(ConfigurationError, match="completion"):
        Flow("f", (step,), completion=" ")
    with pytest.raises(ConfigurationError, match="identifier"):
        FlowStep("my field", "Q?")


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("f.toml", "[flows.a\n", "not valid TOML"),
        ("f.yaml", "flows: [unclosed\n", "not valid YAML"),
        ("f.toml", 'title = "x"\n', "no flows found"),
        ("f.yaml", "", "no flows found"),
        ("f.toml", "[flows.a]\ngreeting = 'hi'\n", "non-empty list of steps"),
        ("f.toml", "[flows.a]\n[[flows.a.steps]]\nfield = 'n'\n", "'question' is required"),
        (
            "f.toml",
            "[flows.a]\n[[flows.a.steps]]\nfield = 'n'\nquestion = 'Q?'\nvalidate = 'zip'\n",
            "flow 'a', step 1: unknown validation",
        ),
        (
            "f.toml",
            "[flows.a]\n[[flows.a.steps]]\nfield = 'n'\nquestion = 'Q?'\nvalidation = 'email'\n",
            "unknown key",
        ),
        ("f.toml", "[flows.a]\ngreet = 'hi'\nsteps = []\n", "unknown key"),
        ("f.yaml", "flows:\n  a:\n    steps: [hello]\n", "a step is a table"),
        ("f.yaml", "flows:\n  a:\n    steps:\n      - {field: n, question: 3}\n", "must be text"),
        ("f.json", "{}", "a .toml, .yaml or .yml file"),
    ],
)
def test_bad_files_are_clear_configuration_errors(
    tmp_path: Path, name: str, text: str, says: str
) -> None:
    """A malformed file or flow raises ConfigurationError naming the file and what is wrong."""
    with pytest.raises(ConfigurationError, match=says) as caught:
        load_flows(write(tmp_path, name, text))
    assert caught.value.code == "CONFIGURATION"
    if not name.endswith(".json"):
        assert name in caught.value.message


def test_missing_file(tmp_path: Path) -> None:
    """A flows file that does not exist is a ConfigurationError, not a FileNotFoundError."""
    with pytest.raises(ConfigurationError, match="not found"):
        load_flows(tmp_path / "nope.toml")


def test_parse_flows_needs_a_flows_section() -> None:
    """A parsed document must have a non-empty ``flows`` section."""
    with pytest.raises(ConfigurationError, match="no flows found"):
        parse_flows({"tenants": {}})
    assert "intake" in parse_flows({"flows": {"x": {"steps": [{"field": "a", "question": "?"}]}}})


def test_render_fills_known_fields_and_keeps_the_rest() -> None:
    """Texts may name collected fields; unknown names and stray braces are left as written."""
    assert render("Thanks, {name}!", {"name": "Ada"}) == "Thanks, Ada!"
    assert render("Thanks, {name}! {other}", {}) == "Thanks, {name}! {other}"
    assert render("a { b", {"name": "Ada"}) == "a { b"
    assert render("{0} {name.attr}", {"name": "Ada"}) == "{0} {name.attr}"


def test_masks() -> None:
    """Phones and emails are masked the way logs and chat messages show them."""
    assert mask_phone("447700900123") == "+4477\u2022\u2022\u2022\u2022\u2022\u202223"
    assert mask_phone("+44 7700 900123") == mask_phone("447700900123")
    assert mask_phone("123") == "\u2022\u2022\u202223"
    assert mask_email("ada@example.com") == "a\u2022\u2022\u2022@example.com"


# -- one turn, without I/O ----------------------------------------------------------------------

TENANT = Tenant("acme", whatsapp_phone_number_id="100")
FLOW = Flow(
    "f",
    (FlowStep("name", "Name?"), FlowStep("email", "Email, {name}?", validate="email")),
    greeting="Hello!",
    completion="Done, {name}.",
)


def message(event_id: str, text: str | None) -> InboundEvent:
    return InboundEvent(
        Channel.WHATSAPP, event_id, EventKind.MESSAGE, "100", sender="447700900123", text=text
    )


def test_advance_walks_the_flow_and_replays_a_repeated_event() -> None:
    """The first message starts the flow (greeting and first question, not an answer); a
    valid answer moves on; an invalid one repeats the question after the error; the last
    answer completes; the same event handled again gives the same turn and writes nothing."""
    record, turn = advance(None, FLOW, TENANT, message("m1", "hi"), key="k", now=10.0)
    assert turn is not None
    assert record is not None
    assert turn.reply == "Hello!\n\nName?"
    assert (turn.step, turn.completed, record.progress_status, record.round) == (
        0,
        False,
        "in_progress",
        1,
    )
    record, turn = advance(record, FLOW, TENANT, message("m2", "Ada"), key="k", now=11.0)
    assert turn is not None
    assert record is not None
    assert turn.reply == "Email, Ada?"
    again, replay = advance(record, FLOW, TENANT, message("m2", "Ada"), key="k", now=12.0)
    assert again is None
    assert replay == turn
    record, turn = advance(record, FLOW, TENANT, message("m3", "nope"), key="k", now=13.0)
    assert turn is not None
    assert record is not None
    assert turn.reply == "Sorry, I didn't catch that.\n\nEmail, Ada?"
    assert turn.step == 1
    record, turn = advance(record, FLOW, TENANT, message("m4", None), key="k", now=14.0)
    assert turn is not None
    assert turn.step == 1
    assert record is not None
    record, turn = advance(record, FLOW, TENANT, message("m5", "a@b.io"), key="k", now=15.0)
    assert turn is not None
    assert record is not None
    assert (turn.reply, turn.completed, turn.step) == ("Done, Ada.", True, 2)
    assert record.progress_status == "completed"
    assert record.completed_at == 15.0
    assert record.fields == {"name": "Ada", "email": "a@b.io"}
    assert advance(record, FLOW, TENANT, message("m6", "hi"), key="k", now=16.0) == (None, None)


def test_on_complete_names_the_actions_of_a_completed_flow() -> None:
    """``on_complete`` defaults to the summary email, the Shopify customer, the HubSpot
    contact and the Slack message; a flow may name its own (or none); a non-list, a non-name
    or an action named twice is a CONFIGURATION error naming the flow."""
    flows = flows_from_mapping(
        {
            "plain": {"steps": [{"field": "name", "question": "Name?"}]},
            "crm": {
                "steps": [{"field": "name", "question": "Name?"}],
                "on_complete": ["create_hubspot_contact", "book_oven"],
            },
            "quiet": {"steps": [{"field": "name", "question": "Name?"}], "on_complete": []},
        }
    )
    assert (
        flows["plain"].on_complete
        == DEFAULT_ON_COMPLETE
        == (
            "send_summary_email",
            "create_shopify_customer",
            "create_hubspot_contact",
            "notify_slack",
        )
    )
    assert flows["crm"].on_complete == ("create_hubspot_contact", "book_oven")
    assert flows["quiet"].on_complete == ()
    for bad, says in (
        ("notify_slack", "list of action names"),
        ([1], "list of action names"),
        (["a", "a"], "twice"),
        ([" "], "list of action names"),
    ):
        with pytest.raises(ConfigurationError, match=says):
            flows_from_mapping(
                {"x": {"steps": [{"field": "n", "question": "?"}], "on_complete": bad}}
            )


def test_a_session_record_round_trips_through_its_stored_json() -> None:
    """The record is frozen; ``to_json`` writes the flat stored shape (status flags as
    top-level fields) and ``from_json`` reads it back equal, keeping fields it does not model
    (what an action remembered) in ``extra``; garbage in a field reads as its default."""
    record, turn = advance(
        None,
        FLOW,
        TENANT,
        message("m1", "hi"),
        key="k",
        now=10.0,
        flags=("email_status", "slack_status"),
    )
    assert record is not None
    assert turn is not None
    stored = record.to_json()
    assert stored["email_status"] == stored["slack_status"] == "none"
    assert stored["recent"] == [
        {"event_id": "m1", "reply": "Hello!\n\nName?", "completed": False, "step": 0}
    ]
    assert SessionRecord.from_json(stored) == record
    with pytest.raises(AttributeError):
        record.step = 3  # type: ignore[misc]
    remembered = SessionRecord.from_json({**stored, "shopify_customer_id": 42, "round": "x"})
    assert remembered.extra == {"shopify_customer_id": 42}
    assert remembered.to_json()["shopify_customer_id"] == 42
    assert SessionRecord.from_json({"progress_status": "weird", "fields": []}).progress_status == (
        "new"
    )
