"""The chaos harness: a private Redis, a private database, the sandbox providers and real worker processes,
and a schedule of faults played against them while one large request fans out.

Nothing here touches shared services: Redis is a ``redis-server`` of our own on a Unix socket (the one
that gets killed and restarted), the database is a fresh one created on the configured PostgreSQL
server (only our workers' connections, found by ``application_name``, are terminated), and the worker
processes are ours, killed by their process group id.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h3
import psycopg
import redis
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from dispatcher.config import RESIDENT_CELL_RESOLUTION
from dispatcher.db import migrate
from dispatcher.embedded import _redis_server_binary
from dispatcher.sandbox.faults import BENCHMARK_LATENCY
from dispatcher.sandbox.server import SandboxServer
from tests.factories import register_agency, request_payload

#: The request's area (the factories' square) and a box around it where out-of-area residents live.
WEST, EAST, SOUTH, NORTH = -105.28, -105.267, 40.01, 40.02
_MARGIN = 0.0004
#: application_name prefix of every worker connection (what pg_terminate_backend aims at).
APP_NAME = "dispatcher-chaos"


@dataclass
class ChaosConfig:
    """What to run and what to break."""

    recipients: int = 5_000
    workers: int = 2
    threads: int = 4
    kills: int = 3
    redis_restarts: int = 1
    pg_drops: int = 1
    storms: int = 1
    storm_seconds: float = 5.0
    #: Seconds the fan-out should take without faults (the rate limits are set from it).
    target_seconds: float = 25.0
    lease_seconds: int = 8
    push_batch: int = 100
    email_batch: int = 200
    reconcile_seconds: float = 2.0
    stale_seconds: float = 6.0
    timeout_seconds: float = 240.0
    seed: int = 7
    #: Provider latency per call (median, p99 in milliseconds): on, as production is never instant.
    latency_ms: tuple[float, float] = BENCHMARK_LATENCY
    #: Where logs, Redis and sandbox records go (a temporary directory if unset).
    workdir: Path | None = None


@dataclass
class Disruption:
    """One fault played, and the ledger rows in flight at that moment (the duplicate allowance)."""

    at: float
    kind: str
    in_flight: int = 0


@dataclass
class Resident:
    id: int
    lat: float
    lng: float
    inside: bool
    email: str | None
    token: str | None
    community: bool
    push: bool
    email_on: bool
    suppressed: bool


def make_town(count: int, rng: random.Random) -> list[Resident]:
    """``count`` residents in and around the area, with a realistic mix of settings."""
    residents = []
    for rid in range(1, count + 1):
        inside = rng.random() < 0.88
        if inside:
            lat = rng.uniform(SOUTH + _MARGIN, NORTH - _MARGIN)
            lng = rng.uniform(WEST + _MARGIN, EAST - _MARGIN)
        else:
            lat = rng.uniform(SOUTH - 0.01, NORTH + 0.01)
            lng = rng.uniform(EAST + _MARGIN, EAST + 0.01) if rng.random() < 0.5 else rng.uniform(
                WEST - 0.01, WEST - _MARGIN)
        roll = rng.random()
        residents.append(Resident(
            id=rid, lat=round(lat, 7), lng=round(lng, 7), inside=inside,
            email=None if roll < 0.03 else f"resident{rid}.{rng.randrange(10**6):06d}@example.test",
            token=None if 0.03 <= roll < 0.06 else f"chaos{rid}:APA91b{uuid.UUID(int=rng.getrandbits(128)).hex}",
            community=not (0.06 <= roll < 0.10), push=not (0.10 <= roll < 0.14),
            email_on=not (0.14 <= roll < 0.18), suppressed=0.18 <= roll < 0.19,
        ))
    return residents


def seed_town(conn: psycopg.Connection[Any], residents: list[Resident]) -> None:
    """COPY the residents, their settings, tokens and suppressions into the database."""
    with conn.cursor() as cur:
        with cur.copy("COPY residents (id, lat, lng, cell, email, time_zone, has_camera) FROM STDIN") as copy:
            for r in residents:
                cell = h3.str_to_int(h3.latlng_to_cell(r.lat, r.lng, RESIDENT_CELL_RESOLUTION))
                copy.write_row((r.id, r.lat, r.lng, cell, r.email, "America/Denver", r.id % 3 == 0))
        with cur.copy("COPY resident_settings (resident_id, community_requests, push_enabled, email_enabled)"
                      " FROM STDIN") as copy:
            for r in residents:
                if not (r.community and r.push and r.email_on):
                    copy.write_row((r.id, r.community, r.push, r.email_on))
        with cur.copy("COPY device_tokens (token, resident_id) FROM STDIN") as copy:
            for r in residents:
                if r.token:
                    copy.write_row((r.token, r.id))
        with cur.copy("COPY email_suppressions (email, reason) FROM STDIN") as copy:
            for r in residents:
                if r.suppressed and r.email:
                    copy.write_row((r.email.lower(), "bounce"))
    conn.commit()


class PrivateRedis:
    """A redis-server of our own on a Unix socket, without persistence: a restart loses every message."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.socket_path = Path(tempfile.gettempdir()) / f"dispatcher-chaos-{uuid.uuid4().hex[:10]}.sock"
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [_redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
             "--dir", str(self.folder), "--save", "", "--appendonly", "no",
             "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError, OSError):
                if redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1).ping():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError("private redis-server did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
        self.socket_path.unlink(missing_ok=True)

    def restart(self, down_seconds: float = 1.0) -> None:
        """SIGKILL the server and start a fresh, empty one on the same socket."""
        self.kill()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket_path))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _group_pids(pgid: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:
                pids.add(int(entry.name))
    return pids


class WorkerFleet:
    """Real ``dramatiq`` worker processes, each in its own process group, logging to files."""

    def __init__(self, env: dict[str, str], logs: Path, threads: int) -> None:
        self.env = env
        self.logs = logs
        self.threads = threads
        self.processes: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def start_one(self) -> subprocess.Popen[bytes]:
        self.started += 1
        log = (self.logs / f"worker-{self.started}.log").open("wb")
        env = {**self.env, "dramatiq_prom_port": str(_free_port())}
        process = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "dispatcher.actors", "--processes", "1",
             "--threads", str(self.threads)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        return process

    def kill_random(self, rng: random.Random) -> set[int]:
        """SIGKILL one worker's whole process group; return the pids that died."""
        alive = [p for p in self.processes if p.poll() is None]
        victim = rng.choice(alive)
        pids = _group_pids(victim.pid) | {victim.pid}
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
        self.processes.remove(victim)
        return pids

    def stop_all(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self.processes.clear()


@contextlib.contextmanager
def private_database(base_url: str) -> Iterator[str]:
    """A fresh, migrated database on the configured server, dropped afterwards."""
    name = f"dispatcher_chaos_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(base_url, dbname=name)
    try:
        with psycopg.connect(url) as conn:
            migrate(conn)
            register_agency(conn)
        yield url
    finally:
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _in_flight(conn: psycopg.Connection[Any], pids: set[int] | None) -> int:
    """Pending rows under a lease, of the given worker pids (or of every worker)."""
    rows = conn.execute(
        "SELECT lease_owner, count(*) FROM deliveries WHERE status = 'pending' AND lease_owner IS NOT NULL"
        " GROUP BY 1").fetchall()
    total = 0
    for owner, count in rows:
        parts = str(owner).split(":")
        if pids is None or (len(parts) > 1 and parts[1].isdigit() and int(parts[1]) in pids):
            total += int(count)
    return total


@dataclass
class ChaosRun:
    """What a run did: the disruptions, timings and where the evidence is."""

    config: ChaosConfig
    request_ids: list[str]
    disruptions: list[Disruption] = field(default_factory=list)
    seconds: float = 0.0
    finished: bool = False
    final_states: dict[str, str] = field(default_factory=dict)
    logs: list[Path] = field(default_factory=list)


def _schedule(config: ChaosConfig, rng: random.Random) -> list[tuple[float, str]]:
    span = config.target_seconds
    events: list[tuple[float, str]] = []
    events += [(rng.uniform(0.1, 0.8) * span, "kill") for _ in range(config.kills)]
    events += [(rng.uniform(0.3, 0.7) * span, "redis_restart") for _ in range(config.redis_restarts)]
    events += [(rng.uniform(0.2, 0.8) * span, "pg_drop") for _ in range(config.pg_drops)]
    events += [(rng.uniform(0.1, 0.6) * span, "storm") for _ in range(config.storms)]
    return sorted(events)


def run_chaos(config: ChaosConfig, base_database_url: str, *, progress: Any = None) -> tuple[ChaosRun, Any]:
    """Run one chaos scenario end to end; return the run and the checker's report."""
    from tests.chaos.checker import check

    workdir = config.workdir or Path(tempfile.mkdtemp(prefix="dispatcher-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(config.seed)
    residents = make_town(config.recipients, rng)
    private_redis = PrivateRedis(workdir / "redis")
    private_redis.start()
    try:
        with private_database(base_database_url) as db_url, SandboxServer(workdir / "sandbox") as sandbox:
            calm(sandbox, config)
            with psycopg.connect(db_url) as conn:
                seed_town(conn, residents)
            run = _play(config, rng, db_url, private_redis, sandbox, workdir, progress)
            sandbox.flush()
            with psycopg.connect(db_url, autocommit=True) as conn:
                report = check(conn, sandbox.records_dir, private_redis.client(), run, residents)
            return run, report
    finally:
        private_redis.kill()


def calm(sandbox: SandboxServer, config: ChaosConfig) -> None:
    """No faults, but the providers' latency (a storm's end returns here, not to an instant sandbox)."""
    sandbox.faults.reset()
    median, p99 = config.latency_ms
    for provider in sandbox.faults.PROVIDERS:
        sandbox.faults.update(provider, latency_median_ms=median, latency_p99_ms=p99)


def _say(progress: Any, text: str) -> None:
    if progress is not None:
        progress(text)


def _play(config: ChaosConfig, rng: random.Random, db_url: str, private_redis: PrivateRedis,
          sandbox: SandboxServer, workdir: Path, progress: Any) -> ChaosRun:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    from dispatcher.queues import NAMESPACE, REQUESTS_QUEUE

    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    per_minute = max(600, int(config.recipients / config.target_seconds * 60))
    worker_db_url = make_conninfo(db_url, application_name=f"{APP_NAME}-worker")
    env = {
        **os.environ,
        "DATABASE_URL": worker_db_url, "REDIS_URL": private_redis.url,
        "FCM_ENDPOINT": sandbox.fcm_url, "FCM_CREDENTIALS": str(sandbox.service_account_path),
        "SENDGRID_ENDPOINT": sandbox.sendgrid_url, "SENDGRID_API_KEY": sandbox.api_key,
        "LEASE_SECONDS": str(config.lease_seconds),
        "QUIET_HOURS": "off",  # the run checks that every push went out, whatever the hour
        "PUSH_BATCH_SIZE": str(config.push_batch), "EMAIL_BATCH_SIZE": str(config.email_batch),
        "PUSH_RATE_PER_MINUTE": str(per_minute), "EMAIL_RATE_PER_MINUTE": str(per_minute),
        "DISPATCHER_RECONCILE_SECONDS": str(config.reconcile_seconds),
        "DISPATCHER_STALE_SECONDS": str(config.stale_seconds),
        "DISPATCHER_HOME": str(workdir / "home"),
        "dramatiq_prom_db": str(workdir / "prometheus"),
        "PYTHONWARNINGS": "ignore",
    }
    (workdir / "prometheus").mkdir(exist_ok=True)
    fleet = WorkerFleet(env, logs, config.threads)
    for _ in range(config.workers):
        fleet.start_one()

    # Publish through our own broker on the private Redis (the test process's broker points elsewhere).
    publisher = RedisBroker(url=private_redis.url, namespace=NAMESPACE)
    payload = request_payload(f"chaos-{uuid.uuid4().hex[:8]}")
    request_id = str(payload["id"])
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=REQUESTS_QUEUE, actor_name="distribute_request", args=(payload,), kwargs={}, options={})
    publisher.enqueue(message)
    run = ChaosRun(config, [request_id])
    _say(progress, f"published {request_id} to {config.recipients} residents; {config.workers} workers")

    try:
        events = _schedule(config, rng)
        storm_until: float | None = None
        started = time.monotonic()
        with psycopg.connect(db_url, autocommit=True) as conn:
            while True:
                now = time.monotonic() - started
                while events and events[0][0] <= now:
                    _, kind = events.pop(0)
                    run.disruptions.append(_disrupt(kind, conn, fleet, private_redis, sandbox, rng, config))
                    sent = conn.execute("SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER"
                                        " (WHERE status = 'pending') FROM deliveries").fetchone()
                    _say(progress, f"t={now:5.1f}s {kind}: rows in flight {run.disruptions[-1].in_flight}; "
                                   f"ledger sent {sent[0] if sent else 0}, pending {sent[1] if sent else 0}")
                    if kind == "storm":
                        storm_until = now + config.storm_seconds
                if storm_until is not None and now >= storm_until:
                    calm(sandbox, config)
                    storm_until = None
                    _say(progress, f"t={now:5.1f}s storm over")
                while len([p for p in fleet.processes if p.poll() is None]) < config.workers:
                    fleet.start_one()
                state = conn.execute("SELECT state FROM community_requests WHERE id = %s", (request_id,)).fetchone()
                if state and state[0] in ("completed", "expired", "rejected") and not events and storm_until is None:
                    run.finished = state[0] == "completed"
                    break
                if now > config.timeout_seconds:
                    break
                time.sleep(0.2)
            run.seconds = time.monotonic() - started
            run.final_states = {rid: str(s) for rid, s in conn.execute(
                "SELECT id, state FROM community_requests").fetchall()}
    finally:
        fleet.stop_all()
        publisher.close()
    run.logs = sorted(logs.glob("*.log"))
    _say(progress, f"done in {run.seconds:.1f}s: {run.final_states}")
    return run


def _disrupt(kind: str, conn: psycopg.Connection[Any], fleet: WorkerFleet, private_redis: PrivateRedis,
             sandbox: SandboxServer, rng: random.Random, config: ChaosConfig) -> Disruption:
    at = time.time()
    if kind == "kill":
        pids = fleet.kill_random(rng)
        return Disruption(at, kind, _in_flight(conn, pids))
    if kind == "redis_restart":
        private_redis.restart()
        return Disruption(at, kind, 0)
    if kind == "pg_drop":
        in_flight = _in_flight(conn, None)
        dbname = conninfo_to_dict(conn.info.dsn).get("dbname")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = %s AND application_name LIKE %s", (dbname, f"{APP_NAME}%"))
        return Disruption(at, kind, in_flight)
    if kind == "storm":
        sandbox.faults.update("fcm", error_rate=0.4, error_status=429, retry_after=1)
        sandbox.faults.update("sendgrid", error_rate=0.4, error_status=rng.choice([500, 503]), retry_after=1)
        return Disruption(at, kind, 0)
    raise ValueError(f"unknown disruption {kind}")


def describe(run: ChaosRun) -> str:
    """A one-paragraph account of what was played."""
    out = io.StringIO()
    kinds: dict[str, int] = {}
    for d in run.disruptions:
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
    out.write(f"{run.config.recipients} residents, {run.config.workers} workers x {run.config.threads} threads, "
              f"{run.seconds:.1f}s; disruptions: {kinds}")
    return out.getvalue()
