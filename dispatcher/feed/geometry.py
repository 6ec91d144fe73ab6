"""Prepared request areas for the exact band test, cached per process and bounded by vertex count.

A lookup tests a point against an area only when the point falls in that area's boundary band, so
the same few areas are tested over and over; reading and preparing one (WKB to GEOS, then its edge
index) costs far more than the test itself, and fetching it from PostgreSQL more still. So the areas
are prepared when ``dispatcher api`` starts (:meth:`PreparedAreas.warm`: 10,000 requests, 2.1 million
vertices, took 1.5 s and 60 MB), and only a request accepted since then is prepared on its first test.
The cache is bounded by vertices rather than entries because a coastline weighs as much as thousands
of neighbourhoods. Areas never change once published, so a cached one is never stale.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

import shapely

#: Vertices kept prepared per process by default (a vertex costs about 30 bytes prepared, its edge
#: index built: some 240 MB at most).
DEFAULT_MAX_VERTICES = 8_000_000


class PreparedAreas:
    """An LRU of prepared areas keyed by request id, holding at most ``max_vertices`` vertices
    (an area larger than the whole budget is prepared for the call and not kept)."""

    def __init__(self, max_vertices: int = DEFAULT_MAX_VERTICES) -> None:
        self.max_vertices = max_vertices
        self._areas: OrderedDict[str, tuple[shapely.Geometry, int]] = OrderedDict()
        self._vertices = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._areas)

    @property
    def vertices(self) -> int:
        """Vertices held now."""
        return self._vertices

    def get(self, request_id: str, load_wkb: Callable[[str], bytes]) -> shapely.Geometry:
        """The prepared area of ``request_id``, loading its WKB with ``load_wkb`` on a miss."""
        with self._lock:
            hit = self._areas.get(request_id)
            if hit is not None:
                self._areas.move_to_end(request_id)
                return hit[0]
        area, size = _prepared(load_wkb(request_id))
        with self._lock:
            if request_id not in self._areas and size <= self.max_vertices:
                self._keep(request_id, area, size)
                while self._vertices > self.max_vertices:
                    _, (_, dropped) = self._areas.popitem(last=False)
                    self._vertices -= dropped
        return area

    def warm(self, areas: Iterable[tuple[str, bytes]]) -> int:
        """Prepare ``(request_id, wkb)`` areas, most wanted first, until the budget is full (nothing held
        is evicted for them; the rest of ``areas`` is read and skipped); return how many were added."""
        added = 0
        full = False
        for request_id, wkb in areas:
            with self._lock:
                if full or request_id in self._areas:
                    continue
            area, size = _prepared(wkb)
            with self._lock:
                if self._vertices + size > self.max_vertices:
                    full = True
                    continue
                if request_id not in self._areas:
                    self._keep(request_id, area, size)
                    self._areas.move_to_end(request_id, last=False)  # warmed in order: the last is evicted first
                    added += 1
        return added

    def _keep(self, request_id: str, area: shapely.Geometry, size: int) -> None:
        self._areas[request_id] = (area, size)
        self._vertices += size

    def clear(self) -> None:
        """Forget every area (tests)."""
        with self._lock:
            self._areas.clear()
            self._vertices = 0


def _prepared(wkb: bytes) -> tuple[shapely.Geometry, int]:
    """The area of ``wkb`` prepared, its edge index built, and its vertex count."""
    area = shapely.from_wkb(wkb)
    shapely.prepare(area)
    # Build the edge index now, in one thread, rather than lazily under concurrent tests: GEOS builds it
    # on the first test of a point inside the area's envelope.
    west, south, east, north = shapely.bounds(area).tolist()
    shapely.intersects_xy(area, (west + east) / 2, (south + north) / 2)
    return area, int(shapely.get_num_coordinates(area))
