"""An area as H3 cells: an interior taken whole, and a boundary band whose residents are tested one by one.

Why not a plain H3 polyfill: H3 cells are spherical and the area's edges are straight in the lon/lat
plane, and, more subtly, the res-15 descendants of a cell do not tile the cell itself (aperture 7: a
child pokes out of its parent). So a resident whose res-15 cell descends from a cell ``C`` is only known
to lie within a *reach* of ``C``'s centre: at most ``REACH_FACTOR`` average edge lengths of ``C``'s
resolution (measured over the whole globe, pentagons included, the worst is 1.14; the factor leaves
40% to spare, and ``tests/test_targeting_cover.py`` checks the bound).

The cover descends the H3 tree from the cells near the area at the finest resolution where they are
few (H3's polyfill, in C, of each part's box padded by a reach: a district starts at res 9 or 10 with a
few hundred cells and is classified in one step), else from the 122 base cells. At each resolution a
cell's reach is bounded by a lon/lat box that contains its spherical cap, and the box is tested against
the prepared area:

* box covered by the area: every resident under the cell is inside; the cell is *interior*;
* box disjoint from the area: no resident under the cell can be inside; the cell is dropped;
* otherwise the cell is refined into its children, down to the band resolution, where it becomes a
  *boundary* cell whose residents are fetched and tested exactly.

Work and memory grow with the boundary's length over the cell size, never with the area's size: a
county-sized area gives a few thousand cells, not millions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import h3.api.basic_int as h3
import numpy as np
import numpy.typing as npt
import shapely

from dispatcher.config import RESIDENT_CELL_RESOLUTION
from dispatcher.targeting.area import Area

#: A resident under a cell of resolution r lies within this many average res-r edge lengths of the
#: cell's centre (worst seen over the globe: 1.14).
REACH_FACTOR = 1.6
#: ... plus this many metres, for rounding and for the resident's own res-15 cell.
REACH_SLACK_M = 2.0
#: Finest resolution of the boundary band (res 10: cells about 65 m across). Finer means fewer residents
#: to test one by one but more cells to classify; measured on a synthetic metro, 10 is the best
#: trade-off from a neighbourhood to a county (benchmarks/README-targeting.md).
BAND_RESOLUTION = 10
#: Interior cells coarser than this are cut into pieces when the scan is split between connections.
SPLIT_RESOLUTION = 8
#: A small area is classified in one step from the cells around it when there are at most this many
#: (H3 finds them in C); with more, starting a level coarser and descending classified fewer cells
#: (measured: a 2.2 km district at res 10, 1,292 cells in one step cost 4.9 ms, descending 4.3 ms).
MAX_NEAR_CELLS = 800
#: ... looked for around each part's box up to this many parts, else around the whole area's box.
MAX_NEAR_PARTS = 16
#: ... and only for boxes narrower than this in longitude and away from the poles.
MAX_NEAR_SPAN_DEG = 10.0
MAX_NEAR_LATITUDE = 85.0
#: Earth radius H3 uses for distances, in metres.
H3_EARTH_RADIUS_M = 6371007.180918475

_KM2_PER_DEG2 = (math.pi * H3_EARTH_RADIUS_M / 180_000) ** 2
_RES_SHIFT = 52
_RES_MASK = np.uint64(0xF << _RES_SHIFT)
_DIGIT_BITS = 3
_DIGIT_SHIFTS = np.arange(RESIDENT_CELL_RESOLUTION, dtype=np.uint64) * np.uint64(_DIGIT_BITS)

CellArray = npt.NDArray[np.int64]
#: ``stop(cells, resolution)``: which boundary cells to keep at this resolution rather than refine.
StopRule = Callable[[list[int], int], npt.NDArray[np.bool_]]


@dataclass(frozen=True)
class AreaCover:
    """The cells of an area: ``interior`` (compacted, every resident under them is inside) and
    ``boundary`` (at ``band_resolution``; their residents must be tested against the area)."""

    interior: list[int] = field(default_factory=list)
    boundary: list[int] = field(default_factory=list)
    band_resolution: int = BAND_RESOLUTION


def reach_m(resolution: int) -> float:
    """Distance from a res-``resolution`` cell's centre within which every resident under it lies."""
    return REACH_FACTOR * float(h3.average_hexagon_edge_length(resolution, unit="m")) + REACH_SLACK_M


