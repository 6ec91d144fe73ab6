"""The FCM sandbox refuses what FCM refuses: Google's discovery schema plus the prose rules."""

from __future__ import annotations

import base64
import json
import time
from copy import deepcopy
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from dispatcher.sandbox import SandboxServer
from dispatcher.sandbox.credentials import GOOGLE_TOKEN_AUDIENCE, JWT_BEARER_GRANT
from dispatcher.sandbox.fcm_rules import MAX_PAYLOAD_BYTES, fcm_request_problem, payload_bytes
from tests.sandbox.conftest import post_fcm

#: A message as firebase-admin encodes it (snake_case proto names), valid as it is.
VALID: dict[str, Any] = {"message": {
    "token": "tok-a",
    "notification": {"title": "Agency · Community Request", "body": "Burglary: footage wanted"},
    "data": {"type": "community_request", "request_id": "r-1"},
    "android": {"collapse_key": "c1", "priority": "high", "ttl": "3600s",
                "notification": {"tag": "c1", "click_action": "choose_videos"}},
    "apns": {"headers": {"apns-priority": "10", "apns-collapse-id": "c1"},
             "payload": {"aps": {"category": "CHOOSE_VIDEOS", "thread-id": "c1",
                                 "alert": {"title": "t", "body": "b"}}}},
}}


def changed(path: str, value: Any, *, delete: bool = False) -> dict[str, Any]:
    """VALID with one dotted path set to ``value`` (or deleted)."""
    body = deepcopy(VALID)
    *parents, last = path.split(".")
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    if delete:
        del node[last]
    else:
        node[last] = value
    return body


def with_payload_of(size: int) -> dict[str, Any]:
    """VALID with its data made so the payload is exactly ``size`` bytes."""
    base = payload_bytes(changed("message.data", {})["message"])
    return changed("message.data", {"k": "v" * (size - base - 1)})


REFUSED = {
    "data value over 4 KB": changed("message.data.big", "x" * 5000),
    "notification body over 4 KB": changed("message.notification.body", "y" * 10_000),
    "ttl without unit": changed("message.android.ttl", "3600"),
    "ttl as a number": changed("message.android.ttl", 3600),
    "ttl in hours": changed("message.android.ttl", "1h"),
    "unknown message field": changed("message.foo", "bar"),
    "typo in android": changed("message.android.colapse_key", "c1"),
    "top-level dry_run": changed("dry_run", True),
    "priority outside the enum": changed("message.android.priority", "urgent"),
    "non-string apns header": changed("message.apns.headers.apns-priority", 10),
    "non-string apns title": changed("message.apns.payload.aps.alert.title", 7),
    "reserved key from": changed("message.data.from", "x"),
    "reserved key message_type": changed("message.data.message_type", "x"),
    "reserved google. key": changed("message.data.google.c.a.e", "1"),
    "reserved gcm.notification. key": changed("message.android.data", {"gcm.notification.body": "x"}),
    "non-string data value": changed("message.data.count", 3),
    "two targets": changed("message.topic", "news"),
    "no target": changed("message.token", None, delete=True),
    "field given twice": changed("message.android.collapseKey", "c2"),
    "validateOnly not a boolean": changed("validateOnly", "yes"),
}

ACCEPTED = {
    "as firebase-admin sends it": VALID,
    "camelCase names": changed("message.android", {"collapseKey": "c1", "ttl": "3.5s", "priority": "NORMAL",
                                                   "notification": {"clickAction": "view_request"}}),
    "fractional ttl": changed("message.android.ttl", "3.5s"),
    "payload exactly at the limit": with_payload_of(MAX_PAYLOAD_BYTES),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_fcm_refuses_what_fcm_refuses(sandbox: SandboxServer, case: str) -> None:
    response = post_fcm(sandbox, REFUSED[case])

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    violations = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    assert violations and violations[0]["fieldViolations"][0]["field"]
    assert sandbox.records("fcm") == []


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_fcm_accepts_what_the_schema_allows(sandbox: SandboxServer, case: str) -> None:
    body = ACCEPTED[case]
    assert payload_bytes(body["message"]) <= MAX_PAYLOAD_BYTES
    response = post_fcm(sandbox, body)

    assert response.status_code == 200, response.text
    assert len(sandbox.records("fcm")) == 1


def test_the_payload_limit_counts_data_and_notification_bytes() -> None:
    at_limit = ACCEPTED["payload exactly at the limit"]["message"]
    assert payload_bytes(at_limit) == MAX_PAYLOAD_BYTES
    over = with_payload_of(MAX_PAYLOAD_BYTES + 1)
    assert payload_bytes(over["message"]) == MAX_PAYLOAD_BYTES + 1
    problem = fcm_request_problem(over)
    assert problem is not None and "too big" in problem.message
    # Multi-byte characters count as their UTF-8 bytes.
    assert payload_bytes({"data": {"é": "€"}}) == 2 + 3


@pytest.mark.parametrize("spelling", ["validateOnly", "validate_only"])
def test_validate_only_validates_and_records_nothing(sandbox: SandboxServer, spelling: str) -> None:
    accepted = post_fcm(sandbox, {**VALID, spelling: True})
    refused = post_fcm(sandbox, {**REFUSED["ttl in hours"], spelling: True})

    assert accepted.status_code == 200
    assert accepted.json() == {"name": "projects/p/messages/fake_message_id"}
    assert refused.status_code == 400
    assert sandbox.records("fcm") == []
    assert sandbox.stats()["calls"]["fcm.validated"] == 1


# -- the token endpoint ---------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _assertion(service_account: Path, **claims: Any) -> str:
    """A JWT assertion signed with the service account's key, as google-auth builds it, claims changed."""
    info = json.loads(service_account.read_text())
    key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    now = int(time.time())
    payload: dict[str, Any] = {"iss": info["client_email"], "aud": GOOGLE_TOKEN_AUDIENCE, "iat": now,
                               "exp": now + 3600, "scope": "https://www.googleapis.com/auth/firebase.messaging"}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    header = {"alg": "RS256", "typ": "JWT", "kid": info["private_key_id"]}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def _exchange(sandbox: SandboxServer, assertion: str) -> httpx.Response:
    return httpx.post(sandbox.token_uri, data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion})


@pytest.mark.parametrize("claims", [
    {"aud": "https://example.org/token"},
    {"aud": None},
    {"scope": None},
    {"scope": ""},
    {"exp": int(time.time()) + 24 * 3600},
], ids=["foreign aud", "no aud", "no scope", "empty scope", "exp a day after iat"])
def test_token_endpoint_checks_assertions_as_google_does(sandbox: SandboxServer, claims: dict[str, Any]) -> None:
    assert sandbox.service_account_path is not None
    good = _exchange(sandbox, _assertion(sandbox.service_account_path))
    bad = _exchange(sandbox, _assertion(sandbox.service_account_path, **claims))

    assert good.status_code == 200 and good.json()["token_type"] == "Bearer"
    assert bad.status_code == 400
    assert bad.json()["error"] == "invalid_grant"


def test_token_endpoint_refuses_other_algorithms(sandbox: SandboxServer) -> None:
    assert sandbox.service_account_path is not None
    header, payload, signature = _assertion(sandbox.service_account_path).split(".")
    forged_header = _b64(json.dumps({**json.loads(base64.urlsafe_b64decode(header + "==")), "alg": "HS256"})
                         .encode())
    response = _exchange(sandbox, f"{forged_header}.{payload}.{signature}")

    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
