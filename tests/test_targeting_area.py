"""Area parsing: every kind of bad input is refused with a message naming the problem."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import orjson
import pytest
from shapely.geometry import MultiPolygon, Polygon, mapping

from dispatcher.errors import InvalidArea, InvalidRequest
from dispatcher.targeting.area import EARTH_RADIUS_KM, area_km2, parse_area

LIMITS: dict[str, Any] = {"max_vertices": 200_000, "max_area_km2": 20_000.0}
SQUARE = [[-74.0, 40.7], [-73.99, 40.7], [-73.99, 40.71], [-74.0, 40.71], [-74.0, 40.7]]


def polygon(*rings: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": list(rings)}


def refused(geojson: object, **limits: Any) -> str:
    with pytest.raises(InvalidArea) as caught:
        parse_area(geojson, **{**LIMITS, **limits})
    return caught.value.problem


def test_polygon_feature_string_and_geo_interface_are_accepted() -> None:
    expected = Polygon(SQUARE)
    assert parse_area(polygon(SQUARE), **LIMITS).equals(expected)
    assert parse_area(json.dumps(polygon(SQUARE)), **LIMITS).equals(expected)
    feature = {"type": "Feature", "properties": {}, "geometry": polygon(SQUARE)}
    assert parse_area(feature, **LIMITS).equals(expected)
    assert parse_area(expected, **LIMITS).equals(expected)  # shapely has __geo_interface__


def test_holes_multipolygons_and_altitudes_are_kept() -> None:
    hole = [[-73.998, 40.702], [-73.998, 40.704], [-73.996, 40.704], [-73.996, 40.702], [-73.998, 40.702]]
    with_hole = parse_area(polygon(SQUARE, hole), **LIMITS)
    assert isinstance(with_hole, Polygon) and len(with_hole.interiors) == 1
    far = [[x + 1, y, 12.5] for x, y in SQUARE]  # a third number (altitude) is allowed and dropped
    multi = parse_area({"type": "MultiPolygon", "coordinates": [[SQUARE], [far]]}, **LIMITS)
    assert isinstance(multi, MultiPolygon) and len(multi.geoms) == 2
    assert multi.geoms[1].has_z is False


def test_antimeridian_split_multipolygon_is_accepted() -> None:
    east = [[170.0, -10.0], [180.0, -10.0], [180.0, 10.0], [170.0, 10.0], [170.0, -10.0]]
    west = [[-180.0, -10.0], [-170.0, -10.0], [-170.0, 10.0], [-180.0, 10.0], [-180.0, -10.0]]
    area = parse_area({"type": "MultiPolygon", "coordinates": [[east], [west]]}, max_vertices=100,
                      max_area_km2=1e7)
    assert isinstance(area, MultiPolygon)


@pytest.mark.parametrize(
    ("geojson", "fragment"),
    [
        ("{not json", "not GeoJSON: not valid JSON"),
        (42, "not GeoJSON: expected an object"),
        ({"type": "Polygonal", "coordinates": []}, "unknown type"),
        ({"type": "Point", "coordinates": [0, 0]}, "a Point is not an area"),
        ({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "a LineString is not an area"),
        ({"type": "GeometryCollection", "geometries": []}, "a GeometryCollection is not an area"),
        ({"type": "FeatureCollection", "features": []}, "a FeatureCollection is not an area"),
        ({"type": "Feature", "geometry": None}, "the area is empty"),
        ({"type": "Polygon", "coordinates": []}, "the area is empty"),
        ({"type": "MultiPolygon", "coordinates": []}, "the area is empty"),
        ({"type": "MultiPolygon", "coordinates": [[]]}, "the area is empty"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}, "a ring needs at least 4"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}, "not closed"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 1], [1, 1], [0, 0]]]}, "self-intersection"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [2, 0], [0, 0]]]}, "invalid polygon"),
        ({"type": "Polygon", "coordinates": [[[0, 0], ["a", 0], [1, 1], [0, 0]]]}, "not a number"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1], [1, 1], [0, 0]]]}, "position of length 1"),
        ({"type": "Polygon", "coordinates": [[[0, 0], {"x": 1}, [1, 1], [0, 0]]]}, "not [longitude, latitude]"),
        ({"type": "Polygon", "coordinates": "x"}, "not GeoJSON"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [float("nan"), 1], [0, 0]]]}, "not a finite"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [181, 0], [181, 1], [0, 0]]]}, "longitude beyond ±180"),
    ],
)
def test_bad_input_is_refused_naming_the_problem(geojson: object, fragment: str) -> None:
    assert fragment in refused(geojson)


def test_swapped_latitude_and_longitude_are_detected() -> None:
    ring = [[-120.0, 40.7], [-119.9, 40.7], [-119.9, 40.8], [-120.0, 40.8], [-120.0, 40.7]]
    swapped = [[lat, lng] for lng, lat in ring]
    problem = refused(polygon(swapped))
    assert "latitude beyond ±90" in problem and "swapped" in problem


def test_the_error_is_an_invalid_request_naming_the_area() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_area({"type": "Point", "coordinates": [0, 0]}, **LIMITS)
    assert str(caught.value).startswith("invalid Community Request: area: ")


def test_vertex_limit_is_checked_before_anything_heavy() -> None:
    ring = [[math.cos(t) * 0.01, math.sin(t) * 0.01] for t in np.linspace(0, 2 * math.pi, 1001)[:-1]]
    ring.append(ring[0])
    assert "more than the maximum of 999 vertices" in refused(polygon(ring), max_vertices=999)
    assert isinstance(parse_area(polygon(ring), max_vertices=1000, max_area_km2=10.0), Polygon)


def test_area_limit_is_in_square_kilometres_on_the_sphere() -> None:
    one_degree = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]
    expected = EARTH_RADIUS_KM**2 * math.radians(1.0) * math.sin(math.radians(1.0))
    assert area_km2(Polygon(one_degree)) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(12_364, rel=1e-3)
    assert "more than the maximum of 12,000 km²" in refused(polygon(one_degree), max_area_km2=12_000)


def test_area_of_a_slanted_ring_with_a_hole_matches_a_fine_numerical_integral() -> None:
    shell = [[10.0, 50.0], [12.0, 50.5], [11.5, 52.0], [10.2, 51.4], [10.0, 50.0]]
    hole = [[10.8, 50.8], [11.2, 50.9], [11.0, 51.2], [10.8, 50.8]]
    area = parse_area(polygon(shell, hole), **LIMITS)
    # Midpoint rule over thin latitude strips: area = R² ∫∫ cos(lat) dlat dlon.
    lats = np.linspace(49.99, 52.01, 2001)
    numeric = 0.0
    for south, north in itertools.pairwise(lats):
        strip = area.intersection(Polygon([(9, south), (13, south), (13, north), (9, north)]))
        width_deg = strip.area / (north - south)
        numeric += math.radians(width_deg) * math.radians(north - south) * math.cos(math.radians((south + north) / 2))
    numeric *= EARTH_RADIUS_KM**2
    assert area_km2(area) == pytest.approx(numeric, rel=1e-4)


def test_a_coastline_of_fifty_thousand_vertices_is_accepted() -> None:
    t = np.linspace(0, 2 * np.pi, 50_000, endpoint=False)
    r = 0.2 * (1 + 0.1 * np.sin(7 * t) + 0.02 * np.sin(997 * t))
    ring = np.c_[-74 + r * np.cos(t), 40.7 + r * np.sin(t)]
    area = parse_area(mapping(Polygon(ring)), **LIMITS)
    assert isinstance(area, Polygon) and len(area.exterior.coords) == 50_001


def _islands(count: int) -> list[list[list[list[float]]]]:
    """``count`` squares in a row, the third one with a hole."""
    parts = []
    for i in range(count):
        x = 10.0 + i * 0.01
        shell = [[x, 5.0], [x + 0.005, 5.0], [x + 0.005, 5.005], [x, 5.005], [x, 5.0]]
        hole = [[x + 0.001, 5.001], [x + 0.002, 5.001], [x + 0.002, 5.002], [x + 0.001, 5.001]]
        parts.append([shell, hole] if i == 2 else [shell])
    return parts


def test_many_parts_built_at_once_equal_parts_built_one_by_one() -> None:
    from dispatcher.targeting import area as module

    coordinates = _islands(12)
    at_once = parse_area({"type": "MultiPolygon", "coordinates": coordinates}, max_vertices=1000, max_area_km2=1e6)
    one_by_one = MultiPolygon([module._polygon(rings, i) for i, rings in enumerate(coordinates)])
    assert module._parts_at_once(coordinates, True) is not None
    assert at_once.equals_exact(one_by_one, tolerance=0) and len(at_once.geoms[2].interiors) == 1


@pytest.mark.parametrize(("position", "fragment"), [
    (["10.1", 5.0], "ring 0 of polygon 9 has a coordinate that is not a number"),
    ([10.1, 95.0], "ring 0 of polygon 9 has a latitude beyond ±90"),
    ([10.1, float("nan")], "ring 0 of polygon 9 has a coordinate that is not a finite number"),
    ([10.1, 5.0, 1.0, 2.0], "ring 0 of polygon 9 has a position of length 4"),
])
def test_a_bad_position_among_many_parts_is_named(position: list[Any], fragment: str) -> None:
    coordinates: list[Any] = _islands(12)
    coordinates[9][0][1] = position
    assert fragment in refused({"type": "MultiPolygon", "coordinates": coordinates})


def test_an_unclosed_ring_among_many_parts_is_named() -> None:
    coordinates = _islands(12)
    coordinates[10][0][-1] = [10.2, 5.001]
    assert "ring 0 of polygon 10 is not closed" in refused({"type": "MultiPolygon", "coordinates": coordinates})


@pytest.mark.parametrize("feature", [False, True])
def test_the_byte_limit_counts_the_whole_area_though_its_coordinates_are_dumped_apart(feature: bool) -> None:
    geometry = {"type": "MultiPolygon", "coordinates": _islands(12), "note": "a foreign member"}
    area = {"type": "Feature", "properties": {"name": "x" * 50}, "geometry": geometry} if feature else geometry
    size = len(orjson.dumps(area))
    parse_area(area, max_vertices=1000, max_area_km2=1e6, max_bytes=size)
    assert f"{size:,} bytes of JSON" in refused(area, max_bytes=size - 1)
