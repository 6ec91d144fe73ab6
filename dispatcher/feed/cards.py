"""What a resident may see of a request: a lean card on the feed, the whole request on its own.

A feed is a list a phone shows: agency, incident, details, dates and where, roughly. So a feed item
(:class:`FeedRequest`) carries the published fields and the area's bounding box, never the area
itself (a county's coastline is megabytes of coordinates, and a page holds twenty requests). The
area as the agency sent it is answered for one request at a time (:class:`RequestDetail`,
``GET /v1/requests/{id}``), when the resident opens it.

Only the published fields travel (agency, incident type, details, footage window, investigator
contact, publication and response window, the area or its box), never the investigation code,
counts, or anything about other residents. Cards are built once, when the request is indexed
(:func:`card_json`), and copied into answers as stored: no answer parses or writes an area. Tests hold the
stored text and the models to the same shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
import shapely
from pydantic import BaseModel, ConfigDict, Field

from dispatcher.contract import DEFAULT_KIND, Agency, FootageWindow, Investigator, PublishedRequest
from dispatcher.db.types import Conn
from dispatcher.feed.errors import UnknownRequest
from dispatcher.targeting.area import Area

if TYPE_CHECKING:  # the index builds cards and the lookup reads the index: no import cycle at run time
    from dispatcher.feed.lookup import FeedPage

#: The fields of a request a resident sees, besides its area.
PUBLISHED_FIELDS = ("kind", "id", "agency", "incident_type", "details", "footage_window", "investigator",
                    "published_at")

_CARDS_SQL = "SELECT request_id, card FROM feed_requests WHERE request_id = ANY(%s)"
_REQUEST_SQL = """
SELECT f.card, (r.payload -> 'area')::text, f.respond_until, f.respond_until > now()
FROM feed_requests f JOIN community_requests r ON r.id = f.request_id
WHERE f.request_id = %s
"""


class FeedRequest(BaseModel):
    """A request on a resident's feed, of any kind (fields a kind does not have are left out)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(default=DEFAULT_KIND, description="community_request, video_request, safety_alert or "
                                                        "agency_announcement.")
    id: str
    agency: Agency
    incident_type: str
    details: str
    footage_window: FootageWindow | None = Field(default=None, description="Absent for safety alerts and "
                                                                          "announcements.")
    investigator: Investigator | None = Field(default=None, description="Absent for announcements.")
    bbox: tuple[float, float, float, float] = Field(
        description="The area's bounding box, [west, south, east, north] in degrees (RFC 7946 §5): enough to "
                    "place the request on a map. West is greater than east when the area crosses the "
                    "antimeridian. The area itself is at `GET /v1/requests/{request_id}`.")
    published_at: datetime
    respond_until: datetime = Field(description="End of the response window (publication plus 60 days).")
    open: bool = Field(description="Whether residents can still respond (the window has not ended).")


class RequestDetail(FeedRequest):
    """One request as published, with its area."""

    area: dict[str, Any] = Field(description="The area as published: a GeoJSON (RFC 7946) Polygon, "
                                             "MultiPolygon or Feature holding one.")


class FeedResponse(BaseModel):
    """One page of a feed."""

    requests: list[FeedRequest]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


def card_json(request: PublishedRequest, area: Area) -> str:
    """The stored card of ``request``: its published fields and the box of ``area``, as JSON text
    (without ``respond_until`` and ``open``, which are added when it is answered)."""
    data = request.model_dump(mode="json", include=set(PUBLISHED_FIELDS), exclude_none=True)
    data["bbox"] = area_bbox(area)
    return orjson.dumps(data).decode()


def area_bbox(area: Area) -> list[float]:
    """[west, south, east, north] of ``area``; across the antimeridian (parts on both sides of ±180,
    with the widest gap between parts elsewhere) west is greater than east, as RFC 7946 §5.2 asks."""
    bounds = shapely.bounds(shapely.get_parts(area))
    south, north = float(bounds[:, 1].min()), float(bounds[:, 3].max())
    spans = sorted((float(w), float(e)) for w, _, e, _ in bounds.tolist())
    merged: list[list[float]] = []
    for west, east in spans:
        if merged and west <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], east)
        else:
            merged.append([west, east])
    wrap_gap = merged[0][0] + 360.0 - merged[-1][1]
    gaps = [(merged[i + 1][0] - merged[i][1], i) for i in range(len(merged) - 1)]
    widest, after = max(gaps, default=(0.0, -1))
    if widest <= wrap_gap:
        return [merged[0][0], south, merged[-1][1], north]
    return [merged[after + 1][0], south, merged[after][1], north]


def feed_json(conn: Conn, page: FeedPage) -> bytes:
    """The page as :class:`FeedResponse` JSON, cards in the page's order."""
    cards: dict[str, str] = {}
    if page.items:
        rows = conn.execute(_CARDS_SQL, ([item.request_id for item in page.items],)).fetchall()
        cards = {str(request_id): str(card) for request_id, card in rows}
    ordered = [_answered(cards[item.request_id], item.respond_until, item.open) for item in page.items]
    return orjson.dumps({"requests": ordered, "next_cursor": page.next_cursor})


def request_json(conn: Conn, request_id: str) -> bytes:
    """:class:`RequestDetail` JSON of a request on the feed (published and not rejected);
    :class:`UnknownRequest` otherwise. The area is copied as stored, never parsed."""
    row = conn.execute(_REQUEST_SQL, (request_id,)).fetchone()
    if row is None:
        raise UnknownRequest("no such published request")
    card, area, respond_until, is_open = row
    answer = _answered(str(card), respond_until, bool(is_open))
    answer["area"] = orjson.Fragment(str(area))
    return orjson.dumps(answer)


def _answered(card: str, respond_until: datetime, is_open: bool) -> dict[str, Any]:
    answer: dict[str, Any] = orjson.loads(card)
    answer["respond_until"] = respond_until
    answer["open"] = is_open
    return answer
