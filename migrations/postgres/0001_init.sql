-- Conversations, members and messages (the same model as migrations/sqlite). Timestamps are
-- milliseconds since the Unix epoch (BIGINT), as `core::time::Timestamp` holds them;
-- metadata and attachments are `json` (kept as given, unlike `jsonb`). Ids compare bytewise
-- (COLLATE "C"), like SQLite, so cursors and orderings agree across backends.

CREATE TABLE conversations (
    id              TEXT COLLATE "C" PRIMARY KEY,
    type            TEXT NOT NULL CHECK (type IN ('direct', 'group')),
    name            TEXT,
    context         TEXT,
    metadata        JSON NOT NULL DEFAULT '{}',
    -- Pair of users + context of a direct conversation; NULL for groups.
    direct_key      TEXT COLLATE "C" UNIQUE,
    -- Bumped by every append while it holds this row's lock: the lock serializes appends
    -- to a conversation across nodes, so seqs are gap-free.
    last_seq        BIGINT NOT NULL DEFAULT 0,
    last_message_at BIGINT,
    -- Sort key of conversation lists: last_message_at, else created_at.
    activity_at     BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE TABLE members (
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    user_id         TEXT COLLATE "C" NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at       BIGINT NOT NULL,
    last_read_seq   BIGINT NOT NULL DEFAULT 0,
    -- Messages after last_read_seq not sent by this member and not deleted; maintained on
    -- send, read and delete so no read ever has to count them.
    unread_count    BIGINT NOT NULL DEFAULT 0,
    notifications   BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (conversation_id, user_id)
);

CREATE INDEX members_by_user ON members (user_id);

CREATE TABLE messages (
    id              TEXT COLLATE "C" PRIMARY KEY,
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    seq             BIGINT NOT NULL,
    sender_id       TEXT COLLATE "C" NOT NULL,
    type            TEXT NOT NULL,
    content         TEXT,
    client_id       TEXT COLLATE "C",
    reply_to_id     TEXT COLLATE "C",
    attachments     JSON NOT NULL DEFAULT '[]',
    metadata        JSON NOT NULL DEFAULT '{}',
    created_at      BIGINT NOT NULL,
    edited_at       BIGINT,
    deleted_at      BIGINT,
    UNIQUE (conversation_id, seq)
);

-- Idempotency key; partial, so messages without one cost no index write.
CREATE UNIQUE INDEX messages_client_id ON messages (conversation_id, sender_id, client_id)
    WHERE client_id IS NOT NULL;
