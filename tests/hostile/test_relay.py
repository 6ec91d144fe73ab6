"""Hostile inputs for every relay entry point: Twilio's webhooks (signed, so only Twilio could send them,
and still strange), the app's routes, the send actor's message and the CLI. Each ends in a clean answer,
and a good text sent after them is still relayed."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.relay import outbox
from dispatcher.relay.actors import send_relay_text
from dispatcher.relay.webhooks import MAX_BODY_BYTES
from dispatcher.sandbox.twilio import twilio_signature
from tests.relay_support import AUTHOR, HELPER, Relay

Form = dict[str, str]


def _post(relay: Relay, path: str, form: Form | None, raw: bytes | None = None, sign: bool = True) -> httpx.Response:
    url = relay.url + path
    body = raw if raw is not None else urlencode(form or {}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    token = relay.settings.twilio_auth_token
    assert token
    if sign:
        headers["X-Twilio-Signature"] = twilio_signature(token, url, form or {})
    return httpx.post(url, content=body, headers=headers, timeout=30)


#: (name, path, form given the helper's proxy number, raw body or None, signed, expected status)
WEBHOOK_CASES: list[tuple[str, str, Any, bytes | None, bool, int]] = [
    ("no From", "/relay/twilio/sms", lambda p: {"To": p, "Body": "x"}, None, True, 200),
    ("From anonymous (withheld caller id)", "/relay/twilio/voice", lambda p: {"From": "anonymous", "To": p},
     None, True, 200),
    ("From a short code", "/relay/twilio/sms", lambda p: {"From": "12345", "To": p, "Body": "x"}, None, True, 200),
    ("To not our number", "/relay/twilio/sms", lambda p: {"From": HELPER, "To": "+15559990000", "Body": "x"},
     None, True, 200),
    ("To garbage", "/relay/twilio/voice", lambda p: {"From": HELPER, "To": "\u0000\u202e"}, None, True, 200),
    ("NUL and RTL override in the body", "/relay/twilio/sms",
     lambda p: {"From": HELPER, "To": p, "Body": "a\u0000b\u202ec"}, None, True, 200),
    ("body of 20,000 characters", "/relay/twilio/sms", lambda p: {"From": HELPER, "To": p, "Body": "y" * 20_000},
     None, True, 200),
    ("keyword in odd spacing and case", "/relay/twilio/sms", lambda p: {"From": HELPER, "To": p, "Body": "  hElP. "},
     None, True, 200),
    ("not UTF-8", "/relay/twilio/sms", lambda p: {}, b"From=%FF%FE&To=%FF", True, 403),
    ("body too large", "/relay/twilio/sms", lambda p: {}, b"Body=" + b"z" * (MAX_BODY_BYTES + 10), True, 413),
    ("unsigned", "/relay/twilio/sms", lambda p: {"From": HELPER, "To": p, "Body": "x"}, None, False, 403),
    ("thousands of fields", "/relay/twilio/sms", lambda p: {f"f{i}": "v" for i in range(5000)}, None, True, 403),
]


@pytest.mark.parametrize(("name", "path", "form", "raw", "signed", "status"), WEBHOOK_CASES,
                         ids=[case[0] for case in WEBHOOK_CASES])
def test_hostile_webhooks_end_cleanly_and_good_texts_still_go_through(
        relay: Relay, name: str, path: str, form: Any, raw: bytes | None, signed: bool, status: int) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    proxy = relay.proxy_for("p1")
    answer = _post(relay, path, form(proxy), raw, signed)
    assert answer.status_code == status, answer.text
    if status == 200:
        assert answer.headers["content-type"].startswith("application/xml") and "<Response" in answer.text
    relay.text(HELPER, proxy, "good text")
    relay.deliver()
    relayed = relay.relayed_to(AUTHOR)
    assert relayed[-1] == "good text"
    assert all(len(body) <= 1600 for body in relayed)


#: (name, method, path, JSON body, token, expected status)
API_CASES: list[tuple[str, str, str, Any, str | None, int]] = [
    ("no token", "POST", "/relay/posts/p1/contacts", {"number": HELPER}, None, 401),
    ("wrong token", "POST", "/relay/posts/p1/contacts", {"number": HELPER}, "nope", 401),
    ("number not E.164", "POST", "/relay/posts/p1/contacts", {"number": "555-0100"}, "ok", 422),
    ("number an integer", "POST", "/relay/posts/p1/contacts", {"number": 15550100002}, "ok", 422),
    ("number a list", "PUT", "/relay/posts/p2/contact-me", {"author_number": [AUTHOR]}, "ok", 422),
    ("body an array", "POST", "/relay/posts/p1/contacts", [HELPER], "ok", 422),
    ("unknown channel", "POST", "/relay/posts/p1/contacts", {"number": HELPER, "channel": "fax"}, "ok", 409),
    ("unknown post", "POST", "/relay/posts/nope/contacts", {"number": HELPER}, "ok", 404),
    ("post id of 300 characters", "POST", "/relay/posts/" + "q" * 300 + "/contacts", {"number": HELPER}, "ok", 404),
    ("NUL in the post id", "DELETE", "/relay/posts/p%001", None, "ok", 404),
    ("author contacting their own post", "POST", "/relay/posts/p1/contacts", {"number": AUTHOR}, "ok", 409),
    ("hide a removed post", "POST", "/relay/posts/p3/contact-me/hide", None, "ok", 409),
]


@pytest.mark.parametrize(("name", "method", "path", "payload", "token", "status"), API_CASES,
                         ids=[case[0] for case in API_CASES])
def test_hostile_app_requests_get_a_clear_error(relay: Relay, name: str, method: str, path: str, payload: Any,
                                                 token: str | None, status: int) -> None:
    relay.add_numbers(3)
    relay.confirm("p1")
    relay.enable("p3")
    relay.api("DELETE", "/relay/posts/p3/contact-me")
    from tests.relay_support import API_TOKEN

    answer = relay.api(method, path, payload, token=API_TOKEN if token == "ok" else token)
    assert answer.status_code == status, answer.text
    assert "error" in answer.json()
    assert AUTHOR not in answer.text and HELPER not in answer.text
    assert relay.contact("p1").status_code == 200


@pytest.mark.parametrize("message", ["12", -3, 0, None, [1], 1.5, True], ids=repr)
def test_hostile_actor_messages_are_dropped_without_retries(relay: Relay, message: Any) -> None:
    relay.add_numbers(1)
    send_relay_text.fn(message)  # returns: nothing to send, nothing raised (so nothing retried)
    phone = relay.conn.execute("INSERT INTO relay_phones (number_hmac, number_encrypted) VALUES ('x', 'y')"
                               " RETURNING id").fetchone()
    assert phone is not None
    good = outbox.put(relay.conn, int(phone[0]), None, "hello", purpose="relay")
    assert isinstance(good, int)


@pytest.mark.parametrize(("args", "named"), [
    (["relay", "add-numbers", "not-a-number"], "E.164"),
    (["relay", "add-numbers", "+1555\u0000"], "E.164"),
])
def test_hostile_relay_commands_fail_with_one_clean_line(relay: Relay, args: list[str], named: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert named in result.output and "Traceback" not in result.output
