-- `events.data`: the message's structured fields as JSON text (the parsed
-- JSON payload, Windows eventchannel fields or syslog header fields; see
-- docs/sql.md), NULL when it has none. Query with json_extract(), e.g.
-- json_extract(data, '$.win.system.eventID'). A nullable column without a
-- default: existing rows are not rewritten.
ALTER TABLE events ADD COLUMN data TEXT;
