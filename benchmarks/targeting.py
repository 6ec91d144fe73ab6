"""Targeting benchmark: this engine against PostGIS ``ST_Covers`` on the same residents, same database.

    python benchmarks/targeting.py [--residents 2200000] [--repeat 5] [--skip-setup] [--reload]
                                   [--database NAME] [--only NAME] [--no-footprint]

A small run to check the script (about a minute): ``--residents 100000 --repeat 1 --database
dispatcher_bench_targeting_small``.

Steps:

1. setup: install PostGIS (Debian's ``postgresql-15-postgis-3``) for the local PostgreSQL 15 and create
   the benchmark database with the project's migrations and ``CREATE EXTENSION postgis``;
2. data: a synthetic metro of 2.2 million residents clustered like a city (a dense centre, several
   town centres, suburbs, a sparse background), loaded with COPY; the same rows carry a
   ``geometry(Point, 4326)`` with a GiST index for PostGIS, and the H3 res-15 ``cell`` for the engine;
3. areas shaped like real boundaries: districts of hundreds to thousands of vertices with fractal edges
   (1-2k residents), a sparse country of hundreds of islands with one island split at the antimeridian
   (its residents are loaded too), corridors along a river and a road, and the earlier areas from a
   neighbourhood to a county (a coastline of tens of thousands of vertices, holes, two parts);
4. for each area, end to end from the GeoJSON text to the ids written to a file: the engine
   (``parse_area`` + ``match_area`` with the ``COPY`` sink) and PostGIS
   (``COPY (SELECT id FROM residents WHERE ST_Covers(ST_GeomFromGeoJSON(...), geom)) TO STDOUT``),
   alternating, warm cache, median of ``--repeat`` runs; the two id sets must be identical;
5. the thin shapes of issue 15 (a 0.1 m strip from -80° to 80°, combs of 40 and 4,000 vertices) and the
   largest accepted areas through ``dispatcher target`` and ``dispatcher preview`` in a fresh process
   each: peak RSS and CPU seconds, refused or not;
6. results: ``benchmarks/results/targeting.md`` (tables) and ``benchmarks/results/targeting.png``.

Needs the ``bench`` extra (matplotlib) and ``DATABASE_URL`` pointing at the server (default
``postgresql://root@127.0.0.1:5432/postgres``); the benchmark database is ``dispatcher_bench_targeting``.

Over 500 lines on purpose: a benchmark is read and run as one script (data, areas, both engines,
the report), and splitting it would scatter what a reader compares side by side.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3
import numpy as np
import psycopg
import shapely
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from shapely import affinity
from shapely.geometry import LineString, MultiPolygon, Polygon, box, mapping

from dispatcher.config import RESIDENT_CELL_RESOLUTION, Settings
from dispatcher.db import migrate
from dispatcher.targeting.area import parse_area
from dispatcher.targeting.footprint import Footprint, run_measured
from dispatcher.targeting.match import MatchResult, file_sink, match_area
from dispatcher.targeting.shapes import thin_comb, thin_strip

Connection = psycopg.Connection[Any]
BENCH_DB = "dispatcher_bench_targeting"
RESULTS = Path(__file__).resolve().parent / "results"
#: Centre of the synthetic metro (somewhere on a mid-latitude plain; no real place is modelled).
CENTRE_LNG, CENTRE_LAT = -87.70, 41.85
KM_LAT = 1 / 111.2
KM_LNG = 1 / (111.2 * np.cos(np.radians(CENTRE_LAT)))
#: The archipelago: a sparse island country across the antimeridian (no real place is modelled).
ISLANDS_LNG, ISLANDS_LAT = 179.0, -17.5
#: Its share of the residents (1 in 55: about 40,000 of 2.2 million).
ISLANDS_SHARE = 1 / 55

#: The baseline: the same residents through a GiST index and PostGIS's exact predicate. The GeoJSON is
#: inlined as a literal so the planner folds it into one constant geometry (as a bound parameter it was
#: parsed again for every row, a hundred times slower).
POSTGIS_IDS_SQL = "SELECT id FROM residents WHERE ST_Covers(ST_GeomFromGeoJSON({}), geom)"


# ----------------------------------------------------------------------------------------------- setup
def install_postgis() -> None:
    """Install PostGIS for the local PostgreSQL 15 (Debian package), if it is not there yet."""
    if Path("/usr/share/postgresql/15/extension/postgis.control").exists():
        return
    print("installing postgresql-15-postgis-3 ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "postgresql-15-postgis-3"], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def bench_url(server_url: str, database: str = BENCH_DB) -> str:
    params = conninfo_to_dict(server_url)
    params["dbname"] = database
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def create_database(server_url: str, database: str, reload: bool) -> bool:
    """Create the benchmark database; True when it must be (re)loaded."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if exists and not reload:
            with psycopg.connect(bench_url(server_url, database)) as conn:
                row = conn.execute("SELECT count(*) FROM residents").fetchone()
                if row and row[0] > 0:
                    return False
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with psycopg.connect(bench_url(server_url, database)) as conn:
        migrate(conn)
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        conn.execute("ALTER TABLE residents ADD COLUMN geom geometry(Point, 4326)")
    return True


