-- The ledger is a work queue: each row is written once, leased, renewed and closed. Measured on the
-- county benchmark (benchmarks/results/county.md), PostgreSQL spent more CPU than the engine or the
-- sandbox, most of it in index maintenance of those updates and in the foreign-key check per insert.
--
-- Free room on each page lets the lease updates (owner, until, attempts: no indexed column) be HOT:
-- no new index entries, no dead ones for the next claim to step over. Only closing a row (status)
-- touches an index.
ALTER TABLE deliveries SET (fillfactor = 60);

-- Every insert checked community_requests and took a KEY SHARE lock on the request's row, a million
-- times for a county. Only dispatcher.ledger writes deliveries, always for a stored request, and a
-- published request is never deleted, so the key guarded nothing the code does not already.
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_request_id_fkey;

-- Closed rows leave dead tuples quickly; vacuum the table sooner than the default fifth of it.
ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_insert_scale_factor = 0.05);
