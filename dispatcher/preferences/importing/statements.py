"""Every SQL statement of the bulk import, written out in full and named after what it does.

The staging table ``resident_import`` lives for one transaction; the statements below turn it into
residents, settings and tokens set-based. The ``FIRST_*`` forms are for a first load into empty tables
whose keys were dropped for the load (see :mod:`.first_load`): no conflict checks, no ``NOT EXISTS``.
"""

from __future__ import annotations

CREATE_STAGING = """
CREATE TEMP TABLE resident_import (
    line               INTEGER NOT NULL,
    id                 BIGINT NOT NULL,
    lat                DOUBLE PRECISION NOT NULL,
    lng                DOUBLE PRECISION NOT NULL,
    cell               BIGINT NOT NULL,
    email              TEXT,
    locale             TEXT,
    time_zone          TEXT,
    has_camera         BOOLEAN,
    push_tokens        TEXT,
    community_requests BOOLEAN,
    push_enabled       BOOLEAN,
    email_enabled      BOOLEAN,
    version            BIGINT
) ON COMMIT DROP
"""

COPY_TEXT = "COPY resident_import FROM STDIN"
COPY_BINARY = "COPY resident_import FROM STDIN (FORMAT binary)"

# Sorts and hash joins of a million rows in memory; JIT costs more than it saves here.
SET_WORK_MEM = "SET LOCAL work_mem = '256MB'"
SET_JIT_OFF = "SET LOCAL jit = off"
# A crash may lose the last import (it is simply run again), never corrupt the index.
SET_ASYNC_COMMIT = "SET LOCAL synchronous_commit = off"

#: A resident deleted while we load must not come back: deletions wait for this import to commit.
LOCK_TOMBSTONES = "LOCK TABLE resident_tombstones IN SHARE ROW EXCLUSIVE MODE"
ANALYZE_STAGING = "ANALYZE resident_import"

#: A resident id listed twice: the last line wins, the earlier lines are returned to be reported.
DELETE_REPEATED_IDS = """
DELETE FROM resident_import AS earlier USING resident_import AS later
WHERE later.id = earlier.id AND later.line > earlier.line
RETURNING earlier.line
"""

DELETE_DELETED_RESIDENTS = """
DELETE FROM resident_import AS i USING resident_tombstones AS t
WHERE t.id = i.id AND COALESCE(i.version, 0) <= t.version
"""

DELETE_RESURRECTED_TOMBSTONES = """
DELETE FROM resident_tombstones AS t USING resident_import AS i WHERE t.id = i.id
"""

DELETE_STALE_ROWS = """
DELETE FROM resident_import AS i USING residents AS r
WHERE r.id = i.id AND i.version IS NOT NULL AND i.version < r.version
"""

# One join of staging and residents; SET sees the old row, so the new values can be written in place.
# The new values are spelled twice (SET and the IS DISTINCT FROM that skips unchanged rows): keep them equal.
UPDATE_RESIDENTS = """
UPDATE residents AS r
SET (lat, lng, cell, email, locale, time_zone, has_camera, version, email_version) = (
    i.lat, i.lng, i.cell,
    CASE WHEN i.email IS NULL OR COALESCE(i.version, r.email_version) < r.email_version THEN r.email
         ELSE NULLIF(i.email, '') END,
    COALESCE(i.locale, r.locale), COALESCE(i.time_zone, r.time_zone), COALESCE(i.has_camera, r.has_camera),
    COALESCE(i.version, r.version), GREATEST(r.email_version, COALESCE(i.version, 0))
    ),
    updated_at = now()
FROM resident_import AS i
WHERE r.id = i.id
  AND (r.lat, r.lng, r.cell, r.email, r.locale, r.time_zone, r.has_camera, r.version, r.email_version)
      IS DISTINCT FROM (
    i.lat, i.lng, i.cell,
    CASE WHEN i.email IS NULL OR COALESCE(i.version, r.email_version) < r.email_version THEN r.email
         ELSE NULLIF(i.email, '') END,
    COALESCE(i.locale, r.locale), COALESCE(i.time_zone, r.time_zone), COALESCE(i.has_camera, r.has_camera),
    COALESCE(i.version, r.version), GREATEST(r.email_version, COALESCE(i.version, 0))
    )
"""

