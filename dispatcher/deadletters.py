"""Dead letters: messages that exhausted their retries, why, and putting them back.

dramatiq's Redis broker moves a message that failed for good to ``<ns>:<queue>.XQ`` (a sorted set of
ids by time) and ``<ns>:<queue>.XQ.msgs`` (id → message), and keeps it seven days. Its Retries
middleware stores the formatted traceback in the message's options; exception messages can quote
data (a driver error echoing a value), so :class:`DeadLetterReasons` scrubs every traceback before the
message is written back to Redis and keeps, per dead message, a short reason: the exception class and
its redacted message. ``dispatcher dead-letters`` lists them and retries one or all.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from dispatcher.ops.logging import redact

#: Redis hash: redis message id → JSON reason of a dead-lettered message.
REASONS_KEY = "dispatcher:deadletters:reasons"
#: The part of a traceback kept in a message's options (its end says what failed).
TRACEBACK_CHARS = 2000
_DETAIL_CHARS = 300


def describe_error(error: BaseException) -> dict[str, str]:
    """The class and the redacted, shortened message of an exception (no personal data)."""
    return {"exception": type(error).__name__, "detail": redact(str(error))[:_DETAIL_CHARS]}


class DeadLetterReasons(Middleware):
    """Scrub tracebacks in retried messages; remember why a message was dead-lettered."""

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        tb = message.options.get("traceback")
        if isinstance(tb, str):
            message.options["traceback"] = redact(tb)[-TRACEBACK_CHARS:]

    def after_process_message(self, broker: dramatiq.Broker, message: MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        if exception is None or not message.failed:
            return
        redis_id = message.options.get("redis_message_id")
        client = getattr(broker, "client", None)
        if not redis_id or client is None:
            return
        reason = {**describe_error(exception), "at": time.time(), "retries": message.options.get("retries", 0)}
        with contextlib.suppress(Exception):  # the message is dead-lettered either way; only the reason is lost
            client.hset(REASONS_KEY, redis_id, json.dumps(reason))


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message, described with ids only."""

    queue: str
    redis_id: str
    message_id: str
    actor: str
    request_id: str | None
    retries: int
    dead_at: float
    exception: str | None
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _namespace(broker: Any) -> str:
    return str(getattr(broker, "namespace", "dispatcher"))


def _xq(broker: Any, queue: str) -> tuple[str, str]:
    key = f"{_namespace(broker)}:{queue}.XQ"
    return key, key + ".msgs"


def _request_id(message: dramatiq.Message[Any]) -> str | None:
    value = message.args[0] if message.args else None
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


def _queues(broker: Any, queue: str | None) -> list[str]:
    return [queue] if queue else sorted(broker.get_declared_queues())


def list_dead_letters(broker: Any, queue: str | None = None) -> list[DeadLetter]:
    """Dead-lettered messages of one queue (or every declared queue), oldest first."""
    client = broker.client
    found: list[DeadLetter] = []
    for name in _queues(broker, queue):
        ids_key, msgs_key = _xq(broker, name)
        for raw_id, score in client.zrange(ids_key, 0, -1, withscores=True):
            redis_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            data = client.hget(msgs_key, redis_id)
            if data is None:
                continue
            message = dramatiq.Message.decode(data)
            raw_reason = client.hget(REASONS_KEY, redis_id)
            reason = json.loads(raw_reason) if raw_reason else {}
            if not reason and isinstance(message.options.get("traceback"), str):
                last = message.options["traceback"].strip().splitlines()[-1:]
                reason = {"exception": None, "detail": redact(last[0])[:_DETAIL_CHARS] if last else None}
            found.append(DeadLetter(
                queue=name, redis_id=redis_id, message_id=message.message_id, actor=message.actor_name,
                request_id=_request_id(message), retries=int(message.options.get("retries", 0)),
                dead_at=float(score) / 1000.0, exception=reason.get("exception"), detail=reason.get("detail"),
            ))
    return sorted(found, key=lambda d: d.dead_at)


def retry_dead_letter(broker: Any, letter: DeadLetter) -> None:
    """Enqueue a dead letter again with fresh retries, and remove it from the dead-letter queue."""
    client = broker.client
    ids_key, msgs_key = _xq(broker, letter.queue)
    data = client.hget(msgs_key, letter.redis_id)
    if data is None:
        return
    message = dramatiq.Message.decode(data)
    options = {k: v for k, v in message.options.items()
               if k not in {"retries", "traceback", "requeue_timestamp", "redis_message_id", "eta"}}
    fresh: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=letter.queue, actor_name=message.actor_name, args=message.args, kwargs=message.kwargs,
        options=options, message_id=message.message_id, message_timestamp=int(time.time() * 1000))
    broker.enqueue(fresh)
    pipe = client.pipeline()
    pipe.zrem(ids_key, letter.redis_id)
    pipe.hdel(msgs_key, letter.redis_id)
    pipe.hdel(REASONS_KEY, letter.redis_id)
    pipe.execute()


def retry_dead_letters(broker: Any, *, queue: str | None = None, message_id: str | None = None) -> int:
    """Retry every dead letter (of ``queue``, or only the one whose id is ``message_id``); return how many."""
    retried = 0
    for letter in list_dead_letters(broker, queue):
        if message_id is not None and message_id not in (letter.message_id, letter.redis_id):
            continue
        retry_dead_letter(broker, letter)
        retried += 1
    return retried
