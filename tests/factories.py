"""Builders of test data: Community Requests and residents, inserted the way production stores them."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import psycopg

from dispatcher.config import RESIDENT_CELL_RESOLUTION

#: A square of about 1.1 km around a point in a made-up town.
SQUARE = [[-105.28, 40.01], [-105.267, 40.01], [-105.267, 40.02], [-105.28, 40.02], [-105.28, 40.01]]


def request_payload(request_id: str = "req-1", *, area: dict[str, Any] | None = None,
                    published: datetime | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid Community Request as the publishing pipeline sends it."""
    published = published or datetime.now(UTC) - timedelta(minutes=5)
    payload: dict[str, Any] = {
        "id": request_id,
        "agency": {"id": "pd-1", "name": "Springfield Police"},
        "incident_type": "vehicle_break_in",
        "details": "Two cars broken into overnight; looking for footage of anyone trying door handles.",
        "footage_window": {"start": (published - timedelta(hours=12)).isoformat(),
                           "end": (published - timedelta(hours=6)).isoformat()},
        "investigator": {"name": "Det. Jo Park", "phone": "+1 555 0100", "email": "jpark@pd.example"},
        "area": copy.deepcopy(area) if area else {"type": "Polygon", "coordinates": [SQUARE]},
        "investigation_code": "SPD-2026-0042",
        "approved_at": (published - timedelta(minutes=1)).isoformat(),
        "published_at": published.isoformat(),
    }
    payload.update(overrides)
    return payload


#: The whole world: the jurisdiction of the tests' agency, so every test area is inside it.
WORLD = {"type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]]}


def register_agency(conn: psycopg.Connection[Any], agency_id: str = "pd-1", *,
                    jurisdiction: dict[str, Any] | None = None, name: str = "Springfield Police",
                    kind: str = "police", active: bool = True) -> None:
    """Register (or update) an agency, as `dispatcher agencies import` does."""
    from dispatcher.agencies.registry import AgencyRecord, upsert_agencies

    upsert_agencies(conn, [AgencyRecord(agency_id, name, kind, jurisdiction or WORLD, active)])


def add_resident(conn: psycopg.Connection[Any], resident_id: int, lat: float, lng: float, *,
                 email: str | None = None, tokens: Iterable[str] = (), has_camera: bool = False,
                 time_zone: str = "America/Denver", community_requests: bool = True, push: bool = True,
                 email_enabled: bool = True) -> None:
    """Insert one resident with settings and device tokens."""
    cell = h3.str_to_int(h3.latlng_to_cell(lat, lng, RESIDENT_CELL_RESOLUTION))
    conn.execute(
        "INSERT INTO residents (id, lat, lng, cell, email, time_zone, has_camera) VALUES (%s,%s,%s,%s,%s,%s,%s)",
        (resident_id, lat, lng, cell, email, time_zone, has_camera),
    )
    if not (community_requests and push and email_enabled):
        conn.execute(
            "INSERT INTO resident_settings (resident_id, community_requests, push_enabled, email_enabled)"
            " VALUES (%s, %s, %s, %s)",
            (resident_id, community_requests, push, email_enabled),
        )
    for token in tokens:
        conn.execute("INSERT INTO device_tokens (token, resident_id) VALUES (%s, %s)", (token, resident_id))
