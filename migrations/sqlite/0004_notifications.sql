-- The per-user notification log behind `GET /api/notifications/stream` (SSE): every
-- `notification` event, kept for a bounded window so a stream can resume from
-- `Last-Event-ID`. Ids are per user, from 1, gap-free: the next one comes from the user's
-- counter row, bumped in the same transaction as the insert (so ids commit in order).
-- The window: the newest N per user (trimmed on insert) and nothing older than the
-- configured age (pruned by housekeeping through notifications_created).

CREATE TABLE notification_counters (
    user_id TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE notifications (
    user_id         TEXT    NOT NULL,
    id              INTEGER NOT NULL,
    conversation_id TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    seq             INTEGER NOT NULL,
    sender_id       TEXT    NOT NULL,
    preview         TEXT,
    unread_count    INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (user_id, id)
) WITHOUT ROWID;

CREATE INDEX notifications_created ON notifications (created_at);
