"""Templates of every markup escape the values they are given, never their own text."""

from __future__ import annotations

import pytest

from antifragile import ConfigurationError
from antifragile.connectors import ESCAPERS, EmailTemplate, EmailTemplates, MessageTemplate
from antifragile.connectors._markup import escape

ATTACK = "<!channel> <https://evil.example|click> & <script>"


def test_slack_values_are_escaped_and_the_template_text_is_not() -> None:
    template = MessageTemplate("t", "slack", "<!here|here> {{ who }} wrote: {{ text }}")
    out = template.render({"who": 7, "text": ATTACK})
    assert out == (
        "<!here|here> 7 wrote: &lt;!channel&gt; &lt;https://evil.example|click&gt; "
        "&amp; &lt;script&gt;"
    )


def test_each_markup_has_its_escaper_and_an_unknown_one_is_refused() -> None:
    assert escape("text", ATTACK) == ATTACK
    assert escape("html", ATTACK).startswith("&lt;!channel&gt;")
    assert "<" not in escape("slack", ATTACK)
    assert set(ESCAPERS) >= {"text", "html", "slack"}
    with pytest.raises(ConfigurationError, match="unknown markup 'irc'"):
        MessageTemplate("t", "irc", "{{ x }}").render({"x": 1})


def test_a_missing_variable_or_a_broken_source_names_the_template() -> None:
    with pytest.raises(ConfigurationError, match="'t': missing variable"):
        MessageTemplate("t", "slack", "{{ nope }}").render({})
    with pytest.raises(ConfigurationError, match="'t' does not parse"):
        MessageTemplate("t", "slack", "{% if %}").render({})


def test_email_parts_render_through_the_same_markups() -> None:
    rendered = EmailTemplates().render_template(
        EmailTemplate("e", subject="Hi {{ x }}", text="{{ x }}", html="<p>{{ x }}</p>"),
        {"x": ATTACK},
    )
    assert rendered.text == ATTACK
    assert rendered.html == f"<p>{escape('html', ATTACK)}</p>"
