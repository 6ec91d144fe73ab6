"""Shared by the feed and API tests: requests accepted the way production accepts them, and the
oracle (shapely ``covers``) a feed lookup must equal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import shapely

from dispatcher import lifecycle
from dispatcher.contract import parse_request
from dispatcher.feed.lookup import requests_at_point
from dispatcher.targeting.area import Area, parse_area
from tests.factories import request_payload


def square(lng: float, lat: float, size: float) -> dict[str, Any]:
    """A GeoJSON square with its south-west corner at (lng, lat)."""
    ring = [[lng, lat], [lng + size, lat], [lng + size, lat + size], [lng, lat + size], [lng, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def publish(conn: Any, request_id: str, area: dict[str, Any], *, published: datetime | None = None,
            **overrides: Any) -> Area:
    """Accept a request (which indexes it for the feed); return its area as targeting reads it."""
    published = published or datetime.now(UTC) - timedelta(minutes=5)
    payload = request_payload(request_id, area=area, published=published, **overrides)
    lifecycle.accept(conn, parse_request(payload))
    return parse_area(area, max_vertices=200_000, max_area_km2=20_000.0)


def feed_ids(conn: Any, lat: float, lng: float, *, limit: int = 100) -> list[str]:
    """Every request id on the feed at a point, all pages walked."""
    ids: list[str] = []
    cursor = None
    while True:
        page = requests_at_point(conn, lat, lng, limit=limit, cursor=cursor)
        ids.extend(item.request_id for item in page.items)
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def covering(areas: dict[str, Area], lat: float, lng: float) -> set[str]:
    """The oracle: requests whose area covers the point (PostGIS ``ST_Covers`` semantics)."""
    point = shapely.Point(lng, lat)
    return {request_id for request_id, area in areas.items() if shapely.covers(area, point)}
