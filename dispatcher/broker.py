"""The engine's dramatiq broker: Redis, and every middleware of the engine, installed in one place.

Nothing is built on import. :func:`get_engine_broker` builds the broker on first use and installs it
as dramatiq's global broker; the actor modules call it before declaring their actors (dramatiq binds
an actor to the global broker when it is declared), and a publisher gets it by importing them.
Modules that only need queue names import :mod:`dispatcher.queues` instead.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.middleware import CurrentMessage, Retries
from redis.exceptions import NoScriptError

from dispatcher.config import Settings, get_settings
from dispatcher.deadletters import DeadLetterReasons
from dispatcher.errors import ConfigurationError
from dispatcher.ledger import Channel
from dispatcher.ops.middleware import install_ops_middleware
from dispatcher.pickup import PromptPickup
from dispatcher.queues import (
    ALL_QUEUES,
    EMAIL_QUEUE,
    NAMESPACE,
    PUSH_QUEUE,
    REQUESTS_QUEUE,
    RESIDENTS_QUEUE,
    URGENT_EMAIL_QUEUE,
    URGENT_PUSH_QUEUE,
    URGENT_QUEUES,
    URGENT_REQUESTS_QUEUE,
    URGENT_SUFFIX,
)
from dispatcher.reconciler import Nudges, ReconcilerMiddleware
from dispatcher.warmup import WarmChannels

__all__ = [  # the queue names are re-exported for callers that already declare actors
    "ALL_QUEUES",
    "EMAIL_QUEUE",
    "NAMESPACE",
    "PUSH_QUEUE",
    "REQUESTS_QUEUE",
    "RESIDENTS_QUEUE",
    "URGENT_EMAIL_QUEUE",
    "URGENT_PUSH_QUEUE",
    "URGENT_QUEUES",
    "URGENT_REQUESTS_QUEUE",
    "URGENT_SUFFIX",
    "build_broker",
    "enqueue_pipelined",
    "get_engine_broker",
]

_engine: RedisBroker | None = None
_engine_lock = threading.Lock()


def build_broker(settings: Settings, nudges: Nudges) -> RedisBroker:
    """A Redis broker for ``settings.redis_url`` with every middleware of the engine.

    ``nudges`` is how the reconciler running in each worker sets a stuck request going again.
    """
    if not settings.redis_url:
        raise ConfigurationError("REDIS_URL is not set and no embedded Redis was started")
    broker = RedisBroker(url=settings.redis_url, namespace=NAMESPACE)
    broker.add_middleware(CurrentMessage())
    install_ops_middleware(broker)  # request ids in logs; Prometheus metrics in CLI-booted worker processes
    # Before Retries in the list, so it runs after Retries has decided a message's fate.
    broker.add_middleware(DeadLetterReasons(), before=Retries)
    broker.add_middleware(ReconcilerMiddleware(nudges))
    broker.add_middleware(PromptPickup())  # an idle queue is looked at every 100 ms, not every second
    broker.add_middleware(WarmChannels())  # each worker process takes its FCM token at boot, not on a first push
    return broker


def get_engine_broker() -> RedisBroker:
    """The engine's broker, built on first use from the process settings and installed globally."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = build_broker(get_settings(), enqueueing_nudges())
            dramatiq.set_broker(_engine)
        return _engine


def enqueueing_nudges() -> Nudges:
    """Nudges that enqueue the actors' messages (the actors exist by the time a worker sweeps)."""

    def target(request_id: str, urgent: bool) -> None:
        from dispatcher.actors import enqueue_targeting

        enqueue_targeting(request_id, urgent=urgent)

    def drain(request_id: str, channel: Channel, urgent: bool) -> None:
        from dispatcher.actors import nudge_fanout

        nudge_fanout(request_id, channel, urgent=urgent)

    return Nudges(target=target, drain=drain)


def enqueue_pipelined(broker: RedisBroker, messages: Sequence[dramatiq.Message[Any]]) -> None:
    """Enqueue ``messages`` (none delayed) in one round trip to Redis instead of one each.

    The same steps as ``RedisBroker.enqueue``: a fresh ``redis_message_id``, the middleware's
    ``before_enqueue`` and ``after_enqueue`` hooks, dramatiq's own ``dispatch`` Lua script with the
    arguments its ``_dispatch`` passes; only the script calls share one pipeline (EVALSHA; a message whose
    script Redis no longer holds goes through ``broker.enqueue``, which loads it). It mirrors dramatiq 2.x
    (tests/test_broker_pipelined.py guards it: a worker consumes what it enqueues).
    """
    if len(messages) == 1:
        broker.enqueue(messages[0])
        return
    sha = broker.scripts["dispatch"].sha
    pipe = broker.client.pipeline(transaction=False)
    sent: list[dramatiq.Message[Any]] = []
    for original in messages:
        message = original.copy(options={"redis_message_id": str(uuid4())})
        broker.emit_before("enqueue", message, None)
        pipe.evalsha(sha, 1, broker.namespace, "enqueue", current_millis(), message.queue_name, broker.broker_id,
                     broker.heartbeat_timeout, broker.dead_message_ttl, broker._should_do_maintenance("enqueue"),
                     broker._max_unpack_size(), message.options["redis_message_id"], message.encode())
        sent.append(message)
    failure: Exception | None = None
    for message, original, answer in zip(sent, messages, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(answer, NoScriptError):
            broker.enqueue(original)
        elif isinstance(answer, Exception):
            failure = failure or answer
        else:
            broker.emit_after("enqueue", message, None)
    if failure is not None:
        raise failure
