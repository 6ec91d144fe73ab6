-- Agencies and their jurisdictions, residents' responses, opt-outs of all future requests, and
-- residents' settings per request kind. Written only by dispatcher/agencies/ (settings per kind by the
-- preferences that own resident_settings).

-- The agency registry. `jurisdiction` is GeoJSON (RFC 7946) Polygon or MultiPolygon; a request's area
-- must lie inside it. An inactive agency publishes nothing. `announced_at` is set once residents were
-- told the agency joined.
CREATE TABLE agencies (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    kind          TEXT NOT NULL,
    jurisdiction  JSONB NOT NULL,
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    joined_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    announced_at  TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A resident's answer to one request, for the resident's own view. Never read by anything agency-facing
-- except shares, through dispatcher/agencies/responses.py, which shows a pseudonym (and contact details
-- only with `contact_consent`). `key_id` is the pseudonym key the share was first shown under.
CREATE TABLE request_responses (
    request_id       TEXT NOT NULL REFERENCES community_requests (id),
    resident_id      BIGINT NOT NULL,
    response         TEXT NOT NULL CHECK (response IN ('share', 'decline')),
    contact_consent  BOOLEAN NOT NULL DEFAULT FALSE,
    contact          JSONB,
    key_id           TEXT,
    responded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, resident_id),
    CHECK (contact IS NULL OR contact_consent)
);
CREATE INDEX request_responses_resident_idx ON request_responses (resident_id);

-- Residents who opted out of all future requests (community and video requests; safety alerts are
-- not requests). Checked when the ledger is written and again right before each send.
CREATE TABLE request_opt_outs (
    resident_id    BIGINT PRIMARY KEY,
    opted_out_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Settings per request kind (no row in resident_settings still means every default on), each with the
-- version of its last change like the other settings.
ALTER TABLE resident_settings
    ADD COLUMN video_requests          BOOLEAN NOT NULL DEFAULT TRUE,
    ADD COLUMN safety_alerts           BOOLEAN NOT NULL DEFAULT TRUE,
    ADD COLUMN announcements           BOOLEAN NOT NULL DEFAULT TRUE,
    ADD COLUMN video_requests_version  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN safety_alerts_version   BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN announcements_version   BIGINT NOT NULL DEFAULT 0;
