"""Feed benchmark: which requests cover a resident, against an index of published requests.

    python benchmarks/feed.py [--requests 10000] [--residents 1000000] [--lookups 20000]
                              [--http-lookups 5000] [--reload]
    python benchmarks/feed.py --requests 500 --residents 50000 --lookups 2000 --http-lookups 500   # small

Steps:

1. a database ``dispatcher_bench_feed`` with the project's migrations; the synthetic metro of
   ``benchmarks/targeting.py`` (clustered residents) loaded with COPY;
2. requests of realistic sizes, centred where residents live: mostly neighbourhoods (0.2-1 km, a few
   dozen vertices), districts (1-4 km), some towns and cities (4-10 km, hundreds of vertices) and a few
   counties (15-25 km, one in ten a coastline of 20,000 vertices); published over the last 180 days, so
   about two thirds have a closed response window (they stay on the feed, after the open ones). Each
   goes through ``lifecycle.accept``, which indexes its cover exactly as in production;
3. in-process: the areas prepared first (``warm_prepared_areas``, as ``dispatcher api`` does when it
   starts; its time is reported), then ``requests_for_resident`` at random residents (first page, 20
   requests), one thread; p50, p99, lookups per second and CPU time per lookup. Every lookup is checked: the
   whole walk (every page) must equal shapely's ``covers`` over all areas, in the feed's order (open
   first, newest first, then id);
4. over HTTP: ``dispatcher api`` under uvicorn (one process, access log off), a keep-alive client
   calling ``GET /v1/residents/{id}/requests`` one at a time (p50, p99), then 32 connections at once
   (lookups per second); every answer's ids are checked against the oracle's first page; then
   ``GET /v1/requests/{id}`` (the area a resident opens) for requests seen on those pages;
5. results: ``benchmarks/results/feed.md`` and ``feed.json``.

``DATABASE_URL`` names the server (default ``postgresql://root@127.0.0.1:5432/postgres``) and
``REDIS_URL`` a Redis (default ``redis://127.0.0.1:6379/0``): accepting a request whose window has
already closed announces it on the request-events stream, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import h3.api.basic_int as h3
import numpy as np
import orjson
import psycopg
import shapely
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from shapely.geometry import MultiPolygon, Polygon, mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targeting import CENTRE_LAT, CENTRE_LNG, KM_LAT, KM_LNG, blob, synthetic_metro

from dispatcher import lifecycle
from dispatcher.config import RESIDENT_CELL_RESOLUTION
from dispatcher.contract import parse_request
from dispatcher.db import migrate
from dispatcher.feed.lookup import prepared_areas, requests_for_resident, warm_prepared_areas

BENCH_DB = "dispatcher_bench_feed"
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789abcdef"
PAGE = 20
#: (share, radius km range, vertices range): neighbourhoods, districts, towns and cities, counties.
SIZES = [(0.70, (0.2, 1.0), (12, 60)), (0.20, (1.0, 4.0), (60, 300)), (0.08, (4.0, 10.0), (200, 800)),
         (0.02, (15.0, 25.0), (800, 5000))]

Connection = psycopg.Connection[Any]


def bench_url(server_url: str) -> str:
    params = conninfo_to_dict(server_url)
    params["dbname"] = BENCH_DB
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def prepare_database(server_url: str, residents: int, requests: int, reload: bool) -> bool:
    """Create and migrate the database; True when it must be (re)loaded."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)).fetchone()
        if exists and not reload:
            with psycopg.connect(bench_url(server_url)) as conn:
                row = conn.execute("SELECT (SELECT count(*) FROM residents), (SELECT count(*) FROM feed_requests)"
                                   ).fetchone()
                if row == (residents, requests):
                    return False
        admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{BENCH_DB}"')
    with psycopg.connect(bench_url(server_url)) as conn:
        migrate(conn)
    return True


def load_residents(conn: Connection, lng: np.ndarray, lat: np.ndarray) -> None:
    started = time.perf_counter()
    with conn.cursor() as cur, cur.copy("COPY residents (id, lat, lng, cell) FROM STDIN") as copy:
        batch = io.StringIO()
        for i, (x, y) in enumerate(zip(lng.tolist(), lat.tolist(), strict=True), start=1):
            batch.write(f"{i}\t{y!r}\t{x!r}\t{h3.latlng_to_cell(y, x, RESIDENT_CELL_RESOLUTION)}\n")
            if i % 200_000 == 0:
                copy.write(batch.getvalue())
                batch = io.StringIO()
        copy.write(batch.getvalue())
    conn.commit()
    print(f"  {len(lng):,} residents loaded in {time.perf_counter() - started:.0f} s", flush=True)


