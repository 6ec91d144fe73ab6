"""Statistics of the resident index: residents per coarse H3 cell, for the planner.

``resident_cell_counts (cell, residents)`` holds, for each H3 cell at :data:`STATS_RESOLUTION` (about
5 km²), how many residents live under it. Statement triggers on ``residents`` (migration 012) keep it in
the same transaction as every import, update, move and deletion, one grouped upsert per statement, so
it is always as fresh as the index and costs an import one pass over its own rows. This module only
reads it: one query per area, for the cells around the area.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h3.api.basic_int as h3
import numpy as np
import numpy.typing as npt
import shapely

from dispatcher.config import RESIDENT_CELL_RESOLUTION
from dispatcher.db.types import Conn
from dispatcher.targeting.area import Area

#: Resolution of the statistics cells (must match ``resident_stats_cell`` in migration 012).
STATS_RESOLUTION = 7
#: Statistics cells are read around each part's bounding box, padded by this many degrees of latitude
#: (a res-7 cell's reach), so that a cell whose centre lies outside the box but whose residents may be
#: inside is counted.
LOOKUP_PAD_DEG = 0.03

_STATS_EDGE_KM = 1.406  # average edge of a res-7 cell
_RES_SHIFT = 52
_DIGIT_BITS = 3

_COUNTS_FROM = "FROM resident_cell_counts WHERE cell = ANY(%s::bigint[]) AND residents > 0"
_COUNTS_SQL = f"SELECT cell, residents {_COUNTS_FROM}"
#: The same counts as two arrays (cells, residents) in one row, after what the caller puts first in the
#: select list (``{}``): :mod:`dispatcher.targeting.match` switches JIT off in the same statement.
COUNTS_ARRAYS_SQL = ("SELECT {}, c.cells, c.residents FROM (SELECT array_agg(cell), array_agg(residents) "
                     f"{_COUNTS_FROM}) AS c(cells, residents)")


def descendant_range(cell: int, resolution: int) -> tuple[int, int]:
    """(first, last) id of ``cell``'s descendants at ``resolution`` (digits below it stay 7)."""
    own = h3.get_resolution(cell)
    free = (1 << (_DIGIT_BITS * (resolution - own))) - 1
    shift = _DIGIT_BITS * (RESIDENT_CELL_RESOLUTION - resolution)
    base = (cell & ~(0xF << _RES_SHIFT)) | (resolution << _RES_SHIFT)
    low = base & ~(free << shift)
    return low, low | ((free // 7) * 6) << shift


@dataclass(frozen=True)
class CellCounts:
    """Residents per statistics cell around one area, sorted by cell id."""

    cells: npt.NDArray[np.int64]
    residents: npt.NDArray[np.float64]
    #: (lat, lng) of each cell's centre.
    centres: npt.NDArray[np.float64]

    @classmethod
    def of(cls, cells: list[int], residents: list[float]) -> CellCounts:
        order = np.argsort(np.array(cells, dtype=np.int64), kind="stable")
        ids = np.array(cells, dtype=np.int64)[order]
        centres = np.array([h3.cell_to_latlng(int(c)) for c in ids], dtype=np.float64).reshape(-1, 2)
        return cls(ids, np.array(residents, dtype=np.float64)[order], centres)

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[Any]]) -> CellCounts:
        """From the (cell, residents) rows of :func:`cell_counts_query`."""
        return cls.of([int(r[0]) for r in rows], [float(r[1]) for r in rows])

    @classmethod
    def empty(cls) -> CellCounts:
        return cls.of([], [])

    @property
    def total(self) -> float:
        return float(self.residents.sum())

    def residents_under(self, cells: list[int], resolution: int) -> npt.NDArray[np.float64]:
        """Expected residents under each of ``cells`` (all at ``resolution``): summed from the statistics
        cells below a coarse cell, a share of the statistics cell above a fine one."""
        if not cells or len(self.cells) == 0:
            return np.zeros(len(cells), np.float64)
        if resolution >= STATS_RESOLUTION:
            parents = np.array([h3.cell_to_parent(c, STATS_RESOLUTION) for c in cells], dtype=np.int64)
            slot = np.minimum(np.searchsorted(self.cells, parents), len(self.cells) - 1)
            found = self.cells[slot] == parents
            share: npt.NDArray[np.float64] = np.where(found, self.residents[slot], 0.0)
            return share / 7.0 ** (resolution - STATS_RESOLUTION)
        bounds = np.array([descendant_range(c, STATS_RESOLUTION) for c in cells], dtype=np.int64)
        cumulative = np.concatenate([[0.0], np.cumsum(self.residents)])
        first = np.searchsorted(self.cells, bounds[:, 0], side="left")
        last = np.searchsorted(self.cells, bounds[:, 1], side="right")
        under: npt.NDArray[np.float64] = cumulative[last] - cumulative[first]
        return under

    def densities_near(self, boxes: npt.NDArray[np.float64], pad_deg: float) -> npt.NDArray[np.float64]:
        """Residents per km² around each box (west, south, east, north): the statistics cells whose centre
        lies in the box padded by ``pad_deg``, over the padded box's km²."""
        if len(self.cells) == 0 or len(boxes) == 0:
            return np.zeros(len(boxes), np.float64)
        west, south, east, north = (boxes[:, i:i + 1] for i in range(4))
        lat, lng = self.centres[:, 0], self.centres[:, 1]
        near = ((lat >= south - pad_deg) & (lat <= north + pad_deg)
                & (lng >= west - pad_deg) & (lng <= east + pad_deg))
        residents = near.astype(np.float64) @ self.residents
        height_km = (north - south + 2 * pad_deg)[:, 0] * 111.2
        width_km = (east - west + 2 * pad_deg)[:, 0] * 111.2 * np.maximum(
            np.cos(np.radians((south + north)[:, 0] / 2)), 0.01)
        cell_km2 = float(h3.average_hexagon_area(STATS_RESOLUTION, unit="km^2"))
        density: npt.NDArray[np.float64] = residents / np.maximum(height_km * width_km, cell_km2)
        return density


