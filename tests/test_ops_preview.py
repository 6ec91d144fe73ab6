"""`dispatcher preview` for a real polygon: the PNG opens at the asked size, the layers are right."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import h3.api.basic_int as h3
import numpy as np
import shapely
from PIL import Image
from typer.testing import CliRunner

from dispatcher.cli import app
from dispatcher.config import RESIDENT_CELL_RESOLUTION
from dispatcher.db.types import Conn
from dispatcher.ops.preview import MIN_DENSITY_COUNT, run_preview
from dispatcher.targeting.area import parse_area
from dispatcher.targeting.cover import BAND_RESOLUTION, reach_m
from dispatcher.targeting.planner import choose_plan
from dispatcher.targeting.stats import load_cell_counts

#: A concave neighbourhood (an L with a notch) of about 2 km², lon/lat.
AREA = {
    "type": "Feature",
    "properties": {"name": "north side"},
    "geometry": {"type": "Polygon", "coordinates": [[
        [-105.285, 40.010], [-105.262, 40.010], [-105.262, 40.018], [-105.272, 40.018],
        [-105.272, 40.026], [-105.285, 40.026], [-105.285, 40.010],
    ]]},
}


def _seed_town(db: Conn, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    lat = np.concatenate([rng.normal(40.016, 0.004, n // 2), rng.uniform(40.0, 40.035, n - n // 2)])
    lng = np.concatenate([rng.normal(-105.276, 0.005, n // 2), rng.uniform(-105.30, -105.25, n - n // 2)])
    with db.cursor() as cur, cur.copy("COPY residents (id, lat, lng, cell) FROM STDIN") as copy:
        for i, (la, ln) in enumerate(zip(lat.tolist(), lng.tolist(), strict=True), start=1):
            copy.write_row((i, la, ln, h3.latlng_to_cell(la, ln, RESIDENT_CELL_RESOLUTION)))
    return lat, lng


def test_preview_renders_a_real_polygon(db: Conn, tmp_path: Path) -> None:
    lat, lng = _seed_town(db)
    area_path = tmp_path / "north-side.geojson"
    area_path.write_text(json.dumps(AREA))
    png, layers_path = tmp_path / "preview.png", tmp_path / "layers.geojson"

    layers = run_preview(area_path, png=png, geojson_out=layers_path, conn=db, width_px=1000, height_px=700,
                         plan="cover")

    with Image.open(png) as image:
        assert image.format == "PNG" and image.size == (1000, 700)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50  # drawn, not a blank canvas

    # Interior cells lie inside the area; boundary cells lie within their reach of its edge.
    assert {h3.get_resolution(c) for c in layers.boundary} == {BAND_RESOLUTION}
    area = parse_area(AREA, max_vertices=1000, max_area_km2=100)
    assert layers.interior and layers.boundary
    for cell in layers.interior:
        lat_c, lng_c = h3.cell_to_latlng(cell)
        assert area.covers(shapely.Point(lng_c, lat_c))
    for cell in layers.boundary:  # the planner's band may mix resolutions: each cell within its own reach
        reach_deg = reach_m(h3.get_resolution(cell)) / 111_000 / math.cos(math.radians(40.0))
        assert area.boundary.buffer(reach_deg).intersects(shapely.Point(h3.cell_to_latlng(cell)[::-1]))

    # Density equals an independent count of residents by parent cell, small cells left out.
    resolution = layers.density_resolution
    expected = Counter(h3.cell_to_parent(h3.latlng_to_cell(la, ln, RESIDENT_CELL_RESOLUTION), resolution)
                       for la, ln in zip(lat.tolist(), lng.tolist(), strict=True))
    shown = dict(layers.density)
    assert shown and all(n >= MIN_DENSITY_COUNT for n in shown.values())
    for cell, n in shown.items():
        assert expected[cell] == n
    west, south, east, north = area.bounds
    for cell, n in expected.items():
        c_lat, c_lng = h3.cell_to_latlng(cell)
        if n >= MIN_DENSITY_COUNT and west <= c_lng <= east and south <= c_lat <= north:
            assert shown.get(cell) == n, f"cell {h3.int_to_str(cell)} with {n} residents is missing"

    collection = json.loads(layers_path.read_text())
    by_layer = Counter(f["properties"]["layer"] for f in collection["features"])
    assert by_layer == {"area": 1, "interior": len(layers.interior), "boundary": len(layers.boundary),
                        "density": len(layers.density)}
    density_features = [f for f in collection["features"] if f["properties"]["layer"] == "density"]
    assert {f["properties"]["residents"] for f in density_features} == set(shown.values())
    assert all("id" not in f["properties"] and "email" not in f["properties"] for f in collection["features"])


def test_cli_preview_writes_both_files(db: Conn, tmp_path: Path) -> None:
    _seed_town(db, 600)
    area_path = tmp_path / "area.geojson"
    area_path.write_text(json.dumps(AREA["geometry"]))
    png, layers_path = tmp_path / "cli.png", tmp_path / "cli.geojson"

    result = CliRunner().invoke(app, ["preview", str(area_path), "--png", str(png), "--geojson", str(layers_path),
                                      "--width", "640", "--height", "480"])

    assert result.exit_code == 0, result.output
    assert "interior cells" in result.output
    with Image.open(png) as image:
        assert image.size == (640, 480)
    assert json.loads(layers_path.read_text())["type"] == "FeatureCollection"


def test_cli_preview_names_a_bad_area(tmp_path: Path) -> None:
    area_path = tmp_path / "line.geojson"
    area_path.write_text(json.dumps({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}))

    result = CliRunner().invoke(app, ["preview", str(area_path), "--geojson", str(tmp_path / "x.geojson"),
                                      "--no-density"])

    assert result.exit_code == 2 and "not an area" in result.output


def test_preview_draws_the_cells_of_the_plan_targeting_would_choose(db: Conn, tmp_path: Path) -> None:
    _seed_town(db)
    area_path = tmp_path / "north-side.geojson"
    area_path.write_text(json.dumps(AREA))
    layers = run_preview(area_path, png=None, geojson_out=None, conn=db)
    area = parse_area(AREA, max_vertices=1000, max_area_km2=100)
    expected = choose_plan(area, load_cell_counts(db, area)).classified(area)
    assert (layers.interior, layers.boundary) == (expected.interior, expected.boundary)
    assert layers.interior or layers.boundary
