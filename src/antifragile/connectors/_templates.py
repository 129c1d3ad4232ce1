"""Email templates: named (subject, text, html) Jinja2 templates, overridable in a store.

::

    templates = EmailTemplates(store)                 # any antifragile Store (or None)
    email = await templates.render("order_received", {"order": order, "shop": "Acme"})
    await resend.send_email(sender=..., to=..., subject=email.subject, text=email.text,
                            html=email.html, idempotency_key=...)

**Defaults** ship in the package (:data:`DEFAULT_TEMPLATES`: ``order_received``,
``booking_confirmed``, ``delivery_failed``); pass ``defaults=`` to use others.

**Overrides** live in the store's key-value store under ``template:{name}`` as
``{"subject": ..., "text": ..., "html": ...}`` (``html`` may be ``null``): an override wins over
the default of the same name and may add new names. :meth:`EmailTemplates.save` and
:meth:`EmailTemplates.remove` write and delete them; anything that writes the same JSON works.

**Rendering.** Templates run in Jinja2's sandbox (overrides are data, not code) with
``StrictUndefined``: a variable the caller did not pass is a
:class:`~antifragile.ConfigurationError` naming the template and the part, as are an unknown
template name and a template that does not parse. Each part is rendered in its markup's
environment (:mod:`antifragile.connectors._markup`, the one every outbound channel's templates
use): the html part is ``html`` -- autoescaped, a customer's ``<script>`` arrives as text --,
the subject and text parts are ``text``, and a subject is folded onto one line (a header cannot
carry line breaks).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jinja2

from antifragile.connectors._markup import compile_source, render_compiled
from antifragile.errors import ConfigurationError
from antifragile.policies import SYSTEM_CLOCK, Clock
from antifragile.stores import Store

#: the key-value prefix of template overrides
KEY_PREFIX = "template:"

Part = Literal["subject", "text", "html"]


@dataclass(frozen=True, slots=True)
class EmailTemplate:
    """One named template: Jinja2 sources of the subject, the text part and the html part."""

    name: str
    subject: str
    text: str
    html: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "text": self.text, "html": self.html}

    @classmethod
    def from_json(cls, name: str, value: Any) -> EmailTemplate:
        if not isinstance(value, Mapping):
            raise ConfigurationError(f"template {name!r}: the stored override is not an object")
        subject, text, html = value.get("subject"), value.get("text"), value.get("html")
        if not isinstance(subject, str) or not isinstance(text, str):
            raise ConfigurationError(
                f"template {name!r}: an override needs string 'subject' and 'text'"
            )
        if html is not None and not isinstance(html, str):
            raise ConfigurationError(f"template {name!r}: 'html' must be a string or null")
        return cls(name, subject, text, html)


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """A rendered template: what a connector's ``send_email`` takes."""

    subject: str
    text: str
    html: str | None


DEFAULT_TEMPLATES: Mapping[str, EmailTemplate] = {
    t.name: t
    for t in (
        EmailTemplate(
            "order_received",
            subject="{{ shop }}: order {{ order.number }} received",
            text=(
                "Hello {{ customer_name }},\n\n"
                "We have received your order {{ order.number }} "
                "({{ order.total }}). We will let you know when it ships.\n\n"
                "{{ shop }}\n"
            ),
            html=(
                "<p>Hello {{ customer_name }},</p>\n"
                "<p>We have received your order <strong>{{ order.number }}</strong> "
                "({{ order.total }}). We will let you know when it ships.</p>\n"
                "<p>{{ shop }}</p>\n"
            ),
        ),
        EmailTemplate(
            "booking_confirmed",
            subject="Your booking with {{ host }} on {{ when }}",
            text=(
                "Hello {{ attendee_name }},\n\n"
                "Your booking with {{ host }} on {{ when }} is confirmed."
                "{% if location %}\nWhere: {{ location }}{% endif %}\n"
            ),
            html=(
                "<p>Hello {{ attendee_name }},</p>\n"
                "<p>Your booking with {{ host }} on {{ when }} is confirmed.</p>\n"
                "{% if location %}<p>Where: {{ location }}</p>\n{% endif %}"
            ),
        ),
        EmailTemplate(
            "delivery_failed",
            subject="[antifragile] {{ provider }} {{ operation }} needs attention",
            text=(
                "The {{ operation }} call to {{ provider }} failed for good: {{ error }}.\n"
                "Key: {{ key }}\n"
            ),
        ),
    )
}

_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


class EmailTemplates:
    """Named email templates: package defaults, overrides in *store*'s key-value store.

    *store* may be ``None`` (defaults only; :meth:`save` is then a ConfigurationError);
    *clock* dates the store operations.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        defaults: Mapping[str, EmailTemplate] | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.defaults: Mapping[str, EmailTemplate] = dict(
            DEFAULT_TEMPLATES if defaults is None else defaults
        )
        self._clock = clock

    async def get(self, name: str) -> EmailTemplate:
        """The template *name*: its override in the store, else the default."""
        if self.store is not None:
            found = await self.store.kv.get(KEY_PREFIX + name, now=self._clock.time())
            if found is not None:
                return EmailTemplate.from_json(name, found.value)
        template = self.defaults.get(name)
        if template is None:
            known = ", ".join(sorted(self.defaults)) or "none"
            raise ConfigurationError(f"no email template {name!r} (defaults: {known})")
        return template

    async def save(self, template: EmailTemplate) -> None:
        """Store *template* as the override of its name (checked to parse first)."""
        store = self._require_store()
        for part in ("subject", "text", "html"):
            self._compile(template, part)
        await store.kv.set(KEY_PREFIX + template.name, template.to_json(), now=self._clock.time())

    async def remove(self, name: str) -> bool:
        """Delete the override of *name* (the default applies again); whether there was one."""
        store = self._require_store()
        return await store.kv.delete(KEY_PREFIX + name, now=self._clock.time())

    async def render(self, name: str, variables: Mapping[str, Any]) -> RenderedEmail:
        """Render template *name* with *variables* (see the module docs for the errors)."""
        template = await self.get(name)
        return self.render_template(template, variables)

    def render_template(
        self, template: EmailTemplate, variables: Mapping[str, Any]
    ) -> RenderedEmail:
        """Render *template* itself (no store lookup)."""
        subject = self._render(template, "subject", variables)
        text = self._render(template, "text", variables)
        html = self._render(template, "html", variables) if template.html is not None else None
        return RenderedEmail(_LINE_BREAKS.sub(" ", subject).strip(), text, html)

    def _require_store(self) -> Store:
        if self.store is None:
            raise ConfigurationError("template overrides need a store: EmailTemplates(store)")
        return self.store

    def _compile(self, template: EmailTemplate, part: Part) -> jinja2.Template | None:
        source: str | None = getattr(template, part)
        if source is None:
            return None
        markup = "html" if part == "html" else "text"
        return compile_source(markup, source, f"template {template.name!r} ({part})")

    def _render(self, template: EmailTemplate, part: Part, variables: Mapping[str, Any]) -> str:
        compiled = self._compile(template, part)
        if compiled is None:
            return ""
        return render_compiled(compiled, variables, f"template {template.name!r} ({part})")
