"""Matching in PostgreSQL (interior ranges + exact boundary band) equals shapely's ``covers``."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3
import numpy as np
import psycopg
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping

from dispatcher.config import RESIDENT_CELL_RESOLUTION, Settings
from dispatcher.errors import InvalidArea
from dispatcher.targeting import match
from dispatcher.targeting.cli_target import print_target, run_target
from dispatcher.targeting.match import count_sink, file_sink, match_area, table_sink

Conn = psycopg.Connection[Any]
M_PER_DEG = 111_195.0


def town() -> Polygon:
    """A concave area with a hole, about 3 km across."""
    t = np.linspace(0, 2 * math.pi, 60, endpoint=False)
    r = (1 + 0.3 * np.sin(3 * t)) * 1500 / M_PER_DEG
    shell = np.c_[-87.7 + r * np.cos(t) / math.cos(math.radians(41.85)), 41.85 + r * np.sin(t)]
    hole = [(-87.705, 41.848), (-87.700, 41.848), (-87.700, 41.852), (-87.705, 41.852)]
    return Polygon(shell, [hole])


def hard_residents(area: Polygon | MultiPolygon, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Residents on vertices, on edges, a hair and a few metres either side, and scattered around."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for part in getattr(area, "geoms", [area]):
        for ring in [part.exterior, *part.interiors]:
            coords = np.asarray(ring.coords)
            start, end = coords[:-1], coords[1:]
            xs.append(start[:, 0])
            ys.append(start[:, 1])
            direction = end - start
            normal = np.c_[-direction[:, 1], direction[:, 0]] / np.hypot(*direction.T)[:, None]
            for t in (0.5, 0.25):
                point = start + t * direction
                xs.append(point[:, 0])
                ys.append(point[:, 1])
                for offset in (1e-11, 0.5 / M_PER_DEG, 5 / M_PER_DEG, 25 / M_PER_DEG):
                    for sign in (1, -1):
                        xs.append(point[:, 0] + sign * offset * normal[:, 0])
                        ys.append(point[:, 1] + sign * offset * normal[:, 1])
    west, south, east, north = area.bounds
    xs.append(rng.uniform(west - 0.01, east + 0.01, count))
    ys.append(rng.uniform(south - 0.01, north + 0.01, count))
    return np.concatenate(xs), np.concatenate(ys)


def load(db: Conn, lng: np.ndarray, lat: np.ndarray) -> np.ndarray:
    ids = np.arange(1, len(lng) + 1, dtype=np.int64)
    with db.cursor() as cur, cur.copy("COPY residents (id, lat, lng, cell) FROM STDIN") as copy:
        for i, x, y in zip(ids.tolist(), lng.tolist(), lat.tolist(), strict=True):
            copy.write_row((i, y, x, h3.latlng_to_cell(y, x, RESIDENT_CELL_RESOLUTION)))
    db.execute("VACUUM ANALYZE residents")
    return ids


def table_ids(db: Conn) -> np.ndarray:
    rows = db.execute("SELECT resident_id FROM matched ORDER BY 1").fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


@pytest.fixture
def matched_table(db: Conn) -> str:
    db.execute("CREATE TEMP TABLE matched (resident_id bigint)")
    return "matched"


@pytest.mark.parametrize("band", [9, 10, 11])
def test_matching_in_the_database_equals_shapely_covers(db: Conn, matched_table: str, band: int) -> None:
    area = town()
    lng, lat = hard_residents(area, 3000, seed=band)
    ids = load(db, lng, lat)
    expected = ids[shapely.intersects_xy(area, lng, lat)]
    result = match_area(db, area, sink=table_sink(matched_table), band_resolution=band)
    np.testing.assert_array_equal(table_ids(db), expected)
    assert result.matched == len(expected) == result.interior_written + result.boundary_kept
    assert 0 < result.boundary_kept <= result.boundary_candidates < len(ids)
    assert result.interior_ranges > 0 and result.timings.total > 0


def test_parallel_workers_write_each_resident_once(db: Conn, settings: Settings, matched_table: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(match, "PARALLEL_MIN_KM2", 0.0)  # the test town is small
    area = MultiPolygon([town(), shapely.affinity.translate(town(), xoff=0.08)])
    lng, lat = hard_residents(area, 4000, seed=3)
    ids = load(db, lng, lat)
    expected = ids[shapely.intersects_xy(area, lng, lat)]
    db.execute("CREATE UNLOGGED TABLE matched_shared (resident_id bigint)")
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as a, \
            psycopg.connect(settings.database_url, autocommit=True) as b:
        before = [c.execute("SHOW jit").fetchone() for c in (db, a, b)]
        result = match_area(db, area, sink=table_sink("matched_shared"), workers=[a, b], plan="cover")
        assert [c.execute("SHOW jit").fetchone() for c in (db, a, b)] == before  # settings put back
    rows = db.execute("SELECT resident_id FROM matched_shared ORDER BY 1").fetchall()
    np.testing.assert_array_equal(np.array([r[0] for r in rows], dtype=np.int64), expected)
    assert result.matched == len(expected)
    assert result.interior_ranges > 2 * match.INTERIOR_CHUNKS_PER_WORKER  # the interior really was split


def test_count_and_file_sinks_agree(db: Conn) -> None:
    area = town()
    lng, lat = hard_residents(area, 2000, seed=7)
    ids = load(db, lng, lat)
    expected = ids[shapely.intersects_xy(area, lng, lat)]
    assert match_area(db, area, sink=count_sink).matched == len(expected)
    out = io.BytesIO()
    assert match_area(db, area, sink=file_sink(out)).matched == len(expected)
    written = np.sort(np.array(out.getvalue().split(), dtype=np.int64))
    np.testing.assert_array_equal(written, expected)


@pytest.mark.parametrize("plan", ["cover", "direct"])
def test_ids_the_engine_holds_are_written_as_the_database_would(db: Conn, plan: str) -> None:
    """The file and count sinks write the tested boundary ids themselves; a plain sink gets them bound
    to SQL: both give the same file and counts, interior or not."""
    area = town()
    lng, lat = hard_residents(area, 2000, seed=8)
    ids = load(db, lng, lat)
    outputs = []
    for sink_of in (file_sink, lambda out: lambda *args: file_sink(out)(*args)):  # the plain one: no write_ids
        out = io.BytesIO()
        result = match_area(db, area, sink=sink_of(out), plan=plan)
        outputs.append((result.matched, out.getvalue().count(b"\n"), sorted(out.getvalue().split())))
    inside = int(shapely.intersects_xy(area, lng, lat).sum())
    assert outputs[0] == outputs[1] and outputs[0][0] == outputs[0][1] == inside
    assert match_area(db, area, sink=count_sink, plan=plan).matched == inside
    assert len(ids) > inside > 0


def test_an_area_with_nobody_inside_matches_nobody(db: Conn) -> None:
    load(db, np.array([10.0, 10.001]), np.array([50.0, 50.001]))
    result = match_area(db, town(), sink=count_sink)
    assert (result.matched, result.boundary_candidates) == (0, 0)


def test_run_target_counts_and_writes_ids(db: Conn, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    area = town()
    lng, lat = hard_residents(area, 1000, seed=9)
    ids = load(db, lng, lat)
    expected = ids[shapely.intersects_xy(area, lng, lat)]
    path = tmp_path / "area.geojson"
    path.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": mapping(area)}))
    count, seconds = run_target(path)
    assert count == len(expected) and seconds > 0
    ids_path = tmp_path / "ids.txt"
    count, _ = run_target(path, ids_path)
    assert count == len(expected)
    lines = ids_path.read_text().splitlines()
    assert sorted(int(line) for line in lines) == expected.tolist()
    print_target(count, seconds)
    assert f"{count:,} residents in the area" in capsys.readouterr().out


def test_run_target_refuses_a_bad_area(db: Conn, tmp_path: Path) -> None:
    path = tmp_path / "point.geojson"
    path.write_text(json.dumps({"type": "Point", "coordinates": [0, 0]}))
    with pytest.raises(InvalidArea, match="a Point is not an area"):
        run_target(path)
    with pytest.raises(InvalidArea, match="cannot read"):
        run_target(tmp_path / "missing.geojson")
