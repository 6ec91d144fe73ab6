"""The database connection a route uses: one from the process pool for the length of the call.

Routes take it inside their own body (``with connection() as conn:``) rather than as a FastAPI
dependency: a synchronous dependency is one more hop to the thread pool on the way in and one on the
way out, which cost more CPU than the feed lookup itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dispatcher.db import get_pool
from dispatcher.db.types import Conn

#: Seconds a call waits for a free connection before it fails (503 on readiness, 500 elsewhere).
CONNECTION_TIMEOUT_SECONDS = 5.0


@contextmanager
def connection() -> Iterator[Conn]:
    """A pooled connection, returned to the pool when the block ends."""
    with get_pool().connection(timeout=CONNECTION_TIMEOUT_SECONDS) as conn:
        yield conn
