-- The push outbox: one row per (offline recipient, message), sent by a worker.
CREATE TABLE push_jobs (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    sent_at         INTEGER,
    UNIQUE (user_id, message_id)
);

CREATE INDEX push_jobs_due ON push_jobs (next_attempt_at) WHERE sent_at IS NULL;
