"""A request's area: from GeoJSON to a valid shapely (Multi)Polygon, or an :class:`InvalidArea`.

Every bad input is refused here, before anything is sent, with a message that names the problem:
not GeoJSON, not an area (Point, LineString, GeometryCollection, ...), empty, an unclosed ring, an
invalid polygon (self-intersection, ...), coordinates out of range (often longitude and latitude
swapped), too many vertices, too large. Limits are checked before the heavy work, so a hostile
payload costs little.

Coordinates are longitude/latitude on WGS84 (RFC 7946) and edges are straight in that plane, which is
how PostGIS ``geometry(4326)`` and shapely read them. A MultiPolygon split at ±180 (RFC 7946 §3.1.9)
works as it is: its parts are just two polygons, one ending at 180 and one starting at -180.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import orjson
import shapely
from shapely.geometry import MultiPolygon, Polygon

from dispatcher.errors import InvalidArea

#: Mean (authalic) Earth radius in km, the sphere on which areas are measured.
EARTH_RADIUS_KM = 6371.0072

_AREA_TYPES = frozenset({"Polygon", "MultiPolygon"})
_NOT_AREA_TYPES = frozenset({"Point", "MultiPoint", "LineString", "MultiLineString", "GeometryCollection"})

Area: TypeAlias = Polygon | MultiPolygon
Ring: TypeAlias = npt.NDArray[np.float64]


def parse_area(geojson: object, *, max_vertices: int, max_area_km2: float) -> Area:
    """The area described by ``geojson`` (a dict, a JSON string, a Feature, or anything with
    ``__geo_interface__``) as a valid shapely Polygon or MultiPolygon.

    Raises :class:`InvalidArea` naming the problem when it is not a usable area.
    """
    geometry = _geometry_mapping(_as_mapping(geojson))
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates")
    polygons = [coordinates] if kind == "Polygon" else coordinates
    if not isinstance(polygons, (list, tuple)):
        raise InvalidArea(f"not GeoJSON: {kind} coordinates must be an array")
    if not polygons:
        raise InvalidArea("the area is empty: no coordinates")
    _check_vertex_count(polygons, max_vertices)
    parts = [_polygon(rings, index) for index, rings in enumerate(polygons)]
    area: Area = parts[0] if kind == "Polygon" else MultiPolygon(parts)
    _check_valid(area)
    km2 = area_km2(area)
    if km2 > max_area_km2:
        raise InvalidArea(f"the area covers {km2:,.0f} km², more than the maximum of {max_area_km2:,.0f} km²")
    return area


def area_km2(area: Area) -> float:
    """Area in km² on the sphere, exact for edges straight in the longitude/latitude plane.

    Along an edge where latitude varies linearly with longitude, the integral of sin(lat) d(lon) has a
    closed form; summed around a ring it is the ring's area on the sphere (Green's theorem).
    """
    parts = area.geoms if isinstance(area, MultiPolygon) else [area]
    total = 0.0
    for part in parts:
        total += _ring_area_km2(np.asarray(part.exterior.coords))
        total -= sum(_ring_area_km2(np.asarray(hole.coords)) for hole in part.interiors)
    return total


def _ring_area_km2(coords: Ring) -> float:
    lon = np.radians(coords[:, 0])
    lat = np.radians(coords[:, 1])
    d_lon = lon[1:] - lon[:-1]
    d_lat = lat[1:] - lat[:-1]
    mid = (lat[1:] + lat[:-1]) / 2
    # (cos a - cos b) / (b - a) = sin(mid) * sinc(half the span); np.sinc is sin(pi x) / (pi x).
    integral = np.sum(d_lon * np.sin(mid) * np.sinc(d_lat / (2 * math.pi)))
    return float(abs(integral)) * EARTH_RADIUS_KM**2


def _as_mapping(geojson: object) -> Mapping[str, Any]:
    if isinstance(geojson, (str, bytes, bytearray)):
        try:
            geojson = orjson.loads(geojson)  # a coastline is megabytes of numbers: 5x faster than json
        except orjson.JSONDecodeError as exc:
            raise InvalidArea(f"not GeoJSON: not valid JSON ({exc.msg} at position {exc.pos})") from None
        except ValueError:  # bytes that are not UTF-8
            raise InvalidArea("not GeoJSON: not valid JSON (not UTF-8 text)") from None
    elif not isinstance(geojson, Mapping) and hasattr(geojson, "__geo_interface__"):
        geojson = geojson.__geo_interface__
    if not isinstance(geojson, Mapping):
        raise InvalidArea(f"not GeoJSON: expected an object, got {type(geojson).__name__}")
    return geojson


def _geometry_mapping(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    kind = obj.get("type")
    if kind == "Feature":
        geometry = obj.get("geometry")
        if geometry is None:
            raise InvalidArea("the area is empty: the Feature has no geometry")
        if not isinstance(geometry, Mapping):
            raise InvalidArea("not GeoJSON: a Feature's geometry must be an object")
        obj, kind = geometry, geometry.get("type")
    if kind in _AREA_TYPES:
        return obj
    if kind in _NOT_AREA_TYPES or kind == "Feature":
        raise InvalidArea(f"a {kind} is not an area: expected a Polygon or a MultiPolygon")
    if kind == "FeatureCollection":
        raise InvalidArea("a FeatureCollection is not an area: send one Polygon, MultiPolygon or Feature")
    raise InvalidArea(f"not GeoJSON: unknown type {kind!r}")


def _check_vertex_count(polygons: Sequence[Any], max_vertices: int) -> None:
    """Count positions before converting anything, so a huge payload is refused cheaply."""
    count = 0
    for index, rings in enumerate(polygons):
        if not isinstance(rings, (list, tuple)):
            raise InvalidArea(f"not GeoJSON: polygon {index} must be an array of rings")
        for ring in rings:
            if not isinstance(ring, (list, tuple)):
                raise InvalidArea(f"not GeoJSON: a ring of polygon {index} must be an array of positions")
            count += max(len(ring) - 1, 0)
        if count > max_vertices:
            raise InvalidArea(f"the area has more than the maximum of {max_vertices:,} vertices")


def _polygon(rings: Sequence[Any], index: int) -> Polygon:
    if not rings:
        raise InvalidArea(f"the area is empty: polygon {index} has no rings")
    arrays = [_ring(ring, index, number) for number, ring in enumerate(rings)]
    return Polygon(arrays[0], arrays[1:])


def _ring(ring: Sequence[Any], index: int, number: int) -> Ring:
    where = f"ring {number} of polygon {index}"
    coords = _positions(ring)
    if coords is None:
        raise InvalidArea(f"not GeoJSON: {where} has a position that is not [longitude, latitude]")
    if len(coords) < 4:
        raise InvalidArea(f"invalid polygon: {where} has {len(coords)} positions, a ring needs at least 4")
    if not np.isfinite(coords).all():
        raise InvalidArea(f"coordinates out of range: {where} has a coordinate that is not a finite number")
    _check_ranges(coords, where)
    if not np.array_equal(coords[0], coords[-1]):
        raise InvalidArea(f"invalid polygon: {where} is not closed (its first and last positions differ)")
    return coords


def _positions(ring: Sequence[Any]) -> Ring | None:
    """The ring's [lon, lat] pairs as an (n, 2) array (altitudes dropped), or None if malformed."""
    try:
        coords = np.asarray(ring, dtype=np.float64)  # the fast path: all positions of one length
    except (TypeError, ValueError):
        try:  # positions of mixed length (2 and 3), or garbage
            coords = np.array([list(position)[:2] for position in ring], dtype=np.float64)
        except (TypeError, ValueError):
            return None
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        return None
    return coords[:, :2]


def _check_ranges(coords: Ring, where: str) -> None:
    lon, lat = coords[:, 0], coords[:, 1]
    if (np.abs(lat) > 90).any():
        hint = ""
        if (np.abs(lon) <= 90).all() and (np.abs(lat) <= 180).all():
            hint = "; were longitude and latitude swapped? GeoJSON positions are [longitude, latitude]"
        raise InvalidArea(f"coordinates out of range: {where} has a latitude beyond ±90{hint}")
    if (np.abs(lon) > 180).any():
        raise InvalidArea(f"coordinates out of range: {where} has a longitude beyond ±180")


def _check_valid(area: Area) -> None:
    reason = shapely.is_valid_reason(area)
    if reason != "Valid Geometry":
        raise InvalidArea(f"invalid polygon: {reason.lower()}")
    if area.is_empty or area.area == 0:
        raise InvalidArea("the area is empty: it encloses no surface")
