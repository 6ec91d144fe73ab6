"""Safety alerts and agency announcements in each resident's language: every locale renders (push and
email), hostile agency text stays data in every locale, a missing translation falls back, the bodies
pass the providers' limits, and a batch renders these kinds once per language."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from dispatcher.agencies.announcements import announcement_for
from dispatcher.channels.content import (
    PUSH_BODY_CHARS,
    EmailContent,
    PushContent,
    email_content,
    push_content,
    readers,
)
from dispatcher.channels.email import EmailChannel
from dispatcher.channels.i18n import ContentLocale, resolve_locale
from dispatcher.channels.push import PushChannel
from dispatcher.channels.push.message import MessageTemplate
from dispatcher.config import Settings
from dispatcher.contract import AgencyAnnouncement, PublishedRequest, parse_request
from dispatcher.sandbox.fcm_rules import MAX_PAYLOAD_BYTES, fcm_request_problem, payload_bytes
from dispatcher.sandbox.sendgrid_rules import mail_problem
from tests.catalogues import write_catalogue
from tests.factories import request_payload
from tests.recipients import device, mailbox
from tests.test_agencies_kinds import alert_payload

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
UNTIL = NOW + timedelta(days=1)
SETTINGS = Settings()
SQUARE: dict[str, object] = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
#: A 4-byte UTF-8 character: the longest text in characters is also the heaviest in bytes.
WIDE = "\U0001f6a8"

#: What each locale reads, written here (not read from the catalogues) so a lost translation fails:
#: alert label, its action, the closing line's first words, the contact label, announcement label and action.
WORDS = {
    "en-US": ("Safety Alert", "View alert", "This is information", "Contact:", "New in your area",
              "See the map of agencies"),
    "en-GB": ("Safety Alert", "View alert", "This is information", "Contact:", "New in your area",
              "See the map of agencies"),
    "es-US": ("Alerta de seguridad", "Ver alerta", "Esta información", "Contacto:", "Novedad en su zona",
              "Ver el mapa de agencias"),
    "fr-CA": ("Alerte de sécurité", "Voir l’alerte", "Cette information", "Contact\u00a0:",
              "Nouveau dans votre secteur", "Voir la carte des organismes"),
    "fr-FR": ("Alerte de sécurité", "Voir l’alerte", "Cette information", "Contact\u00a0:",
              "Nouveau près de chez vous", "Voir la carte des organismes"),
}
#: What an announcement says of the joining agency, in each language (the engine's words, translated).
JOINED = {"en": "now uses the app", "es": "ahora usa la aplicación", "fr": "utilise désormais l’application"}


def alert(request_id: str = "a-l10n", **overrides: Any) -> PublishedRequest:
    return parse_request(alert_payload(request_id, **{"incident_type": "missing_person", **overrides}))


def announcement(name: str = "New Town Police") -> AgencyAnnouncement:
    return announcement_for("new-pd", name, SQUARE, NOW, NOW)


def push(request: PublishedRequest, locale: str | ContentLocale, has_camera: bool = False) -> PushContent:
    return push_content(request, has_camera=has_camera, settings=SETTINGS, respond_until=UNTIL, now=NOW,
                        locale=locale)


def email(request: PublishedRequest, locale: str | ContentLocale) -> EmailContent:
    return email_content(request, has_camera=False, time_zone="UTC", settings=SETTINGS, locale=locale)


# -- every locale ---------------------------------------------------------------------------------

@pytest.mark.parametrize("tag", sorted(WORDS))
def test_a_safety_alert_renders_in_every_locale(tag: str) -> None:
    label, action, closing, contact, _, _ = WORDS[tag]
    request = alert(details="Gas leak on 5th\navoid the area")
    content = email(request, tag)
    for body in (content.text, content.html):
        for needle in (label, action, closing, "Springfield Police", "Det. Jo Park", "/alerts/a-l10n"):
            assert needle in body, (tag, needle)
    assert contact in content.text and "Gas leak on 5th\navoid the area" in content.text, "agency text as written"
    assert "Gas leak on 5th<br>avoid the area" in content.html and f'<html lang="{tag}">' in content.html
    assert content.subject.startswith(f"{label} ") and "Springfield Police" in content.subject
    if not tag.startswith("en"):
        assert "Safety Alert" not in content.text + content.html and "Missing person" not in content.subject
    notification = push(request, tag)
    assert notification.title == f"Springfield Police · {label}"
    assert notification.action == notification.data["action_label"] == action
    assert notification.data["action"] == "view_alert" and notification.data["type"] == "safety_alert"
    assert notification.body.endswith("Gas leak on 5th avoid the area") and len(notification.body) <= PUSH_BODY_CHARS
    assert push(request, tag, has_camera=True) == notification, "nothing to share: cameras read the same"


@pytest.mark.parametrize("tag", sorted(WORDS))
def test_an_announcement_renders_in_every_locale(tag: str) -> None:
    _, _, closing, _, label, action = WORDS[tag]
    joined = JOINED[tag[:2]]
    notification = push(announcement(), tag)
    assert notification.title == f"New Town Police · {label}"
    assert notification.action == notification.data["action_label"] == action
    assert notification.data["action"] == "view_agencies"
    assert notification.body.startswith(f"New Town Police {joined}") and len(notification.body) <= PUSH_BODY_CHARS
    content = email(announcement(), tag)
    for body in (content.text, content.html):
        for needle in (label, action, closing, f"New Town Police {joined}", "/agencies"):
            assert needle in body, (tag, needle)
    assert "New Town Police" in content.subject and "Contact" not in content.text


def test_english_is_what_it_was_before_the_templates() -> None:
    """The English alert, word for word as the engine wrote it with f-strings."""
    content = email(alert("a-1"), "en-US")
    assert content.subject == "Safety Alert from Springfield Police: Missing person"
    assert content.text == (
        "Safety Alert from Springfield Police\n\nIncident: Missing person\n\n"
        "Gas leak on 5th: avoid the area until crews clear it.\n\n"
        "Contact: Det. Jo Park\nPhone: +1 555 0100\nEmail: jpark@pd.example\n\n"
        "View alert: https://app.dispatcher.invalid/alerts/a-1\n\n"
        "This is information from your local agency; it asks nothing of you.")
    assert push(alert("a-1"), "en-US").body == "Missing person: Gas leak on 5th: avoid the area until crews clear it."
    stored = announcement()
    assert stored.details == (
        "New Town Police now uses the app to post safety alerts and requests for your area. Whether you ever "
        "share anything is up to you; the agency never sees who you are unless you tell them.")
    assert email(stored, "en-US").subject == "New in your area from New Town Police: Agency joined"


# -- hostile agency text --------------------------------------------------------------------------

EVIL_AGENCY = 'Evil & <script>alert("x")</script> \'{{ 7*7 }}\' %(agency)s {% trans %}'
EVIL_DETAILS = '<img src=x onerror="steal()"> & </p><a href="javascript:bad()">{% raw %}</a>\n{{ config }} %s'
EVIL_INVESTIGATOR = {"name": "Det. <b>Bold</b> \"Q\" {{ x }}", "phone": "+1 555 0100", "email": "j@pd.example"}
ESCAPED_AGENCY = "Evil &amp; &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &#39;{{ 7*7 }}&#39; %(agency)s {% trans %}"


@pytest.mark.parametrize("tag", [*sorted(WORDS), "de-DE", "garbage"])
def test_escaping_of_hostile_agency_text_holds_in_every_locale(tag: str) -> None:
    request = alert("a-hostile", agency={"id": "pd-x", "name": EVIL_AGENCY}, details=EVIL_DETAILS,
                    investigator=EVIL_INVESTIGATOR)
    joined = announcement(EVIL_AGENCY + "\r\nX-Evil: 1")
    for content in (email(request, tag), email(joined, tag)):
        for raw in ("<script>", "<img", "<b>", "</p><a", 'href="javascript'):
            assert raw not in content.html, (tag, raw)
        assert ESCAPED_AGENCY in content.html, tag
        assert EVIL_AGENCY in content.text and EVIL_AGENCY in content.subject, "as written, never evaluated"
        assert "\n" not in content.subject and "\r" not in content.subject
    alert_email = email(request, tag)
    assert EVIL_DETAILS in alert_email.text
    assert ("&lt;img src=x onerror=&#34;steal()&#34;&gt; &amp; &lt;/p&gt;&lt;a href=&#34;javascript:bad()&#34;&gt;"
            "{% raw %}&lt;/a&gt;<br>{{ config }} %s") in alert_email.html
    assert "Det. &lt;b&gt;Bold&lt;/b&gt; &#34;Q&#34; {{ x }}" in alert_email.html
    assert push(request, tag).title.startswith(EVIL_AGENCY + " · ") and "{{ config }} %s" in push(request, tag).body
    assert push(joined, tag).title.startswith(EVIL_AGENCY + " X-Evil: 1 · ")


# -- missing and broken translations --------------------------------------------------------------

def test_a_missing_or_broken_translation_falls_back(tmp_path: Path) -> None:
    write_catalogue(tmp_path, "fr", {
        "Safety Alert": "Alerte de sécurité",
        "Safety Alert from %(agency)s": "Alerte de %(agnecy)s",  # a placeholder misspelt
        "Contact: %(name)s": "<b>Contact</b> : %(name)s",  # markup the message has not
        "View alert": "",  # untranslated
    })
    write_catalogue(tmp_path, "fr_CA", {"New in your area": "Nouveau dans votre secteur"})
    locale = resolve_locale("fr-CA", tmp_path)
    content = email(alert("a-fallback"), locale)
    assert "Alerte de sécurité" in content.html, "what fr has, fr_CA takes"
    assert "Safety Alert from Springfield Police" in content.text, "a broken translation falls back"
    assert "Contact: Det. Jo Park" in content.text and "View alert:" in content.text
    assert "This is information from your local agency" in content.text, "no catalogue has it: English"
    notification = push(announcement(), locale)
    assert notification.title == "New Town Police · Nouveau dans votre secteur"
    assert notification.action == "See the map of agencies"
    assert notification.body.startswith("New Town Police now uses the app")


# -- the providers' limits ------------------------------------------------------------------------

def longest_alert() -> PublishedRequest:
    """Every field at the contract's maximum, free text in 4-byte characters, an urgent type."""
    return alert("R" * 128, agency={"id": "A" * 64, "name": WIDE * 200}, details=(WIDE + " ") * 2500,
                 incident_type="threat_to_safety",
                 investigator={"name": WIDE * 200, "phone": "+1 " + "5" * 29,
                               "email": "i" * 64 + "@" + "d" * 180 + ".example"})


