"""The engine's Prometheus series, and the small functions the stages call to feed them.

Workers are several processes (dramatiq forks them), so the series use prometheus_client's
multiprocess mode: each process writes its samples to files under ``PROMETHEUS_MULTIPROC_DIR`` and
dramatiq's Prometheus exposition server (one per host, port ``dramatiq_prom_port``, default 9191)
sums them with dramatiq's own series. prometheus_client chooses that mode, its public switch, from
``PROMETHEUS_MULTIPROC_DIR`` when it is first imported; so this module imports it only when a series
is first needed, and :func:`enable_multiprocess`, which the worker middleware calls at process boot,
sets the variable before that. Outside workers (CLI, tests) the series live in memory, in
:func:`registry`.

Labels are bounded: states, channels, outcomes, providers. Never a request id, resident, email or token.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dispatcher.errors import ConfigurationError
from dispatcher.ledger import Outcome

if TYPE_CHECKING:
    import prometheus_client as prom

#: The environment variable dramatiq's Prometheus middleware reads its sample directory from (lower case).
DRAMATIQ_PROM_DB_ENV = "dramatiq_prom_db"
#: Buckets for durations that range from milliseconds (a small area) to minutes (a county).
TARGETING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: Buckets for recipients per request, from a cul-de-sac to a county.
RECIPIENT_BUCKETS = (0, 10, 100, 1_000, 10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000)
#: Buckets for one provider call (a batch of up to 500 pushes or 1,000 emails).
PROVIDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


@dataclass(frozen=True)
class EngineMetrics:
    """Every series the engine exports besides dramatiq's own."""

    request_transitions: prom.Counter
    targeting_seconds: prom.Histogram
    recipients_targeted: prom.Histogram
    deliveries: prom.Counter
    provider_latency: prom.Histogram
    retries: prom.Counter
    ledger_write_retries: prom.Counter
    retired_tokens: prom.Counter
    suppressed_emails: prom.Counter
    requests: prom.Gauge
    requests_overdue: prom.Gauge
    queue_messages: prom.Gauge
    workers_alive: prom.Gauge


def _create(registry: prom.CollectorRegistry) -> EngineMetrics:
    import prometheus_client as prom  # first import here: the storage mode is chosen by then

    # Sampled gauges: every worker process samples the same database and Redis, so the fleet's value
    # is the largest of the live processes' values.
    def sampled(name: str, documentation: str, labels: tuple[str, ...] = ()) -> prom.Gauge:
        return prom.Gauge(name, documentation, labels, registry=registry, multiprocess_mode="livemax")

    return EngineMetrics(
        request_transitions=prom.Counter(
            "dispatcher_request_transitions_total", "Requests entering each state.", ["state"], registry=registry),
        targeting_seconds=prom.Histogram(
            "dispatcher_targeting_seconds", "Time to match an area and write its ledger.",
            buckets=TARGETING_BUCKETS, registry=registry),
        recipients_targeted=prom.Histogram(
            "dispatcher_recipients_targeted", "Ledger rows written per targeted request.",
            buckets=RECIPIENT_BUCKETS, registry=registry),
        deliveries=prom.Counter(
            "dispatcher_deliveries_total", "Delivery outcomes recorded in the ledger.", ["channel", "outcome"],
            registry=registry),
        provider_latency=prom.Histogram(
            "dispatcher_provider_latency_seconds", "Duration of one provider batch call.", ["provider"],
            buckets=PROVIDER_BUCKETS, registry=registry),
        retries=prom.Counter(
            "dispatcher_provider_retries_total", "Residents handed back for a later attempt (429, 5xx).",
            ["channel"], registry=registry),
        ledger_write_retries=prom.Counter(
            "dispatcher_ledger_write_retries_total",
            "Attempts to record a sent batch that PostgreSQL did not take and that were tried again.",
            ["channel"], registry=registry),
        retired_tokens=prom.Counter(
            "dispatcher_retired_tokens_total", "Device tokens retired (unregistered, invalid).", registry=registry),
        suppressed_emails=prom.Counter(
            "dispatcher_suppressed_emails_total", "Emails not sent because the address is suppressed.",
            registry=registry),
        requests=sampled("dispatcher_requests", "Requests in each state (sampled).", ("state",)),
        requests_overdue=sampled("dispatcher_requests_overdue", "Active requests past their expected finish."),
        queue_messages=sampled("dispatcher_queue_messages",
                               "Messages per queue: ready, delayed, in_flight, dead (sampled).", ("queue", "kind")),
        workers_alive=sampled("dispatcher_workers_alive", "Worker processes with a fresh heartbeat (sampled)."),
    )