# ------------------------------------------------------------------------------------------------ data
def synthetic_metro(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """(lng, lat) of ``n`` residents: a dense centre, town centres, suburbs and a sparse background."""
    rng = np.random.default_rng(seed)
    # (share, x km, y km, sigma km): downtown, inner towns, outer towns, suburbs, background.
    clusters = [(0.22, 0, 0, 3.0), (0.06, 8, 5, 2.0), (0.06, -7, 9, 2.5), (0.05, 5, -10, 2.0),
                (0.05, -12, -6, 3.0), (0.04, 20, 14, 2.5), (0.04, -22, 18, 3.0), (0.04, 25, -20, 3.5),
                (0.04, -18, -24, 2.5), (0.28, 0, 0, 16.0)]
    counts = rng.multinomial(n, [c[0] for c in clusters] + [1 - sum(c[0] for c in clusters)])
    xs, ys = [], []
    for (_, cx, cy, sigma), count in zip(clusters, counts[:-1], strict=True):
        xs.append(rng.normal(cx, sigma, count))
        ys.append(rng.normal(cy, sigma, count))
    xs.append(rng.uniform(-60, 60, counts[-1]))  # sparse rural background
    ys.append(rng.uniform(-60, 60, counts[-1]))
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = rng.permutation(n)  # ids in no spatial order, as in a real resident table
    return CENTRE_LNG + x[order] * KM_LNG, CENTRE_LAT + y[order] * KM_LAT


@functools.cache
def archipelago() -> tuple[list[Polygon], list[Polygon]]:
    """(islands, the two halves of the island cut by the antimeridian): hundreds of small islands."""
    rng = np.random.default_rng(11)
    islands: list[Polygon] = []
    shores: list[Polygon] = []
    while len(islands) < 300:
        lng = ISLANDS_LNG + rng.uniform(-2.5, 2.5)
        lat = ISLANDS_LAT + rng.uniform(-2.0, 2.0)
        radius = float(np.clip(rng.lognormal(0.3, 0.7), 0.3, 8.0))
        island = island_blob(lng, lat, radius, int(np.clip(radius * 40, 24, 300)), len(islands))
        shore = island.buffer(0.01)
        if abs(lng - 180) < 0.3 or (shores and shapely.intersects(np.array(shores), shore).any()):
            continue
        islands.append(island)
        shores.append(shore)
    split = island_blob(180.0, ISLANDS_LAT + 0.4, 5.0, 200, 999)
    east = split.intersection(box(179.0, -90, 180.0, 90))
    west = affinity.translate(split.intersection(box(180.0, -90, 181.0, 90)), xoff=-360.0)
    return [_wrap(i) for i in islands], [east, west]


def _wrap(polygon: Polygon) -> Polygon:
    """An island east of 180° moved to the western hemisphere (GeoJSON longitudes stay in ±180)."""
    return affinity.translate(polygon, xoff=-360.0) if polygon.bounds[0] > 180 else polygon


def island_blob(lng: float, lat: float, radius_km: float, vertices: int, seed: int) -> Polygon:
    """An irregular island around (lng, lat), edges noisy down to the vertex scale."""
    x, y = _fractal_ring(radius_km, vertices, seed)
    km_lng = 1 / (111.2 * np.cos(np.radians(lat)))
    polygon = Polygon(np.c_[lng + x * km_lng, lat + y * KM_LAT])
    return polygon if polygon.is_valid else polygon.buffer(0)


def island_residents(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Residents of the archipelago: most around the islands' centres, some on boats and reefs."""
    rng = np.random.default_rng(12)
    islands, halves = archipelago()
    centres = np.array([(p.centroid.x, p.centroid.y, math.sqrt(p.area) * 40) for p in [*islands, *halves]])
    on_land = int(n * 0.85)
    pick = rng.integers(0, len(centres), on_land)
    lng = centres[pick, 0] + rng.normal(0, 1, on_land) * centres[pick, 2] * KM_LNG * 0.5
    lat = centres[pick, 1] + rng.normal(0, 1, on_land) * centres[pick, 2] * KM_LAT * 0.5
    lng = np.concatenate([lng, ISLANDS_LNG + rng.uniform(-2.6, 2.6, n - on_land)])
    lat = np.concatenate([lat, ISLANDS_LAT + rng.uniform(-2.1, 2.1, n - on_land)])
    lng = (lng + 180.0) % 360.0 - 180.0  # both ways across the antimeridian: longitudes stay in [-180, 180)
    return lng, lat


def load_residents(url: str, n: int) -> None:
    metro = synthetic_metro(n - int(n * ISLANDS_SHARE))
    islands = island_residents(int(n * ISLANDS_SHARE))
    order = np.random.default_rng(13).permutation(n)
    lng = np.concatenate([metro[0], islands[0]])[order]
    lat = np.concatenate([metro[1], islands[1]])[order]
    started = time.perf_counter()
    print(f"loading {n:,} residents ...", flush=True)
    with psycopg.connect(url) as conn:
        conn.execute("DROP INDEX IF EXISTS residents_cell_idx")
        with conn.cursor() as cur, cur.copy("COPY residents (id, lat, lng, cell, geom) FROM STDIN") as copy:
            batch = io.StringIO()
            for i, (x, y) in enumerate(zip(lng.tolist(), lat.tolist(), strict=True), start=1):
                cell = h3.latlng_to_cell(y, x, RESIDENT_CELL_RESOLUTION)
                batch.write(f"{i}\t{y!r}\t{x!r}\t{cell}\tSRID=4326;POINT({x!r} {y!r})\n")
                if i % 200_000 == 0:
                    copy.write(batch.getvalue())
                    batch = io.StringIO()
            copy.write(batch.getvalue())
        print("  indexes ...", flush=True)
        conn.execute("CREATE INDEX residents_cell_idx ON residents (cell) INCLUDE (id, lng, lat)")
        conn.execute("CREATE INDEX residents_geom_idx ON residents USING gist (geom)")
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) residents")
    print(f"  loaded in {time.perf_counter() - started:.0f} s", flush=True)


# ----------------------------------------------------------------------------------------------- areas
def blob(cx_km: float, cy_km: float, radius_km: float, vertices: int, seed: int,
         roughness: float = 0.25) -> Polygon:
    """An irregular, concave, valid polygon around a point: a radius wobbling with the angle."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = np.ones_like(t)
    for k in range(2, 9):  # a few lobes make it concave
        r += roughness / k * rng.normal() * np.sin(k * t + rng.uniform(0, 2 * np.pi))
    if vertices > 1000:  # a coastline: fine wiggles at every scale, kept small so the ring stays simple
        for k in (37, 101, 263, 997, 2311):
            r += 0.05 * (37 / k) ** 0.6 * np.sin(k * t + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.35, None) * radius_km
    x = CENTRE_LNG + (cx_km + r * np.cos(t)) * KM_LNG
    y = CENTRE_LAT + (cy_km + r * np.sin(t)) * KM_LAT
    polygon = Polygon(np.c_[x, y])
    assert polygon.is_valid, "generated area is not valid"
    return polygon


def _fractal_ring(radius_km: float, vertices: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) km of a ring whose radius wobbles at every scale (amplitude falling as k^-0.8, like a
    real boundary following streets, streams and parcels), down to a few vertices."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = np.ones_like(t)
    for k in range(2, 9):
        r += 0.25 / k * rng.normal() * np.sin(k * t + rng.uniform(0, 2 * np.pi))
    for k in np.unique(np.geomspace(9, max(vertices / 3, 10), 40).astype(int)):
        r += 0.17 * k**-0.8 * rng.normal() * np.sin(k * t + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.35, None) * radius_km
    return r * np.cos(t), r * np.sin(t)


def fractal_district(cx_km: float, cy_km: float, radius_km: float, vertices: int) -> Polygon:
    """A city district with a fractal boundary, in the metro."""
    x, y = _fractal_ring(radius_km, vertices, vertices)
    polygon = Polygon(np.c_[CENTRE_LNG + (cx_km + x) * KM_LNG, CENTRE_LAT + (cy_km + y) * KM_LAT])
    assert polygon.is_valid, "generated district is not valid"
    return polygon


def corridor(points_km: list[tuple[float, float]], width_m: float, wiggle: float, seed: int) -> Polygon:
    """A corridor ``width_m`` wide along a meandering line through ``points_km`` (a river or a road)."""
    rng = np.random.default_rng(seed)
    line = LineString([(CENTRE_LNG + x * KM_LNG, CENTRE_LAT + y * KM_LAT) for x, y in points_km])
    along = np.linspace(0, 1, 600)
    base = np.array([line.interpolate(f, normalized=True).coords[0] for f in along])
    normal = np.gradient(base, axis=0)[:, ::-1] * [-1, 1]
    normal /= np.hypot(*normal.T)[:, None]
    offset = sum(wiggle * rng.normal() / k * np.sin(k * np.pi * along + rng.uniform(0, 6)) for k in range(3, 60, 4))
    path = base + normal * (offset * KM_LAT)[:, None]
    return LineString(path).buffer(width_m / 2 / 111_200, quad_segs=2)


def areas() -> list[tuple[str, dict[str, Any]]]:
    """(name, GeoJSON): real-looking districts, a sparse country, corridors, a neighbourhood to a county."""
    islands, halves = archipelago()
    country = MultiPolygon([*islands, *halves])
    assert country.is_valid, "generated country is not valid"
    district = blob(6, 4, 2.2, 180, 2)
    holes = [blob(5.6, 3.8, 0.4, 40, 21, 0.1).exterior.coords, blob(6.8, 4.6, 0.3, 40, 22, 0.1).exterior.coords]
    with_holes = Polygon(district.exterior.coords, holes)
    two_parts = MultiPolygon([blob(-7, 9, 2.0, 120, 5), blob(5, -10, 1.6, 90, 6)])
    chosen: list[tuple[str, Polygon | MultiPolygon]] = [
        ("district, 400 vertices, fractal edge", fractal_district(14, -3, 1.3, 400)),
        ("district, 1,500 vertices, fractal edge", fractal_district(-10, -14, 1.25, 1500)),
        ("district, 3,000 vertices, fractal edge", fractal_district(30, 5, 2.6, 3000)),
        (f"country, {len(country.geoms)} islands, split at 180°", country),
        ("river corridor, 300 m x 60 km", corridor([(-30, -20), (-5, -2), (10, 3), (28, 22)], 300, 1.5, 31)),
        ("road corridor, 100 m x 40 km", corridor([(-25, 10), (0, 1), (18, -12)], 100, 0.3, 32)),
        ("neighbourhood", blob(20, 14, 0.3, 24, 1, 0.15)),
        ("district with 2 holes", with_holes),
        ("two towns (MultiPolygon)", two_parts),
        ("city", blob(0, 0, 7.0, 400, 3)),
        ("county coastline, 40k vertices", blob(1, 0, 20.0, 40_000, 4, 0.18)),
        ("county", blob(-1, 1, 22.0, 800, 8, 0.2)),
    ]
    return [(name, mapping(area)) for name, area in chosen]


# --------------------------------------------------------------------------------------------- running
@dataclass
class Timing:
    name: str
    residents: int
    vertices: int
    engine_s: float
    #: CPU seconds of the engine's own process (the figure that load on a shared machine moves least).
    engine_cpu_s: float
    postgis_s: float
    identical: bool
    detail: MatchResult


def run_engine(conn: Connection, worker: Connection, text: str, out: Path,
               settings: Settings) -> tuple[float, MatchResult]:
    started = time.perf_counter()
    area = parse_area(text, max_vertices=settings.max_area_vertices, max_area_km2=settings.max_area_km2)
    with out.open("wb") as f:
        result = match_area(conn, area, sink=file_sink(f), workers=[worker])
    return time.perf_counter() - started, result


def run_postgis(conn: Connection, text: str, out: Path) -> float:
    """The same sink; JIT off as for the engine (it only adds compile time here too)."""
    started = time.perf_counter()
    with out.open("wb") as f, conn.transaction():
        conn.execute("SET LOCAL jit = off")
        file_sink(f)(conn, sql.SQL(POSTGIS_IDS_SQL).format(sql.Literal(text)), [])
    return time.perf_counter() - started


def read_ids(path: Path) -> np.ndarray:
    data = path.read_bytes()
    return np.sort(np.array(data.split(), dtype=np.int64)) if data else np.zeros(0, np.int64)


def median_time(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def benchmark(url: str, repeat: int, only: str | None = None) -> list[Timing]:
    settings = Settings()
    tmp = Path(tempfile.mkdtemp(prefix="targeting-bench-"))
    timings: list[Timing] = []
    with psycopg.connect(url, autocommit=True) as conn, psycopg.connect(url, autocommit=True) as worker:
        for name, geojson in areas():
            if only and only not in name:
                continue
            text = json.dumps(geojson)
            vertices = sum(len(r) - 1 for p in _polygons(geojson) for r in p)
            engine_out, postgis_out = tmp / "engine.ids", tmp / "postgis.ids"
            run_engine(conn, worker, text, engine_out, settings)  # warm both
            first = run_postgis(conn, text, postgis_out)
            engine_times, engine_cpu, postgis_times, detail = [], [], [], None
            for _ in range(repeat):
                cpu = time.process_time()
                seconds, detail = run_engine(conn, worker, text, engine_out, settings)
                engine_cpu.append(time.process_time() - cpu)
                engine_times.append(seconds)
                if first < 10:  # PostGIS takes minutes on a coastline: its first run is then the measure
                    postgis_times.append(run_postgis(conn, text, postgis_out))
            postgis_times = postgis_times or [first]
            assert detail is not None
            ours, theirs = read_ids(engine_out), read_ids(postgis_out)
            identical = bool(np.array_equal(ours, theirs))
            timing = Timing(name, len(theirs), vertices, statistics.median(engine_times),
                            statistics.median(engine_cpu), statistics.median(postgis_times), identical, detail)
            timings.append(timing)
            t = detail.timings
            print(f"{name:34s} {timing.residents:>9,} residents  engine {timing.engine_s * 1000:8.1f} ms  "
                  f"(cpu {timing.engine_cpu_s * 1000:6.1f})  PostGIS {timing.postgis_s * 1000:8.1f} ms  "
                  f"x{timing.postgis_s / timing.engine_s:5.1f}  "
                  f"identical={identical}  [cover {t.cover * 1000:.0f} cand {t.candidates * 1000:.0f} "
                  f"refine {t.refine * 1000:.0f} write {t.write * 1000:.0f} ms; "
                  f"{detail.boundary_candidates:,} candidates, {detail.interior_ranges:,}+"
                  f"{detail.boundary_ranges:,} ranges; plan {plan_name(detail)}]", flush=True)
            if not identical:
                print(f"  MISMATCH: engine only {np.setdiff1d(ours, theirs)[:20]}, "
                      f"PostGIS only {np.setdiff1d(theirs, ours)[:20]}", flush=True)
    return timings


@dataclass
class Measured:
    shape: str
    command: str
    refused: bool
    footprint: Footprint


def footprints(url: str) -> list[Measured]:
    """The thin shapes and the largest accepted areas through the CLI, each in a fresh process."""
    named = dict(areas())
    shapes: list[tuple[str, dict[str, Any]]] = [
        ("strip 1e-6° wide, -80° to 80° (5 vertices, 1.4 km²)", mapping(thin_strip())),
        ("comb of 10 such strips (40 vertices, 14 km²)", mapping(thin_comb(10))),
        ("comb of 1,000 such strips (4,000 vertices, 1,395 km²)", mapping(thin_comb(1000))),
        *[(name, geojson) for name, geojson in named.items() if name.startswith(("county", "country", "river"))],
    ]
    tmp = Path(tempfile.mkdtemp(prefix="targeting-footprint-"))
    # A Redis URL, so the CLI starts no embedded Redis of its own (targeting never uses it; one was left
    # running after each run).
    env = {**os.environ, "DATABASE_URL": url, "DISPATCHER_HOME": str(tmp),
           "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")}
    measured: list[Measured] = []
    for index, (name, geojson) in enumerate(shapes):
        path = tmp / f"area{index}.geojson"
        path.write_text(json.dumps(geojson), encoding="utf-8")
        for command in ("target", "preview"):
            extra = ["--geojson", str(tmp / "layers.geojson")] if command == "preview" else []
            footprint = run_measured(f"from dispatcher.cli import app\napp([{command!r}, {str(path)!r}, *{extra!r}])",
                                     env=env)
            refused = "boundary too long for its area" in footprint.output
            if footprint.returncode != 0 and not refused:
                raise RuntimeError(f"{command} {name} failed: {footprint.output[-2000:]}")
            measured.append(Measured(name, command, refused, footprint))
            print(f"{command:8s} {name:58s} {'refused ' if refused else 'accepted'} "
                  f"peak {footprint.peak_mb:6.0f} MB  cpu {footprint.cpu_seconds:5.2f} s", flush=True)
    return measured


def _polygons(geojson: dict[str, Any]) -> list[Any]:
    return [geojson["coordinates"]] if geojson["type"] == "Polygon" else list(geojson["coordinates"])


# --------------------------------------------------------------------------------------------- results
def plan_name(detail: MatchResult) -> str:
    plan = detail.plan
    return "cover" if plan is None else f"{plan.name} (res {plan.chosen.band_resolution})"


def write_results(timings: list[Timing], residents: int, repeat: int, measured: list[Measured],
                  label: str, command: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    lines = [
        f"`{command}`", "",
        f"Synthetic metro and island country of {residents:,} residents; PostgreSQL 15 + PostGIS 3 on the same",
        f"machine, warm cache, median of {repeat} runs, end to end from GeoJSON text to the ids written to a file.",
        f"2 cores shared with other work: load average {os.getloadavg()[1]:.1f} over the last 5 minutes.",
        "",
        "| area | vertices | residents inside | engine ms | engine CPU ms | PostGIS ms | PostGIS / engine |"
        " identical ids | plan | candidates tested |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|---|---:|",
    ]
    for t in timings:
        lines.append(f"| {t.name} | {t.vertices:,} | {t.residents:,} | {t.engine_s * 1000:.1f} | "
                     f"{t.engine_cpu_s * 1000:.1f} | "
                     f"{t.postgis_s * 1000:.1f} | {t.postgis_s / t.engine_s:.1f}× | "
                     f"{'yes' if t.identical else 'NO'} | {plan_name(t.detail)} | {t.detail.boundary_candidates:,} |")
    if measured:
        lines += ["", "Footprint of `dispatcher target` and `dispatcher preview`, each in a fresh process "
                  "(kernel's peak RSS and CPU seconds, interpreter and imports included; budget 256 MB, 2 s "
                  "of targeting):", "",
                  "| area | command | outcome | peak RSS MB | CPU s |", "|---|---|---|---:|---:|"]
        lines += [f"| {m.shape} | {m.command} | {'refused: boundary too long' if m.refused else 'done'} | "
                  f"{m.footprint.peak_mb:.0f} | {m.footprint.cpu_seconds:.2f} |" for m in measured]
    (RESULTS / f"{label}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [max(t.residents, 1) for t in timings]
    ax.loglog(xs, [t.engine_s * 1000 for t in timings], "o", label="engine (H3 ranges + exact band)")
    ax.loglog(xs, [t.postgis_s * 1000 for t in timings], "s", label="PostGIS ST_Covers + GiST")
    for t, x in zip(timings, xs, strict=True):  # one area: a line from PostGIS's time down to ours
        ax.plot([x, x], [t.engine_s * 1000, t.postgis_s * 1000], color="grey", alpha=0.4, linewidth=1)
    for t, x in zip(timings, xs, strict=True):
        ax.annotate(t.name, (x, t.engine_s * 1000), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("residents in the area")
    ax.set_ylabel("time, GeoJSON to ids written (ms)")
    ax.set_title(f"Targeting on {residents:,} residents")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"{label}.png", dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--residents", type=int, default=2_200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-setup", action="store_true", help="do not try to install PostGIS")
    parser.add_argument("--reload", action="store_true", help="regenerate and reload the residents")
    parser.add_argument("--only", help="run only the areas whose name contains this (results not written)")
    parser.add_argument("--database", default=BENCH_DB, help="name of the benchmark database")
    parser.add_argument("--no-footprint", action="store_true", help="skip the peak-RSS runs of the CLI")
    parser.add_argument("--label", default="targeting", help="results/LABEL.md and results/LABEL.png")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", "postgresql://root@127.0.0.1:5432/postgres")
    if not args.skip_setup:
        install_postgis()
    url = bench_url(server, args.database)
    if create_database(server, args.database, args.reload):
        load_residents(url, args.residents)
    timings = benchmark(url, args.repeat, args.only)
    measured = [] if args.no_footprint or args.only else footprints(url)
    if not args.only:
        command = "python benchmarks/targeting.py " + " ".join(sys.argv[1:])
        write_results(timings, args.residents, args.repeat, measured, args.label, command)
    print(f"results in {RESULTS}")
    return 0 if all(t.identical for t in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
