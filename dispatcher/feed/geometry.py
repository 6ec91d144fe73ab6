"""Prepared request areas for the exact band test, cached per process and bounded by vertex count.

A lookup tests a point against an area only when the point falls in that area's boundary band, so
the same few areas are tested over and over; reading and preparing one (WKB to GEOS, then its edge
index) costs far more than the test itself. The cache is bounded by vertices rather than entries
because a coastline weighs as much as thousands of neighbourhoods. Areas never change once published,
so a cached one is never stale.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import shapely

#: Vertices kept prepared per process by default (a vertex costs roughly 100 bytes prepared).
DEFAULT_MAX_VERTICES = 2_000_000


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
        area = shapely.from_wkb(load_wkb(request_id))
        shapely.prepare(area)
        # Build the prepared edge index now, in one thread, rather than lazily under concurrent tests.
        shapely.intersects_xy(area, 0.0, 0.0)
        size = int(shapely.get_num_coordinates(area))
        with self._lock:
            if request_id not in self._areas and size <= self.max_vertices:
                self._areas[request_id] = (area, size)
                self._vertices += size
                while self._vertices > self.max_vertices:
                    _, (_, dropped) = self._areas.popitem(last=False)
                    self._vertices -= dropped
        return area

    def clear(self) -> None:
        """Forget every area (tests)."""
        with self._lock:
            self._areas.clear()
            self._vertices = 0
