-- Apply a batch of outcomes reported by one worker for jobs of one queue, atomically.
-- Each op is fenced: it applies only while the job is active under the op's token.
-- KEYS: 1 active, 2 queued, 3 retry, 4 completed, 5 failed, 6 stats, 7 notify
-- ARGV: 1 job key prefix, 2 completed retention ms, 3 failed retention ms, 4 notify cap,
--       5 the ops as one MessagePack array of [op, id, token, data, delay_ms] (op 'ack' |
--       'fail' | 'release'); ack: data = result JSON; fail: data = error text, delay_ms =
--       retry delay or -1 for "no retry"; release: hand back unfinished (graceful stop), not
--       counted as a failure. One argument instead of five per op: cheap to send and parse.
-- Returns: {now_ms, then per op: outcome} with outcome one of
--   completed | retrying | failed | released | stale (refused: token no longer holds) |
--   duplicate (already applied with this token) | missing (no such job)
-- Cost per op: HMGET and HSET (plus PEXPIRE when finished); index updates and counters are
-- gathered and written once per batch.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local jobp, done_ttl, failed_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local notify_cap = tonumber(ARGV[4])
local ops = cmsgpack.unpack(ARGV[5])
local out = {now}
local released = 0
local finished = {}          -- ids leaving the active index
local done, failed = {}, {}  -- score, id pairs for the completed and failed indexes
local counters = {}          -- stats field -> increment
local function count(field)
  counters[field] = (counters[field] or 0) + 1
end
-- Variadic commands in chunks: unpack() of a huge table would overflow the Lua stack.
local function each_chunk(items, fn)
  for i = 1, #items, 1000 do
    fn(unpack(items, i, math.min(i + 999, #items)))
  end
end

for _, o in ipairs(ops) do
  local op, id, token, data, delay = o[1], o[2], tostring(o[3]), o[4], tonumber(o[5])
  local key = jobp .. id
  -- pcall: a key that is no longer a hash must not abort the whole batch
  local f = redis.pcall('HMGET', key, 'token', 'status', 'type', 'failures', 'retries', 'error')
  local outcome
  if f.err or not f[3] then
    outcome = 'missing'
  elseif f[1] ~= token then
    outcome = 'stale'
  elseif f[2] ~= 'active' then
    outcome = 'duplicate'
  else
    finished[#finished + 1] = id
    -- The script's first write frees memory: Redis at maxmemory (noeviction) refuses a
    -- script's memory-growing command only until the script has written, so outcomes are
    -- still applied while enqueues are refused (the batched ZREM below repeats it harmlessly).
    if #finished == 1 then redis.call('ZREM', KEYS[1], id) end
    local typ = f[3]
    if op == 'ack' then
      count('done')
      count('done|' .. typ)
      if done_ttl > 0 then
        redis.call('HSET', key, 'status', 'completed', 'finished_at', now, 'result', data)
        if f[6] then redis.call('HDEL', key, 'error') end
        done[#done + 1] = now
        done[#done + 1] = id
        redis.call('PEXPIRE', key, done_ttl)
      else
        redis.call('DEL', key)
      end
      outcome = 'completed'
    elseif op == 'fail' then
      -- A counter that is not an integer (a tampered record) restarts from 0, never an error
      -- that would refuse the whole batch.
      local failures = (tonumber(f[4]) or 0) + 1
      count('failed_attempts')
      count('failed_attempts|' .. typ)
      if delay >= 0 and failures <= (tonumber(f[5]) or 0) then
        redis.call('HSET', key, 'status', 'retrying', 'error', data, 'run_at', now + delay,
          'failures', failures)
        redis.call('ZADD', KEYS[3], now + delay, id)
        count('retried')
        outcome = 'retrying'
      else
        redis.call('HSET', key, 'status', 'failed', 'error', data, 'finished_at', now,
          'failures', failures)
        failed[#failed + 1] = now
        failed[#failed + 1] = id
        if failed_ttl > 0 then redis.call('PEXPIRE', key, failed_ttl) end
        count('failed')
        count('failed|' .. typ)
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

if #finished > 0 then
  each_chunk(finished, function(...) redis.call('ZREM', KEYS[1], ...) end)
end
if #done > 0 then
  each_chunk(done, function(...) redis.call('ZADD', KEYS[4], ...) end)
end
if #failed > 0 then
  each_chunk(failed, function(...) redis.call('ZADD', KEYS[5], ...) end)
end
for field, n in pairs(counters) do
  redis.call('HINCRBY', KEYS[6], field, n)
end
-- Retention: finished-job indexes drop entries whose records have expired.
if #done > 0 and done_ttl > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - done_ttl)
end
if #failed > 0 and failed_ttl > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - failed_ttl)
end
if released > 0 and redis.call('LLEN', KEYS[7]) < notify_cap then
  redis.call('RPUSH', KEYS[7], '1')
end
return out
