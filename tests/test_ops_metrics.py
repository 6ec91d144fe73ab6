"""Metrics scraped over HTTP from a real dramatiq worker process, and its JSON logs.

The worker is started the way production starts it (the dramatiq CLI, one process, dramatiq's
exposition server as a fork), so this checks the multiprocess wiring end to end: the engine's series
written by the worker process appear beside dramatiq's own on the exposition port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from dispatcher import actors, lifecycle
from dispatcher.config import Settings
from dispatcher.contract import parse_request
from dispatcher.db.types import Conn
from dispatcher.lifecycle import State
from tests.factories import add_resident, request_payload

ROOT = Path(__file__).resolve().parent.parent
REQUEST = "req-metrics"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def worker_process(settings: Settings, redis_client: redis.Redis,
                   tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The engine's worker (``dramatiq dispatcher.broker:get_engine_broker ...``) in a child process: (port, log)."""
    port = _free_port()
    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "dramatiq_prom_db": str(tmp_path / "prometheus"),
        "dramatiq_prom_host": "127.0.0.1",
        "dramatiq_prom_port": str(port),
        "DISPATCHER_OPS_SAMPLE_SECONDS": "0.5",
    }
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "dispatcher.broker:get_engine_broker", "dispatcher.actors",
             "--processes", "1", "--threads", "2", "--queues", "push", "email"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        yield port, log_path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_worker_exports_the_engines_series_over_http(db: Conn, worker_process: tuple[int, Path]) -> None:
    port, log_path = worker_process
    # A request in flight whose recipients cannot be reached any more: three lost their last token,
    # two have a suppressed address. The fan-out closes them without calling a provider.
    lifecycle.accept(db, parse_request(request_payload(REQUEST)))
    lifecycle.transition(db, REQUEST, State.TARGETING, from_={State.ACCEPTED})
    lifecycle.transition(db, REQUEST, State.SENDING, from_={State.TARGETING})
    for rid in (1, 2, 3):
        add_resident(db, rid, 40.015, -105.27)
        db.execute("INSERT INTO deliveries (request_id, channel, resident_id) VALUES (%s, 'push', %s)", (REQUEST, rid))
    for rid, email in ((4, "gone@example.test"), (5, "spam@example.test")):
        add_resident(db, rid, 40.016, -105.27, email=email)
        db.execute("INSERT INTO email_suppressions (email, reason) VALUES (%s, 'bounce')", (email,))
        db.execute("INSERT INTO deliveries (request_id, channel, resident_id) VALUES (%s, 'email', %s)", (REQUEST, rid))
    actors.send_push.send(REQUEST)
    actors.send_email.send(REQUEST)

    deadline = time.monotonic() + 45
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    while time.monotonic() < deadline:
        try:
            samples = _scrape(port)
        except OSError:
            samples = {}
        if (_value(samples, "dispatcher_requests", state="completed") == 1.0
                and _value(samples, "dispatcher_deliveries_total", channel="email", outcome="suppressed")):
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"engine series never appeared; worker log:\n{log_path.read_text()[-3000:]}")

    assert _value(samples, "dispatcher_deliveries_total", channel="push", outcome="skipped") == 3.0
    assert _value(samples, "dispatcher_deliveries_total", channel="email", outcome="suppressed") == 2.0
    assert _value(samples, "dispatcher_suppressed_emails_total") == 2.0
    assert _value(samples, "dispatcher_request_transitions_total", state="completed") == 1.0
    assert _value(samples, "dispatcher_requests_overdue") == 0.0
    assert _value(samples, "dispatcher_queue_messages", queue="push", kind="dead") == 0.0
    assert (_value(samples, "dispatcher_workers_alive") or 0) >= 1
    # dramatiq's own series come from the same endpoint.
    assert (_value(samples, "dramatiq_messages_total", queue_name="push", actor_name="send_push") or 0) >= 1
    assert _value(samples, "dispatcher_targeting_seconds_count") == 0.0

    # The worker process logs JSON, with the request id and without the residents' addresses.
    time.sleep(0.3)
    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    completed = [r for r in records if r["message"] == "request completed"]
    assert completed and completed[0]["request_id"] == REQUEST and completed[0]["logger"] == "dispatcher.fanout"
    assert "example.test" not in log_path.read_text()


def test_prepare_worker_metrics_dir_clears_earlier_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dispatcher.ops.metrics import DRAMATIQ_PROM_DB_ENV, prepare_worker_metrics_dir

    monkeypatch.delenv(DRAMATIQ_PROM_DB_ENV, raising=False)
    directory = tmp_path / "prom"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"stale")
    (directory / "keep.txt").write_text("not a sample file")

    assert prepare_worker_metrics_dir(directory) == directory

    assert sorted(p.name for p in directory.iterdir()) == ["keep.txt"]
    assert os.environ[DRAMATIQ_PROM_DB_ENV] == str(directory)


def test_one_process_of_the_fleet_reads_the_database_per_interval(db: Conn, redis_client: redis.Redis) -> None:
    """Counting a county's ledger is costly: the fleet shares one database sample per interval."""
    from dispatcher.ops import sampler

    lifecycle.accept(db, parse_request(request_payload("sample-1")))
    db.commit()
    first = sampler.shared_database_sample(redis_client, 1.0)
    lifecycle.accept(db, parse_request(request_payload("sample-2")))
    db.commit()
    # Another process within the same interval: the first sample, not a second count.
    assert sampler.shared_database_sample(redis_client, 1.0) == first
    assert first["by_state"][State.ACCEPTED.value] == 1
    redis_client.delete(sampler.SAMPLE_LOCK_KEY)  # the interval is over
    assert sampler.shared_database_sample(redis_client, 1.0)["by_state"][State.ACCEPTED.value] == 2
