"""The H3 cover is exact: matching by its ranges plus the exact band test equals shapely's ``covers``.

The matching here is the database's, done with numpy on the same integers: a resident is matched when
its res-15 cell falls in an interior range, or in a boundary range and the area covers its point.
Residents are placed where it is hard: on vertices, on edges, a hair and a few metres either side.
"""

from __future__ import annotations

import math

import h3.api.basic_int as h3
import numpy as np
import numpy.typing as npt
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon

from dispatcher.config import RESIDENT_CELL_RESOLUTION
from dispatcher.targeting.area import Area
from dispatcher.targeting.cover import (
    H3_EARTH_RADIUS_M,
    AreaCover,
    area_to_cells,
    cells_to_ranges,
    compact,
    reach_m,
    split_ranges,
)

M_PER_DEG = math.pi * H3_EARTH_RADIUS_M / 180


def in_ranges(cells: npt.NDArray[np.int64], ranges: list[tuple[int, int]]) -> npt.NDArray[np.bool_]:
    if not ranges:
        return np.zeros(len(cells), dtype=bool)
    lows = np.array([lo for lo, _ in ranges], dtype=np.int64)
    highs = np.array([hi for _, hi in ranges], dtype=np.int64)
    slot = np.searchsorted(lows, cells, side="right") - 1
    return (slot >= 0) & (cells <= highs[np.maximum(slot, 0)])


def matched_by_cover(area: Area, lng: npt.NDArray[np.float64], lat: npt.NDArray[np.float64],
                     band_resolution: int) -> npt.NDArray[np.bool_]:
    return matched_by(area_to_cells(area, band_resolution=band_resolution), area, lng, lat)


