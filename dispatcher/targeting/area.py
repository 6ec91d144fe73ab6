"""A request's area: from GeoJSON to a valid shapely (Multi)Polygon, or an :class:`InvalidArea`.

Every bad input is refused here, before anything is sent, with a message that names the problem:
not GeoJSON, not an area (Point, LineString, GeometryCollection, ...), empty, an unclosed ring, an
invalid polygon (self-intersection, ...), coordinates out of range (often longitude and latitude
swapped), too many vertices, too large. Limits are checked before the heavy work, so a hostile
payload costs little.

What RFC 7946 does not allow is refused, never coerced: a ``crs`` member (positions are always WGS84),
coordinates that are strings, booleans or null, positions of fewer than 2 or more than 3 numbers, NaN
and Infinity, a ``bbox`` that is not 4 or 6 numbers. Foreign members (and a Feature's ``properties``)
are allowed, but the whole area is bounded in bytes and in nesting depth. :func:`check_geojson` is the
part of these checks the contract applies to every request before it is stored.

Coordinates are longitude/latitude on WGS84 (RFC 7946) and edges are straight in that plane, which is
how PostGIS ``geometry(4326)`` and shapely read them. A MultiPolygon split at ±180 (RFC 7946 §3.1.9)
works as it is: its parts are just two polygons, one ending at 180 and one starting at -180.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt
import orjson
import shapely
from shapely.geometry import MultiPolygon, Polygon

from dispatcher.config import MAX_AREA_BYTES
from dispatcher.errors import InvalidArea

#: Mean (authalic) Earth radius in km, the sphere on which areas are measured.
EARTH_RADIUS_KM = 6371.0072

_AREA_TYPES = frozenset({"Polygon", "MultiPolygon"})
_NOT_AREA_TYPES = frozenset({"Point", "MultiPoint", "LineString", "MultiLineString", "GeometryCollection"})

#: orjson refuses to encode deeper structures; a GeoJSON area needs five levels.
MAX_AREA_DEPTH = 255
#: Bytes orjson writes only for values that are not numbers: strings, true, false, null (NaN too), objects.
_NOT_NUMBER_BYTES = (b'"', b"t", b"f", b"n", b"{")
#: A coordinate this large is no longitude or latitude, and does not even fit a float.
_HUGE = 1e300

Area: TypeAlias = Polygon | MultiPolygon
Ring: TypeAlias = npt.NDArray[np.float64]
_Measured = TypeVar("_Measured")
_Measurable = TypeVar("_Measurable")


def remember_last(measure: Callable[[_Measurable], _Measured]) -> Callable[[_Measurable], _Measured]:
    """``measure`` remembering its result for the last area (or shape measured from one) it was given.

    Parsing, the budget check, the planner and the match each measure the same area: a 3,000-vertex
    district paid for its rings four times. Geometries and their measures are immutable; the argument
    is held weakly and compared by identity, so a new one (even at a reused address) is measured afresh.
    """
    last: tuple[weakref.ref[Any], _Measured] | None = None

    @functools.wraps(measure)
    def remembered(area: _Measurable) -> _Measured:
        nonlocal last
        seen = last  # read once: another thread may replace it meanwhile
        if seen is not None and seen[0]() is area:
            return seen[1]
        result = measure(area)
        last = (weakref.ref(area), result)
        return result

    return remembered


def parse_area(geojson: object, *, max_vertices: int, max_area_km2: float,
               max_bytes: int = MAX_AREA_BYTES, check_budget: bool = True) -> Area:
    """The area described by ``geojson`` (a dict, a JSON string, a Feature, or anything with
    ``__geo_interface__``) as a valid shapely Polygon or MultiPolygon.

    Raises :class:`InvalidArea` naming the problem when it is not a usable area, including one whose
    boundary is too long for it to be targeted within the budget (``check_budget``; see
    :mod:`dispatcher.targeting.estimate`): ``publish()``, the worker and the ops tools all parse here.
    """
    mapping, coordinates = _as_mapping(geojson, max_bytes)
    geometry = _geometry_mapping(mapping)
    polygons = _polygons(geometry)
    _check_vertex_count(polygons, max_vertices)
    # Only numbers in the coordinates' JSON: no position needs its own search for strings and booleans.
    numbers = coordinates is not None and not any(mark in coordinates for mark in _NOT_NUMBER_BYTES)
    parts = (_parts_at_once(polygons, numbers)
             or [_polygon(rings, index, numbers) for index, rings in enumerate(polygons)])
    area: Area = parts[0] if geometry.get("type") == "Polygon" else MultiPolygon(parts)
    _check_valid(area)
    km2 = area_km2(area)
    if km2 > max_area_km2:
        raise InvalidArea(f"the area covers {km2:,.0f} km², more than the maximum of {max_area_km2:,.0f} km²")
    if check_budget:
        from dispatcher.targeting.estimate import check_area_budget  # it builds on this module

        check_area_budget(area)
    return area


def area_km2(area: Area) -> float:
    """Area in km² on the sphere, exact for edges straight in the longitude/latitude plane.

    Along an edge where latitude varies linearly with longitude, the integral of sin(lat) d(lon) has a
    closed form; summed around a ring it is the ring's area on the sphere (Green's theorem).
    """
    return float(part_areas_km2(area).sum())


@dataclass(frozen=True)
class FlatRings:
    """An area's rings as flat arrays: its parts, each ring's part, every vertex and its ring."""

    parts: npt.NDArray[np.object_]
    part_of_ring: npt.NDArray[np.int64]
    coords: npt.NDArray[np.float64]
    ring_of_point: npt.NDArray[np.int64]

    @property
    def rings(self) -> int:
        return len(self.part_of_ring)


@remember_last
def flat_rings(area: Area) -> FlatRings:
    """The area's rings, copied out of GEOS once for the km², the perimeters and the boxes."""
    parts = shapely.get_parts(area)
    rings, part_of_ring = shapely.get_rings(parts, return_index=True)
    coords, ring_of_point = shapely.get_coordinates(rings, return_index=True)
    return FlatRings(parts, part_of_ring, coords, ring_of_point)


