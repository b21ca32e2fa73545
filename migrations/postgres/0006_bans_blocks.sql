-- Bans (admin API) and blocks between users.
-- bans: a banned user cannot connect or call anything; nodes keep the set in memory (loaded
-- at start, kept current through the bus), this table is the source of truth.
-- blocks: while either of two users blocks the other, their direct conversation refuses
-- messages and their presence is hidden from each other. The primary key answers "does A
-- block B" in both directions with two lookups; blocks_by_blocked serves the reverse side
-- of contact lists.

CREATE TABLE bans (
    user_id    TEXT PRIMARY KEY,
    reason     TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE blocks (
    blocker_id TEXT    NOT NULL,
    blocked_id TEXT    NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (blocker_id, blocked_id)
);

CREATE INDEX blocks_by_blocked ON blocks (blocked_id, blocker_id);