def matched_by(cover: AreaCover, area: Area, lng: npt.NDArray[np.float64],
               lat: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Who ``cover`` matches: its interior ranges whole, its band's residents tested against ``area``."""
    cells = np.array([h3.latlng_to_cell(y, x, RESIDENT_CELL_RESOLUTION) for x, y in zip(lng, lat, strict=True)],
                     dtype=np.int64)
    interior = in_ranges(cells, cells_to_ranges(cover.interior))
    band = in_ranges(cells, cells_to_ranges(cover.boundary))
    assert not (interior & band).any(), "interior and boundary ranges overlap"
    return interior | (band & shapely.intersects_xy(area, lng, lat))


def star(lng: float, lat: float, radius_m: float, radii: list[float]) -> Polygon:
    """A star-shaped (often concave) polygon: vertex k at angle 2πk/n and radius ``radii[k]``."""
    n = len(radii)
    angles = np.arange(n) * 2 * math.pi / n
    r = np.array(radii) * radius_m / M_PER_DEG
    return Polygon(np.c_[lng + r * np.cos(angles) / math.cos(math.radians(lat)), lat + r * np.sin(angles)])


def hard_points(area: Area, rng: np.random.Generator, count: int) -> tuple[npt.NDArray[np.float64], ...]:
    """Vertices, edge points, points a hair and a few metres off the edges, and random points."""
    rings = [np.asarray(ring.coords) for part in getattr(area, "geoms", [area])
             for ring in [part.exterior, *part.interiors]]
    xs, ys = [], []
    for ring in rings:
        start, end = ring[:-1], ring[1:]
        xs.append(start[:, 0])
        ys.append(start[:, 1])
        for t in (0.5, rng.uniform(0, 1)):
            xs.append(start[:, 0] + t * (end[:, 0] - start[:, 0]))
            ys.append(start[:, 1] + t * (end[:, 1] - start[:, 1]))
        direction = end - start
        normal = np.c_[-direction[:, 1], direction[:, 0]] / np.maximum(np.hypot(*direction.T), 1e-300)[:, None]
        middle = (start + end) / 2
        for offset in (1e-12, 1e-9, 3 / M_PER_DEG, 15 / M_PER_DEG, 60 / M_PER_DEG):
            for sign in (1, -1):
                xs.append(middle[:, 0] + sign * offset * normal[:, 0])
                ys.append(middle[:, 1] + sign * offset * normal[:, 1])
    west, south, east, north = area.bounds
    xs.append(rng.uniform(west - 0.1 * (east - west), east + 0.1 * (east - west), count))
    ys.append(rng.uniform(south - 0.1 * (north - south), north + 0.1 * (north - south), count))
    x, y = np.concatenate(xs), np.concatenate(ys)
    keep = (np.abs(x) <= 180) & (np.abs(y) <= 90)
    return x[keep], y[keep]


radii = st.lists(st.floats(0.35, 1.0), min_size=3, max_size=24)
centres = st.tuples(st.floats(-179.0, 179.0), st.floats(-70.0, 70.0))
sizes = st.sampled_from([40.0, 300.0, 2_000.0, 15_000.0])
bands = st.sampled_from([7, 9, 10, 11])
fast = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(centre=centres, size=sizes, radii=radii, band=bands, seed=st.integers(0, 2**32 - 1))
def test_star_polygons_match_shapely_covers(centre: tuple[float, float], size: float, radii: list[float],
                                            band: int, seed: int) -> None:
    area = star(*centre, size, radii)
    if not area.is_valid:
        return
    x, y = hard_points(area, np.random.default_rng(seed), 300)
    np.testing.assert_array_equal(matched_by_cover(area, x, y, band), shapely.intersects_xy(area, x, y))


@fast
@given(centre=centres, size=sizes, outer=radii, inner=radii, band=bands, seed=st.integers(0, 2**32 - 1))
def test_polygons_with_holes_match_shapely_covers(centre: tuple[float, float], size: float, outer: list[float],
                                                  inner: list[float], band: int, seed: int) -> None:
    shell = star(*centre, size, outer)
    hole = star(*centre, size * 0.3, inner)  # radii ≤ 0.3 < 0.35: strictly inside the shell
    area = Polygon(shell.exterior.coords, [hole.exterior.coords])
    if not area.is_valid:
        return
    x, y = hard_points(area, np.random.default_rng(seed), 300)
    np.testing.assert_array_equal(matched_by_cover(area, x, y, band), shapely.intersects_xy(area, x, y))


@fast
@given(centre=centres, size=sizes, first=radii, second=radii, band=bands, seed=st.integers(0, 2**32 - 1))
def test_multipolygons_match_shapely_covers(centre: tuple[float, float], size: float, first: list[float],
                                            second: list[float], band: int, seed: int) -> None:
    lng, lat = centre
    shift = 2.5 * size / M_PER_DEG / math.cos(math.radians(lat))
    area = MultiPolygon([star(lng, lat, size, first), star(lng + shift, lat, size, second)])
    if not area.is_valid:
        return
    x, y = hard_points(area, np.random.default_rng(seed), 300)
    np.testing.assert_array_equal(matched_by_cover(area, x, y, band), shapely.intersects_xy(area, x, y))


@pytest.mark.parametrize("band", [5, 9, 11])
def test_antimeridian_multipolygon_matches_on_both_sides(band: int) -> None:
    east = Polygon([(179.9, -16.1), (180.0, -16.1), (180.0, -15.9), (179.9, -15.9)])
    west = Polygon([(-180.0, -16.1), (-179.9, -16.1), (-179.9, -15.9), (-180.0, -15.9)])
    area = MultiPolygon([east, west])
    rng = np.random.default_rng(band)
    x = np.concatenate([rng.uniform(179.8, 180.0, 2000), rng.uniform(-180.0, -179.8, 2000),
                        np.full(50, 180.0), np.full(50, -180.0)])
    y = np.concatenate([rng.uniform(-16.2, -15.8, 4000), rng.uniform(-16.2, -15.8, 100)])
    expected = shapely.intersects_xy(area, x, y)
    assert expected[x < 0].sum() > 400 and expected[x > 0].sum() > 400
    np.testing.assert_array_equal(matched_by_cover(area, x, y, band), expected)


def test_a_large_area_takes_coarse_interior_cells_whole() -> None:
    area = star(-87.7, 41.85, 30_000.0, [1.0, 0.8, 1.0, 0.9, 1.0, 0.7, 1.0, 0.85])
    cover = area_to_cells(area, band_resolution=10)
    resolutions = {h3.get_resolution(c) for c in cover.interior}
    assert min(resolutions) <= 6  # whole coarse cells, not millions of fine ones
    assert len(cover.interior) + len(cover.boundary) < 20_000
    assert {h3.get_resolution(c) for c in cover.boundary} == {10}


def test_every_resident_lies_within_the_reach_of_its_ancestors() -> None:
    """The bound the cover's exactness rests on, checked over the globe and around the pentagons."""
    rng = np.random.default_rng(11)
    z, lng = rng.uniform(-1, 1, 1500), rng.uniform(-180, 180, 1500)
    points = list(zip(np.degrees(np.arcsin(z)), lng, strict=True))
    for pentagon in h3.get_pentagons(0):
        plat, plng = h3.cell_to_latlng(pentagon)
        points += [(float(np.clip(plat + dy, -89.9, 89.9)), ((plng + dx + 180) % 360) - 180)
                   for dy, dx in rng.normal(0, 2, (60, 2))]
    for lat, lng_ in points:
        cell = h3.latlng_to_cell(lat, lng_, RESIDENT_CELL_RESOLUTION)
        for resolution in range(RESIDENT_CELL_RESOLUTION):
            centre = h3.cell_to_latlng(h3.cell_to_parent(cell, resolution))
            assert h3.great_circle_distance((lat, lng_), centre, unit="m") < reach_m(resolution) / 1.3


def test_ranges_hold_exactly_the_descendants() -> None:
    cell = h3.latlng_to_cell(41.85, -87.7, 11)
    children = np.array(h3.cell_to_children(cell, 15), dtype=np.int64)
    [(low, high)] = cells_to_ranges([cell])
    assert (low, high) == (children.min(), children.max())
    neighbour = next(c for c in h3.grid_disk(cell, 1) if c != cell)
    outsiders = np.array(h3.cell_to_children(neighbour, 15), dtype=np.int64)
    assert not ((outsiders >= low) & (outsiders <= high)).any()


def test_siblings_merge_into_their_parents_range_and_compact() -> None:
    parent = h3.latlng_to_cell(41.85, -87.7, 6)
    children = h3.cell_to_children(parent, 8)
    assert cells_to_ranges(children) == cells_to_ranges([parent])
    assert compact(list(reversed(children))) == [parent]
    first_seven = [c for c in children if h3.cell_to_parent(c, 7) == h3.cell_to_parent(children[0], 7)]
    assert compact(first_seven) == [h3.cell_to_parent(children[0], 7)]
    assert sorted(compact(first_seven[:6])) == sorted(first_seven[:6])


def test_pentagon_descendants_fall_in_its_range() -> None:
    pentagon = h3.get_pentagons(5)[3]
    [(low, high)] = cells_to_ranges([pentagon])
    children = h3.cell_to_children(pentagon, 8)
    cells15 = np.array([h3.cell_to_center_child(c, 15) for c in children], dtype=np.int64)
    assert ((cells15 >= low) & (cells15 <= high)).all()
    neighbours = [c for c in h3.grid_disk(pentagon, 1) if c != pentagon]
    outside = np.array([h3.cell_to_center_child(c, 15) for c in neighbours], dtype=np.int64)
    assert not ((outside >= low) & (outside <= high)).any()


def test_split_ranges_cover_the_same_cells_in_balanced_parts() -> None:
    area = star(-87.7, 41.85, 20_000.0, [1.0, 0.6, 1.0, 0.9, 0.8])
    cover = area_to_cells(area, band_resolution=9)
    parts = split_ranges(cover.interior, 3)
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-88.0, -87.4, 20_000), rng.uniform(41.65, 42.05, 20_000)
    cells = np.array([h3.latlng_to_cell(b, a, 15) for a, b in zip(x, y, strict=True)], dtype=np.int64)
    whole = in_ranges(cells, cells_to_ranges(cover.interior))
    counts = [in_ranges(cells, part) for part in parts]
    np.testing.assert_array_equal(np.sum(counts, axis=0), whole.astype(int))  # each exactly once
    sizes = [int(c.sum()) for c in counts]
    assert min(sizes) > 0.8 * max(sizes)


