-- Message search (GET /api/search): an FTS5 index of the text of non-deleted messages with
-- the trigram tokenizer, so any substring of three or more characters is found, whatever the
-- language (Korean words with particles attached: 검색을 is found by 검색 + one more
-- syllable, and shorter queries are matched with LIKE). Case-insensitive.
-- Contentless-delete: the index keeps no copy of the text; its rowid is the message row's
-- rowid (messages are never deleted, and chatd never runs VACUUM, which could renumber them;
-- after a manual VACUUM run INSERT INTO messages_search(messages_search) VALUES ('delete-all')
-- and the INSERT … SELECT below again).
-- Appends index their text themselves, in the writer's transaction (store/sqlite/appends.rs):
-- an insert trigger would run inside a statement savepoint, at whose release FTS5 flushes its
-- pending terms — one index segment per message, which cost ~90 µs per append instead of ~15.
-- A trigger keeps edits (new text replaces old) and deletes (content set to NULL) in step.

CREATE VIRTUAL TABLE messages_search USING fts5(
    content,
    content = '',
    contentless_delete = 1,
    tokenize = 'trigram'
);

INSERT INTO messages_search (rowid, content)
    SELECT rowid, content FROM messages WHERE content IS NOT NULL AND deleted_at IS NULL;

CREATE TRIGGER messages_search_update AFTER UPDATE OF content, deleted_at ON messages
BEGIN
    DELETE FROM messages_search WHERE rowid = old.rowid;
    INSERT INTO messages_search (rowid, content)
        SELECT new.rowid, new.content WHERE new.content IS NOT NULL AND new.deleted_at IS NULL;
END;

-- Newest-first scans of one conversation (the short-query fallback, filters by time).
CREATE INDEX messages_by_time ON messages (conversation_id, created_at);
