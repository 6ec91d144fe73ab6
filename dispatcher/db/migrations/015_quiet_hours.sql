-- Quiet hours: each resident's choice, and the ledger's hold.
--
-- A resident's non-urgent pushes wait while their wall clock is between `quiet_start` and `quiet_end`
-- (NULL: the engine's default, 22:00 to 07:00, spelled once in dispatcher/preferences/quiet_hours.py).
-- Each setting remembers the version that last wrote it, like the other settings (see 002).
ALTER TABLE resident_settings
    ADD COLUMN quiet_hours          BOOLEAN NOT NULL DEFAULT TRUE,
    ADD COLUMN quiet_start          TIME,
    ADD COLUMN quiet_end            TIME,
    ADD COLUMN quiet_hours_version  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN quiet_start_version  BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN quiet_end_version    BIGINT NOT NULL DEFAULT 0;

-- A pending row is not claimed before `not_before` (NULL: at once). The hold is decided when the row is
-- claimed, so a resident who changes settings or zone meanwhile is judged by the new ones; a held row is
-- still `pending`, so a request with held rows is not complete.
ALTER TABLE deliveries ADD COLUMN not_before TIMESTAMPTZ;
