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

import math
from dataclasses import dataclass

import h3.api.basic_int as h3
import numpy as np
from shapely.geometry import MultiPolygon

from dispatcher.errors import InvalidArea
from dispatcher.targeting.area import Area, area_km2
from dispatcher.targeting.cover import BAND_RESOLUTION, reach_m

#: km per degree of latitude (and of longitude at the equator) on the sphere H3 uses.
KM_PER_DEGREE = math.pi * 6371.007180918475 / 180
#: CPU seconds to classify the cells of one band cell's whole branch (its ancestors' siblings included),
#: measured on the 2-core development machine; the budget's time unit.
SECONDS_PER_BAND_CELL = 20e-6
#: Peak bytes per band cell while the cover is built (Python ints, shapely boxes, lists of children).
BYTES_PER_BAND_CELL = 1_600
#: Seconds to fetch one candidate resident and test it exactly (binary arrays, vectorised GEOS).
SECONDS_PER_CANDIDATE = 1e-6
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
    """The measures of an area that decide its cost."""

    perimeter_km: float
    area_km2: float
    #: Bounding box (west, south, east, north) of each part, in degrees.
    boxes: tuple[tuple[float, float, float, float], ...]
    vertices: int

    @property
    def parts(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class BandEstimate:
    """A band at one resolution: its cells, its width in km² and what building it costs."""

    resolution: int
    cells: int
    band_km2: float
    seconds: float
    bytes: int

    def fits(self, budget: Budget) -> bool:
        return self.seconds <= budget.seconds and self.bytes <= budget.bytes


def measure(area: Area) -> Shape:
    """Perimeter (km, edges straight in lon/lat, measured at each edge's mid-latitude), km², boxes."""
    parts = list(area.geoms) if isinstance(area, MultiPolygon) else [area]
    perimeter = 0.0
    vertices = 0
    for part in parts:
        for ring in (part.exterior, *part.interiors):
            coords = np.asarray(ring.coords)
            d_lng = np.diff(coords[:, 0]) * np.cos(np.radians((coords[1:, 1] + coords[:-1, 1]) / 2))
            perimeter += float(np.hypot(d_lng, np.diff(coords[:, 1])).sum()) * KM_PER_DEGREE
            vertices += len(coords) - 1
    boxes = tuple((float(w), float(s), float(e), float(n)) for w, s, e, n in (part.bounds for part in parts))
    return Shape(perimeter, area_km2(area), boxes, vertices)


def band_estimate(shape: Shape, resolution: int) -> BandEstimate:
    """The band at ``resolution``: cells from the perimeter, capped by each part's padded box."""
    edge_km = float(h3.average_hexagon_edge_length(resolution, unit="km"))
    cell_km2 = float(h3.average_hexagon_area(resolution, unit="km^2"))
    reach_km = reach_m(resolution) / 1000
    by_perimeter = _CELLS_PER_EDGE * shape.perimeter_km / edge_km
    box_km2 = sum(_padded_box_km2(box, reach_km) for box in shape.boxes)
    cells = max(min(by_perimeter, _BBOX_CELLS_FACTOR * box_km2 / cell_km2), float(shape.parts))
    band_km2 = min(cells * cell_km2, box_km2)
    return BandEstimate(resolution, math.ceil(cells), band_km2, cells * SECONDS_PER_BAND_CELL,
                        BASE_BYTES + int(cells * BYTES_PER_BAND_CELL))


def _padded_box_km2(box: tuple[float, float, float, float], pad_km: float) -> float:
    west, south, east, north = box
    mid = math.radians((south + north) / 2)
    width = (east - west) * KM_PER_DEGREE * math.cos(mid) + 2 * pad_km
    height = (north - south) * KM_PER_DEGREE + 2 * pad_km
    return width * height


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
