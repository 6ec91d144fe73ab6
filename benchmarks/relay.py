"""Relay latency under load: many concurrent sessions, a steady stream of signed inbound texts.

    python benchmarks/relay.py                  # 10,000 sessions, 200 webhooks a second for 30 s
    python benchmarks/relay.py --quick          # 1,000 sessions, 50 a second for 3 s (a smoke run)

Needs ``DATABASE_URL`` and ``REDIS_URL`` (a database of its own is created and dropped). The relay's
HTTP app runs in a process of its own (``run_relay``: uvicorn, uvloop, httptools); this process is the load
generator: it signs every webhook before the clock starts, then writes them at a fixed rate over
keep-alive connections with raw asyncio streams on uvloop (open loop: a slow answer does not slow the
sending, a busy connection makes it open another), so the generator costs little of the shared CPU.
Each text is relayed for real: verified, routed, its body encrypted into the outbox, its id enqueued in
Redis. The provider is excluded: no worker sends. Reported: the client's latency per webhook (p50, p99,
max, over every webhook), how late the generator sent, and CPU milliseconds per webhook of the relay
process and of the load generator.
Results go to ``benchmarks/results/relay.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import os
import random
import resource
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import psycopg
import uvloop
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
TOKEN = "bench" + "0" * 27


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _build_sessions(conn: psycopg.Connection[Any], sessions: int, per_author: int) -> list[tuple[str, str]]:
    """Authors with one post each, ``per_author`` helpers each, every session active. Returns (helper, proxy)."""
    from dispatcher.relay.phones import encrypt_number, number_hash
    from dispatcher.relay.pool import add_proxy_numbers

    proxies = [f"+1555080{index:04d}" for index in range(per_author)]
    add_proxy_numbers(conn, proxies)
    proxy_ids = [row[0] for row in conn.execute("SELECT id FROM relay_proxy_numbers ORDER BY id").fetchall()]
    authors = sessions // per_author
    numbers = [f"+1556{index:07d}" for index in range(authors)] + [f"+1557{index:07d}" for index in range(sessions)]
    with conn.cursor().copy("COPY relay_phones (number_hmac, number_encrypted, confirmed_at) FROM STDIN") as copy:
        for number in numbers:
            copy.write_row((number_hash(number), encrypt_number(number), datetime.now(UTC)))
    ids = dict(zip(numbers, [row[0] for row in conn.execute("SELECT id FROM relay_phones ORDER BY id")], strict=True))
    conn.execute("INSERT INTO relay_posts (post_id, author_phone_id, state, enabled_at, contact_until)"
                 " SELECT 'post-' || g, g, 'on', now(), now() + interval '30 days' FROM generate_series(1, %s) g",
                 (authors,))
    pairs: list[tuple[str, str]] = []
    with conn.cursor().copy("COPY relay_pairs (id, low_phone, high_phone) FROM STDIN") as copy:
        for index in range(sessions):
            copy.write_row((index + 1, ids[numbers[index // per_author]], ids[numbers[authors + index]]))
    with conn.cursor().copy("COPY relay_participants (phone_id, proxy_id, pair_id) FROM STDIN") as copy:
        for index in range(sessions):
            copy.write_row((ids[numbers[index // per_author]], proxy_ids[index % per_author], index + 1))
            copy.write_row((ids[numbers[authors + index]], proxy_ids[0], index + 1))
            pairs.append((numbers[authors + index], proxies[0]))
    conn.execute("SELECT setval('relay_pairs_id_seq', %s)", (sessions,))
    conn.execute("INSERT INTO relay_sessions (pair_id, post_id, contacter_phone_id, channel, state, expires_at)"
                 " SELECT p.id, 'post-' || p.low_phone, p.high_phone, 'sms', 'active', now() + interval '7 days'"
                 " FROM relay_pairs p")
    conn.execute("ANALYZE")
    return pairs


@dataclass
class LoadResult:
    """What the load generator saw: each webhook's latency and how late after its schedule it went out."""

    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    connections: int = 0


