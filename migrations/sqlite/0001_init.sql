-- Conversations, members and messages. Timestamps are milliseconds since the Unix epoch;
-- metadata and attachments are JSON text.

CREATE TABLE conversations (
    id              TEXT PRIMARY KEY,
    type            TEXT NOT NULL CHECK (type IN ('direct', 'group')),
    name            TEXT,
    context         TEXT,
    metadata        TEXT NOT NULL DEFAULT '{}',
    -- Pair of users + context of a direct conversation; NULL for groups.
    direct_key      TEXT UNIQUE,
    last_seq        INTEGER NOT NULL DEFAULT 0,
    last_message_at INTEGER,
    -- Sort key of conversation lists: last_message_at, else created_at.
    activity_at     INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);

CREATE TABLE members (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    user_id         TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at       INTEGER NOT NULL,
    last_read_seq   INTEGER NOT NULL DEFAULT 0,
    -- Messages after last_read_seq not sent by this member and not deleted; maintained on
    -- send, read and delete so no read ever has to count them.
    unread_count    INTEGER NOT NULL DEFAULT 0,
    notifications   INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (conversation_id, user_id)
) WITHOUT ROWID;

CREATE INDEX members_by_user ON members (user_id);

CREATE TABLE messages (
    id              TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    seq             INTEGER NOT NULL,
    sender_id       TEXT NOT NULL,
    type            TEXT NOT NULL,
    content         TEXT,
    client_id       TEXT,
    reply_to_id     TEXT,
    attachments     TEXT NOT NULL DEFAULT '[]',
    metadata        TEXT NOT NULL DEFAULT '{}',
    created_at      INTEGER NOT NULL,
    edited_at       INTEGER,
    deleted_at      INTEGER,
    UNIQUE (conversation_id, seq)
);

-- Idempotency key; partial, so messages without one cost no index write.
CREATE UNIQUE INDEX messages_client_id ON messages (conversation_id, sender_id, client_id)
    WHERE client_id IS NOT NULL;
