"""A lean HTTP/1.1 keep-alive client for FCM's ``messages:send``: pre-built request bytes, httptools parsing.

The push channel makes one POST per device token. A general client (aiohttp, httpx) builds a request
object, a header multidict, a response object and a stream reader for every call, which on this host
costs about 0.2 ms of CPU per message: more than everything else the worker does for a push. Here the
request head (method, path, host and fixed headers, Authorization included) is encoded once per batch;
a call appends ``Content-Length`` and the body and writes the bytes, and the answer is parsed by
httptools (llhttp, the parser uvicorn uses) into a status, the headers (only kept for errors, which go
to firebase-admin's error mapping) and the body.

One :class:`FcmConnection` carries one call at a time (HTTP/1.1 without pipelining, as FCM expects);
:class:`FcmConnectionPool` keeps idle connections for reuse and drops ones idle long enough that the
server may have closed them.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import NamedTuple

import httptools
import yarl

#: Drop a kept-alive connection idle longer than this (uvicorn closes after 30 s, Google after minutes).
IDLE_SECONDS = 15.0


class HttpAnswer(NamedTuple):
    """One response: the status, the headers (empty for 200: nothing reads them) and the body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class ConnectionFailed(Exception):
    """The connection broke before a whole response arrived (not a DispatcherError: mapped by the caller)."""


class FcmConnection(asyncio.Protocol):
    """One keep-alive connection; :meth:`post` sends pre-built bytes and waits for the answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.WriteTransport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[HttpAnswer] | None = None
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self.closed = False
        self.idle_since = time.monotonic()

    # -- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport: create_connection's

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionFailed(f"unparseable response: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if self._headers_done and exc is None:
                # A body delimited by the end of the connection.
                self._complete()
            else:
                self._fail(ConnectionFailed(f"connection closed mid-response: {exc!r}"))

    # -- httptools callbacks -------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self._parser.should_keep_alive()
        self._complete()
        if not keep_alive:
            self.close()

    # -- calls ---------------------------------------------------------------------------------------
    def _complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        status = self._parser.get_status_code()
        headers = self._headers if status != 200 else []
        body = b"".join(self._body)
        self._headers, self._body, self._headers_done = [], [], False
        self.idle_since = time.monotonic()
        if waiter is not None and not waiter.done():
            waiter.set_result(HttpAnswer(status, headers, body))

    def _fail(self, error: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    async def post(self, request: bytes, timeout: float) -> HttpAnswer:
        """Write one whole request (head and body) and wait for its response."""
        if self.closed or self._transport is None:
            raise ConnectionFailed("the connection is closed")
        waiter: asyncio.Future[HttpAnswer] = self._loop.create_future()
        self._waiter = waiter
        self._transport.write(request)
        timer = self._loop.call_later(timeout, self._time_out, waiter)
        try:
            return await waiter
        except BaseException:
            # Cancelled or failed mid-call: a late answer must not be taken for the next call's.
            self.close()
            raise
        finally:
            timer.cancel()

    def _time_out(self, waiter: asyncio.Future[HttpAnswer]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError("FCM did not answer in time"))
            self.close()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class FcmConnectionPool:
    """Keep-alive connections to one origin, opened on demand, at most ``limit`` at once."""

    def __init__(self, url: str, limit: int, *, connect_timeout: float = 30.0) -> None:
        parsed = yarl.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"FCM endpoint must be an http(s) URL, not {url!r}")
        self.host = parsed.host
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parsed.scheme == "https" else None
        default_port = parsed.port is None or parsed.is_default_port()
        self.host_header = parsed.host if default_port else f"{parsed.host}:{self.port}"
        self.path = parsed.raw_path_qs
        self.limit = limit
        self.connect_timeout = connect_timeout
        self._idle: list[FcmConnection] = []
        self._slots = asyncio.Semaphore(limit)

    def request_head(self, headers: dict[str, str]) -> bytes:
        """The request line and headers up to ``Content-Length:`` (the call appends the length)."""
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")

    async def acquire(self) -> FcmConnection:
        """An open connection for one caller's exclusive use (until :meth:`release`)."""
        await self._slots.acquire()
        try:
            now = time.monotonic()
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                    return connection
                connection.close()
            return await self._open()
        except BaseException:
            self._slots.release()
            raise

    async def _open(self) -> FcmConnection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: FcmConnection(loop), self.host, self.port, ssl=self.ssl,
                                       server_hostname=self.host if self.ssl else None),
                self.connect_timeout)
        except (OSError, TimeoutError, ssl.SSLError) as error:
            raise ConnectionFailed(f"could not connect to {self.host}:{self.port}: {error!r}") from error
        return connection

    def release(self, connection: FcmConnection) -> None:
        if not connection.closed:
            self._idle.append(connection)
        self._slots.release()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