@remember_last
def part_areas_km2(area: Area) -> npt.NDArray[np.float64]:
    """km² of each part (holes taken out), all rings at once: an archipelago has hundreds of parts."""
    flat = flat_rings(area)
    parts, part_of_ring, coords, ring_of_point = flat.parts, flat.part_of_ring, flat.coords, flat.ring_of_point
    lon, lat = np.radians(coords[:, 0]), np.radians(coords[:, 1])
    same_ring = ring_of_point[1:] == ring_of_point[:-1]
    d_lon = (lon[1:] - lon[:-1])[same_ring]
    d_lat = (lat[1:] - lat[:-1])[same_ring]
    mid = ((lat[1:] + lat[:-1]) / 2)[same_ring]
    # (cos a - cos b) / (b - a) = sin(mid) * sinc(half the span); np.sinc is sin(pi x) / (pi x).
    integral = d_lon * np.sin(mid) * np.sinc(d_lat / (2 * math.pi))
    per_ring = np.abs(np.bincount(ring_of_point[1:][same_ring], integral, minlength=flat.rings))
    first_of_part = np.r_[True, part_of_ring[1:] != part_of_ring[:-1]]
    signed = np.where(first_of_part, per_ring, -per_ring) * EARTH_RADIUS_KM**2
    return np.bincount(part_of_ring, signed, minlength=len(parts)).astype(np.float64)


