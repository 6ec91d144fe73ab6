"""Which published requests cover a resident or a point: the reverse of targeting, with its semantics.

A point is covered by a request when ``ST_Covers(area, point)`` (the boundary counts as inside), the
rule targeting applies. The point's res-15 H3 cell has one ancestor per resolution; a request covers
the point's cell when one of those ancestors is in its cover (:mod:`dispatcher.feed.index`). An
interior cell settles it; a band cell means the point is tested against the prepared area. Since a
cover's cells never lie one under another, a request matches at most one ancestor.

Order: requests whose response window is open first, then closed ones (kept visible, no responses),
each newest first; pages are cut with a keyset cursor (:mod:`dispatcher.feed.cursor`), so a page
costs the same however deep the walk. Nothing about other residents is read or returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import h3.api.basic_int as h3
import shapely

from dispatcher.db.types import Conn
from dispatcher.errors import UnknownResident
from dispatcher.feed.cursor import PageKey, decode_cursor, encode_cursor
from dispatcher.feed.errors import InvalidLocation
from dispatcher.feed.geometry import PreparedAreas
from dispatcher.feed.index import FEED_BAND_RESOLUTION, UNPUBLISHED_STATES
from dispatcher.preferences.updates import resident_cell

#: Requests per page by default, and the most a caller may ask for.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

_AREAS = PreparedAreas()

_CANDIDATES_SQL = """
SELECT c.request_id, c.band, c.published_at, c.respond_until, c.respond_until > %(as_of)s AS open
FROM feed_cover c
WHERE c.cell = ANY(%(cells)s)
  AND NOT EXISTS (SELECT 1 FROM community_requests r WHERE r.id = c.request_id AND r.state = ANY(%(unpublished)s))
  AND (%(after_id)s::text IS NULL
       OR (c.respond_until > %(as_of)s, c.published_at, c.request_id)
          < (%(after_open)s::boolean, %(after_published)s::timestamptz, %(after_id)s::text))
ORDER BY open DESC, c.published_at DESC, c.request_id DESC
LIMIT %(batch)s
"""


@dataclass(frozen=True)
class FeedItem:
    """One request on a feed page: its id and where it sorts."""

    request_id: str
    published_at: datetime
    respond_until: datetime
    open: bool


@dataclass(frozen=True)
class FeedPage:
    """A page of the feed; ``next_cursor`` is ``None`` on the last page."""

    items: list[FeedItem]
    next_cursor: str | None


def prepared_areas() -> PreparedAreas:
    """This process's cache of prepared areas."""
    return _AREAS


def probe_cells(cell: int) -> list[int]:
    """The ancestors of a res-15 ``cell`` at every resolution a feed cover can hold (0 to the band's)."""
    return [h3.cell_to_parent(cell, resolution) for resolution in range(FEED_BAND_RESOLUTION + 1)]


def point_cell(lat: float, lng: float) -> int:
    """The res-15 cell of a point, as the resident index computes it; :class:`InvalidLocation` if the
    point is not a latitude and longitude."""
    if not (isinstance(lat, int | float) and isinstance(lng, int | float)
            and math.isfinite(lat) and math.isfinite(lng) and -90 <= lat <= 90 and -180 <= lng <= 180):
        raise InvalidLocation("lat must be within -90..90 and lng within -180..180")
    return resident_cell(lat, lng)


def requests_at_point(conn: Conn, lat: float, lng: float, *, limit: int = DEFAULT_PAGE_SIZE,
                      cursor: str | None = None, now: datetime | None = None) -> FeedPage:
    """The requests whose area covers (``lat``, ``lng``), a page at a time."""
    return _page(conn, point_cell(lat, lng), lat, lng, limit=limit, cursor=cursor, now=now)


def requests_for_resident(conn: Conn, resident_id: int, *, limit: int = DEFAULT_PAGE_SIZE,
                          cursor: str | None = None, now: datetime | None = None) -> FeedPage:
    """The requests whose area covers the resident's current location (read now: a move shows at once).

    Raises :class:`UnknownResident` when the index does not hold the resident.
    """
    row = conn.execute("SELECT lat, lng, cell FROM residents WHERE id = %s", (resident_id,)).fetchone()
    if row is None:
        raise UnknownResident(f"resident {resident_id} is not in the index")
    lat, lng, cell = row
    return _page(conn, int(cell), float(lat), float(lng), limit=limit, cursor=cursor, now=now)


def _page(conn: Conn, cell: int, lat: float, lng: float, *, limit: int, cursor: str | None,
          now: datetime | None) -> FeedPage:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be within 1..{MAX_PAGE_SIZE}")
    after = decode_cursor(cursor) if cursor is not None else None
    now = now or datetime.now(UTC)
    as_of = after.as_of if after is not None else now
    params: dict[str, Any] = {
        "as_of": as_of, "unpublished": [s.value for s in UNPUBLISHED_STATES], "cells": probe_cells(cell),
        "batch": limit + 1,
    }
    kept: list[tuple[FeedItem, bool]] = []
    while True:
        params.update(after_id=None if after is None else after.request_id,
                      after_open=None if after is None else after.open,
                      after_published=None if after is None else after.published_at)
        rows = conn.execute(_CANDIDATES_SQL, params).fetchall()
        for request_id, band, published_at, respond_until, open_then in rows:
            if band and not _covers(conn, str(request_id), lat, lng):
                continue
            kept.append((FeedItem(str(request_id), published_at, respond_until, respond_until > now),
                         bool(open_then)))
        if len(kept) > limit or len(rows) < params["batch"]:
            break
        last = rows[-1]
        after = PageKey(as_of, bool(last[4]), last[2], str(last[0]))
    page = kept[:limit]
    next_cursor = None
    if len(kept) > limit:
        item, open_then = page[-1]
        next_cursor = encode_cursor(PageKey(as_of, open_then, item.published_at, item.request_id))
    return FeedPage([item for item, _ in page], next_cursor)


def _covers(conn: Conn, request_id: str, lat: float, lng: float) -> bool:
    area = _AREAS.get(request_id, lambda rid: _area_wkb(conn, rid))
    return bool(shapely.intersects_xy(area, lng, lat))


def _area_wkb(conn: Conn, request_id: str) -> bytes:
    row = conn.execute("SELECT area_wkb FROM feed_requests WHERE request_id = %s", (request_id,)).fetchone()
    assert row is not None, "a covered request has its area stored with its cover"
    return bytes(row[0])