def request_areas(n: int, lng: np.ndarray, lat: np.ndarray, seed: int = 16) -> list[Polygon | MultiPolygon]:
    """``n`` areas of realistic sizes, each centred on a resident (requests happen where people live)."""
    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(SIZES), size=n, p=[s[0] for s in SIZES])
    areas: list[Polygon | MultiPolygon] = []
    for i, kind in enumerate(kinds.tolist()):
        _, (r_lo, r_hi), (v_lo, v_hi) = SIZES[kind]
        who = int(rng.integers(len(lng)))
        cx, cy = (lng[who] - CENTRE_LNG) / KM_LNG, (lat[who] - CENTRE_LAT) / KM_LAT
        vertices = 20_000 if kind == 3 and rng.random() < 0.1 else int(rng.integers(v_lo, v_hi + 1))
        areas.append(blob(float(cx), float(cy), float(rng.uniform(r_lo, r_hi)), vertices, seed + i, 0.2))
    return areas


def publish_requests(conn: Connection, areas: list[Polygon | MultiPolygon], seed: int = 17) -> list[datetime]:
    """Accept every request (indexing it for the feed); return their publication times."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    published_at: list[datetime] = []
    started = time.perf_counter()
    for i, area in enumerate(areas):
        published = now - timedelta(seconds=rng.uniform(60, 180 * 86400))
        payload = {
            "id": f"req-{i:06d}", "agency": {"id": "pd-1", "name": "Metro Police"},
            "incident_type": "vehicle_break_in", "details": "Looking for footage of a break-in.",
            "footage_window": {"start": (published - timedelta(hours=12)).isoformat(),
                               "end": (published - timedelta(hours=6)).isoformat()},
            "investigator": {"name": "Det. Example", "phone": "+1 555 0100", "email": "det@pd.example"},
            "area": mapping(area), "investigation_code": f"MPD-{i}",
            "approved_at": (published - timedelta(minutes=1)).isoformat(), "published_at": published.isoformat(),
        }
        with conn.transaction():
            lifecycle.accept(conn, parse_request(json.loads(json.dumps(payload))))
        published_at.append(published)
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1:,} requests indexed ({time.perf_counter() - started:.0f} s)", flush=True)
    conn.commit()
    return published_at


class Oracle:
    """shapely over every area: which requests cover a point, in the feed's order."""

    def __init__(self, conn: Connection) -> None:
        rows = conn.execute("SELECT request_id, published_at, respond_until, area_wkb FROM feed_requests").fetchall()
        self.ids = [str(r[0]) for r in rows]
        self.published = [r[1] for r in rows]
        self.until = [r[2] for r in rows]
        self.tree = shapely.STRtree([shapely.from_wkb(bytes(r[3])) for r in rows])

    def feed(self, lat: float, lng: float, now: datetime) -> list[str]:
        hits = self.tree.query(shapely.Point(lng, lat), predicate="covered_by").tolist()
        hits.sort(key=lambda i: (self.until[i] > now, self.published[i], self.ids[i]), reverse=True)
        return [self.ids[i] for i in hits]


