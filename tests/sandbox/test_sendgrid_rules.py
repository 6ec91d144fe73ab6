"""The SendGrid sandbox refuses what SendGrid refuses, in SendGrid's error shape, and honours sandbox mode."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import pytest

from dispatcher.sandbox import SandboxServer
from dispatcher.sandbox.sendgrid_rules import RESERVED_HEADERS
from tests.sandbox.conftest import post_mail

VALID: dict[str, Any] = {
    "personalizations": [{"to": [{"email": "a@example.org"}], "custom_args": {"resident_id": "1"},
                          "headers": {"List-Unsubscribe": "<https://example.org/u>"}}],
    "from": {"email": "alerts@example.org", "name": "Alerts"},
    "reply_to": {"email": "det@example.org"},
    "subject": "Community Request",
    "content": [{"type": "text/plain", "value": "hello"}, {"type": "text/html", "value": "<p>hello</p>"}],
    "categories": ["community_request"],
    "custom_args": {"request_id": "r-1"},
    "asm": {"group_id": 77},
}


def changed(**fields: Any) -> dict[str, Any]:
    body = deepcopy(VALID)
    body.update(fields)
    return body


def with_personal_headers(headers: dict[str, Any]) -> dict[str, Any]:
    body = deepcopy(VALID)
    body["personalizations"][0]["headers"] = headers
    return body


REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "custom_args over 10,000 bytes": (changed(custom_args={"big": "x" * 10_000}), "personalizations.0.custom_args"),
    "non-string custom_args": (changed(custom_args={"n": 1}), "custom_args.n"),
    "11 categories": (changed(categories=[f"c{i}" for i in range(11)]), "categories"),
    "category over 255 chars": (changed(categories=["c" * 256]), "categories.0"),
    "duplicate category": (changed(categories=["a", "a"]), "categories.1"),
    "asm without group_id": (changed(asm={}), "asm.group_id"),
    "asm group_id as a string": (changed(asm={"group_id": "77"}), "asm.group_id"),
    "Subject in a personalization": (with_personal_headers({"Subject": "x"}), "personalizations.0.headers.Subject"),
    "reply-to in lower case": (with_personal_headers({"reply-to": "x"}), "personalizations.0.headers.reply-to"),
    "BCC in the mail headers": (changed(headers={"BCC": "x@example.org"}), "headers.BCC"),
    "non-string header value": (with_personal_headers({"X-Count": 3}), "personalizations.0.headers.X-Count"),
    "empty content value": (changed(content=[{"type": "text/plain", "value": ""}]), "content.0.value"),
    "reply_to with reply_to_list": (changed(reply_to_list=[{"email": "b@example.org"}]), "reply_to_list"),
    "send_at as a string": (changed(send_at="1700000000"), "send_at"),
    "send_at as a float": (changed(send_at=1.5e9), "send_at"),
    "ip_pool_name of one char": (changed(ip_pool_name="p"), "ip_pool_name"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_sendgrid_refuses_what_sendgrid_refuses(sandbox: SandboxServer, case: str) -> None:
    body, field = REFUSED[case]
    response = post_mail(sandbox, body)

    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert set(errors[0]) == {"message", "field", "help"}
    assert errors[0]["field"] == field
    assert sandbox.records("sendgrid") == []


def test_every_reserved_header_is_refused_whatever_its_case(sandbox: SandboxServer) -> None:
    for name in sorted(RESERVED_HEADERS):
        for spelling in (name, name.upper(), name.title()):
            assert post_mail(sandbox, with_personal_headers({spelling: "x"})).status_code == 400, spelling
    assert sandbox.records("sendgrid") == []


@pytest.mark.parametrize("body", [
    VALID,
    changed(categories=[f"c{i}" for i in range(10)], ip_pool_name="pl", send_at=1_700_000_000),
    changed(custom_args={"big": "x" * (10_000 - 3 - 20)}),
], ids=["plain", "at the limits", "custom_args just under 10,000 bytes"])
def test_sendgrid_accepts_what_its_rules_allow(sandbox: SandboxServer, body: dict[str, Any]) -> None:
    response = post_mail(sandbox, body)

    assert response.status_code == 202, response.text
    assert len(sandbox.records("sendgrid")) == 1


def test_sandbox_mode_validates_answers_200_and_sends_nothing(sandbox: SandboxServer) -> None:
    on = {"mail_settings": {"sandbox_mode": {"enable": True}}}
    accepted = post_mail(sandbox, changed(**on))
    refused = post_mail(sandbox, changed(categories=["a", "a"], **on))

    assert accepted.status_code == 200 and accepted.content == b""
    assert refused.status_code == 400
    assert sandbox.records("sendgrid") == [] and sandbox.records("sendgrid_requests") == []
    assert sandbox.app.take_events() == []
    # With sandbox mode off the same mail is sent.
    assert post_mail(sandbox, changed(mail_settings={"sandbox_mode": {"enable": False}})).status_code == 202
    assert len(sandbox.app.take_events()) == 1
