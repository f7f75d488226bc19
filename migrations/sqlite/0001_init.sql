-- ossec-collector schema, SQLite dialect. Same tables and columns as
-- migrations/postgres/. Timestamps are TEXT 'YYYY-MM-DD HH:MM:SS.ffffff' in
-- UTC, which sorts correctly and works with SQLite's date functions
-- (e.g. received_at >= datetime('now', '-1 hour')).

CREATE TABLE events (
    id             INTEGER PRIMARY KEY,
    received_at    TEXT    NOT NULL,
    agent_id       TEXT    NOT NULL,
    agent_name     TEXT    NOT NULL,
    source_ip      TEXT    NOT NULL,
    transport      TEXT    NOT NULL,
    queue          TEXT    NOT NULL,
    queue_name     TEXT    NOT NULL,
    location       TEXT    NOT NULL,
    message        TEXT    NOT NULL,
    message_raw    BLOB,
    location_raw   BLOB,
    global_counter INTEGER NOT NULL,
    local_counter  INTEGER NOT NULL
);
CREATE INDEX events_received_at ON events (received_at);
CREATE INDEX events_agent_time ON events (agent_id, received_at);

CREATE TABLE agents (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    registered_ip   TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'never_connected'
                    CHECK (status IN ('never_connected', 'pending', 'active', 'disconnected')),
    version         TEXT,
    os_name         TEXT,
    os_platform     TEXT,
    os_version      TEXT,
    arch            TEXT,
    hostname        TEXT,
    uname           TEXT,
    config_sum      TEXT,
    merged_sum      TEXT,
    labels          TEXT,   -- JSON
    last_ip         TEXT,
    transport       TEXT,
    cipher          TEXT,
    aes_iv          TEXT,
    first_seen      TEXT,
    last_seen       TEXT,
    last_keepalive  TEXT,
    last_control    TEXT,
    in_keys         INTEGER NOT NULL DEFAULT 1,
    recv_global     INTEGER,
    recv_local      INTEGER
);

CREATE TABLE collector_state (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

CREATE TABLE counter_resets (
    agent_id     TEXT PRIMARY KEY,
    requested_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
