-- One bounded step of a queue's housekeeping duty, atomically. Every key is in the queue's slot.
-- 0. Election: the duty is KEYS[1] (STRING holder id, PX duty ms). The holder renews it;
--    anyone else gets held = 0 and the step does nothing more. A holder that stops renewing
--    (dead, stopped) hands the duty over when the key expires.
-- 1. Lease recovery: up to ARGV[9] expired leases: the job is requeued at the front (of its
--    priority's list), or fails
--    for good once lost max_lost_leases times (settings hash, else ARGV default); their lease
--    entries (KEYS[13]) are removed.
-- 2. Promotion: up to ARGV[10] due scheduled and retrying jobs each go to the queued list
--    of their priority.
-- 3. Retention: up to ARGV[11] finished records past the queue's retention are deleted (one
--    DEL per chunk, with their idempotency key when it still names them), and removed from
--    their finished index and the ledger.
-- 4. Consistency check: the next ARGV[12] ledger entries (cursor KEYS[12]: the last id and
--    score checked) are compared with the indexes: a record that is gone leaves the ledger; a
--    record in no index of its status is put back (active: a lease entry expiring now, so
--    step 1 recovers it; scheduled/retrying: due at run_at; completed/failed: at
--    finished_at; queued: appended to its priority's list, judged against ONE LRANGE snapshot
--    of every level's list per step, taken only while they hold at most ARGV[13] ids - a false "missing" only makes a
--    duplicate entry that reserve drops as a stray). The lease hash is checked against the
--    records with one HMGET per step: an active record must have its lease entry (written
--    back if missing or under another token); an entry whose record is gone or not active
--    under that token is removed (a stray). After a complete pass the check rests ARGV[14] ms
--    (the cursor keeps 'done_at'), so an idle queue's kept records are not re-read endlessly.
-- Cost per step: O(log N) per index entry touched; at most 100 + 2 x 1000 + 2 x 500 + 200 job
-- records read; one LRANGE of at most ARGV[13] entries; one HMGET of ARGV[12] lease entries.
-- No SCAN, no LPOS.
-- KEYS: 1 housekeeper, 2 queued, 3 scheduled, 4 retry, 5 active, 6 completed, 7 failed,
--       8 stats, 9 notify, 10 settings, 11 ledger, 12 check cursor (HASH id, score), 13 leases,
--       14 cancelled (H5: kept cancelled records, trimmed under the failed retention)
-- ARGV: 1 job key prefix, 2 idempotency key prefix, 3 worker id, 4 duty ms,
--       5 default completed retention ms, 6 default failed retention ms, 7 default max lost
--       leases, 8 notify cap, 9 recover limit, 10 promote limit, 11 trim limit,
--       12 check limit, 13 longest queued list to check, 14 pause after a complete pass ms
-- Returns: {held (0|1), now_ms, promoted, trimmed, more (0|1), next_ms (-1 none),
--           n_recovered, [id, outcome (requeued|failed|cancelled), type, lost]*,
--           n_dropped, [id, reason, type]*, n_repaired, [id, status]*}
local now = now_ms()
local jobp, idemp, worker, duty = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local notify_cap = tonumber(ARGV[8])
local recover_limit, promote_limit = tonumber(ARGV[9]), tonumber(ARGV[10])
local trim_limit, check_limit, max_list = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])

-- 0. election
local holder = redis.pcall('GET', KEYS[1])
if holder == worker then
  redis.call('PEXPIRE', KEYS[1], duty)
elseif holder == false then
  -- A DEL first: Redis at maxmemory (noeviction) refuses a script's memory-growing command
  -- (SET) only until the script has written, and housekeeping (trimming) is what frees memory.
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[1], worker, 'NX', 'PX', duty)
else
  return {0, now}
end

local q = queue_settings(KEYS[10], ARGV[5], ARGV[6], ARGV[7])
q.failed, q.stats, q.ledger, q.idemp = KEYS[7], KEYS[8], KEYS[11], idemp
q.cancelled = KEYS[14]  -- H5: cancel
local more = false
local woke = false

