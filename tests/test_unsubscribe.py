"""Signed one-click unsubscribe links: only the link we signed, unexpired, switches one resident's email off."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from dispatcher.channels.email import EmailChannel
from dispatcher.config import Settings
from dispatcher.contract import parse_request
from dispatcher.errors import ConfigurationError, InvalidUnsubscribeLink
from dispatcher.preferences.webhook import EventWebhookApp, create_app
from dispatcher.unsubscribe import ONE_CLICK_BODY, UnsubscribeLinks, sign, sign_many, unsubscribe_link, verify_link
from tests.factories import add_resident, request_payload
from tests.recipients import mailbox

Conn = psycopg.Connection[Any]
SECRET = "s" * 40
OTHER = "o" * 40
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _params(link: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(link).query))


def _path_and_query(link: str) -> str:
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


def _signed(settings: Settings) -> Settings:
    return settings.with_(unsubscribe_secret=SECRET, unsubscribe_url="https://mail.example.org/unsubscribe")


@pytest.fixture
def app(settings: Settings) -> EventWebhookApp:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return create_app(_signed(settings).with_(sendgrid_webhook_public_key=pem))


def _call(app: EventWebhookApp, method: str, target: str, body: bytes = b"",
          headers: dict[str, str] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as client:
            return await client.request(method, target, content=body, headers=headers or {})

    return asyncio.run(go())


def _email_enabled(db: Conn, resident_id: int) -> bool:
    row = db.execute("SELECT email_enabled FROM resident_settings WHERE resident_id = %s", (resident_id,)).fetchone()
    return True if row is None else bool(row[0])


def test_a_signed_link_names_its_resident_and_nothing_else_verifies(settings: Settings) -> None:
    signed = _signed(settings)
    link = unsubscribe_link(signed, 31, "req-1")
    params = _params(link)
    assert set(params) == {"resident", "request", "expires", "sig"}
    assert verify_link(signed, params) == 31
    forged = [
        {**params, "resident": "32"},  # counting ids
        {**params, "request": "req-2"},
        {**params, "expires": str(int(params["expires"]) + 86_400)},
        {**params, "sig": "A" * 43},
        {k: v for k, v in params.items() if k != "sig"},
        {**params, "resident": "-1"},
        {**params, "sig": params["sig"] + "é"},
        {**params, "resident": "9" * 40},
    ]
    for hostile in forged:
        with pytest.raises(InvalidUnsubscribeLink) as caught:
            verify_link(signed, hostile)
        assert caught.value.status == 403
    with pytest.raises(InvalidUnsubscribeLink):  # another server's secret
        verify_link(signed.with_(unsubscribe_secret=OTHER), params)


def test_links_expire(settings: Settings) -> None:
    signed = _signed(settings).with_(unsubscribe_link_days=90)
    issued = time.time() - 91 * 86_400
    params = _params(unsubscribe_link(signed, 5, "req-1", now=issued))
    assert verify_link(signed, params, now=issued + 89 * 86_400) == 5
    with pytest.raises(InvalidUnsubscribeLink, match="expired") as caught:
        verify_link(signed, params)
    assert caught.value.status == 410


def test_the_previous_secret_is_honoured_after_a_rotation(settings: Settings) -> None:
    before = _signed(settings)
    old_link = _params(unsubscribe_link(before, 7, "req-1"))
    rotated = before.with_(unsubscribe_secret=OTHER, unsubscribe_previous_secret=SECRET)
    assert verify_link(rotated, old_link) == 7
    assert verify_link(rotated, _params(unsubscribe_link(rotated, 7, "req-1"))) == 7
    assert _params(unsubscribe_link(rotated, 7, "req-1"))["sig"] != old_link["sig"]  # new links use the new key
    with pytest.raises(InvalidUnsubscribeLink):
        verify_link(rotated.with_(unsubscribe_previous_secret=None), old_link)


def test_a_short_secret_is_refused(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="UNSUBSCRIBE_SECRET"):
        unsubscribe_link(settings.with_(unsubscribe_secret="short"), 1, "req-1")


def test_without_a_secret_one_generated_key_is_shared_by_the_processes_of_a_host(settings: Settings,
                                                                                 tmp_path: Any) -> None:
    local = settings.with_(unsubscribe_secret=None, home=tmp_path)
    params = _params(unsubscribe_link(local, 3, "req-1"))
    assert verify_link(local, params) == 3
    assert (tmp_path / "unsubscribe.key").stat().st_mode & 0o077 == 0  # readable by its owner only
    with pytest.raises(InvalidUnsubscribeLink):
        verify_link(local.with_(home=tmp_path / "elsewhere"), params)


def test_the_email_header_link_unsubscribes_with_one_click_once(
    db: Conn, app: EventWebhookApp, settings: Settings
) -> None:
    add_resident(db, 31, 40.01, -105.27, email="r31@example.org")
    add_resident(db, 32, 40.01, -105.27, email="r32@example.org")
    channel = EmailChannel(_signed(settings).with_(sendgrid_api_key="SG.test"))
    request = parse_request(request_payload("req-unsub"))
    content_group = [mailbox(31, "r31@example.org", "UTC", False)]
    from dispatcher.channels.content import email_content

    content = email_content(request, has_camera=False, time_zone="UTC", settings=channel.settings)
    [personalization] = channel.mail_body(request, content, content_group)["personalizations"]
    assert personalization["headers"]["List-Unsubscribe-Post"] == ONE_CLICK_BODY
    link = personalization["headers"]["List-Unsubscribe"].strip("<>")
    target = _path_and_query(link)

    # Opening the link (a scanner, a person) changes nothing; it offers the one-click button.
    page = _call(app, "GET", target)
    assert page.status_code == 200 and ONE_CLICK_BODY.split("=")[0] in page.text
    assert _email_enabled(db, 31)
    # A POST without the one-click body changes nothing.
    assert _call(app, "POST", target, b"", FORM).status_code == 400
    assert _email_enabled(db, 31)

    assert _call(app, "POST", target, ONE_CLICK_BODY.encode(), FORM).status_code == 200
    assert not _email_enabled(db, 31)
    assert _email_enabled(db, 32)  # only the resident the link was signed for
    assert _call(app, "POST", target, ONE_CLICK_BODY.encode(), FORM).status_code == 200  # idempotent
    assert not _email_enabled(db, 31)
    version = db.execute("SELECT email_enabled_version FROM resident_settings WHERE resident_id = 31").fetchone()

    # Counting ids with someone else's link does nothing.
    counted = target.replace("resident=31", "resident=32")
    assert _call(app, "POST", counted, ONE_CLICK_BODY.encode(), FORM).status_code == 403
    assert _email_enabled(db, 32)
    assert db.execute("SELECT email_enabled_version FROM resident_settings WHERE resident_id = 31"
                      ).fetchone() == version


def test_a_multipart_one_click_post_is_accepted_and_the_event_webhook_still_answers(
    db: Conn, app: EventWebhookApp, settings: Settings
) -> None:
    add_resident(db, 40, 40.01, -105.27, email="r40@example.org")
    target = _path_and_query(unsubscribe_link(_signed(settings), 40, "req-1"))
    boundary = "XyZ"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
            f"One-Click\r\n--{boundary}--\r\n").encode()
    response = _call(app, "POST", target, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 200
    assert not _email_enabled(db, 40)
    # Any other path is still SendGrid's event webhook (unsigned: refused).
    assert _call(app, "POST", "/sendgrid/events", b"[]").status_code == 403
    assert _call(app, "GET", "/healthz").status_code == 200


@settings_(max_examples=200, deadline=None)
@given(key=st.binary(min_size=1, max_size=200),
       resident_ids=st.lists(st.integers(min_value=0, max_value=2**63 - 1), max_size=20),
       request_id=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
       expires=st.integers(min_value=0, max_value=2**40))
def test_signing_a_batch_gives_each_residents_own_signature(key: bytes, resident_ids: list[int], request_id: str,
                                                            expires: int) -> None:
    """The batch signer (HMAC from SHA-256 states, keys longer than a block hashed first) is HMAC-SHA256."""
    assert sign_many(key, resident_ids, request_id, expires) == [sign(key, rid, request_id, expires)
                                                                 for rid in resident_ids]
    links = UnsubscribeLinks("https://example.org/u", request_id, expires, key)
    assert links.tails(resident_ids) == [links.tail(rid) for rid in resident_ids]
