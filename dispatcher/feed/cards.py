"""What a resident may see of a request on the feed: the request as the agency published it.

Only the published fields travel (agency, incident type, details, footage window, investigator
contact, area, publication and response window), never the investigation code, counts, or anything
about other residents. The area is returned as the GeoJSON the agency sent.

:class:`FeedRequest` is the documented shape; :func:`feed_json` builds the same JSON without
parsing the areas (a county's coastline is megabytes of coordinates): each area's JSON text is
copied from the database into the answer as it is. A test holds the two to the same shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from dispatcher.contract import DEFAULT_KIND, Agency, FootageWindow, Investigator
from dispatcher.db.types import Conn
from dispatcher.feed.lookup import FeedPage

#: The fields of a stored request's payload a resident sees, besides the area.
PUBLISHED_FIELDS = ("id", "agency", "incident_type", "details", "footage_window", "investigator", "published_at")

_CARDS_SQL = """
SELECT id,
       jsonb_strip_nulls(jsonb_build_object('kind', coalesce(payload -> 'kind', '"{default}"'::jsonb), {fields}))::text,
       (payload -> 'area')::text
FROM community_requests WHERE id = ANY(%s)
""".format(default=DEFAULT_KIND, fields=", ".join(f"'{name}', payload -> '{name}'" for name in PUBLISHED_FIELDS))


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
    area: dict[str, Any] = Field(description="The area as published: a GeoJSON (RFC 7946) Polygon, "
                                             "MultiPolygon or Feature holding one.")
    published_at: datetime
    respond_until: datetime = Field(description="End of the response window (publication plus 60 days).")
    open: bool = Field(description="Whether residents can still respond (the window has not ended).")


class FeedResponse(BaseModel):
    """One page of a feed."""

    requests: list[FeedRequest]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


def feed_json(conn: Conn, page: FeedPage) -> bytes:
    """The page as :class:`FeedResponse` JSON, cards in the page's order."""
    cards: dict[str, dict[str, Any]] = {}
    if page.items:
        rows = conn.execute(_CARDS_SQL, ([item.request_id for item in page.items],)).fetchall()
        for request_id, fields, area in rows:
            card = orjson.loads(fields)
            card["area"] = orjson.Fragment(area)
            cards[str(request_id)] = card
    ordered = []
    for item in page.items:
        card = cards[item.request_id]
        card["respond_until"] = item.respond_until
        card["open"] = item.open
        ordered.append(card)
    return orjson.dumps({"requests": ordered, "next_cursor": page.next_cursor})
