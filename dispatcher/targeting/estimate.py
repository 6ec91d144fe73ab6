"""What an area will cost to target, known from its geometry before any cell is classified.

The cover's work follows the boundary, not the surface: the band at resolution ``r`` holds about one
cell per average edge length of boundary (a strip two reaches wide), capped by the cells of the
area's padded bounding box (the two sides of a hair-thin shape share one band). So from the perimeter,
the bounding box, the parts and the vertices alone we know, for every band resolution, how many cells
the cover will classify and how wide its band is, in microseconds of work and in bytes, before the
first base cell is opened.

:func:`check_area_budget` is the rule both ``publish()`` (contract validation) and the worker apply:
an area is refused when even the finest band that fits the budget is far wider than the area itself,
that is when its boundary is too long for its surface (a 1e-6° wide strip from pole to pole). The
worker then refines the choice with the resident statistics (:mod:`dispatcher.targeting.planner`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import h3.api.basic_int as h3
import numpy as np
import numpy.typing as npt
import shapely

from dispatcher.errors import InvalidArea
from dispatcher.targeting.area import Area, flat_rings, part_areas_km2, remember_last
from dispatcher.targeting.cover import BAND_RESOLUTION, reach_m

#: km per degree of latitude (and of longitude at the equator) on the sphere H3 uses.
KM_PER_DEGREE = math.pi * 6371.007180918475 / 180
#: CPU seconds to classify the cells of one band cell's whole branch (its ancestors' siblings included),
#: measured on the 2-core development machine; the budget's time unit.
SECONDS_PER_BAND_CELL = 20e-6
#: CPU seconds per cell when a small area is classified in one step from the cells around its boxes
#: (:func:`dispatcher.targeting.cover.cells_near`): no descent. Measured 3.7 µs a cell for a 400-vertex
#: district, 5.7 µs for a 3,000-vertex one (the area's preparation and the compaction included).
SECONDS_PER_NEAR_CELL = 5e-6
#: CPU seconds per cell the direct plan fetches near a small area's boxes, unclassified: H3's polyfill
#: (in C) and the cell's range (measured 1.2 µs for a 3,000-vertex district at res 9, 2 µs at res 8).
SECONDS_PER_UNCLASSIFIED_CELL = 1.5e-6
#: ... times this for each factor of ten in the number of parts: each box is tested against every
#: ring near it (measured: twice the time per cell for an archipelago of 300 islands).
PARTS_COST_FACTOR = 0.5
#: Peak bytes per band cell while the cover is built (Python ints, shapely boxes, lists of children).
BYTES_PER_BAND_CELL = 1_600
#: Seconds to fetch one candidate resident and test it exactly (one binary string of records, vectorised
#: GEOS): measured 0.45 µs of the server's aggregation and 0.15-0.2 µs of the test for a district.
SECONDS_PER_CANDIDATE = 0.7e-6
#: Resident memory of a worker process before targeting starts (interpreter, numpy, shapely, psycopg).
BASE_BYTES = 100 * 1024 * 1024
#: Residents per km² in the densest city blocks: what a band is assumed to hold when no statistics
#: say otherwise (the contract knows nothing of residents).
DENSE_RESIDENTS_PER_KM2 = 20_000.0
#: A band may cover this many times the area's own km² (a river corridor's band is about as wide as
#: the river; a 0.1 m strip's band is ten thousand times wider).
BAND_TO_AREA_RATIO = 4.0
#: Coarsest band resolution any plan uses: coarser, a band cell holds a whole town.
COARSEST_BAND_RESOLUTION = 5
#: Overestimate of band cells from the bounding box (hexagons do not tile a thin box exactly).
_BBOX_CELLS_FACTOR = 1.2
#: Band cells per edge length of boundary: a strip two reaches (1.6 edges) wide over a hexagon's area.
_CELLS_PER_EDGE = 2 * 1.6 / (3 * math.sqrt(3) / 2)


@dataclass(frozen=True)
class Budget:
    """What one area's targeting may use."""

    seconds: float
    bytes: int

    @classmethod
    def from_settings(cls) -> Budget:
        from dispatcher.config import get_settings

        settings = get_settings()
        return cls(seconds=settings.targeting_budget_seconds, bytes=settings.targeting_budget_mb * 1024 * 1024)


