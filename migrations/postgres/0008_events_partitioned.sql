-- `events` becomes a table partitioned by range on `received_at`, one
-- partition per UTC day (`events_YYYYMMDD`), plus `events_default` so that an
-- insert never fails for lack of a partition, and gains `data` (JSONB): the
-- parsed JSON payload, Windows eventchannel fields or syslog header fields
-- (docs/sql.md). The collector creates the daily partitions ahead and drops
-- those past `--retention-days` (crates/ossec-store/src/partitions.rs).
--
-- The upgrade keeps every row and rewrites none: the old table is renamed,
-- gets the new nullable column (a catalog change), loses its identity (the
-- ids continue from a plain sequence) and is attached as one partition,
-- `events_upto_YYYYMMDD`, that covers everything before the day after the
-- upgrade (rows dated later, from a wrong clock, are moved out of it and
-- written back through the new table). Attaching reads the table once to check
-- the bound and builds the one index it lacks (the partitioned primary key
-- must hold `received_at`); its other indexes are the same as the new
-- table's and are reused as they are. An empty old table is simply replaced.

DO $$
DECLARE
    has_rows boolean;
    upto     date;
    next_id  bigint;
    legacy   text;
    seq      text;
BEGIN
    SELECT EXISTS (SELECT 1 FROM events) INTO has_rows;
    seq := pg_get_serial_sequence('events', 'id');
    next_id := 1;
    IF seq IS NOT NULL THEN
        EXECUTE format('SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM %s', seq)
            INTO next_id;
    END IF;
    SELECT greatest(next_id, coalesce(max(id) + 1, 1)) INTO next_id FROM events;

    IF NOT has_rows THEN
        DROP TABLE events;
    ELSE
        -- The old table covers everything before tomorrow (UTC). Rows of a
        -- later day (a clock that was wrong) leave it, so that the bound
        -- is never far in the future; they are written back through the
        -- new table below, into their day partition or events_default.
        upto := (now() AT TIME ZONE 'UTC')::date + 1;
        legacy := 'events_upto_' || to_char(upto, 'YYYYMMDD');
        CREATE TEMP TABLE events_future_0008 ON COMMIT DROP AS
            SELECT * FROM events WHERE received_at >= (upto::text || ' 00:00:00+00')::timestamptz;
        DELETE FROM events WHERE received_at >= (upto::text || ' 00:00:00+00')::timestamptz;
        ALTER TABLE events RENAME TO events_unpartitioned_0008;
        EXECUTE format('ALTER INDEX events_received_at_brin RENAME TO %I', legacy || '_received_at_brin');
        EXECUTE format('ALTER INDEX events_agent_time RENAME TO %I', legacy || '_agent_time');
        -- The partitioned primary key, (id, received_at), replaces it:
        -- ATTACH builds its index on this table.
        ALTER TABLE events_unpartitioned_0008 DROP CONSTRAINT events_pkey;
        ALTER TABLE events_unpartitioned_0008 ALTER COLUMN id DROP IDENTITY;
        ALTER TABLE events_unpartitioned_0008 ADD COLUMN data JSONB;
        EXECUTE format('ALTER TABLE events_unpartitioned_0008 RENAME TO %I', legacy);
        -- Read once by ATTACH below instead of once for the constraint and
        -- once more for the partition bound.
        PERFORM set_config('ossec.legacy_partition', legacy, true);
        PERFORM set_config('ossec.legacy_upto', upto::text, true);
    END IF;

    EXECUTE format('CREATE SEQUENCE events_id_seq AS bigint START WITH %s', next_id);
END
$$;

CREATE TABLE events (
    id             BIGINT      NOT NULL DEFAULT nextval('events_id_seq'),
    received_at    TIMESTAMPTZ NOT NULL,          -- UTC, microseconds
    agent_id       TEXT COLLATE "C" NOT NULL,
    agent_name     TEXT        NOT NULL,
    source_ip      TEXT        NOT NULL,
    transport      TEXT        NOT NULL,          -- 'udp' | 'tcp'
    queue          TEXT        NOT NULL,          -- the queue character, e.g. '1'
    queue_name     TEXT        NOT NULL,          -- e.g. 'localfile', 'syscheck'
    location       TEXT        NOT NULL,          -- unescaped
    message        TEXT        NOT NULL,
    message_raw    BYTEA,
    location_raw   BYTEA,
    global_counter BIGINT      NOT NULL,
    local_counter  INTEGER     NOT NULL,
    -- The message's structured fields (docs/sql.md), NULL when it has none.
    data           JSONB,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
ALTER SEQUENCE events_id_seq OWNED BY events.id;

CREATE INDEX events_received_at_brin ON events USING BRIN (received_at);
CREATE INDEX events_agent_time ON events (agent_id, received_at);

-- As in 0002: lz4 where the server has it (new partitions inherit it).
DO $$
BEGIN
    ALTER TABLE events ALTER COLUMN message SET COMPRESSION lz4;
    ALTER TABLE events ALTER COLUMN message_raw SET COMPRESSION lz4;
    ALTER TABLE events ALTER COLUMN data SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 column compression not available (%), keeping the default', SQLERRM;
END
$$;

DO $$
DECLARE
    legacy text := current_setting('ossec.legacy_partition', true);
    upto   date;
    first  date := (now() AT TIME ZONE 'UTC')::date;
    d      date;
    g      record;
BEGIN
    IF legacy IS NOT NULL AND legacy <> '' THEN
        upto := current_setting('ossec.legacy_upto')::date;
        BEGIN
            EXECUTE format('ALTER TABLE %I ALTER COLUMN data SET COMPRESSION lz4', legacy);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
        EXECUTE format(
            'ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)',
            legacy, upto::text || ' 00:00:00+00');
        first := greatest(first, upto);
        -- Privileges granted on the old table (a read-only role of the
        -- SOC, say) are granted on the new one too.
        FOR g IN
            SELECT a.privilege_type, a.is_grantable,
                   CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS who
            FROM pg_class c, aclexplode(c.relacl) a
            WHERE c.oid = legacy::regclass AND a.grantee <> c.relowner
        LOOP
            EXECUTE format('GRANT %s ON events TO %s%s', g.privilege_type, g.who,
                           CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END IF;
    CREATE TABLE events_default PARTITION OF events DEFAULT;
    -- Today and the next two days; the collector keeps creating them ahead.
    FOR i IN 0..2 LOOP
        d := greatest((now() AT TIME ZONE 'UTC')::date + i, first);
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
            'events_' || to_char(d, 'YYYYMMDD'),
            d::text || ' 00:00:00+00', (d + 1)::text || ' 00:00:00+00');
    END LOOP;
    IF legacy IS NOT NULL AND legacy <> '' THEN
        INSERT INTO events (id, received_at, agent_id, agent_name, source_ip, transport, queue,
                            queue_name, location, message, message_raw, location_raw,
                            global_counter, local_counter)
        SELECT id, received_at, agent_id, agent_name, source_ip, transport, queue,
               queue_name, location, message, message_raw, location_raw,
               global_counter, local_counter
        FROM events_future_0008;
    END IF;
END
$$;