def test_the_largest_allowed_area_stays_a_few_thousand_cells() -> None:
    """Memory bound: a ~19,000 km² county is classified with cells along its boundary, not its surface."""
    from dispatcher.targeting.area import area_km2

    area = star(-100.0, 40.0, 80_000.0, [1.0, 0.9, 1.0, 0.95, 1.0, 0.85, 1.0, 0.9, 0.97, 1.0])
    assert 15_000 < area_km2(area) < 20_000
    cover = area_to_cells(area)
    assert len(cover.interior) < 20_000 and len(cover.boundary) < 40_000
    assert len(cells_to_ranges(cover.interior)) < len(cover.interior)
    assert sum(len(part) for part in split_ranges(cover.interior, 8)) < 100_000


@pytest.mark.parametrize("resolution", [5, 7, 9])
def test_a_small_area_classified_in_one_step_matches_even_on_a_pentagon(resolution: int) -> None:
    """The one-step disk of a small area misses no cell, where H3 cells are most distorted too."""
    from dispatcher.targeting.cover import cells_near

    rng = np.random.default_rng(resolution)
    for pentagon in list(h3.get_pentagons(resolution))[:6]:
        lat, lng = h3.cell_to_latlng(pentagon)
        size = h3.average_hexagon_edge_length(resolution, unit="m")
        area = star(lng, lat, size, list(rng.uniform(0.35, 1.0, 12)))
        assert cells_near(area, resolution) is not None  # the one-step path is the one under test
        x, y = hard_points(area, rng, 400)
        np.testing.assert_array_equal(matched_by_cover(area, x, y, resolution), shapely.intersects_xy(area, x, y))