@dataclass(frozen=True)
class Shape:
    """The measures of an area that decide its cost, per part (a MultiPolygon's parts differ)."""

    #: Perimeter (km) and surface (km²) of each part.
    part_perimeters_km: npt.NDArray[np.float64]
    part_areas_km2: npt.NDArray[np.float64]
    #: Bounding box (west, south, east, north) of each part, in degrees.
    boxes: npt.NDArray[np.float64]
    vertices: int

    @property
    def parts(self) -> int:
        return len(self.boxes)

    @property
    def perimeter_km(self) -> float:
        return float(self.part_perimeters_km.sum())

    @property
    def area_km2(self) -> float:
        return float(self.part_areas_km2.sum())


@dataclass(frozen=True)
class BandEstimate:
    """A band at one resolution: its cells, its width in km² and what building it costs."""

    resolution: int
    cells: int
    band_km2: float
    seconds: float
    bytes: int
    #: Cells and km² of the band around each part.
    part_cells: npt.NDArray[np.float64]
    part_band_km2: npt.NDArray[np.float64]

    def fits(self, budget: Budget) -> bool:
        return self.seconds <= budget.seconds and self.bytes <= budget.bytes


@remember_last
def measure(area: Area) -> Shape:
    """Perimeter (km, edges straight in lon/lat, measured at each edge's mid-latitude), km², boxes,
    for every part at once."""
    flat = flat_rings(area)
    parts, part_of_ring, coords, ring_of_point = flat.parts, flat.part_of_ring, flat.coords, flat.ring_of_point
    same_ring = ring_of_point[1:] == ring_of_point[:-1]
    d_lng = np.diff(coords[:, 0]) * np.cos(np.radians((coords[1:, 1] + coords[:-1, 1]) / 2))
    edges = np.hypot(d_lng, np.diff(coords[:, 1]))[same_ring] * KM_PER_DEGREE
    per_ring = np.bincount(ring_of_point[1:][same_ring], edges, minlength=flat.rings)
    perimeters = np.bincount(part_of_ring, per_ring, minlength=len(parts)).astype(np.float64)
    return Shape(perimeters, part_areas_km2(area), shapely.bounds(parts), len(coords) - flat.rings)


@functools.cache
def _cell_sizes(resolutions: tuple[int, ...]) -> tuple[npt.NDArray[np.float64], ...]:
    """(average edge km, average cell km², reach km) at each of ``resolutions``, as columns."""
    sizes = np.array([(float(h3.average_hexagon_edge_length(r, unit="km")),
                       float(h3.average_hexagon_area(r, unit="km^2")), reach_m(r) / 1000) for r in resolutions])
    return tuple(column[:, None] for column in sizes.T)


#: The band resolutions any plan estimates, estimated at once (the budget check and the planner ask
#: for up to nine of them; one at a time, numpy's overhead on arrays of one part made it a third of
#: the planning of a district).
_BAND_RESOLUTIONS = tuple(range(COARSEST_BAND_RESOLUTION, BAND_RESOLUTION + 1))


@remember_last
def band_estimates(shape: Shape) -> dict[int, BandEstimate]:
    """The band at every resolution from :data:`COARSEST_BAND_RESOLUTION` to the finest."""
    return _band_estimates(shape, _BAND_RESOLUTIONS)


def band_estimate(shape: Shape, resolution: int) -> BandEstimate:
    """The band at ``resolution``: cells from each part's perimeter, capped by its padded box."""
    if resolution in _BAND_RESOLUTIONS:
        return band_estimates(shape)[resolution]
    return _band_estimates(shape, (resolution,))[resolution]