def area_to_cells(area: Area, *, band_resolution: int = BAND_RESOLUTION, stop: StopRule | None = None,
                  start_resolution: int = 0) -> AreaCover:
    """Classify H3 cells against ``area`` down to ``band_resolution``.

    The descent starts from the cells near the area at the finest resolution where they are few (a small
    area: a disk of cells around it, see :func:`cells_near`), else from the 122 base cells: a district
    skips the seven coarse levels that only narrow the globe down to it.

    ``stop`` (the planner's density rule) may end the descent early for some boundary cells from
    ``start_resolution`` on (the descent then starts no finer than that): where few live, testing a
    coarse cell's residents costs less than refining it. The band then mixes resolutions; no cell lies
    under another, so the cover stays exact.
    """
    if not 0 <= band_resolution < RESIDENT_CELL_RESOLUTION:
        raise ValueError(f"band resolution must be in 0..{RESIDENT_CELL_RESOLUTION - 1}")
    shapely.prepare(area)
    boundary = area.boundary
    shapely.prepare(boundary)
    first, cells = start_cells(area, min(band_resolution, start_resolution) if stop is not None else band_resolution)
    interior: list[int] = []
    stopped: list[int] = []
    for resolution in range(first, band_resolution + 1):
        inside, touching = _classify(area, boundary, cells, resolution)
        interior.extend(c for c, keep in zip(cells, inside, strict=True) if keep)
        edge = [c for c, keep in zip(cells, touching & ~inside, strict=True) if keep]
        if resolution == band_resolution:
            return AreaCover(interior=compact(interior), boundary=stopped + edge, band_resolution=band_resolution)
        if stop is not None and resolution >= start_resolution and edge:
            here = stop(edge, resolution)
            stopped.extend(c for c, keep in zip(edge, here, strict=True) if keep)
            edge = [c for c, keep in zip(edge, here, strict=True) if not keep]
        cells = [child for cell in edge for child in h3.cell_to_children(cell)]
    raise AssertionError("unreachable")  # pragma: no cover


def start_cells(area: Area, finest: int) -> tuple[int, list[int]]:
    """(resolution, cells) to start the descent from: the disk of :func:`cells_near` at the finest
    resolution up to ``finest`` where it is small enough, else the base cells at resolution 0."""
    for resolution in range(finest, 0, -1):
        near = cells_near(area, resolution)
        if near is not None:
            return resolution, near
    return 0, list(h3.get_res0_cells())


def cells_near(area: Area, resolution: int) -> list[int] | None:
    """Every res-``resolution`` cell whose reach may touch ``area``, from H3's polyfill (in C) of each
    part's box padded by a reach; ``None`` when that is more than :data:`MAX_NEAR_CELLS` cells, or the
    boxes come near a pole or span more than :data:`MAX_NEAR_SPAN_DEG` of longitude.
    """
    padded = _padded_boxes(shapely.bounds(shapely.get_parts(area)), resolution)
    if padded is None:
        return None
    polygons = [h3.LatLngPoly([(south, west), (south, east), (north, east), (north, west)])
                for west, south, east, north in padded]
    if len(polygons) == 1:
        return list(h3.h3shape_to_cells(polygons[0], resolution))
    return list({cell for polygon in polygons for cell in h3.h3shape_to_cells(polygon, resolution)})