def check_geojson(geojson: Mapping[str, Any], *, max_bytes: int | None) -> None:
    """Refuse what RFC 7946 does not allow, and an area over ``max_bytes`` of JSON (``None``: unbounded).

    The form only (size, nesting, ``crs``, ``bbox``, strict positions), not the geometry: the contract
    runs this on every request before storing it, targeting adds rings, validity and limits.
    """
    if max_bytes is not None:
        check_size(geojson, max_bytes)
    _check_members(geojson)
    geometry = geojson.get("geometry") if geojson.get("type") == "Feature" else geojson
    if not isinstance(geometry, Mapping):
        return
    _check_members(geometry)
    if geometry.get("type") not in _AREA_TYPES:
        return
    for index, rings in enumerate(_polygons(geometry)):
        if not isinstance(rings, (list, tuple)):
            raise InvalidArea(f"not GeoJSON: polygon {index} must be an array of rings")
        for number, ring in enumerate(rings):
            if not isinstance(ring, (list, tuple)):
                raise InvalidArea(f"not GeoJSON: a ring of polygon {index} must be an array of positions")
            _ring_positions(ring, f"ring {number} of polygon {index}")


def check_size(geojson: object, max_bytes: int) -> None:
    """Refuse an area whose JSON is over ``max_bytes`` or nested deeper than :data:`MAX_AREA_DEPTH`."""
    try:
        size = len(orjson.dumps(geojson))
    except orjson.JSONEncodeError as exc:
        if "ecursion" in str(exc):
            raise InvalidArea(f"the area is nested too deeply (more than {MAX_AREA_DEPTH} levels)") from None
        size = len(json.dumps(geojson, default=repr))  # integers beyond 64 bits, ...: measured anyway
    if size > max_bytes:
        raise InvalidArea(f"the area is {size:,} bytes of JSON, more than the maximum of {max_bytes:,} bytes")


def _check_members(obj: Mapping[str, Any]) -> None:
    if "crs" in obj:
        raise InvalidArea("a crs member is not allowed: GeoJSON (RFC 7946) positions are always WGS84 "
                          "[longitude, latitude]")
    if "bbox" in obj:
        bbox = obj["bbox"]
        if (not isinstance(bbox, (list, tuple)) or len(bbox) not in (4, 6)
                or not all(_is_finite_number(value) for value in bbox)):
            raise InvalidArea("not GeoJSON: a bbox must be an array of 4 or 6 finite numbers")


def _is_finite_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) < _HUGE and math.isfinite(value)


def _polygons(geometry: Mapping[str, Any]) -> Sequence[Any]:
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates")
    polygons = [coordinates] if kind == "Polygon" else coordinates
    if not isinstance(polygons, (list, tuple)):
        raise InvalidArea(f"not GeoJSON: {kind} coordinates must be an array")
    if not polygons:
        raise InvalidArea("the area is empty: no coordinates")
    return polygons


def _as_mapping(geojson: object, max_bytes: int) -> tuple[Mapping[str, Any], bytes | None]:
    """(the area as a mapping, its coordinates' JSON when :func:`_check_size_apart` could dump them apart)."""
    if isinstance(geojson, (str, bytes, bytearray)):
        size = len(geojson.encode()) if isinstance(geojson, str) else len(geojson)
        if size > max_bytes:
            raise InvalidArea(f"the area is {size:,} bytes of JSON, more than the maximum of {max_bytes:,} bytes")
        try:
            geojson = orjson.loads(geojson)  # a coastline is megabytes of numbers: 5x faster than json
        except orjson.JSONDecodeError as exc:
            if "depth" in exc.msg or "ecursion" in exc.msg:
                raise InvalidArea(f"the area is nested too deeply (at position {exc.pos})") from None
            raise InvalidArea(f"not GeoJSON: not valid JSON ({exc.msg} at position {exc.pos})") from None
        except ValueError:  # bytes that are not UTF-8
            raise InvalidArea("not GeoJSON: not valid JSON (not UTF-8 text)") from None
    elif not isinstance(geojson, Mapping) and hasattr(geojson, "__geo_interface__"):
        geojson = geojson.__geo_interface__
    if not isinstance(geojson, Mapping):
        raise InvalidArea(f"not GeoJSON: expected an object, got {type(geojson).__name__}")
    coordinates = _check_size_apart(geojson, max_bytes)
    _check_members(geojson)
    return geojson, coordinates


