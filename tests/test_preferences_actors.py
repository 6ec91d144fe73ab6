"""The "residents" actors: through a real worker over Redis, and their privacy on failure."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
import psycopg
import pytest

from dispatcher.broker import RESIDENTS_QUEUE
from dispatcher.errors import ResidentUpdateFailed
from dispatcher.preferences import actors

Conn = psycopg.Connection[Any]


def test_main_application_messages_through_a_worker(index_db: Conn, residents_worker: dramatiq.Worker) -> None:
    broker = dramatiq.get_broker()
    actors.resident_upserted.send(1, 1, 40.0, -74.0, "a@example.org", "en-US", "America/New_York", True)
    actors.resident_upserted.send(2, 1, 41.0, -73.0)
    broker.join(RESIDENTS_QUEUE, timeout=10_000)
    actors.settings_changed.send(1, 2, push=False)
    actors.token_registered.send(1, 3, "tok-1")
    actors.email_changed.send(1, 4, "b@example.org")
    actors.resident_upserted.send(1, 1, 0.0, 0.0, "old@example.org")  # a late replay of version 1
    actors.resident_deleted.send(2, 2)
    actors.resident_upserted.send(2, 1, 41.0, -73.0)  # late create after delete
    broker.join(RESIDENTS_QUEUE, timeout=10_000)
    actors.token_removed.send(1, 5, "tok-1")
    broker.join(RESIDENTS_QUEUE, timeout=10_000)

    assert index_db.execute("SELECT id, lat, email, has_camera FROM residents").fetchall() == [
        (1, 40.0, "b@example.org", True)
    ]
    assert index_db.execute("SELECT push_enabled FROM resident_settings").fetchall() == [(False,)]
    assert index_db.execute("SELECT token, retired_reason FROM device_tokens").fetchall() == [("tok-1", "removed")]
    assert index_db.execute("SELECT id FROM resident_tombstones").fetchall() == [(2,)]


def test_failures_carry_ids_never_values(index_db: Conn) -> None:
    secret_token = "fcm-secret-token-value"
    with pytest.raises(ResidentUpdateFailed) as failure:
        actors.token_registered(404, 1, secret_token)  # unknown resident: worth a retry
    text = str(failure.value)
    assert "404" in text and "UnknownResident" in text and secret_token not in text
    assert failure.value.__suppress_context__  # the traceback kept with a retry shows no database detail


def test_malformed_change_is_dropped_and_logged_without_values(
    index_db: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="dispatcher.preferences.actors"):
        actors.resident_upserted(5, 1, 95.123456, 10.654321, "x@example.org")
    assert "resident 5 version 1 dropped" in caplog.text
    assert "95.123456" not in caplog.text and "x@example.org" not in caplog.text
    assert index_db.execute("SELECT count(*) FROM residents").fetchone() == (0,)


def test_dramatiq_logs_messages_by_id_only(caplog: pytest.LogCaptureFixture) -> None:
    message = actors.resident_upserted.message(7, 1, 40.123456, -74.654321, "who@example.org")
    with caplog.at_level(logging.ERROR):
        logging.getLogger("dramatiq.worker.WorkerThread").error(
            "Failed to process message %s with unhandled exception.", message
        )
    assert f"resident_upserted#{message.message_id}" in caplog.text
    assert "40.123456" not in caplog.text and "who@example.org" not in caplog.text
