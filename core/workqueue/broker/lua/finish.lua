-- Apply a batch of outcomes reported by one worker for jobs of one queue, atomically.
-- Each op is fenced: it applies only while the job is active under the op's token. A repeat of
-- an op already applied (a lost reply, a client retry) answers what the first application did
-- (the record keeps the token and the verdict in 'applied'), so callers never work it out.
-- Fast path: one HMGET of the lease hash (KEYS[10]) for the whole batch; an op whose token is
-- its job's live lease (invariant: the record is active under that token) is applied without
-- reading the record: ack and release are one HSET each (type and idempotency key come from
-- the lease entry). A fail reads its record (failures, retries: the rare path). An op whose
-- token is not the lease's is judged on its record: a repeat, stale, missing, or (a lease
-- entry lost in an inconsistent state) still active under its token, then applied.
-- A record deleted while leased (outside the scripts) is not written back as a stub: a fast
-- path HSET that created every field it wrote (and nothing else is there) is undone and
-- answers 'missing'; a key of another type answers 'missing' too.
-- Retention (prelude's retain): a finished record is kept with no PEXPIRE (housekeeping trims
-- it past the queue's retention) or, with retention 0, deleted at once (a repeat then answers
-- 'missing'); its idempotency key never outlives it.
-- Cancel (control.lua): the op 'cancel' (the worker stopped a run renew said was asked to
-- cancel) ends the job cancelled; a fail or release of a record with cancel = '1' does too
-- (never retried, never requeued); an ack completes it.
-- Attempt history (control.lua's attempt_end): a failed, timed-out, released or cancelled
-- attempt gets its entry (an HMGET, HGET and HSET more: paths off the hot one); an ack writes
-- none (the record itself says which attempt succeeded, where and when).
-- KEYS: 1 active, 2 queued, 3 retry, 4 completed, 5 failed, 6 stats, 7 notify, 8 settings,
--       9 ledger, 10 leases, 11 cancelled, then one job record key per op, in op order
-- ARGV: 1 idempotency key prefix, 2 default completed retention ms, 3 default failed retention
--       ms, 4 notify cap, 5 the ops as one MessagePack array of
--       [op, id, token, data, delay_ms, timed_out]
--       (op 'ack' | 'fail' | 'release' | 'cancel'); ack: data = result JSON; fail: data =
--       error text, delay_ms = retry delay or -1 for "no retry", timed_out = 1 when the
--       attempt timed out (history says timed_out); release: hand back unfinished (graceful
--       stop), not counted as a failure; cancel: the run stopped because the job was asked to
--       cancel. One argument instead of six per op.
-- Returns: {now_ms, then per op: completed | retrying | failed | released | cancelled | stale
--           (refused: the token no longer holds) | missing (no such record)}
-- Cost per call: HMGET of the leases, HDEL of them and ZREM of their active entries (one each
-- per 1,000 ops), then per op one HSET (ack, release) or HMGET + HSET (fail; any op whose token
-- is not the live lease's); a GET and PEXPIRE more for a job with an idempotency key. Index
-- updates, counters and the settings read happen once per batch.
local now = now_ms()
local now_s = tostring(now)  -- formatted once: redis.call formats every number argument anew
local idemp, notify_cap = ARGV[1], tonumber(ARGV[4])
local ops = cmsgpack.unpack(ARGV[5])
local out = {now}
local done, failed, retry = {}, {}, {} -- score, id pairs for the completed/failed/retry indexes
local released = {}
local counters = {}                 -- stats field -> increment
local function count(field)
  counters[field] = (counters[field] or 0) + 1
end
local REPEAT = {completed = 'completed', failed = 'failed', retrying = 'retrying',
                queued = 'released', scheduled = 'released', cancelled = 'cancelled'}
local q = nil
local function settings()
  if not q then
    q = queue_settings(KEYS[8], ARGV[2], ARGV[3], 0)
    q.cancelled, q.stats, q.ledger, q.idemp = KEYS[11], KEYS[6], KEYS[9], idemp
  end
  return q
end

-- 1. The live leases of the batch (one HMGET). An op holding its job's lease is applied on the
-- lease's word; a second op of the same job in the batch is judged on the record, which the
-- first op has written by then (as if the ops came one by one).
local ids = {}
for i, o in ipairs(ops) do ids[i] = o[2] end
local live = hmget_all(KEYS[10], ids)
local held, ended, seen = {}, {}, {}
local parts = {}  -- an entry's rest -> {type, idempotency key} or false (a batch shares few)
for i, o in ipairs(ops) do
  local token, at = lease_token(live[i])
  if token == tostring(o[3]) and not seen[o[2]] then
    local rest = string.sub(live[i], at)
    local p = parts[rest]
    if p == nil then
      p = lease_parts(rest) or false
      parts[rest] = p
    end
    if p then
      held[i] = p
      ended[#ended + 1] = o[2]
    end
  end
  seen[o[2]] = true
end
-- The script's first write frees memory: Redis at maxmemory (noeviction) refuses a script's
-- memory-growing command only until the script has written, so outcomes are still applied
-- while enqueues are refused. Every held lease ends here, whatever its op.
each_chunk(ended, function(...) redis.call('HDEL', KEYS[10], ...) end)
each_chunk(ended, function(...) redis.call('ZREM', KEYS[1], ...) end)
local wrote = #ended > 0
local unleased = {}                 -- applied ops of active records with no lease entry

-- An HSET of a record not read first (the fast path): a key of another type is no record
-- (as prelude's fields), and a record deleted while leased is not left behind as a stub of
-- the fields written (HSET added all of them and nothing else is there). Returns whether the
-- record was there.
local function write(key, id, idem, ...)
  local added = redis.pcall('HSET', key, ...)
  if type(added) == 'table' then return false end
  local n = select('#', ...) / 2
  if added == n and redis.call('HLEN', key) == n then
    retain(key, id, 0, KEYS[9], idemp, idem)
    return false
  end
  return true
end

-- Apply one op to a job active under its token; f: the record's fields when they were read
-- (a fail always reads them: failures and retries).
local function apply(op, id, key, data, delay, typ, idem, f, timed_out)
  local s = settings()
  if op == 'cancel' or (op == 'fail' and f[8] == '1') or
      (op == 'release' and redis.call('HGET', key, 'cancel') == '1') then
    if op == 'fail' then
      count('failed_attempts')
      count('failed_attempts|' .. typ)
    end
    end_cancelled(s, key, id, typ, idem, now, 'cancelled while running', true, true)
    return 'cancelled'
  end
  if op == 'ack' then
    if s.done_ttl > 0 then
      if not write(key, id, idem, 'status', 'completed', 'finished_at', now_s, 'result', data,
          'applied', 'completed', 'error', '') then
        return 'missing'
      end
      retain(key, id, s.done_ttl, KEYS[9], idemp, idem)
      done[#done + 1] = now_s
      done[#done + 1] = id
    else
      local _, existed = retain(key, id, 0, KEYS[9], idemp, idem)
      if not existed then return 'missing' end
    end
    count('done')
    count('done|' .. typ)
    return 'completed'
  elseif op == 'fail' then
    -- a counter that is not an integer (a tampered record) restarts from 0
    local failures = (int_field(f[4]) or 0) + 1
    count('failed_attempts')
    count('failed_attempts|' .. typ)
    attempt_end(key, timed_out and 'timed_out' or 'failed', now, data)
    if delay >= 0 and failures <= (int_field(f[5]) or 0) then
      redis.call('HSET', key, 'status', 'retrying', 'error', data, 'run_at', now + delay,
        'failures', failures, 'applied', 'retrying')
      retry[#retry + 1] = now + delay
      retry[#retry + 1] = id
      count('retried')
      return 'retrying'
    end
    count('failed')
    count('failed|' .. typ)
    if retain(key, id, s.failed_ttl, KEYS[9], idemp, idem) then
      redis.call('HSET', key, 'status', 'failed', 'error', data, 'finished_at', now_s,
        'failures', failures, 'applied', 'failed')
      failed[#failed + 1] = now_s
      failed[#failed + 1] = id
    end
    return 'failed'
  end
  -- release: the token stays, so a repeated release answers 'released' until the job is
  -- leased again
  if not write(key, id, idem, 'status', 'queued', 'applied', 'released') then return 'missing' end
  attempt_end(key, 'released', now, nil)
  push_record(KEYS[2], key, id, true)  -- H4: to the front of its priority's list (prelude)
  released[#released + 1] = id
  return 'released'
end

-- 2. Each op, in order.
for i, o in ipairs(ops) do
  local op, id, token, data, delay = o[1], o[2], tostring(o[3]), o[4], tonumber(o[5])
  local timed_out = o[6] == 1
  local key = KEYS[11 + i]
  local lease = held[i]
  local outcome
  if lease and op ~= 'fail' then
    outcome = apply(op, id, key, data, delay, lease[1], lease[2], nil, timed_out)
  else
    local f = fields(key, 'token', 'status', 'type', 'failures', 'retries', 'idem', 'applied',
      'cancel')
    if not f or not f[3] then
      outcome = 'missing'
    elseif f[1] ~= token then
      outcome = 'stale'
    elseif f[2] ~= 'active' then
      outcome = f[7] or REPEAT[f[2]] or 'stale'
    else
      if not lease then
        -- active under this token but no lease entry (an inconsistent state): end it too
        if not wrote then
          redis.call('ZREM', KEYS[1], id)  -- a freeing first write, as above
          wrote = true
        end
        unleased[#unleased + 1] = id
      end
      outcome = apply(op, id, key, data, delay, f[3], f[6], f, timed_out)
    end
  end
  out[#out + 1] = outcome
end

each_chunk(unleased, function(...) redis.call('ZREM', KEYS[1], ...) end)
each_chunk(unleased, function(...) redis.call('HDEL', KEYS[10], ...) end)
each_chunk(done, function(...) redis.call('ZADD', KEYS[4], ...) end)
each_chunk(failed, function(...) redis.call('ZADD', KEYS[5], ...) end)
each_chunk(retry, function(...) redis.call('ZADD', KEYS[3], ...) end)
-- released jobs went back to the front of their priority's list: they were next in line
-- already (apply's push_record, H4)
for field, n in pairs(counters) do
  redis.call('HINCRBY', KEYS[6], field, n)
end
if #released > 0 then wake(KEYS[7], notify_cap) end
return out
