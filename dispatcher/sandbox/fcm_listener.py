"""FCM's ``messages:send`` on a listener of its own: HTTP/1.1 on ``httptools``, on the sandbox's loop.

Why a second listener: the sandbox stands in for a provider on the same two cores as the worker it
measures, so what it spends a call is taken from the worker. Through uvicorn's ASGI machinery a push
cost the sandbox 110-150 µs of CPU once a worker held a thousand connections each waiting 100 ms, and
the benchmark measured the sandbox, not the engine. This protocol does only what FCM's endpoint needs
(a POST with a body, keep-alive, one request at a time per connection) and hands the call to the same
:class:`~dispatcher.sandbox.fcm.FcmSandbox` as before: the same validation, quota, faults, latency and
records. The OAuth token endpoint, SendGrid, Twilio and the control API stay on uvicorn.

A request the endpoint does not serve gets FCM's 404; a malformed one a 400 and the connection closed.
The ``cut`` fault is honoured as on uvicorn: the status line, chunked headers and half the body, then
the connection dies.
"""

from __future__ import annotations

import asyncio
import contextlib
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

import httptools

from dispatcher.sandbox.http import Response, json_response

if TYPE_CHECKING:
    from dispatcher.sandbox.fcm import FcmSandbox

_PREFIX = b"/v1/projects/"
_SUFFIX = b"/messages:send"
#: Largest request accepted (FCM's own limit is a 4 KB message; a bigger body is refused, not buffered).
MAX_BODY_BYTES = 1 << 20


def _google_error(status: int, rpc_status: str) -> Response:
    """Google's error body for a request the endpoint does not serve (no FCM error code in it)."""
    return json_response(status, {"error": {"code": status, "message": HTTPStatus(status).phrase,
                                            "status": rpc_status}})


_NOT_FOUND = _google_error(404, "NOT_FOUND")
_TOO_LARGE = _google_error(413, "INVALID_ARGUMENT")
_MALFORMED = _google_error(400, "INVALID_ARGUMENT")


def _head(response: Response, length: bytes | None) -> bytes:
    """Status line and headers; ``length`` None: chunked (a body that will never finish)."""
    reason = HTTPStatus(response.status).phrase.encode()
    lines = [b"HTTP/1.1 %d %s\r\n" % (response.status, reason)]
    lines.extend(b"%s: %s\r\n" % (name, value) for name, value in response.headers)
    lines.append(b"transfer-encoding: chunked\r\n" if length is None else b"content-length: %s\r\n" % length)
    return b"".join(lines) + b"\r\n"


def _whole(response: Response) -> bytes:
    """The response as written on the wire, its length announced."""
    return _head(response, str(len(response.body)).encode()) + response.body


class FcmProtocol(asyncio.Protocol):
    """One client connection to the FCM listener."""

    def __init__(self, fcm: FcmSandbox) -> None:
        self.fcm = fcm
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._authorization: bytes | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._answering: asyncio.Task[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        """Nothing to cancel: FCM goes on with a request it has read whole, whoever still listens (the
        answer is then not written), so a call its client gave up on is delivered all the same."""

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # FCM upgrades to nothing
            self._refuse()

    # -- httptools callbacks -----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url, self._authorization, self._body, self._size = b"", None, [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self._authorization = value

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size <= MAX_BODY_BYTES:
            self._body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self._answering is not None and not self._answering.done():
            self._refuse()  # a pipelined request: FCM's clients send one at a time
            return
        self.transport.pause_reading()  # one request at a time, as HTTP/1.1 clients without pipelining send
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        self._answering = asyncio.get_running_loop().create_task(
            self._answer(method, self._url, self._authorization, b"".join(self._body), keep_alive))

    # -- answers -----------------------------------------------------------------------------------
    async def _answer(self, method: bytes, url: bytes, authorization: bytes | None, body: bytes,
                      keep_alive: bool) -> None:
        path = httptools.parse_url(url).path
        if self._size > MAX_BODY_BYTES:
            response, keep_alive = _TOO_LARGE, False
        elif method == b"POST" and path.startswith(_PREFIX) and path.endswith(_SUFFIX):
            project = path[len(_PREFIX):-len(_SUFFIX)].decode("latin-1")
            response = await self.fcm.send(project, authorization, body)
        else:
            response = _NOT_FOUND
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if response.cut:
            half = response.body[:len(response.body) // 2]
            transport.write(_head(response, None) + (b"%x\r\n%s\r\n" % (len(half), half) if half else b""))
            transport.close()
            return
        transport.write(_whole(response))
        if keep_alive:
            transport.resume_reading()
        else:
            transport.close()

    def _refuse(self) -> None:
        """A request that is not HTTP as FCM takes it: a 400, and the connection closed."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(Exception):
                transport.write(_whole(_MALFORMED))
            transport.close()
