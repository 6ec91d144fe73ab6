-- The resident index, residents' settings, Community Requests and the delivery ledger.

-- Residents as the main application knows them. The location is used only for matching.
-- `cell` is the H3 cell (resolution 15) of the location as a BIGINT: descendants of any coarser
-- cell form one contiguous integer range, so an area becomes a handful of index range scans.
CREATE TABLE residents (
    id          BIGINT PRIMARY KEY,
    lat         DOUBLE PRECISION NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lng         DOUBLE PRECISION NOT NULL CHECK (lng BETWEEN -180 AND 180),
    cell        BIGINT NOT NULL,
    email       TEXT,
    locale      TEXT NOT NULL DEFAULT 'en-US',
    time_zone   TEXT NOT NULL DEFAULT 'UTC',
    has_camera  BOOLEAN NOT NULL DEFAULT FALSE,
    version     BIGINT NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Covering index: range scans on `cell` return ids (and, for the boundary band, coordinates)
-- without touching the heap.
CREATE INDEX residents_cell_idx ON residents (cell) INCLUDE (id, lng, lat);

-- A resident's choices. No row means the defaults: everything on.
CREATE TABLE resident_settings (
    resident_id         BIGINT PRIMARY KEY REFERENCES residents (id) ON DELETE CASCADE,
    community_requests  BOOLEAN NOT NULL DEFAULT TRUE,
    push_enabled        BOOLEAN NOT NULL DEFAULT TRUE,
    email_enabled       BOOLEAN NOT NULL DEFAULT TRUE,
    version             BIGINT NOT NULL DEFAULT 0,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Device tokens for FCM. A retired token (UNREGISTERED, invalid) is never used again.
CREATE TABLE device_tokens (
    token           TEXT PRIMARY KEY,
    resident_id     BIGINT NOT NULL REFERENCES residents (id) ON DELETE CASCADE,
    registered_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    retired_at      TIMESTAMPTZ,
    retired_reason  TEXT
);
CREATE INDEX device_tokens_resident_idx ON device_tokens (resident_id) WHERE retired_at IS NULL;

-- Email addresses that bounced, were dropped, reported spam or unsubscribed: never mailed again.
-- Keyed by the lower-cased address so a resident who changes case is still suppressed.
CREATE TABLE email_suppressions (
    email           TEXT PRIMARY KEY,
    reason          TEXT NOT NULL,
    suppressed_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Published Community Requests, immutable once stored. `payload_sha256` detects a conflicting
-- re-publication of the same id.
CREATE TABLE community_requests (
    id              TEXT PRIMARY KEY,
    payload         JSONB NOT NULL,
    payload_sha256  TEXT NOT NULL,
    urgent          BOOLEAN NOT NULL DEFAULT FALSE,
    state           TEXT NOT NULL CHECK (state IN
                      ('accepted', 'targeting', 'sending', 'completed', 'rejected', 'expired')),
    reason          TEXT,
    published_at    TIMESTAMPTZ NOT NULL,
    respond_until   TIMESTAMPTZ NOT NULL,
    accepted_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    targeted_at     TIMESTAMPTZ,
    completed_at    TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX community_requests_active_idx ON community_requests (state)
    WHERE state IN ('accepted', 'targeting', 'sending');

-- Requests rejected before they could be stored (bad payload, conflicting re-publication).
CREATE TABLE request_rejections (
    id              BIGSERIAL PRIMARY KEY,
    request_id      TEXT,
    reason          TEXT NOT NULL,
    rejected_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The delivery ledger: one row per request, resident and channel. The source of truth for
-- "exactly once": fan-out workers lease pending rows, send, and record the outcome.
CREATE TABLE deliveries (
    request_id      TEXT NOT NULL REFERENCES community_requests (id),
    channel         TEXT NOT NULL CHECK (channel IN ('push', 'email')),
    resident_id     BIGINT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN
                      ('pending', 'sent', 'failed', 'skipped', 'suppressed', 'expired')),
    reason          TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     TIMESTAMPTZ,
    sent_at         TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, channel, resident_id)
);
CREATE INDEX deliveries_pending_idx ON deliveries (request_id, channel, resident_id)
    WHERE status = 'pending';
