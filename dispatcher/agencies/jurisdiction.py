"""Whether a request's area lies inside its agency's jurisdiction.

Same semantics as targeting (planar longitude/latitude, a point on the boundary counts as inside:
shapely ``covers``, PostGIS ``ST_Covers``), with a tolerance in metres because an area drawn by hand
along a town line wobbles across it. The tolerance is applied in a local frame where a degree of
longitude is shrunk by the cosine of the jurisdiction's latitude, so it is about the same number of
metres in every direction; at tolerance 0 the check is exactly ``covers``.
"""

from __future__ import annotations

import math

import shapely
from shapely import affinity

from dispatcher.agencies.registry import JURISDICTION_MAX_KM2, active_jurisdiction
from dispatcher.config import Settings, get_settings
from dispatcher.db.types import Conn
from dispatcher.errors import OutsideJurisdiction, UnknownAgency
from dispatcher.targeting.area import Area, parse_area

#: Metres in one degree of latitude (mean).
METRES_PER_DEGREE = 111_320.0


def covers_with_tolerance(jurisdiction: Area, area: Area, tolerance_m: float) -> bool:
    """Whether ``jurisdiction`` grown by ``tolerance_m`` metres covers ``area``."""
    if tolerance_m <= 0:
        return bool(jurisdiction.covers(area))
    if jurisdiction.covers(area):
        return True
    shrink = math.cos(math.radians(jurisdiction.centroid.y))
    local_j = affinity.scale(jurisdiction, xfact=shrink, yfact=1.0, origin=(0, 0))
    local_a = affinity.scale(area, xfact=shrink, yfact=1.0, origin=(0, 0))
    grown = shapely.buffer(local_j, tolerance_m / METRES_PER_DEGREE, quad_segs=4)
    return bool(grown.covers(local_a))


def check_area_in_jurisdiction(conn: Conn, agency_id: str, area: Area, settings: Settings | None = None) -> None:
    """Raise :class:`UnknownAgency` or :class:`OutsideJurisdiction` (each naming the reason), else return."""
    settings = settings or get_settings()
    geojson = active_jurisdiction(conn, agency_id)
    if geojson is None:
        raise UnknownAgency(agency_id)
    jurisdiction = parse_area(geojson, max_vertices=settings.max_area_vertices, max_area_km2=JURISDICTION_MAX_KM2,
                              max_bytes=settings.max_area_bytes)
    if not covers_with_tolerance(jurisdiction, area, settings.jurisdiction_tolerance_m):
        raise OutsideJurisdiction(
            f"reaches outside the jurisdiction of agency {agency_id!r} (by more than the tolerance of "
            f"{settings.jurisdiction_tolerance_m:g} m); an agency requests only within its jurisdiction"
        )
