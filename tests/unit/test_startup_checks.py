"""What the service checks at start: flows' placeholders, tenants' flows, unknown variables,
missing webhook secrets, and the one-line failure of a command that cannot start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from antifragile.cli._startup import failure_line
from antifragile.errors import ConfigurationError, StoreUnavailableError
from antifragile.inbound import Flow, FlowStep, Tenant
from antifragile.inbound._flows import DEFAULT_FLOWS, flows_from_mapping, placeholders
from antifragile.service import Settings
from antifragile.service._checks import (
    KNOWN_VARIABLES,
    check_tenants,
    missing_secrets,
    unknown_variables,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "antifragile"


def steps(*fields: str) -> tuple[FlowStep, ...]:
    return tuple(FlowStep(field, f"Your {field}?") for field in fields)


def test_a_misspelt_placeholder_names_the_flow_the_text_and_the_closest_field() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Flow(name="events", steps=steps("name", "guests"), completion="Thanks! {guestz} guests")
    message = str(caught.value)
    assert "flow 'events', completion: unknown placeholder {guestz}" in message
    assert "did you mean {guests}?" in message
    assert "allowed here: {guests}, {name}" in message


def test_a_question_may_only_name_the_fields_asked_before_it() -> None:
    later = (FlowStep("name", "Hi {email}, your name?"), FlowStep("email", "Email?"))
    with pytest.raises(ConfigurationError, match=r"step 1 \(name\) question: .*\{email\}"):
        Flow(name="f", steps=later)
    fine = Flow(name="f", steps=(FlowStep("name", "Name?"), FlowStep("email", "Thanks {name}!")))
    assert fine.steps[1].question == "Thanks {name}!"


def test_the_greeting_is_sent_as_written_so_it_takes_no_placeholder() -> None:
    with pytest.raises(ConfigurationError, match=r"greeting: .*none \(sent as written\)"):
        Flow(name="f", steps=steps("name"), greeting="Hi {name}!")


def test_literal_braces_and_the_nudge_question_are_allowed() -> None:
    flow = Flow(
        name="f",
        steps=steps("name"),
        greeting="Prices in {{EUR}}",
        nudge="Still there, {name}? {question}",
    )
    assert placeholders(flow.greeting) == []
    assert placeholders("{order.number} {x[0]}") == ["order", "x"]
    assert placeholders("not a {format") == []  # sent as written by render()


def test_a_flows_file_with_a_bad_placeholder_names_its_source_and_step() -> None:
    table = {"intake": {"steps": [{"field": "guest", "question": "Name?"}], "completion": "{gest}"}}
    with pytest.raises(ConfigurationError, match=r"^acme\.toml: flow 'intake', completion"):
        flows_from_mapping(table, source="acme.toml")


def test_a_tenant_naming_a_missing_flow_stops_the_start() -> None:
    tenants = [Tenant(id="acme", flow="intak")]
    with pytest.raises(ConfigurationError) as caught:
        check_tenants(tenants, DEFAULT_FLOWS)
    assert str(caught.value).startswith("tenant 'acme' names the flow 'intak', which does not")
    assert "did you mean 'intake'?" in str(caught.value)
    check_tenants(
        [Tenant(id="a"), Tenant(id="b", flow=None), Tenant(id="c", flow="")], DEFAULT_FLOWS
    )


def test_the_service_refuses_a_tenant_whose_flow_is_missing(tmp_path: Path) -> None:
    config = tmp_path / "service.toml"
    config.write_text('[tenants.acme]\nflow = "intak"\n', encoding="utf-8")
    settings = Settings.from_env({}, config_path=config)
    from antifragile.service import Assistant

    with pytest.raises(ConfigurationError, match="tenant 'acme' names the flow 'intak'"):
        Assistant(settings)


def test_unknown_variables_get_the_closest_known_name() -> None:
    environ = {
        "ANTIFRAGILE_DATABSE_URL": "x",
        "ANTIFRAGILE_DATABASE_URL": "sqlite:///a.db",
        "ANTIFRAGILE_WHATSAPP_APP_SECRET_FILE": "/run/secrets/wa",
        "ANTIFRAGILE_ZZZ": "1",
        "HOME": "/root",
    }
    assert unknown_variables(environ) == [
        ("ANTIFRAGILE_DATABSE_URL", "ANTIFRAGILE_DATABASE_URL"),
        ("ANTIFRAGILE_ZZZ", None),
    ]


def test_every_variable_the_package_reads_is_known() -> None:
    """A variable read anywhere in the package must not be reported as unknown."""
    name = re.compile(r"\bANTIFRAGILE_[A-Z0-9]+(?:_[A-Z0-9]+)*\b")
    used: set[str] = set()
    for path in SRC.rglob("*.py"):
        used.update(name.findall(path.read_text(encoding="utf-8")))
    # prefixes (``ANTIFRAGILE_WHATSAPP`` in ``ANTIFRAGILE_WHATSAPP_*``) are not variables
    prefixes = {n for n in used if any(o.startswith(n + "_") for o in used)}
    assert sorted(used - prefixes - KNOWN_VARIABLES) == []


class FakeConnectors:
    """Which providers have their settings (the registry builds connectors to tell)."""

    def __init__(self, *configured: str) -> None:
        self.providers = set(configured)

    def configured(self, provider: str) -> bool:
        return provider in self.providers


def test_a_configured_channel_without_its_secret_is_reported() -> None:
    routed = [Tenant(id="acme", whatsapp_phone_number_id="1065")]
    assert missing_secrets(Settings(), routed, None) == ["ANTIFRAGILE_WHATSAPP_APP_SECRET"]
    assert missing_secrets(Settings(), [], FakeConnectors("twilio")) == [
        "ANTIFRAGILE_TWILIO_AUTH_TOKEN"
    ]
    assert missing_secrets(Settings(), [Tenant(id="a")], FakeConnectors("shopify")) == []
    assert missing_secrets(
        Settings(), [Tenant(id="a", shop_domain="acme.myshopify.com")], None
    ) == ["ANTIFRAGILE_SHOPIFY_WEBHOOK_SECRET"]
    with_secret = Settings.from_env({"ANTIFRAGILE_WHATSAPP_APP_SECRET": "s3cret-value"})
    assert missing_secrets(with_secret, routed, None) == []


def test_a_failure_is_one_line_with_its_code_and_what_to_do() -> None:
    line = failure_line(StoreUnavailableError("cannot connect to\nPostgreSQL at db:5432"))
    assert "\n" not in line
    assert line.startswith("error STORE_UNAVAILABLE: cannot connect to PostgreSQL at db:5432; ")
    assert "check --database-url" in line
    secret = failure_line(ConfigurationError("bad url postgresql://app:hunter2@db/app"))
    assert "hunter2" not in secret
    assert failure_line(RuntimeError("boom")).startswith("error INTERNAL: RuntimeError: boom")
