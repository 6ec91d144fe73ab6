"""Translation catalogues written for a test: partial, broken or overriding, in a folder of its own."""

from __future__ import annotations

from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo


def write_catalogue(directory: Path, name: str, translations: dict[str, str]) -> None:
    """A compiled catalogue ``<directory>/<name>/LC_MESSAGES/messages.mo`` holding ``translations``."""
    catalog = Catalog(locale=name)
    for msgid, msgstr in translations.items():
        catalog.add(msgid, msgstr)
    folder = directory / name / "LC_MESSAGES"
    folder.mkdir(parents=True)
    with (folder / "messages.mo").open("wb") as handle:
        write_mo(handle, catalog)
