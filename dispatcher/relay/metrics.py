"""The relay's Prometheus series, in the engine's registry (see :mod:`dispatcher.ops.metrics`).

Labels are bounded words (kind, outcome): never a number, a post or a session id.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dispatcher.ops.metrics import registry

if TYPE_CHECKING:
    import prometheus_client as prom

#: Buckets for the relay's own work on one webhook (the provider excluded).
RELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


@dataclass(frozen=True)
class RelayMetrics:
    pool_exhausted: prom.Counter
    webhooks: prom.Counter
    texts: prom.Counter
    webhook_seconds: prom.Histogram


_lock = threading.Lock()
_metrics: RelayMetrics | None = None


def relay_metrics() -> RelayMetrics:
    """The series, created on first use."""
    global _metrics
    with _lock:
        if _metrics is None:
            import prometheus_client as prom

            reg = registry()
            _metrics = RelayMetrics(
                pool_exhausted=prom.Counter(
                    "dispatcher_relay_pool_exhausted", "Contacts refused: no proxy number free for a person.",
                    registry=reg),
                webhooks=prom.Counter(
                    "dispatcher_relay_webhooks", "Twilio webhooks handled, by kind and outcome.",
                    ("kind", "outcome"), registry=reg),
                texts=prom.Counter(
                    "dispatcher_relay_texts", "Outgoing relay texts, by purpose and outcome.",
                    ("purpose", "outcome"), registry=reg),
                webhook_seconds=prom.Histogram(
                    "dispatcher_relay_webhook_seconds", "The relay's own time on one webhook.",
                    ("kind",), buckets=RELAY_BUCKETS, registry=reg),
            )
        return _metrics