def near_cell_count(boxes: npt.NDArray[np.float64], resolution: int) -> float | None:
    """About how many cells :func:`cells_near` finds around parts of these boxes (west, south, east,
    north), or ``None`` when it gives up: what the planner needs to cost the one-step cover."""
    padded = _padded_boxes(boxes, resolution)
    if padded is None:
        return None
    return _near_km2(padded) / float(h3.average_hexagon_area(resolution, unit="km^2"))


def _padded_boxes(boxes: npt.NDArray[np.float64], resolution: int) -> list[tuple[float, float, float, float]] | None:
    """The boxes (west, south, east, north) padded by a reach, cut at ±180, or ``None`` (see :func:`cells_near`).

    A resident inside the area lies in a part's box, and the centre of its cell's ancestor within a reach
    of it: so the ancestor's centre lies in the box padded by a reach (in longitude, the widest span of a
    reach at the box's most poleward latitude, as in :func:`_classify`). H3 takes a cell when its centre
    is inside the polygon; whether it reads the box's east-west edges as straight in lon/lat or as
    great-circle arcs, the two differ by at most sin φ cos φ Δλ²/8 (radians), which is added twice over.
    """
    if len(boxes) > MAX_NEAR_PARTS:
        boxes = np.array([[boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()]])
    angle = reach_m(resolution) / H3_EARTH_RADIUS_M * 1.0001  # radians
    padded: list[tuple[float, float, float, float]] = []
    for west, south, east, north in boxes.tolist():
        poleward = math.radians(max(abs(south), abs(north)))
        if east - west > MAX_NEAR_SPAN_DEG or math.degrees(poleward + angle) > MAX_NEAR_LATITUDE:
            return None
        pad_lng = math.asin(math.sin(angle) / math.cos(poleward))
        span = math.radians(east - west) + 2 * pad_lng
        outer = poleward + angle
        bow = math.sin(outer) * math.cos(outer) * span * span / 8
        pad_y, pad_x = math.degrees(angle + 2 * bow), math.degrees(pad_lng + 2 * bow / math.cos(outer))
        south, north, west, east = south - pad_y, north + pad_y, west - pad_x, east + pad_x
        padded.append((max(west, -180.0), south, min(east, 180.0), north))
        if west < -180.0:  # beyond ±180: on the other side of the map
            padded.append((west + 360.0, south, 180.0, north))
        if east > 180.0:
            padded.append((-180.0, south, east - 360.0, north))
    if _near_km2(padded) / float(h3.average_hexagon_area(resolution, unit="km^2")) > MAX_NEAR_CELLS:
        return None
    return padded


def _near_km2(padded: list[tuple[float, float, float, float]]) -> float:
    return sum((east - west) * (north - south) * math.cos(math.radians((south + north) / 2))
               for west, south, east, north in padded) * _KM2_PER_DEG2


def compact(cells: list[int]) -> list[int]:
    """``cells`` (distinct, of mixed resolutions, none under another) with every complete set of
    siblings replaced by their parent, recursively (h3's ``compact_cells`` wants one resolution)."""
    by_resolution: dict[int, list[int]] = {}
    for cell in cells:
        by_resolution.setdefault(h3.get_resolution(cell), []).append(cell)
    result: list[int] = []
    for resolution in range(RESIDENT_CELL_RESOLUTION, -1, -1):
        group = by_resolution.pop(resolution, [])
        for cell in h3.compact_cells(group) if group else []:
            coarser = h3.get_resolution(cell)
            if coarser == resolution:
                result.append(cell)
            else:
                by_resolution.setdefault(coarser, []).append(cell)
    return result


def direct_cells(area: Area, resolution: int) -> list[int]:
    """Res-``resolution`` cells holding every resident inside ``area``: what the direct plan fetches and
    tests resident by resident. When they are few, the cells near each part's box (:func:`cells_near`),
    unclassified; else (a large area) the descent's interior and band at that resolution.

    Why unclassified: the direct plan tests every resident it fetches, interior or not, so classifying
    a district's cells only spared the residents of the few near its box's corners, and cost more than
    they did (boxes, GEOS's edge index, a predicate per box: 0.5 ms of CPU for a 3,000-vertex district,
    against 30 % more candidates that numpy rejects by the area's box before the exact test).
    """
    near = cells_near(area, resolution)
    if near is not None:
        return near
    cover = area_to_cells(area, band_resolution=resolution)
    return [*cover.interior, *cover.boundary]


