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

import psycopg
import pytest
import redis
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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
    "deliveries",
    "request_rejections",
    "community_requests",
    "email_suppressions",
    "device_tokens",
    "resident_settings",
    "residents",
)


def _with_database(url: str, dbname: str) -> str:
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**{k: v for k, v in params.items() if v is not None})


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
