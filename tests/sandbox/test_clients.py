"""The sandbox providers, driven by the real firebase-admin and sendgrid libraries.

Over 500 lines on purpose: one table of what each provider client (the real libraries) gets from the
sandbox, kept together so a change in one provider's answers is read beside the others.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import firebase_admin
import httpx
import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from firebase_admin import credentials, exceptions, messaging
from firebase_admin._retry import HttpxRetry
from google.auth.exceptions import RefreshError
from python_http_client import exceptions as sg_exceptions
from sendgrid import SendGridAPIClient
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.mail import CustomArg, Mail, Personalization, To

from dispatcher.sandbox import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    FaultPlan,
    InvalidFaultPlan,
    SandboxServer,
    WebhookDeliveryFailed,
    generate_webhook_keypair,
    sign_event_webhook,
    write_service_account,
)
from tests.sandbox.conftest import wait_until_serving

# The push channel targets device registration tokens; firebase-admin 7 nudges towards ``fid``.
pytestmark = pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning")


def firebase_app(sandbox: SandboxServer, service_account: Path | None = None,
                 retries: bool = False) -> firebase_admin.App:
    """A uniquely named firebase-admin app pointed at the sandbox, as the push channel will do it.

    Without ``retries`` firebase-admin's own retries of 500/503 (up to 7.5 s of backoff) are switched
    off so a fault surfaces at once.
    """
    cred = credentials.Certificate(str(service_account or sandbox.service_account_path))
    app = firebase_admin.initialize_app(cred, name=f"sandbox-test-{uuid.uuid4().hex}")
    service = messaging._get_messaging_service(app)
    service._fcm_url = f"{sandbox.fcm_url}/v1/projects/{app.project_id}/messages:send"
    if not retries:
        service._client.session.mount("http://", requests.adapters.HTTPAdapter(max_retries=0))
        for transport in service._async_client._mounts.values():
            transport._retry = HttpxRetry(max_retries=0, status_forcelist=[])
    return app


@pytest.fixture
def fcm_app(sandbox: SandboxServer) -> Iterator[firebase_admin.App]:
    app = firebase_app(sandbox)
    yield app
    firebase_admin.delete_app(app)


def push(token: str, request_id: str = "req-1") -> messaging.Message:
    return messaging.Message(
        token=token,
        notification=messaging.Notification(title="Community Request", body="Footage wanted"),
        data={"request_id": request_id},
        android=messaging.AndroidConfig(notification=messaging.AndroidNotification(tag=request_id)),
    )


def mail(*emails: str, request_id: str = "req-1") -> Mail:
    message = Mail(from_email="requests@dispatcher.invalid", subject="Community Request",
                   html_content="<p>Footage wanted</p>")
    for index, email in enumerate(emails):
        personalization = Personalization()
        personalization.add_to(To(email))
        personalization.add_custom_arg(CustomArg("request_id", request_id))
        personalization.add_custom_arg(CustomArg("resident_id", str(index)))
        message.add_personalization(personalization)
    return message


def sendgrid_client(sandbox: SandboxServer, api_key: str | None = None) -> SendGridAPIClient:
    return SendGridAPIClient(api_key or sandbox.api_key, host=sandbox.sendgrid_url)


# -- FCM -------------------------------------------------------------------------------------------------


def test_send_each_is_accepted_and_recorded(sandbox: SandboxServer, fcm_app: firebase_admin.App) -> None:
    response = messaging.send_each([push("tok-a"), push("tok-b")], app=fcm_app)

    assert response.success_count == 2
    assert all(r.message_id.startswith(f"projects/{fcm_app.project_id}/messages/") for r in response.responses)
    records = sandbox.records("fcm")
    assert sorted(r["token"] for r in records) == ["tok-a", "tok-b"]
    assert records[0]["message"]["data"] == {"request_id": "req-1"}
    sandbox.flush()
    lines = (sandbox.records_dir / "fcm.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["token"] for line in lines) == ["tok-a", "tok-b"]
    assert json.loads(lines[0])["message"]["android"]["notification"]["tag"] == "req-1"


def send_async(app: firebase_admin.App, messages: list[messaging.Message]) -> messaging.BatchResponse:
    """send_each_async in a fresh loop, closing its httpx client inside that loop."""

    async def run() -> messaging.BatchResponse:
        try:
            return await messaging.send_each_async(messages, app=app)
        finally:
            await messaging._get_messaging_service(app)._async_client.aclose()

    return asyncio.run(run())


def test_send_each_async_is_accepted(sandbox: SandboxServer, fcm_app: firebase_admin.App) -> None:
    tokens = [f"tok-{i}" for i in range(20)]

    response = send_async(fcm_app, [push(t) for t in tokens])

    assert response.success_count == 20
    assert sorted(r["token"] for r in sandbox.records("fcm")) == sorted(tokens)


def test_installation_ids_are_targets_too(sandbox: SandboxServer, fcm_app: firebase_admin.App) -> None:
    sandbox.faults.update("fcm", unregistered={"fid-dead"})

    response = messaging.send_each([messaging.Message(fid="fid-ok"), messaging.Message(fid="fid-dead")],
                                   app=fcm_app)

    assert response.responses[0].success
    assert isinstance(response.responses[1].exception, messaging.UnregisteredError)
    assert [r["token"] for r in sandbox.records("fcm")] == ["fid-ok"]


def test_dry_run_is_validated_but_not_recorded(sandbox: SandboxServer, fcm_app: firebase_admin.App) -> None:
    response = messaging.send_each([push("tok-a")], dry_run=True, app=fcm_app)

    assert response.success_count == 1
    assert sandbox.records("fcm") == []


def test_token_exchange_rejects_a_key_the_sandbox_did_not_issue(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    # A well-formed service account whose key id the sandbox trusts, but signed by another key.
    trusted = json.loads(Path(str(sandbox.service_account_path)).read_text())
    forged = json.loads(write_service_account(tmp_path / "other.json", token_uri=sandbox.token_uri).read_text())
    forged["private_key_id"] = trusted["private_key_id"]
    forged["client_email"] = trusted["client_email"]
    forged_path = tmp_path / "forged.json"
    forged_path.write_text(json.dumps(forged))
    app = firebase_app(sandbox, forged_path)
    try:
        with pytest.raises(RefreshError) as caught:
            messaging.send(push("tok-a"), app=app)
        assert "invalid_grant" in str(caught.value)
    finally:
        firebase_admin.delete_app(app)
    assert sandbox.records("fcm") == []
    assert sandbox.stats()["calls"]["token.rejected"] >= 1


def test_a_second_service_account_is_accepted(sandbox: SandboxServer, tmp_path: Path) -> None:
    path = write_service_account(tmp_path / "sa.json", token_uri=sandbox.token_uri, project_id="other-project")
    app = firebase_app(sandbox, path)
    try:
        name = messaging.send(push("tok-a"), app=app)
    finally:
        firebase_admin.delete_app(app)
    assert name.startswith("projects/other-project/messages/")


def test_messages_need_a_valid_bearer_token(sandbox: SandboxServer) -> None:
    url = f"{sandbox.fcm_url}/v1/projects/p/messages:send"
    body = {"message": {"token": "tok-a"}}

    missing = httpx.post(url, json=body)
    forged = httpx.post(url, json=body, headers={"Authorization": "Bearer ya29.sbx.9999999999.x.y"})

    assert missing.status_code == forged.status_code == 401
    assert forged.json()["error"]["status"] == "UNAUTHENTICATED"
    assert sandbox.records("fcm") == []


def test_a_message_needs_exactly_one_target(sandbox: SandboxServer, fcm_app: firebase_admin.App) -> None:
    token = sandbox.app.tokens.issue()
    url = f"{sandbox.fcm_url}/v1/projects/p/messages:send"

    both = httpx.post(url, json={"message": {"token": "a", "topic": "b"}},
                      headers={"Authorization": f"Bearer {token}"})

    assert both.status_code == 400
    assert both.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_unregistered_and_malformed_tokens(sandbox: SandboxServer, fcm_app: firebase_admin.App) -> None:
    sandbox.faults.update("fcm", unregistered={"tok-dead"}, invalid_prefixes=("bad-",))

    response = messaging.send_each([push("tok-dead"), push("bad-123"), push("tok-ok")], app=fcm_app)

    dead, bad, ok = response.responses
    assert isinstance(dead.exception, messaging.UnregisteredError)
    assert isinstance(bad.exception, exceptions.InvalidArgumentError)
    assert ok.success
    assert [r["token"] for r in sandbox.records("fcm")] == ["tok-ok"]


def test_unregistered_rate_is_stable_per_token(sandbox: SandboxServer, fcm_app: firebase_admin.App) -> None:
    sandbox.faults.update("fcm", unregistered_rate=0.3)
    tokens = [f"tok-{i}" for i in range(200)]

    first = messaging.send_each([push(t) for t in tokens], app=fcm_app)
    second = messaging.send_each([push(t) for t in tokens], app=fcm_app)

    dead_first = {t for t, r in zip(tokens, first.responses, strict=True) if not r.success}
    dead_second = {t for t, r in zip(tokens, second.responses, strict=True) if not r.success}
    assert dead_first == dead_second
    assert 30 <= len(dead_first) <= 90


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (429, messaging.QuotaExceededError),
        (503, exceptions.UnavailableError),
        (500, exceptions.InternalError),
    ],
)
def test_fcm_faults_raise_what_firebase_admin_raises_for_fcm(
    sandbox: SandboxServer, fcm_app: firebase_admin.App, status: int, error_class: type[Exception]
) -> None:
    sandbox.faults.update("fcm", error_rate=1.0, error_status=status, retry_after=7)

    sync = messaging.send_each([push("tok-a")], app=fcm_app).responses[0]
    async_ = send_async(fcm_app, [push("tok-a")]).responses[0]

    for result in (sync, async_):
        assert isinstance(result.exception, error_class)
        assert result.exception.http_response.status_code == status
        if status == 429:
            assert result.exception.http_response.headers["Retry-After"] == "7"
    assert sandbox.records("fcm") == []
    assert sandbox.stats()["calls"][f"fcm.fault_{status}"] == 2


def test_burst_fails_the_next_calls_then_recovers(sandbox: SandboxServer, fcm_app: firebase_admin.App) -> None:
    sandbox.faults.update("fcm", burst_count=3, burst_status=429)

    results = [messaging.send_each([push(f"tok-{i}")], app=fcm_app).responses[0] for i in range(5)]

    assert [r.success for r in results] == [False, False, False, True, True]
    assert all(isinstance(r.exception, messaging.QuotaExceededError) for r in results[:3])
    assert sandbox.faults.fcm.burst_count == 0


def test_firebase_admin_retries_a_503_burst_on_its_own(sandbox: SandboxServer) -> None:
    sandbox.faults.update("fcm", burst_count=1, burst_status=503, retry_after=0)
    app = firebase_app(sandbox, retries=True)
    try:
        response = messaging.send_each([push("tok-a")], app=app)
    finally:
        firebase_admin.delete_app(app)

    assert response.success_count == 1
    assert sandbox.stats()["calls"]["fcm.fault_503"] == 1


def test_error_rate_is_a_fraction(sandbox: SandboxServer, fcm_app: firebase_admin.App) -> None:
    sandbox.faults.update("fcm", error_rate=0.25, error_status=429)

    response = messaging.send_each([push(f"tok-{i}") for i in range(400)], app=fcm_app)

    assert 50 <= response.failure_count <= 150
    assert len(sandbox.records("fcm")) == response.success_count


def test_latency_is_added(sandbox: SandboxServer, fcm_app: firebase_admin.App) -> None:
    messaging.send_each([push("warm")], app=fcm_app)
    started = time.perf_counter()
    messaging.send_each([push("tok-a")], app=fcm_app)
    fast = time.perf_counter() - started
    sandbox.faults.update("fcm", latency_ms=300)

    started = time.perf_counter()
    messaging.send_each([push("tok-a")], app=fcm_app)
    slow = time.perf_counter() - started

    assert slow >= 0.3
    assert fast < slow


# -- fault control ---------------------------------------------------------------------------------------


def test_faults_are_set_through_the_control_api(sandbox: SandboxServer) -> None:
    control = f"{sandbox.base_url}/_sandbox/faults"

    put = httpx.put(control, json={"fcm": {"error_rate": 0.5, "error_status": 429}})
    patch = httpx.patch(control, json={"sendgrid": {"latency_ms": 5}})
    bad = httpx.put(control, json={"fcm": {"error_rate": 2}})
    unknown = httpx.put(control, json={"fcm": {"typo": 1}})

    assert put.status_code == patch.status_code == 200
    assert sandbox.faults.fcm.error_rate == 0.5 and sandbox.faults.fcm.error_status == 429
    assert sandbox.faults.sendgrid.latency_ms == 5
    assert bad.status_code == unknown.status_code == 400
    assert "typo" in unknown.json()["error"]
    assert httpx.delete(control).json()["fcm"] == FaultPlan().to_dict()


def test_fault_plans_refuse_nonsense() -> None:
    with pytest.raises(InvalidFaultPlan):
        FaultPlan(error_status=418)
    with pytest.raises(InvalidFaultPlan):
        FaultPlan.from_dict({"unregistered": "tok-a"})
    with pytest.raises(InvalidFaultPlan):
        FaultPlan(events={"a@example.org": "exploded"})


def test_records_and_stats_over_http(sandbox: SandboxServer, fcm_app: firebase_admin.App) -> None:
    messaging.send_each([push("tok-a"), push("tok-b")], app=fcm_app)

    records = httpx.get(f"{sandbox.base_url}/_sandbox/records", params={"stream": "fcm", "limit": 1}).json()
    stats = httpx.get(f"{sandbox.base_url}/_sandbox/stats").json()
    httpx.delete(f"{sandbox.base_url}/_sandbox/records")

    assert records["total"] == 2 and len(records["records"]) == 1
    assert stats["calls"]["fcm.accepted"] == 2
    assert sandbox.records("fcm") == []
    assert not (sandbox.records_dir / "fcm.jsonl").exists()


# -- SendGrid --------------------------------------------------------------------------------------------


def test_mail_send_is_accepted_and_recorded_per_recipient(sandbox: SandboxServer) -> None:
    response = sendgrid_client(sandbox).send(mail("a@example.org", "b@example.org", request_id="req-9"))

    assert response.status_code == 202
    message_id = response.headers["X-Message-Id"]
    recipients = sandbox.records("sendgrid")
    assert sorted((r["email"], r["message_id"]) for r in recipients) == [
        ("a@example.org", message_id), ("b@example.org", message_id)
    ]
    by_email = {r["email"]: r for r in recipients}
    assert by_email["b@example.org"]["custom_args"] == {"request_id": "req-9", "resident_id": "1"}
    assert len(sandbox.records("sendgrid_requests")) == 1
    sandbox.flush()
    lines = (sandbox.records_dir / "sendgrid.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["email"] for line in lines) == ["a@example.org", "b@example.org"]


def test_wrong_api_key_is_unauthorized(sandbox: SandboxServer) -> None:
    with pytest.raises(sg_exceptions.UnauthorizedError) as caught:
        sendgrid_client(sandbox, api_key="SG.wrong").send(mail("a@example.org"))
    assert caught.value.status_code == 401
    assert sandbox.records("sendgrid") == []


def test_invalid_mail_is_refused_like_sendgrid(sandbox: SandboxServer) -> None:
    client = sendgrid_client(sandbox)
    no_content = {"personalizations": [{"to": [{"email": "a@example.org"}]}],
                  "from": {"email": "x@example.org"}, "subject": "s"}
    too_many = {**no_content, "content": [{"type": "text/plain", "value": "v"}],
                "personalizations": [{"to": [{"email": f"a{i}@example.org"}]} for i in range(1001)]}

    with pytest.raises(sg_exceptions.BadRequestsError) as missing:
        client.client.mail.send.post(request_body=no_content)
    with pytest.raises(sg_exceptions.BadRequestsError) as over:
        client.client.mail.send.post(request_body=too_many)

    assert missing.value.to_dict["errors"][0]["field"] == "content"
    assert over.value.to_dict["errors"][0]["field"] == "personalizations"
    assert sandbox.records("sendgrid") == []


def test_a_template_stands_in_for_subject_and_content(sandbox: SandboxServer) -> None:
    body = {"personalizations": [{"to": [{"email": "a@example.org"}], "dynamic_template_data": {"x": 1}}],
            "from": {"email": "x@example.org"}, "template_id": "d-123"}

    response = sendgrid_client(sandbox).client.mail.send.post(request_body=body)

    assert response.status_code == 202


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(429, sg_exceptions.TooManyRequestsError), (500, sg_exceptions.InternalServerError),
     (503, sg_exceptions.ServiceUnavailableError), (400, sg_exceptions.BadRequestsError)],
)
def test_sendgrid_faults_raise_what_the_library_raises(
    sandbox: SandboxServer, status: int, error_class: type[Exception]
) -> None:
    sandbox.faults.update("sendgrid", error_rate=1.0, error_status=status, retry_after=30)

    with pytest.raises(error_class) as caught:
        sendgrid_client(sandbox).send(mail("a@example.org"))

    error = caught.value
    assert isinstance(error, sg_exceptions.HTTPError)
    assert error.status_code == status
    if status == 429:
        reset = int(error.headers["X-RateLimit-Reset"])
        assert time.time() + 25 <= reset <= time.time() + 35
    assert sandbox.records("sendgrid") == []


def test_sendgrid_burst_and_latency(sandbox: SandboxServer) -> None:
    sandbox.faults.update("sendgrid", burst_count=1, burst_status=429, latency_ms=200)
    client = sendgrid_client(sandbox)

    with pytest.raises(sg_exceptions.TooManyRequestsError):
        client.send(mail("a@example.org"))
    started = time.perf_counter()
    client.send(mail("a@example.org"))

    assert time.perf_counter() - started >= 0.2
    assert len(sandbox.records("sendgrid")) == 1


# -- signed event webhook --------------------------------------------------------------------------------


def test_signature_verifies_with_the_public_key_as_sendgrid_shows_it() -> None:
    private_key, public_key = generate_webhook_keypair()
    payload = b'[{"email":"a@example.org","event":"delivered"}]'
    signature = sign_event_webhook(private_key, payload, "1700000000")

    key = serialization.load_der_public_key(base64.b64decode(public_key))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(base64.b64decode(signature), b"1700000000" + payload, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        key.verify(base64.b64decode(signature), b"1700000001" + payload, ec.ECDSA(hashes.SHA256()))
    assert EventWebhook(public_key).verify_signature(payload.decode(), signature, "1700000000")


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []
    status: ClassVar[int] = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.status == 200:
            self.received.append((dict(self.headers), body))
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook_receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    _Receiver.received = []
    _Receiver.status = 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/webhooks/sendgrid", _Receiver.received
    finally:
        server.shutdown()
        server.server_close()


def test_sandbox_posts_signed_events_with_custom_args(
    sandbox: SandboxServer, webhook_receiver: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, received = webhook_receiver
    sandbox.faults.update("sendgrid", unregistered={"gone@example.org"},
                          events={"spam@example.org": "spamreport"})
    sendgrid_client(sandbox).send(mail("a@example.org", "gone@example.org", "spam@example.org",
                                       request_id="req-7"))

    posted = sandbox.deliver_events(url)

    assert posted == 3 and len(received) == 1
    headers, body = received[0]
    key = serialization.load_der_public_key(base64.b64decode(sandbox.webhook_public_key))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(base64.b64decode(headers[SIGNATURE_HEADER]), headers[TIMESTAMP_HEADER].encode() + body,
               ec.ECDSA(hashes.SHA256()))
    events = {e["email"]: e for e in json.loads(body)}
    assert {email: e["event"] for email, e in events.items()} == {
        "a@example.org": "delivered", "gone@example.org": "bounce", "spam@example.org": "spamreport"
    }
    assert events["gone@example.org"]["request_id"] == "req-7"
    assert events["gone@example.org"]["resident_id"] == "1"
    message_id = sandbox.records("sendgrid")[0]["message_id"]
    assert all(e["sg_message_id"].split(".")[0] == message_id for e in events.values())
    assert sandbox.deliver_events(url) == 0  # each recipient is reported once
    assert len(sandbox.records("events")) == 3


def test_events_through_the_control_api(
    sandbox: SandboxServer, webhook_receiver: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, received = webhook_receiver
    sendgrid_client(sandbox).send(mail("a@example.org"))

    answer = httpx.post(f"{sandbox.base_url}/_sandbox/events", json={"url": url})

    assert answer.json() == {"posted": 1}
    assert json.loads(received[0][1])[0]["event"] == "delivered"


def test_undelivered_events_are_kept_for_the_next_delivery(
    sandbox: SandboxServer, webhook_receiver: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, received = webhook_receiver
    sendgrid_client(sandbox).send(mail("a@example.org", "b@example.org"))
    _Receiver.status = 500

    with pytest.raises(WebhookDeliveryFailed):
        sandbox.deliver_events(url)
    _Receiver.status = 200
    posted = sandbox.deliver_events(url)

    assert posted == 2
    assert sorted(e["email"] for e in json.loads(received[0][1])) == ["a@example.org", "b@example.org"]


def test_events_are_posted_on_a_timer_when_configured(
    tmp_path: Path, webhook_receiver: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, received = webhook_receiver
    with SandboxServer(tmp_path, webhook_url=url, events_interval=0.05) as sandbox:
        sendgrid_client(sandbox).send(mail("a@example.org"))
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.02)

    assert [e["event"] for e in json.loads(received[0][1])] == ["delivered"]
    assert (tmp_path / "webhook_public_key.txt").read_text().strip() == sandbox.webhook_public_key


# -- the standalone server (``python -m dispatcher.sandbox``) ---------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A two-worker sandbox in its own process, described by the sandbox.json it writes."""
    import subprocess
    import sys

    records = tmp_path_factory.mktemp("standalone")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.sandbox", "--port", str(port), "--records-dir", str(records),
         "--workers", "2"],
    )
    try:
        wait_until_serving(process, port)
        yield json.loads((records / "sandbox.json").read_text())
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_standalone_sandbox_serves_both_apis(standalone: dict[str, Any]) -> None:
    from dispatcher.sandbox import SandboxClient

    cred = credentials.Certificate(standalone["service_account_path"])
    app = firebase_admin.initialize_app(cred, name=f"standalone-{uuid.uuid4().hex}")
    service = messaging._get_messaging_service(app)
    service._fcm_url = f"{standalone['fcm_url']}/v1/projects/{app.project_id}/messages:send"
    service._client.session.mount("http://", requests.adapters.HTTPAdapter(max_retries=0))
    try:
        with SandboxClient(standalone["base_url"]) as control:
            control.set_faults("fcm", error_rate=1.0, error_status=429)
            time.sleep(0.4)  # the other worker picks the plan up from the shared file
            failed = messaging.send_each([push(f"tok-{i}") for i in range(20)], app=app)
            control.reset_faults()
            time.sleep(0.4)
            sent = messaging.send_each([push(f"tok-{i}") for i in range(20)], app=app)
            mail_response = SendGridAPIClient(standalone["api_key"], host=standalone["sendgrid_url"]).send(
                mail("a@example.org"))
            stats = control.stats()
    finally:
        firebase_admin.delete_app(app)

    assert failed.failure_count == 20
    assert all(isinstance(r.exception, messaging.QuotaExceededError) for r in failed.responses)
    assert sent.success_count == 20
    assert mail_response.status_code == 202
    assert "calls" in stats
    records_dir = Path(standalone["records_dir"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # both workers flush every half second
        fcm_file = records_dir / "fcm.jsonl"
        lines = fcm_file.read_text().splitlines() if fcm_file.exists() else []
        if len(lines) >= 20:
            break
        time.sleep(0.1)
    assert sorted(json.loads(line)["token"] for line in lines) == sorted(f"tok-{i}" for i in range(20))