@fast
@given(centre=st.tuples(st.floats(-179.0, 179.0), st.floats(-84.0, 84.0)), size=sizes, radii=radii,
       resolution=st.integers(4, 12), seed=st.integers(0, 2**32 - 1))
def test_the_cells_near_an_area_hold_every_resident_s_ancestor(centre: tuple[float, float], size: float,
                                                                radii: list[float], resolution: int, seed: int) -> None:
    """The one-step start (H3's polyfill of the padded boxes) misses no cell a resident inside descends
    from: up to 84° of latitude, where a reach spans the most longitude."""
    from dispatcher.targeting.cover import cells_near

    area = star(*centre, size, radii)
    west, _, east, _ = area.bounds
    if not area.is_valid or west < -180 or east > 180:
        return
    near = cells_near(area, resolution)
    if near is None:
        return
    x, y = hard_points(area, np.random.default_rng(seed), 300)
    inside = shapely.intersects_xy(area, x, y)
    ancestors = {h3.cell_to_parent(h3.latlng_to_cell(b, a, RESIDENT_CELL_RESOLUTION), resolution)
                 for a, b in zip(x[inside], y[inside], strict=True)}
    assert ancestors <= set(near)


@fast
@given(centre=st.tuples(st.floats(-179.0, 179.0), st.floats(-84.0, 84.0)), size=sizes, radii=radii,
       resolution=st.integers(5, 11))
def test_the_direct_plan_s_cells_hold_the_descent_s_cells(centre: tuple[float, float], size: float,
                                                          radii: list[float], resolution: int) -> None:
    """The direct plan fetches the cells near the area unclassified: every cell of the descent's interior
    and band at that resolution is among them, in one step or not (a large area descends)."""
    from dispatcher.targeting.cover import direct_cells

    area = star(*centre, size, radii)
    if not area.is_valid:
        return
    cover = area_to_cells(area, band_resolution=resolution)
    descent = {child for cell in [*cover.interior, *cover.boundary] for child in h3.cell_to_children(cell, resolution)}
    direct = {child for cell in direct_cells(area, resolution) for child in h3.cell_to_children(cell, resolution)}
    assert descent <= direct
