-- Uploads (POST /api/uploads) and the attachments made from them. One row per upload:
--   pending   the client may upload to uploads/<id> until expires_at;
--   processed checked and processed into attachments/<attachment_id> (and thumbnails/<attachment_id>),
--             bound to message_id, a message that may not have committed (a send refused after
--             processing binds it again on its next try);
--   attached  its message committed (the housekeeping promotes processed rows);
--   gone      its objects are deleted; the row stays a day from created_at for the daily quota.
-- message_deleted_at: set when its message is deleted (the media go after the retention).
-- thumbnail: the thumbnail's MIME type, when there is one.
-- token_hash: SHA-256 (hex) of the local upload URL's token.

CREATE TABLE uploads (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    filename        TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    size            BIGINT NOT NULL,
    sha256          TEXT,
    token_hash      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attachment_id   TEXT UNIQUE,
    message_id      TEXT,
    attachment      TEXT,
    thumbnail       TEXT,
    inline          BOOLEAN NOT NULL DEFAULT false,
    message_deleted_at BIGINT
);

CREATE INDEX uploads_by_user ON uploads (user_id, created_at);
CREATE INDEX uploads_by_state ON uploads (state, expires_at);
CREATE INDEX uploads_by_message ON uploads (message_id);
CREATE INDEX uploads_by_deletion ON uploads (message_deleted_at) WHERE message_deleted_at IS NOT NULL;