def load_cell_counts(conn: Conn, area: Area) -> CellCounts:
    """The statistics cells around ``area``'s parts (one query)."""
    query = cell_counts_query(area)
    return CellCounts.from_rows(conn.execute(*query).fetchall() if query else [])


def cell_counts_query(area: Area) -> tuple[str, list[object]] | None:
    """The query (statement, parameters) reading the statistics cells around ``area``'s parts, for a
    caller that sends it with others in one round trip; ``None`` when there is nothing to read."""
    cells: set[int] = set()
    for box in shapely.bounds(shapely.get_parts(area)).tolist():
        cells.update(cells_around(*box))
    if not cells:
        return None
    return _COUNTS_SQL, ["{" + ",".join(map(str, cells)) + "}"]


def cells_around(west: float, south: float, east: float, north: float) -> list[int]:
    """Statistics cells whose centre lies in the box padded by :data:`LOOKUP_PAD_DEG` (or near it): a
    small box (an island, a district) takes a disk of cells around its centre, a large one H3's polyfill."""
    pad_lng = LOOKUP_PAD_DEG / max(math.cos(math.radians(max(abs(south), abs(north)))), 0.01)
    half_deg = max(north - south, (east - west) * math.cos(math.radians((south + north) / 2))) / 2 + LOOKUP_PAD_DEG
    rings = math.ceil(half_deg * 111.2 / (_STATS_EDGE_KM * 1.5))
    if rings <= 4:
        return list(h3.grid_disk(h3.latlng_to_cell((south + north) / 2, (west + east) / 2, STATS_RESOLUTION), rings))
    south, north = max(south - LOOKUP_PAD_DEG, -89.9), min(north + LOOKUP_PAD_DEG, 89.9)
    west, east = max(west - pad_lng, -180.0), min(east + pad_lng, 180.0)
    box = h3.LatLngPoly([(south, west), (south, east), (north, east), (north, west)])
    return list(h3.h3shape_to_cells(box, STATS_RESOLUTION))
