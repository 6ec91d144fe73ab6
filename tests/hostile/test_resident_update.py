"""Hostile messages on the "residents" queue, through a real worker over Redis: each one ends cleanly
(applied, or dropped and logged by id and field name), nothing about it stays in Redis (no retry, no dead
letter holding an email, a location or a token), its values reach no log, and the good change sent beside
it is applied."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dramatiq
import psycopg
import pytest
import redis

from dispatcher.broker import RESIDENTS_QUEUE
from dispatcher.preferences import actors

Conn = psycopg.Connection[Any]
SECRET = "secret.person@example.org"
BIG = "y" * (1 << 20)

#: (name, send the hostile message, the clean line logged about it, values that must reach no log);
#: only the first row changes resident 1 (an unknown field is ignored, the change applies).
CASES: list[tuple[str, Callable[[], Any], str, list[str]]] = [
    ("unknown field is ignored", lambda: actors.resident_upserted.send(
        1, 2, 41.0, -73.0, SECRET, nickname="Secret Nick"),
     "resident_upserted: ignored fields the engine does not know: nickname", [SECRET, "Secret Nick", "41.0"]),
    ("missing field", lambda: actors.resident_upserted.send_with_options(
        kwargs={"resident_id": 1, "version": 2, "email": SECRET}),
     "resident_upserted message refused", [SECRET]),
    ("extra positional field", lambda: actors.token_registered.send(1, 2, "tok-x", SECRET),
     "token_registered message refused", [SECRET]),
    ("latitude as text", lambda: actors.resident_upserted.send(1, 2, "north", -73.0, SECRET),
     "resident 1 version 2 dropped: lat must be a number", [SECRET]),
    ("latitude NaN", lambda: actors.resident_upserted.send(1, 2, float("nan"), -73.0, SECRET),
     "dropped: lat must be between", [SECRET]),
    ("id as an email", lambda: actors.resident_deleted.send(SECRET, 2),
     "resident (not an integer) version 2 dropped: id must be an integer", [SECRET]),
    ("version beyond 64 bits", lambda: actors.email_changed.send(1, 2**70, SECRET),
     "dropped: version must be a non-negative 64-bit integer", [SECRET]),
    ("megabyte email", lambda: actors.email_changed.send(1, 2, BIG + "@example.org"),
     "dropped: email is not a valid address", [BIG[:40]]),
    ("NUL in email", lambda: actors.email_changed.send(1, 2, "a\u0000b@example.org"),
     "dropped: email is not a valid address", []),
    ("megabyte locale", lambda: actors.resident_upserted.send(1, 2, 41.0, -73.0, SECRET, "en-" + BIG[:4000]),
     "dropped: locale is not a language tag", [SECRET]),
    ("time zone as a list", lambda: actors.resident_upserted.send(1, 2, 41.0, -73.0, SECRET, "en-US", ["UTC"]),
     "dropped: time_zone is not an IANA time zone", [SECRET]),
    ("camera flag as text", lambda: actors.resident_upserted.send(1, 2, 41.0, -73.0, SECRET, "en-US", "UTC", "no"),
     "dropped: has_camera must be true or false", [SECRET]),
    ("setting as text", lambda: actors.settings_changed.send(1, 2, push="no"),
     "dropped: push must be true or false", []),
    ("quiet hours switch as text", lambda: actors.settings_changed.send(1, 2, quiet_hours="off"),
     "dropped: quiet_hours must be true or false", []),
    ("quiet start as a number", lambda: actors.settings_changed.send(1, 2, quiet_start=2200),
     "dropped: quiet_start must be a time of day", []),
    ("quiet end a megabyte long", lambda: actors.settings_changed.send(1, 2, quiet_end=BIG),
     "dropped: quiet_end must be a time of day", [BIG[:40]]),
    ("quiet start positional", lambda: actors.settings_changed.send(1, 2, None, None, None, None, "22:00", "7:00",
                                                                     SECRET),
     "settings_changed message refused", [SECRET]),
    ("token with NUL", lambda: actors.token_registered.send(1, 2, "tok\u0000"),
     "dropped: push token is malformed", []),
    ("megabyte token", lambda: actors.token_registered.send(1, 2, BIG),
     "dropped: push token is malformed", [BIG[:40]]),
]


def _resident_one(db: Conn) -> tuple[Any, ...] | None:
    return db.execute(
        "SELECT r.lat, r.email, r.locale, r.time_zone, r.has_camera, s.push_enabled"
        " FROM residents AS r LEFT JOIN resident_settings AS s ON s.resident_id = r.id WHERE r.id = 1"
    ).fetchone()


@pytest.mark.parametrize(("name", "send", "logged", "secrets"), CASES, ids=[c[0] for c in CASES])
def test_hostile_resident_message_ends_cleanly_and_keeps_nothing(
    db: Conn, redis_client: redis.Redis, residents_worker: dramatiq.Worker, caplog: pytest.LogCaptureFixture,
    name: str, send: Callable[[], Any], logged: str, secrets: list[str],
) -> None:
    broker = dramatiq.get_broker()
    actors.resident_upserted.send(1, 1, 40.0, -74.0, "one@example.org")
    broker.join(RESIDENTS_QUEUE, timeout=10_000)
    before = _resident_one(db)

    with caplog.at_level(logging.DEBUG):
        send()
        actors.resident_upserted.send(2, 1, 42.0, -72.0, "two@example.org")  # the good change beside it
        broker.join(RESIDENTS_QUEUE, timeout=20_000)

    assert (_resident_one(db) != before) is (name == CASES[0][0])
    assert logged in caplog.text
    assert db.execute("SELECT email FROM residents WHERE id = 2").fetchone() == ("two@example.org",)
    assert db.execute("SELECT count(*) FROM device_tokens").fetchone() == (0,)
    kept = [key for key in redis_client.keys("*") if redis_client.type(key) != b"none"
            and (redis_client.hlen(key) if redis_client.type(key) == b"hash"
                 else redis_client.zcard(key) if redis_client.type(key) == b"zset"
                 else redis_client.llen(key) if redis_client.type(key) == b"list" else 0)]
    assert [k for k in kept if b"residents" in k] == []
    for secret in secrets:
        assert secret not in caplog.text
