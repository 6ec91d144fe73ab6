"""The engine's dramatiq broker: Redis, and every middleware of the engine, installed in one place.

Nothing is built on import. :func:`get_engine_broker` builds the broker on first use and installs it
as dramatiq's global broker; the actor modules call it before declaring their actors (dramatiq binds
an actor to the global broker when it is declared), and a publisher gets it by importing them.
Modules that only need queue names import :mod:`dispatcher.queues` instead.
"""

from __future__ import annotations

import threading

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, Retries

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
