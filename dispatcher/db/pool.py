"""One psycopg 3 connection pool per process, opened on first use; an asynchronous one per event loop.

Workers share the pool across threads; short-lived tools use :func:`connect` instead. Request handlers
whose work is one statement use :func:`get_async_pool` and await it on their event loop, with no thread
hop.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from dispatcher.config import get_settings
from dispatcher.errors import ConfigurationError

_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()
_async_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConnectionPool] = weakref.WeakKeyDictionary()


def database_url() -> str:
    """The configured DSN; the CLI starts the embedded server before anything asks."""
    url = get_settings().database_url
    if not url:
        raise ConfigurationError("DATABASE_URL is not set and no embedded database was started")
    return url


def connect(autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """A fresh connection, for tools and tests that do not need the pool."""
    return psycopg.connect(database_url(), autocommit=autocommit)


def get_pool() -> ConnectionPool:
    """The process-wide pool (``DATABASE_POOL_SIZE`` connections at most); connections are checked on
    checkout so a restarted server heals."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ConnectionPool(
                database_url(),
                min_size=1,
                max_size=max(1, get_settings().database_pool_size),
                check=ConnectionPool.check_connection,
                name="dispatcher",
                open=True,
            )
        return _pool


def close_pool() -> None:
    """Close the process-wide pool (tests and CLI shutdown)."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.close()
            _pool = None


async def get_async_pool(min_size: int = 4, max_size: int = 8) -> AsyncConnectionPool:
    """The running event loop's pool of autocommit connections (each statement its own transaction).

    ``min_size`` connections are kept open: a burst then waits for none to be established (a new
    PostgreSQL backend takes tens of milliseconds on a busy machine).

    Connections are not checked on checkout (a round trip per request); a caller that meets a broken
    connection retries once, and the pool drops the broken one when it comes back.
    """
    loop = asyncio.get_running_loop()
    pool = _async_pools.get(loop)
    if pool is None:
        pool = AsyncConnectionPool(database_url(), min_size=min_size, max_size=max_size, kwargs={"autocommit": True},
                                   name="dispatcher-async", open=False)
        _async_pools[loop] = pool
    await pool.open()  # idempotent: also covers a second caller arriving while the first one opens it
    return pool
