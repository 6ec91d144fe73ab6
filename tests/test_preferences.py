"""Incremental updates of the resident index and the last-moment eligibility check."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from dispatcher.errors import InvalidResidentUpdate, UnknownResident
from dispatcher.preferences import eligibility, updates
from dispatcher.preferences.eligibility import EmailTarget

Conn = psycopg.Connection[Any]


def _resident(conn: Conn, resident_id: int, version: int = 1, email: str | None = None, **kw: Any) -> bool:
    return updates.upsert_resident(
        conn, resident_id, version=version, lat=kw.pop("lat", 48.85), lng=kw.pop("lng", 2.35),
        email=email if email is not None else f"r{resident_id}@example.org", **kw,
    )


def _request(conn: Conn, request_id: str = "req-1") -> str:
    conn.execute(
        "INSERT INTO community_requests (id, payload, payload_sha256, state, published_at, respond_until)"
        " VALUES (%s, '{}', 'x', 'sending', now(), now() + interval '60 days')",
        (request_id,),
    )
    return request_id


# --- ordering and idempotence -------------------------------------------------------------------

def test_upsert_is_idempotent_and_ignores_older_versions(db: Conn) -> None:
    assert _resident(db, 1, version=2, lat=10.0, lng=10.0)
    assert not _resident(db, 1, version=2, lat=10.0, lng=10.0)  # replay
    assert not _resident(db, 1, version=1, lat=20.0, lng=20.0)  # late, older
    assert db.execute("SELECT lat, version FROM residents").fetchone() == (10.0, 2)
    assert _resident(db, 1, version=3, lat=30.0, lng=30.0)
    row = db.execute("SELECT lat, cell FROM residents").fetchone()
    assert row == (30.0, updates.resident_cell(30.0, 30.0))


def test_a_late_profile_update_does_not_undo_a_newer_email_change(db: Conn) -> None:
    _resident(db, 1, version=1, email="first@example.org")
    assert updates.change_email(db, 1, version=3, email="third@example.org")
    # Version 2 arrives late: its location is news (profile was at 1), its email is not (email at 3).
    assert _resident(db, 1, version=2, email="second@example.org", lat=1.0, lng=1.0)
    assert db.execute("SELECT lat, email FROM residents").fetchone() == (1.0, "third@example.org")
    assert not updates.change_email(db, 1, version=3, email="third@example.org")


def test_settings_are_ordered_per_setting(db: Conn) -> None:
    _resident(db, 1)
    assert updates.change_settings(db, 1, version=5, push=False)
    # An older message about another setting still applies; an older one about push does not.
    assert updates.change_settings(db, 1, version=4, community_requests=False, push=True)
    assert not updates.change_settings(db, 1, version=4, community_requests=False, push=True)
    row = db.execute(
        "SELECT community_requests, push_enabled, email_enabled, version FROM resident_settings"
    ).fetchone()
    assert row == (False, False, True, 5)


def test_changes_for_an_unknown_resident_ask_for_a_retry(db: Conn) -> None:
    with pytest.raises(UnknownResident):
        updates.change_settings(db, 99, version=1, push=False)
    with pytest.raises(UnknownResident):
        updates.register_token(db, 99, "tok", version=1)


def test_malformed_updates_name_the_field_not_the_value(db: Conn) -> None:
    with pytest.raises(InvalidResidentUpdate, match="lat") as err:
        _resident(db, 1, lat=123.456)
    assert "123" not in str(err.value)
    with pytest.raises(InvalidResidentUpdate, match="email"):
        _resident(db, 1, email="no at sign")
    with pytest.raises(InvalidResidentUpdate, match="time_zone"):
        _resident(db, 1, time_zone="Nowhere/Land")


def test_tokens_registered_removed_and_replayed_in_any_order(db: Conn) -> None:
    _resident(db, 1)
    assert updates.register_token(db, 1, "tok-a", version=2)
    assert not updates.register_token(db, 1, "tok-a", version=2)
    assert updates.remove_token(db, 1, "tok-a", version=3)
    assert not updates.register_token(db, 1, "tok-a", version=2)  # late register stays removed
    assert db.execute("SELECT retired_reason FROM device_tokens").fetchone() == ("removed",)
    # A removal that arrives before its registration still wins over the older registration.
    assert updates.remove_token(db, 1, "tok-b", version=5)
    assert not updates.register_token(db, 1, "tok-b", version=4)
    # A newer registration brings a removed token back.
    assert updates.register_token(db, 1, "tok-a", version=6)
    active = db.execute("SELECT token FROM device_tokens WHERE retired_at IS NULL").fetchall()
    assert active == [("tok-a",)]


# --- deletion -----------------------------------------------------------------------------------

def test_delete_removes_personal_data_and_blocks_older_messages(db: Conn) -> None:
    _resident(db, 1, version=1)
    updates.change_settings(db, 1, version=2, push=False)
    updates.register_token(db, 1, "tok-1", version=3)
    other = "r2@example.org"
    _resident(db, 2, version=1, email=other)
    request_id = _request(db)
    db.execute(
        "INSERT INTO deliveries (request_id, channel, resident_id, status) VALUES"
        " (%(r)s, 'push', 1, 'pending'), (%(r)s, 'email', 1, 'sent'), (%(r)s, 'email', 2, 'pending')",
        {"r": request_id},
    )

    assert updates.delete_resident(db, 1, version=4)
    assert not updates.delete_resident(db, 1, version=4)  # replay

    for table, column in (("residents", "id"), ("resident_settings", "resident_id"),
                          ("device_tokens", "resident_id")):
        assert db.execute(f"SELECT count(*) FROM {table} WHERE {column} = 1").fetchone() == (0,)
    assert db.execute("SELECT id, version FROM resident_tombstones").fetchall() == [(1, 4)]
    ledger = db.execute(
        "SELECT channel, resident_id, status, reason FROM deliveries ORDER BY resident_id, channel"
    ).fetchall()
    assert ledger == [("email", 1, "sent", None), ("push", 1, "skipped", "resident_deleted"),
                      ("email", 2, "pending", None)]

    # Late, older messages cannot bring the resident or their data back.
    assert not _resident(db, 1, version=3)
    assert not updates.register_token(db, 1, "tok-1", version=3)
    assert not updates.change_email(db, 1, version=2, email="x@example.org")
    assert db.execute("SELECT count(*) FROM residents WHERE id = 1").fetchone() == (0,)
    # A newer creation does.
    assert _resident(db, 1, version=5)
    assert db.execute("SELECT count(*) FROM resident_tombstones").fetchone() == (0,)


def test_delete_before_create_and_older_delete_after_newer_update(db: Conn) -> None:
    assert updates.delete_resident(db, 7, version=2)
    assert not _resident(db, 7, version=1)
    _resident(db, 8, version=5)
    assert not updates.delete_resident(db, 8, version=4)
    assert db.execute("SELECT count(*) FROM residents WHERE id = 8").fetchone() == (1,)


# --- eligibility at the last moment -------------------------------------------------------------

def test_push_eligibility_gives_tokens_or_a_reason(db: Conn) -> None:
    request_id = _request(db)
    for rid in (1, 2, 3, 4, 5):
        _resident(db, rid, has_camera=rid == 1)
        updates.register_token(db, rid, f"tok-{rid}", version=2)
    updates.register_token(db, 1, "tok-1b", version=3)
    updates.change_settings(db, 2, version=3, community_requests=False)   # off after targeting
    updates.change_settings(db, 3, version=3, push=False)
    eligibility.retire_tokens(db, {"tok-4": "unregistered"})              # FCM said it is dead
    updates.delete_resident(db, 5, version=9)

    targets, skipped = eligibility.eligible_push_targets(db, request_id, [1, 2, 3, 4, 5, 6, 1])

    assert set(targets) == {1}
    assert sorted(targets[1].tokens) == ["tok-1", "tok-1b"] and targets[1].has_camera
    assert skipped == {2: "community_requests_off", 3: "push_off", 4: "no_active_token",
                       5: "resident_deleted", 6: "resident_deleted"}


def test_email_eligibility_gives_targets_or_a_reason(db: Conn) -> None:
    request_id = _request(db)
    _resident(db, 1, email="One@Example.org", locale="de-DE", time_zone="Europe/Berlin", has_camera=True)
    _resident(db, 2)
    _resident(db, 3)
    _resident(db, 4)
    updates.change_email(db, 4, version=2, email=None)
    _resident(db, 5, email="Bounced@Example.org")
    updates.change_settings(db, 2, version=2, email=False)
    updates.change_settings(db, 3, version=2, community_requests=False, email=True)
    assert eligibility.suppress_emails(db, {"bounced@example.ORG": "bounce"}) == 1
    assert eligibility.suppress_emails(db, {"BOUNCED@example.org": "spam_report"}) == 0

    targets, skipped = eligibility.eligible_email_targets(db, request_id, [1, 2, 3, 4, 5])

    assert targets == {1: EmailTarget("One@Example.org", "de-DE", "Europe/Berlin", True)}
    assert skipped == {2: "email_off", 3: "community_requests_off", 4: "no_email", 5: "email_suppressed"}


def test_retire_tokens_is_idempotent_and_sticky(db: Conn) -> None:
    _resident(db, 1)
    updates.register_token(db, 1, "tok", version=2)
    assert eligibility.retire_tokens(db, {"tok": "unregistered", "unknown": "invalid"}) == 1
    assert eligibility.retire_tokens(db, {"tok": "unregistered"}) == 0
    # FCM never revives a token: a newer registration does not un-retire a provider retirement.
    updates.register_token(db, 1, "tok", version=3)
    assert db.execute("SELECT retired_reason FROM device_tokens").fetchone() == ("unregistered",)
