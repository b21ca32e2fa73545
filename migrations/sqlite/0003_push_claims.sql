-- Claiming push jobs (the same model as migrations/postgres). A worker leases due jobs (not
-- finished, next_attempt_at <= now) by moving next_attempt_at to the end of its lease and
-- counting the attempt; a job whose lease runs out is due again. A job is finished once sent
-- (sent_at = finished_at) or given up (finished_at set, sent_at NULL, last_error says why);
-- finished jobs are never claimed and are pruned by finished_at.

ALTER TABLE push_jobs ADD COLUMN finished_at INTEGER;
ALTER TABLE push_jobs ADD COLUMN last_error TEXT;

UPDATE push_jobs SET finished_at = sent_at WHERE sent_at IS NOT NULL;

-- Claims read this index in order (due time, then id) and stop after `limit` rows.
DROP INDEX push_jobs_due;
CREATE INDEX push_jobs_due ON push_jobs (next_attempt_at, id) WHERE finished_at IS NULL;
CREATE INDEX push_jobs_finished ON push_jobs (finished_at) WHERE finished_at IS NOT NULL;
