"""Each worker process gets its channels ready at boot, so a request's first residents never wait for it.

A fresh process would otherwise build its provider clients and exchange its FCM access token on its
first batch: a round trip to Google's OAuth2 endpoint while a request's first push waits. The warm-up
runs on a thread of its own (a slow or unreachable endpoint delays nothing), only in processes the
dramatiq CLI boots (an in-process ``dramatiq.Worker`` in tests or the demo is left as it is), and a
failure only logs: the first batch tries again, as it would have anyway.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from dramatiq.middleware import Middleware

from dispatcher.ledger import Channel

log = logging.getLogger(__name__)


def warm_up_channels() -> None:
    """Warm every channel of this process; one failing does not stop the others."""
    from dispatcher.fanout import sender

    for channel in Channel:
        try:
            sender(channel).warm_up()
        except Exception as error:  # not configured, unreachable: the first batch finds out again
            log.warning("channel warm-up failed; its first batch will set it up",
                        extra={"channel": channel.value, "error": type(error).__name__})


class WarmChannels(Middleware):
    """Warms the channels on a background thread once a CLI-booted worker process is up."""

    def __init__(self) -> None:
        self.booted = False
        self.thread: threading.Thread | None = None

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        self.booted = True

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.booted:
            self.thread = threading.Thread(target=warm_up_channels, name="dispatcher-warm-up", daemon=True)
            self.thread.start()
