-- Apply a batch of outcomes reported by one worker for jobs of one queue, atomically.
-- Each op is fenced: it applies only while the job is active under the op's token.
-- KEYS: 1 active, 2 queued, 3 retry, 4 completed, 5 failed, 6 stats, 7 notify
-- ARGV: 1 job key prefix, 2 completed retention ms, 3 failed retention ms, 4 notify cap,
--       then 5 fields per op: op ('ack'|'fail'|'release'), id, token, data, delay_ms
--       ack: data = result JSON; fail: data = error text, delay_ms = retry delay or -1 for
--       "no retry"; release: hand back unfinished (graceful stop), not counted as a failure.
-- Returns: {now_ms, then per op: outcome} with outcome one of
--   completed | retrying | failed | released | stale (refused: token no longer holds) |
--   duplicate (already applied with this token) | missing (no such job)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local jobp, done_ttl, failed_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local notify_cap = tonumber(ARGV[4])
local out = {now}
local released = 0
local any_done, any_failed = false, false
for i = 5, #ARGV, 5 do
  local op, id, token, data, delay = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    tonumber(ARGV[i + 4])
  local key = jobp .. id
  -- pcall: a key that is no longer a hash must not abort the whole batch
  local f = redis.pcall('HMGET', key, 'token', 'status', 'type', 'failures', 'retries')
  local outcome
  if f.err or not f[3] then
    outcome = 'missing'
  elseif f[1] ~= token then
    outcome = 'stale'
  elseif f[2] ~= 'active' then
    outcome = 'duplicate'
  else
    redis.call('ZREM', KEYS[1], id)
    local typ = f[3]
    if op == 'ack' then
      redis.call('HINCRBY', KEYS[6], 'done', 1)
      redis.call('HINCRBY', KEYS[6], 'done|' .. typ, 1)
      if done_ttl > 0 then
        redis.call('HSET', key, 'status', 'completed', 'finished_at', now, 'result', data)
        redis.call('HDEL', key, 'error')
        redis.call('ZADD', KEYS[4], now, id)
        redis.call('PEXPIRE', key, done_ttl)
      else
        redis.call('DEL', key)
      end
      any_done = true
      outcome = 'completed'
    elseif op == 'fail' then
      -- A counter that is not an integer (a tampered record) restarts from 0, never an error
      -- that would refuse the whole batch.
      local failures = (tonumber(redis.call('HGET', key, 'failures')) or 0) + 1
      redis.call('HSET', key, 'failures', failures)
      redis.call('HINCRBY', KEYS[6], 'failed_attempts', 1)
      redis.call('HINCRBY', KEYS[6], 'failed_attempts|' .. typ, 1)
      if delay >= 0 and failures <= (tonumber(f[5] or '0') or 0) then
        redis.call('HSET', key, 'status', 'retrying', 'error', data, 'run_at', now + delay)
        redis.call('ZADD', KEYS[3], now + delay, id)
        redis.call('HINCRBY', KEYS[6], 'retried', 1)
        outcome = 'retrying'
      else
        redis.call('HSET', key, 'status', 'failed', 'error', data, 'finished_at', now)
        redis.call('ZADD', KEYS[5], now, id)
        if failed_ttl > 0 then redis.call('PEXPIRE', key, failed_ttl) end
        redis.call('HINCRBY', KEYS[6], 'failed', 1)
        redis.call('HINCRBY', KEYS[6], 'failed|' .. typ, 1)
        any_failed = true
        outcome = 'failed'
      end
    else
      redis.call('HSET', key, 'status', 'queued', 'token', '')
      redis.call('LPUSH', KEYS[2], id)
      released = released + 1
      outcome = 'released'
    end
  end
  out[#out + 1] = outcome
end
-- Retention: finished-job indexes drop entries whose records have expired.
if any_done and done_ttl > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - done_ttl)
end
if any_failed and failed_ttl > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - failed_ttl)
end
if released > 0 and redis.call('LLEN', KEYS[7]) < notify_cap then
  redis.call('RPUSH', KEYS[7], '1')
end
return out
