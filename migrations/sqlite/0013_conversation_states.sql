-- Conversation states (issue 20): a conversation's status — active, archived (read-only for
-- everyone) or blocked (closed by the platform, read-only, with a reason) — and, per member,
-- an archive flag (hidden from the default list until a new message, unless muted) and the
-- time a mute ends (notifications come back on then; NULL: muted until turned back on).

ALTER TABLE conversations ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'archived', 'blocked'));
ALTER TABLE conversations ADD COLUMN status_reason TEXT;

ALTER TABLE members ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN muted_until INTEGER;

CREATE INDEX members_mute_ends ON members (muted_until) WHERE muted_until IS NOT NULL;
