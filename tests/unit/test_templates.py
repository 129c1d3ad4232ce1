"""EmailTemplates: package defaults, overrides in a real store's key-value store, Jinja2 rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from antifragile import ConfigurationError, FakeClock
from antifragile.connectors import (
    DEFAULT_TEMPLATES,
    EmailTemplate,
    EmailTemplates,
    RenderedEmail,
)
from antifragile.stores import Store, open_store

ORDER = {"customer_name": "Ada", "shop": "Acme", "order": {"number": "1001", "total": "€12"}}


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'kv.db'}"
    opened = await open_store(url)
    yield opened
    await opened.close()


async def test_default_template_renders_all_three_parts() -> None:
    """A package default renders its subject, text and html with the caller's variables."""
    email = await EmailTemplates().render("order_received", ORDER)
    assert email == RenderedEmail(
        subject="Acme: order 1001 received",
        text=email.text,
        html=email.html,
    )
    assert "Hello Ada," in email.text
    assert email.html is not None
    assert "<strong>1001</strong>" in email.html
    assert set(DEFAULT_TEMPLATES) >= {"order_received", "booking_confirmed", "delivery_failed"}


async def test_html_is_autoescaped_and_text_is_not() -> None:
    """A variable holding markup is escaped in the html part, left as-is in the text part."""
    email = await EmailTemplates().render(
        "order_received", {**ORDER, "customer_name": "<script>x</script>"}
    )
    assert email.html is not None
    assert "&lt;script&gt;" in email.html
    assert "<script>" not in email.html
    assert "<script>x</script>" in email.text


async def test_subject_is_folded_onto_one_line() -> None:
    """Line breaks in a rendered subject become spaces (no header injection)."""
    email = await EmailTemplates().render("order_received", {**ORDER, "shop": "Acme\r\nBcc: x"})
    assert "\n" not in email.subject
    assert "\r" not in email.subject
    assert email.subject.startswith("Acme Bcc: x")


async def test_unknown_template_is_a_configuration_error() -> None:
    """An unknown name is a ConfigurationError that lists the known ones."""
    with pytest.raises(ConfigurationError, match="no email template 'nope'"):
        await EmailTemplates().render("nope", {})


async def test_missing_variable_is_a_configuration_error_naming_the_part() -> None:
    """StrictUndefined: a variable the caller did not pass is a ConfigurationError that names
    the template and the part, never an empty string in the email."""
    with pytest.raises(ConfigurationError, match=r"'order_received' \(subject\): missing"):
        await EmailTemplates().render("order_received", {"customer_name": "Ada"})


async def test_override_in_the_store_wins_and_can_be_removed(store: Store) -> None:
    """An override saved in the store's KV (``template:{name}``) wins over the default;
    removing it brings the default back."""
    templates = EmailTemplates(store, clock=FakeClock())
    custom = EmailTemplate("order_received", "Thanks, {{ customer_name }}!", "Got it.")
    await templates.save(custom)
    stored = await store.kv.get("template:order_received", now=FakeClock().time())
    assert stored is not None
    assert stored.value == {
        "subject": "Thanks, {{ customer_name }}!",
        "text": "Got it.",
        "html": None,
    }
    email = await templates.render("order_received", ORDER)
    assert email == RenderedEmail("Thanks, Ada!", "Got it.", None)
    assert await templates.remove("order_received")
    assert (await templates.render("order_received", ORDER)).subject == "Acme: order 1001 received"


async def test_override_may_add_a_new_name_written_by_anything(store: Store) -> None:
    """Any writer of the JSON shape adds a template; a malformed override is a
    ConfigurationError."""
    clock = FakeClock()
    await store.kv.set(
        "template:welcome",
        {"subject": "Hi {{ name }}", "text": "Welcome", "html": "<b>{{ name }}</b>"},
        now=clock.time(),
    )
    templates = EmailTemplates(store, clock=clock)
    email = await templates.render("welcome", {"name": "A&B"})
    assert email.html == "<b>A&amp;B</b>"
    await store.kv.set("template:broken", {"subject": 1}, now=clock.time())
    with pytest.raises(ConfigurationError, match="'broken'"):
        await templates.render("broken", {})


async def test_saving_a_template_that_does_not_parse_is_refused(store: Store) -> None:
    """A syntax error is reported when the override is saved, and nothing is stored."""
    templates = EmailTemplates(store)
    with pytest.raises(ConfigurationError, match="does not parse"):
        await templates.save(EmailTemplate("bad", "{{ oops", "text"))
    assert await store.kv.get("template:bad", now=FakeClock().time()) is None


async def test_templates_are_sandboxed() -> None:
    """Templates run in Jinja2's sandbox: reaching into Python internals is refused."""
    templates = EmailTemplates(defaults={})
    evil = EmailTemplate("evil", "x", "{{ cycler.__init__.__globals__ }}")
    with pytest.raises(ConfigurationError):
        templates.render_template(evil, {})


async def test_save_without_a_store_is_a_configuration_error() -> None:
    """Overrides need a store."""
    with pytest.raises(ConfigurationError, match="need a store"):
        await EmailTemplates().save(EmailTemplate("x", "s", "t"))
