-- Send failed jobs back to the queue (operator re-drive), resetting their failure budget.
-- The token is cleared (a late report from the last lease is stale) and any expiry a record
-- written by an older version carried is removed (records are trimmed by housekeeping now).
-- KEYS: 1 failed, 2 queued, 3 notify, then one job record key per id, in order
-- ARGV: 1 notify cap, then ids
-- Returns: the ids that were requeued.
local done = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = KEYS[2 + i]
  local f = fields(key, 'status')
  if f and f[1] == 'failed' then
    redis.call('ZREM', KEYS[1], id)
    redis.call('PERSIST', key)
    redis.call('HSET', key, 'status', 'queued', 'failures', 0, 'lost', 0, 'token', '',
      'applied', '')
    redis.call('HDEL', key, 'finished_at')
    done[#done + 1] = id
  end
end
each_chunk(done, function(...) redis.call('RPUSH', KEYS[2], ...) end)
if #done > 0 then wake(KEYS[3], tonumber(ARGV[1])) end
return done
