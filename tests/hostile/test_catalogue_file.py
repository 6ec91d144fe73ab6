"""Hostile translation catalogues: a broken or unreadable ``.mo`` never fails a send; what cannot be used
falls back to the English message, and every usable translation still shows."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo

from dispatcher.channels.content import email_content, push_content
from dispatcher.channels.i18n import resolve_locale
from dispatcher.config import Settings
from dispatcher.contract import parse_request
from tests.factories import request_payload

GOOD = {"View request": "Ver solicitud"}


def _mo(translations: dict[str, str]) -> bytes:
    catalog = Catalog(locale="es")
    for msgid, msgstr in {**GOOD, **translations}.items():
        catalog.add(msgid, msgstr)
    out = io.BytesIO()
    write_mo(out, catalog)
    return out.getvalue()


VALID = _mo({})
#: (name, the es catalogue's bytes, an English line that must show because what is hostile fell back)
CASES: list[tuple[str, bytes, str]] = [
    ("empty file", b"", "View request"),
    ("random bytes", b"\x00\xff" * 50, "View request"),
    ("magic number only", VALID[:4], "View request"),
    ("truncated", VALID[: len(VALID) // 2], "View request"),
    ("offsets past the end", VALID[:8] + b"\xff\xff\xff\x7f" * 4 + VALID[24:], "View request"),
    ("placeholder renamed", _mo({"Phone: %(phone)s": "Teléfono: %(telefono)s"}), "Phone: +1 555 0100"),
    ("placeholder dropped", _mo({"Phone: %(phone)s": "Teléfono"}), "Phone: +1 555 0100"),
    ("placeholder added", _mo({"Phone: %(phone)s": "Teléfono: %(phone)s %(email)s"}), "Phone: +1 555 0100"),
    ("lone percent", _mo({"Phone: %(phone)s": "Teléfono 100%: %(phone)s"}), "Phone: +1 555 0100"),
    ("positional format", _mo({"Phone: %(phone)s": "Teléfono: %s"}), "Phone: +1 555 0100"),
    ("markup in a translation", _mo({"Investigation code": "<script>x()</script>Código"}), "Investigation code"),
    ("template syntax in a translation", _mo({"Phone: %(phone)s": "{{ config }} %(phone)s"}), "Investigator:"),
]


@pytest.mark.parametrize(("name", "mo", "english"), CASES, ids=[case[0] for case in CASES])
def test_a_hostile_catalogue_falls_back_and_never_fails(tmp_path: Path, name: str, mo: bytes, english: str) -> None:
    folder = tmp_path / "es" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / "messages.mo").write_bytes(mo)
    locale = resolve_locale("es-US", tmp_path)
    request = parse_request(request_payload("req-hostile-catalogue"))

    content = email_content(request, has_camera=False, time_zone="UTC", settings=Settings(), locale=locale)
    push = push_content(request, has_camera=False, settings=Settings(), respond_until=request.published_at,
                        locale=locale)
    unreadable = english == "View request"
    assert push.action == ("View request" if unreadable else "Ver solicitud"), "what is usable still shows"
    assert english in content.text or english in content.html
    assert "<script>" not in content.html
    if name.startswith("template"):
        assert "{{ config }} +1 555 0100" in content.text, "a translation is text, never evaluated"
