"""Migrations build the schema from an empty database and are idempotent."""

from __future__ import annotations

import uuid

import psycopg

from dispatcher.config import Settings
from dispatcher.db import migrate
from dispatcher.db.migrate import available_migrations
from tests.conftest import _with_database


def test_migrations_from_empty_database_then_noop(settings: Settings) -> None:
    assert settings.database_url
    name = f"dispatcher_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.database_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(_with_database(settings.database_url, name)) as conn:
            applied = migrate(conn)
            assert applied == [n for n, _ in available_migrations()]
            assert migrate(conn) == []
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                ).fetchall()
            }
            assert {"residents", "resident_settings", "device_tokens", "community_requests",
                    "deliveries", "email_suppressions", "schema_migrations"} <= tables
    finally:
        with psycopg.connect(settings.database_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
