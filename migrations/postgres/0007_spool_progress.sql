-- How far each collector's disk spool (`serve --spool-dir`) is stored:
-- written in the same transaction as the events it covers, so that a
-- restart reads the spool again from exactly there (no duplicates, no gaps).
CREATE TABLE spool_progress (
    spool_id    TEXT PRIMARY KEY,
    segment     BIGINT NOT NULL,
    byte_offset BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
