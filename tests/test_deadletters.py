"""Dead letters: a message that exhausts its retries lands in the dead-letter queue with a reason
(and no personal data), `dispatcher dead-letters` lists it and can put it back."""

from __future__ import annotations

import json
import time
from typing import Any

import dramatiq
import redis
from typer.testing import CliRunner

from dispatcher import actors  # noqa: F401  (installs the dead-letter middleware)
from dispatcher.cli import app
from dispatcher.config import Settings
from dispatcher.deadletters import REASONS_KEY, list_dead_letters
from dispatcher.errors import DispatcherError

QUEUE = "deadletter_test"
SECRET_EMAIL = "resident.one@example.test"
_state: dict[str, Any] = {"fail": True, "done": []}


class ProviderRejected(DispatcherError):
    """A failure whose message quotes personal data, as a driver's or provider's error might."""


@dramatiq.actor(queue_name=QUEUE, max_retries=1, min_backoff=10, max_backoff=20)
def always_fails(request_id: str) -> None:
    if _state["fail"]:
        raise ProviderRejected(f"provider refused {SECRET_EMAIL} at 40.0151, -105.2731")
    _state["done"].append(request_id)


def _wait(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_exhausted_message_is_dead_lettered_with_a_clean_reason_and_can_be_retried(
    engine: Settings, worker: Any, redis_client: redis.Redis
) -> None:
    broker = dramatiq.get_broker()
    _state.update(fail=True, done=[])
    always_fails.send("req-dead-1")
    _wait(lambda: list_dead_letters(broker, QUEUE))
    [letter] = list_dead_letters(broker, QUEUE)
    assert (letter.actor, letter.request_id, letter.retries) == ("always_fails", "req-dead-1", 1)
    assert letter.exception == "ProviderRejected"
    assert letter.detail is not None and "provider refused" in letter.detail
    for key in redis_client.scan_iter("*"):
        kind = redis_client.type(key)
        values: list[Any] = []
        if kind == b"hash":
            values = list(redis_client.hgetall(key).values())
        elif kind == b"string":
            values = [redis_client.get(key)]
        for value in values:
            assert SECRET_EMAIL.encode() not in value and b"40.0151" not in value, key

    runner = CliRunner()
    listed = runner.invoke(app, ["dead-letters", "--queue", QUEUE, "--json"])
    assert listed.exit_code == 0, listed.output
    assert [d["message_id"] for d in json.loads(listed.output)] == [letter.message_id]

    _state["fail"] = False
    missing = runner.invoke(app, ["dead-letters", "--queue", QUEUE, "--retry", "no-such-id"])
    assert missing.exit_code == 2
    retried = runner.invoke(app, ["dead-letters", "--queue", QUEUE, "--retry", letter.message_id])
    assert retried.exit_code == 0 and "re-enqueued 1" in retried.output
    _wait(lambda: _state["done"] == ["req-dead-1"])
    assert list_dead_letters(broker, QUEUE) == []
    assert not redis_client.hexists(REASONS_KEY, letter.redis_id)


def test_retry_all_puts_back_every_dead_letter(engine: Settings, worker: Any) -> None:
    broker = dramatiq.get_broker()
    _state.update(fail=True, done=[])
    for i in range(3):
        always_fails.send(f"req-many-{i}")
    _wait(lambda: len(list_dead_letters(broker, QUEUE)) == 3)
    _state["fail"] = False
    result = CliRunner().invoke(app, ["dead-letters", "--retry-all"])
    assert result.exit_code == 0 and "re-enqueued 3" in result.output
    _wait(lambda: sorted(_state["done"]) == [f"req-many-{i}" for i in range(3)])
