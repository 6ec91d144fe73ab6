"""``/v1``: the feed, for a resident or for a point, and one published request with its area.

The feed routes answer the requests whose area covers the location (boundary included), open ones
first, newest first, a page at a time, each with its area's bounding box; the area itself comes from
``/v1/requests/{request_id}`` when a resident opens one. They never answer counts or anything about
other residents.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from dispatcher.api.database import connection
from dispatcher.api.errors import ErrorResponse
from dispatcher.contract import REQUEST_ID_MAX_LENGTH, REQUEST_ID_PATTERN
from dispatcher.feed.cards import FeedResponse, RequestDetail, feed_json, request_json
from dispatcher.feed.cursor import MAX_CURSOR_LENGTH
from dispatcher.feed.lookup import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    requests_at_point,
    requests_for_resident,
)
from dispatcher.preferences.validation import MAX_RESIDENT_ID

router = APIRouter(prefix="/v1", tags=["feed"])


Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Requests per page.")]
Cursor = Annotated[str | None, Query(min_length=1, max_length=MAX_CURSOR_LENGTH,
                                     description="`next_cursor` of the previous page.")]

def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


@router.get("/residents/{resident_id}/requests", response_model=FeedResponse,
            responses={404: {"model": ErrorResponse, "description": "The resident is not in the index."}})
def resident_feed(
    resident_id: Annotated[int, Path(ge=1, le=MAX_RESIDENT_ID, description="The resident's id.")],
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> Response:
    """The requests covering the resident's current location."""
    with connection() as conn:
        return _json(feed_json(conn, requests_for_resident(conn, resident_id, limit=limit, cursor=cursor)))


@router.get("/requests", response_model=FeedResponse)
def point_feed(
    lat: Annotated[float, Query(ge=-90, le=90, allow_inf_nan=False, description="Latitude, WGS84.")],
    lng: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False, description="Longitude, WGS84.")],
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> Response:
    """The requests covering a point."""
    with connection() as conn:
        return _json(feed_json(conn, requests_at_point(conn, lat, lng, limit=limit, cursor=cursor)))


@router.get("/requests/{request_id}", response_model=RequestDetail,
            responses={404: {"model": ErrorResponse, "description": "No published request has this id."}})
def published_request(
    request_id: Annotated[str, Path(min_length=1, max_length=REQUEST_ID_MAX_LENGTH, pattern=REQUEST_ID_PATTERN,
                                    description="The request's id, as on the feed.")],
) -> Response:
    """One published request with its area (GeoJSON as the agency sent it)."""
    with connection() as conn:
        return _json(request_json(conn, request_id))
