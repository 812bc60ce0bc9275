-- Enqueue a batch of jobs into one queue, atomically.
-- A call is marked once (KEYS[6], SET NX for a minute): a call repeated after its reply was
-- lost (the client's retry, the enqueue channel resending) finds the mark and only answers
-- what is there, writing nothing; so a new job costs one HSET, with no per-job EXISTS (job
-- ids are random: a first call never meets its own ids).
-- An idempotency key whose job record is gone is free (the key never outlives its record:
-- see the prelude's retain); a live one answers its job.
-- A paused queue (settings field paused = '1') accepts jobs and wakes no worker: nothing
-- would start, and a stream of enqueues must not keep idle workers reserving in vain.
-- KEYS: 1 queued, 2 scheduled, 3 notify, 4 stats, 5 ledger, 6 this call's mark, 7 settings
-- Priorities: a queued job goes to the list of its priority (prelude's push_queued); the
-- record keeps a priority > 0 in 'priority'.
-- Unique jobs: a shape with a unique key (<p>:{q}:uniq:<fingerprint>, one job per shape)
-- answers the unfinished job that key names, if any, as an existing job (with this call's
-- fingerprint, so no idempotency conflict is raised); else the job is created and the key
-- set to it (released when it finishes: prelude's unique_release). One script: under
-- concurrent posts exactly one job is created.
-- ARGV: 1 job key prefix, 2 idempotency key prefix, 3 idempotency ttl ms, 4 notify cap,
--       5 number of shapes S, then 10 fields per shape: type, retries, timeout, delay_ms,
--       run_at_ms, idempotency key ('' = none), fingerprint, limit_key ('' = none),
--       priority (0-9), unique key ('' = none), traceparent ('' = none: W3C trace context
--       of the enqueue span, workqueue.tracing);
--       then 3 fields per job: id, payload, shape number (1..S).
--       (Jobs that differ only in id and payload share a shape: fewer arguments to send.)
-- Returns: {now_ms, replayed (0|1), then per job: 'queued' or 'scheduled' for a new job,
--           or {existing id, status, fingerprint} for an existing one (status 'deleted':
--           a repeated call's job that has finished and was not kept)}
local now = now_ms()
local jobp, idemp, idem_ttl, notify_cap = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local nshapes = tonumber(ARGV[5])
local SHAPE = 11
local first = 6 + nshapes * SHAPE
local replay = not redis.call('SET', KEYS[6], '1', 'NX', 'PX', 60000)

local shapes = {}
for s = 1, nshapes do
  local b = 5 + (s - 1) * SHAPE
  local delay, run_at = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local due = -1
  if delay > 0 then due = now + delay elseif run_at >= 0 then due = run_at end
  local status = 'queued'
  if due > now then status = 'scheduled' end
  shapes[s] = {ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 6], ARGV[b + 7], due, status,
               prio_of(ARGV[b + 9]), ARGV[b + 10], ARGV[b + 8], ARGV[b + 11]}
end

-- The live job an idempotency key names (nil: the key is free).
local function keyed(idem)
  if idem == '' then return nil end
  local old = redis.call('GET', idemp .. idem)
  if old and redis.call('EXISTS', jobp .. old) == 1 then return old end
  return nil
end

-- The unfinished job a unique key names (nil: none; a finished or gone job frees it).
local function held(uniqk)
  if uniqk == '' then return nil end
  local old = redis.call('GET', uniqk)
  if not old then return nil end
  local f = fields(jobp .. old, 'status')
  if f and f[1] and not FINAL[f[1]] then return old end
  return nil
end

local function existing(id, fp)
  local st = redis.call('HMGET', jobp .. id, 'status', 'fp')
  return {id, st[1] or 'deleted', fp or st[2] or ''}
end

local out = {now, replay and 1 or 0}
if replay then
  for i = first, #ARGV, 3 do
    local id = ARGV[i]
    local shape = shapes[tonumber(ARGV[i + 2])]
    local old = keyed(shape[4])
    if old then
      out[#out + 1] = existing(old)
    else
      local u = held(shape[9])
      out[#out + 1] = u and existing(u, shape[5]) or existing(id)
    end
  end
  return out
end

local pushed, ledger, scheduled = {}, {}, 0  -- pushed: ids per priority (group_add)
local any_pushed = false
-- Strings, not numbers: redis.call formats every number argument anew (per job).
local now_s = tostring(now)
for i = first, #ARGV, 3 do
  local id, payload = ARGV[i], ARGV[i + 1]
  local shape = shapes[tonumber(ARGV[i + 2])]
  local idem = shape[4]
  local old = keyed(idem)
  local uold = nil
  if not old then uold = held(shape[9]) end
  if old then
    out[#out + 1] = existing(old)
  elseif uold then
    out[#out + 1] = existing(uold, shape[5])
  else
    local status = shape[7]
    local rec = {'type', shape[1], 'payload', payload, 'retries', shape[2],
      'timeout', shape[3], 'status', status, 'enqueued_at', now_s, 'attempts', '0',
      'failures', '0', 'lost', '0', 'fp', shape[5]}
    if idem ~= '' then
      redis.call('SET', idemp .. idem, id, 'PX', idem_ttl)
      rec[#rec + 1] = 'idem'
      rec[#rec + 1] = idem
    end
    if shape[8] > 0 then
      rec[#rec + 1] = 'priority'
      rec[#rec + 1] = tostring(shape[8])
    end
    if shape[9] ~= '' then
      redis.call('SET', shape[9], id)
      rec[#rec + 1] = 'uniq'
      rec[#rec + 1] = shape[9]
    end
    if shape[10] ~= '' then  -- limits apply per (type, limit_key) (SPEC 12)
      rec[#rec + 1] = 'limit_key'
      rec[#rec + 1] = shape[10]
    end
    if shape[11] ~= '' then
      rec[#rec + 1] = 'traceparent'
      rec[#rec + 1] = shape[11]
    end
    if status == 'scheduled' then
      rec[#rec + 1] = 'run_at'
      rec[#rec + 1] = shape[6]
      redis.call('ZADD', KEYS[2], shape[6], id)
      scheduled = scheduled + 1
    else
      group_add(pushed, shape[8], id)
      any_pushed = true
    end
    redis.call('HSET', jobp .. id, unpack(rec))
    ledger[#ledger + 1] = now_s
    ledger[#ledger + 1] = id
    out[#out + 1] = status
  end
end
-- one RPUSH per priority and one ZADD for the whole batch, in order (in slices: Lua's stack
-- is limited)
push_groups(KEYS[1], pushed, false)
each_chunk(ledger, function(...) redis.call('ZADD', KEYS[5], ...) end)
if #ledger > 0 then redis.call('HINCRBY', KEYS[4], 'enqueued', #ledger / 2) end
-- A scheduled job wakes one idle worker too, so it learns the new due time now rather than
-- at the end of its idle wait (up to 5 s late).
if (any_pushed or scheduled > 0) and redis.pcall('HGET', KEYS[7], 'paused') ~= '1' then
  wake(KEYS[3], notify_cap)
end
return out
