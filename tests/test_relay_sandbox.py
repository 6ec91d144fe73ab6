"""The Twilio sandbox, as the twilio library sees it: Messages and Calls accepted and recorded, Twilio's
refusals with Twilio's error codes, fault injection, and signatures the library's validator accepts."""

from __future__ import annotations

from typing import Any

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from dispatcher.config import Settings
from dispatcher.relay.provider import BaseUrlHttpClient, twilio_client
from dispatcher.sandbox.twilio import twilio_signature

TO, FROM = "+15550100001", "+15550200000"


@pytest.fixture
def twilio(sandbox: Any, settings: Settings) -> Client:
    sandbox.clear()
    sandbox.faults.reset()
    return twilio_client(sandbox.configure(settings))


def test_messages_and_calls_are_accepted_and_recorded(twilio: Client, sandbox: Any) -> None:
    message = twilio.messages.create(to=TO, from_=FROM, body="hello")
    assert message.sid.startswith("SM") and message.status == "queued" and message.to == TO
    call = twilio.calls.create(to=TO, from_=FROM, twiml="<Response><Say>hi</Say></Response>")
    assert call.sid.startswith("CA")
    assert [(m["to"], m["from"], m["body"]) for m in sandbox.records("twilio_messages")] == [(TO, FROM, "hello")]
    assert [c["caller_id"] for c in sandbox.records("twilio_calls")] == [FROM]


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"to": "555-0100", "from_": FROM, "body": "x"}, 400, 21211),
    ({"to": TO, "from_": "me", "body": "x"}, 400, 21212),
    ({"to": TO, "from_": FROM, "body": ""}, 400, 21602),
    ({"to": TO, "from_": FROM, "body": "x" * 1601}, 400, 21617),
])
def test_twilios_refusals_come_with_twilios_codes(twilio: Client, kwargs: dict[str, str], status: int,
                                                  code: int) -> None:
    with pytest.raises(TwilioRestException) as refused:
        twilio.messages.create(**kwargs)
    assert (refused.value.status, refused.value.code) == (status, code)


def test_wrong_credentials_and_injected_faults(sandbox: Any, settings: Settings, twilio: Client) -> None:
    configured = sandbox.configure(settings)
    stranger = Client(configured.twilio_account_sid, "wrong", http_client=BaseUrlHttpClient(sandbox.base_url))
    with pytest.raises(TwilioRestException) as refused:
        stranger.messages.create(to=TO, from_=FROM, body="x")
    assert (refused.value.status, refused.value.code) == (401, 20003)
    sandbox.faults.update("twilio", burst_count=1, burst_status=429)
    with pytest.raises(TwilioRestException) as limited:
        twilio.messages.create(to=TO, from_=FROM, body="x")
    assert (limited.value.status, limited.value.code) == (429, 20429)
    assert twilio.messages.create(to=TO, from_=FROM, body="x").sid


def test_the_sandboxs_signature_is_the_one_twilios_library_checks() -> None:
    params = {"From": TO, "To": FROM, "Body": "a b&c=d ü", "MessageSid": "SM1"}
    url = "https://relay.example.org/relay/twilio/sms?x=1"
    signature = twilio_signature("token123", url, params)
    assert RequestValidator("token123").validate(url, params, signature)
    assert not RequestValidator("token124").validate(url, params, signature)
