-- Reserve up to N jobs of one queue for one worker, atomically:
-- 1. a call repeated with the same request id (its reply was lost) hands out the jobs the first
--    call leased, while still leased under its tokens, and leases nothing more (replay is per
--    queue: the record KEYS[9] is this worker's on this queue);
-- 2. due scheduled and retrying jobs are promoted (a head check: a delayed job starts at its
--    due time without waiting for the housekeeper);
-- 3. unless the queue is paused (settings field paused = '1': nothing is leased, and no
--    other worker is woken; due jobs are still promoted and next_due still answered, so the
--    worker waits as for an empty queue), up to N queued jobs, highest priority first (FIFO
--    within one; prelude's pop_queued), become active with a lease (deadline on Redis's clock) and a fencing
--    token each (one INCRBY for the batch); the leases are also written to the lease hash
--    KEYS[12] (one HSET for the batch), which finish and renew check instead of the records;
-- 4. work left: one more idle worker is woken (capped).
-- Lease recovery and retention trimming are housekeeping's (housekeep.lua), not reserve's.
-- Entries without a record or with a key of another type (orphan) or whose record is in
-- another state (stray) are dropped; a queued record that cannot be run (no type, a counter
-- that is not an integer) fails for good at once (invalid), under the queue's failed
-- retention (settings read only then).
-- Job record keys cannot be declared in KEYS: the ids are popped inside the script.
-- KEYS: 1 queued, 2 scheduled, 3 retry, 4 active, 5 failed, 6 stats, 7 notify, 8 token,
--       9 this worker's last-reserve record, 10 settings, 11 ledger, 12 leases
-- ARGV: 1 job key prefix, 2 idempotency key prefix, 3 count, 4 lease ms, 5 worker id,
--       6 request id ('' = no replay), 7 notify cap, 8 default failed retention ms
-- Returns: {now_ms, next_due_ms (-1 none), replayed (0|1), n_dropped, [id, reason, type]*,
--           [id, token, type, payload, attempts, retries, timeout, enqueued_at, failures, lost,
--            traceparent]*}
local now = now_ms()
local jobp, idemp, count, lease = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local worker, req, notify_cap = ARGV[5], ARGV[6], tonumber(ARGV[7])
-- the fields read from a record to run it (a replay reads its token too: RUN[12])
local RUN = {'type', 'payload', 'retries', 'timeout', 'enqueued_at', 'failures', 'lost',
             'attempts', 'status', 'idem', 'traceparent', 'token'}

local heads = {}  -- known earliest scores of the scheduled and retry indexes
local function reply(jobs, replayed)
  local out = {now, earliest({KEYS[2], KEYS[3]}, heads), replayed, #dropped / 3}
  for _, v in ipairs(dropped) do out[#out + 1] = v end
  for _, v in ipairs(jobs) do out[#out + 1] = v end
  return out
end

local function add_job(jobs, id, token, f, attempts)
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
  jobs[n + 11] = f[11] or ''
end

if req ~= '' then
  local rec = fields(KEYS[9], 'req', 'jobs')
  if rec and rec[1] == req then
    local jobs = {}
    for _, pair in ipairs(cjson.decode(rec[2])) do
      local id, token = pair[1], pair[2]
      local f = fields(jobp .. id, unpack(RUN))
      if f and f[12] == token and f[9] == 'active' then
        add_job(jobs, id, token, f, f[8] or '0')
      end
    end
    return reply(jobs, 1)
  end
end

local _, _, head2 = promote_due(KEYS[2], 'scheduled', KEYS[1], KEYS[6], jobp, now, 1000)
local _, _, head3 = promote_due(KEYS[3], 'retrying', KEYS[1], KEYS[6], jobp, now, 1000)
heads[KEYS[2]] = head2 or false
heads[KEYS[3]] = head3 or false

local jobs, leased = {}, {}
local q = nil  -- the queue's settings, read only when a record must fail for good
local paused = redis.pcall('HGET', KEYS[10], 'paused') == '1'
local left = false  -- whether queued jobs may be left (pop_queued says)
if count > 0 and not paused then
  local ids
  ids, left = pop_queued(KEYS[1], count)
  if #ids > 0 then
    -- Numbers are formatted once per call: redis.call formats every number argument anew.
    local now_s, deadline_s = tostring(now), tostring(now + lease)
    local attempts_s = {'1', '2', '3'}
    -- One INCRBY hands out the batch's fencing tokens (a skipped entry's number is unused).
    local token = redis.call('INCRBY', KEYS[8], #ids) - #ids
    local zargs, largs = {}, {}
    local counters = {{3, 'retries'}, {6, 'failures'}, {7, 'lost'}, {8, 'attempts'}}
    for _, id in ipairs(ids) do
      local key = jobp .. id
      token = token + 1
      local f = fields(key, unpack(RUN, 1, 11))
      local bad, reason = nil, nil
      if not f then
        reason = 'orphan'
      elseif not f[1] then
        if redis.call('EXISTS', key) == 0 then reason = 'orphan' else bad = 'the record has no type' end
      elseif f[9] and f[9] ~= 'queued' then
        reason = 'stray'
      else
        for _, c in ipairs(counters) do
          if not int_field(f[c[1]]) then bad = 'its ' .. c[2] .. ' is not an integer' end
        end
      end
      if reason then
        drop(KEYS[6], id, reason)
      elseif bad then
        if not q then
          q = queue_settings(KEYS[10], 0, ARGV[8], 0)
          q.failed, q.stats, q.ledger, q.idemp = KEYS[5], KEYS[6], KEYS[11], idemp
        end
        fail_for_good(q, key, id, f[1], f[10], now, 'invalid job: malformed record: ' .. bad)
        drop(nil, id, 'invalid', f[1])
      else
        local attempts = int_field(f[8]) + 1
        local tok = tostring(token)
        redis.call('HSET', key, 'status', 'active', 'token', tok, 'worker', worker,
          'started_at', now_s, 'attempts', attempts_s[attempts] or tostring(attempts))
        zargs[#zargs + 1] = deadline_s
        zargs[#zargs + 1] = id
        largs[#largs + 1] = id
        largs[#largs + 1] = lease_value(tok, f[1], f[10])
        leased[#leased + 1] = {id, tok}
        add_job(jobs, id, token, f, attempts)
      end
    end
    each_chunk(zargs, function(...) redis.call('ZADD', KEYS[4], ...) end)
    each_chunk(largs, function(...) redis.call('HSET', KEYS[12], ...) end)
  end
end

if #leased > 0 and req ~= '' then
  redis.call('HSET', KEYS[9], 'req', req, 'jobs', cjson.encode(leased))
  redis.call('PEXPIRE', KEYS[9], lease)
end

-- Work left behind: wake another idle worker.
if left then wake(KEYS[7], notify_cap) end
return reply(jobs, 0)
