"""The seam between the push channel and the bytes on the wire: swap the lean client for a reference one.

The lane engine (:mod:`.lanes`) holds a connection from a :class:`PushTransport` and *pumps* bodies
through it, one call at a time: the connection sends ``body(i)`` for each index, calls ``accepted(i)``
on a 200, and stops at the first other answer or failure, handing it back. The default transport is
the lean client (:mod:`.fcm_http`); :mod:`.httpx_transport` is the reference (httpx, the client
firebase-admin's own async path uses), so the two can be swapped in a test or a benchmark and measured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import NamedTuple, Protocol


class HttpAnswer(NamedTuple):
    """One response: the status, the headers (a transport may leave them empty for 200) and the body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class ConnectionFailed(Exception):
    """The connection broke before a whole response arrived (not a DispatcherError: mapped by the caller)."""


class NotWritten(ConnectionFailed):
    """A call that failed before its request could reach the provider (no connection): safe to send again.

    Any other exception stopping a pump means the request was written and never answered: the provider
    may have taken it, so it is never sent again (see :data:`~.lanes.UNCONFIRMED`).
    """


#: What stopped a pump: the index of the call and its non-200 answer or failure.
Stop = tuple[int, HttpAnswer | Exception]
#: A pump's result when the connection closed between calls: reopen and go on.
CLOSED: Stop = (-1, ConnectionFailed("the connection closed between calls"))


class PushConnection(Protocol):
    """One connection (or lane of a shared client) held by one lane of a batch."""

    @property
    def closed(self) -> bool:
        """Whether the connection can take no more calls (the lane asks the transport for another)."""

    def pump(self, indexes: Iterator[int], body: Callable[[int], bytes], authorization: str,
             accepted: Callable[[int], None], timeout: float) -> Awaitable[Stop | None]:
        """POST ``body(i)`` for each ``i`` of ``indexes``, one at a time, calling ``accepted(i)`` on a 200.

        Gives None when ``indexes`` ran out, :data:`CLOSED` when the server closed the connection
        between calls, else the index and the answer (non-200) or failure that stopped it.
        """

    def close(self) -> None:
        """Drop the connection (a late answer must never reach its next user)."""


class PushTransport(Protocol):
    """Connections to FCM's ``messages:send`` for one event loop, at most a fixed number at once."""

    async def acquire(self) -> PushConnection:
        """An open connection for one lane's exclusive use; raises :class:`ConnectionFailed`."""

    def release(self, connection: PushConnection) -> None:
        """Give a connection back (kept for reuse unless closed)."""

    def close(self) -> None:
        """Close every connection (called on the loop thread)."""


#: Makes the transport on the loop thread from the endpoint URL, the constant headers (Authorization
#: comes per pump) and the number of connections.
TransportFactory = Callable[[str, Mapping[str, str], int], PushTransport]
