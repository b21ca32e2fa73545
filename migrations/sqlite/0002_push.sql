-- Devices that receive push notifications, and the push outbox.

CREATE TABLE devices (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    platform   TEXT NOT NULL CHECK (platform IN ('fcm', 'apns', 'webpush', 'webhook')),
    token      TEXT NOT NULL,
    endpoint   TEXT,
    keys       TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (user_id, platform, token)
);

-- One row per (offline recipient with a device, message), sent by a worker. Both indexes
-- grow at their end (time-ordered ids, increasing due times), so inserts stay cheap.
CREATE TABLE push_jobs (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    sent_at         INTEGER
);

CREATE INDEX push_jobs_due ON push_jobs (next_attempt_at) WHERE sent_at IS NULL;
