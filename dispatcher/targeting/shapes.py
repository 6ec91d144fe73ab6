"""Areas that are small, legal-looking and ruinous to cover: the thin shapes of issue 15.

Kept in the package (not only in tests) because the benchmark, the tests and an operator reproducing a
report all build the same ones.
"""

from __future__ import annotations

from shapely.geometry import Polygon

#: Width of the strips, in degrees of longitude (about 0.1 m).
THIN_WIDTH_DEG = 1e-6


def thin_strip(lng: float = 10.0, *, south: float = -80.0, north: float = 80.0,
               width_deg: float = THIN_WIDTH_DEG) -> Polygon:
    """A rectangle ``width_deg`` wide from ``south`` to ``north``: 5 vertices, about 1.4 km²."""
    return Polygon([(lng, south), (lng + width_deg, south), (lng + width_deg, north), (lng, north)])


def thin_comb(teeth: int, lng: float = 10.0, *, south: float = -80.0, north: float = 80.0,
              width_deg: float = THIN_WIDTH_DEG, gap_deg: float = 1e-3) -> Polygon:
    """``teeth`` strips joined by a hair-thin bar along ``south``: 4 vertices and about 1.4 km² per tooth
    (10 teeth: 44 vertices, 14 km²; 1,000 teeth: 4,004 vertices, 1,395 km²)."""
    points: list[tuple[float, float]] = [(lng, south)]
    for tooth in range(teeth):
        west = lng + tooth * gap_deg
        points += [(west, north), (west + width_deg, north), (west + width_deg, south + 1e-5)]
        if tooth < teeth - 1:
            points.append((west + gap_deg, south + 1e-5))
    last = lng + (teeth - 1) * gap_deg + width_deg
    points += [(last, south - 1e-5), (lng, south - 1e-5)]
    return Polygon(points)
