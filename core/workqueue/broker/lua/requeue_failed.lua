-- Send failed jobs back to the queue (operator re-drive), resetting their failure budget.
-- KEYS: 1 failed, 2 queued, 3 notify
-- ARGV: 1 job key prefix, then ids
-- Returns: the ids that were requeued.
local jobp = ARGV[1]
local done = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = jobp .. id
  if redis.call('HGET', key, 'status') == 'failed' then
    redis.call('ZREM', KEYS[1], id)
    redis.call('PERSIST', key)
    redis.call('HSET', key, 'status', 'queued', 'failures', 0, 'lost', 0, 'token', '')
    redis.call('HDEL', key, 'finished_at')
    redis.call('RPUSH', KEYS[2], id)
    done[#done + 1] = id
  end
end
if #done > 0 then redis.call('RPUSH', KEYS[3], '1') end
return done
