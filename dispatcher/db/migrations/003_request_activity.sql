-- When each stage of a request last moved, so the reconciler can tell a stuck request from a busy one.
--
-- Fan-out workers touch (request, 'push' | 'email') whenever they claim a batch; the reconciler touches
-- a stage when it re-enqueues it. A request whose stage has pending work and no touch for a while has
-- lost its queue messages (a killed worker, a Redis restart) and is nudged again: recovery never
-- depends on one message surviving.
CREATE TABLE request_activity (
    request_id  TEXT NOT NULL REFERENCES community_requests (id),
    stage       TEXT NOT NULL CHECK (stage IN ('target', 'push', 'email')),
    active_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (request_id, stage)
);
