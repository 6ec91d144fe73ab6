"""What a resident may see of a request on the feed: the request as the agency published it.

Only the published fields travel (agency, incident type, details, footage window, investigator
contact, area, publication and response window), never the investigation code, counts, or anything
about other residents. The area is returned as the GeoJSON the agency sent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.contract import Agency, CommunityRequest, FootageWindow, Investigator
from dispatcher.db.types import Conn
from dispatcher.feed.lookup import FeedItem


class PublishedRequest(BaseModel):
    """A request on a resident's feed."""

    model_config = ConfigDict(frozen=True)

    id: str
    agency: Agency
    incident_type: str
    details: str
    footage_window: FootageWindow
    investigator: Investigator
    area: dict[str, Any] = Field(description="The area as published: a GeoJSON (RFC 7946) Polygon, "
                                             "MultiPolygon or Feature holding one.")
    published_at: datetime
    respond_until: datetime = Field(description="End of the response window (publication plus 60 days).")
    open: bool = Field(description="Whether residents can still respond (the window has not ended).")


def load_cards(conn: Conn, items: list[FeedItem]) -> list[PublishedRequest]:
    """The published form of each item, in the items' order."""
    if not items:
        return []
    rows = conn.execute("SELECT id, payload FROM community_requests WHERE id = ANY(%s)",
                        ([item.request_id for item in items],)).fetchall()
    payloads = {str(request_id): payload for request_id, payload in rows}
    return [_card(CommunityRequest.model_validate(payloads[item.request_id]), item) for item in items]


def _card(request: CommunityRequest, item: FeedItem) -> PublishedRequest:
    return PublishedRequest(
        id=request.id, agency=request.agency, incident_type=request.incident_type, details=request.details,
        footage_window=request.footage_window, investigator=request.investigator,
        area=request.area.model_dump(mode="json"), published_at=request.published_at,
        respond_until=item.respond_until, open=item.open,
    )
