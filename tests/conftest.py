"""Shared fixtures: a real PostgreSQL database and a real Redis for every test run.

With ``DATABASE_URL`` / ``REDIS_URL`` set (CI points them at the machine's services) those servers are
used; otherwise the embedded ones start under ``.dispatcher/test``. Each run gets its own freshly
migrated database, dropped at the end, and every test starts from empty tables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg.conninfo import make_conninfo

from dispatcher.config import Settings, set_settings
from dispatcher.db import migrate
from dispatcher.db.pool import close_pool
from dispatcher.embedded import ensure_services

ROOT = Path(__file__).resolve().parent.parent

# Servers first: modules that declare actors connect the broker to REDIS_URL when imported.
_BASE = ensure_services(
    Settings.from_env().with_(home=Path(os.environ.get("DISPATCHER_TEST_HOME", ROOT / ".dispatcher" / "test")))
)
os.environ["DATABASE_URL"] = _BASE.database_url or ""
os.environ["REDIS_URL"] = _BASE.redis_url or ""
set_settings(_BASE)

TABLES = (
    "request_activity",
    "deliveries",
    "request_rejections",
    "community_requests",
    "email_suppressions",
    "device_tokens",
    "resident_settings",
    "residents",
    "resident_tombstones",
    "webhook_events",
    "webhook_quarantine",
    "device_token_claims",
)


def _with_database(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a fresh test database and Redis, installed as the process settings."""
    base = _BASE
    assert base.database_url and base.redis_url
    dbname = f"dispatcher_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    test_settings = base.with_(
        database_url=_with_database(base.database_url, dbname),
        home=tmp_path_factory.mktemp("home"),
    )
    with psycopg.connect(test_settings.database_url) as conn:  # type: ignore[arg-type]
        migrate(conn)
    set_settings(test_settings)
    os.environ["DATABASE_URL"] = test_settings.database_url or ""
    os.environ["REDIS_URL"] = test_settings.redis_url or ""
    try:
        yield test_settings
    finally:
        close_pool()
        set_settings(_BASE)
        with psycopg.connect(base.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the test database, every table emptied first."""
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY CASCADE")
        yield conn


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """A client of the test Redis, flushed before the test."""
    assert settings.redis_url
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The local FCM and SendGrid sandbox, for the whole run."""
    from dispatcher.sandbox.server import SandboxServer

    with SandboxServer(tmp_path_factory.mktemp("sandbox")) as server:
        yield server


@pytest.fixture
def engine(settings: Settings, sandbox: Any, db: psycopg.Connection[tuple[object, ...]],
           redis_client: redis.Redis) -> Iterator[Settings]:
    """Settings pointed at the sandbox, with empty tables, queues, records and no faults."""
    import dramatiq

    import dispatcher.actors  # noqa: F401  (declares the actors on the broker)

    sandbox.clear()
    sandbox.faults.reset()
    configured = sandbox.configure(settings).with_(lease_seconds=5)
    set_settings(configured)
    dramatiq.get_broker().flush_all()
    try:
        yield configured
    finally:
        set_settings(settings)


@pytest.fixture
def worker(engine: Settings) -> Iterator[Any]:
    """A real dramatiq worker (threads in this process) consuming the engine's queues from Redis."""
    import dramatiq

    broker = dramatiq.get_broker()
    running = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
    running.start()
    try:
        yield running
    finally:
        running.stop()