INSERT_RESIDENTS = """
INSERT INTO residents (id, lat, lng, cell, email, email_version, locale, time_zone, has_camera, version)
SELECT i.id, i.lat, i.lng, i.cell, NULLIF(i.email, ''), COALESCE(i.version, 0),
       COALESCE(i.locale, 'en-US'), COALESCE(i.time_zone, 'UTC'), COALESCE(i.has_camera, FALSE),
       COALESCE(i.version, 0)
FROM resident_import AS i
WHERE NOT EXISTS (SELECT 1 FROM residents AS r WHERE r.id = i.id)
ON CONFLICT (id) DO NOTHING
"""

#: Into an empty index (staging ids are unique by now): no per-row conflict checks.
FIRST_INSERT_RESIDENTS = """
INSERT INTO residents (id, lat, lng, cell, email, email_version, locale, time_zone, has_camera, version)
SELECT i.id, i.lat, i.lng, i.cell, NULLIF(i.email, ''), COALESCE(i.version, 0),
       COALESCE(i.locale, 'en-US'), COALESCE(i.time_zone, 'UTC'), COALESCE(i.has_camera, FALSE),
       COALESCE(i.version, 0)
FROM resident_import AS i
"""

UPDATE_SETTINGS = """
UPDATE resident_settings AS s
SET community_requests = COALESCE(i.community_requests, s.community_requests),
    push_enabled       = COALESCE(i.push_enabled, s.push_enabled),
    email_enabled      = COALESCE(i.email_enabled, s.email_enabled),
    community_requests_version = CASE WHEN i.community_requests IS NULL THEN s.community_requests_version
                                      ELSE GREATEST(s.community_requests_version, COALESCE(i.version, 0)) END,
    push_version          = CASE WHEN i.push_enabled IS NULL THEN s.push_version
                                 ELSE GREATEST(s.push_version, COALESCE(i.version, 0)) END,
    email_enabled_version = CASE WHEN i.email_enabled IS NULL THEN s.email_enabled_version
                                 ELSE GREATEST(s.email_enabled_version, COALESCE(i.version, 0)) END,
    version    = GREATEST(s.version, COALESCE(i.version, 0)),
    updated_at = now()
FROM resident_import AS i
WHERE s.resident_id = i.id
  AND (i.community_requests IS NOT NULL OR i.push_enabled IS NOT NULL OR i.email_enabled IS NOT NULL)
  AND COALESCE(i.version, s.version) >= s.version
  AND (COALESCE(i.community_requests, s.community_requests), COALESCE(i.push_enabled, s.push_enabled),
       COALESCE(i.email_enabled, s.email_enabled))
      IS DISTINCT FROM (s.community_requests, s.push_enabled, s.email_enabled)
"""

INSERT_SETTINGS = """
INSERT INTO resident_settings
    (resident_id, community_requests, push_enabled, email_enabled,
     community_requests_version, push_version, email_enabled_version, version)
SELECT i.id, COALESCE(i.community_requests, TRUE), COALESCE(i.push_enabled, TRUE),
       COALESCE(i.email_enabled, TRUE),
       CASE WHEN i.community_requests IS NULL THEN 0 ELSE COALESCE(i.version, 0) END,
       CASE WHEN i.push_enabled IS NULL THEN 0 ELSE COALESCE(i.version, 0) END,
       CASE WHEN i.email_enabled IS NULL THEN 0 ELSE COALESCE(i.version, 0) END,
       COALESCE(i.version, 0)
FROM resident_import AS i
WHERE (i.community_requests IS FALSE OR i.push_enabled IS FALSE OR i.email_enabled IS FALSE
       -- all on and unversioned is what no row means already: no row is written
       OR (i.version IS NOT NULL AND (i.community_requests IS NOT NULL OR i.push_enabled IS NOT NULL
                                      OR i.email_enabled IS NOT NULL)))
  AND NOT EXISTS (SELECT 1 FROM resident_settings AS s WHERE s.resident_id = i.id)
ON CONFLICT (resident_id) DO NOTHING
"""

