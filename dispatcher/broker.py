"""The dramatiq broker: Redis, the engine's queues, and its middleware.

Importing this module installs the broker as dramatiq's global broker, so import it before any module
that declares actors. The broker URL comes from the settings; the CLI and the test fixtures make
sure ``REDIS_URL`` is set (starting the embedded Redis if needed) before that happens.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from dispatcher.config import Settings, get_settings
from dispatcher.errors import ConfigurationError
from dispatcher.ops.middleware import install_ops_middleware

#: Approved Community Requests from the publishing pipeline.
REQUESTS_QUEUE = "requests"
#: Push and email fan-out work: each message names one request and one channel, never a resident.
PUSH_QUEUE = "push"
EMAIL_QUEUE = "email"
#: Updates to the resident index from the main application, and provider feedback.
RESIDENTS_QUEUE = "residents"
#: Urgent incident types travel on their own queues, so they never wait behind a county-wide backlog.
URGENT_SUFFIX = ".urgent"
URGENT_REQUESTS_QUEUE = REQUESTS_QUEUE + URGENT_SUFFIX
URGENT_PUSH_QUEUE = PUSH_QUEUE + URGENT_SUFFIX
URGENT_EMAIL_QUEUE = EMAIL_QUEUE + URGENT_SUFFIX
URGENT_QUEUES = (URGENT_REQUESTS_QUEUE, URGENT_PUSH_QUEUE, URGENT_EMAIL_QUEUE)
#: Every queue the engine's workers consume.
ALL_QUEUES = (REQUESTS_QUEUE, URGENT_REQUESTS_QUEUE, PUSH_QUEUE, URGENT_PUSH_QUEUE, EMAIL_QUEUE, URGENT_EMAIL_QUEUE,
              RESIDENTS_QUEUE)
#: Key prefix in Redis for dramatiq's queues.
NAMESPACE = "dispatcher"


def build_broker(settings: Settings) -> RedisBroker:
    """A Redis broker for ``settings.redis_url`` with the engine's middleware."""
    if not settings.redis_url:
        raise ConfigurationError("REDIS_URL is not set and no embedded Redis was started")
    broker = RedisBroker(url=settings.redis_url, namespace=NAMESPACE)
    broker.add_middleware(CurrentMessage())
    install_ops_middleware(broker)  # request ids in logs; Prometheus metrics in CLI-booted worker processes
    return broker


def setup_broker(settings: Settings | None = None) -> dramatiq.Broker:
    """Install the engine's broker as dramatiq's global broker and return it."""
    broker = build_broker(settings or get_settings())
    dramatiq.set_broker(broker)
    return broker


broker = setup_broker()
