-- The per-user notification log behind `GET /api/notifications/stream` (SSE): every
-- `notification` event, kept for a bounded window so a stream can resume from
-- `Last-Event-ID`. Ids are per user, from 1, gap-free: the next one comes from
-- `UPDATE notification_counters … RETURNING`, whose row lock is held to commit, so the ids
-- of one user commit in order whichever node writes them.
-- The window: the newest N per user (trimmed on insert) and nothing older than the
-- configured age (pruned by housekeeping through notifications_created).

CREATE TABLE notification_counters (
    user_id TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL
);

CREATE TABLE notifications (
    user_id         TEXT   NOT NULL,
    id              BIGINT NOT NULL,
    conversation_id TEXT   NOT NULL,
    message_id      TEXT   NOT NULL,
    seq             BIGINT NOT NULL,
    sender_id       TEXT   NOT NULL,
    preview         TEXT,
    unread_count    BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (user_id, id)
);

CREATE INDEX notifications_created ON notifications (created_at);
