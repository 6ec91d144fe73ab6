"""Each resident's language: tags resolve with fallbacks, the catalogues are complete and compiled,
a missing or broken translation falls back instead of failing, and the channels group by language."""

from __future__ import annotations

import fnmatch
import io
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from dispatcher.channels.content import email_content, push_content
from dispatcher.channels.email import EmailChannel
from dispatcher.channels.i18n import LOCALES_DIR, catalogue_names, resolve_locale
from dispatcher.channels.push import PushChannel
from dispatcher.config import Settings
from dispatcher.contract import parse_request
from dispatcher.sandbox import SandboxServer
from tests.catalogues import write_catalogue
from tests.factories import request_payload
from tests.recipients import device, mailbox

ROOT = Path(__file__).resolve().parent.parent
POT = LOCALES_DIR / "messages.pot"
#: Languages translated in full; a regional catalogue (fr_CA) overrides only what differs.
FULL_LANGUAGES = {"es", "fr"}
SETTINGS = Settings()
UNTIL = datetime.now(UTC) + timedelta(days=3)


def _po(name: str) -> Catalog:
    with (LOCALES_DIR / name / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=name)


def _ids(catalog: Catalog) -> set[str]:
    return {str(message.id) for message in catalog if message.id}


# -- resolving tags -------------------------------------------------------------------------------

@pytest.mark.parametrize(("tag", "name", "catalogues"), [
    ("en-US", "en_US", ()),
    ("en-GB", "en_GB", ()),
    ("es-US", "es_US", ("es",)),
    ("fr-CA", "fr_CA", ("fr_CA", "fr")),
    ("fr_ca", "fr_CA", ("fr_CA", "fr")),
    ("FR-ca", "fr_CA", ("fr_CA", "fr")),
    ("fr-CA-u-ca-gregory", "fr_CA", ("fr_CA", "fr")),
    ("fr-BE", "fr_BE", ("fr",)),
    ("es-MX", "es_MX", ("es",)),
    ("es-419", "es_419", ("es",)),
    ("fr", "fr", ("fr",)),
    ("fr-ZZ", "fr_FR", ("fr",)),  # a region Babel does not know: the language's likeliest
    ("en", "en", ()),
    # No catalogue for the language: English words, and English dates to go with them.
    ("de-DE", "en_US", ()),
    ("zh-Hant-TW", "en_US", ()),
])
def test_tags_resolve_with_fallbacks(tag: str, name: str, catalogues: tuple[str, ...]) -> None:
    resolved = resolve_locale(tag)
    assert (resolved.name, resolved.catalogues) == (name, catalogues)


@pytest.mark.parametrize("tag", [
    "", "zz", "qq-QQ", "en--US", "en-US\x00", "<script>", "x" * 1000, "fr-" + "a" * 60, "i-klingon", "12",
    "en US", "%(agency)s", None, 42, ["fr-CA"], b"fr-CA",
])
def test_unknown_or_garbage_tags_render_in_english(tag: object) -> None:
    resolved = resolve_locale(tag)
    assert (resolved.name, resolved.catalogues) == ("en_US", ())
    request = parse_request(request_payload("req-garbage"))
    content = email_content(request, has_camera=True, time_zone="UTC", settings=SETTINGS, locale=resolved)
    assert content.subject == "Community Request from Springfield Police: Vehicle break in"


# -- the catalogues -------------------------------------------------------------------------------

def test_the_supported_catalogues_are_there() -> None:
    assert catalogue_names() == {"es", "fr", "fr_CA"}


def test_the_template_catalogue_holds_every_message_of_the_templates_and_labels() -> None:
    with (ROOT / "babel.cfg").open() as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    extracted = {str(found[2]) for found in extract_from_dir(str(ROOT), method_map, options_map)}
    with POT.open("rb") as handle:
        template = read_po(handle)
    assert len(extracted) > 20
    assert extracted == _ids(template), "run scripts/catalogues.sh after changing a template or a label"


@pytest.mark.parametrize("name", sorted(catalogue_names()))
def test_every_catalogue_is_current_consistent_and_compiled(name: str) -> None:
    with POT.open("rb") as handle:
        template = read_po(handle)
    catalog = _po(name)
    assert _ids(catalog) == _ids(template), f"{name}: run scripts/catalogues.sh to update it"
    problems = [(message.id, [str(error) for error in errors]) for message, errors in catalog.check()]
    assert problems == [], f"{name}: placeholders differ from the message"
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    committed = (LOCALES_DIR / name / "LC_MESSAGES" / "messages.mo").read_bytes()
    assert compiled.getvalue() == committed, f"{name}: the .mo is stale; run scripts/catalogues.sh compile"


@pytest.mark.parametrize("name", sorted(FULL_LANGUAGES))
def test_full_languages_translate_every_message(name: str) -> None:
    catalog = _po(name)
    untranslated = [message.id for message in catalog if message.id and (not message.string or message.fuzzy)]
    assert untranslated == []


# -- missing and broken translations --------------------------------------------------------------

