"""`dispatcher status` against a live dramatiq worker and a request in flight."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dramatiq
import pytest
import redis
from typer.testing import CliRunner

from dispatcher import actors, lifecycle
from dispatcher.actors import broker
from dispatcher.cli import app
from dispatcher.contract import parse_request
from dispatcher.db.types import Conn
from dispatcher.lifecycle import State
from dispatcher.ops.status import collect_status, render_status
from dispatcher.queues import RESIDENTS_QUEUE
from tests.factories import request_payload


@dramatiq.actor(queue_name=RESIDENTS_QUEUE, max_retries=0)
def ops_test_always_fails(request_id: str) -> None:
    """Dead-letters its message at once: a real dead letter for the status to count."""
    raise RuntimeError(f"failing on purpose for {request_id}")


def _request_in_flight(db: Conn, request_id: str = "req-ops-1") -> None:
    stored = lifecycle.accept(db, parse_request(request_payload(request_id)))
    assert stored.state is State.ACCEPTED
    assert lifecycle.transition(db, request_id, State.TARGETING, from_={State.ACCEPTED})
    assert lifecycle.transition(db, request_id, State.SENDING, from_={State.TARGETING})
    db.execute("UPDATE community_requests SET targeted_at = now() - interval '2 minutes' WHERE id = %s",
               (request_id,))
    rows = (
        [("push", "pending")] * 40 + [("push", "sent")] * 30 + [("push", "failed")] * 2
        + [("push", "skipped")] * 5 + [("email", "pending")] * 10 + [("email", "sent")] * 12
        + [("email", "suppressed")] * 3 + [("email", "skipped")] * 4
    )
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO deliveries (request_id, channel, resident_id, status) VALUES (%s, %s, %s, %s)",
            [(request_id, channel, i, status) for i, (channel, status) in enumerate(rows)],
        )
    # Targeting writes the ledger in the transaction that stamps targeted_at: same clock.
    db.execute("UPDATE deliveries d SET updated_at = c.targeted_at FROM community_requests c"
               " WHERE c.id = d.request_id AND d.status IN ('pending', 'skipped')")


@pytest.fixture
def live_worker(redis_client: redis.Redis) -> Iterator[dramatiq.Worker]:
    """A real dramatiq worker on the residents queue (push and email are left for the queues to show)."""
    worker = dramatiq.Worker(broker, worker_threads=2, queues={RESIDENTS_QUEUE}, worker_timeout=100)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def _wait_for(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_status_shows_queues_workers_and_a_request_in_flight(db: Conn, redis_client: redis.Redis,
                                                               live_worker: dramatiq.Worker) -> None:
    _request_in_flight(db)
    for _ in range(3):
        actors.send_push.send("req-ops-1")
    actors.send_email.send_with_options(args=("req-ops-1",), delay=120_000)
    ops_test_always_fails.send("req-ops-1")
    _wait_for(lambda: redis_client.zcard("dispatcher:residents.XQ") == 1)
    second = int(time.time())
    for s in range(second - 1, second + 3):  # whichever second the snapshot falls in, the last one used 2500
        redis_client.set(f"dispatcher:ratelimit:push:{s}", 2500)
    redis_client.set("dispatcher:ratelimit:email:pause_until", str(time.time() + 30))

    snapshot = json.loads(json.dumps(collect_status(conn=db)))

    queues = {q["queue"]: q for q in snapshot["queues"]}
    assert queues["push"] == {"queue": "push", "ready": 3, "delayed": 0, "in_flight": 0, "dead": 0}
    assert queues["email"]["delayed"] == 1 and queues["email"]["ready"] == 0
    assert queues["residents"]["dead"] == 1 and queues["residents"]["ready"] == 0
    assert snapshot["workers"]["alive"] >= 1 and snapshot["workers"]["last_heartbeat_age_s"] < 10

    assert snapshot["requests_by_state"]["sending"] == 1
    [request] = snapshot["requests"]
    assert request["id"] == "req-ops-1" and request["state"] == "sending"
    assert request["recipients"]["push"] == {"pending": 40, "sent": 30, "failed": 2, "skipped": 5,
                                             "suppressed": 0, "expired": 0}
    assert request["recipients"]["email"] == {"pending": 10, "sent": 12, "failed": 0, "skipped": 4,
                                              "suppressed": 3, "expired": 0}
    # Rows closed in the last minute, skipped-at-targeting rows excluded: push 32, email 15.
    assert request["rate_per_s"] == {"push": round(32 / 60, 2), "email": round(15 / 60, 2)}
    eta = datetime.fromisoformat(request["eta"])
    now = datetime.fromisoformat(snapshot["generated_at"])
    assert timedelta(seconds=40 / (32 / 60) - 5) < eta - now < timedelta(seconds=40 / (32 / 60) + 5)
    assert request["overdue"] is False

    limits = {u["channel"]: u for u in snapshot["rate_limits"]}
    assert limits["push"]["used_last_second"] == 2500 and limits["push"]["utilisation"] > 0
    assert 25 < limits["email"]["paused_for_s"] <= 30


def test_a_request_stuck_before_sending_is_overdue(db: Conn, redis_client: redis.Redis) -> None:
    lifecycle.accept(db, parse_request(request_payload("req-stuck")))
    db.execute("UPDATE community_requests SET accepted_at = now() - interval '30 minutes'")

    [request] = collect_status(conn=db)["requests"]

    assert request["state"] == "accepted" and request["overdue"] is True and request["eta"] is None


def test_cli_status_json_and_table(db: Conn, redis_client: redis.Redis) -> None:
    _request_in_flight(db, "req-cli")
    runner = CliRunner()

    result = runner.invoke(app, ["status", "--json"])

    assert result.exit_code == 0, result.output
    snapshot = json.loads(result.stdout)
    assert [r["id"] for r in snapshot["requests"]] == ["req-cli"]
    assert {q["queue"] for q in snapshot["queues"]} == {
        "requests", "requests.urgent", "push", "push.urgent", "email", "email.urgent", "residents"}

    from rich.console import Console

    console = Console(record=True, width=140)
    render_status(snapshot, console)
    text = console.export_text()
    assert "req-cli" in text and "Queues" in text and "Provider rate limits" in text
    assert datetime.fromisoformat(snapshot["generated_at"]).tzinfo == UTC


def test_watch_refreshes_tables_and_prints_json_lines(db: Conn, redis_client: redis.Redis,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from dispatcher.ops.status import watch_status

    _request_in_flight(db, "req-watch")
    watch_status(Console(record=True, width=140), interval=0, as_json=True, iterations=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(json.loads(line)["requests"][0]["id"] == "req-watch" for line in lines)

    console = Console(record=True, width=140, force_terminal=True)
    watch_status(console, interval=0, iterations=2)
    assert "req-watch" in console.export_text()
