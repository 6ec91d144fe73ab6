"""Many calls in flight and still exactly once: a drain keeps several batches in flight, never more than
the process's gate allows, and a worker killed mid-way re-sends at most the rows it held in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from dispatcher import fanout
from dispatcher.config import Settings, set_settings
from dispatcher.ledger import Channel
from dispatcher.pipeline import distribute
from tests.factories import add_resident, request_payload

Conn = psycopg.Connection[Any]
INSIDE = (40.015, -105.273)
LEASED = ("SELECT count(*) FROM deliveries WHERE request_id = %s AND channel = 'push' AND status = 'pending'"
          " AND lease_owner IS NOT NULL AND lease_until > now()")


def _town(db: Conn, n: int) -> None:
    for i in range(1, n + 1):
        add_resident(db, i, INSIDE[0] + i * 1e-6, INSIDE[1], tokens=[f"tok-{i}"])


def _leased(db: Conn, request_id: str) -> int:
    row = db.execute(LEASED, (request_id,)).fetchone()
    return int(row[0]) if row else 0


def test_a_drain_keeps_several_batches_in_flight_and_never_more_than_its_gate(
    db: Conn, engine: Settings, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout, "MAX_BATCHES_IN_FLIGHT", {Channel.PUSH: 3, Channel.EMAIL: 3})
    monkeypatch.setattr(fanout, "_gates", {})
    _town(db, 60)
    set_settings(engine.with_(push_batch_size=5))
    sandbox.faults.update("fcm", latency_ms=150)
    distribute(request_payload("flight-1"))
    reports: list[fanout.DrainReport] = []
    draining = threading.Thread(target=lambda: reports.append(fanout.drain("flight-1", Channel.PUSH,
                                                                            budget_seconds=30)))
    most = 0
    draining.start()
    while draining.is_alive():
        most = max(most, _leased(db, "flight-1"))
        time.sleep(0.01)
    gate = next(iter(fanout._gates.values()))
    assert reports and reports[0].finished and reports[0].batches == 12
    assert 2 <= gate.peak <= 3 and gate.running == 0
    assert 5 < most <= 3 * 5, "rows under lease: more than one batch, at most the batches in flight"
    sandbox.flush()
    assert Counter(r["token"] for r in sandbox.records("fcm")) == Counter({f"tok-{i}": 1 for i in range(1, 61)})


def test_a_worker_killed_with_batches_in_flight_re_sends_at_most_those(
    db: Conn, engine: Settings, sandbox: Any
) -> None:
    _town(db, 200)
    sandbox.faults.update("fcm", latency_ms=800)
    distribute(request_payload("killed-1"))
    assert engine.database_url and engine.redis_url and engine.fcm_credentials
    env = {**os.environ, "DATABASE_URL": engine.database_url, "REDIS_URL": engine.redis_url,
           "FCM_ENDPOINT": engine.fcm_endpoint, "FCM_CREDENTIALS": engine.fcm_credentials,
           "LEASE_SECONDS": "60", "PUSH_BATCH_SIZE": "5", "PYTHONWARNINGS": "ignore"}
    script = ("from dispatcher import fanout; from dispatcher.ledger import Channel; "
              "fanout.drain('killed-1', Channel.PUSH, budget_seconds=60)")
    worker = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        started = time.monotonic()
        while _leased(db, "killed-1") == 0 and time.monotonic() - started < 30:
            time.sleep(0.02)
        time.sleep(1.2)  # a first wave answered and recorded, a second one in flight
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    in_flight = _leased(db, "killed-1")
    assert 0 < in_flight <= fanout.MAX_BATCHES_IN_FLIGHT[Channel.PUSH] * 5
    time.sleep(1.0)  # calls the dead worker left reach the sandbox's records
    db.execute("UPDATE deliveries SET lease_until = now() - interval '1 second' WHERE request_id = 'killed-1'"
               " AND status = 'pending'")
    sandbox.faults.update("fcm", latency_ms=0)
    assert fanout.drain("killed-1", Channel.PUSH, budget_seconds=30).finished
    sandbox.flush()
    counts = Counter(r["token"] for r in sandbox.records("fcm"))
    assert set(counts) == {f"tok-{i}" for i in range(1, 201)}
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= in_flight, f"{duplicates} re-sent, {in_flight} rows were in flight at the kill"