def _check_size_apart(geojson: Mapping[str, Any], max_bytes: int) -> bytes | None:
    """:func:`check_size`, the area's coordinates dumped apart from the rest; their JSON is returned.

    Why: the positions' strictness check searches the coordinates' JSON for anything that is not a
    number, and the coordinates are nearly all of an area's bytes: dumped once, not twice (a
    3,000-vertex district spent 0.3 ms on the second dump). The sizes add up to the whole's: the
    coordinates keep their place among the members. ``None`` (and the whole measured as before) when
    the coordinates are not where an area keeps them, or do not dump.
    """
    geometry = geojson.get("geometry") if geojson.get("type") == "Feature" else geojson
    if (not isinstance(geometry, dict) or not isinstance(geojson, dict) or geometry.get("type") not in _AREA_TYPES
            or "coordinates" not in geometry):
        check_size(geojson, max_bytes)
        return None
    hollow = {**geometry, "coordinates": []}
    try:
        coordinates = orjson.dumps(geometry["coordinates"])
        rest = orjson.dumps(hollow if geometry is geojson else {**geojson, "geometry": hollow})
    except orjson.JSONEncodeError:  # too deep, or a number JSON cannot hold: named as before
        check_size(geojson, max_bytes)
        return None
    size = len(rest) - len(b"[]") + len(coordinates)
    if size > max_bytes:
        raise InvalidArea(f"the area is {size:,} bytes of JSON, more than the maximum of {max_bytes:,} bytes")
    return coordinates


def _geometry_mapping(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    kind = obj.get("type")
    if kind == "Feature":
        geometry = obj.get("geometry")
        if geometry is None:
            raise InvalidArea("the area is empty: the Feature has no geometry")
        if not isinstance(geometry, Mapping):
            raise InvalidArea("not GeoJSON: a Feature's geometry must be an object")
        obj, kind = geometry, geometry.get("type")
        _check_members(obj)
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


#: From this many parts on, well-formed parts are built in one pass (an archipelago has hundreds).
PARTS_AT_ONCE = 8


def _parts_at_once(polygons: Sequence[Any], numbers: bool) -> list[Polygon] | None:
    """Every part in one pass over one array, when every ring is well formed (the common case) and
    the coordinates' JSON holds only numbers (``numbers``).

    ``None`` when anything is off: the part-by-part path then checks each ring and names the problem.
    The checks are the same, made on all positions at once.
    """
    if len(polygons) < PARTS_AT_ONCE or not all(polygons) or not numbers:
        return None
    rings = [ring for part in polygons for ring in part]
    lengths = np.fromiter((len(ring) for ring in rings), dtype=np.int64, count=len(rings))
    if (lengths < 4).any():
        return None
    try:
        coords = np.asarray([position for ring in rings for position in ring], dtype=np.float64)
    except (TypeError, ValueError):  # positions of mixed or wrong length
        return None
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        return None
    coords = np.ascontiguousarray(coords[:, :2])
    ends = np.cumsum(lengths)
    if (not np.isfinite(coords).all() or (np.abs(coords[:, 1]) > 90).any() or (np.abs(coords[:, 0]) > 180).any()
            or not (coords[ends - lengths] == coords[ends - 1]).all()):
        return None
    ring_offsets = np.r_[0, ends]
    part_offsets = np.r_[0, np.cumsum([len(part) for part in polygons])]
    built = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, (ring_offsets, part_offsets))
    return list(built)


