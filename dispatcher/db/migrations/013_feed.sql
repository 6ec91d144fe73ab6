-- The feed: which published requests cover a resident or a point (the reverse of targeting).
--
-- Each request's area is stored as H3 cells when it is accepted: interior cells (compacted, of any
-- resolution up to the band's) whose every res-15 descendant lies inside the area, and boundary band
-- cells whose descendants must be tested exactly against the area. A lookup probes the ancestors of a
-- point's res-15 cell, one equality probe per resolution, and tests only band hits with shapely.

-- What a lookup needs besides the cells: the ordering keys and the area for the exact band test (WKB,
-- read once per process into a bounded cache of prepared geometries).
CREATE TABLE feed_requests (
    request_id      TEXT PRIMARY KEY REFERENCES community_requests (id) ON DELETE CASCADE,
    published_at    TIMESTAMPTZ NOT NULL,
    respond_until   TIMESTAMPTZ NOT NULL,
    area_wkb        BYTEA NOT NULL,
    indexed_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per cell of a request's cover. The primary key leads with the cell and carries the ordering
-- keys (a published request never changes), so the probes of one lookup are index-only scans that
-- return every candidate, whether it needs a test, and where it sorts, without touching another table.
CREATE TABLE feed_cover (
    cell            BIGINT NOT NULL,
    request_id      TEXT NOT NULL REFERENCES feed_requests (request_id) ON DELETE CASCADE,
    band            BOOLEAN NOT NULL,
    published_at    TIMESTAMPTZ NOT NULL,
    respond_until   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (cell, request_id) INCLUDE (band, published_at, respond_until)
);
CREATE INDEX feed_cover_request_idx ON feed_cover (request_id);
