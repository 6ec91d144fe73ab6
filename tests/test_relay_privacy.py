"""No real number leaks anywhere: a scripted conversation (texts both ways, a call, a confirmation) runs
through the relay app, a real worker and the sandbox, a text is forced into the dead letters, and then
every log record, every Redis key and value, every database column but the encrypted one, every API
answer and the metrics are searched for the real numbers and the message bodies."""

from __future__ import annotations

import logging
import time
from typing import Any

import dramatiq
import pytest
import redis

from dispatcher.ops.metrics import registry
from dispatcher.relay import outbox
from dispatcher.relay.actors import send_relay_text
from dispatcher.relay.demo import DEMO_AUTHOR, DEMO_HELPER, run_scripted_conversation
from tests.relay_support import Relay

BODIES = ("saw your dog", "Which entrance", "north gate")


def _needles() -> list[str]:
    return [DEMO_AUTHOR, DEMO_HELPER, DEMO_AUTHOR.lstrip("+"), DEMO_HELPER.lstrip("+"), *BODIES]


def _redis_texts(client: redis.Redis) -> list[str]:
    texts: list[str] = []
    for key in client.scan_iter(count=1000):
        texts.append(key.decode(errors="replace"))
        kind = client.type(key).decode()
        if kind == "string":
            values: list[Any] = [client.get(key)]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = [item for pair in client.hgetall(key).items() for item in pair]
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [member for member, _ in client.zrange(key, 0, -1, withscores=True)]
        else:
            values = []
        texts += [value.decode(errors="replace") if isinstance(value, bytes) else str(value) for value in values]
    return texts


def _database_texts(relay: Relay) -> list[str]:
    texts: list[str] = []
    columns = relay.conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'").fetchall()
    for table, column in columns:
        if (table, column) == ("relay_phones", "number_encrypted"):
            continue
        for (value,) in relay.conn.execute(f'SELECT "{column}"::text FROM "{table}"').fetchall():
            if value is not None:
                texts.append(str(value))
    return texts


def test_no_real_number_or_body_leaks_anywhere(relay: Relay, worker: dramatiq.Worker, redis_client: redis.Redis,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    proof = run_scripted_conversation(relay.conn, relay.sandbox)
    assert proof.ok, proof.leaks
    assert len(proof.received[DEMO_AUTHOR]) >= 4 and len(proof.received[DEMO_HELPER]) >= 3
    # The app's answer to "Contact Author", and the other routes' answers.
    answers = [relay.contact("demo-lost-dog", DEMO_HELPER).text,
               relay.api("POST", "/relay/posts/demo-lost-dog/contact-me/hide").text,
               relay.api("PUT", "/relay/posts/demo-lost-dog/contact-me", {"author_number": DEMO_AUTHOR}).text,
               relay.contact("demo-lost-dog", "+1555").text]
    # One text goes to the dead letters: the provider fails and the message has no retry left.
    phone = relay.conn.execute("SELECT id FROM relay_phones ORDER BY id LIMIT 1").fetchone()
    assert phone is not None
    stuck = outbox.put(relay.conn, int(phone[0]), None, "north gate, again", purpose="relay")
    relay.sandbox.faults.update("twilio", error_rate=1.0, error_status=503)
    send_relay_text.send_with_options(args=(stuck,), max_retries=0)
    _wait_for_dead_letter(redis_client)
    relay.sandbox.faults.reset()
    metrics = __import__("prometheus_client").generate_latest(registry()).decode()
    logs = [record.getMessage() + " " + " ".join(str(v) for v in record.__dict__.values())
            for record in caplog.records]
    assert len(logs) > 0
    places = {"logs": logs, "redis": _redis_texts(redis_client), "database": _database_texts(relay),
              "api answers": answers, "metrics": [metrics]}
    for place, texts in places.items():
        for needle in _needles():
            found = [text[:80] for text in texts if needle in text]
            assert found == [], f"{needle[:4]}… found in {place}"
    assert "dispatcher_relay_webhooks_total" in metrics  # the metrics were there to search


def _wait_for_dead_letter(client: redis.Redis, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(key.endswith(b".XQ") and client.zcard(key) for key in client.scan_iter(match="*relay*")):
        assert time.monotonic() < deadline, "no dead letter"
        time.sleep(0.05)
