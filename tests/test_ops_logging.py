"""Logs are JSON, carry the request id, and never an email, a device token or a coordinate."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis

from dispatcher.actors import broker
from dispatcher.ops.logging import REDACTED, json_handler, redact
from dispatcher.queues import RESIDENTS_QUEUE
from tests.factories import request_payload

FCM_TOKEN = ("dVq3X0v8Rk2mQz7N4hJ1aB:APA91bH3xk2LmQ9vT7pR5sW1nC8eD4fG6hJ0kL2mN4pQ6rS8tU0vW2xY4zA6bC8dE0fG2hI4jK"
             "6lM8nO0pQ2rS4tU6vW8xY0zA2bC4dE6fG8hI0jK2lM4nO6pQ8rS0tU2")
DEMO_TOKEN = "demo-token-1234-0:3fa2b9c1d2e3f4a5"

log = logging.getLogger("tests.ops.actor")


@pytest.mark.parametrize(("text", "secret"), [
    ("mail to jo.park+pd@pd.example.org failed", "jo.park+pd@pd.example.org"),
    (f"token {FCM_TOKEN} unregistered", FCM_TOKEN),
    (f"token {DEMO_TOKEN} unregistered", DEMO_TOKEN),
    ("area [[-105.28, 40.01], [-105.267, 40.02]]", "-105.28, 40.01"),
    ("resident at 40.015,-105.2705", "40.015,-105.2705"),
    ("{'lat': 40.015, 'lng': -105.27}", "40.015"),
    ("lng=-105.2705 lat=40.01", "-105.2705"),
    ("{'investigator': {'name': 'Det. Jo Park', 'phone': '+1 555 0100'}}", "Jo Park"),
    ('{"investigator": {"phone": "+1 (555) 010-0100"}}', "555"),
    ("call +44 20 7946 0958 now", "7946"),
])
def test_redact_scrubs_personal_data(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned and REDACTED in cleaned


@pytest.mark.parametrize("text", [
    "request req-2026-0042 targeted in 1.25 s: 5000 rows",
    "message 03ab613e-b6b0-4f5c-b93c-85cc9b190ab0 retried 3 times",
    "claimed batch of 500 for push",
])
def test_redact_keeps_operational_text(text: str) -> None:
    assert redact(text) == text


@dramatiq.actor(queue_name=RESIDENTS_QUEUE, max_retries=0)
def ops_test_leaky(payload: dict[str, Any], token: str) -> None:
    """Logs carelessly and fails: dramatiq then logs the message's arguments with the traceback."""
    log.warning("handling for %s with %s", payload["investigator"]["email"], token,
                extra={"email": payload["investigator"]["email"], "batch": 3, "note": f"at {payload['area']}"})
    raise RuntimeError(f"could not reach {payload['investigator']['email']} at {payload['area']['coordinates']}")


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = json_handler(buffer)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)


def test_worker_logs_are_json_with_request_id_and_no_personal_data(redis_client: redis.Redis,
                                                                      captured: io.StringIO) -> None:
    payload = request_payload("req-logs")
    worker = dramatiq.Worker(broker, worker_threads=1, queues={RESIDENTS_QUEUE}, worker_timeout=100)
    worker.start()
    try:
        ops_test_leaky.send(payload, DEMO_TOKEN)
        deadline = time.monotonic() + 10
        while redis_client.zcard(f"dispatcher:{RESIDENTS_QUEUE}.XQ") == 0:
            assert time.monotonic() < deadline, "the message was never dead-lettered"
            time.sleep(0.05)
    finally:
        worker.stop()

    output = captured.getvalue()
    records = [json.loads(line) for line in output.splitlines()]
    from_message = [r for r in records if r["logger"] in ("tests.ops.actor", "dramatiq.worker.WorkerThread")]
    assert len(from_message) >= 2, output
    assert all(r["request_id"] == "req-logs" for r in from_message)
    actor_line = next(r for r in from_message if r["logger"] == "tests.ops.actor")
    assert actor_line["batch"] == 3 and actor_line["email"] == REDACTED
    failure = next(r for r in from_message if r["logger"] == "dramatiq.worker.WorkerThread")
    assert "ops_test_leaky" in failure["message"] and "RuntimeError" in failure["exception"]
    retries = [r for r in records if r["logger"].startswith("dramatiq.middleware.retries")]
    assert retries and all(r["request_id"] == "req-logs" for r in retries)
    for secret in ("jpark@pd.example", DEMO_TOKEN, "-105.28", "40.01", "-105.267", "40.02", "Jo Park", "555 0100",
                   "5550100"):
        assert secret not in output, secret