_lock = threading.Lock()
_registry: prom.CollectorRegistry | None = None
_metrics: EngineMetrics | None = None


def _registry_locked() -> prom.CollectorRegistry:
    global _registry
    if _registry is None:
        import prometheus_client as prom

        _registry = prom.CollectorRegistry()
    return _registry


def engine_metrics() -> EngineMetrics:
    """The process's series, created on first use."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _create(_registry_locked())
        return _metrics


def registry() -> prom.CollectorRegistry:
    """The in-memory registry of the series (in multiprocess mode, read the directory instead)."""
    with _lock:
        return _registry_locked()


def enable_multiprocess(directory: str | Path) -> None:
    """Write samples under ``directory`` from now on, shared with dramatiq's exposition server.

    Must run before prometheus_client is first imported in the process (worker boot does): the library
    reads ``PROMETHEUS_MULTIPROC_DIR`` once, at import.
    """
    os.makedirs(directory, exist_ok=True)
    chosen = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if "prometheus_client" in sys.modules and chosen != str(directory):
        raise ConfigurationError(
            "prometheus_client was imported before multiprocess mode was chosen: set PROMETHEUS_MULTIPROC_DIR "
            "before the worker starts, or import prometheus_client only after process boot")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def prepare_worker_metrics_dir(directory: str | Path) -> Path:
    """Point dramatiq's exposition server and every worker process at ``directory``, emptied of the
    sample files of earlier runs (else their counters would add up across restarts).

    Call it in the process that starts the dramatiq workers, before they start (it sets
    ``dramatiq_prom_db``, which dramatiq's Prometheus middleware reads when first imported).
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[DRAMATIQ_PROM_DB_ENV] = str(path)
    return path


def record_request_state(state: str) -> None:
    """A request entered ``state`` (accepted, targeting, sending, completed, rejected, expired)."""
    engine_metrics().request_transitions.labels(state).inc()


def record_targeting(seconds: float, recipients: int) -> None:
    """A request was targeted: how long it took and how many ledger rows it wrote."""
    m = engine_metrics()
    m.targeting_seconds.observe(seconds)
    m.recipients_targeted.observe(recipients)


def record_outcomes(channel: str, counts: Mapping[str, int]) -> None:
    """Outcomes of one batch by status (sent, failed, skipped, suppressed, ...)."""
    deliveries = engine_metrics().deliveries
    for outcome, n in counts.items():
        if n:
            deliveries.labels(channel, outcome).inc(n)
    suppressed = counts.get("suppressed", 0)
    if suppressed:
        record_suppressed(suppressed)


def observe_provider_latency(provider: str, seconds: float) -> None:
    """One provider batch call took ``seconds``."""
    engine_metrics().provider_latency.labels(provider).observe(seconds)


@contextmanager
def provider_timer(provider: str) -> Iterator[None]:
    """Time the provider call inside the ``with`` block (recorded even when it raises)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_provider_latency(provider, time.perf_counter() - started)


def record_retry(channel: str, n: int = 1) -> None:
    """``n`` residents go back to pending for a later attempt."""
    if n:
        engine_metrics().retries.labels(channel).inc(n)


def record_ledger_write_retry(channel: str) -> None:
    """Recording a sent batch failed for a transient reason and is tried again."""
    engine_metrics().ledger_write_retries.labels(channel).inc()


def record_retired_tokens(n: int) -> None:
    """``n`` device tokens were retired."""
    if n:
        engine_metrics().retired_tokens.inc(n)


def record_suppressed(n: int) -> None:
    """``n`` emails were not sent because their address is suppressed."""
    if n:
        engine_metrics().suppressed_emails.inc(n)


def record_ledger_outcomes(channel: str, outcomes: Mapping[int, Outcome]) -> None:
    """Count one batch's ledger outcomes (resident id → outcome) by status."""
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome.status.value] = counts.get(outcome.status.value, 0) + 1
    record_outcomes(channel, counts)
