-- Ordering and deletion for the resident index, and the SendGrid event inbox.
--
-- The main application numbers its changes to a resident with a version that only grows. Each part of
-- a resident that can change on its own (profile, email, each setting, each device token) remembers the
-- version that last wrote it, so a late, older message is ignored without hiding a newer, unrelated one.

-- Version of the last email change (from a profile upsert or an email change).
ALTER TABLE residents ADD COLUMN email_version BIGINT NOT NULL DEFAULT 0;

-- Version of the last change of each setting; `version` stays the highest of them.
ALTER TABLE resident_settings
    ADD COLUMN community_requests_version BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN push_version               BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN email_enabled_version      BIGINT NOT NULL DEFAULT 0;

-- Version of the last registration or removal of a token (per resident's counter).
ALTER TABLE device_tokens ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

-- A deleted resident leaves only its id and the version of the deletion, so that a late, older
-- "created" or "changed" message cannot bring the resident (or any personal data) back.
CREATE TABLE resident_tombstones (
    id          BIGINT PRIMARY KEY,
    version     BIGINT NOT NULL,
    deleted_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Verified SendGrid events waiting for a worker. Queue messages carry only `batch_id`; the worker
-- applies the suppressions and deletes the rows. `sg_event_id` makes replays and duplicates harmless.
CREATE TABLE webhook_events (
    sg_event_id  TEXT PRIMARY KEY,
    batch_id     TEXT NOT NULL,
    event        TEXT NOT NULL,
    email        TEXT NOT NULL,
    occurred_at  TIMESTAMPTZ,
    received_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_batch_idx ON webhook_events (batch_id);

-- Deleting a resident skips their pending deliveries; without this it would scan the whole ledger.
CREATE INDEX deliveries_pending_resident_idx ON deliveries (resident_id) WHERE status = 'pending';
