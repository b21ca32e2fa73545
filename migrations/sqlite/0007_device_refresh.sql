-- When each device was last registered or refreshed (registered again with the same token):
-- at most `--max-devices-per-user` devices are kept per user, and registering one more
-- replaces the one with the oldest refreshed_at.

ALTER TABLE devices ADD COLUMN refreshed_at INTEGER NOT NULL DEFAULT 0;
UPDATE devices SET refreshed_at = created_at;