def signed_requests(url: str, pairs: list[tuple[str, str]], total: int, seed: int = 7) -> list[bytes]:
    """Every webhook as the bytes of one HTTP/1.1 request, signed before the clock starts."""
    from dispatcher.sandbox.twilio import twilio_signature

    parts = urlsplit(url)
    rng = random.Random(seed)
    requests: list[bytes] = []
    for _ in range(total):
        helper, proxy = pairs[rng.randrange(len(pairs))]
        form = {"From": helper, "To": proxy, "Body": "I saw it near the school", "MessageSid": uuid.uuid4().hex}
        body = urlencode(form).encode()
        head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"X-Twilio-Signature: {twilio_signature(TOKEN, url, form)}\r\nContent-Length: {len(body)}\r\n\r\n")
        requests.append(head.encode() + body)
    return requests


async def _answer(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 answer; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(head[9:12])


async def _load(url: str, requests: list[bytes], rate: float, connections: int = 16) -> LoadResult:
    """Send ``requests`` open loop at ``rate`` a second over keep-alive connections (more are opened when
    all are busy, so a slow answer never delays the next send); time each from its write to its answer."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    # First in, first out: every connection stays busy enough for the server's keep-alive timeout.
    idle = collections.deque([await asyncio.open_connection(host, port) for _ in range(connections)])
    result = LoadResult(connections=connections)
    failures = 0

    async def one(request: bytes, due: float) -> None:
        nonlocal failures
        if idle:
            reader, writer = idle.popleft()
        else:
            reader, writer = await asyncio.open_connection(host, port)
            result.connections += 1
        started = time.perf_counter()
        writer.write(request)
        status = await _answer(reader)
        result.latencies.append(time.perf_counter() - started)
        result.lags.append(started - due)
        failures += status != 200
        idle.append((reader, writer))

    tasks = []
    start = time.perf_counter() + 0.01
    for index, request in enumerate(requests):
        due = start + index / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(request, due)))
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    if failures:
        raise SystemExit(f"{failures} webhooks failed")
    return result


def percentile(ordered: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list (every value counts; none is dropped as an outlier)."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("the relay process did not start") from None
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sessions", type=int, default=None)
    parser.add_argument("--rate", type=float, default=None, help="webhooks a second")
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    sessions = args.sessions or (1_000 if args.quick else 10_000)
    rate = args.rate or (50.0 if args.quick else 200.0)
    seconds = args.seconds or (3.0 if args.quick else 30.0)
    base_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
    if not base_url or not redis_url:
        raise SystemExit("set DATABASE_URL and REDIS_URL")
    from dispatcher.config import Settings, set_settings
    from dispatcher.db import migrate
    from dispatcher.db.pool import close_pool

    dbname = f"relay_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
    try:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        database_url = make_conninfo(base_url, dbname=dbname)
        home = Path(os.environ.get("DISPATCHER_HOME", ROOT / ".dispatcher" / "bench-relay"))
        set_settings(Settings.from_env().with_(database_url=database_url, redis_url=redis_url, home=home,
                                               twilio_account_sid="AC" + "0" * 32, twilio_auth_token=TOKEN,
                                               relay_public_base_url=server_url))
        with psycopg.connect(database_url, autocommit=True) as conn:
            migrate(conn)
            built = time.perf_counter()
            pairs = _build_sessions(conn, sessions, per_author=10)
            built = time.perf_counter() - built
        env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "DISPATCHER_HOME": str(home),
               "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": TOKEN,
               "RELAY_PUBLIC_BASE_URL": server_url}
        port = sock.getsockname()[1]
        sock.close()
        _flush_relay_queue()  # ids enqueued counts this run's only
        server = subprocess.Popen([sys.executable, "-c", "from dispatcher.relay.webhooks import run_relay; "
                                   f"run_relay('127.0.0.1', {port})"], env=env, cwd=ROOT)
        try:
            _wait_for_port(port)
            url = server_url + "/relay/twilio/sms"
            uvloop.run(_load(url, signed_requests(url, pairs[:100], 200, seed=1), 100))  # warm-up: connections
            requests = signed_requests(url, pairs, int(rate * seconds))
            load_before = os.getloadavg()[0]
            cpu, server_cpu = _cpu(), _process_cpu(server.pid)
            result = uvloop.run(_load(url, requests, rate))
            enqueued = _wait_for_enqueued(redis_url, 200 + len(requests))
            cpu, server_cpu = _cpu() - cpu, _process_cpu(server.pid) - server_cpu
        finally:
            server.terminate()
            server.wait(timeout=30)
        with psycopg.connect(database_url) as conn:
            stored = conn.execute("SELECT count(*) FROM relay_outbox").fetchone()
        report(Run(sessions, rate, seconds, result, cpu, server_cpu, built, stored[0] if stored else 0, enqueued,
                   load_before), args.quick)
    finally:
        _flush_relay_queue()
        close_pool()
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def _flush_relay_queue() -> None:
    from dispatcher.relay.actors import RELAY_QUEUE, broker

    broker.flush(RELAY_QUEUE)


def _relay_queue_key() -> str:
    from dispatcher.queues import NAMESPACE
    from dispatcher.relay.actors import RELAY_QUEUE

    return f"{NAMESPACE}:{RELAY_QUEUE}.msgs"


def _wait_for_enqueued(redis_url: str, expected: int, timeout: float = 10.0) -> int:
    """Messages on the relay queue once the relay's enqueueing thread has caught up (or the timeout)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while True:
        count = int(client.hlen(_relay_queue_key()))
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


@dataclass
class Run:
    sessions: int
    rate: float
    seconds: float
    load: LoadResult
    cpu: float
    server_cpu: float
    built: float
    stored: int
    enqueued: int
    load_average: float


def report(run: Run, quick: bool) -> None:
    ordered, lags = sorted(run.load.latencies), sorted(run.load.lags)
    count = len(ordered)
    command = "python benchmarks/relay.py" + (" --quick" if quick else "")
    lines = [
        "# Relay latency under load", "",
        f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, 1-minute load average "
        f"{run.load_average:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)", "",
        "| sessions | webhooks/s | seconds | webhooks | p50 ms | p99 ms | max ms | relay CPU ms per webhook "
        "| load generator CPU ms per webhook | sends late p99 ms | texts stored | ids enqueued |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {run.sessions:,} | {run.rate:g} | {run.seconds:g} | {count:,} | {percentile(ordered, 0.5) * 1000:.1f} "
        f"| {percentile(ordered, 0.99) * 1000:.1f} | {ordered[-1] * 1000:.1f} "
        f"| {run.server_cpu / count * 1000:.2f} | {run.cpu / count * 1000:.2f} "
        f"| {percentile(lags, 0.99) * 1000:.1f} | {run.stored:,} | {run.enqueued:,} |", "",
        f"Setup of the sessions (bulk COPY) took {run.built:.1f} s. Latency is per signed webhook, every one "
        "counted (nearest-rank percentiles), from the moment its request was written to the moment its answer "
        "was read: signature check, routing, the body encrypted into the outbox, the TwiML answer; the text's "
        "id reaches Redis from the relay's enqueueing thread (ids enqueued counts them, warm-up included). "
        "The provider is excluded (no worker sends). The target is a p99 under 50 ms. "
        "The relay runs in its own process (`run_relay`: uvicorn, uvloop, httptools); the load generator in "
        f"this one sends prebuilt, presigned requests open loop over keep-alive connections (raw asyncio on "
        f"uvloop, {run.load.connections} connections used). \"Sends late\" is how far behind its schedule "
        "the generator wrote a request: small means the generator was not the bottleneck.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "relay.md").write_text(text)


if __name__ == "__main__":
    main()
