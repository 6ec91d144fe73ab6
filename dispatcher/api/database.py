"""The database connection a route uses: one from the process pool for the length of the call."""

from __future__ import annotations

from collections.abc import Iterator

from dispatcher.db import get_pool
from dispatcher.db.types import Conn

#: Seconds a call waits for a free connection before it fails (503 on readiness, 500 elsewhere).
CONNECTION_TIMEOUT_SECONDS = 5.0


def connection() -> Iterator[Conn]:
    """A pooled connection, returned to the pool when the response is built."""
    with get_pool().connection(timeout=CONNECTION_TIMEOUT_SECONDS) as conn:
        yield conn
