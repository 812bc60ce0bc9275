-- Send failed jobs back to the queue (operator re-drive), resetting their failure budget;
-- each to the end of its priority's list.
-- The token is cleared (a late report from the last lease is stale) and any expiry a record
-- written by an older version carried is removed (records are trimmed by housekeeping now).
-- KEYS: 1 failed, 2 queued, 3 notify, then one job record key per id, in order
-- ARGV: 1 notify cap, then ids
-- Returns: the ids that were requeued.
local done, groups = {}, {}  -- groups: ids per priority (prelude's group_add)
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = KEYS[2 + i]
  local f = fields(key, 'status', 'priority', 'uniq')
  if f and f[1] == 'failed' then
    redis.call('ZREM', KEYS[1], id)
    redis.call('PERSIST', key)
    redis.call('HSET', key, 'status', 'queued', 'failures', 0, 'lost', 0, 'token', '',
      'applied', '')
    redis.call('HDEL', key, 'finished_at')
    -- unfinished again: a unique job takes its key back unless another job holds it now
    if f[3] and f[3] ~= '' then redis.call('SET', f[3], id, 'NX') end
    group_add(groups, f[2], id)
    done[#done + 1] = id
  end
end
push_groups(KEYS[2], groups, false)
if #done > 0 then wake(KEYS[3], tonumber(ARGV[1])) end
return done
