"""`dispatcher preview`: what a request's area will reach, as a picture and as GeoJSON layers.

Layers: the area itself, its H3 cover (interior cells taken whole, boundary band cells whose residents
are tested one by one, see :mod:`dispatcher.targeting.cover`) and resident density. Density is
counted in the database by a coarse H3 parent cell (the picture never holds a resident's location) and
cells with fewer than :data:`MIN_DENSITY_COUNT` residents are left out, so no home can be singled out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3
from shapely.geometry import mapping

from dispatcher.config import RESIDENT_CELL_RESOLUTION, get_settings
from dispatcher.db.types import Conn
from dispatcher.errors import ConfigurationError
from dispatcher.targeting.area import Area, parse_area
from dispatcher.targeting.cover import cells_to_ranges
from dispatcher.targeting.planner import choose_plan
from dispatcher.targeting.stats import CellCounts, load_cell_counts

#: Density cells smaller than this many residents are not shown (k-anonymity for ops pictures).
MIN_DENSITY_COUNT = 5
#: Density cells across the wider side of the area's bounding box, roughly.
DENSITY_CELLS_ACROSS = 60
#: Coarsest and finest resolutions used for density (res 10 cells are about 65 m across).
DENSITY_RESOLUTIONS = (4, 10)
#: Colours of the layers in the picture.
INTERIOR_COLOUR = "#2a9d8f"
BOUNDARY_COLOUR = "#f4a261"
AREA_COLOUR = "#1d3557"

_RES_SHIFT = 52
_DIGIT_BITS = 3

_DENSITY_SQL = """
SELECT (r.cell & %(keep)s) | %(resolution_bits)s | %(free)s AS parent, count(*)
FROM unnest(%(lo)s::bigint[], %(hi)s::bigint[]) AS g(lo, hi)
CROSS JOIN LATERAL (SELECT cell FROM residents WHERE cell BETWEEN g.lo AND g.hi) AS r
GROUP BY 1
HAVING count(*) >= %(min_count)s
"""


@dataclass(frozen=True)
class PreviewLayers:
    """Everything a preview shows."""

    area: Area
    interior: list[int]
    boundary: list[int]
    #: (cell at ``density_resolution``, residents under it), only cells with enough residents.
    density: list[tuple[int, int]]
    density_resolution: int


def _bbox_metres(area: Area) -> tuple[float, float]:
    west, south, east, north = area.bounds
    mid = math.radians((south + north) / 2)
    return (east - west) * 111_320 * math.cos(mid), (north - south) * 110_540


def density_resolution(area: Area) -> int:
    """The finest resolution giving about :data:`DENSITY_CELLS_ACROSS` cells across the area."""
    width, height = _bbox_metres(area)
    target_edge = max(width, height) / DENSITY_CELLS_ACROSS
    coarsest, finest = DENSITY_RESOLUTIONS
    for resolution in range(finest, coarsest - 1, -1):
        if h3.average_hexagon_edge_length(resolution, unit="m") * math.sqrt(3) >= target_edge:
            return resolution
    return coarsest


def _bbox_cells(area: Area, resolution: int) -> list[int]:
    west, south, east, north = area.bounds
    pad_lat = (north - south) * 0.1 + 0.002
    pad_lng = (east - west) * 0.1 + 0.002
    box = h3.LatLngPoly([(south - pad_lat, west - pad_lng), (south - pad_lat, east + pad_lng),
                         (north + pad_lat, east + pad_lng), (north + pad_lat, west - pad_lng)])
    cells = set(h3.h3shape_to_cells(box, resolution))
    # Cells whose centre falls outside the box but whose body overlaps it: one ring more.
    return sorted({n for c in cells for n in h3.grid_disk(c, 1)})


def resident_density(conn: Conn, area: Area, resolution: int, *,
                     min_count: int = MIN_DENSITY_COUNT) -> list[tuple[int, int]]:
    """Residents per res-``resolution`` cell around the area, counted in SQL (index range scans only)."""
    ranges = cells_to_ranges(_bbox_cells(area, resolution))
    free = (1 << (_DIGIT_BITS * (RESIDENT_CELL_RESOLUTION - resolution))) - 1
    keep = ~((0xF << _RES_SHIFT) | free)
    rows = conn.execute(_DENSITY_SQL, {
        "keep": keep, "resolution_bits": resolution << _RES_SHIFT, "free": free, "min_count": min_count,
        "lo": [lo for lo, _ in ranges], "hi": [hi for _, hi in ranges],
    }).fetchall()
    return sorted((int(cell), int(n)) for cell, n in rows)


def preview_layers(geojson: object, conn: Conn | None, *, plan: str | None = None) -> PreviewLayers:
    """Parse the area (with the engine's limits and budget), cover it, and count residents around it.

    The cells drawn are those of the plan targeting would choose (with the resident statistics when
    there is a database), so a preview costs no more than targeting and shows what it will do; an area
    targeting refuses is refused here with the same message. ``plan`` forces one by name.
    """
    settings = get_settings()
    area = parse_area(geojson, max_vertices=settings.max_area_vertices, max_area_km2=settings.max_area_km2)
    cover = choose_plan(area, load_cell_counts(conn, area) if conn is not None else CellCounts.empty(),
                        force=plan).classified(area)
    resolution = density_resolution(area)
    density = resident_density(conn, area, resolution) if conn is not None else []
    return PreviewLayers(area, list(cover.interior), list(cover.boundary), density, resolution)


def _ring(cell: int) -> list[list[float]]:
    ring = [[lng, lat] for lat, lng in h3.cell_to_boundary(cell)]
    return [*ring, ring[0]]


def _cell_feature(cell: int, layer: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [_ring(cell)]},
        "properties": {"layer": layer, "cell": h3.int_to_str(cell), "resolution": h3.get_resolution(cell),
                       **properties},
    }


def layers_to_geojson(layers: PreviewLayers) -> dict[str, Any]:
    """A FeatureCollection with one ``layer`` property per feature: area, interior, boundary, density."""
    features: list[dict[str, Any]] = [
        {"type": "Feature", "geometry": mapping(layers.area), "properties": {"layer": "area"}}]
    features += [_cell_feature(c, "interior") for c in layers.interior]
    features += [_cell_feature(c, "boundary") for c in layers.boundary]
    features += [_cell_feature(c, "density", residents=n) for c, n in layers.density]
    return {"type": "FeatureCollection", "features": features}


def render_png(layers: PreviewLayers, path: Path, *, width_px: int = 1200, height_px: int = 900,
               title: str | None = None) -> None:
    """Draw the layers into a PNG of exactly ``width_px`` × ``height_px``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.collections import PolyCollection
        from matplotlib.patches import Patch
    except ImportError:
        raise ConfigurationError("dispatcher preview --png needs matplotlib: pip install 'dispatcher[ops]'") from None

    dpi = 100
    fig, ax = plt.subplots(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    try:
        if layers.density:
            cells = PolyCollection([_ring(c) for c, _ in layers.density], cmap="Purples", alpha=0.9,
                                   edgecolors="none", zorder=1)
            cells.set_array([n for _, n in layers.density])
            ax.add_collection(cells)
            fig.colorbar(cells, ax=ax, shrink=0.6, label=f"residents per H3 res-{layers.density_resolution} cell")
        ax.add_collection(PolyCollection([_ring(c) for c in layers.interior], facecolors=INTERIOR_COLOUR,
                                         edgecolors=INTERIOR_COLOUR, linewidths=0.6, alpha=0.25, zorder=2))
        ax.add_collection(PolyCollection([_ring(c) for c in layers.boundary], facecolors=BOUNDARY_COLOUR,
                                         edgecolors="none", alpha=0.6, zorder=3))
        polygons = list(getattr(layers.area, "geoms", [layers.area]))
        for polygon in polygons:
            for ring in (polygon.exterior, *polygon.interiors):
                xs, ys = ring.xy
                ax.plot(xs, ys, color=AREA_COLOUR, linewidth=1.6, zorder=4)
        west, south, east, north = layers.area.bounds
        pad = max(east - west, north - south) * 0.08 + 0.0005
        ax.set_xlim(west - pad, east + pad)
        ax.set_ylim(south - pad, north + pad)
        ax.set_aspect(1 / math.cos(math.radians((south + north) / 2)))
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.legend(handles=[
            Patch(facecolor="none", edgecolor=AREA_COLOUR, label="area"),
            Patch(facecolor=INTERIOR_COLOUR, alpha=0.25, edgecolor=INTERIOR_COLOUR,
                  label=f"interior cells ({len(layers.interior)})"),
            Patch(facecolor=BOUNDARY_COLOUR, alpha=0.6, label=f"boundary band cells ({len(layers.boundary)})"),
        ], loc="upper right", framealpha=0.9)
        ax.set_title(title or "Request area: H3 cover and resident density")
        fig.savefig(path, dpi=dpi, format="png")
    finally:
        plt.close(fig)


def run_preview(area_path: Path, *, png: Path | None, geojson_out: Path | None, conn: Conn | None,
                width_px: int = 1200, height_px: int = 900, plan: str | None = None) -> PreviewLayers:
    """Build the layers for the area file and write what was asked for."""
    import json

    layers = preview_layers(area_path.read_text(encoding="utf-8"), conn, plan=plan)
    if geojson_out is not None:
        geojson_out.write_text(json.dumps(layers_to_geojson(layers)), encoding="utf-8")
    if png is not None:
        render_png(layers, png, width_px=width_px, height_px=height_px, title=f"{area_path.name}: cover and density")
    return layers
