"""Migrations build the schema from an empty database and are idempotent."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.config import Settings, get_settings, set_settings
from dispatcher.db import migrate
from dispatcher.db.migrate import available_migrations
from tests.conftest import _with_database


@contextlib.contextmanager
def _empty_database(settings: Settings) -> Iterator[str]:
    assert settings.database_url
    name = f"dispatcher_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(settings.database_url, name)
    finally:
        with psycopg.connect(settings.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {str(r[0]) for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_read_only_commands_leave_the_schema_alone_and_db_migrate_builds_it(settings: Settings) -> None:
    runner = CliRunner()
    with _empty_database(settings) as url:
        previous = get_settings()
        set_settings(settings.with_(database_url=url))
        try:
            runner.invoke(app, ["status", "--json"])  # fails on the missing tables; must not create them
            assert _tables(url) == set()
            result = runner.invoke(app, ["db", "migrate"])
            assert result.exit_code == 0, result.output
        finally:
            set_settings(previous)
        assert "schema_migrations" in _tables(url) and "deliveries" in _tables(url)


def test_migrations_from_empty_database_then_noop(settings: Settings) -> None:
    with _empty_database(settings) as url:
        with psycopg.connect(url) as conn:
            applied = migrate(conn)
            assert applied == [n for n, _ in available_migrations()]
            assert migrate(conn) == []
        assert {"residents", "resident_settings", "device_tokens", "community_requests",
                "deliveries", "email_suppressions", "schema_migrations"} <= _tables(url)


def test_ledger_is_unique_per_request_resident_channel(db: psycopg.Connection[tuple[object, ...]]) -> None:
    db.execute(
        "INSERT INTO community_requests (id, payload, payload_sha256, state, published_at, respond_until)"
        " VALUES ('r1', '{}', 'x', 'accepted', now(), now() + interval '60 days')"
    )
    db.execute("INSERT INTO deliveries (request_id, channel, resident_id) VALUES ('r1', 'push', 1)")
    try:
        db.execute("INSERT INTO deliveries (request_id, channel, resident_id) VALUES ('r1', 'push', 1)")
    except psycopg.errors.UniqueViolation:
        pass
    else:
        raise AssertionError("a second ledger row for the same request, resident and channel was accepted")
