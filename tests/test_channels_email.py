"""The email channel through the sendgrid library against the SendGrid sandbox."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email import utils as email_utils
from typing import Any

import pytest

from dispatcher.channels import email
from dispatcher.channels.content import CHOOSE_VIDEOS, LABEL, VIEW_REQUEST
from dispatcher.channels.email import EmailChannel
from dispatcher.channels.retry_after import RETRY_AFTER_MAX_SECONDS
from dispatcher.config import Settings
from dispatcher.contract import CommunityRequest, parse_request
from dispatcher.ledger import UNCONFIRMED_REASON, WINDOW_ENDED, Outcome, Status
from dispatcher.sandbox import SandboxServer
from tests.factories import request_payload
from tests.recipients import mailbox
from tests.scripted_http import ScriptedHttp, refusing_port


@pytest.fixture(scope="module")
def sendgrid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("sendgrid")) as server:
        yield server


@pytest.fixture(scope="module")
def channel(sendgrid: SandboxServer) -> EmailChannel:
    return EmailChannel(sendgrid.configure(Settings()).with_(sendgrid_unsubscribe_group=4242))


@pytest.fixture(autouse=True)
def _clean(sendgrid: SandboxServer) -> None:
    sendgrid.faults.reset()
    sendgrid.clear()


def _request(request_id: str = "req-mail-1", **overrides: Any) -> CommunityRequest:
    return parse_request(request_payload(request_id, **overrides))


def _until(days: float = 60) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def _bodies(call: dict[str, Any]) -> tuple[str, str]:
    blocks = {block["type"]: block["value"] for block in call["content"]}
    return blocks["text/plain"], blocks["text/html"]


def test_content_for_camera_owners_and_others_in_their_time_zones(channel: EmailChannel,
                                                                  sendgrid: SandboxServer) -> None:
    targets = [
        mailbox(1, "cam@example.org", "America/New_York", True),
        mailbox(2, "nocam@example.org", "Europe/Berlin", False),
    ]
    result = channel.send(_request(), _until(), dict(targets))
    assert {o.status for o in result.outcomes.values()} == {Status.SENT} and result.accepted == 2

    calls = {c["message_id"]: c for c in sendgrid.records("sendgrid_requests")}
    assert len(calls) == 2, "camera owners and others, in different time zones, get different emails"
    assert {c["subject"] for c in calls.values()} == {"Community Request from Springfield Police: Vehicle break in"}
    by_address = {r["email"]: r for r in sendgrid.records("sendgrid")}
    camera_call = calls[by_address["cam@example.org"]["message_id"]]
    other_call = calls[by_address["nocam@example.org"]["message_id"]]
    camera_text, camera_html = _bodies(camera_call)
    other_text, other_html = _bodies(other_call)
    for text, html in ((camera_text, camera_html), (other_text, other_html)):
        for needle in ("Springfield Police", LABEL, "Vehicle break in", "Det. Jo Park", "+1 555 0100",
                       "jpark@pd.example", "SPD-2026-0042", "Two cars broken into overnight"):
            assert needle in text and needle in html
    assert CHOOSE_VIDEOS in camera_html and "requests/req-mail-1/share" in camera_html
    assert VIEW_REQUEST in other_html and CHOOSE_VIDEOS not in other_html
    # The footage window is shown in each resident's own time zone.
    assert ("(EST)" in camera_text or "(EDT)" in camera_text) and "Central European" not in camera_text
    assert "(Central European Standard Time)" in other_text or "(Central European Summer Time)" in other_text
    assert camera_call["reply_to"] == {"email": "jpark@pd.example", "name": "Det. Jo Park"}
    assert camera_call["asm"] == {"group_id": 4242}


def test_unsubscribe_headers_and_custom_args_carry_ids_only(channel: EmailChannel,
                                                            sendgrid: SandboxServer) -> None:
    channel.send(_request(), _until(), dict([mailbox(31, "someone@example.org", "UTC", True)]))
    [recipient] = sendgrid.records("sendgrid")
    assert recipient["custom_args"] == {"request_id": "req-mail-1", "resident_id": "31"}
    headers = recipient["headers"]
    assert headers["List-Unsubscribe"].startswith(
        "<https://app.dispatcher.invalid/unsubscribe?resident=31&request=req-mail-1&expires=")  # signed: &sig=
    assert "&sig=" in headers["List-Unsubscribe"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "someone" not in str(recipient["custom_args"]) + headers["List-Unsubscribe"]
    assert recipient["asm_group_id"] == 4242


def test_hostile_agency_text_is_escaped_and_kept_out_of_headers(channel: EmailChannel,
                                                                sendgrid: SandboxServer) -> None:
    evil = parse_request(request_payload(
        "req-evil",
        agency={"id": "pd-x", "name": 'Evil <script>alert(1)</script>\r\nBcc: victim@example.org'},
        details='<img src=x onerror="steal()"> & <a href="javascript:bad()">click</a>',
        investigator={"name": "Det. <b>Bold</b>\nX-Injected: yes", "phone": "+1 555 0100",
                      "email": "jpark@pd.example"},
    ))
    result = channel.send(evil, _until(), dict([mailbox(1, "r@example.org", "UTC", True)]))
    assert result.outcomes[1].status is Status.SENT
    [call] = sendgrid.records("sendgrid_requests")
    _, html = _bodies(call)
    assert "<script>" not in html and "<img" not in html and "<b>" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=&#34;steal()&#34;&gt;" in html
    for header_text in (call["subject"], call["reply_to"]["name"]):
        assert "\r" not in header_text and "\n" not in header_text
    assert "X-Injected" not in str(call.get("headers"))


def test_one_call_per_thousand_recipients(channel: EmailChannel, sendgrid: SandboxServer) -> None:
    targets = [mailbox(i, f"r{i}@example.org", "UTC", False) for i in range(2300)]
    result = channel.send(_request(), _until(), dict(targets))
    assert result.calls == 3 and result.accepted == 2300
    assert sorted(c["personalizations"] for c in sendgrid.records("sendgrid_requests")) == [300, 1000, 1000]


def test_rate_limited_batch_waits_until_the_providers_reset(channel: EmailChannel,
                                                            sendgrid: SandboxServer) -> None:
    sendgrid.faults.update("sendgrid", burst_count=1, burst_status=429, retry_after=4)
    targets = [mailbox(i, f"q{i}@example.org", "UTC" if i < 5 else "Asia/Tokyo", False) for i in range(10)]
    result = channel.send(_request(), _until(), dict(targets))
    # The batch's two calls go side by side: the one SendGrid refused hands its group back, the other
    # had already been taken.
    assert result.quota_exceeded and sorted(result.retry) in ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9])
    assert result.calls == 2 and result.accepted == 5 and result.problems == {"429": 1}
    assert result.retry_after is not None and 2.5 <= result.retry_after <= 5
    sent = {r["email"] for r in sendgrid.records("sendgrid")}
    assert sent == {f"q{i}@example.org" for i in range(10) if i not in result.retry}


def test_after_a_rate_limit_no_further_call_of_the_batch_starts(sendgrid: SandboxServer) -> None:
    """Calls waiting for a thread when SendGrid says 429 are not made: their residents go back too."""
    sendgrid.faults.update("sendgrid", burst_count=1, burst_status=429, retry_after=4, latency_ms=100)
    email._call_threads().shutdown()
    email._calls = ThreadPoolExecutor(max_workers=1)  # one call thread, busy for a second: the batch's
    email._calls.submit(time.sleep, 1.0)              # other calls wait in line behind the first
    try:
        zones = ["UTC", "Europe/Berlin", "Asia/Tokyo", "America/Denver"]
        recipients = dict(mailbox(i, f"z{i}@example.org", zone, False) for i, zone in enumerate(zones))
        result = EmailChannel(sendgrid.configure(Settings())).send(_request(), _until(), recipients)
    finally:
        email._calls.shutdown()
        email._calls = None
    assert result.quota_exceeded and result.problems == {"429": 1}
    assert result.calls == 1, "the first call was refused; the three waiting for a thread were never made"
    assert sorted(result.retry) == sorted(recipients) and result.accepted == 0
    assert sendgrid.records("sendgrid") == []


def test_a_batch_sends_its_calls_side_by_side(channel: EmailChannel, sendgrid: SandboxServer) -> None:
    """A batch takes its slowest call, not the sum of its calls: groups' calls are in flight together."""
    sendgrid.faults.update("sendgrid", latency_ms=500)
    zones = ["UTC", "Europe/Berlin", "Asia/Tokyo", "America/Denver", "Africa/Lagos", "Australia/Perth"]
    result = channel.send(_request(), _until(), dict(mailbox(i, f"s{i}@example.org", zone, i % 2 == 0)
                                                     for i, zone in enumerate(zones)))
    assert result.calls == 6 and result.accepted == 6
    accepted_at = sorted(call["ts"] for call in sendgrid.records("sendgrid_requests"))
    assert len(accepted_at) == 6 and accepted_at[-1] - accepted_at[0] < 0.4, "one after another would take 0.5 s each"


