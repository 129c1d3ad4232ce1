"""Markups of outbound channels, and the one way text a customer controls enters them.

A message to a business's channel is a template (Jinja2, in the sandbox) rendered with
variables; many of those variables come from a customer -- the words of a WhatsApp message,
a profile name, an answer to a question. A channel with a markup would read them as markup:
``<!channel>`` typed by a customer pings a whole Slack channel, ``<https://evil.example|your
order>`` becomes a link with any label, ``<script>`` in an email runs as HTML. So every
template knows its channel's **markup** and every ``{{ value }}`` is escaped for it when it is
written out; the template's own text is not (it is the business's, not the customer's):

============  ==========================================================================
markup        what a value becomes
============  ==========================================================================
``text``      itself (plain text: an SMS, a WhatsApp reply, an email's text part)
``html``      ``&``, ``<``, ``>``, ``"``, ``'`` as HTML entities (an email's html part)
``slack``     ``&``, ``<``, ``>`` as ``&amp;``, ``&lt;``, ``&gt;`` (Slack ``mrkdwn``: its
              mentions, links and dates all sit between ``<`` and ``>``)
============  ==========================================================================

A channel with a new markup adds its escaper to :data:`ESCAPERS`; every template of that
markup then escapes with it. :class:`MessageTemplate` is a template of one markup;
:class:`~antifragile.connectors.EmailTemplates` renders its parts through the same
environments (``subject`` and ``text`` as ``text``, ``html`` as ``html``).
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from antifragile.errors import ConfigurationError


def escape_slack(text: str) -> str:
    """*text* as Slack ``mrkdwn`` shows it literally: ``&``, ``<`` and ``>`` escaped (the
    three characters Slack asks to escape; ``<!channel>`` becomes ``&lt;!channel&gt;``)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> str:
    return text


#: the escaper of each markup: what a template's values pass through
ESCAPERS: Mapping[str, Callable[[str], str]] = {
    "text": _plain,
    "html": html.escape,
    "slack": escape_slack,
}


def escape(markup: str, text: str) -> str:
    """*text* escaped for *markup* (a ConfigurationError for an unknown markup)."""
    return _escaper(markup)(text)


def _escaper(markup: str) -> Callable[[str], str]:
    escaper = ESCAPERS.get(markup)
    if escaper is None:
        known = ", ".join(sorted(ESCAPERS))
        raise ConfigurationError(f"unknown markup {markup!r} (known: {known})")
    return escaper


@functools.cache
def environment(markup: str) -> SandboxedEnvironment:
    """The Jinja2 sandbox that renders templates of *markup*: strict about undefined
    variables, every ``{{ value }}`` escaped with the markup's escaper (HTML through Jinja2's
    own autoescaping, so ``|safe`` keeps working there)."""
    escaper = _escaper(markup)
    common: dict[str, Any] = {"undefined": jinja2.StrictUndefined, "keep_trailing_newline": True}
    if markup == "html":
        return SandboxedEnvironment(autoescape=True, **common)
    if escaper is _plain:
        return SandboxedEnvironment(autoescape=False, **common)

    def finalize(value: Any) -> str:
        return escaper(value if isinstance(value, str) else str(value))

    return SandboxedEnvironment(autoescape=False, finalize=finalize, **common)


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """A template of a message in one *markup* (see :data:`ESCAPERS`): *source* is Jinja2,
    rendered in the sandbox with every value escaped for the markup."""

    name: str
    markup: str
    source: str

    def render(self, variables: Mapping[str, Any]) -> str:
        """The message; a ConfigurationError naming the template when a variable is missing
        or the source does not parse."""
        label = f"template {self.name!r}"
        return render_compiled(compile_source(self.markup, self.source, label), variables, label)


def compile_source(markup: str, source: str, label: str) -> jinja2.Template:
    """*source* compiled in *markup*'s environment; a ConfigurationError starting with
    *label* when it does not parse."""
    try:
        return environment(markup).from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigurationError(
            f"{label} does not parse: {exc.message} (line {exc.lineno})"
        ) from exc


def render_compiled(compiled: jinja2.Template, variables: Mapping[str, Any], label: str) -> str:
    """*compiled* rendered with *variables*; a ConfigurationError starting with *label* for a
    missing variable or any other failure."""
    try:
        return compiled.render(dict(variables))
    except jinja2.UndefinedError as exc:
        raise ConfigurationError(f"{label}: missing variable: {exc.message}") from exc
    except jinja2.TemplateError as exc:
        raise ConfigurationError(f"{label} failed to render: {exc}") from exc
