"""The reference push transport: httpx's AsyncClient, the client firebase-admin's own async path uses.

Slower per message than the lean client (a request and response object per call), but general and
well kept: pass :func:`httpx_transport` as ``PushChannel(..., transport=...)`` to check the lean
client against it, or to measure both (``benchmarks/fanout.py --phase push_httpx``). An
``httpx.AsyncBaseTransport`` may be given in turn (``httpx.MockTransport`` in a test). With
``http2=True`` the calls are HTTP/2 streams multiplexed over few connections (ALPN over TLS, prior
knowledge over plain HTTP), which is how ``benchmarks/transport.py`` compares the two protocols.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping

import httpx

from dispatcher.channels.httpx_failures import NEVER_CONNECTED
from dispatcher.channels.push.transport import (
    ConnectionFailed,
    HttpAnswer,
    NotWritten,
    PushConnection,
    PushTransport,
    Stop,
    TransportFactory,
)


class _Lane:
    """One lane's share of the client: a call at a time, as a connection of the lean client would carry."""

    closed = False

    def __init__(self, transport: HttpxTransport) -> None:
        self._transport = transport

    async def pump(self, indexes: Iterator[int], body: Callable[[int], bytes], authorization: str,
                   accepted: Callable[[int], None], timeout: float) -> Stop | None:
        client = self._transport.client
        url, headers = self._transport.url, {**self._transport.headers, "Authorization": authorization}
        for index in indexes:
            try:
                response = await client.post(url, content=body(index), headers=headers, timeout=timeout)
            except NEVER_CONNECTED as error:
                return index, NotWritten(f"{type(error).__name__}: {error}")
            except httpx.HTTPError as error:
                return index, ConnectionFailed(f"{type(error).__name__}: {error}")
            if response.status_code != 200:
                return index, HttpAnswer(response.status_code, list(response.headers.items()), response.content)
            accepted(index)
        return None

    def close(self) -> None:
        """Nothing to drop: the client's pool discards a connection whose call was cancelled."""


class HttpxTransport:
    """At most ``limit`` calls in flight over one ``httpx.AsyncClient`` (keep-alive HTTP/1.1, or HTTP/2)."""

    def __init__(self, url: str, headers: Mapping[str, str], limit: int, *,
                 transport: httpx.AsyncBaseTransport | None = None, http2: bool = False) -> None:
        self.url = url
        self.headers = dict(headers)
        self.client = httpx.AsyncClient(
            transport=transport, http1=not http2, http2=http2,
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit))
        self._slots = asyncio.Semaphore(limit)
        self._closing: asyncio.Future[None] | None = None

    async def acquire(self) -> PushConnection:
        await self._slots.acquire()
        return _Lane(self)

    def release(self, connection: PushConnection) -> None:
        self._slots.release()

    def close(self) -> None:
        self._closing = asyncio.ensure_future(self.client.aclose())


def httpx_transport(transport: httpx.AsyncBaseTransport | None = None, *, http2: bool = False) -> TransportFactory:
    """A transport factory for :class:`~.channel.PushChannel` that sends over httpx (HTTP/2 on request)."""

    def make(url: str, headers: Mapping[str, str], limit: int) -> PushTransport:
        return HttpxTransport(url, headers, limit, transport=transport, http2=http2)

    return make
