"""Which published requests cover a resident or a point: the reverse of targeting, with its semantics.

A point is covered by a request when ``ST_Covers(area, point)`` (the boundary counts as inside), the
rule targeting applies. The point's res-15 H3 cell has one ancestor per resolution; a request covers
the point's cell when one of those ancestors is in its cover (:mod:`dispatcher.feed.index`). An
interior cell settles it; a band cell means the point is tested against the prepared area. Since a
cover's cells never lie one under another, a request matches at most one ancestor.

A lookup is one statement: the resident's cell (read now, so a move shows at once), the index-only
probes of its ancestors (``feed_probe_cells`` in the database), and the candidates in the feed's order,
a batch a little longer than the page. The band candidates among them are tested in order against
areas prepared in this process (:func:`warm_prepared_areas`) until the page is full.

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
from dispatcher.feed.index import FEED_BAND_RESOLUTION
from dispatcher.preferences.updates import resident_cell

#: Requests per page by default, and the most a caller may ask for.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100

_AREAS = PreparedAreas()

#: Candidates fetched per round trip beyond the page: band candidates the exact test may drop. A batch
#: that falls short is followed by another, so this trades rows read against round trips: with 10,000
#: requests, 8 sent 1.3% of first pages back for a second batch, and 64 doubled the median lookup
#: (rows cost more to decode than the rare second round trip).
BAND_SLACK = 8

# Every candidate of one batch, in the feed's order: index-only probes of the point's ancestor cells
# (rejected requests are not in the index, so nothing else is read).
_BATCH = """
SELECT request_id, band, published_at, respond_until, respond_until > %(as_of)s AS open
FROM feed_cover
WHERE cell = ANY({cells})
  AND (%(after_id)s::text IS NULL
       OR (respond_until > %(as_of)s, published_at, request_id)
          < (%(after_open)s::boolean, %(after_published)s::timestamptz, %(after_id)s::text))
ORDER BY open DESC, published_at DESC, request_id DESC
LIMIT %(batch)s
"""
_POINT_SQL = _BATCH.format(cells="%(cells)s")
# A resident's location and first batch in one round trip (one row with null candidate columns when
# nothing covers the resident; no row when the index does not hold the resident).
_RESIDENT_SQL = """
SELECT h.lat, h.lng, h.cell, c.*
FROM residents h
LEFT JOIN LATERAL ({batch}) c ON true
WHERE h.id = %(resident_id)s
""".format(batch=_BATCH.format(cells="feed_probe_cells(h.cell, %(max_resolution)s)"))


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


def warm_prepared_areas(conn: Conn) -> int:
    """Prepare the stored areas, in the feed's order (open requests first, newest first), until the cache's
    budget is full; return how many were added. A lookup then reads no area from the database."""
    rows = conn.cursor().stream(
        "SELECT request_id, area_wkb FROM feed_requests ORDER BY respond_until > now() DESC, published_at DESC")
    return _AREAS.warm((str(request_id), bytes(wkb)) for request_id, wkb in rows)


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
    walk = _Walk(conn, limit, cursor, now)
    cell = point_cell(lat, lng)
    return walk.page(lat, lng, cell, walk.fetch(_POINT_SQL, cells=probe_cells(cell)))


def requests_for_resident(conn: Conn, resident_id: int, *, limit: int = DEFAULT_PAGE_SIZE,
                          cursor: str | None = None, now: datetime | None = None) -> FeedPage:
    """The requests whose area covers the resident's current location (read now: a move shows at once).

    Raises :class:`UnknownResident` when the index does not hold the resident.
    """
    walk = _Walk(conn, limit, cursor, now)
    rows = walk.fetch(_RESIDENT_SQL, resident_id=resident_id, max_resolution=FEED_BAND_RESOLUTION)
    if not rows:
        raise UnknownResident(f"resident {resident_id} is not in the index")
    lat, lng, cell = rows[0][:3]
    candidates = [row[3:] for row in rows if row[3] is not None]
    walk.batch_full = len(candidates) == walk.params["batch"]
    return walk.page(float(lat), float(lng), int(cell), candidates)


class _Walk:
    """One page being cut: the first page's instant, the position after which it starts, the batches."""

    def __init__(self, conn: Conn, limit: int, cursor: str | None, now: datetime | None) -> None:
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be within 1..{MAX_PAGE_SIZE}")
        self.conn = conn
        self.limit = limit
        self.after = decode_cursor(cursor) if cursor is not None else None
        self.now = now or datetime.now(UTC)
        self.as_of = self.after.as_of if self.after is not None else self.now
        self.params: dict[str, Any] = {"as_of": self.as_of, "batch": limit + 1 + BAND_SLACK}
        self.batch_full = False

    def fetch(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` for the batch after the current position."""
        after = self.after
        self.params.update(params, after_id=None if after is None else after.request_id,
                           after_open=None if after is None else after.open,
                           after_published=None if after is None else after.published_at)
        rows = self.conn.execute(sql, self.params, binary=True).fetchall()
        self.batch_full = len(rows) == self.params["batch"]
        return rows

    def page(self, lat: float, lng: float, cell: int, rows: list[tuple[Any, ...]]) -> FeedPage:
        """Test the band candidates of each batch in order until the page and one more are found."""
        kept: list[tuple[FeedItem, bool]] = []
        while True:
            for request_id, band, published_at, respond_until, open_then in rows:
                if band and not _covers(self.conn, str(request_id), lat, lng):
                    continue
                kept.append((FeedItem(str(request_id), published_at, respond_until, respond_until > self.now),
                             bool(open_then)))
                if len(kept) > self.limit:
                    return self._cut(kept)
            if not self.batch_full:
                return self._cut(kept)
            last = rows[-1]
            self.after = PageKey(self.as_of, bool(last[4]), last[2], str(last[0]))
            rows = self.fetch(_POINT_SQL, cells=probe_cells(cell))

    def _cut(self, kept: list[tuple[FeedItem, bool]]) -> FeedPage:
        page = kept[:self.limit]
        next_cursor = None
        if len(kept) > self.limit:
            item, open_then = page[-1]
            next_cursor = encode_cursor(PageKey(self.as_of, open_then, item.published_at, item.request_id))
        return FeedPage([item for item, _ in page], next_cursor)


def _covers(conn: Conn, request_id: str, lat: float, lng: float) -> bool:
    area = _AREAS.get(request_id, lambda rid: _area_wkb(conn, rid))
    return bool(shapely.intersects_xy(area, lng, lat))


def _area_wkb(conn: Conn, request_id: str) -> bytes:
    row = conn.execute("SELECT area_wkb FROM feed_requests WHERE request_id = %s", (request_id,)).fetchone()
    assert row is not None, "a covered request has its area stored with its cover"
    return bytes(row[0])
