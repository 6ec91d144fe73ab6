"""Any area accepted runs within the targeting budget; an area whose boundary cannot fit is refused, at
publish() and in the worker, with a message naming it. Never a MemoryError, never a killed worker."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from shapely.geometry import LineString, Polygon, mapping

from dispatcher.config import Settings, set_settings
from dispatcher.contract import validate_request
from dispatcher.errors import InvalidArea
from dispatcher.targeting.area import parse_area
from dispatcher.targeting.estimate import Budget, band_estimate, check_area_budget, measure
from dispatcher.targeting.footprint import run_measured
from dispatcher.targeting.planner import PLANS, choose_plan
from dispatcher.targeting.shapes import thin_comb, thin_strip
from tests.factories import register_agency, request_payload

THIN = {"strip, 5 vertices, 1.4 km²": thin_strip(), "comb, 40 vertices, 14 km²": thin_comb(10),
        "comb, 4,000 vertices, 1,395 km²": thin_comb(1000)}
BUDGET = Budget(seconds=2.0, bytes=256 * 1024 * 1024)


def river(length_km: float = 300.0, width_m: float = 300.0) -> Polygon:
    """A corridor along a meandering river: long, thin and legal."""
    t = np.linspace(0, 1, 2000)
    lng = -90 + t * length_km / 85.0
    lat = 40 + 0.05 * np.sin(t * 60) + 0.02 * np.sin(t * 370)
    return LineString(np.c_[lng, lat]).buffer(width_m / 2 / 111_000, quad_segs=2)


@pytest.mark.parametrize("name", list(THIN))
def test_thin_shapes_are_refused_at_publish_naming_the_boundary(name: str) -> None:
    payload = request_payload(area=mapping(THIN[name]))
    with pytest.raises(InvalidArea, match=r"boundary too long for its area: [\d,]+ km of edge around [\d.,]+ km²"):
        validate_request(payload)


def test_an_ordinary_area_and_a_river_corridor_are_accepted() -> None:
    corridor = river()
    assert corridor.is_valid
    parse_area(mapping(corridor), max_vertices=200_000, max_area_km2=20_000)
    band = check_area_budget(corridor, BUDGET)
    assert band.resolution == 10 and band.fits(BUDGET)


def test_the_estimate_follows_the_cover() -> None:
    """Estimated band cells are within a factor of two of the cells the cover really classifies."""
    from dispatcher.targeting.cover import area_to_cells

    for area in (river(60.0), thin_strip(south=0.0, north=2.0)):
        actual = len(area_to_cells(area, band_resolution=9).boundary)
        estimated = band_estimate(measure(area), 9).cells
        assert actual / 2 <= estimated <= actual * 2.5, (actual, estimated)


def test_a_refusal_is_cheap() -> None:
    shape = measure(thin_comb(1000))
    assert shape.vertices == 4002 and math.isclose(shape.area_km2, 1395, rel_tol=0.01)
    with pytest.raises(InvalidArea):
        check_area_budget(thin_comb(1000), BUDGET)


def test_the_worker_records_a_rejection_for_a_thin_area(engine: Settings) -> None:
    from dispatcher.pipeline import distribute

    outcome = distribute(request_payload("thin-1", area=mapping(thin_strip())))
    assert outcome.state == "rejected"
    assert outcome.reason is not None and "boundary too long for its area" in outcome.reason


def test_a_boundary_through_the_densest_blocks_is_refused_by_the_statistics() -> None:
    """A 2 km square passes the geometry's check, but not with statistics saying 10 million live under
    every res-7 cell: even the cheapest plan would test millions of residents one by one."""
    from tests.test_targeting_planner import dense_counts

    area = Polygon([(-87.72, 41.84), (-87.696, 41.84), (-87.696, 41.858), (-87.72, 41.858)])
    check_area_budget(area, BUDGET)
    assert choose_plan(area, dense_counts(area, 1_000.0), budget=BUDGET).name in PLANS
    with pytest.raises(InvalidArea, match=r"too many residents along its boundary to test one by one: about "
                                          r"[\d,]+ candidates around [\d.,]+ km² even with the cheapest plan"):
        choose_plan(area, dense_counts(area, 10_000_000.0), budget=BUDGET)


def _budget_between_geometry_and_statistics(db: psycopg.Connection[Any]) -> tuple[Polygon, float]:
    """A town with 20,000 residents loaded, and a budget in seconds that its geometry fits but the
    statistics of its residents do not."""
    from dispatcher.targeting.planner import SECONDS_PER_INTERIOR_ROW
    from dispatcher.targeting.stats import load_cell_counts
    from tests.test_targeting_match import hard_residents, load, town

    area = town()
    load(db, *hard_residents(area, 20_000, seed=3))
    roomy = Budget(seconds=10.0, bytes=BUDGET.bytes)
    cheapest = choose_plan(area, load_cell_counts(db, area), budget=roomy).chosen
    by_statistics = cheapest.seconds - cheapest.interior_rows * SECONDS_PER_INTERIOR_ROW
    by_geometry = check_area_budget(area, roomy).seconds
    assert by_geometry < by_statistics
    return area, (by_geometry + by_statistics) / 2


def test_the_worker_records_a_rejection_by_the_statistics(engine: Settings, db: psycopg.Connection[Any]) -> None:
    """With the budget set between what the geometry and what the statistics ask, the worker refuses the
    area by the statistics of the residents really loaded, and records why."""
    from dispatcher.pipeline import distribute

    area, seconds = _budget_between_geometry_and_statistics(db)
    register_agency(db, "pd-town", jurisdiction=mapping(area.buffer(0.05)))  # a town's police, not the world's
    set_settings(engine.with_(targeting_budget_seconds=seconds))
    try:
        outcome = distribute(request_payload("dense-1", area=mapping(area), agency={"id": "pd-town", "name": "Town"}))
    finally:
        set_settings(engine)  # the tests after this one get the usual budget
    assert outcome.state == "rejected"
    assert outcome.reason is not None and "too many residents along its boundary" in outcome.reason


def test_a_refusal_by_the_statistics_leaves_the_connection_s_jit_as_it_was(settings: Settings,
                                                                            db: psycopg.Connection[Any]) -> None:
    from dispatcher.targeting.match import count_sink, match_area

    area, seconds = _budget_between_geometry_and_statistics(db)
    before = db.execute("SHOW jit").fetchone()
    set_settings(settings.with_(targeting_budget_seconds=seconds))
    try:
        with pytest.raises(InvalidArea, match="too many residents along its boundary"):
            match_area(db, area, sink=count_sink)
    finally:
        set_settings(settings)
    assert db.execute("SHOW jit").fetchone() == before


def _write(path: Path, area: Polygon) -> str:
    path.write_text(json.dumps(mapping(area)), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("command", ["target", "preview"])
def test_thin_shapes_stay_within_the_budget_in_a_fresh_process(settings: Settings, tmp_path: Path,
                                                                command: str) -> None:
    """Measured like the issue did: each thin shape through the CLI in its own process, peak RSS and CPU."""
    env = {**os.environ, "DATABASE_URL": str(settings.database_url), "DISPATCHER_HOME": str(settings.home)}
    for index, area in enumerate([*THIN.values(), river()]):
        path = _write(tmp_path / f"area{index}.geojson", area)
        extra = ["--geojson", str(tmp_path / "layers.geojson")] if command == "preview" else []
        code = f"from dispatcher.cli import app\napp([{command!r}, {path!r}, *{extra!r}])"
        footprint = run_measured(code, env=env)
        assert footprint.returncode == 0 or "boundary too long" in footprint.output, footprint.output
        assert footprint.peak_mb < 256, (index, footprint)
        assert footprint.cpu_seconds < 2.0 + 1.5, (index, footprint)  # + interpreter and imports
        refused = "boundary too long for its area" in footprint.output
        assert refused == (index < len(THIN)), footprint.output


def test_the_footprint_is_the_child_s_own_not_its_parent_s() -> None:
    """ru_maxrss survives exec on Linux: a child of a big process would report its parent's peak."""
    ballast = bytearray(200 * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touched, so resident
    footprint = run_measured("blob = bytearray(50 * 1024 * 1024); blob[::4096] = b'x' * len(blob[::4096])")
    assert 50 < footprint.peak_mb < 150, footprint
    assert footprint.returncode == 0 and footprint.cpu_seconds > 0
    del ballast