def _band_estimates(shape: Shape, resolutions: tuple[int, ...]) -> dict[int, BandEstimate]:
    """:func:`band_estimate` at each of ``resolutions`` (rows) for every part (columns) at once."""
    edge_km, cell_km2, reach_km = _cell_sizes(resolutions)
    by_perimeter = _CELLS_PER_EDGE * shape.part_perimeters_km / edge_km
    box_km2 = _padded_box_km2(shape.boxes, reach_km)
    cells = np.maximum(np.minimum(by_perimeter, _BBOX_CELLS_FACTOR * box_km2 / cell_km2), 1.0)
    band_km2 = np.minimum(cells * cell_km2, box_km2)
    per_cell = SECONDS_PER_BAND_CELL * (1 + PARTS_COST_FACTOR * math.log10(shape.parts))
    return {resolution: BandEstimate(resolution, math.ceil(total), width, total * per_cell,
                                     BASE_BYTES + int(total * BYTES_PER_BAND_CELL), cells[row], band_km2[row])
            for row, (resolution, total, width) in enumerate(zip(resolutions, cells.sum(axis=1).tolist(),
                                                                 band_km2.sum(axis=1).tolist(), strict=True))}


def near_box_km2(shape: Shape, resolution: int) -> npt.NDArray[np.float64]:
    """km² of each part's box padded by a res-``resolution`` reach: where the cells near it lie."""
    return _padded_box_km2(shape.boxes, np.array(reach_m(resolution) / 1000))


def _padded_box_km2(boxes: npt.NDArray[np.float64], pad_km: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    west, south, east, north = boxes.T
    width = (east - west) * KM_PER_DEGREE * np.cos(np.radians((south + north) / 2)) + 2 * pad_km
    height = (north - south) * KM_PER_DEGREE + 2 * pad_km
    area: npt.NDArray[np.float64] = width * height
    return area


def finest_fitting_band(shape: Shape, budget: Budget, finest: int = BAND_RESOLUTION) -> BandEstimate:
    """The finest band (from ``finest`` down to :data:`COARSEST_BAND_RESOLUTION`) that fits ``budget``;
    the coarsest one when none does."""
    for resolution in range(finest, COARSEST_BAND_RESOLUTION - 1, -1):
        estimate = band_estimate(shape, resolution)
        if estimate.fits(budget):
            return estimate
    return band_estimate(shape, COARSEST_BAND_RESOLUTION)


def allowed_band_km2(shape: Shape, budget: Budget) -> float:
    """The widest band an area may have: :data:`BAND_TO_AREA_RATIO` times its own surface, plus what the
    candidate budget allows in the densest city (a small district's band is wider than the district).

    So the residents tested one by one stay proportionate to the residents inside, whatever the shape.
    """
    return BAND_TO_AREA_RATIO * shape.area_km2 + budget.seconds / SECONDS_PER_CANDIDATE / DENSE_RESIDENTS_PER_KM2


def check_area_budget(area: Area, budget: Budget | None = None) -> BandEstimate:
    """The finest band that fits, or :class:`InvalidArea` when the boundary is too long for the area.

    Refused: no band fits the budget's cells, or the band that does is wider than
    :func:`allowed_band_km2` (its residents could not be tested within the budget).
    """
    budget = budget or Budget.from_settings()
    shape = measure(area)
    band = finest_fitting_band(shape, budget)
    if not band.fits(budget):
        why = f"its cover would need {band.cells:,} cells even at H3 resolution {band.resolution}"
    elif band.band_km2 > allowed_band_km2(shape, budget):
        why = f"the band along it would cover {band.band_km2:,.0f} km² to test resident by resident"
    else:
        return band
    raise InvalidArea(f"boundary too long for its area: {shape.perimeter_km:,.0f} km of edge around "
                      f"{shape.area_km2:,.1f} km² ({why}, over the targeting budget)")