def walk(conn: Connection, resident_id: int) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = requests_for_resident(conn, resident_id, limit=100, cursor=cursor)
        ids.extend(item.request_id for item in page.items)
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def in_process(conn: Connection, oracle: Oracle, lng: np.ndarray, lat: np.ndarray, lookups: int,
               seed: int = 18) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, len(lng) + 1, size=lookups).tolist()
    started = time.perf_counter()
    warm_prepared_areas(conn)
    warm_s = time.perf_counter() - started
    for rid in ids[:200]:  # warm PostgreSQL's cache
        requests_for_resident(conn, rid, limit=PAGE)
    times: list[float] = []
    cpu_started = time.process_time()
    wall_started = time.perf_counter()
    covering: list[int] = []
    for rid in ids:
        started = time.perf_counter()
        page = requests_for_resident(conn, rid, limit=PAGE)
        times.append(time.perf_counter() - started)
        covering.append(len(page.items))
    wall = time.perf_counter() - wall_started
    cpu = time.process_time() - cpu_started
    mismatches = 0
    now = datetime.now(UTC)
    for rid in ids:
        if walk(conn, rid) != oracle.feed(float(lat[rid - 1]), float(lng[rid - 1]), now):
            mismatches += 1
    return {"lookups": lookups, "p50_ms": percentile(times, 50) * 1e3, "p99_ms": percentile(times, 99) * 1e3,
            "max_ms": max(times) * 1e3, "lookups_per_s": lookups / wall, "cpu_us_per_lookup": cpu / lookups * 1e6,
            "mean_on_first_page": statistics.fmean(covering), "mismatches": mismatches, "warm_s": warm_s,
            "prepared_areas": len(prepared_areas()), "prepared_vertices": prepared_areas().vertices}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def over_http(url: str, oracle: Oracle, lng: np.ndarray, lat: np.ndarray, lookups: int,
              seed: int = 19) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "API_TOKEN": TOKEN}
    command = [sys.executable, "-c", "from dispatcher.cli import main; main()", "api", "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            return asyncio.run(_http_run(port, oracle, lng, lat, lookups, seed, server.pid))
        except Exception:
            log.seek(0)
            print(log.read().decode(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            server.terminate()
            server.wait(10)


async def _http_run(port: int, oracle: Oracle, lng: np.ndarray, lat: np.ndarray, lookups: int, seed: int,
                    server_pid: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, len(lng) + 1, size=lookups).tolist()
    mismatches = 0
    errors: list[str] = []
    sizes: list[int] = []
    now = datetime.now(UTC)

    answers: list[tuple[int, list[str]]] = []

    async def one(session: aiohttp.ClientSession, rid: int) -> float:
        started = time.perf_counter()
        async with session.get(f"{base}/v1/residents/{rid}/requests", params={"limit": PAGE}) as response:
            raw = await response.read()
        elapsed = time.perf_counter() - started  # the client's JSON parsing is not the service's time
        sizes.append(len(raw))
        body = orjson.loads(raw)
        if response.status != 200:
            errors.append(f"{response.status}: {body}")
            return elapsed
        # Checked against the oracle after the clock stops: shapely over every area costs the client
        # more than the service's answer, and the two share the machine's two cores.
        answers.append((rid, [card["id"] for card in body["requests"]]))
        return elapsed

    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=32)) as session:
        for _ in range(100):
            try:
                async with session.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        for rid in ids[:100]:
            await one(session, rid)
        times = [await one(session, rid) for rid in ids]
        server_cpu_before = _cpu_seconds(server_pid)
        started = time.perf_counter()
        queue = list(ids)

        async def client() -> None:
            while queue:
                await one(session, queue.pop())

        await asyncio.gather(*(client() for _ in range(32)))
        wall = time.perf_counter() - started
        server_cpu = _cpu_seconds(server_pid) - server_cpu_before
        detail_times: list[float] = []
        detail_sizes: list[int] = []
        for request_id in sorted({request_id for _, got in answers for request_id in got})[:500]:
            started = time.perf_counter()
            async with session.get(f"{base}/v1/requests/{request_id}") as response:
                raw = await response.read()
            detail_times.append(time.perf_counter() - started)
            detail_sizes.append(len(raw))
            if response.status != 200 or orjson.loads(raw)["id"] != request_id:
                errors.append(f"{response.status} for /v1/requests/{request_id}")
    for rid, got in answers:
        if got != oracle.feed(float(lat[rid - 1]), float(lng[rid - 1]), now)[:PAGE]:
            mismatches += 1
    return {"lookups": lookups, "p50_ms": percentile(times, 50) * 1e3, "p99_ms": percentile(times, 99) * 1e3,
            "lookups_per_s_32_connections": lookups / wall, "server_cpu_us_per_lookup": server_cpu / lookups * 1e6,
            "body_kb_p50": percentile(sizes, 50) / 1e3, "body_kb_p99": percentile(sizes, 99) / 1e3,
            "mismatches": mismatches, "errors": len(errors), "first_error": errors[0] if errors else None,
            "detail_requests": len(detail_times), "detail_p50_ms": percentile(detail_times, 50) * 1e3,
            "detail_p99_ms": percentile(detail_times, 99) * 1e3, "detail_kb_p50": percentile(detail_sizes, 50) / 1e3,
            "detail_kb_p99": percentile(detail_sizes, 99) / 1e3}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def index_stats(conn: Connection) -> dict[str, Any]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM feed_requests), (SELECT count(*) FROM feed_cover),"
        " (SELECT count(*) FROM feed_cover WHERE band), pg_total_relation_size('feed_cover'),"
        " pg_total_relation_size('feed_requests'),"
        " (SELECT count(*) FROM feed_requests WHERE respond_until <= now())"
    ).fetchone()
    assert row is not None
    return {"requests": row[0], "cover_rows": row[1], "band_rows": row[2], "cover_mb": row[3] / 1e6,
            "requests_mb": row[4] / 1e6, "closed": row[5]}