-- 1. lease recovery
local recovered = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, recover_limit)
if #expired >= recover_limit then more = true end
each_chunk(expired, function(...) redis.call('ZREM', KEYS[5], ...) end)
-- Whatever the record says, an expired lease is over: its entry goes (an orphan's or a
-- stray's entry is not a live lease either).
each_chunk(expired, function(...) redis.call('HDEL', KEYS[13], ...) end)
local requeued, any_requeued = {}, false  -- requeued: ids per priority (group_add)
for _, id in ipairs(expired) do
  local key = jobp .. id
  local f = fields(key, 'type', 'status', 'idem', 'cancel', 'priority')
  if not f or not f[1] then
    drop(KEYS[8], id, 'orphan')
  elseif f[2] ~= 'active' then
    drop(KEYS[8], id, 'stray')
  elseif f[4] == '1' then  -- H5: a cancel was pending: the job ends cancelled, not requeued
    end_cancelled(q, key, id, f[1], f[3], now, 'cancelled: the lease expired while the ' ..
      'cancel was pending (worker lost)', true, false)
    local n = #recovered
    recovered[n + 1], recovered[n + 2], recovered[n + 3], recovered[n + 4] = id, 'cancelled', f[1], 0
  else
    local lost = incr(key, 'lost')
    attempt_end(key, 'lost', now, 'the lease expired (worker crashed, hung or cut off)')  -- H5
    local outcome = 'requeued'
    if lost >= q.max_lost then
      fail_for_good(q, key, id, f[1], f[3], now, 'worker lost ' .. lost .. ' times: the ' ..
        'lease expired every time (the job may crash or hang its worker)')
      outcome = 'failed'
    else
      -- the token is cleared: a late report from the lost lease is refused as stale
      redis.call('HSET', key, 'status', 'queued', 'token', '')
      group_add(requeued, f[5], id)
      any_requeued = true
    end
    local n = #recovered
    recovered[n + 1] = id
    recovered[n + 2] = outcome
    recovered[n + 3] = f[1]
    recovered[n + 4] = lost
  end
end
if #recovered > 0 then redis.call('HINCRBY', KEYS[8], 'lost_leases', #recovered / 4) end
-- requeued jobs go to the front of their priority's list: they had waited their turn already
push_groups(KEYS[2], requeued, true)

-- 2. promotion
local promoted = 0
for z, status in pairs({[3] = 'scheduled', [4] = 'retrying'}) do
  local n, hit = promote_due(KEYS[z], status, KEYS[2], KEYS[8], jobp, now, promote_limit)
  promoted = promoted + n
  if hit then more = true end
end
-- (a paused queue wakes nobody: nothing would start; resume wakes the workers)
if (any_requeued or promoted > 0) and not q.paused then
  wake(KEYS[9], notify_cap)
  woke = true
end

-- 3. retention
local trimmed = 0
local budget = trim_limit
for _, part in ipairs({{KEYS[6], 'completed', q.done_ttl}, {KEYS[7], 'failed', q.failed_ttl},
                       {KEYS[14], 'cancelled', q.failed_ttl}}) do
  local index, status, ttl = part[1], part[2], part[3]
  local ids = {}
  if budget > 0 then
    ids = redis.call('ZRANGEBYSCORE', index, '-inf', now - ttl, 'LIMIT', 0, budget)
  end
  if #ids > 0 then
    budget = budget - #ids
    if budget <= 0 then more = true end
    trimmed = trimmed + delete_finished(index, KEYS[11], ids, status, jobp, idemp)
  end
end

-- 4. consistency check, walking the ledger from the cursor (resting after a complete pass)
-- First the priority levels: a level whose list has jobs must be in the levels set, or
-- reserve would not look there (nine LLENs per step).
local levels = levels_key(KEYS[2])
for p = 1, PRIO_MAX do
  if redis.call('LLEN', queued_list(KEYS[2], p)) > 0 and not redis.call('ZSCORE', levels, p) then
    redis.call('ZADD', levels, p, p)
    redis.call('HINCRBY', KEYS[8], 'repaired', 1)
  end
end
local repaired = {}
local start = 0
local check_pause = tonumber(ARGV[14]) or 0
local cur = fields(KEYS[12], 'id', 'score', 'done_at')
if cur and tonumber(cur[3]) and now - tonumber(cur[3]) < check_pause then
  check_limit = 0
elseif cur and cur[1] then
  local rank = redis.call('ZRANK', KEYS[11], cur[1])
  if rank then
    start = rank + 1
  elseif tonumber(cur[2]) then
    -- the last id checked is gone: resume at the first entry of its score
    start = redis.call('ZCOUNT', KEYS[11], '-inf', '(' .. cur[2])
  end
end
local batch = {}
if check_limit > 0 then
  batch = redis.call('ZRANGE', KEYS[11], start, start + check_limit - 1, 'WITHSCORES')
end
local listed = nil  -- the queued list as a set, read at most once per step
local gone, strays = {}, {}
local INDEX = {active = KEYS[5], scheduled = KEYS[3], retrying = KEYS[4],
               completed = KEYS[6], failed = KEYS[7], cancelled = KEYS[14]}
local ids = {}
for i = 1, #batch, 2 do ids[#ids + 1] = batch[i] end
local live = hmget_all(KEYS[13], ids)  -- the lease entries of the batch, one read
for n, id in ipairs(ids) do
  local key = jobp .. id
  local f = fields(key, 'status', 'run_at', 'finished_at', 'token', 'type', 'idem', 'priority')
  local st = f and f[1]
  local fixed = false
  -- a lease entry lives exactly as long as the record is active under its token
  if st == 'active' then
    local token = f[4] or ''
    if lease_token(live[n]) ~= token then
      redis.call('HSET', KEYS[13], id, lease_value(token, f[5], f[6]))
      fixed = true
    end
  elseif live[n] then
    strays[#strays + 1] = id
    drop(KEYS[8], id, 'stray')
  end
  if f and not st then
    if redis.call('EXISTS', key) == 0 then gone[#gone + 1] = id end
  elseif st == 'queued' then
    if listed == nil then
      -- one snapshot of every level's list (a job is listed once, whatever its level)
      listed = false
      local lens, total = {}, 0
      for p = 0, PRIO_MAX do
        lens[p] = redis.call('LLEN', queued_list(KEYS[2], p))
        total = total + lens[p]
      end
      if total <= max_list then
        listed = {}
        for p = 0, PRIO_MAX do
          if lens[p] > 0 then
            for _, v in ipairs(redis.call('LRANGE', queued_list(KEYS[2], p), 0, -1)) do
              listed[v] = true
            end
          end
        end
      end
    end
    if listed and not listed[id] then
      push_queued(KEYS[2], f[7], {id}, false)
      listed[id] = true
      fixed = true
    end
  elseif INDEX[st] and not redis.call('ZSCORE', INDEX[st], id) then
    local at = now
    if st == 'scheduled' or st == 'retrying' then at = tonumber(f[2]) or now end
    if st == 'completed' or st == 'failed' or st == 'cancelled' then
      at = tonumber(f[3]) or now
    end
    redis.call('ZADD', INDEX[st], at, id)
    fixed = true
  end
  if fixed then
    repaired[#repaired + 1] = id
    repaired[#repaired + 1] = st
  end
end
each_chunk(gone, function(...) redis.call('ZREM', KEYS[11], ...) end)
each_chunk(strays, function(...) redis.call('HDEL', KEYS[13], ...) end)
if check_limit == 0 then
  -- resting after a complete pass: nothing to record
elseif #batch < check_limit * 2 then
  -- the pass is complete: the next pass starts over after the pause
  redis.call('DEL', KEYS[12])
  if check_pause > 0 then redis.call('HSET', KEYS[12], 'done_at', now) end
else
  redis.call('HSET', KEYS[12], 'id', batch[#batch - 1], 'score', batch[#batch])
end
if #repaired > 0 then
  redis.call('HINCRBY', KEYS[8], 'repaired', #repaired / 2)
  if not woke and not q.paused then wake(KEYS[9], notify_cap) end
end

-- when the next step has work: the earliest lease expiry or due time, or a trim due
local next_ms = earliest({KEYS[3], KEYS[4], KEYS[5]})
for _, part in ipairs({{KEYS[6], q.done_ttl}, {KEYS[7], q.failed_ttl},
                       {KEYS[14], q.failed_ttl}}) do
  local head = redis.call('ZRANGE', part[1], 0, 0, 'WITHSCORES')
  if head[2] then
    local due = tonumber(head[2]) + part[2]
    if next_ms < 0 or due < next_ms then next_ms = due end
  end
end

local out = {1, now, promoted, trimmed, more and 1 or 0, next_ms, #recovered / 4}
for _, v in ipairs(recovered) do out[#out + 1] = v end
out[#out + 1] = #dropped / 3
for _, v in ipairs(dropped) do out[#out + 1] = v end
out[#out + 1] = #repaired / 2
for _, v in ipairs(repaired) do out[#out + 1] = v end
return out
