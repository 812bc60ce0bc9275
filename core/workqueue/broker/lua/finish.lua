-- Apply a batch of outcomes reported by one worker for jobs of one queue, atomically.
-- Each op is fenced: it applies only while the job is active under the op's token. A repeat of
-- an op already applied (a lost reply, a client retry) answers what the first application did
-- (the record keeps the token and the verdict in 'applied'), so callers never work it out.
-- Retention (prelude's retain): a finished record is kept with no PEXPIRE (housekeeping trims
-- it past the queue's retention) or, with retention 0, deleted at once (a repeat then answers
-- 'missing'); its idempotency key never outlives it.
-- KEYS: 1 active, 2 queued, 3 retry, 4 completed, 5 failed, 6 stats, 7 notify, 8 settings,
--       9 ledger, then one job record key per op, in op order
-- ARGV: 1 idempotency key prefix, 2 default completed retention ms, 3 default failed retention
--       ms, 4 notify cap, 5 the ops as one MessagePack array of [op, id, token, data, delay_ms]
--       (op 'ack' | 'fail' | 'release'); ack: data = result JSON; fail: data = error text,
--       delay_ms = retry delay or -1 for "no retry"; release: hand back unfinished (graceful
--       stop), not counted as a failure. One argument instead of five per op.
-- Returns: {now_ms, then per op: completed | retrying | failed | released | stale (refused:
--           the token no longer holds) | missing (no such record)}
-- Cost per op: HMGET and HSET (a GET and PEXPIRE more for a job with an idempotency key);
-- index updates, counters and the settings read happen once per batch.
local now = now_ms()
local idemp, notify_cap = ARGV[1], tonumber(ARGV[4])
local ops = cmsgpack.unpack(ARGV[5])
local out = {now}
local finished = {}                 -- ids leaving the active index
local done, failed, retry = {}, {}, {} -- score, id pairs for the completed/failed/retry indexes
local released = {}
local counters = {}                 -- stats field -> increment
local function count(field)
  counters[field] = (counters[field] or 0) + 1
end
local REPEAT = {completed = 'completed', failed = 'failed', retrying = 'retrying',
                queued = 'released', scheduled = 'released'}
local q = nil

for i, o in ipairs(ops) do
  local op, id, token, data, delay = o[1], o[2], tostring(o[3]), o[4], tonumber(o[5])
  local key = KEYS[9 + i]
  local f = fields(key, 'token', 'status', 'type', 'failures', 'retries', 'error', 'idem',
    'applied')
  local outcome
  if not f or not f[3] then
    outcome = 'missing'
  elseif f[1] ~= token then
    outcome = 'stale'
  elseif f[2] ~= 'active' then
    outcome = f[8] or REPEAT[f[2]] or 'stale'
  else
    finished[#finished + 1] = id
    -- The script's first write frees memory: Redis at maxmemory (noeviction) refuses a
    -- script's memory-growing command only until the script has written, so outcomes are
    -- still applied while enqueues are refused (the batched ZREM below repeats it harmlessly).
    if #finished == 1 then redis.call('ZREM', KEYS[1], id) end
    if not q then q = queue_settings(KEYS[8], ARGV[2], ARGV[3], 0) end
    local typ = f[3]
    if op == 'ack' then
      count('done')
      count('done|' .. typ)
      if retain(key, id, q.done_ttl, KEYS[9], idemp, f[7]) then
        if f[6] then
          redis.call('HSET', key, 'status', 'completed', 'finished_at', now, 'result', data,
            'applied', 'completed', 'error', '')
        else
          redis.call('HSET', key, 'status', 'completed', 'finished_at', now, 'result', data,
            'applied', 'completed')
        end
        done[#done + 1] = now
        done[#done + 1] = id
      end
      outcome = 'completed'
    elseif op == 'fail' then
      -- a counter that is not an integer (a tampered record) restarts from 0
      local failures = (int_field(f[4]) or 0) + 1
      count('failed_attempts')
      count('failed_attempts|' .. typ)
      if delay >= 0 and failures <= (int_field(f[5]) or 0) then
        redis.call('HSET', key, 'status', 'retrying', 'error', data, 'run_at', now + delay,
          'failures', failures, 'applied', 'retrying')
        retry[#retry + 1] = now + delay
        retry[#retry + 1] = id
        count('retried')
        outcome = 'retrying'
      else
        count('failed')
        count('failed|' .. typ)
        if retain(key, id, q.failed_ttl, KEYS[9], idemp, f[7]) then
          redis.call('HSET', key, 'status', 'failed', 'error', data, 'finished_at', now,
            'failures', failures, 'applied', 'failed')
          failed[#failed + 1] = now
          failed[#failed + 1] = id
        end
        outcome = 'failed'
      end
    else
      -- the token stays: a repeated release answers 'released' until the job is leased again
      redis.call('HSET', key, 'status', 'queued', 'applied', 'released')
      released[#released + 1] = id
      outcome = 'released'
    end
  end
  out[#out + 1] = outcome
end

each_chunk(finished, function(...) redis.call('ZREM', KEYS[1], ...) end)
each_chunk(done, function(...) redis.call('ZADD', KEYS[4], ...) end)
each_chunk(failed, function(...) redis.call('ZADD', KEYS[5], ...) end)
each_chunk(retry, function(...) redis.call('ZADD', KEYS[3], ...) end)
-- released jobs go back to the front: they were next in line already
each_chunk(released, function(...) redis.call('LPUSH', KEYS[2], ...) end)
for field, n in pairs(counters) do
  redis.call('HINCRBY', KEYS[6], field, n)
end
if #released > 0 then wake(KEYS[7], notify_cap) end
return out
