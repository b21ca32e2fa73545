-- A message's version: 1 when it is sent, one more with every edit or delete. Realtime events
-- of one message can arrive out of order (an edit published after a delete that committed
-- later); clients keep the state with the highest version.

ALTER TABLE messages ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