def test_missing_and_broken_translations_fall_back_instead_of_failing(tmp_path: Path) -> None:
    write_catalogue(tmp_path, "fr", {
        "Community Request": "Demande communautaire",
        "View request": "Voir la demande",
        "Incident: %(incident)s": "Incident : %(incidnt)s",  # a placeholder misspelt
        "Phone: %(phone)s": "Téléphone à 100% : %(phone)s",  # a lone percent sign
        "Email: %(email)s": "E-mail : %(email)s",
        "Investigator: %(name)s": "",  # untranslated
    })
    write_catalogue(tmp_path, "fr_CA", {"Email: %(email)s": "Courriel : %(email)s"})
    (tmp_path / "es" / "LC_MESSAGES").mkdir(parents=True)
    (tmp_path / "es" / "LC_MESSAGES" / "messages.mo").write_bytes(b"\x00not a catalogue")

    request = parse_request(request_payload("req-fallback"))
    locale = resolve_locale("fr-CA", tmp_path)
    assert locale.catalogues == ("fr_CA", "fr")
    text = email_content(request, has_camera=False, time_zone="UTC", settings=SETTINGS, locale=locale).text
    assert "Courriel : jpark@pd.example" in text, "fr_CA overrides fr"
    assert "Demande communautaire de" not in text, "a message no catalogue has stays in English"
    assert "Community Request from Springfield Police" in text
    assert "Incident: Vehicle break in" in text and "Phone: +1 555 0100" in text, "broken translations fall back"
    assert "Investigator: Det. Jo Park" in text and "Voir la demande" in text
    push = push_content(request, has_camera=False, settings=SETTINGS, respond_until=UNTIL, locale=locale)
    assert push.title == "Springfield Police · Demande communautaire" and push.action == "Voir la demande"

    unreadable = resolve_locale("es-US", tmp_path)
    assert unreadable.catalogues == ("es",)
    content = email_content(request, has_camera=True, time_zone="UTC", settings=SETTINGS, locale=unreadable)
    assert content.subject == "Community Request from Springfield Police: Vehicle break in"
    assert "Choose Videos to Share" in content.html


# -- the channels group residents by the language they read ----------------------------------------

@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("sandbox")) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> None:
    if "sandbox" in request.fixturenames:
        server: SandboxServer = request.getfixturevalue("sandbox")
        server.faults.reset()
        server.clear()


def test_email_sends_one_body_per_language_and_each_resident_gets_theirs(sandbox: SandboxServer) -> None:
    channel = EmailChannel(sandbox.configure(Settings()))
    targets = [
        mailbox(1, "fr1@example.org", "America/Toronto", True, "fr-CA"),
        mailbox(2, "fr2@example.org", "America/Toronto", True, "fr_ca"),
        mailbox(3, "es@example.org", "America/Toronto", True, "es-US"),
        mailbox(4, "gb@example.org", "America/Toronto", True, "en-GB"),
        mailbox(5, "us@example.org", "America/Toronto", True, "en-US"),
        mailbox(6, "junk@example.org", "America/Toronto", True, "no such locale"),
    ]
    result = channel.send(parse_request(request_payload("req-lang")), UNTIL, dict(targets))
    assert result.accepted == 6 and result.calls == 4, "fr-CA and fr_ca share a body; garbage reads en-US"

    calls = {c["message_id"]: c for c in sandbox.records("sendgrid_requests")}
    subject = {r["email"]: calls[r["message_id"]]["subject"] for r in sandbox.records("sendgrid")}
    assert subject["fr1@example.org"] == subject["fr2@example.org"] == (
        "Demande communautaire de Springfield Police\u00a0: Effraction de véhicule")
    assert subject["es@example.org"] == "Solicitud comunitaria de Springfield Police: Robo en vehículo"
    english = "Community Request from Springfield Police: Vehicle break in"
    assert subject["gb@example.org"] == subject["us@example.org"] == subject["junk@example.org"] == english
    texts = {r["email"]: next(b["value"] for b in calls[r["message_id"]]["content"] if b["type"] == "text/plain")
             for r in sandbox.records("sendgrid")}
    assert texts["gb@example.org"] != texts["us@example.org"], "en-GB writes the footage window its own way"
    assert texts["us@example.org"] == texts["junk@example.org"]


def test_push_sends_each_device_its_residents_language(sandbox: SandboxServer) -> None:
    channel = PushChannel(sandbox.configure(Settings()))
    try:
        recipients = dict([
            device(1, ("tok-fr",), True, "fr-CA"),
            device(2, ("tok-es-cam", "tok-es-cam-2"), True, "es-US"),
            device(3, ("tok-es",), False, "es-US"),
            device(4, ("tok-en",), False, "garbage-tag-"),
        ])
        result = channel.send(parse_request(request_payload("req-lang-push")), UNTIL, recipients)
    finally:
        channel.close()
    assert result.accepted == 5
    sent: dict[str, Any] = {r["token"]: r["message"] for r in sandbox.records("fcm")}
    assert sent["tok-fr"]["notification"]["title"] == "Springfield Police · Demande communautaire"
    assert sent["tok-fr"]["data"]["action_label"] == "Choisir les vidéos à partager"
    assert sent["tok-es-cam"]["data"] == sent["tok-es-cam-2"]["data"]
    assert sent["tok-es-cam"]["data"]["action_label"] == "Elegir videos para compartir"
    assert sent["tok-es"]["data"]["action_label"] == "Ver solicitud"
    assert sent["tok-es"]["notification"]["body"].startswith("Robo en vehículo: Two cars broken into")
    assert sent["tok-en"]["data"]["action_label"] == "View request"
    for message in sent.values():
        assert message["data"]["action"] in {"choose_videos", "view_request"}, "machine fields stay untranslated"


def test_every_template_and_catalogue_ships_in_the_package() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["dispatcher"]
    package = ROOT / "dispatcher"
    files = [path.relative_to(package).as_posix() for folder in ("channels/templates", "channels/locales")
             for path in (package / folder).rglob("*") if path.is_file()]
    assert len(files) > 10
    assert [name for name in files if not any(fnmatch.fnmatchcase(name, p) for p in patterns)] == []