def write_results(args: argparse.Namespace, stats: dict[str, Any], index_s: float | None,
                  local: dict[str, Any], http: dict[str, Any] | None, load_start: float) -> None:
    RESULTS.mkdir(exist_ok=True)
    command = "python benchmarks/feed.py " + " ".join(sys.argv[1:])
    load = os.getloadavg()[0]
    (RESULTS / "feed.json").write_text(json.dumps({"command": command, "index": stats, "index_seconds": index_s,
                                                   "in_process": local, "http": http, "load_1min": load,
                                                   "load_1min_start": load_start}, indent=2, default=str) + "\n")
    lines = [
        "# Feed lookup", "", f"`{command}` (1-minute load average at the start: {load_start:.1f}, at the end: "
        f"{load:.1f}; 2 cores shared with three other engineers' work)",
        "", f"{stats['requests']:,} requests indexed ({stats['closed']:,} with a closed window), "
        f"{args.residents:,} residents; {stats['cover_rows']:,} cover rows ({stats['band_rows']:,} band), "
        f"{stats['cover_mb']:.0f} MB with indexes" + (f"; indexed in {index_s:.0f} s through `lifecycle.accept`"
                                                        if index_s else "") + ".",
        "", "| | lookups | p50 | p99 | lookups/s | CPU per lookup | mismatches |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| in-process, first page of {PAGE}, one thread | {local['lookups']:,} | {local['p50_ms']:.2f} ms | "
        f"{local['p99_ms']:.2f} ms | {local['lookups_per_s']:,.0f} | {local['cpu_us_per_lookup']:.0f} µs | "
        f"{local['mismatches']} |",
    ]
    if http:
        lines.append(f"| HTTP, one at a time (keep-alive) | {http['lookups']:,} | {http['p50_ms']:.2f} ms | "
                     f"{http['p99_ms']:.2f} ms | | | {http['mismatches']} |")
        if http["errors"]:
            lines.append(f"| HTTP errors | {http['errors']} | first: {http['first_error']} | | | | |")
        lines.append(f"| HTTP, 32 connections, one uvicorn process | {http['lookups']:,} | | | "
                     f"{http['lookups_per_s_32_connections']:,.0f} | {http['server_cpu_us_per_lookup']:.0f} µs "
                     "(server) | |")
        lines.append(f"| HTTP, `GET /v1/requests/{{id}}` with the area, one at a time | {http['detail_requests']:,} | "
                     f"{http['detail_p50_ms']:.2f} ms | {http['detail_p99_ms']:.2f} ms | | | |")
    lines += ["", f"Areas prepared before the lookups, as `dispatcher api` does at start: {local['prepared_areas']:,} "
              f"areas, {local['prepared_vertices']:,} vertices, in {local['warm_s']:.1f} s."]
    if http:
        lines += ["", f"HTTP answer size: a feed page (items without their areas, with a bbox) p50 "
                  f"{http['body_kb_p50']:,.1f} kB, p99 {http['body_kb_p99']:,.1f} kB; one request with its area "
                  f"p50 {http['detail_kb_p50']:,.1f} kB, p99 {http['detail_kb_p99']:,.1f} kB."]
    lines += ["", f"Mean requests on the first page: {local['mean_on_first_page']:.1f}. A mismatch is a lookup whose "
              "whole walk (in-process) or first page (HTTP) differs from shapely's `covers` over every area, in the "
              "feed's order.", ""]
    (RESULTS / "feed.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--residents", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--http-lookups", type=int, default=5_000, help="0 skips the HTTP part")
    parser.add_argument("--reload", action="store_true", help="rebuild the database even if it is loaded")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    server_url = os.environ.get("DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")
    url = bench_url(server_url)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    lng, lat = synthetic_metro(args.residents)
    index_seconds = None
    if prepare_database(server_url, args.residents, args.requests, args.reload):
        with psycopg.connect(url) as conn:
            load_residents(conn, lng, lat)
            started = time.perf_counter()
            publish_requests(conn, request_areas(args.requests, lng, lat))
            index_seconds = time.perf_counter() - started
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
    with psycopg.connect(url, autocommit=True) as conn:
        stats = index_stats(conn)
        oracle = Oracle(conn)
        local = in_process(conn, oracle, lng, lat, args.lookups)
    http = over_http(url, oracle, lng, lat, args.http_lookups) if args.http_lookups else None
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", flush=True)
    write_results(args, stats, index_seconds, local, http, load_start)
    failed = local["mismatches"] or (http is not None and (http["mismatches"] or http["errors"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
