-- chatd's presence directory in Redis: one script, the operation in ARGV[1], the key
-- prefix in ARGV[2], the calling node in ARGV[3]. Keys (all under the prefix):
--   nodes        ZSET  node -> expiry (ms); a node is live until its expiry
--   pn:<user>    SET   nodes where the user has a connection
--   pf:<user>    SET   "<node> <conversation>" looked at by a connection on that node
--   nu:<node>    SET   users with a connection on the node (to clean up after it dies)
--   seen:<user>  STRING when the user's last connection closed (ms)
-- Time is Redis's own clock, so nodes with skewed clocks agree.
local op, prefix, node = ARGV[1], ARGV[2], ARGV[3]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local nodes = prefix .. ':nodes'

local function live(n)
  local expiry = redis.call('ZSCORE', nodes, n)
  return expiry ~= false and tonumber(expiry) > now
end

-- Removes dead nodes from the user's node set; returns how many live nodes other than
-- `except` remain.
local function live_nodes(user, except)
  local key = prefix .. ':pn:' .. user
  local count = 0
  for _, n in ipairs(redis.call('SMEMBERS', key)) do
    if not live(n) then
      redis.call('SREM', key, n)
    elseif n ~= except then
      count = count + 1
    end
  end
  return count
end

-- Removes the focus entries of `n` for the user.
local function drop_focus(user, n)
  local key = prefix .. ':pf:' .. user
  local mine = n .. ' '
  for _, entry in ipairs(redis.call('SMEMBERS', key)) do
    if string.sub(entry, 1, #mine) == mine then
      redis.call('SREM', key, entry)
    end
  end
end

if op == 'join' then
  -- ARGV[4] user. Returns 1 if the user had no live connection anywhere.
  local user = ARGV[4]
  local others = live_nodes(user, node)
  redis.call('SADD', prefix .. ':pn:' .. user, node)
  redis.call('SADD', prefix .. ':nu:' .. node, user)
  return others == 0 and 1 or 0
elseif op == 'leave' then
  -- ARGV[4] user, ARGV[5] how long to keep last-seen (ms). Returns the time if the user
  -- has no live connection left, else -1.
  local user = ARGV[4]
  redis.call('SREM', prefix .. ':pn:' .. user, node)
  redis.call('SREM', prefix .. ':nu:' .. node, user)
  drop_focus(user, node)
  if live_nodes(user, node) > 0 then
    return -1
  end
  redis.call('SET', prefix .. ':seen:' .. user, now, 'PX', ARGV[5])
  return now
elseif op == 'reach' then
  -- ARGV[4] conversation, ARGV[5..] users. Returns per user 2 focused, 1 online, 0 offline.
  local conversation = ' ' .. ARGV[4]
  local out = {}
  for i = 5, #ARGV do
    local user = ARGV[i]
    local reach = 0
    for _, entry in ipairs(redis.call('SMEMBERS', prefix .. ':pf:' .. user)) do
      local space = string.find(entry, ' ', 1, true)
      if space and string.sub(entry, space) == conversation and live(string.sub(entry, 1, space - 1)) then
        reach = 2
        break
      end
    end
    if reach == 0 then
      for _, n in ipairs(redis.call('SMEMBERS', prefix .. ':pn:' .. user)) do
        if live(n) then
          reach = 1
          break
        end
      end
    end
    out[#out + 1] = reach
  end
  return out
elseif op == 'info' then
  -- ARGV[4..] users. Returns per user: 1 if online, else the last-seen time or 0.
  local out = {}
  for i = 4, #ARGV do
    local user = ARGV[i]
    local online = false
    for _, n in ipairs(redis.call('SMEMBERS', prefix .. ':pn:' .. user)) do
      if live(n) then
        online = true
        break
      end
    end
    if online then
      out[#out + 1] = 1
    else
      out[#out + 1] = tonumber(redis.call('GET', prefix .. ':seen:' .. user) or '0')
    end
  end
  return out
elseif op == 'tick' then
  -- ARGV[4] time to live (ms), ARGV[5] how long to keep last-seen (ms). Renews this node,
  -- then retires every node past its expiry. Returns {renewed_existing, user, last_seen,
  -- user, last_seen, ...}: the users who went offline with a retired node.
  local ttl = tonumber(ARGV[4])
  local known = redis.call('ZSCORE', nodes, node) ~= false
  redis.call('ZADD', nodes, now + ttl, node)
  local out = { known and 1 or 0 }
  for _, dead in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', now)) do
    local last_heard = tonumber(redis.call('ZSCORE', nodes, dead)) - ttl
    redis.call('ZREM', nodes, dead)
    local index = prefix .. ':nu:' .. dead
    for _, user in ipairs(redis.call('SMEMBERS', index)) do
      drop_focus(user, dead)
      local key = prefix .. ':pn:' .. user
      if redis.call('SREM', key, dead) == 1 and redis.call('SCARD', key) == 0 then
        redis.call('SET', prefix .. ':seen:' .. user, last_heard, 'PX', ARGV[5])
        out[#out + 1] = user
        out[#out + 1] = last_heard
      end
    end
    redis.call('DEL', index)
  end
  return out
elseif op == 'restore' then
  -- ARGV[4] user, ARGV[5..] conversations its connections here look at: puts back what
  -- this node holds after Redis lost it.
  local user = ARGV[4]
  redis.call('SADD', prefix .. ':pn:' .. user, node)
  redis.call('SADD', prefix .. ':nu:' .. node, user)
  for i = 5, #ARGV do
    redis.call('SADD', prefix .. ':pf:' .. user, node .. ' ' .. ARGV[i])
  end
  return 0
elseif op == 'focus' then
  -- ARGV[4] user, ARGV[5] conversation, ARGV[6] '1' looked at / '0' no longer.
  local key = prefix .. ':pf:' .. ARGV[4]
  local entry = node .. ' ' .. ARGV[5]
  if ARGV[6] == '1' then
    redis.call('SADD', key, entry)
  else
    redis.call('SREM', key, entry)
  end
  return 0
end
return redis.error_reply('unknown presence operation ' .. tostring(op))
