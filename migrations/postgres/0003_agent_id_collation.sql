-- Agent IDs compared byte by byte (COLLATE "C"). Every event inserts into the
-- (agent_id, received_at) index, and under a linguistic collation (the
-- official image's en_US.utf8, even C.UTF-8 on PostgreSQL 15) each comparison
-- goes through strcoll(): measured here, about 1 µs of PostgreSQL CPU per row
-- of ~10 (docs/benchmarks.md). OSSEC and Wazuh agent IDs are ASCII digits,
-- whose byte order and linguistic order agree, so for them no query's result
-- changes. `agents.id` and `counter_resets.agent_id` get the same collation,
-- so that agent IDs compare alike everywhere (joins, ORDER BY, UNION).
-- Changing only the collation does not rewrite the tables; PostgreSQL
-- rebuilds the indexes on these columns once.
ALTER TABLE events ALTER COLUMN agent_id TYPE TEXT COLLATE "C";
ALTER TABLE agents ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE counter_resets ALTER COLUMN agent_id TYPE TEXT COLLATE "C";