def test_a_requests_email_is_rendered_once_and_never_served_to_another_request(
        channel: EmailChannel, sendgrid: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    rendered: list[str] = []
    real = email.email_content

    def counted(request: Any, **kwargs: Any) -> Any:
        rendered.append(request.details)
        return real(request, **kwargs)

    monkeypatch.setattr(email, "email_content", counted)
    first = _request("req-cache-1", details="First wording of the request.")
    for batch in range(3):
        channel.send(first, _until(), dict([mailbox(batch, f"c{batch}@example.org", "UTC", False)]))
    assert rendered == ["First wording of the request."], "one render for the request's group, kept for its batches"
    # Another request object, even under the same id (a test's fixture, a reloaded request), is rendered anew.
    channel.send(_request("req-cache-1", details="Second wording."), _until(),
                 dict([mailbox(9, "c9@example.org", "UTC", False)]))
    assert rendered[-1] == "Second wording."
    text, _ = _bodies(sendgrid.records("sendgrid_requests")[-1])
    assert "Second wording." in text and "First wording" not in text
    # Bounded: the emails of the last few request objects are kept, not every area ever sent.
    for n in range(email.REQUESTS_KEPT + 3):
        channel.send(_request(f"req-cache-{n + 2}"), _until(), dict([mailbox(100 + n, "k@example.org", "UTC", False)]))
    assert len(channel._contents) == email.REQUESTS_KEPT


def test_a_server_error_is_retried_once_inline(channel: EmailChannel, sendgrid: SandboxServer) -> None:
    sendgrid.faults.update("sendgrid", burst_count=1, burst_status=503)
    result = channel.send(_request(), _until(), dict([mailbox(1, "a@example.org", "UTC", False)]))
    assert result.outcomes[1].status is Status.SENT
    assert result.calls == 2 and result.inline_retries == 1


def test_persistent_server_errors_hand_the_batch_back(channel: EmailChannel, sendgrid: SandboxServer) -> None:
    sendgrid.faults.update("sendgrid", error_rate=1.0, error_status=500)
    started = time.monotonic()
    result = channel.send(_request(), _until(), dict([mailbox(1, "a@example.org", "UTC", False)]))
    assert result.retry == [1] and not result.outcomes and not result.quota_exceeded
    assert result.retry_after == email.TEMPORARY_DEFAULT_WAIT_SECONDS
    assert time.monotonic() - started < 3


def test_a_permanent_rejection_fails_the_rows_with_the_reason(sendgrid: SandboxServer) -> None:
    broken = EmailChannel(sendgrid.configure(Settings()).with_(email_from="not-an-address"))
    result = broken.send(_request(), _until(), dict([mailbox(1, "a@example.org", "UTC", False),
                                                      mailbox(2, "b@example.org", "UTC", True)]))
    assert result.outcomes[1].status is Status.FAILED and result.outcomes[2].status is Status.FAILED
    assert result.outcomes[1].reason == "sendgrid_400:from.email"
    assert not result.retry


def test_a_wrong_api_key_fails_rather_than_retrying(sendgrid: SandboxServer) -> None:
    wrong = EmailChannel(sendgrid.configure(Settings()).with_(sendgrid_api_key="SG.wrong"))
    result = wrong.send(_request(), _until(), dict([mailbox(1, "a@example.org", "UTC", False)]))
    assert result.outcomes[1].status is Status.FAILED and result.outcomes[1].reason == "sendgrid_401"


def test_worker_threads_share_one_channel(channel: EmailChannel, sendgrid: SandboxServer) -> None:
    import threading

    results: list[Any] = []

    def worker(n: int) -> None:
        targets = [mailbox(n * 1000 + i, f"t{n}-{i}@example.org", "UTC", i % 2 == 0) for i in range(300)]
        results.append(channel.send(_request(), _until(), dict(targets)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 4 and all(r.accepted == 300 for r in results)
    recipients = sendgrid.records("sendgrid")
    assert len(recipients) == 1200 and len({r["email"] for r in recipients}) == 1200
    assert all(r["custom_args"]["resident_id"] in r["headers"]["List-Unsubscribe"] for r in recipients)


def _answering(status: str, headers: dict[str, str]) -> Any:
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    reply = f"HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}".encode()
    return lambda number, call, request: reply


def _in(seconds: float) -> str:
    return email_utils.format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(("retry_after", "low", "high"), [
    (lambda: _in(30), 25.0, 31.0),  # an HTTP-date
    (lambda: "12", 12.0, 12.0),  # delta-seconds
    (lambda: "Tomorrow, maybe", email.QUOTA_DEFAULT_WAIT_SECONDS, email.QUOTA_DEFAULT_WAIT_SECONDS),  # unreadable
    (lambda: "9" * 40, RETRY_AFTER_MAX_SECONDS, RETRY_AFTER_MAX_SECONDS),  # absurd: clamped
    (lambda: _in(-600), 0.0, 0.0),  # already past
], ids=["http-date", "delta-seconds", "unreadable", "absurd", "past"])
def test_a_rate_limit_with_any_retry_after_hands_the_batch_back_and_never_raises(
    sendgrid: SandboxServer, retry_after: Callable[[], str], low: float, high: float
) -> None:
    server = ScriptedHttp(_answering("429 Too Many Requests", {"Retry-After": retry_after()}))
    try:
        settings = sendgrid.configure(Settings()).with_(sendgrid_endpoint=f"http://127.0.0.1:{server.port}")
        result = EmailChannel(settings).send(_request(), _until(), dict([mailbox(1, "a@example.org", "UTC", False)]))
    finally:
        server.close()
    assert result.quota_exceeded and result.retry == [1] and not result.outcomes
    assert result.retry_after is not None and low <= result.retry_after <= high


def test_an_unreadable_rate_limit_reset_falls_back_to_the_default_wait(sendgrid: SandboxServer) -> None:
    server = ScriptedHttp(_answering("429 Too Many Requests", {"X-RateLimit-Reset": "never"}))
    try:
        settings = sendgrid.configure(Settings()).with_(sendgrid_endpoint=f"http://127.0.0.1:{server.port}")
        result = EmailChannel(settings).send(_request(), _until(), dict([mailbox(1, "a@example.org", "UTC", False)]))
    finally:
        server.close()
    assert result.retry == [1] and result.retry_after == email.QUOTA_DEFAULT_WAIT_SECONDS


def test_no_email_goes_out_once_the_response_window_has_ended(channel: EmailChannel,
                                                              sendgrid: SandboxServer) -> None:
    result = channel.send(_request(), datetime.now(UTC) - timedelta(seconds=1),
                          dict([mailbox(1, "a@example.org", "UTC", False)]))
    assert result.outcomes == {1: Outcome(Status.EXPIRED, WINDOW_ENDED)} and result.calls == 0
    assert sendgrid.records("sendgrid") == []


def test_calls_not_yet_made_when_the_window_ends_expire_instead(channel: EmailChannel,
                                                               sendgrid: SandboxServer) -> None:
    """A 503's inline retry would come after the window: the residents expire, nothing more is sent."""
    sendgrid.faults.update("sendgrid", burst_count=2, burst_status=503, latency_ms=300)
    recipients = dict(mailbox(i, f"z{i}@example.org", zone, False) for i, zone in enumerate(["UTC", "Asia/Tokyo"]))
    # 0.3 s for the first calls, at least 0.25 s of backoff: the retries would start after the window.
    result = channel.send(_request(), datetime.now(UTC) + timedelta(seconds=0.5), recipients)
    assert result.outcomes == dict.fromkeys(recipients, Outcome(Status.EXPIRED, WINDOW_ENDED))
    assert result.calls == 2 and result.inline_retries == 2 and not result.retry
    assert sendgrid.records("sendgrid") == []


def test_a_call_written_but_never_answered_is_not_sent_again(sendgrid: SandboxServer) -> None:
    """SendGrid may have taken a call it never answered, and it has no idempotency key: at most once."""
    server = ScriptedHttp(lambda connection, call, request: None)  # reads the whole request, then hangs up
    try:
        settings = sendgrid.configure(Settings()).with_(sendgrid_endpoint=f"http://127.0.0.1:{server.port}")
        result = EmailChannel(settings).send(_request(), _until(), dict([mailbox(1, "a@example.org", "UTC", False),
                                                                         mailbox(2, "b@example.org", "UTC", True)]))
    finally:
        server.close()
    assert len(server.calls) == 2  # one call per group (camera or not), neither tried again
    assert result.outcomes == dict.fromkeys((1, 2), Outcome(Status.SENT, UNCONFIRMED_REASON))
    assert not result.retry and result.inline_retries == 0 and result.accepted == 0
    assert result.problems == {"RemoteProtocolError": 2}


def test_a_call_that_never_reached_sendgrid_is_tried_again_then_handed_back(sendgrid: SandboxServer) -> None:
    holder, port = refusing_port()  # nobody listens: the connection is refused before a byte is written
    try:
        settings = sendgrid.configure(Settings()).with_(sendgrid_endpoint=f"http://127.0.0.1:{port}")
        result = EmailChannel(settings).send(_request(), _until(), dict([mailbox(1, "a@example.org", "UTC", False)]))
    finally:
        holder.close()
    assert result.retry == [1] and not result.outcomes
    assert result.calls == 2 and result.inline_retries == 1 and result.problems == {"ConnectError": 2}


def test_a_batch_starts_no_call_that_could_outlive_its_lease(sendgrid: SandboxServer) -> None:
    """Calls must end before the lease does; once too little is left, the rest go back for another worker."""
    sendgrid.faults.update("sendgrid", latency_ms=400, burst_count=6, burst_status=503)
    lease = int(email.RECORD_MARGIN_SECONDS) + 1  # 1 s: a 0.4 s call, its backoff, then too little time left
    short = EmailChannel(sendgrid.configure(Settings()).with_(lease_seconds=lease))
    assert short.batch_deadline_seconds == 1.0
    zones = ["UTC", "Europe/Berlin", "Asia/Tokyo", "America/Denver", "Africa/Lagos", "Australia/Perth"]
    recipients = dict(mailbox(i, f"z{i}@example.org", zone, False) for i, zone in enumerate(zones))
    result = short.send(_request(), _until(), recipients)
    assert sorted(result.retry) == sorted(recipients) and not result.outcomes
    assert result.calls == 6 and result.problems == {"503": 6, "lease_deadline": 6}
    assert sendgrid.records("sendgrid") == []
