"""FCM's own listener speaks HTTP/1.1 as the engine's and firebase-admin's clients expect, and refuses
what FCM would not take with a clear status, never hanging or crashing the sandbox."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest

from dispatcher.sandbox import SandboxServer
from dispatcher.sandbox.fcm_listener import MAX_BODY_BYTES

MESSAGE = b'{"message":{"token":"tok-listener-1","notification":{"title":"t","body":"b"}}}'


def _exchange(sandbox: SandboxServer, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send ``raw`` bytes to the FCM listener and read until it closes the connection."""
    with socket.create_connection(("127.0.0.1", sandbox.fcm_port), timeout=timeout) as sock:
        sock.sendall(raw)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _post(sandbox: SandboxServer, body: bytes, *, path: str = "/v1/projects/p/messages:send",
          method: str = "POST", extra: str = "Connection: close\r\n") -> bytes:
    token = sandbox.app.tokens.issue()
    head = (f"{method} {path} HTTP/1.1\r\nHost: fcm\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n")
    return _exchange(sandbox, head.encode() + body)


def test_a_message_is_accepted_and_recorded(sandbox: SandboxServer) -> None:
    answer = _post(sandbox, MESSAGE)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b'"name":"projects/p/messages/' in answer
    assert [r["token"] for r in sandbox.records("fcm")] == ["tok-listener-1"]


def test_keep_alive_serves_one_call_after_another_on_one_connection(sandbox: SandboxServer) -> None:
    headers = {"Authorization": f"Bearer {sandbox.app.tokens.issue()}"}
    with httpx.Client(base_url=sandbox.fcm_url, headers=headers) as client:
        for n in range(5):
            body = MESSAGE.replace(b"tok-listener-1", f"tok-keep-{n}".encode())
            assert client.post("/v1/projects/p/messages:send", content=body).status_code == 200
    assert len(sandbox.records("fcm")) == 5 and sandbox.stats()["calls"]["fcm.accepted"] == 5


@pytest.mark.parametrize(("case", "request_kwargs", "status"), [
    ("another path", {"path": "/v1/projects/p/messages:batchSend"}, b"404"),
    ("a GET", {"method": "GET"}, b"404"),
    ("the control API on FCM's port", {"path": "/_sandbox/records", "method": "DELETE"}, b"404"),
    ("not JSON", {"body": b"{not json"}, b"400"),
    ("no message", {"body": b'{"validate_only": false}'}, b"400"),
    ("a body over the bound", {"body": b"x" * (MAX_BODY_BYTES + 1)}, b"413"),
])
def test_what_fcm_would_not_take_is_refused_by_status(sandbox: SandboxServer, case: str,
                                                      request_kwargs: dict[str, Any], status: bytes) -> None:
    body = request_kwargs.pop("body", MESSAGE)
    answer = _post(sandbox, body, **request_kwargs)
    assert answer.startswith(b"HTTP/1.1 " + status), case
    assert sandbox.records("fcm") == []


def test_a_missing_token_is_unauthenticated(sandbox: SandboxServer) -> None:
    raw = (b"POST /v1/projects/p/messages:send HTTP/1.1\r\nHost: fcm\r\nContent-Length: %d\r\n"
           b"Connection: close\r\n\r\n%s" % (len(MESSAGE), MESSAGE))
    assert _exchange(sandbox, raw).startswith(b"HTTP/1.1 401 ")


@pytest.mark.parametrize(("case", "raw"), [
    ("garbage", b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n"),
    ("a bad request line", b"POST\r\n\r\n"),
    ("a bad content length", b"POST /v1/projects/p/messages:send HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
    ("two requests at once", (b"POST /v1/projects/p/messages:send HTTP/1.1\r\nHost: f\r\nContent-Length: 2\r\n\r\n{}"
                              b"POST /v1/projects/p/messages:send HTTP/1.1\r\nHost: f\r\nContent-Length: 2\r\n\r\n{}")),
])
def test_malformed_http_gets_a_400_and_the_connection_closed(sandbox: SandboxServer, case: str, raw: bytes) -> None:
    answer = _exchange(sandbox, raw)
    assert b"HTTP/1.1 400 " in answer, case
    assert sandbox.records("fcm") == []
    assert _post(sandbox, MESSAGE).startswith(b"HTTP/1.1 200"), "the listener still serves"


def test_a_cut_connection_ends_mid_response(sandbox: SandboxServer) -> None:
    sandbox.faults.update("fcm", reset_rate=1.0)
    answer = _post(sandbox, MESSAGE, extra="")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in answer
    assert not answer.endswith(b"0\r\n\r\n"), "the body never finishes: the client sees the connection die"
    assert len(sandbox.records("fcm")) == 1, "FCM took the message before the connection died"


def test_a_call_its_client_gave_up_on_is_delivered_all_the_same(sandbox: SandboxServer) -> None:
    """FCM goes on with a request it has read whole: the engine's 'unconfirmed' rows count on it."""
    sandbox.faults.update("fcm", latency_ms=300)
    token = sandbox.app.tokens.issue()
    raw = (f"POST /v1/projects/p/messages:send HTTP/1.1\r\nHost: fcm\r\nAuthorization: Bearer {token}\r\n"
           f"Content-Length: {len(MESSAGE)}\r\n\r\n").encode() + MESSAGE
    with socket.create_connection(("127.0.0.1", sandbox.fcm_port), timeout=5) as sock:
        sock.sendall(raw)  # and hang up at once, long before the answer
    deadline = time.monotonic() + 5
    while not sandbox.records("fcm") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r["token"] for r in sandbox.records("fcm")] == ["tok-listener-1"]