class _ReachBoxes:
    """Lon/lat boxes holding each cell's reach (a spherical cap): ``main`` within ±180, and for caps
    that cross the antimeridian, the part beyond it, on the other side of the map."""

    def __init__(self, cells: list[int], resolution: int) -> None:
        centres = np.array([h3.cell_to_latlng(c) for c in cells], dtype=np.float64).reshape(-1, 2)
        lat, lng = centres[:, 0], centres[:, 1]
        angle = reach_m(resolution) / H3_EARTH_RADIUS_M * 1.0001  # radians, with room for rounding
        d_lat = math.degrees(angle)
        # The widest longitude span of a spherical cap of this radius centred at `lat`.
        ratio = math.sin(angle) / np.maximum(np.cos(np.radians(lat)), 1e-12)
        whole_circle = ratio >= 1.0
        d_lng = np.where(whole_circle, 180.0, np.degrees(np.arcsin(np.minimum(ratio, 1.0))))
        lo_lat = np.maximum(lat - d_lat, -90.0)
        hi_lat = np.minimum(lat + d_lat, 90.0)
        lo_lng, hi_lng = lng - d_lng, lng + d_lng
        whole_circle |= (hi_lng - lo_lng) >= 360.0
        self.lng, self.lat = lng, lat
        self.west_wrap = ~whole_circle & (lo_lng < -180.0)
        self.east_wrap = ~whole_circle & (hi_lng > 180.0)
        self.main = shapely.box(
            np.where(whole_circle, -180.0, np.maximum(lo_lng, -180.0)),
            lo_lat,
            np.where(whole_circle, 180.0, np.minimum(hi_lng, 180.0)),
            hi_lat,
        )
        self._lo_lng, self._hi_lng, self._lo_lat, self._hi_lat = lo_lng, hi_lng, lo_lat, hi_lat

    @property
    def wrapping(self) -> npt.NDArray[np.bool_]:
        wrapping: npt.NDArray[np.bool_] = self.west_wrap | self.east_wrap
        return wrapping

    def touching_beyond_antimeridian(self, area: Area, touching: npt.NDArray[np.bool_]) -> None:
        """Mark in ``touching`` the cells whose box beyond the antimeridian touches ``area``."""
        wraps = np.flatnonzero(self.wrapping)
        if not wraps.size:
            return
        west = self.west_wrap[wraps]
        wrapped = shapely.box(
            np.where(west, self._lo_lng[wraps] + 360.0, -180.0),
            self._lo_lat[wraps],
            np.where(west, 180.0, self._hi_lng[wraps] - 360.0),
            self._hi_lat[wraps],
        )
        touching[wraps] |= shapely.intersects(area, wrapped)


