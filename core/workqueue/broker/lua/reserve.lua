-- Reserve up to N jobs of one queue for one worker, after housekeeping, atomically:
-- 1. expired leases are recovered (requeued, or failed once lost too often);
-- 2. due scheduled and retrying jobs are promoted to queued;
-- 3. finished-job indexes drop the entries past their retention (records already expired),
--    so they shrink even when no further job finishes;
-- 4. up to N queued jobs become active with a lease (deadline on Redis's clock) and a new
--    fencing token.
-- KEYS: 1 queued, 2 scheduled, 3 retry, 4 active, 5 failed, 6 stats, 7 notify, 8 token,
--       9 completed
-- ARGV: 1 job key prefix, 2 count, 3 lease ms, 4 worker id, 5 max lost leases,
--       6 failed retention ms, 7 notify cap, 8 completed retention ms
-- Returns: {now_ms, next_wake_ms (-1 none), n_recovered, [id, outcome, type] * n_recovered,
--           [id, token, type, payload, attempts, retries, timeout, enqueued_at, failures, lost]*}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local jobp, count, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local worker, max_lost, failed_ttl = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local notify_cap = tonumber(ARGV[7])
local done_ttl = tonumber(ARGV[8])

local recovered = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[4], id)
  local key = jobp .. id
  local typ = redis.call('HGET', key, 'type')
  if not typ then
    redis.call('HINCRBY', KEYS[6], 'orphans', 1)
  else
    local lost = redis.call('HINCRBY', key, 'lost', 1)
    redis.call('HINCRBY', KEYS[6], 'lost_leases', 1)
    if lost >= max_lost then
      redis.call('HSET', key, 'status', 'failed', 'finished_at', now, 'token', '',
        'error', 'worker lost ' .. lost .. ' times: the lease expired every time ' ..
        '(the job may crash or hang its worker)')
      redis.call('ZADD', KEYS[5], now, id)
      if failed_ttl > 0 then redis.call('PEXPIRE', key, failed_ttl) end
      redis.call('HINCRBY', KEYS[6], 'failed', 1)
      redis.call('HINCRBY', KEYS[6], 'failed|' .. typ, 1)
      recovered[#recovered + 1] = id
      recovered[#recovered + 1] = 'failed'
    else
      redis.call('HSET', key, 'status', 'queued', 'token', '')
      redis.call('LPUSH', KEYS[1], id)
      recovered[#recovered + 1] = id
      recovered[#recovered + 1] = 'requeued'
    end
    recovered[#recovered + 1] = typ
  end
end

for z = 2, 3 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[z], '-inf', now, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[z], id)
    if redis.call('EXISTS', jobp .. id) == 1 then
      redis.call('HSET', jobp .. id, 'status', 'queued')
      redis.call('RPUSH', KEYS[1], id)
    else
      redis.call('HINCRBY', KEYS[6], 'orphans', 1)
    end
  end
end

if done_ttl > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', now - done_ttl) end
if failed_ttl > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - failed_ttl) end

local out = {now, -1, #recovered / 3}
for _, v in ipairs(recovered) do out[#out + 1] = v end

if count > 0 then
  local ids = redis.call('LPOP', KEYS[1], count)
  if ids then
    local deadline = now + lease
    for _, id in ipairs(ids) do
      local key = jobp .. id
      local f = redis.call('HMGET', key, 'type', 'payload', 'retries', 'timeout',
        'enqueued_at', 'failures', 'lost')
      if not f[1] then
        redis.call('HINCRBY', KEYS[6], 'orphans', 1)
      else
        local token = redis.call('INCR', KEYS[8])
        local attempts = redis.call('HINCRBY', key, 'attempts', 1)
        redis.call('HSET', key, 'status', 'active', 'token', token, 'worker', worker,
          'started_at', now)
        redis.call('ZADD', KEYS[4], deadline, id)
        out[#out + 1] = id
        out[#out + 1] = token
        out[#out + 1] = f[1]
        out[#out + 1] = f[2] or ''
        out[#out + 1] = attempts
        out[#out + 1] = f[3] or '0'
        out[#out + 1] = f[4] or '0'
        out[#out + 1] = f[5] or '0'
        out[#out + 1] = f[6] or '0'
        out[#out + 1] = f[7] or '0'
      end
    end
  end
end

-- Work left behind: wake another idle worker (each token wakes one BLPOP).
if redis.call('LLEN', KEYS[1]) > 0 and redis.call('LLEN', KEYS[7]) < notify_cap then
  redis.call('RPUSH', KEYS[7], '1')
end

local next_wake = -1
for z = 2, 4 do
  local first = redis.call('ZRANGE', KEYS[z], 0, 0, 'WITHSCORES')
  if first[2] then
    local s = tonumber(first[2])
    if next_wake < 0 or s < next_wake then next_wake = s end
  end
end
out[2] = next_wake
return out