@pytest.mark.parametrize("tag", [*sorted(WORDS), "not a locale"])
def test_the_longest_alert_and_announcement_pass_the_providers_limits(tag: str) -> None:
    channel = EmailChannel(SETTINGS.with_(sendgrid_api_key="SG.test", sendgrid_unsubscribe_group=77))
    for request in (longest_alert(), announcement(WIDE * 200)):
        content = push(request, tag)
        body = orjson.loads(MessageTemplate(content).body("t" * 4096))
        assert fcm_request_problem(body) is None, tag
        assert payload_bytes(body["message"]) <= MAX_PAYLOAD_BYTES and len(content.body) <= PUSH_BODY_CHARS
        mail = orjson.loads(channel.mail_body_json(request, email(request, tag),
                                                   [mailbox(1, "resident@example.org", "UTC", True, tag)]))
        assert mail_problem(mail) is None, tag


# -- one rendering per language in a batch --------------------------------------------------------

def test_readers_of_an_alert_differ_by_language_alone() -> None:
    request, community = alert(), parse_request(request_payload("c-1"))
    seen = {readers(request, has_camera=camera, time_zone=zone, locale=tag)
            for camera in (True, False) for zone in ("UTC", "America/Toronto") for tag in ("fr-CA", "fr_ca")}
    assert len(seen) == 1 and next(iter(seen)).locale.name == "fr_CA"
    assert len({readers(community, has_camera=camera, time_zone=zone, locale="fr-CA")
                for camera in (True, False) for zone in ("UTC", "America/Toronto")}) == 4