def _polygon(rings: Sequence[Any], index: int, numbers: bool = False) -> Polygon:
    if not rings:
        raise InvalidArea(f"the area is empty: polygon {index} has no rings")
    arrays = [_ring(ring, index, number, numbers) for number, ring in enumerate(rings)]
    return Polygon(arrays[0], arrays[1:])


def _ring(ring: Sequence[Any], index: int, number: int, numbers: bool = False) -> Ring:
    where = f"ring {number} of polygon {index}"
    coords = _ring_positions(ring, where, numbers)
    if len(coords) < 4:
        raise InvalidArea(f"invalid polygon: {where} has {len(coords)} positions, a ring needs at least 4")
    if not np.isfinite(coords).all():
        raise InvalidArea(f"coordinates out of range: {where} has a coordinate that is not a finite number")
    _check_ranges(coords, where)
    if not np.array_equal(coords[0], coords[-1]):
        raise InvalidArea(f"invalid polygon: {where} is not closed (its first and last positions differ)")
    return coords


def _ring_positions(ring: Sequence[Any], where: str, numbers: bool = False) -> Ring:
    """The ring's [lon, lat] pairs as an (n, 2) array (altitudes dropped); strict, never coercing.

    numpy would turn "1.5" and true into numbers, so the ring's JSON is searched for anything that is
    not a number first (one pass in C; ``numbers``: the whole area's coordinates were, and held none);
    only a ring that has some is walked in Python to name it.
    """
    suspicious = False
    if not numbers:
        try:
            text = orjson.dumps(ring)  # once: not once per mark
            suspicious = any(mark in text for mark in _NOT_NUMBER_BYTES)
        except orjson.JSONEncodeError:  # an integer beyond 64 bits, a type JSON does not have
            suspicious = True
    if suspicious:
        for position in ring:
            _check_position(position, where)
    try:
        coords = _ring_array(ring)  # the fast path: all positions of one length
    except (TypeError, ValueError):  # positions of mixed length (2 and 3), or of the wrong length
        for position in ring:
            _check_position(position, where)
        coords = np.array([position[:2] for position in ring], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        for position in ring:
            _check_position(position, where)
        raise InvalidArea(f"not GeoJSON: {where} has a position that is not [longitude, latitude]")
    return coords[:, :2]


def _ring_array(ring: Sequence[Any]) -> Ring:
    """The positions as an array; when all are [longitude, latitude] pairs (the usual case) read as one
    flat stream, twice as fast as numpy's conversion of nested lists."""
    if sum(map(len, ring)) == 2 * len(ring):
        return np.fromiter(itertools.chain.from_iterable(ring), dtype=np.float64, count=2 * len(ring)).reshape(-1, 2)
    return np.asarray(ring, dtype=np.float64)


def _check_position(position: object, where: str) -> None:
    if not isinstance(position, (list, tuple)):
        raise InvalidArea(f"not GeoJSON: {where} has a position that is not [longitude, latitude]")
    if not 2 <= len(position) <= 3:
        raise InvalidArea(f"not GeoJSON: {where} has a position of length {len(position)}; a position is "
                          "[longitude, latitude] or [longitude, latitude, altitude]")
    for value in position:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InvalidArea(f"not GeoJSON: {where} has a coordinate that is not a number "
                              f"({type(value).__name__}); positions are numbers, never strings or booleans")
        if isinstance(value, (float, np.floating)) and not math.isfinite(value):
            raise InvalidArea(f"coordinates out of range: {where} has a coordinate that is not a finite number")
        if abs(float(value)) >= _HUGE if isinstance(value, (float, np.floating)) else abs(int(value)) >= _HUGE:
            raise InvalidArea(f"coordinates out of range: {where} has a coordinate far beyond ±180")


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
    if not shapely.is_valid(area):  # the reason costs a third more: asked for only to name the problem
        raise InvalidArea(f"invalid polygon: {shapely.is_valid_reason(area).lower()}")
    if area.is_empty or area.area == 0:
        raise InvalidArea("the area is empty: it encloses no surface")
