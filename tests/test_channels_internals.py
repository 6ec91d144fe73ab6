"""The provider libraries' internals the channels lean on: still there, still doing what we copied.

A release of firebase-admin or sendgrid that moves one of these fails here, by name, before it can
fail in production (``pyproject.toml`` bounds both below their next major version too).
"""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import firebase_admin
import pytest
from firebase_admin import credentials, messaging
from sendgrid import SendGridAPIClient

from dispatcher.channels.content import push_content
from dispatcher.channels.email import EmailChannel
from dispatcher.channels.push import MessageTemplate, PushChannel, build_message
from dispatcher.channels.push.firebase_private import PRIVATE_NAMES, encode_message, fcm_error
from dispatcher.config import Settings
from dispatcher.contract import parse_request
from dispatcher.sandbox.credentials import write_service_account
from tests.factories import request_payload

pytestmark = pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning")


@pytest.mark.parametrize(("module", "name"), PRIVATE_NAMES)
def test_every_private_firebase_admin_name_the_adapter_uses_still_exists(module: str, name: str) -> None:
    found: object = importlib.import_module(module)
    for part in name.split("."):
        assert hasattr(found, part), f"firebase-admin moved {module}.{name}: update channels/push/firebase_private.py"
        found = getattr(found, part)
    assert callable(found)


def test_a_template_body_is_the_body_firebase_admin_would_send_for_any_token(tmp_path: Path) -> None:
    app = firebase_admin.initialize_app(credentials.Certificate(str(_service_account(tmp_path))), name="internals")
    try:
        library = messaging._MessagingService(app)
        content = push_content(parse_request(request_payload("req-internals")), has_camera=True,
                               settings=Settings(), respond_until=datetime.now(UTC) + timedelta(days=3))
        hostile = 'a"b\\c\u2028</script>'
        body = json.loads(MessageTemplate(content).body(hostile))
        expected = library._message_data(build_message(hostile, content), False)
        for message in (body, expected):
            message["message"]["apns"]["headers"].pop("apns-expiration")  # the second it was built
        assert body == expected
        assert encode_message(build_message("t", content)) == messaging._MessagingService.encode_message(
            build_message("t", content))
        # The headers the push channel writes out are the ones the library's messaging service sends.
        channel = PushChannel(Settings().with_(fcm_credentials=str(_service_account(tmp_path))))
        try:
            sent = {k: v for k, v in channel._headers.items() if k != "Content-Type"}
        finally:
            channel.close()
        assert sent == library._fcm_headers
    finally:
        firebase_admin.delete_app(app)


def test_fcm_errors_map_to_firebase_admins_classes() -> None:
    body = json.dumps({"error": {"code": 404, "status": "NOT_FOUND", "message": "gone", "details": [
        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}).encode()
    error = fcm_error("https://fcm.invalid/v1/projects/p/messages:send", 404, [("Retry-After", "3")], body)
    assert isinstance(error, messaging.UnregisteredError)
    assert error.http_response is not None and error.http_response.headers["Retry-After"] == "3"
    fcm_detail = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "QUOTA_EXCEEDED"}
    quota = fcm_error("https://fcm.invalid/x", 429, [], json.dumps({"error": {
        "code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow", "details": [fcm_detail]}}).encode())
    assert isinstance(quota, messaging.QuotaExceededError)


def test_the_email_channel_sends_where_and_how_the_sendgrid_library_would() -> None:
    settings = Settings().with_(sendgrid_api_key="SG.internals", sendgrid_endpoint="https://sendgrid.invalid/")
    library = SendGridAPIClient(settings.sendgrid_api_key, host="https://sendgrid.invalid")
    url, headers = EmailChannel(settings).endpoint()
    assert url == library.client.mail.send._build_url(None)
    assert {k: v for k, v in headers.items() if k != "Content-Type"} == library.client.request_headers
    assert headers["Authorization"] == "Bearer SG.internals"


def _service_account(directory: Path) -> Path:
    path = directory / "service-account.json"
    if not path.exists():
        write_service_account(path, token_uri="https://oauth2.invalid/token")
    return path
