"""The email channel's fast body builder writes exactly what orjson writes for the readable body, in every
locale (translated bodies carry non-ASCII and no-break spaces)."""

from __future__ import annotations

import orjson
import pytest

from dispatcher.channels.content import email_content
from dispatcher.channels.email import EmailChannel
from dispatcher.config import Settings
from dispatcher.contract import parse_request
from tests.factories import request_payload
from tests.recipients import mailbox

ADDRESSES = [
    "plain@example.org",
    'quote"d@example.org',
    "back\\slash@example.org",
    "tab\there@example.org",
    "ünïcødé@exämple.org",
    "line\u2028sep@example.org",
    "nul\x00@example.org",
]


@pytest.mark.parametrize("locale", ["en-US", "en-GB", "es-US", "fr-CA"])
@pytest.mark.parametrize("unsubscribe_url", ["https://example.org/unsubscribe", 'https://ex.org/u"n\\sub'])
@pytest.mark.parametrize("group_id", [0, 77])
def test_json_body_matches_the_dict_body(unsubscribe_url: str, group_id: int, locale: str) -> None:
    settings = Settings().with_(sendgrid_api_key="SG.test", unsubscribe_url=unsubscribe_url,
                                sendgrid_unsubscribe_group=group_id)
    channel = EmailChannel(settings)
    request = parse_request(request_payload("req-body.1:x"))
    content = email_content(request, has_camera=True, time_zone="America/Denver", settings=settings, locale=locale)
    for group in (
        [mailbox(i, f"resident{i}@example.org", "America/Denver", True) for i in range(50)],
        [mailbox(i - 3, address, "UTC", False) for i, address in enumerate(ADDRESSES)],
        [mailbox(1, ADDRESSES[1], "UTC", True)],
    ):
        expected = channel.mail_body(request, content, group)
        text = channel.mail_body_json(request, content, group)
        assert text == orjson.dumps(expected).decode()
        assert orjson.loads(text)["personalizations"][0]["to"][0]["email"] == group[0][1].email
