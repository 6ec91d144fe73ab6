"""An idle worker looks at its queues every 100 ms, so a request's hops do not each wait a second."""

from __future__ import annotations

import dramatiq

from dispatcher.config import Settings
from dispatcher.pickup import IDLE_POLL_MS


def test_consumers_of_a_worker_booted_with_the_default_timeout_poll_every_100_ms(engine: Settings) -> None:
    broker = dramatiq.get_broker()
    running = dramatiq.Worker(broker, worker_threads=1)  # dramatiq's default: one second
    assert running.worker_timeout > IDLE_POLL_MS
    running.start()
    try:
        assert running.worker_timeout == IDLE_POLL_MS
        assert running.consumers and {c.worker_timeout for c in running.consumers.values()} == {IDLE_POLL_MS}
    finally:
        running.stop()
