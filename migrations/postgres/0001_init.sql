-- ossec-collector schema, PostgreSQL dialect. The SQLite dialect in
-- migrations/sqlite/ has the same tables and columns; docs/sql.md documents both.

-- One row per event message (`Q:location:message`) received from an agent.
CREATE TABLE events (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at    TIMESTAMPTZ NOT NULL,          -- UTC, microseconds
    agent_id       TEXT        NOT NULL,
    agent_name     TEXT        NOT NULL,
    source_ip      TEXT        NOT NULL,
    transport      TEXT        NOT NULL,          -- 'udp' | 'tcp'
    queue          TEXT        NOT NULL,          -- the queue character, e.g. '1'
    queue_name     TEXT        NOT NULL,          -- e.g. 'localfile', 'syscheck'
    location       TEXT        NOT NULL,          -- unescaped
    message        TEXT        NOT NULL,
    -- Exact bytes, kept only when `message` / `location` could not hold them
    -- (invalid UTF-8 or NUL): then the text column has U+FFFD in their place.
    message_raw    BYTEA,
    location_raw   BYTEA,
    global_counter BIGINT      NOT NULL,
    local_counter  INTEGER     NOT NULL
);
-- "Everything in a time range": BRIN fits an append-mostly timestamp and
-- costs almost nothing to maintain at high ingest rates.
CREATE INDEX events_received_at_brin ON events USING BRIN (received_at);
-- "One agent over a time range".
CREATE INDEX events_agent_time ON events (agent_id, received_at);

-- One row per agent of client.keys (kept after removal from the file).
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
    labels          JSONB,
    last_ip         TEXT,
    transport       TEXT,
    cipher          TEXT,
    aes_iv          TEXT,
    first_seen      TIMESTAMPTZ,
    last_seen       TIMESTAMPTZ,
    last_keepalive  TIMESTAMPTZ,
    last_control    TIMESTAMPTZ,
    in_keys         BOOLEAN NOT NULL DEFAULT TRUE,
    -- Counters of the last accepted message (replay protection, PROTOCOL.md §3.5).
    recv_global     BIGINT,
    recv_local      BIGINT
);

-- Collector-wide state: the manager's sender counter (PROTOCOL.md §3.4).
CREATE TABLE collector_state (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Requests made by `ossec-collector agents reset-counters ID`; a running
-- collector applies and deletes them within a second or two.
CREATE TABLE counter_resets (
    agent_id     TEXT PRIMARY KEY,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
