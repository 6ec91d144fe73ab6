"""Who owns a device token: ordered per token, so a redelivered old registration never takes it back."""

from __future__ import annotations

import io
from typing import Any

import psycopg

from dispatcher.preferences import updates
from dispatcher.preferences.importing import import_residents

Conn = psycopg.Connection[Any]


def _owner(db: Conn, token: str) -> tuple[Any, ...] | None:
    return db.execute("SELECT resident_id, retired_reason FROM device_tokens WHERE token = %s", (token,)).fetchone()


def _two_residents(db: Conn) -> None:
    updates.upsert_resident(db, 1, version=1, lat=40.0, lng=-74.0, email=None)
    updates.upsert_resident(db, 2, version=1, lat=40.0, lng=-74.0, email=None)


def test_a_redelivered_old_registration_does_not_steal_the_token_back(db: Conn) -> None:
    _two_residents(db)
    assert updates.register_token(db, 1, "tok-t", version=100)
    assert updates.register_token(db, 2, "tok-t", version=5)  # the device changed hands

    assert not updates.register_token(db, 1, "tok-t", version=100)  # A's message, redelivered
    assert not updates.register_token(db, 1, "tok-t", version=60)  # an even older one of A's
    assert _owner(db, "tok-t") == (2, None)

    assert updates.remove_token(db, 2, "tok-t", version=6)  # B signs out: it works
    assert _owner(db, "tok-t") == (2, "removed")
    assert not updates.register_token(db, 1, "tok-t", version=100)

    assert updates.register_token(db, 1, "tok-t", version=101)  # A signs in again, for real
    assert _owner(db, "tok-t") == (1, None)


def test_an_old_removal_of_another_owner_changes_nothing(db: Conn) -> None:
    _two_residents(db)
    assert updates.register_token(db, 1, "tok-u", version=10)
    assert updates.register_token(db, 2, "tok-u", version=3)
    assert not updates.remove_token(db, 1, "tok-u", version=11)  # A no longer owns it
    assert _owner(db, "tok-u") == (2, None)


def test_a_reimported_old_file_does_not_steal_a_token_back(db: Conn) -> None:
    _two_residents(db)
    assert updates.register_token(db, 1, "tok-v", version=100)
    assert updates.register_token(db, 2, "tok-v", version=5)
    report = import_residents(db, io.StringIO("id,lat,lng,push_tokens,version\n1,40.0,-74.0,tok-v,100\n"),
                              fmt="csv")
    assert report.rejected == []
    assert _owner(db, "tok-v") == (2, None)


def test_deleting_a_resident_deletes_their_claims(db: Conn) -> None:
    _two_residents(db)
    assert updates.register_token(db, 1, "tok-w", version=2)
    assert updates.delete_resident(db, 1, version=3)
    assert db.execute("SELECT count(*) FROM device_token_claims").fetchone() == (0,)
