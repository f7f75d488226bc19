-- How far the disk spool (`serve --spool-dir`) is stored, written in the
-- same transaction as the events it covers.
CREATE TABLE spool_progress (
    spool_id    TEXT PRIMARY KEY,
    segment     INTEGER NOT NULL,
    byte_offset INTEGER NOT NULL,
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
