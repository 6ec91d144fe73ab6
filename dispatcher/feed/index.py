"""Index a published request's cover for the feed, in the transaction that accepts it.

The cover is targeting's own (:func:`dispatcher.targeting.cover.area_to_cells`): interior cells, every
resident under which is inside, and boundary band cells, whose residents are tested exactly. Here the
band stops at :data:`FEED_BAND_RESOLUTION`, coarser than targeting's: a lookup tests one point per band
hit against a cached prepared geometry, which costs little, while every band cell is a row to store.

A request leaves the feed when it is rejected (:func:`unindex_request`), so a lookup never checks a
candidate's state. Each request's card (what a feed item shows, :mod:`dispatcher.feed.cards`) is built
here, once.
"""

from __future__ import annotations

import logging

import shapely

from dispatcher.config import get_settings
from dispatcher.contract import PublishedRequest
from dispatcher.db.types import Conn
from dispatcher.errors import InvalidArea
from dispatcher.feed.cards import card_json
from dispatcher.lifecycle.states import State
from dispatcher.targeting.area import Area, parse_area
from dispatcher.targeting.cover import AreaCover, area_to_cells

log = logging.getLogger(__name__)

#: Resolution of the feed's boundary band (res 9: cells about 200 m across).
FEED_BAND_RESOLUTION = 9
#: States whose requests were never published to residents: the feed leaves them out.
UNPUBLISHED_STATES = (State.REJECTED,)


def area_cover(area: Area) -> AreaCover:
    """The feed's cover of ``area``: interior cells and band cells at :data:`FEED_BAND_RESOLUTION`."""
    return area_to_cells(area, band_resolution=FEED_BAND_RESOLUTION)


def index_request(conn: Conn, request: PublishedRequest) -> bool:
    """Store ``request``'s cover for the feed; return whether it was indexed.

    Idempotent (a request already indexed is left as it is). An area targeting would refuse is not
    indexed: the request is rejected by targeting and never reaches anyone's feed.
    """
    settings = get_settings()
    try:
        area = parse_area(request.area.model_dump(), max_vertices=settings.max_area_vertices,
                          max_area_km2=settings.max_area_km2, max_bytes=settings.max_area_bytes)
    except InvalidArea:
        log.info("request not indexed for the feed: its area is refused", extra={"request_id": request.id})
        return False
    cover = area_cover(area)
    with conn.transaction():
        inserted = conn.execute(
            "INSERT INTO feed_requests (request_id, published_at, respond_until, area_wkb, card)"
            " SELECT id, published_at, respond_until, %s, %s FROM community_requests"
            " WHERE id = %s AND state <> ALL(%s)"
            " ON CONFLICT (request_id) DO NOTHING RETURNING published_at, respond_until",
            (shapely.to_wkb(area), card_json(request, area), request.id, [s.value for s in UNPUBLISHED_STATES]),
        ).fetchone()
        if inserted is None:
            return False
        published_at, respond_until = inserted
        with conn.cursor().copy(
            "COPY feed_cover (cell, request_id, band, published_at, respond_until) FROM STDIN"
        ) as copy:
            for cell in cover.interior:
                copy.write_row((cell, request.id, False, published_at, respond_until))
            for cell in cover.boundary:
                copy.write_row((cell, request.id, True, published_at, respond_until))
    return True


def unindex_request(conn: Conn, request_id: str) -> None:
    """Take a rejected request off every feed (its cover goes with it)."""
    conn.execute("DELETE FROM feed_requests WHERE request_id = %s", (request_id,))


def index_missing(conn: Conn) -> int:
    """Index every stored request the feed does not hold yet (requests accepted before the feed
    existed); return how many were indexed."""
    from dispatcher.lifecycle import load

    rows = conn.execute(
        "SELECT id FROM community_requests r WHERE payload <> 'null'::jsonb AND state <> ALL(%s)"
        " AND NOT EXISTS (SELECT 1 FROM feed_requests f WHERE f.request_id = r.id) ORDER BY id",
        ([s.value for s in UNPUBLISHED_STATES],),
    ).fetchall()
    indexed = 0
    for (request_id,) in rows:
        loaded = load(conn, str(request_id))
        if loaded is not None and index_request(conn, loaded[1]):
            indexed += 1
    return indexed
