-- Reactions, threads, pins and mentions (issue 19), and the change counter that lets a client
-- that was away learn what changed in messages it already holds.
--
-- A conversation's `last_revision` counts every change to one of its messages after it was
-- sent (edit, delete, reaction, pin, a thread reply changing its root); the changed message
-- takes the new value as its `revision` (0: never changed). Both are written in the change's
-- transaction, so per conversation revisions are gap-free and in commit order.
--
-- The message row carries what every recipient sees (the same bytes for all): reaction
-- counts and the newest reactions, the thread summary of a root, the pin, the mentions.

ALTER TABLE conversations ADD COLUMN last_revision BIGINT NOT NULL DEFAULT 0;

ALTER TABLE messages ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
-- The root of the thread this message replies in (a root has none).
ALTER TABLE messages ADD COLUMN thread_id TEXT COLLATE "C";
-- A thread reply also shown in the conversation's timeline (and counted as unread).
ALTER TABLE messages ADD COLUMN also_in_conversation BOOLEAN NOT NULL DEFAULT FALSE;
-- Thread summary of a root: replies (not deleted), the newest reply's time, and at most
-- ten participants (JSON array of user ids: the root's author, then repliers by first reply).
ALTER TABLE messages ADD COLUMN reply_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN last_reply_at BIGINT;
ALTER TABLE messages ADD COLUMN thread_participants JSON NOT NULL DEFAULT '[]';
-- Mentioned members (JSON array of user ids) and whether it mentions everyone.
ALTER TABLE messages ADD COLUMN mentions JSON NOT NULL DEFAULT '[]';
ALTER TABLE messages ADD COLUMN mentions_all BOOLEAN NOT NULL DEFAULT FALSE;
-- {"👍": 3, …} and the newest ten [{"user_id", "emoji"}, …], kept with every reaction change.
ALTER TABLE messages ADD COLUMN reaction_counts JSON NOT NULL DEFAULT '{}';
ALTER TABLE messages ADD COLUMN latest_reactions JSON NOT NULL DEFAULT '[]';
ALTER TABLE messages ADD COLUMN pinned_at BIGINT;
ALTER TABLE messages ADD COLUMN pinned_by TEXT COLLATE "C";

CREATE INDEX messages_by_thread ON messages (thread_id, seq) WHERE thread_id IS NOT NULL;
CREATE INDEX messages_by_revision ON messages (conversation_id, revision) WHERE revision > 0;
CREATE INDEX messages_pinned ON messages (conversation_id, pinned_at) WHERE pinned_at IS NOT NULL;

-- One row per (message, user, emoji).
CREATE TABLE reactions (
    message_id TEXT COLLATE "C" NOT NULL,
    user_id    TEXT COLLATE "C" NOT NULL,
    emoji      TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
);

CREATE INDEX reactions_by_time ON reactions (message_id, created_at, user_id, emoji);

-- Who follows a thread and is notified of its replies: the root's author, every replier,
-- every user a reply mentioned.
CREATE TABLE thread_followers (
    root_id TEXT COLLATE "C" NOT NULL,
    user_id TEXT COLLATE "C" NOT NULL,
    since   BIGINT NOT NULL,
    PRIMARY KEY (root_id, user_id)
);

-- Unread mentions: one row per mention of a member (not deleted messages only); those after
-- the member's read marker are their `unread_mentions`.
CREATE TABLE mentions (
    user_id         TEXT COLLATE "C" NOT NULL,
    conversation_id TEXT COLLATE "C" NOT NULL,
    seq             BIGINT NOT NULL,
    PRIMARY KEY (user_id, conversation_id, seq)
);

CREATE INDEX mentions_by_message ON mentions (conversation_id, seq);

-- The notification log keeps what kind each notification is: a new message, a mention, or a
-- reaction to the user's message (with its emoji).
ALTER TABLE notifications ADD COLUMN type TEXT NOT NULL DEFAULT 'message';
ALTER TABLE notifications ADD COLUMN emoji TEXT;
