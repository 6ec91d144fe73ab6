"""Every plan is exact, the statistics follow the index, and the planner's choice can be forced."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h3.api.basic_int as h3
import numpy as np
import numpy.typing as npt
import psycopg
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon, mapping

from dispatcher.config import RESIDENT_CELL_RESOLUTION
from dispatcher.targeting.area import Area
from dispatcher.targeting.match import match_area, table_sink
from dispatcher.targeting.planner import PLANS, choose_plan
from dispatcher.targeting.stats import STATS_RESOLUTION, CellCounts, load_cell_counts
from tests.test_targeting_cover import M_PER_DEG, hard_points, matched_by, star
from tests.test_targeting_match import hard_residents, load, town

Conn = psycopg.Connection[object]


def dense_counts(area: Area, residents_per_cell: float) -> CellCounts:
    """Statistics saying ``residents_per_cell`` live under every res-7 cell around ``area``."""
    west, south, east, north = area.bounds
    cells = h3.h3shape_to_cells(h3.LatLngPoly([(south - 0.2, west - 0.2), (south - 0.2, east + 0.2),
                                               (north + 0.2, east + 0.2), (north + 0.2, west - 0.2)]),
                                STATS_RESOLUTION)
    return CellCounts.of(list(cells), [residents_per_cell] * len(cells))


def matched_by_plan(area: Area, plan: str, counts: CellCounts, lng: npt.NDArray[np.float64],
                    lat: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    return matched_by(choose_plan(area, counts, force=plan).cover(area), area, lng, lat)


radii = st.lists(st.floats(0.35, 1.0), min_size=3, max_size=24)
centres = st.tuples(st.floats(-179.0, 179.0), st.floats(-70.0, 70.0))
sizes = st.sampled_from([300.0, 2_000.0, 15_000.0])
densities = st.sampled_from([0.0, 3.0, 300.0, 30_000.0])
fast = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(centre=centres, size=sizes, radii=radii, plan=st.sampled_from(PLANS), density=densities,
       seed=st.integers(0, 2**32 - 1))
def test_every_plan_matches_shapely_covers(centre: tuple[float, float], size: float, radii: list[float],
                                           plan: str, density: float, seed: int) -> None:
    area = star(*centre, size, radii)
    if not area.is_valid:
        return
    x, y = hard_points(area, np.random.default_rng(seed), 300)
    counts = dense_counts(area, density)
    np.testing.assert_array_equal(matched_by_plan(area, plan, counts, x, y), shapely.intersects_xy(area, x, y))


@fast
@given(centre=centres, first=radii, second=radii, plan=st.sampled_from(PLANS), density=densities,
       seed=st.integers(0, 2**32 - 1))
def test_every_plan_matches_multipolygons(centre: tuple[float, float], first: list[float], second: list[float],
                                          plan: str, density: float, seed: int) -> None:
    lng, lat = centre
    shift = 2.5 * 2_000 / M_PER_DEG / math.cos(math.radians(lat))
    area = MultiPolygon([star(lng, lat, 2_000, first), star(lng + shift, lat, 2_000, second)])
    if not area.is_valid:
        return
    x, y = hard_points(area, np.random.default_rng(seed), 300)
    np.testing.assert_array_equal(matched_by_plan(area, plan, dense_counts(area, density), x, y),
                                  shapely.intersects_xy(area, x, y))


def test_plans_follow_density() -> None:
    area = town()
    assert choose_plan(area, dense_counts(area, 5.0)).name in {"direct", "adaptive"}
    assert choose_plan(area, dense_counts(area, 200_000.0)).name == "cover"


def test_explain_names_the_plan_and_the_alternatives() -> None:
    text = choose_plan(town(), dense_counts(town(), 100.0), force="direct").explain()
    assert text.startswith("plan: direct") and text.count("rejected:") == 2


def test_an_unknown_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown plan"):
        choose_plan(town(), CellCounts.empty(), force="fastest")


def stats(db: Conn) -> dict[int, int]:
    return {int(c): int(n) for c, n in db.execute(
        "SELECT cell, residents FROM resident_cell_counts WHERE residents <> 0").fetchall()}


def expected_stats(db: Conn) -> dict[int, int]:
    rows = db.execute("SELECT cell FROM residents").fetchall()
    counts: dict[int, int] = {}
    for (cell,) in rows:
        parent = h3.cell_to_parent(int(cell), STATS_RESOLUTION)
        counts[parent] = counts.get(parent, 0) + 1
    return counts


def test_statistics_follow_inserts_moves_and_deletes(db: Conn) -> None:
    area = town()
    lng, lat = hard_residents(area, 500, seed=1)
    load(db, lng, lat)
    assert stats(db) == expected_stats(db) and sum(stats(db).values()) == len(lng)
    far = h3.latlng_to_cell(48.85, 2.35, RESIDENT_CELL_RESOLUTION)
    db.execute("UPDATE residents SET cell = %s, lat = 48.85, lng = 2.35 WHERE id <= 10", (far,))
    db.execute("UPDATE residents SET locale = locale WHERE id = 11")  # a change that does not move
    db.execute("DELETE FROM residents WHERE id BETWEEN 20 AND 29")
    assert stats(db) == expected_stats(db)
    assert stats(db)[h3.cell_to_parent(far, STATS_RESOLUTION)] == 10
    db.execute("TRUNCATE residents CASCADE")
    assert stats(db) == {}


def test_statistics_loaded_for_an_area(db: Conn) -> None:
    area = town()
    lng, lat = hard_residents(area, 2000, seed=2)
    load(db, lng, lat)
    counts = load_cell_counts(db, area)
    assert counts.total == len(lng)
    under = counts.residents_under([h3.latlng_to_cell(41.85, -87.7, 4)], 4)
    assert under[0] == len(lng)


@pytest.mark.parametrize("plan", PLANS)
def test_each_plan_in_the_database_equals_shapely(db: Conn, plan: str) -> None:
    area = MultiPolygon([town(), shapely.affinity.translate(town(), xoff=0.08)])
    lng, lat = hard_residents(area, 3000, seed=5)
    ids = load(db, lng, lat)
    db.execute("CREATE TEMP TABLE matched (resident_id bigint)")
    jit = db.execute("SHOW jit").fetchone()
    result = match_area(db, area, sink=table_sink("matched"), plan=plan)
    got = np.array([r[0] for r in db.execute("SELECT resident_id FROM matched ORDER BY 1").fetchall()])
    np.testing.assert_array_equal(got, ids[shapely.intersects_xy(area, lng, lat)])
    assert result.plan is not None and result.plan.name == plan
    assert db.execute("SHOW jit").fetchone() == jit == ("on",)  # off while it worked, then set back


def test_jit_is_off_while_the_candidates_are_scanned_and_back_after(db: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    """The direct plan sets JIT back in the candidates' own statement: planned with JIT off, then on."""
    from dispatcher.targeting import match as module

    area = town()
    load(db, *hard_residents(area, 500, seed=9))
    db.execute("CREATE TEMP TABLE matched (resident_id bigint)")
    seen: list[object] = []
    fetch = module.fetch_candidates

    def spying(conn: Conn, ranges: list[tuple[int, int]], *, restore_jit: str | None = None) -> object:
        seen.append(conn.execute("SHOW jit").fetchone())
        return fetch(conn, ranges, restore_jit=restore_jit)

    monkeypatch.setattr(module, "fetch_candidates", spying)
    match_area(db, area, sink=table_sink("matched"), plan="direct")
    assert seen == [("off",)] and db.execute("SHOW jit").fetchone() == ("on",)


