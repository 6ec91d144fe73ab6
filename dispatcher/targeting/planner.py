"""Pick the cheapest exact plan for an area, from its geometry and the resident statistics.

Three plans, all exact (every resident they do not take whole is tested against the area):

* ``cover``: today's plan, the interior taken whole and a band at one fine resolution tested;
* ``adaptive``: the same descent, but a boundary cell stops being refined where the statistics say few
  live under it (at the statistics' resolution in the countryside, fine in the city);
* ``direct``: a few coarse cells covering the area, every resident under them fetched and tested in
  one vectorised pass (small districts, sparse areas): no interior scans, two round trips.

Each plan's cost is estimated in seconds from the band's cells (:mod:`dispatcher.targeting.estimate`),
the candidates to test and the interior rows to scan, both from the statistics
(:mod:`dispatcher.targeting.stats`), per part of a MultiPolygon (each part has its own density). The
cheapest plan that fits the budget is chosen, like a database planner does, and can be explained.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import h3.api.basic_int as h3
import numpy as np
import numpy.typing as npt

from dispatcher.errors import InvalidArea
from dispatcher.targeting.area import Area
from dispatcher.targeting.cover import (
    BAND_RESOLUTION,
    MAX_NEAR_PARTS,
    AreaCover,
    area_to_cells,
    direct_cells,
    near_cell_count,
)
from dispatcher.targeting.estimate import (
    COARSEST_BAND_RESOLUTION,
    SECONDS_PER_BAND_CELL,
    SECONDS_PER_CANDIDATE,
    SECONDS_PER_NEAR_CELL,
    SECONDS_PER_UNCLASSIFIED_CELL,
    Budget,
    Shape,
    band_estimate,
    finest_fitting_band,
    measure,
    near_box_km2,
)
from dispatcher.targeting.stats import LOOKUP_PAD_DEG, STATS_RESOLUTION, CellCounts

PLANS = ("cover", "adaptive", "direct")
#: Seconds to scan one interior resident in the database (set-based, index-only).
SECONDS_PER_INTERIOR_ROW = 0.15e-6
#: Seconds of one statement round trip.
SECONDS_PER_QUERY = 0.5e-3
#: Seconds to open one range scan of the band (an index descent; a band cell is at most one range).
#: Measured: a district's band at res 10 (115 ranges) cost 1.3 ms more than at res 9 (24 ranges).
SECONDS_PER_BAND_RANGE = 5e-6
#: Cells near a small area's boxes per range they make: neighbours' ids run on (measured 4-10 for districts).
NEAR_CELLS_PER_RANGE = 5.0
#: A boundary cell is refined only when more residents than this are expected under it: refining
#: classifies seven children, which costs about as much as testing this many residents.
STOP_RESIDENTS = 7 * SECONDS_PER_BAND_CELL / SECONDS_PER_CANDIDATE


@dataclass(frozen=True)
class PlanEstimate:
    """One plan's expected work: band cells, residents tested one by one, interior rows, seconds."""

    name: str
    band_resolution: int
    cells: int
    candidates: int
    interior_rows: int
    seconds: float

    def describe(self) -> str:
        return (f"{self.name} (band res {self.band_resolution}): ~{self.cells:,} cells, "
                f"~{self.candidates:,} candidates, ~{self.interior_rows:,} interior rows, "
                f"~{self.seconds * 1000:.1f} ms")


@dataclass(frozen=True)
class Plan:
    """The plan chosen for an area and the ones it beat."""

    chosen: PlanEstimate
    alternatives: tuple[PlanEstimate, ...] = ()
    counts: CellCounts = field(default_factory=CellCounts.empty, repr=False)

    @property
    def name(self) -> str:
        return self.chosen.name

    def cover(self, area: Area) -> AreaCover:
        """The cells this plan takes whole (``interior``) and tests (``boundary``)."""
        if self.name == "direct":
            resolution = self.chosen.band_resolution
            return AreaCover(interior=[], boundary=direct_cells(area, resolution), band_resolution=resolution)
        return self.classified(area)

    def classified(self, area: Area) -> AreaCover:
        """The cells as the descent classified them (inside the area, or along its edge), before the
        plan decides which to test: what ``dispatcher preview`` draws."""
        resolution = self.chosen.band_resolution
        if self.name == "adaptive":
            # Stopping coarser than the statistics is never allowed (see _sparse): the descent may start there.
            return area_to_cells(area, band_resolution=resolution, stop=self._sparse,
                                 start_resolution=STATS_RESOLUTION)
        return area_to_cells(area, band_resolution=resolution)

    def _sparse(self, cells: list[int], resolution: int) -> npt.NDArray[np.bool_]:
        if resolution < STATS_RESOLUTION:
            # The statistics are read around the area only, and a coarser cell reaches far past them:
            # its count would miss the town next door, and stopping there would test all of that town.
            return np.zeros(len(cells), np.bool_)
        return self.counts.residents_under(cells, resolution) <= STOP_RESIDENTS

    def explain(self) -> str:
        lines = [f"plan: {self.chosen.describe()}"]
        lines += [f"  rejected: {other.describe()}" for other in self.alternatives]
        return "\n".join(lines)


