"""Relay latency under load: many concurrent sessions, a steady stream of signed inbound texts.

    python benchmarks/relay.py                  # 10,000 sessions, 200 webhooks a second for 30 s
    python benchmarks/relay.py --quick          # 1,000 sessions, 50 a second for 3 s (a smoke run)

Needs ``DATABASE_URL`` and ``REDIS_URL`` (a database of its own is created and dropped). The relay's
HTTP app runs in a process of its own (``run_relay``: uvicorn, uvloop, httptools); one load-generator
process sends signed Twilio webhooks at a fixed rate (asyncio and aiohttp, open loop: a slow answer does
not slow the sending).
Each text is relayed for real: verified, routed, its body encrypted into the outbox, its id enqueued in
Redis. The provider is excluded: no worker sends. Reported: the client's latency per webhook (p50, p99)
and CPU milliseconds per webhook of the relay process and of the load generator.
Results go to ``benchmarks/results/relay.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
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


async def _load(url: str, pairs: list[tuple[str, str]], rate: float, seconds: float) -> list[float]:
    from dispatcher.sandbox.twilio import twilio_signature

    latencies: list[float] = []
    failures = 0

    async def one(session: aiohttp.ClientSession, helper: str, proxy: str) -> None:
        nonlocal failures
        form = {"From": helper, "To": proxy, "Body": "I saw it near the school", "MessageSid": uuid.uuid4().hex}
        headers = {"X-Twilio-Signature": twilio_signature(TOKEN, url, form)}
        started = time.perf_counter()
        async with session.post(url, data=form, headers=headers) as answer:
            await answer.read()
            latencies.append(time.perf_counter() - started)
            failures += answer.status != 200

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for index in range(total):
            await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(session, *random.choice(pairs))))
        await asyncio.gather(*tasks)
    if failures:
        raise SystemExit(f"{failures} webhooks failed")
    return latencies


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
        server = subprocess.Popen([sys.executable, "-c", "from dispatcher.relay.webhooks import run_relay; "
                                   f"run_relay('127.0.0.1', {port})"], env=env, cwd=ROOT)
        try:
            _wait_for_port(port)
            url = server_url + "/relay/twilio/sms"
            asyncio.run(_load(url, pairs[:50], 20, 1))  # warm-up: pool connections, code paths
            cpu, server_cpu = _cpu(), _process_cpu(server.pid)
            latencies = asyncio.run(_load(url, pairs, rate, seconds))
            cpu, server_cpu = _cpu() - cpu, _process_cpu(server.pid) - server_cpu
        finally:
            server.terminate()
            server.wait(timeout=30)
        with psycopg.connect(database_url) as conn:
            queued = conn.execute("SELECT count(*) FROM relay_outbox").fetchone()
        report(sessions, rate, seconds, latencies, cpu, server_cpu, built, queued[0] if queued else 0, args.quick)
    finally:
        import dramatiq

        from dispatcher.relay.actors import RELAY_QUEUE

        dramatiq.get_broker().flush(RELAY_QUEUE)
        close_pool()
        with psycopg.connect(base_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def report(sessions: int, rate: float, seconds: float, latencies: list[float], cpu: float, server_cpu: float,
           built: float, queued: int, quick: bool) -> None:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
    command = "python benchmarks/relay.py" + (" --quick" if quick else "")
    lines = [
        "# Relay latency under load", "",
        f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average "
        f"{os.getloadavg()[0]:.1f} at the end)", "",
        "| sessions | webhooks/s | seconds | webhooks | p50 ms | p99 ms | relay CPU ms per webhook "
        "| load generator CPU ms per webhook | texts queued |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {sessions:,} | {rate:g} | {seconds:g} | {len(latencies):,} | {p50:.1f} | {p99:.1f} "
        f"| {server_cpu / len(latencies) * 1000:.2f} | {cpu / len(latencies) * 1000:.2f} | {queued:,} |", "",
        f"Setup of the sessions (bulk COPY) took {built:.1f} s. Latency is per signed webhook as the client saw it: "
        "signature check, routing, the body encrypted into the outbox, the text's id enqueued in Redis, the "
        "TwiML answer. The provider is excluded (no worker sends). The target is a p99 under 50 ms. "
        "The relay runs in its own process (`run_relay`: uvicorn, uvloop, httptools), the load generator in this one.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "relay.md").write_text(text)


if __name__ == "__main__":
    main()
