"""What residents read: labels, lengths, time to live and the footage window in their time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dispatcher.channels.content import (
    PUSH_BODY_CHARS,
    collapse_id,
    email_content,
    format_window,
    incident_label,
    one_line,
    push_content,
    push_ttl_seconds,
    shorten,
)
from dispatcher.config import FCM_MAX_TTL_SECONDS, Settings
from dispatcher.contract import parse_request
from tests.factories import request_payload

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_ttl_ends_with_the_response_window_and_is_capped_at_fcms_maximum() -> None:
    assert push_ttl_seconds(NOW + timedelta(days=3), NOW) == 3 * 86400
    assert push_ttl_seconds(NOW + timedelta(days=60), NOW) == FCM_MAX_TTL_SECONDS
    assert push_ttl_seconds(NOW - timedelta(seconds=5), NOW) == 0


def test_text_helpers() -> None:
    assert incident_label("threat_to_safety") == "Threat to safety"
    assert one_line("a\r\nBcc: x\x00y") == "a Bcc: x y"
    long = "word " * 100
    cut = shorten(long, PUSH_BODY_CHARS)
    assert len(cut) <= PUSH_BODY_CHARS and cut.endswith("…") and not cut.endswith(" …")
    assert shorten("short  text", 50) == "short text"


def test_collapse_ids_differ_for_every_request_id_and_fit_fcms_limits() -> None:
    shared = "a" * 61
    ids = [shared + "1", shared + "2", shared + "-x" * 30, shared, "a" * 60, "req-1", "x" * 128, "x" * 127]
    collapsed = [collapse_id(request_id) for request_id in ids]
    assert len(set(collapsed)) == len(ids), "two requests never share a collapse id"
    for value in collapsed:
        assert len(value.encode()) <= 64 and value.isascii() and value.isprintable()
    assert collapse_id("req-1") == "cr-req-1", "a short id stays readable"
    assert collapse_id("x" * 128) == collapse_id("x" * 128), "a redelivered push collapses onto the first"


NNBSP = "\u202f"  # CLDR puts a narrow no-break space before AM/PM
DASH = "\u2009–\u2009"  # and thin spaces around the dash between the ends of an interval


@pytest.mark.parametrize(("zone", "locale", "expected"), [
    ("America/New_York", "en_US", f"Mar 3, 2026, 9:00{NNBSP}PM{DASH}Mar 4, 2026, 2:00{NNBSP}AM (EST)"),
    ("America/New_York", "en_GB", f"3 Mar 2026, 21:00{DASH}4 Mar 2026, 02:00 (Eastern Standard Time)"),
    ("America/New_York", "fr_CA", f"3 mars 2026, 21 h 00{DASH}4 mars 2026, 02 h 00 (HNE)"),
    ("America/New_York", "es_US", f"3 mar 2026, 9:00{NNBSP}p.m.{DASH}4 mar 2026, 2:00{NNBSP}a.m. (EST)"),
    ("Europe/Berlin", "en_GB", "4 Mar 2026, 03:00–08:00 (CET)"),
    ("Europe/Berlin", "en_US", f"Mar 4, 2026, 3:00{DASH}8:00{NNBSP}AM (Central European Standard Time)"),
    ("Not/AZone", "en_US", f"Mar 4, 2026, 2:00{DASH}7:00{NNBSP}AM (UTC)"),
])
def test_footage_window_in_the_residents_time_zone_as_their_locale_writes_it(zone: str, locale: str,
                                                                              expected: str) -> None:
    start = datetime(2026, 3, 4, 2, 0, tzinfo=UTC)
    end = datetime(2026, 3, 4, 7, 0, tzinfo=UTC)
    assert format_window(start, end, zone, locale) == expected


def test_push_content_urgency_and_actions() -> None:
    settings = Settings()
    urgent = parse_request(request_payload("r-1", incident_type="threat_to_safety", details="x " * 400))
    content = push_content(urgent, has_camera=False, settings=settings, respond_until=NOW + timedelta(days=1),
                           now=NOW)
    assert content.urgent and content.ttl_seconds == 86400
    assert content.action == "View request" and content.data["action"] == "view_request"
    assert len(content.body) <= PUSH_BODY_CHARS
    plain = parse_request(request_payload("r-2"))
    camera = push_content(plain, has_camera=True, settings=settings, respond_until=NOW + timedelta(days=1), now=NOW)
    assert not camera.urgent and camera.action == "Choose Videos to Share"


def test_email_subject_is_one_line_and_html_is_escaped() -> None:
    request = parse_request(request_payload("r-3", agency={"id": "a", "name": "A & B\r\nX-Evil: 1"},
                                            details='<b onclick="x">hi</b>\nsecond line'))
    content = email_content(request, has_camera=True, time_zone="UTC", settings=Settings())
    assert "\n" not in content.subject and "\r" not in content.subject
    assert "A &amp; B" in content.html and "<b onclick" not in content.html
    assert "&lt;b onclick=&#34;x&#34;&gt;hi&lt;/b&gt;<br>second line" in content.html
    assert '<b onclick="x">hi</b>' in content.text, "the plain-text body shows the text as written"


# -- every locale ---------------------------------------------------------------------------------

#: What each supported locale reads, written here (not read from the catalogues) so a lost translation
#: fails: (label, camera action, other action, a word of the privacy line, the email field label).
WORDS = {
    "en-US": ("Community Request", "Choose Videos to Share", "View request", "voluntary", "Email:"),
    "en-GB": ("Community Request", "Choose Videos to Share", "View request", "voluntary", "Email:"),
    "es-US": ("Solicitud comunitaria", "Elegir videos para compartir", "Ver solicitud", "voluntario",
              "Correo electrónico:"),
    "fr-CA": ("Demande communautaire", "Choisir les vidéos à partager", "Voir la demande", "volontaire",
              "Courriel\u00a0:"),
    "fr-FR": ("Demande communautaire", "Choisir les vidéos à partager", "Voir la demande", "volontaire",
              "E-mail\u00a0:"),
    "es-MX": ("Solicitud comunitaria", "Elegir videos para compartir", "Ver solicitud", "voluntario",
              "Correo electrónico:"),
}
#: Agency text with markup, quotes, template syntax and format placeholders.
EVIL_AGENCY = 'Evil & <script>alert("x")</script> \'{{ 7*7 }}\' %(agency)s'
EVIL_DETAILS = '<img src=x onerror="steal()"> & </p><a href="javascript:bad()">{% raw %}</a>\n{{ config }} %s'
HOSTILE = {
    "agency": {"id": "pd-x", "name": EVIL_AGENCY},
    "details": EVIL_DETAILS,
    "investigator": {"name": "Det. <b>Bold</b> \"Q\" {{ x }}", "phone": "+1 555 0100", "email": "j@pd.example"},
}


@pytest.mark.parametrize("tag", sorted(WORDS))
@pytest.mark.parametrize("has_camera", [True, False])
def test_every_locale_renders_for_camera_owners_and_others(tag: str, has_camera: bool) -> None:
    label, camera_action, other_action, privacy, email_label = WORDS[tag]
    action = camera_action if has_camera else other_action
    request = parse_request(request_payload("req-l10n", details="Two cars\nbroken into"))
    email = email_content(request, has_camera=has_camera, time_zone="America/Chicago", settings=Settings(),
                          locale=tag)
    window = format_window(request.footage_window.start, request.footage_window.end, "America/Chicago",
                           tag.replace("-", "_"))
    for body in (email.text, email.html):
        for needle in (label, action, privacy, window, "Springfield Police", "Det. Jo Park", "SPD-2026-0042"):
            assert needle in body, (tag, needle)
    assert email_label in email.text and "Two cars\nbroken into" in email.text
    assert "Two cars<br>broken into" in email.html and f'<html lang="{tag}">' in email.html
    assert "Springfield Police" in email.subject and "\n" not in email.subject
    if not tag.startswith("en"):
        assert "Investigator" not in email.text and "Footage requested" not in email.html, "no English left"
    push = push_content(request, has_camera=has_camera, settings=Settings(), respond_until=NOW + timedelta(days=1),
                        now=NOW, locale=tag)
    assert push.title == f"Springfield Police · {label}"
    assert push.action == push.data["action_label"] == action
    assert push.data["action"] == ("choose_videos" if has_camera else "view_request")
    assert push.body.endswith("Two cars broken into") and len(push.body) <= PUSH_BODY_CHARS


@pytest.mark.parametrize("tag", [*sorted(WORDS), "de-DE", "garbage"])
def test_escaping_holds_in_every_locale(tag: str) -> None:
    request = parse_request(request_payload("req-hostile", **HOSTILE))
    email = email_content(request, has_camera=True, time_zone="UTC", settings=Settings(), locale=tag)
    for raw in ("<script>", "<img", "<b>", "</p><a", 'href="javascript'):
        assert raw not in email.html, (tag, raw)
    for escaped in ("Evil &amp; &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &#39;{{ 7*7 }}&#39; %(agency)s",
                    "&lt;img src=x onerror=&#34;steal()&#34;&gt; &amp; &lt;/p&gt;&lt;a href=&#34;javascript:bad()"
                    "&#34;&gt;{% raw %}&lt;/a&gt;<br>{{ config }} %s",
                    "Det. &lt;b&gt;Bold&lt;/b&gt; &#34;Q&#34; {{ x }}"):
        assert escaped in email.html, (tag, escaped)
    # The agency's text as written, never evaluated as a template or a format string.
    assert EVIL_AGENCY in email.text and EVIL_DETAILS in email.text and EVIL_AGENCY in email.subject
    push = push_content(request, has_camera=True, settings=Settings(), respond_until=NOW + timedelta(days=1),
                        now=NOW, locale=tag)
    assert push.title.startswith(EVIL_AGENCY + " · ")
    assert "{{ config }} %s" in push.body
