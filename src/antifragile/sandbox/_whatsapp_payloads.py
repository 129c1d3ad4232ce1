"""What Cloud API checks in the body of an ``interactive`` message (reply buttons, list), and
in a ``template`` message against the approved templates.

Limits (Meta's interactive reply-buttons and list-message pages, and the archived official
Node SDK's ``ButtonObject``/``RowObject``/``ActionObject`` types):

* **buttons** -- 1 to 3, each ``{"type": "reply", "reply": {"id", "title"}}``; a title at most
  20 characters and unique within the message, an id at most 256;
* **list** -- ``action.button`` (the menu label) at most 20 characters; 1 to 10 sections with
  at most 10 rows in total; a row title at most 24 characters, a description at most 72, an
  id at most 200 and unique; a section title at most 24, required when there is more than one
  section;
* the body text at most 1024 characters, a footer at most 60.

A breach is a problem text (the simulator answers 400 with Graph code ``100``); Meta's exact
code for an over-limit interactive message was not confirmed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

MAX_BODY = 1024
MAX_FOOTER = 60
MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_BUTTON_ID = 256
MAX_LIST_BUTTON = 20
MAX_SECTIONS = 10
MAX_ROWS = 10
MAX_ROW_TITLE = 24
MAX_ROW_DESCRIPTION = 72
MAX_ROW_ID = 200
MAX_SECTION_TITLE = 24


def _text(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit


def _buttons(action: dict[str, Any]) -> str | None:
    buttons = action.get("buttons")
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= MAX_BUTTONS:
        return f"interactive['action']['buttons'] must hold 1 to {MAX_BUTTONS} buttons."
    titles: set[str] = set()
    ids: set[str] = set()
    for i, button in enumerate(buttons):
        reply = button.get("reply") if isinstance(button, dict) else None
        if not isinstance(button, dict) or button.get("type") != "reply":
            return f"Button {i}: type must be 'reply'."
        if not isinstance(reply, dict):
            return f"Button {i}: reply is required."
        if not _text(reply.get("title"), MAX_BUTTON_TITLE):
            return f"Button {i}: title must be 1 to {MAX_BUTTON_TITLE} characters long."
        if not _text(reply.get("id"), MAX_BUTTON_ID):
            return f"Button {i}: id must be 1 to {MAX_BUTTON_ID} characters long."
        if reply["title"] in titles or reply["id"] in ids:
            return "Button titles and ids must be unique."
        titles.add(reply["title"])
        ids.add(reply["id"])
    return None


def _list(action: dict[str, Any]) -> str | None:
    if not _text(action.get("button"), MAX_LIST_BUTTON):
        return f"interactive['action']['button'] must be 1 to {MAX_LIST_BUTTON} characters long."
    sections = action.get("sections")
    if not isinstance(sections, list) or not 1 <= len(sections) <= MAX_SECTIONS:
        return f"interactive['action']['sections'] must hold 1 to {MAX_SECTIONS} sections."
    ids: set[str] = set()
    for s, section in enumerate(sections):
        if not isinstance(section, dict):
            return f"Section {s} must be an object."
        title = section.get("title")
        if (title is not None or len(sections) > 1) and not _text(title, MAX_SECTION_TITLE):
            return f"Section {s}: title must be 1 to {MAX_SECTION_TITLE} characters long."
        rows = section.get("rows")
        if not isinstance(rows, list) or not rows:
            return f"Section {s}: rows are required."
        for r, row in enumerate(rows):
            if not isinstance(row, dict) or not _text(row.get("title"), MAX_ROW_TITLE):
                return f"Row {r}: title must be 1 to {MAX_ROW_TITLE} characters long."
            if not _text(row.get("id"), MAX_ROW_ID) or row["id"] in ids:
                return f"Row {r}: id must be unique and 1 to {MAX_ROW_ID} characters long."
            description = row.get("description")
            if description is not None and not _text(description, MAX_ROW_DESCRIPTION):
                return f"Row {r}: description must be at most {MAX_ROW_DESCRIPTION} characters."
            ids.add(row["id"])
    if len(ids) > MAX_ROWS:
        return f"A list message holds at most {MAX_ROWS} rows in total."
    return None


def interactive_problem(interactive: Any) -> str | None:
    """What is wrong with an ``interactive`` object of type ``button`` or ``list``, or
    ``None`` when Cloud API would take it."""
    if not isinstance(interactive, dict):
        return "The parameter interactive is required."
    kind = interactive.get("type")
    if kind not in ("button", "list"):
        return f"Unsupported interactive type {kind!r}."
    body = interactive.get("body")
    if not isinstance(body, dict) or not _text(body.get("text"), MAX_BODY):
        return f"interactive['body']['text'] must be 1 to {MAX_BODY} characters long."
    footer = interactive.get("footer")
    if footer is not None and (
        not isinstance(footer, dict) or not _text(footer.get("text"), MAX_FOOTER)
    ):
        return f"interactive['footer']['text'] must be 1 to {MAX_FOOTER} characters long."
    action = interactive.get("action")
    if not isinstance(action, dict):
        return "The parameter interactive['action'] is required."
    return _buttons(action) if kind == "button" else _list(action)


#: template errors (Graph code, HTTP status, message) -- a transcription of Meta's error table
TEMPLATE_MISSING = (132001, 404, "(#132001) Template name does not exist in the translation")
TEMPLATE_PARAMETERS = (
    132000,
    400,
    "(#132000) Number of parameters does not match the expected number of params",
)
TEMPLATE_PAUSED = (132015, 400, "(#132015) Template is Paused")


def _body_parameters(template: dict[str, Any]) -> int:
    count = 0
    for component in template.get("components") or ():
        if isinstance(component, dict) and component.get("type") == "body":
            parameters = component.get("parameters")
            count += len(parameters) if isinstance(parameters, list) else 0
    return count


def template_problem(
    template: dict[str, Any],
    approved: Mapping[str, Mapping[str, int]],
    paused: Collection[str] = (),
) -> tuple[tuple[int, int, str], str] | None:
    """The template error a send of *template* gets, with its details, or ``None``.

    *approved* maps a template's name to its languages, each with the number of its body's
    parameters; *paused* names templates paused for low quality.
    """
    name = str(template.get("name"))
    language = str((template.get("language") or {}).get("code"))
    languages = approved.get(name)
    if languages is None or language not in languages:
        return TEMPLATE_MISSING, f"template name ({name}) does not exist in {language}"
    if name in paused:
        return TEMPLATE_PAUSED, f"Template {name} is paused due to low quality."
    expected, given = languages[language], _body_parameters(template)
    if expected != given:
        return TEMPLATE_PARAMETERS, f"body: number of localizable_params ({given}) does not " + (
            f"match the expected number of params ({expected})"
        )
    return None


MAX_CAPTION = 1024
_CAPTIONED = frozenset({"image", "document", "video"})


def media_problem(kind: str, media: Any, known: Collection[str]) -> str | None:
    """What is wrong with the *kind* object of a media message (an ``image``, a
    ``document``...): exactly one of an http(s) ``link`` and a *known* ``id``; a ``caption``
    of at most 1024 characters on an image, document or video; a ``filename`` on a document
    only."""
    if not isinstance(media, dict):
        return f"The parameter {kind} is required."
    link, media_id = media.get("link"), media.get("id")
    if (link is None) == (media_id is None):
        return f"{kind} needs exactly one of link and id."
    if link is not None and (
        not isinstance(link, str) or not link.startswith(("https://", "http://"))
    ):
        return f"{kind}['link'] must be an http(s) URL."
    if media_id is not None and media_id not in known:
        return f"{kind}['id'] is not a valid media id."
    caption = media.get("caption")
    if caption is not None and (kind not in _CAPTIONED or not _text(caption, MAX_CAPTION)):
        return f"A caption goes with an image, document or video, at most {MAX_CAPTION} chars."
    if media.get("filename") is not None and kind != "document":
        return "Only a document has a filename."
    return None
