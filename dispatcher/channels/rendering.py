"""Messages are Jinja2 templates translated through gettext: a designer edits a template, a translator
a catalogue, and neither touches Python.

Templates live in ``templates/<kind>/`` (``community_request/email.html``...), shared layouts in
``templates/``; a new kind of request brings its own folder. Templates ending in ``.html`` are
autoescaped, so text from an agency is data, never markup; ``.txt`` templates are not (plain text and
push texts show the text as written). One environment per chain of catalogues, made on first use and
kept: its compiled templates are reused by every message in that language.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from dispatcher.channels.i18n import ContentLocale, translations

_LOADER = PackageLoader("dispatcher.channels", "templates")


@lru_cache(maxsize=64)
def environment(catalogues: tuple[str, ...], directory: Path) -> Environment:
    """The template environment whose ``{% trans %}`` and ``_()`` speak through these catalogues."""
    env = Environment(
        loader=_LOADER,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        extensions=["jinja2.ext.i18n"],
        undefined=StrictUndefined,
        auto_reload=False,
    )
    env.install_gettext_translations(translations(catalogues, directory), newstyle=True)  # type: ignore[attr-defined]
    return env


def render(kind: str, name: str, locale: ContentLocale, values: dict[str, Any]) -> str:
    """Template ``<kind>/<name>`` rendered in ``locale``'s language with ``values``."""
    return environment(locale.catalogues, locale.directory).get_template(f"{kind}/{name}").render(values)


def gettext(locale: ContentLocale, message: str) -> str:
    """One message (a label marked with ``N_`` in Python) in ``locale``'s language."""
    return translations(locale.catalogues, locale.directory).gettext(message)
