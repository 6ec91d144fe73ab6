"""One psycopg 3 connection pool per process, opened on first use.

Workers share it across threads; short-lived tools use :func:`connect` instead.
"""

from __future__ import annotations

import threading

import psycopg
from psycopg_pool import ConnectionPool

from dispatcher.config import get_settings
from dispatcher.errors import ConfigurationError

_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()


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
