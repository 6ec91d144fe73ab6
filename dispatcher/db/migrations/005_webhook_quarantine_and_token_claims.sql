-- A stored SendGrid event that cannot be applied (it broke a constraint or a size limit) moves here with
-- the kind of failure, so it never blocks later batches. The address is not kept: an event that can
-- never apply needs no address, and ops can still find it by SendGrid's `sg_event_id`.
CREATE TABLE webhook_quarantine (
    sg_event_id     TEXT PRIMARY KEY,
    event           TEXT NOT NULL,
    problem         TEXT NOT NULL,
    received_at     TIMESTAMPTZ NOT NULL,
    quarantined_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The newest version at which each resident registered or removed each token. Versions are counted per
-- resident, so they cannot order two residents' registrations of one token; this table lets a token's
-- registration be recognised as a replay (that resident already wrote this token at this version or
-- later), so a redelivered old registration never takes a device back from its newer owner. No foreign
-- key on purpose: one would keep the residents' primary key through a first bulk load (see the importer's
-- first_load); deleting a resident deletes its claims explicitly.
CREATE TABLE device_token_claims (
    token        TEXT NOT NULL,
    resident_id  BIGINT NOT NULL,
    version      BIGINT NOT NULL,
    PRIMARY KEY (token, resident_id)
);
CREATE INDEX device_token_claims_resident_idx ON device_token_claims (resident_id);