def choose_plan(area: Area, counts: CellCounts, *, budget: Budget | None = None, force: str | None = None,
                finest: int = BAND_RESOLUTION) -> Plan:
    """The cheapest plan for ``area`` (or the plan named ``force``), with its estimate."""
    if force is not None and force not in PLANS:
        raise ValueError(f"unknown plan {force!r}: one of {', '.join(PLANS)}")
    budget = budget or Budget.from_settings()
    shape = measure(area)
    densities = counts.densities_near(shape.boxes, LOOKUP_PAD_DEG)
    fitting = finest_fitting_band(shape, budget, finest).resolution
    everywhere = np.full(shape.parts, fitting)
    costs = _Costs(shape, densities)
    estimates = {
        "cover": costs.estimate("cover", everywhere),
        "adaptive": costs.estimate("adaptive", _adaptive_resolutions(densities, fitting)),
        "direct": min((costs.estimate("direct", np.full(shape.parts, r))
                       for r in range(COARSEST_BAND_RESOLUTION, fitting + 1)), key=lambda e: e.seconds),
    }
    cheapest = min(estimates.values(), key=lambda e: e.seconds)
    check_candidates_budget(shape, cheapest, budget)
    chosen = estimates[force] if force is not None else cheapest
    if chosen.name == "adaptive":
        # The descent goes as fine as the budget allows; the statistics stop it earlier where few live.
        chosen = PlanEstimate("adaptive", fitting, chosen.cells, chosen.candidates, chosen.interior_rows,
                              chosen.seconds)
    return Plan(chosen, tuple(e for e in estimates.values() if e.name != chosen.name), counts)


def check_candidates_budget(shape: Shape, cheapest: PlanEstimate, budget: Budget) -> None:
    """Refuse, naming it, an area whose cheapest plan would test more residents one by one than the
    budget's seconds allow: the statistics' side of :func:`dispatcher.targeting.estimate.check_area_budget`
    (a short boundary through the densest blocks passes the geometry's check but not this one).

    The interior is not counted: its rows never leave the database and are written in chunks.
    """
    seconds = cheapest.seconds - cheapest.interior_rows * SECONDS_PER_INTERIOR_ROW
    if seconds > budget.seconds:
        raise InvalidArea(
            f"too many residents along its boundary to test one by one: about {cheapest.candidates:,} "
            f"candidates around {shape.area_km2:,.1f} km² even with the cheapest plan ({cheapest.name} at "
            f"H3 resolution {cheapest.band_resolution}, ~{seconds:,.1f} s, over the targeting budget of "
            f"{budget.seconds:g} s)")


def _adaptive_resolutions(densities: npt.NDArray[np.float64], finest: int) -> npt.NDArray[np.int64]:
    """Per part, the first resolution where a cell's expected residents fall under :data:`STOP_RESIDENTS`."""
    resolutions = np.full(len(densities), finest)
    for resolution in range(finest - 1, STATS_RESOLUTION - 1, -1):  # no coarser: see Plan._sparse
        cell_km2 = float(h3.average_hexagon_area(resolution, unit="km^2"))
        resolutions[densities * cell_km2 <= STOP_RESIDENTS] = resolution
    return resolutions


class _Costs:
    """Estimates of the plans for one area; each band and each one-step cover estimated once, though
    several plans ask for the same resolution."""

    def __init__(self, shape: Shape, densities: npt.NDArray[np.float64]) -> None:
        self.shape = shape
        self.densities = densities
        self.band = functools.cache(functools.partial(band_estimate, shape))
        self.near = functools.cache(functools.partial(near_cell_count, shape.boxes))

    def estimate(self, name: str, resolutions: npt.NDArray[np.int64]) -> PlanEstimate:
        """Seconds of a plan whose band around part ``i`` is at ``resolutions[i]``."""
        shape, densities = self.shape, self.densities
        cells = candidates = 0.0
        inside = float(shape.part_areas_km2 @ densities)
        finest = int(resolutions.max())
        for resolution in {finest} if finest == resolutions.min() else np.unique(resolutions).tolist():
            band = self.band(resolution)
            here = resolutions == resolution
            cells += float(band.part_cells[here].sum())
            candidates += float(band.part_band_km2[here] @ densities[here])
        interior = 0.0
        if name == "direct":
            candidates += inside
        else:
            interior = inside
        queries = 2 if name == "direct" else 3
        # A small area without a density rule is classified in one step from the cells around it.
        near = self.near(finest) if name != "adaptive" else None
        cover_seconds = near * SECONDS_PER_NEAR_CELL if near is not None else cells * SECONDS_PER_BAND_CELL
        ranges = cells
        if name == "direct" and near is not None:  # the cells near its boxes, unclassified: all they hold
            cover_seconds = near * SECONDS_PER_UNCLASSIFIED_CELL
            candidates = self._near_residents(finest, near)
            ranges = near / NEAR_CELLS_PER_RANGE
        seconds = (cover_seconds + ranges * SECONDS_PER_BAND_RANGE + candidates * SECONDS_PER_CANDIDATE
                   + interior * SECONDS_PER_INTERIOR_ROW + queries * SECONDS_PER_QUERY)
        return PlanEstimate(name, finest, round(cells), round(candidates), round(interior), seconds)

    def _near_residents(self, resolution: int, near: float) -> float:
        """Residents under the cells near the parts' boxes (padded by a reach), per part's density; one
        box for all parts when there are too many (as :func:`dispatcher.targeting.cover.cells_near` does)."""
        if self.shape.parts > MAX_NEAR_PARTS:
            return near * float(h3.average_hexagon_area(resolution, unit="km^2")) * float(self.densities.max())
        return float(near_box_km2(self.shape, resolution) @ self.densities)
