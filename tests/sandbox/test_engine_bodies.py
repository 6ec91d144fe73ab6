"""Every push and email body the engine's content code can produce passes the providers' published rules.

Bodies are built by the engine's own channel code (two small helpers below, the only place this test
touches it) for: camera and not, urgent and not, the longest inputs the contract allows (in multi-byte
characters, which count as bytes against FCM's limit), response windows from closed to beyond FCM's
longest TTL, every supported locale and the fallbacks (a translation is longer than the English, and
each locale writes the footage window its own way), and every time zone there is. Each body goes
through the same checks the sandboxes apply: Google's discovery document for FCM, SendGrid's
mail-send rules.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import available_timezones

import orjson
import pytest

from dispatcher.channels.content import email_content, push_content
from dispatcher.channels.email import EmailChannel
from dispatcher.channels.push.message import MessageTemplate
from dispatcher.config import SENDGRID_MAX_PERSONALIZATIONS, URGENT_INCIDENT_TYPES, Settings
from dispatcher.contract import CommunityRequest, parse_request
from dispatcher.preferences.eligibility import EmailTarget
from dispatcher.sandbox.fcm_rules import MAX_PAYLOAD_BYTES, fcm_request_problem, payload_bytes
from dispatcher.sandbox.sendgrid_rules import mail_problem
from tests.factories import request_payload
from tests.recipients import mailbox

SETTINGS = Settings().with_(sendgrid_api_key="SG.test", sendgrid_unsubscribe_group=77)
NOW = datetime.now(UTC)
#: A 4-byte UTF-8 character: the longest text in characters is also the heaviest in bytes.
WIDE = "\U0001f6a8"


# -- the engine's body builders (adapt here if the channel modules move) --------------------------

def engine_push_body(request: CommunityRequest, *, has_camera: bool, respond_until: datetime,
                     token: str, locale: str) -> dict[str, Any]:
    """The ``messages:send`` body the push channel sends to one device."""
    content = push_content(request, has_camera=has_camera, settings=SETTINGS, respond_until=respond_until,
                           locale=locale)
    body: dict[str, Any] = orjson.loads(MessageTemplate(content).body(token))
    return body


def engine_mail_body(request: CommunityRequest, *, has_camera: bool, time_zone: str, locale: str,
                     targets: list[tuple[int, EmailTarget]]) -> dict[str, Any]:
    """The mail send body the email channel posts for one group of residents."""
    content = email_content(request, has_camera=has_camera, time_zone=time_zone, settings=SETTINGS,
                            locale=locale)
    body: dict[str, Any] = orjson.loads(EmailChannel(SETTINGS).mail_body_json(request, content, targets))
    return body


# -- the requests ---------------------------------------------------------------------------------

def longest_request(incident_type: str) -> CommunityRequest:
    """Every field at the contract's maximum length, free text in 4-byte characters."""
    id_chars = string.ascii_letters + string.digits
    return parse_request(request_payload(
        ("R" + id_chars * 3)[:128],
        agency={"id": "A" * 64, "name": WIDE * 200},
        incident_type=incident_type,
        details=(WIDE + " ") * 2500,
        investigator={"name": WIDE * 200, "phone": "+1 " + "5" * 29,
                      "email": "i" * 64 + "@" + "d" * 180 + ".example"},
        investigation_code="C" * 64,
    ))


def requests() -> dict[str, CommunityRequest]:
    urgent = sorted(URGENT_INCIDENT_TYPES)[0]
    longest_type = "x" + "_y" * 31 + "z"
    return {
        "plain": parse_request(request_payload("req-plain")),
        "urgent": parse_request(request_payload("req-urgent", incident_type=urgent)),
        "longest": longest_request(longest_type),
        "longest urgent": longest_request(urgent),
        "control characters": parse_request(request_payload(
            "req-ctl", agency={"id": "a", "name": "Line\r\nBreak\tAgency\x7f"}, details="a\nb\r\n\x00c")),
    }


REQUESTS = requests()
#: The supported locales, a region that falls back to its language, and a tag that falls back to English.
LOCALES = ["en-US", "en-GB", "es-US", "fr-CA", "fr-BE", "not a locale"]
ALL_ZONES = [*sorted(available_timezones()), "Not/AZone"]
#: Zones with long names, odd offsets, no abbreviation, or none at all.
SAMPLE_ZONES = ["UTC", "America/New_York", "America/St_Johns", "Europe/Berlin", "Asia/Kolkata", "Pacific/Chatham",
                "Australia/Lord_Howe", "America/Argentina/ComodRivadavia", "Etc/GMT+12", "Not/AZone"]
WINDOWS = {"closed": NOW - timedelta(hours=1), "one hour": NOW + timedelta(hours=1),
           "beyond FCM's longest TTL": NOW + timedelta(days=60)}


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_every_push_body_passes_the_fcm_description(name: str, locale: str) -> None:
    request = REQUESTS[name]
    assert request.urgent == ("urgent" in name)
    for has_camera in (True, False):
        for window, respond_until in WINDOWS.items():
            for token in ("tok-short", "t" * 4096):
                body = engine_push_body(request, has_camera=has_camera, respond_until=respond_until, token=token,
                                        locale=locale)
                problem = fcm_request_problem(body)
                assert problem is None, (name, locale, has_camera, window, problem)
                assert payload_bytes(body["message"]) <= MAX_PAYLOAD_BYTES


@pytest.mark.parametrize("locale", LOCALES)
def test_the_longest_push_is_the_heaviest_the_contract_allows(locale: str) -> None:
    body = engine_push_body(REQUESTS["longest urgent"], has_camera=True, respond_until=NOW, token="t", locale=locale)
    # The title carries the whole 200-character agency name in 4-byte characters.
    assert payload_bytes(body["message"]) > 200 * 4
    assert payload_bytes(body["message"]) <= MAX_PAYLOAD_BYTES


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_every_email_body_passes_sendgrids_rules(name: str, locale: str) -> None:
    request = REQUESTS[name]
    target = [mailbox(1, "resident@example.org", "UTC", True, locale)]
    # Every zone for the heaviest request; a zone changes only the footage window, so the others take a sample.
    zones = ALL_ZONES if name == "longest urgent" else SAMPLE_ZONES
    for has_camera in (True, False):
        for zone in zones:
            body = engine_mail_body(request, has_camera=has_camera, time_zone=zone, locale=locale, targets=target)
            assert mail_problem(body) is None, (name, locale, has_camera, zone, mail_problem(body))


@pytest.mark.parametrize("locale", LOCALES)
def test_a_full_email_batch_of_the_longest_addresses_passes(locale: str) -> None:
    request = REQUESTS["longest urgent"]
    email = "r" * 64 + "@" + "e" * 180 + ".example"
    targets = [mailbox(2**62 + i, f"{i}{email}"[:254], "Pacific/Chatham", True, locale)
               for i in range(SENDGRID_MAX_PERSONALIZATIONS)]
    body = engine_mail_body(request, has_camera=True, time_zone="Pacific/Chatham", locale=locale, targets=targets)

    assert len(body["personalizations"]) == SENDGRID_MAX_PERSONALIZATIONS
    assert mail_problem(body) is None
