-- Large messages (over ~2 KB) are compressed when PostgreSQL moves them out
-- of line (TOAST). The default compressor, pglz, was the single largest cost
-- of ingesting events in the benchmark (docs/benchmarks.md); lz4 is several
-- times faster. PostgreSQL 14+ built with lz4 (Debian, the official images)
-- supports it; elsewhere the columns keep pglz.
DO $$
BEGIN
    ALTER TABLE events ALTER COLUMN message SET COMPRESSION lz4;
    ALTER TABLE events ALTER COLUMN message_raw SET COMPRESSION lz4;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'lz4 column compression not available (%), keeping the default', SQLERRM;
END
$$;