FIRST_INSERT_SETTINGS = """
INSERT INTO resident_settings
    (resident_id, community_requests, push_enabled, email_enabled,
     community_requests_version, push_version, email_enabled_version, version)
SELECT i.id, COALESCE(i.community_requests, TRUE), COALESCE(i.push_enabled, TRUE),
       COALESCE(i.email_enabled, TRUE),
       CASE WHEN i.community_requests IS NULL THEN 0 ELSE COALESCE(i.version, 0) END,
       CASE WHEN i.push_enabled IS NULL THEN 0 ELSE COALESCE(i.version, 0) END,
       CASE WHEN i.email_enabled IS NULL THEN 0 ELSE COALESCE(i.version, 0) END,
       COALESCE(i.version, 0)
FROM resident_import AS i
WHERE (i.community_requests IS FALSE OR i.push_enabled IS FALSE OR i.email_enabled IS FALSE
       -- all on and unversioned is what no row means already: no row is written
       OR (i.version IS NOT NULL AND (i.community_requests IS NOT NULL OR i.push_enabled IS NOT NULL
                                      OR i.email_enabled IS NOT NULL)))
"""

#: Tokens are added or move to this resident; the last line listing a token wins. A versioned row whose
#: resident already wrote the token at that version or later (``device_token_claims``, see
#: ``updates.register_token``) is old news: it never takes the token back from a newer owner.
INSERT_TOKENS = """
INSERT INTO device_tokens AS t (token, resident_id, version)
SELECT DISTINCT ON (x.token COLLATE "C") x.token, i.id, COALESCE(i.version, 0)
FROM resident_import AS i, unnest(string_to_array(i.push_tokens, ';')) AS x(token)
WHERE i.push_tokens IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM device_tokens AS d WHERE d.token = x.token AND d.resident_id = i.id)
  AND NOT EXISTS (SELECT 1 FROM device_token_claims AS c
                  WHERE c.token = x.token AND c.resident_id = i.id AND c.version >= i.version)
ORDER BY x.token COLLATE "C", i.line DESC  -- byte order: same groups, a much cheaper sort
ON CONFLICT (token) DO UPDATE SET resident_id = EXCLUDED.resident_id, registered_at = now()
WHERE t.resident_id <> EXCLUDED.resident_id
"""

#: First load, a token listed more than once: the last line that lists it wins.
FIRST_INSERT_TOKENS = """
INSERT INTO device_tokens (token, resident_id, version)
SELECT DISTINCT ON (x.token COLLATE "C") x.token, i.id, COALESCE(i.version, 0)
FROM resident_import AS i, unnest(string_to_array(i.push_tokens, ';')) AS x(token)
WHERE i.push_tokens IS NOT NULL
ORDER BY x.token COLLATE "C", i.line DESC
"""

#: First load, no token listed twice: there is no last line to pick, so no sort.
FIRST_INSERT_UNIQUE_TOKENS = """
INSERT INTO device_tokens (token, resident_id, version)
SELECT x.token, i.id, COALESCE(i.version, 0)
FROM resident_import AS i, unnest(string_to_array(i.push_tokens, ';')) AS x(token)
WHERE i.push_tokens IS NOT NULL
"""

VACUUM_RESIDENTS = "VACUUM (ANALYZE) residents"

# First load: the tables it fills, and the keys and indexes it rebuilds once at the end.
INDEX_IS_EMPTY = """
SELECT NOT EXISTS (SELECT 1 FROM residents) AND NOT EXISTS (SELECT 1 FROM resident_settings)
   AND NOT EXISTS (SELECT 1 FROM device_tokens)
"""

LOCK_LOADED_TABLES = "LOCK TABLE residents, resident_settings, device_tokens IN ACCESS EXCLUSIVE MODE"

SET_MAINTENANCE_WORK_MEM = "SET LOCAL maintenance_work_mem = '256MB'"

SECONDARY_INDEXES = """
SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index AS i
JOIN pg_class AS c ON c.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary AND NOT i.indisunique
"""

FOREIGN_KEYS = """
SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
FROM pg_constraint AS k
JOIN pg_class AS c ON c.oid = k.conrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE k.contype = 'f' AND k.conrelid = ANY(%s::regclass[])
"""

#: Primary keys of the loaded tables that no remaining foreign key depends on (run after dropping ours).
PRIMARY_KEYS = """
SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
FROM pg_constraint AS k
JOIN pg_class AS c ON c.oid = k.conrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE k.contype = 'p' AND k.conrelid = ANY(%s::regclass[])
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS f WHERE f.contype = 'f' AND f.confrelid = k.conrelid)
"""

DROP_CONSTRAINT = "ALTER TABLE {} DROP CONSTRAINT {}"
ADD_CONSTRAINT = "ALTER TABLE {} ADD CONSTRAINT {} {}"
DROP_INDEX = "DROP INDEX {}"
