"""Pick the cheapest exact plan for an area, from its geometry and the resident statistics.

Three plans, all exact (every resident they do not take whole is tested against the area):

* ``cover``: today's plan, the interior taken whole and a band at one fine resolution tested;
* ``adaptive``: the same descent, but a boundary cell stops being refined where the statistics say few
  live under it (coarse in the countryside and around sparse islands, fine in the city);
* ``direct``: a few coarse cells covering the area, every resident under them fetched and tested in
  one vectorised pass (small districts, sparse areas): no interior scans, two round trips.

Each plan's cost is estimated in seconds from the band's cells (:mod:`dispatcher.targeting.estimate`),
the candidates to test and the interior rows to scan, both from the statistics
(:mod:`dispatcher.targeting.stats`), per part of a MultiPolygon (each part has its own density). The
cheapest plan that fits the budget is chosen, like a database planner does, and can be explained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import h3.api.basic_int as h3
import numpy as np
import numpy.typing as npt
from shapely.geometry import MultiPolygon

from dispatcher.targeting.area import Area
from dispatcher.targeting.cover import BAND_RESOLUTION, AreaCover, area_to_cells, reach_m
from dispatcher.targeting.estimate import (
    COARSEST_BAND_RESOLUTION,
    SECONDS_PER_BAND_CELL,
    SECONDS_PER_CANDIDATE,
    Budget,
    Shape,
    band_estimate,
    finest_fitting_band,
    measure,
)
from dispatcher.targeting.stats import CellCounts

PLANS = ("cover", "adaptive", "direct")
#: Seconds to scan one interior resident in the database (set-based, index-only).
SECONDS_PER_INTERIOR_ROW = 0.15e-6
#: Seconds of one statement round trip.
SECONDS_PER_QUERY = 0.5e-3
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
        resolution = self.chosen.band_resolution
        if self.name == "direct":
            cover = area_to_cells(area, band_resolution=resolution)
            return AreaCover(interior=[], boundary=[*cover.interior, *cover.boundary], band_resolution=resolution)
        if self.name == "adaptive":
            return area_to_cells(area, band_resolution=resolution, stop=self._sparse,
                                 start_resolution=COARSEST_BAND_RESOLUTION)
        return area_to_cells(area, band_resolution=resolution)

    def _sparse(self, cells: list[int], resolution: int) -> npt.NDArray[np.bool_]:
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
    parts = [_PartModel(part, counts) for part in (area.geoms if isinstance(area, MultiPolygon) else [area])]
    whole = measure(area)
    fitting = finest_fitting_band(whole, budget, finest).resolution
    estimates = {
        "cover": _estimate("cover", parts, _fixed(fitting)),
        "adaptive": _estimate("adaptive", parts, lambda p: p.adaptive_resolution(fitting)),
        "direct": min((_estimate("direct", parts, _fixed(r)) for r in range(COARSEST_BAND_RESOLUTION, fitting + 1)),
                      key=lambda e: e.seconds),
    }
    chosen = estimates[force] if force is not None else min(estimates.values(), key=lambda e: e.seconds)
    if chosen.name == "adaptive":
        # The descent goes as fine as the budget allows; the statistics stop it earlier where few live.
        chosen = PlanEstimate("adaptive", fitting, chosen.cells, chosen.candidates, chosen.interior_rows,
                              chosen.seconds)
    return Plan(chosen, tuple(e for e in estimates.values() if e.name != chosen.name), counts)


class _PartModel:
    """One part's shape and the density of residents around it."""

    def __init__(self, part: Area, counts: CellCounts) -> None:
        self.shape: Shape = measure(part)
        pad = reach_m(COARSEST_BAND_RESOLUTION) / 111_195
        self.density = counts.density_near(part.bounds, pad)

    def adaptive_resolution(self, finest: int) -> int:
        """The band resolution where a cell's expected residents fall under :data:`STOP_RESIDENTS`."""
        for resolution in range(COARSEST_BAND_RESOLUTION, finest):
            if self.density * float(h3.average_hexagon_area(resolution, unit="km^2")) <= STOP_RESIDENTS:
                return resolution
        return finest


def _fixed(resolution: int) -> Callable[[_PartModel], int]:
    return lambda part: resolution


def _estimate(name: str, parts: list[_PartModel], resolution_of: Callable[[_PartModel], int]) -> PlanEstimate:
    cells = candidates = interior = 0.0
    resolutions = []
    for part in parts:
        resolution = resolution_of(part)
        resolutions.append(resolution)
        band = band_estimate(part.shape, resolution)
        inside = part.shape.area_km2 * part.density
        cells += band.cells
        if name == "direct":
            candidates += band.band_km2 * part.density + inside
        else:
            candidates += band.band_km2 * part.density
            interior += inside
    queries = 2 if name == "direct" else 3
    seconds = (cells * SECONDS_PER_BAND_CELL + candidates * SECONDS_PER_CANDIDATE
               + interior * SECONDS_PER_INTERIOR_ROW + queries * SECONDS_PER_QUERY)
    return PlanEstimate(name, max(resolutions), round(cells), round(candidates), round(interior), seconds)
