-- Per-conversation: whether pushes for it may show message text (`private_preview`: never).
-- Per-user: push notifications on or off altogether, and whether a mention still notifies
-- in a muted conversation. A user without a row has the defaults (on, on).

ALTER TABLE conversations ADD COLUMN private_preview BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE notification_settings (
    user_id             TEXT    PRIMARY KEY,
    enabled             BOOLEAN NOT NULL,
    mentions_when_muted BOOLEAN NOT NULL
);
