-- Operator disconnects (admin API): every connection a user opened before `at` is closed.
-- The bus carries the disconnect at once; every node also re-reads the recent rows here every
-- few seconds, so a disconnect whose bus message was lost still takes effect on every node.
-- One row per user (the latest disconnect); rows older than a day are pruned when one is written.

CREATE TABLE disconnects (
    user_id TEXT PRIMARY KEY,
    at      BIGINT NOT NULL
);

CREATE INDEX disconnects_by_at ON disconnects (at);
