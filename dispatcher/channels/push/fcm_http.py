"""The lean transport: an HTTP/1.1 keep-alive client for FCM's ``messages:send``, httptools parsing.

The push channel makes one POST per device token. A general client (aiohttp, httpx) builds a request
object, a header multidict, a response object and a stream reader for every call, which costs more
CPU per message than everything else the worker does for a push (measured in
``benchmarks/results/fanout.md``). Here the request head (method, path, host and fixed headers,
Authorization included) is encoded once per access token; a call appends ``Content-Length`` and the
body and writes the bytes, and the answer is parsed by httptools (llhttp, the parser uvicorn uses)
into a status, the headers (only kept for errors, which go to firebase-admin's error mapping) and the
body.

One :class:`FcmConnection` carries one call at a time (HTTP/1.1 without pipelining) and *pumps*: an
accepted answer writes the next request from the parser callback, so a run of accepted messages costs
no task, future or timer each; per-call deadlines are checked by one watchdog timer per pool.
:class:`FcmConnectionPool` (a :class:`~.transport.PushTransport`) keeps idle connections for reuse and
drops ones idle long enough that the server may have closed them. TLS (https endpoints) is the event
loop's, with the default CA store.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from urllib.parse import urlsplit

import httptools

from dispatcher.channels.push.transport import CLOSED, ConnectionFailed, HttpAnswer, PushConnection, Stop

#: Drop a kept-alive connection idle longer than this (uvicorn closes after 30 s, Google after minutes).
IDLE_SECONDS = 15.0
#: How often calls in flight are checked against their deadline.
WATCHDOG_SECONDS = 0.5


class FcmConnection(asyncio.Protocol):
    """One keep-alive connection that pumps calls: each accepted answer writes the next request at once.

    No task, future or timer per call: a run of accepted messages costs one write, one read and the
    parser's callbacks each. The pump stops at the first answer that is not a 200 or at a failure, and
    hands it to the caller (who retries, refreshes a token or gives up, then pumps again).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, heads: Callable[[str], bytes]) -> None:
        self._loop = loop
        self._heads = heads
        self._head = b""
        self._request_body: Callable[[int], bytes] = _no_request
        self._transport: asyncio.WriteTransport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Stop | None] | None = None
        self._indexes: Iterator[int] = iter(())
        self._accepted: Callable[[int], None] = _ignore
        self._index = -1
        self._timeout = 30.0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._feeding = False
        self._unfed: list[bytes] = []
        #: loop time by which the call in flight must be answered (inf when idle).
        self.deadline = math.inf
        self.closed = False
        self.idle_since = time.monotonic()

    # -- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport: create_connection's

    def data_received(self, data: bytes) -> None:
        if self._feeding:
            # Called back from a write made inside a parser callback: the parser is not re-entrant.
            self._unfed.append(data)
            return
        self._feeding = True
        try:
            self._parser.feed_data(data)
            while self._unfed:
                self._parser.feed_data(self._unfed.pop(0))
        except httptools.HttpParserError as error:
            self._unfed.clear()
            self.fail(ConnectionFailed(f"unparseable response: {error}"))
        finally:
            self._feeding = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._index >= 0 and self._headers_done and exc is None:
            self._answered()  # a body delimited by the end of the connection
        else:
            self.fail(ConnectionFailed(f"connection closed mid-response: {exc!r}"))

    # -- httptools callbacks -------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self._parser.should_keep_alive()
        if not keep_alive:
            self.closed = True
        self._answered()
        if not keep_alive and self._transport is not None:
            self._transport.close()

    # -- pumping -------------------------------------------------------------------------------------
    def pump(self, indexes: Iterator[int], body: Callable[[int], bytes], authorization: str,
             accepted: Callable[[int], None], timeout: float) -> asyncio.Future[Stop | None]:
        """See :meth:`~.transport.PushConnection.pump`: each accepted answer writes the next request."""
        waiter: asyncio.Future[Stop | None] = self._loop.create_future()
        if self.closed or self._transport is None:
            waiter.set_result(CLOSED)
            return waiter
        self._waiter, self._indexes, self._request_body, self._accepted = waiter, indexes, body, accepted
        self._head = self._heads(authorization)
        self._timeout = timeout
        self._next()
        return waiter

    def _next(self) -> None:
        index = next(self._indexes, -1)
        if index < 0:
            self._finish(None)
            return
        self._index = index
        self.deadline = self._loop.time() + self._timeout
        body = self._request_body(index)
        self._transport.write(b"%s%d\r\n\r\n%s" % (self._head, len(body), body))  # type: ignore[union-attr]

    def _answered(self) -> None:
        index, self._index = self._index, -1
        self.deadline = math.inf
        status = self._parser.get_status_code()
        headers, body = self._headers, self._body
        self._headers, self._body, self._headers_done = [], [], False
        self.idle_since = time.monotonic()
        waiter = self._waiter
        if index < 0 or waiter is None or waiter.done():
            return
        if status != 200:
            answer = HttpAnswer(status, [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
                                b"".join(body))
            self._finish((index, answer))
            return
        self._accepted(index)
        if self.closed:
            self._finish(CLOSED)
        else:
            self._next()

    def _finish(self, stop: Stop | None) -> None:
        waiter, self._waiter = self._waiter, None
        self._indexes, self._request_body, self._accepted = iter(()), _no_request, _ignore
        if waiter is not None and not waiter.done():
            waiter.set_result(stop)

    def fail(self, error: Exception) -> None:
        """Give up on the call in flight (if any) with ``error`` and close the connection."""
        index, self._index = self._index, -1
        self.deadline = math.inf
        self._finish((index, error) if index >= 0 else CLOSED)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


def _no_request(index: int) -> bytes:
    raise ConnectionFailed("no request to send")


def _ignore(index: int) -> None:
    return None


class FcmConnectionPool:
    """Keep-alive connections to one origin, opened on demand, at most ``limit`` at once."""

    def __init__(self, url: str, headers: Mapping[str, str], limit: int, *, connect_timeout: float = 30.0) -> None:
        parsed = urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"FCM endpoint must be an http(s) URL, not {url!r}")
        default = 443 if parsed.scheme == "https" else 80
        self.host = parsed.hostname
        self.port = parsed.port or default
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parsed.scheme == "https" else None
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal keeps its brackets
        self.host_header = host if self.port == default else f"{host}:{self.port}"
        self.path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        self.headers = dict(headers)
        self.limit = limit
        self.connect_timeout = connect_timeout
        self._heads: dict[str, bytes] = {}
        self._idle: list[FcmConnection] = []
        self._busy: set[FcmConnection] = set()
        self._slots = asyncio.Semaphore(limit)
        self._watchdog: asyncio.TimerHandle | None = None

    def request_head(self, authorization: str) -> bytes:
        """The request line and headers up to ``Content-Length:`` (the call appends the length).

        Encoded once per access token: only the newest is kept.
        """
        head = self._heads.get(authorization)
        if head is None:
            lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host_header}"]
            lines += [f"{name}: {value}" for name, value in {**self.headers, "Authorization": authorization}.items()]
            head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
            self._heads = {authorization: head}
        return head

    async def acquire(self) -> FcmConnection:
        """An open connection for one caller's exclusive use (until :meth:`release`)."""
        await self._slots.acquire()
        try:
            connection = self._reuse() or await self._open()
        except BaseException:
            self._slots.release()
            raise
        self._busy.add(connection)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(WATCHDOG_SECONDS, self._watch)
        return connection

    def _reuse(self) -> FcmConnection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                return connection
            connection.close()
        return None

    def _watch(self) -> None:
        """Fail calls past their deadline (one timer per pool, not one per call)."""
        self._watchdog = None
        now = asyncio.get_running_loop().time()
        for connection in list(self._busy):
            if connection.deadline < now:
                connection.fail(TimeoutError("FCM did not answer in time"))
        if self._busy:
            self._watchdog = asyncio.get_running_loop().call_later(WATCHDOG_SECONDS, self._watch)

    async def _open(self) -> FcmConnection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: FcmConnection(loop, self.request_head), self.host, self.port,
                                       ssl=self.ssl, server_hostname=self.host if self.ssl else None),
                self.connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as error:
            raise ConnectionFailed(f"could not connect to {self.host}:{self.port}: {error!r}") from error
        return connection

    def release(self, connection: PushConnection) -> None:
        assert isinstance(connection, FcmConnection), "a connection of another transport"
        self._busy.discard(connection)
        if not connection.closed:
            self._idle.append(connection)
        self._slots.release()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for connection in [*self._idle, *self._busy]:
            connection.close()
        self._idle.clear()
