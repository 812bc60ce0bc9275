-- Reserve up to N jobs of one queue for one worker, after housekeeping, atomically:
-- 1. expired leases are recovered (requeued, or failed once lost too often);
-- 2. due scheduled and retrying jobs are promoted to queued;
-- 3. finished-job indexes drop the entries past their retention (records already expired),
--    so they shrink even when no further job finishes;
-- 4. up to N queued jobs become active with a lease (deadline on Redis's clock) and a new
--    fencing token.
-- Steps 1, 2 and 4 act on an index entry only when the job's record is in that index's state;
-- entries without a record or with a key of another type (orphans) or with a record in another
-- state (strays) are dropped and reported with outcome 'orphan' or 'stray' (counters
-- 'orphans', 'strays').
-- KEYS: 1 queued, 2 scheduled, 3 retry, 4 active, 5 failed, 6 stats, 7 notify, 8 token,
--       9 completed, 10 this worker's last-reserve record (optional)
-- ARGV: 1 job key prefix, 2 count, 3 lease ms, 4 worker id, 5 max lost leases,
--       6 failed retention ms, 7 notify cap, 8 completed retention ms, 9 request id (optional)
-- A call repeated with the same request id (a client retry after the reply was lost) hands out
-- the jobs the first call leased, as long as they are still leased under its tokens, instead
-- of leasing more: the first call's jobs would otherwise sit leased to nobody until expiry.
-- A queued record that cannot be run as it is (no type, or a counter that is not an integer:
-- tampered or corrupted) fails at once as an invalid job, reported with outcome 'invalid'.
-- Returns: {now_ms, next_wake_ms (-1 none), n_recovered, [id, outcome, type] * n_recovered,
--           (outcome: requeued | failed | invalid | orphan | stray; type '' for the last two)
--           [id, token, type, payload, attempts, retries, timeout, enqueued_at, failures, lost]*}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local jobp, count, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local worker, max_lost, failed_ttl = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local notify_cap = tonumber(ARGV[7])
local done_ttl = tonumber(ARGV[8])

local req = ARGV[9] or ''
if req ~= '' and KEYS[10] then
  local rec = redis.call('HMGET', KEYS[10], 'req', 'jobs')
  if rec[1] == req then
    local out = {now, -1, 0}
    for _, pair in ipairs(cjson.decode(rec[2])) do
      local id, token = pair[1], pair[2]
      local f = redis.call('HMGET', jobp .. id, 'token', 'status', 'type', 'payload',
        'attempts', 'retries', 'timeout', 'enqueued_at', 'failures', 'lost')
      if f[1] == token and f[2] == 'active' then
        out[#out + 1] = id
        out[#out + 1] = token
        out[#out + 1] = f[3]
        out[#out + 1] = f[4] or ''
        out[#out + 1] = f[5] or '0'
        out[#out + 1] = f[6] or '0'
        out[#out + 1] = f[7] or '0'
        out[#out + 1] = f[8] or '0'
        out[#out + 1] = f[9] or '0'
        out[#out + 1] = f[10] or '0'
      end
    end
    return out
  end
end

-- A counter field read as an integer: absent is 0; anything else that is not an integer is nil.
local function int_field(v)
  if not v then return 0 end
  if #v > 18 or not string.match(v, '^%-?%d+$') then return nil end
  return tonumber(v)
end

-- Add one to a counter field; a corrupt value restarts from 0 instead of failing the script.
local function incr(key, field)
  local v = (int_field(redis.call('HGET', key, field)) or 0) + 1
  redis.call('HSET', key, field, v)
  return v
end

local recovered = {}
-- An index entry that disagrees with its record (no record: an orphan; a record in another
-- state: a stray, e.g. a second entry for one job) is dropped and reported, never acted on.
local function drop(id, outcome)
  redis.call('HINCRBY', KEYS[6], outcome .. 's', 1)
  recovered[#recovered + 1] = id
  recovered[#recovered + 1] = outcome
  recovered[#recovered + 1] = ''
end

-- HMGET that treats a key of another type (not a job record) as no record at all.
local function fields(key, ...)
  local f = redis.pcall('HMGET', key, ...)
  if f.err then return nil end
  return f
end

-- The head of each sorted set, read once: an idle call (nothing due) then costs one ZRANGE per
-- set instead of a range query plus a head query. A set whose head changed is read again at
-- the end, for the next wake-up time.
local heads = {}
local function due_ids(z, limit)
  local head = redis.call('ZRANGE', KEYS[z], 0, 0, 'WITHSCORES')
  if not head[2] or tonumber(head[2]) > now then
    heads[z] = head
    return {}
  end
  return redis.call('ZRANGEBYSCORE', KEYS[z], '-inf', now, 'LIMIT', 0, limit)
end

local expired = due_ids(4, 100)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[4], id)
  local key = jobp .. id
  local f = fields(key, 'type', 'status')
  local typ = f and f[1]
  if not typ then
    drop(id, 'orphan')
  elseif f[2] ~= 'active' then
    drop(id, 'stray')
  else
    local lost = incr(key, 'lost')
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

local waiting_status = {[2] = 'scheduled', [3] = 'retrying'}
for z = 2, 3 do
  local due = due_ids(z, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', KEYS[z], id)
    local f = fields(jobp .. id, 'status')
    local st = f and f[1]
    if not st then
      drop(id, 'orphan')
    elseif st ~= waiting_status[z] then
      drop(id, 'stray')
    else
      redis.call('HSET', jobp .. id, 'status', 'queued')
      redis.call('RPUSH', KEYS[1], id)
    end
  end
end

if done_ttl > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[9], '-inf', now - done_ttl) end
if failed_ttl > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - failed_ttl) end

local jobs = {}
local leased = {}
if count > 0 then
  local ids = redis.call('LPOP', KEYS[1], count)
  if ids then
    local deadline = now + lease
    -- One INCRBY hands out the batch's fencing tokens (a skipped entry's number is unused).
    local token = redis.call('INCRBY', KEYS[8], #ids) - #ids
    local zargs = {}
    local counters = {[3] = 'retries', [6] = 'failures', [7] = 'lost', [8] = 'attempts'}
    for _, id in ipairs(ids) do
      local key = jobp .. id
      token = token + 1
      -- a key of another type (not a job record) must not abort the whole batch
      local f = fields(key, 'type', 'payload', 'retries', 'timeout',
        'enqueued_at', 'failures', 'lost', 'attempts', 'status')
      local bad, orphan, stray = nil, false, false
      if not f then
        orphan = true
      elseif not f[1] then
        if redis.call('EXISTS', key) == 0 then orphan = true else bad = 'the record has no type' end
      elseif f[9] and f[9] ~= 'queued' then
        stray = true
      else
        for n, name in pairs(counters) do
          if not int_field(f[n]) then bad = 'its ' .. name .. ' is not an integer' end
        end
      end
      if orphan then
        drop(id, 'orphan')
      elseif stray then
        drop(id, 'stray')
      elseif bad then
        redis.call('HSET', key, 'status', 'failed', 'finished_at', now, 'token', '',
          'error', 'invalid job: malformed record: ' .. bad)
        redis.call('ZADD', KEYS[5], now, id)
        if failed_ttl > 0 then redis.call('PEXPIRE', key, failed_ttl) end
        redis.call('HINCRBY', KEYS[6], 'failed', 1)
        if f[1] then redis.call('HINCRBY', KEYS[6], 'failed|' .. f[1], 1) end
        recovered[#recovered + 1] = id
        recovered[#recovered + 1] = 'invalid'
        recovered[#recovered + 1] = f[1] or ''
      else
        local attempts = int_field(f[8]) + 1
        redis.call('HSET', key, 'status', 'active', 'token', token, 'worker', worker,
          'started_at', now, 'attempts', attempts)
        local z = #zargs
        zargs[z + 1] = deadline
        zargs[z + 2] = id
        leased[#leased + 1] = {id, tostring(token)}
        local n = #jobs
        jobs[n + 1] = id
        jobs[n + 2] = token
        jobs[n + 3] = f[1]
        jobs[n + 4] = f[2] or ''
        jobs[n + 5] = attempts
        jobs[n + 6] = f[3] or '0'
        jobs[n + 7] = f[4] or '0'
        jobs[n + 8] = f[5] or '0'
        jobs[n + 9] = f[6] or '0'
        jobs[n + 10] = f[7] or '0'
      end
    end
    -- The active index in one ZADD per 500 jobs (unpack of a huge table overflows the stack).
    if #zargs > 0 then heads[4] = nil end
    for i = 1, #zargs, 1000 do
      redis.call('ZADD', KEYS[4], unpack(zargs, i, math.min(i + 999, #zargs)))
    end
  end
end

if #leased > 0 and req ~= '' and KEYS[10] then
  redis.call('HSET', KEYS[10], 'req', req, 'jobs', cjson.encode(leased))
  redis.call('PEXPIRE', KEYS[10], lease)
end

local out = {now, -1, #recovered / 3}
for _, v in ipairs(recovered) do out[#out + 1] = v end
for _, v in ipairs(jobs) do out[#out + 1] = v end

-- Work left behind: wake another idle worker (each token wakes one BLPOP).
if redis.call('LLEN', KEYS[1]) > 0 and redis.call('LLEN', KEYS[7]) < notify_cap then
  redis.call('RPUSH', KEYS[7], '1')
end

local next_wake = -1
for z = 2, 4 do
  local first = heads[z] or redis.call('ZRANGE', KEYS[z], 0, 0, 'WITHSCORES')
  if first[2] then
    local s = tonumber(first[2])
    if next_wake < 0 or s < next_wake then next_wake = s end
  end
end
out[2] = next_wake
return out
