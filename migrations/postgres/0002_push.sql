-- Devices that receive push notifications, and the push outbox.

CREATE TABLE devices (
    id         TEXT COLLATE "C" PRIMARY KEY,
    user_id    TEXT COLLATE "C" NOT NULL,
    platform   TEXT NOT NULL CHECK (platform IN ('fcm', 'apns', 'webpush', 'webhook')),
    token      TEXT COLLATE "C" NOT NULL,
    endpoint   TEXT,
    keys       JSON,
    created_at BIGINT NOT NULL,
    UNIQUE (user_id, platform, token)
);

-- One row per (offline recipient with a device, message), sent by a worker; workers on any
-- node claim due rows with FOR UPDATE SKIP LOCKED. Both indexes grow at their end
-- (time-ordered ids, increasing due times), so inserts stay cheap.
CREATE TABLE push_jobs (
    id              TEXT COLLATE "C" PRIMARY KEY,
    user_id         TEXT COLLATE "C" NOT NULL,
    conversation_id TEXT COLLATE "C" NOT NULL,
    message_id      TEXT COLLATE "C" NOT NULL,
    seq             BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    sent_at         BIGINT
);

CREATE INDEX push_jobs_due ON push_jobs (next_attempt_at) WHERE sent_at IS NULL;
