-- Agent keys live in the store (issue: enrollment). Every key that a
-- collector accepts on 1514 is a row here: imported from `--keys FILE`
-- (origin 'file'), made by enrollment on 1515 ('enrollment') or by
-- `ossec-collector agents add` ('cli'). A removed agent keeps its row with
-- `removed_at` set, so that its ID is never handed out again.
--
-- `rev` grows with every change (insert, re-key, removal). Collectors poll
-- `WHERE rev > last_seen_rev` every second; writers take
-- `LOCK TABLE agent_keys IN SHARE ROW EXCLUSIVE MODE` and use max(rev)+1, so
-- revisions become visible in the order they were given out.
CREATE TABLE agent_keys (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT        NOT NULL,
    ip          TEXT        NOT NULL,          -- 'any', an address or address/prefix
    key         TEXT        NOT NULL,          -- the client.keys key field, verbatim
    groups      TEXT        NOT NULL DEFAULT '', -- comma-separated (enrollment G:)
    origin      TEXT        NOT NULL CHECK (origin IN ('file', 'enrollment', 'cli')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    removed_at  TIMESTAMPTZ,
    rev         BIGINT      NOT NULL
);
CREATE INDEX agent_keys_rev ON agent_keys (rev);
CREATE INDEX agent_keys_name ON agent_keys (name) WHERE removed_at IS NULL;
