-- Contact Me relay (dispatcher/relay/ is the only writer of these tables).
-- Real phone numbers exist only in relay_phones.number_encrypted (Fernet); lookups go through
-- relay_phones.number_hmac (a keyed hash). Message bodies are never stored, except encrypted in
-- relay_outbox until the provider has them.

-- Our own Twilio numbers: not personal data.
CREATE TABLE relay_proxy_numbers (
    id         BIGSERIAL PRIMARY KEY,
    number     TEXT NOT NULL UNIQUE,
    active     BOOLEAN NOT NULL DEFAULT true,
    added_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per real phone number (author or contacter).
CREATE TABLE relay_phones (
    id               BIGSERIAL PRIMARY KEY,
    number_hmac      BYTEA NOT NULL UNIQUE,
    number_encrypted BYTEA NOT NULL,
    confirmed_at     TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A post's Contact Me state. state: pending (waiting for the author's confirmation), on, hidden,
-- off (removed, CANCEL, or the 30-day switch-off: off_reason says which), closed (resolved or deleted).
CREATE TABLE relay_posts (
    post_id          TEXT PRIMARY KEY,
    author_phone_id  BIGINT NOT NULL REFERENCES relay_phones (id),
    state            TEXT NOT NULL CHECK (state IN ('pending', 'on', 'hidden', 'off', 'closed')),
    off_reason       TEXT,
    enabled_at       TIMESTAMPTZ,
    contact_until    TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX relay_posts_author ON relay_posts (author_phone_id);
CREATE INDEX relay_posts_contact_until ON relay_posts (contact_until) WHERE state IN ('on', 'hidden');

-- Two people who have been put in touch. Each side reaches the other through its own proxy number;
-- the pair is kept after its sessions end, so the same person always writes from the same proxy
-- number (a block on the phone keeps holding).
CREATE TABLE relay_pairs (
    id          BIGSERIAL PRIMARY KEY,
    low_phone   BIGINT NOT NULL REFERENCES relay_phones (id),
    high_phone  BIGINT NOT NULL REFERENCES relay_phones (id),
    last_used_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (low_phone < high_phone),
    UNIQUE (low_phone, high_phone)
);

-- A participant: one real number seen through one proxy number. The primary key is the promise that a
-- (real number, proxy number) pair identifies exactly one pair of people, hence one active session.
CREATE TABLE relay_participants (
    phone_id  BIGINT NOT NULL REFERENCES relay_phones (id),
    proxy_id  BIGINT NOT NULL REFERENCES relay_proxy_numbers (id),
    pair_id   BIGINT NOT NULL REFERENCES relay_pairs (id) ON DELETE CASCADE,
    -- STOP sent from this phone to this proxy number (carrier convention): nothing is sent to it.
    stopped_at TIMESTAMPTZ,
    PRIMARY KEY (phone_id, proxy_id),
    UNIQUE (pair_id, phone_id)
);
CREATE INDEX relay_participants_proxy ON relay_participants (proxy_id);

-- A conversation about one post between its author and one contacter. At most one active per pair.
CREATE TABLE relay_sessions (
    id                BIGSERIAL PRIMARY KEY,
    pair_id           BIGINT NOT NULL REFERENCES relay_pairs (id),
    post_id           TEXT NOT NULL REFERENCES relay_posts (post_id),
    contacter_phone_id BIGINT NOT NULL REFERENCES relay_phones (id),
    channel           TEXT NOT NULL CHECK (channel IN ('sms', 'call')),
    state             TEXT NOT NULL CHECK (state IN ('active', 'expired', 'cancelled')),
    end_reason        TEXT,
    started_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at        TIMESTAMPTZ NOT NULL,
    ended_at          TIMESTAMPTZ
);
CREATE UNIQUE INDEX relay_sessions_one_active ON relay_sessions (pair_id) WHERE state = 'active';
CREATE INDEX relay_sessions_post ON relay_sessions (post_id) WHERE state = 'active';
CREATE INDEX relay_sessions_expiry ON relay_sessions (expires_at) WHERE state = 'active';

-- Outgoing texts waiting for the provider. The body is encrypted and the row is deleted once sent,
-- refused for good, or older than the outbox TTL: bodies are relayed, not kept.
CREATE TABLE relay_outbox (
    id              BIGSERIAL PRIMARY KEY,
    to_phone_id     BIGINT NOT NULL REFERENCES relay_phones (id),
    from_number     TEXT NOT NULL,
    body_encrypted  BYTEA NOT NULL,
    purpose         TEXT NOT NULL,
    session_id      BIGINT REFERENCES relay_sessions (id),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What abuse reports need, and nothing more: who wrote in which session, when, how long, the outcome.
-- Deleted by the retention sweep.
CREATE TABLE relay_abuse_log (
    id          BIGSERIAL PRIMARY KEY,
    session_id  BIGINT,
    phone_id    BIGINT,
    kind        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    body_chars  INTEGER NOT NULL DEFAULT 0,
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX relay_abuse_log_at ON relay_abuse_log (at);