def test_a_batch_sends_one_alert_body_per_language(sandbox: Any) -> None:
    sandbox.clear()
    sandbox.faults.reset()
    request = parse_request(alert_payload("a-batch"))
    until = datetime.now(UTC) + timedelta(days=1)
    targets = [
        mailbox(1, "fr1@example.org", "America/Toronto", True, "fr-CA"),
        mailbox(2, "fr2@example.org", "America/Vancouver", False, "fr_ca"),
        mailbox(3, "es1@example.org", "UTC", True, "es-US"),
        mailbox(4, "es2@example.org", "Europe/Madrid", False, "es-US"),
        mailbox(5, "us@example.org", "America/Chicago", True, "en-US"),
        mailbox(6, "junk@example.org", "Not/AZone", False, "no such locale"),
    ]
    result = EmailChannel(sandbox.configure(Settings())).send(request, until, dict(targets))
    assert result.accepted == 6 and result.calls == 3, "one call per language, whatever the camera or zone"
    calls = {c["message_id"]: c for c in sandbox.records("sendgrid_requests")}
    subject = {r["email"]: calls[r["message_id"]]["subject"] for r in sandbox.records("sendgrid")}
    assert subject["fr1@example.org"] == subject["fr2@example.org"] == (
        "Alerte de sécurité de Springfield Police\u00a0: Gas leak")
    assert subject["es1@example.org"] == subject["es2@example.org"] == (
        "Alerta de seguridad de Springfield Police: Gas leak")
    assert subject["us@example.org"] == subject["junk@example.org"] == "Safety Alert from Springfield Police: Gas leak"

    channel = PushChannel(sandbox.configure(Settings()))
    try:
        recipients = dict([device(1, ("tok-fr-cam",), True, "fr-CA"), device(2, ("tok-fr",), False, "fr-CA"),
                           device(3, ("tok-es",), False, "es-US"), device(4, ("tok-en",), True, "garbage-")])
        assert channel.send(request, until, recipients).accepted == 4
        assert len(channel._templates) == 3, "one message rendered per language"
    finally:
        channel.close()
    sent = {r["token"]: r["message"] for r in sandbox.records("fcm")}
    assert sent["tok-fr-cam"]["notification"] == sent["tok-fr"]["notification"]
    assert sent["tok-fr"]["notification"]["title"] == "Springfield Police · Alerte de sécurité"
    assert sent["tok-es"]["data"]["action_label"] == "Ver alerta"
    assert sent["tok-en"]["data"]["action_label"] == "View alert"
