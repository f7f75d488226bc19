-- Agent keys live in the store; see migrations/postgres/0004_agent_keys.sql.
-- Writers use BEGIN IMMEDIATE, so revisions are given out one at a time.
CREATE TABLE agent_keys (
    id          TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    ip          TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    groups      TEXT    NOT NULL DEFAULT '',
    origin      TEXT    NOT NULL CHECK (origin IN ('file', 'enrollment', 'cli')),
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
    removed_at  TEXT,
    rev         INTEGER NOT NULL
);
CREATE INDEX agent_keys_rev ON agent_keys (rev);
CREATE INDEX agent_keys_name ON agent_keys (name) WHERE removed_at IS NULL;
