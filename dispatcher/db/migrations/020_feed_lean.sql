-- The feed, leaner: cards for the list, one probe statement per lookup, no per-candidate state check.
--
-- A feed item carries a card (the published fields and the area's bounding box, never the area), built
-- once when the request is indexed. The feed tables are derived data: they are emptied here and
-- rebuilt, cards included, by `dispatcher api` when it starts (`index_missing`), as on the upgrade that
-- introduced the feed.
TRUNCATE feed_requests CASCADE;
ALTER TABLE feed_requests ADD COLUMN card TEXT NOT NULL;

-- The ancestors of a cell at resolutions 0 to max_resolution, as h3's cell_to_parent computes them: the
-- resolution field set to r and the digits below r set to 7 (unused). A lookup by resident finds the
-- resident's cell and probes its ancestors in the same statement.
CREATE FUNCTION feed_probe_cells(cell BIGINT, max_resolution INTEGER) RETURNS BIGINT[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT array_agg((cell & ~(15::BIGINT << 52)) | (r::BIGINT << 52) | ((1::BIGINT << (3 * (15 - r))) - 1)
                     ORDER BY r)
    FROM generate_series(0, max_resolution) AS r
$$;
