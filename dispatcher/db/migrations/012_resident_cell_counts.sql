-- Residents per coarse H3 cell (res 7, about 5 km²): the statistics targeting's planner reads to pick
-- a plan before any work (dispatcher/targeting/stats.py owns the table). Kept by statement triggers with
-- transition tables, in the same transaction as every write to `residents`: one grouped upsert per
-- statement, so a bulk import pays one pass over its own rows and a single update two rows.

CREATE TABLE resident_cell_counts (
    cell       BIGINT PRIMARY KEY,   -- the H3 res-7 parent of residents.cell
    residents  BIGINT NOT NULL
);

-- The res-7 parent of a res-15 cell: resolution field set to 7, digits 8..15 set to 7 (unused).
CREATE FUNCTION resident_stats_cell(cell BIGINT) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (cell & -67553994427334656) | 31525197391593472 | 16777215;

-- Apply (cell, change) pairs in cell order (a fixed lock order: concurrent writers cannot deadlock).
CREATE FUNCTION resident_cell_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO resident_cell_counts AS c (cell, residents)
        SELECT resident_stats_cell(n.cell), count(*) FROM new_rows n GROUP BY 1 ORDER BY 1
        ON CONFLICT (cell) DO UPDATE SET residents = c.residents + EXCLUDED.residents;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO resident_cell_counts AS c (cell, residents)
        SELECT resident_stats_cell(o.cell), -count(*) FROM old_rows o GROUP BY 1 ORDER BY 1
        ON CONFLICT (cell) DO UPDATE SET residents = c.residents + EXCLUDED.residents;
    ELSE
        INSERT INTO resident_cell_counts AS c (cell, residents)
        SELECT s, sum(d) FROM (
            SELECT resident_stats_cell(n.cell) AS s, 1 AS d
            FROM new_rows n JOIN old_rows o USING (id)
            WHERE resident_stats_cell(n.cell) <> resident_stats_cell(o.cell)
            UNION ALL
            SELECT resident_stats_cell(o.cell), -1
            FROM new_rows n JOIN old_rows o USING (id)
            WHERE resident_stats_cell(n.cell) <> resident_stats_cell(o.cell)
        ) AS moves GROUP BY s ORDER BY s
        ON CONFLICT (cell) DO UPDATE SET residents = c.residents + EXCLUDED.residents;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION resident_cell_counts_clear() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM resident_cell_counts;
    RETURN NULL;
END $$;

CREATE TRIGGER resident_cell_counts_insert AFTER INSERT ON residents
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION resident_cell_counts_apply();
CREATE TRIGGER resident_cell_counts_delete AFTER DELETE ON residents
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION resident_cell_counts_apply();
CREATE TRIGGER resident_cell_counts_update AFTER UPDATE ON residents
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION resident_cell_counts_apply();
CREATE TRIGGER resident_cell_counts_truncate AFTER TRUNCATE ON residents
    FOR EACH STATEMENT EXECUTE FUNCTION resident_cell_counts_clear();

INSERT INTO resident_cell_counts (cell, residents)
SELECT resident_stats_cell(cell), count(*) FROM residents GROUP BY 1;