def _classify(
    area: Area, boundary: shapely.Geometry, cells: list[int], resolution: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(reach covered by the area, reach touching the area) for each cell."""
    if not cells:
        empty = np.zeros(0, dtype=bool)
        return empty, empty
    boxes = _ReachBoxes(cells, resolution)
    # A box the boundary does not cross lies wholly inside or wholly outside: its centre tells which.
    crossing = shapely.intersects(boundary, boxes.main)
    centre_inside = shapely.intersects_xy(area, boxes.lng, boxes.lat)
    touching = crossing | centre_inside
    inside = ~crossing & centre_inside & ~boxes.wrapping
    boxes.touching_beyond_antimeridian(area, touching)
    return inside, touching


def cells_to_ranges(cells: list[int] | CellArray) -> list[tuple[int, int]]:
    """Sorted, merged, inclusive ranges of res-15 cell ids holding every res-15 descendant of ``cells``
    (distinct cells, none under another).

    In H3's bit layout the resolution field sits above the base cell and the digits, and unused digits
    are 7; so a cell's res-15 descendants are the cell with resolution 15 and digits r+1..15 running
    from all 0 to all 6. Two ranges merge when no valid res-15 cell lies between them (between the
    last descendant of one cell and the first of its next sibling there are only ids with a digit 7).
    """
    if not len(cells):
        return []  # a direct plan has no interior: numpy's fixed costs, 35 µs, for nothing
    low, high = _descendant_ranges(cells)
    order = np.argsort(low, kind="stable")
    return _merge(low[order], high[order])


def split_ranges(cells: list[int], parts: int, *, finest: int = SPLIT_RESOLUTION) -> list[list[tuple[int, int]]]:
    """The ranges of ``cells`` dealt into ``parts`` lists of about equal population, to scan in parallel.

    Cells coarser than ``finest`` are first cut into their descendants at ``finest``; neighbouring pieces
    of the city have similar densities, so dealing the sorted pieces like cards balances the parts.
    """
    if parts <= 1:
        return [cells_to_ranges(cells)]
    pieces: list[int] = []
    for cell in cells:
        if h3.get_resolution(cell) < finest:
            pieces.extend(h3.cell_to_children(cell, finest))
        else:
            pieces.append(cell)
    low, high = _descendant_ranges(pieces)
    order = np.argsort(low, kind="stable")
    low, high = low[order], high[order]
    return [_merge(low[i::parts], high[i::parts]) for i in range(parts)]


def _descendant_ranges(cells: list[int] | CellArray) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """(first, last) res-15 descendant of each cell."""
    ids = np.asarray(cells, dtype=np.int64).astype(np.uint64)
    resolution = ((ids & _RES_MASK) >> np.uint64(_RES_SHIFT)).astype(np.int64)
    free_bits = (_DIGIT_BITS * (RESIDENT_CELL_RESOLUTION - resolution)).astype(np.uint64)
    all_ones = (np.uint64(1) << free_bits) - np.uint64(1)
    at_finest = (ids & ~_RES_MASK) | np.uint64(RESIDENT_CELL_RESOLUTION << _RES_SHIFT)
    low = at_finest & ~all_ones
    # Digits all 6 (0b110) in the free positions: 0b001001...001 (= all ones / 7) times 6.
    high = low | (all_ones // np.uint64(7)) * np.uint64(6)
    return low, high


def _merge(low: npt.NDArray[np.uint64], high: npt.NDArray[np.uint64]) -> list[tuple[int, int]]:
    """Merge sorted, disjoint ranges separated by no valid res-15 cell."""
    if len(low) == 0:
        return []
    starts = np.ones(len(low), dtype=bool)
    starts[1:] = low[1:] > _next_cells_after(high[:-1])
    first = np.flatnonzero(starts)
    last = np.append(first[1:] - 1, len(low) - 1)
    return list(zip(low[first].astype(np.int64).tolist(), high[last].astype(np.int64).tolist(), strict=True))


def _next_cells_after(cells: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """For each res-15 id, the smallest id above it that can be a valid cell (digits only 0..6):
    the lowest digit below 6 goes up by one and the digits under it (all 6) become 0."""
    digits = (cells[:, None] >> _DIGIT_SHIFTS) & np.uint64(0b111)  # digit 15 first, in the lowest bits
    below_six = digits < 6
    lowest = below_six.argmax(axis=1)
    found = below_six[np.arange(len(cells)), lowest]
    shift = _DIGIT_SHIFTS[lowest]
    result: npt.NDArray[np.uint64] = (cells & ~((np.uint64(1) << shift) - np.uint64(1))) + (np.uint64(1) << shift)
    above_digits = ~np.uint64((1 << 45) - 1)  # every digit was 6: the next base cell, digits all 0
    result[~found] = (cells[~found] & above_digits) + np.uint64(1 << 45)
    return result