def test_a_polygon_without_residents_nearby_is_planned_cheaply() -> None:
    area = Polygon([(10, 10), (10.01, 10), (10.01, 10.01), (10, 10.01)])
    plan = choose_plan(area, CellCounts.empty())
    assert plan.chosen.candidates == 0 and plan.chosen.seconds < 0.05


def test_target_explain_prints_the_plan_its_estimate_and_its_cost(db: Conn, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dispatcher.cli import app

    area = town()
    lng, lat = hard_residents(area, 1000, seed=9)
    load(db, lng, lat)
    path = tmp_path / "town.geojson"
    path.write_text(json.dumps(mapping(area)), encoding="utf-8")
    result = CliRunner().invoke(app, ["target", str(path), "--explain"])
    assert result.exit_code == 0, result.output
    expected = int(shapely.intersects_xy(area, lng, lat).sum())
    assert f"{expected} residents in the area" in result.stdout
    plan_line, *rejected, actual = result.stdout.strip().splitlines()[1:]
    assert plan_line.startswith("plan: ") and "candidates" in plan_line and "ms" in plan_line
    assert len(rejected) == 2 and all("rejected:" in line for line in rejected)
    assert actual.startswith("actual: ") and "total" in actual and "peak memory" in actual


def test_a_band_too_big_to_hold_at_once_is_fetched_in_batches(db: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    from dispatcher.targeting import match

    area = MultiPolygon([town(), shapely.affinity.translate(town(), xoff=0.08)])
    lng, lat = hard_residents(area, 3000, seed=6)
    ids = load(db, lng, lat)
    monkeypatch.setattr(match, "CANDIDATES_PER_BATCH", 200)
    plan = match.plan_match(db, area, plan="direct")
    batches = match.candidate_batches(plan.cover(area).boundary, plan)
    assert len(batches) > 3 and sorted(c for b in batches for c in b) == sorted(plan.cover(area).boundary)
    db.execute("CREATE TEMP TABLE matched (resident_id bigint)")
    result = match_area(db, area, sink=table_sink("matched"), plan="direct")
    got = np.array([r[0] for r in db.execute("SELECT resident_id FROM matched ORDER BY 1").fetchall()])
    np.testing.assert_array_equal(got, ids[shapely.intersects_xy(area, lng, lat)])
    assert result.boundary_candidates >= len(got) and result.boundary_ranges >= len(batches)


def test_the_adaptive_descent_never_stops_coarser_than_its_statistics(db: Conn) -> None:
    """Statistics are read around the area only; a res-5 cell reaches a town beyond them. Stopping there
    once tested every resident of the neighbouring town one by one (400,000 candidates for a district)."""
    area = town()
    _, south, east, north = area.bounds
    # A dense town just outside the statistics read for the area (but under the area's coarse cells).
    rng = np.random.default_rng(3)
    far_lng = rng.uniform(east + 0.06, east + 0.12, 3000)
    far_lat = rng.uniform(south, north, 3000)
    near_lng, near_lat = hard_residents(area, 300, seed=4)
    load(db, np.concatenate([near_lng, far_lng]), np.concatenate([near_lat, far_lat]))
    plan = choose_plan(area, load_cell_counts(db, area), force="adaptive")
    cover = plan.cover(area)
    assert min(h3.get_resolution(c) for c in cover.boundary) >= STATS_RESOLUTION
    db.execute("CREATE TEMP TABLE matched (resident_id bigint)")
    result = match_area(db, area, sink=table_sink("matched"), plan="adaptive")
    assert result.boundary_candidates < 3000  # the town outside is never fetched as candidates
