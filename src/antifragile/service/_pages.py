"""The service's server-rendered pages (the API reference, the dashboard) share one way of
loading templates and static assets from the package's ``templates`` folder."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape


def page_templates(filters: Mapping[str, Callable[..., Any]]) -> Environment:
    """A template environment over the package's templates: every value escaped (also in
    templates made from strings), an undefined name an error, the page's *filters* added."""
    env = Environment(
        loader=PackageLoader("antifragile.service", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(filters)
    return env


@cache
def page_asset(name: str) -> bytes:
    """The bytes of the static file *name* in the package's templates folder."""
    return resources.files("antifragile.service").joinpath("templates", name).read_bytes()
