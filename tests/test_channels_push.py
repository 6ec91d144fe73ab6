"""The push channel through firebase-admin against the FCM sandbox: content, errors, retirement, threads."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import utils as email_utils
from typing import Any

import pytest

from dispatcher.channels import push
from dispatcher.channels.content import CHOOSE_VIDEOS, LABEL, VIEW_REQUEST
from dispatcher.channels.push import PushChannel, lanes
from dispatcher.channels.push.fcm_http import FcmConnection
from dispatcher.channels.push.httpx_transport import httpx_transport
from dispatcher.config import FCM_MAX_TTL_SECONDS, Settings
from dispatcher.contract import CommunityRequest, parse_request
from dispatcher.ledger import UNCONFIRMED_REASON, WINDOW_ENDED, Outcome, Status
from dispatcher.sandbox import SandboxServer
from tests.factories import request_payload
from tests.recipients import device
from tests.scripted_http import ScriptedHttp, refusing_port

pytestmark = pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def fcm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path_factory.mktemp("fcm")) as server:
        yield server


@pytest.fixture(scope="module")
def channel(fcm: SandboxServer) -> Iterator[PushChannel]:
    sent = PushChannel(fcm.configure(Settings()))
    yield sent
    sent.close()


@pytest.fixture(autouse=True)
def _clean(fcm: SandboxServer) -> None:
    fcm.faults.reset()
    fcm.clear()


def _request(request_id: str = "req-push-1", **overrides: Any) -> CommunityRequest:
    return parse_request(request_payload(request_id, **overrides))


def _until(days: float = 60) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def _by_token(fcm: SandboxServer) -> dict[str, dict[str, Any]]:
    return {r["token"]: r["message"] for r in fcm.records("fcm")}


def test_content_for_camera_owners_and_others(channel: PushChannel, fcm: SandboxServer) -> None:
    request = _request()
    result = channel.send(request, _until(2), dict([device(1, ("cam-a",), True), device(2, ("nocam-b",), False)]))
    assert result.outcomes[1].status is Status.SENT and result.outcomes[2].status is Status.SENT
    assert result.accepted == 2 and not result.retry

    sent = _by_token(fcm)
    camera, other = sent["cam-a"], sent["nocam-b"]
    for message in (camera, other):
        assert message["notification"]["title"] == f"Springfield Police · {LABEL}"
        assert message["notification"]["body"].startswith("Vehicle break in: Two cars broken into")
        assert message["data"]["request_id"] == "req-push-1"
        assert message["android"]["collapse_key"] == "cr-req-push-1"
        assert message["android"]["notification"]["tag"] == "cr-req-push-1"
        assert message["apns"]["headers"]["apns-collapse-id"] == "cr-req-push-1"
        # Not urgent: normal priority; time to live is the 2 days left of the window.
        assert message["android"]["priority"] == "normal" and message["apns"]["headers"]["apns-priority"] == "5"
        ttl = int(message["android"]["ttl"].rstrip("s"))
        assert 2 * 86400 - 120 < ttl <= 2 * 86400
    assert camera["data"]["action_label"] == CHOOSE_VIDEOS
    assert camera["data"]["deep_link"] == "https://app.dispatcher.invalid/requests/req-push-1/share"
    assert camera["apns"]["payload"]["aps"]["category"] == "CHOOSE_VIDEOS"
    assert other["data"]["action_label"] == VIEW_REQUEST
    assert other["data"]["deep_link"] == "https://app.dispatcher.invalid/requests/req-push-1/view"
    assert other["android"]["notification"]["click_action"] == "view_request"


def test_urgent_request_is_high_priority_and_ttl_is_capped(channel: PushChannel, fcm: SandboxServer) -> None:
    request = _request("req-urgent", incident_type="missing_person")
    channel.send(request, _until(60), dict([device(1, ("tok-u",), False)]))
    [message] = _by_token(fcm).values()
    assert message["android"]["priority"] == "high"
    assert message["apns"]["headers"]["apns-priority"] == "10"
    assert int(message["android"]["ttl"].rstrip("s")) == FCM_MAX_TTL_SECONDS
    assert message["notification"]["body"].startswith("Missing person: ")


def test_a_duplicate_send_carries_the_same_collapse_id(channel: PushChannel, fcm: SandboxServer) -> None:
    request = _request("req-dup")
    for _ in range(2):
        channel.send(request, _until(), dict([device(7, ("tok-dup",), True)]))
    messages = [r["message"] for r in fcm.records("fcm")]
    assert len(messages) == 2
    assert {m["android"]["notification"]["tag"] for m in messages} == {"cr-req-dup"}
    assert {m["apns"]["headers"]["apns-collapse-id"] for m in messages} == {"cr-req-dup"}


def test_dead_tokens_are_retired_and_a_live_one_still_counts(channel: PushChannel, fcm: SandboxServer) -> None:
    fcm.faults.update("fcm", unregistered={"dead-1", "dead-2"}, invalid_prefixes=["bad-"])
    targets = [
        device(1, ("dead-1", "live-1"), True),  # one dead token, one live: sent
        device(2, ("dead-2",), False),
        device(3, ("bad-token",), False),
    ]
    result = channel.send(_request(), _until(), dict(targets))
    assert result.retired_tokens == {"dead-1": "unregistered", "dead-2": "unregistered",
                                     "bad-token": "invalid_token"}
    assert result.outcomes[1].status is Status.SENT
    assert result.outcomes[2].status is Status.FAILED and result.outcomes[2].reason == "token_unregistered"
    assert result.outcomes[3].status is Status.FAILED and result.outcomes[3].reason == "token_invalid_token"
    assert not result.retry and set(_by_token(fcm)) == {"live-1"}


def test_quota_error_stops_the_batch_and_asks_every_worker_to_wait(channel: PushChannel,
                                                                    fcm: SandboxServer) -> None:
    fcm.faults.update("fcm", burst_count=1, burst_status=429, retry_after=7)
    targets = [device(i, (f"q-{i}",), False) for i in range(200)]
    result = channel.send(_request(), _until(), dict(targets))
    assert result.quota_exceeded
    assert result.retry_after == 7.0
    assert result.retry, "the resident that hit the quota is handed back"
    assert result.calls < 200, "messages not yet sent when the quota hit are not sent"
    assert set(result.retry) | set(result.outcomes) == set(range(200))
    assert all(o.status is Status.SENT for o in result.outcomes.values())
    assert result.accepted == len(fcm.records("fcm")) == len(result.outcomes)


def test_short_unavailable_bursts_are_retried_inline(channel: PushChannel, fcm: SandboxServer) -> None:
    fcm.faults.update("fcm", burst_count=3, burst_status=503, retry_after=0)
    targets = [device(i, (f"u-{i}",), False) for i in range(20)]
    result = channel.send(_request(), _until(), dict(targets))
    assert {o.status for o in result.outcomes.values()} == {Status.SENT} and len(result.outcomes) == 20
    assert result.inline_retries == 3 and result.calls == 23
    assert not result.retry and result.retry_after is None


@pytest.mark.parametrize("status", [500, 503])
def test_persistent_server_errors_hand_residents_back(channel: PushChannel, fcm: SandboxServer,
                                                      status: int) -> None:
    fcm.faults.update("fcm", error_rate=1.0, error_status=status, retry_after=0)
    result = channel.send(_request(), _until(), dict([device(1, ("e-1",), True), device(2, ("e-2",), False)]))
    assert sorted(result.retry) == [1, 2] and not result.outcomes
    assert not result.quota_exceeded
    assert result.calls == 2 * lanes.INLINE_ATTEMPTS
    assert result.retry_after == push.TEMPORARY_DEFAULT_WAIT_SECONDS


def test_long_retry_after_is_honoured_by_handing_back_at_once(channel: PushChannel, fcm: SandboxServer) -> None:
    fcm.faults.update("fcm", error_rate=1.0, error_status=503, retry_after=30)
    result = channel.send(_request(), _until(), dict([device(1, ("r-1",), True)]))
    assert result.retry == [1] and result.retry_after == 30.0
    assert result.calls == 1 and result.inline_retries == 0


def test_permanent_errors_fail_the_row_without_retiring_the_token(channel: PushChannel,
                                                                 fcm: SandboxServer) -> None:
    fcm.faults.update("fcm", error_rate=1.0, error_status=400)
    result = channel.send(_request(), _until(), dict([device(1, ("p-1",), True)]))
    assert result.outcomes[1].status is Status.FAILED
    assert result.outcomes[1].reason == "fcm_invalidargumenterror_invalid_argument"
    assert not result.retired_tokens and not result.retry


def test_many_threads_share_one_channel(channel: PushChannel, fcm: SandboxServer) -> None:
    request = _request()
    results: list[Any] = []

    def worker(n: int) -> None:
        targets = [device(n * 1000 + i, (f"t-{n}-{i}",), i % 2 == 0) for i in range(150)]
        results.append(channel.send(request, _until(), dict(targets)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 4 and all(r.accepted == 150 for r in results)
    assert len(fcm.records("fcm")) == 600
    assert len(set(_by_token(fcm))) == 600


def test_the_batch_deadline_never_sends_a_message_twice(fcm: SandboxServer) -> None:
    """Cut off by the deadline: messages in flight may still arrive (closed as unconfirmed, never sent
    again); messages no lane took yet go back for a later batch."""
    fcm.faults.update("fcm", latency_ms=300)
    slow = PushChannel(fcm.configure(Settings()), connections=2, batch_deadline_seconds=0.5)
    try:
        result = slow.send(_request(), _until(), dict([device(i, (f"d-{i}",), False) for i in range(10)]))
    finally:
        slow.close()
    answered = {rid for rid, o in result.outcomes.items() if o == Outcome(Status.SENT)}
    unconfirmed = {rid for rid, o in result.outcomes.items() if o == Outcome(Status.SENT, UNCONFIRMED_REASON)}
    assert 2 <= len(answered) <= 4 and 1 <= len(unconfirmed) <= 2
    assert sorted(result.retry) == sorted(set(range(10)) - answered - unconfirmed)
    assert result.retry_after == push.TEMPORARY_DEFAULT_WAIT_SECONDS
    assert result.problems["batch_deadline"] == len(unconfirmed) + len(result.retry)
    time.sleep(0.5)  # the calls cut off in flight land now
    assert set(_by_token(fcm)) <= {f"d-{i}" for i in answered | unconfirmed}, "a handed-back token was sent"


# -- the lean HTTP client against a scripted server: what a general client would have handled for us --
_OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{"name":"projects/p/m/1"}\r\n'


def _chunked(status: str, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload).encode()
    half = len(body) // 2
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:half], body[half:]))
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + chunks + b"0\r\n\r\n")


@pytest.fixture
def scripted(fcm: SandboxServer) -> Iterator[Any]:
    made: list[tuple[ScriptedHttp, PushChannel]] = []

    def make(answer: Any, **options: Any) -> tuple[ScriptedHttp, PushChannel]:
        server = ScriptedHttp(answer)
        settings = fcm.configure(Settings()).with_(fcm_endpoint=f"http://127.0.0.1:{server.port}")
        made.append((server, PushChannel(settings, **options)))
        return made[-1]

    yield make
    for server, sent in made:
        sent.close()
        server.close()


def test_a_server_closing_after_every_answer_gets_fresh_connections(scripted: Any) -> None:
    closing = _OK.replace(b"Content-Length", b"Connection: close\r\nContent-Length")
    server, sent = scripted(lambda number, call, body: closing)
    result = sent.send(_request(), _until(), dict([device(i, (f"c-{i}",), False) for i in range(30)]))
    assert result.accepted == 30 and result.calls == 30 and not result.retry
    assert server.connections >= 30


def test_a_chunked_error_body_reaches_firebase_admins_error_mapping(scripted: Any) -> None:
    unregistered = _chunked("404 Not Found", {"error": {
        "code": 404, "status": "NOT_FOUND", "message": "Requested entity was not found.",
        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}})

    def answer(number: int, call: int, body: bytes) -> bytes:
        return unregistered if b"gone" in body else _OK

    _server, sent = scripted(answer)
    result = sent.send(_request(), _until(), dict([device(1, ("gone-1",), False), device(2, ("live-2",), False)]))
    assert result.retired_tokens == {"gone-1": "unregistered"}
    assert result.outcomes[2].status is Status.SENT and result.outcomes[1].reason == "token_unregistered"


def test_a_hang_up_after_the_call_was_written_is_not_sent_again(scripted: Any) -> None:
    """The server read the call and hung up: FCM may have delivered it, so it is closed, not retried."""
    def answer(number: int, call: int, body: bytes) -> bytes | None:
        return None if number == 1 and call == 2 else _OK

    server, sent = scripted(answer, connections=1)
    result = sent.send(_request(), _until(), dict([device(i, (f"h-{i}",), False) for i in range(5)]))
    unconfirmed = [rid for rid, o in result.outcomes.items() if o == Outcome(Status.SENT, UNCONFIRMED_REASON)]
    assert result.accepted == 4 and len(unconfirmed) == 1 and not result.retry
    assert result.inline_retries == 0 and result.calls == 5 and len(server.calls) == 5
    assert server.connections == 2 and result.problems == {"ConnectionFailed": 1}


def test_a_call_that_never_reached_the_wire_is_tried_again(fcm: SandboxServer) -> None:
    """No connection at all: nothing was written, so the message is retried inline, then handed back."""
    holder, port = refusing_port()
    settings = fcm.configure(Settings()).with_(fcm_endpoint=f"http://127.0.0.1:{port}")
    try:
        for transport in (None, httpx_transport()):
            sent = PushChannel(settings, **({"transport": transport} if transport else {}))
            try:
                result = sent.send(_request(), _until(), dict([device(1, ("n-1",), False)]))
            finally:
                sent.close()
            assert result.retry == [1] and not result.outcomes, (transport, result)
            assert result.inline_retries == lanes.INLINE_ATTEMPTS - 1, (transport, result)
    finally:
        holder.close()


def test_an_unanswered_call_times_out_and_is_not_sent_again(scripted: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes, "REQUEST_TIMEOUT_SECONDS", 0.2)

    def answer(number: int, call: int, body: bytes) -> bytes:
        return b"" if b"slow" in body else _OK

    server, sent = scripted(answer, connections=1)
    result = sent.send(_request(), _until(), dict([device(1, ("slow-1",), False), device(2, ("fast-2",), False)]))
    assert result.outcomes == {1: Outcome(Status.SENT, UNCONFIRMED_REASON), 2: Outcome(Status.SENT)}
    assert not result.retry and sum(b"slow-1" in call for call in server.calls) == 1
    assert server.connections == 2, "the timed-out connection is not reused: its late answer would mislead"


def test_a_rejected_access_token_is_exchanged_once_for_all_connections(scripted: Any) -> None:
    unauthenticated = _chunked("401 Unauthorized", {"error": {
        "code": 401, "status": "UNAUTHENTICATED", "message": "Request had invalid authentication credentials."}})
    first: list[bytes] = []

    def answer(number: int, call: int, request: bytes) -> bytes:
        authorization = re.search(rb"Authorization: (\S+ \S+)", request).group(1)  # type: ignore[union-attr]
        first[:] = first or [authorization]
        return unauthenticated if authorization == first[0] else _OK

    server, sent = scripted(answer, connections=8)
    result = sent.send(_request(), _until(), dict([device(i, (f"a-{i}",), False) for i in range(40)]))
    assert result.accepted == 40 and not result.retry
    used = {re.search(rb"Authorization: (\S+ \S+)", head).group(1) for head in server.heads}  # type: ignore[union-attr]
    assert len(used) == 2, "every connection moves to the one fresh token"


def test_an_answer_delivered_during_the_write_is_parsed_after_the_current_one() -> None:
    """A transport may call back before ``write`` returns; the parser must not be fed re-entrantly."""

    class _AnsweringTransport:
        def __init__(self, connection: FcmConnection) -> None:
            self.connection = connection
            self.writes = 0

        def write(self, data: bytes) -> None:
            self.writes += 1
            self.connection.data_received(_OK)

        def close(self) -> None:
            self.connection.closed = True

    async def pump_all() -> tuple[Any, list[int], int]:
        connection = FcmConnection(asyncio.get_running_loop(), lambda authorization: b"head: ")
        transport = _AnsweringTransport(connection)
        connection.connection_made(transport)  # type: ignore[arg-type]
        accepted: list[int] = []
        stop = await connection.pump(iter(range(100)), lambda index: b"request", "Bearer t", accepted.append, 5.0)
        return stop, accepted, transport.writes

    stop, accepted, writes = asyncio.run(pump_all())
    assert stop is None and accepted == list(range(100)) and writes == 100


@pytest.mark.parametrize(("status", "code"), [("503 Service Unavailable", "UNAVAILABLE"),
                                              ("429 Too Many Requests", "RESOURCE_EXHAUSTED")])
def test_a_retry_after_given_as_an_http_date_is_honoured(scripted: Any, status: str, code: str) -> None:
    when = email_utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    payload = json.dumps({"error": {"code": int(status[:3]), "status": code, "message": "wait"}}).encode()
    reply = (f"HTTP/1.1 {status}\r\nRetry-After: {when}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
    _server, sent = scripted(lambda number, call, body: reply, connections=1)
    result = sent.send(_request(), _until(), dict([device(1, ("w-1",), False)]))
    assert result.retry == [1] and result.calls == 1, "a wait longer than the inline limit hands back at once"
    assert result.retry_after is not None and 25 <= result.retry_after <= 31


def test_the_reference_transport_sends_and_sorts_like_the_lean_client(fcm: SandboxServer) -> None:
    fcm.faults.update("fcm", unregistered={"ref-dead"})
    recipients = dict([device(1, ("ref-a", "ref-dead"), True), device(2, ("ref-b",), False),
                       device(3, ("ref-dead",), False)])
    results = []
    for transport in (None, httpx_transport()):
        options = {} if transport is None else {"transport": transport}
        sent = PushChannel(fcm.configure(Settings()), connections=4, **options)
        try:
            results.append(sent.send(_request(), _until(), recipients))
        finally:
            sent.close()
    lean, reference = results
    assert reference.outcomes == lean.outcomes and reference.retired_tokens == lean.retired_tokens
    assert reference.accepted == lean.accepted == 2
    assert sorted(r["token"] for r in fcm.records("fcm")) == ["ref-a", "ref-a", "ref-b", "ref-b"]
    assert {r["message"]["android"]["notification"]["tag"] for r in fcm.records("fcm")} == {"cr-req-push-1"}


def test_nothing_is_sent_once_the_response_window_has_ended(channel: PushChannel, fcm: SandboxServer) -> None:
    result = channel.send(_request(), datetime.now(UTC) - timedelta(seconds=1),
                          dict([device(1, ("late-a", "late-b"), True), device(2, ("late-c",), False)]))
    assert fcm.records("fcm") == [] and result.calls == 0 and not result.retry
    assert result.outcomes == {1: Outcome(Status.EXPIRED, WINDOW_ENDED), 2: Outcome(Status.EXPIRED, WINDOW_ENDED)}


def test_messages_not_yet_sent_when_the_window_ends_expire_instead(fcm: SandboxServer) -> None:
    fcm.faults.update("fcm", latency_ms=300)
    slow = PushChannel(fcm.configure(Settings()), connections=1)
    until = datetime.now(UTC) + timedelta(seconds=1)
    try:
        result = slow.send(_request(), until, dict(device(i, (f"w-{i}",), False) for i in range(10)))
    finally:
        slow.close()
    sent = {rid for rid, o in result.outcomes.items() if o.status is Status.SENT}
    late = {rid for rid, o in result.outcomes.items() if o == Outcome(Status.EXPIRED, WINDOW_ENDED)}
    assert 1 <= len(sent) <= 5 and sent | late == set(range(10)) and not result.retry
    assert {r["token"] for r in fcm.records("fcm")} == {f"w-{i}" for i in sent}


def test_a_reused_message_never_lives_past_the_window(channel: PushChannel, fcm: SandboxServer) -> None:
    until = datetime.now(UTC) + timedelta(seconds=100)
    for name in ("first", "second"):
        channel.send(_request(), until, dict([device(1, (name,), False)]))
        sent_at = datetime.now(UTC)
        message = _by_token(fcm)[name]
        ttl = int(message["android"]["ttl"].rstrip("s"))
        assert sent_at + timedelta(seconds=ttl) <= until + timedelta(seconds=0.1), name
        assert int(message["apns"]["headers"]["apns-expiration"]) <= until.timestamp()
        time.sleep(1.5)


def test_with_latency_the_calls_in_flight_grow_past_the_fixed_pool_of_64(fcm: SandboxServer) -> None:
    """At 2,500 messages a second and 100 ms a call, Little's law wants about 313 calls in flight."""
    fcm.faults.update("fcm", latency_ms=100)
    sent = PushChannel(fcm.configure(Settings()).with_(push_rate_per_minute=150_000))
    try:
        first = sent.send(_request(), _until(), dict(device(i, (f"l-{i}",), False) for i in range(500)))
        limit = sent.calls_in_flight
        assert limit is not None and limit.peak == 64, "the first batch starts from the floor"
        assert 250 <= limit.limit <= 400, "the observed latency moved the size"
        second = sent.send(_request(), _until(), dict(device(i, (f"m-{i}",), False) for i in range(500)))
    finally:
        sent.close()
    assert first.accepted == second.accepted == 500 and not first.retry and not second.retry
    assert 250 <= limit.peak <= 400 and limit.in_use == 0
    tokens = [r["token"] for r in fcm.records("fcm")]
    assert len(tokens) == len(set(tokens)) == 1_000


@pytest.mark.parametrize(("lease", "asked", "deadline"), [(120, 60.0, 60.0), (30, 60.0, 28.0), (2, 60.0, 1.0)])
def test_a_batch_ends_before_its_lease_with_time_left_to_record_it(lease: int, asked: float, deadline: float) -> None:
    sent = PushChannel(Settings().with_(lease_seconds=lease), batch_deadline_seconds=asked)
    assert sent.batch_deadline_seconds == deadline
