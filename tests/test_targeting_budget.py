"""Any area accepted runs within the targeting budget; an area whose boundary cannot fit is refused, at
publish() and in the worker, with a message naming it. Never a MemoryError, never a killed worker."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import LineString, Polygon, mapping

from dispatcher.config import Settings
from dispatcher.contract import validate_request
from dispatcher.errors import InvalidArea
from dispatcher.targeting.area import parse_area
from dispatcher.targeting.estimate import Budget, band_estimate, check_area_budget, measure
from dispatcher.targeting.footprint import run_measured
from dispatcher.targeting.shapes import thin_comb, thin_strip
from tests.factories import request_payload

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
