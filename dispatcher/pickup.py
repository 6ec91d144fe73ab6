"""How soon an idle worker notices a new message: the first push of a request waits on it twice.

dramatiq's Redis consumer backs off while its queue is empty, up to the worker's ``worker_timeout``
(one second by default), before it looks again. A request's message and then its fan-out messages
each land on an idle queue, so each hop could wait a second. Polling at most every
:data:`IDLE_POLL_MS` costs each consumer a few Redis calls a second while idle and takes the
first push within a second of acceptance. An operator's ``dramatiq_worker_timeout`` still wins.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

#: The longest an idle consumer waits before polling its queue again, in milliseconds.
IDLE_POLL_MS = 100


class PromptPickup(Middleware):
    """Caps the consumers' idle back-off (set before the worker builds its consumers)."""

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if "dramatiq_worker_timeout" not in os.environ:
            worker.worker_timeout = min(worker.worker_timeout, IDLE_POLL_MS)
