"""Shared fixtures: a real PostgreSQL database and a real Redis, for the tests that ask for them.

With ``DATABASE_URL`` / ``REDIS_URL`` set (CI points them at the machine's services) those servers are
used; otherwise the embedded ones start under ``.dispatcher/test``, when the first test needs them.
Importing this file starts nothing, so pure tests (area parsing, covers, the contract) run without
servers. Each run gets its own freshly migrated database, dropped at the end, and every test starts
from empty tables.
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
from dispatcher.embedded import embedded_redis_url, ensure_services
from tests.factories import register_agency

#: The relay's fixtures (relay, relay_server) live beside their driver.
pytest_plugins = ["tests.relay_support"]

ROOT = Path(__file__).resolve().parent.parent
_HOME = Path(os.environ.get("DISPATCHER_TEST_HOME", ROOT / ".dispatcher" / "test"))
_EMBEDDED_REDIS = not os.environ.get("REDIS_URL")
if _EMBEDDED_REDIS:
    # Only the address, known before the server runs: test modules that declare actors build the
    # broker (which connects on first use) when collected; the server starts with the first test using it.
    os.environ["REDIS_URL"] = embedded_redis_url(_HOME / "redis")
# Quiet hours off, here and in every worker process a test starts: tests run at any hour of the day and
# expect pushes at once; tests/test_quiet_hours*.py switch them on with explicit clocks.
os.environ["QUIET_HOURS"] = "off"
_UNSTARTED = Settings.from_env().with_(home=_HOME)
set_settings(_UNSTARTED)

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
    "request_responses",
    "request_opt_outs",
)


def _with_database(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def services() -> Settings:
    """The PostgreSQL server and Redis of this run, started here when embedded."""
    base = ensure_services(_UNSTARTED.with_(redis_url=None) if _EMBEDDED_REDIS else _UNSTARTED)
    os.environ["DATABASE_URL"] = base.database_url or ""
    return base


@pytest.fixture(scope="session")
def settings(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a fresh test database and Redis, installed as the process settings."""
    base = services
    assert base.database_url and base.redis_url
    dbname = f"dispatcher_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    database_url = _with_database(base.database_url, dbname)
    test_settings = base.with_(database_url=database_url, home=tmp_path_factory.mktemp("home"))
    with psycopg.connect(database_url) as conn:
        migrate(conn)
        register_agency(conn)  # the factories' agency, whose jurisdiction is the world
    set_settings(test_settings)
    os.environ["DATABASE_URL"] = test_settings.database_url or ""
    os.environ["REDIS_URL"] = test_settings.redis_url or ""
    try:
        yield test_settings
    finally:
        close_pool()
        set_settings(base)
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


@pytest.fixture
def index_db(db: psycopg.Connection[tuple[object, ...]], redis_client: redis.Redis) -> psycopg.Connection[Any]:
    """Empty tables and an empty broker, for tests of the residents' queue."""
    import dramatiq

    dramatiq.get_broker().flush_all()
    return db


@pytest.fixture
def residents_worker(index_db: psycopg.Connection[Any]) -> Iterator[Any]:
    """A real dramatiq worker consuming only the residents' queue, one thread (updates apply in order)."""
    import dramatiq

    from dispatcher.queues import RESIDENTS_QUEUE

    worker = dramatiq.Worker(dramatiq.get_broker(), queues={RESIDENTS_QUEUE}, worker_threads=1,
                             worker_timeout=100)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()

