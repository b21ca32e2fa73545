-- Message search (GET /api/search): a pg_trgm GIN index on the text, which serves
-- `content ILIKE '%word%'` for words of three or more characters in any language, provided
-- the database's LC_CTYPE classifies the letters (a UTF-8 one; with LC_CTYPE=C Korean yields
-- no trigrams and such searches scan; chatd warns at start, see docs/protocol.md).
-- The extension lives in `public` (so dropping a chatd schema never drops it) and is created
-- once per database: nodes migrating different schemas at once take turns on a lock.

SELECT pg_advisory_xact_lock(hashtext('chatd pg_trgm'));
CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;

DO $$
DECLARE
    trgm_schema TEXT;
BEGIN
    SELECT n.nspname INTO trgm_schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'pg_trgm';
    EXECUTE format('CREATE INDEX messages_content_trgm ON messages USING gin (content %I.gin_trgm_ops) '
        'WHERE deleted_at IS NULL', trgm_schema);
END
$$;

-- Newest-first scans of one conversation (short queries, filters by time).
CREATE INDEX messages_by_time ON messages (conversation_id, created_at);
