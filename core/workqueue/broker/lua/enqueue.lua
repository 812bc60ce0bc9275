-- Enqueue a batch of jobs into one queue, atomically.
-- KEYS: 1 queued, 2 scheduled, 3 notify, 4 stats
-- ARGV: 1 job key prefix, 2 idempotency key prefix, 3 idempotency ttl ms, 4 notify cap,
--       5 number of shapes S, then 7 fields per shape: type, retries, timeout, delay_ms,
--       run_at_ms, idempotency key ('' = none), fingerprint;
--       then 3 fields per job: id, payload, shape number (1..S).
--       (Jobs that differ only in id and payload share a shape: fewer arguments to send.)
-- Returns: {now_ms, then per job: 'queued' or 'scheduled' for a new job,
--           or {existing id, status, fingerprint} for an existing one}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local jobp, idemp, idem_ttl, notify_cap = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local nshapes = tonumber(ARGV[5])
local shapes = {}
for s = 1, nshapes do
  local b = 5 + (s - 1) * 7
  local delay, run_at = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  local due = -1
  if delay > 0 then due = now + delay elseif run_at >= 0 then due = run_at end
  local status = 'queued'
  if due > now then status = 'scheduled' end
  shapes[s] = {ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 6], ARGV[b + 7], due, status}
end
local out = {now}
local pushed, created, scheduled = {}, 0, 0
for i = 6 + nshapes * 7, #ARGV, 3 do
  local id, payload = ARGV[i], ARGV[i + 1]
  local shape = shapes[tonumber(ARGV[i + 2])]
  local idem, fp = shape[4], shape[5]
  local existing = nil
  if idem ~= '' then
    local old = redis.call('GET', idemp .. idem)
    if old and redis.call('EXISTS', jobp .. old) == 1 then existing = old end
  end
  -- The same id twice (a client retrying after a lost reply) is the same job, not a second one.
  if not existing and redis.call('EXISTS', jobp .. id) == 1 then existing = id end
  if existing then
    local st = redis.call('HMGET', jobp .. existing, 'status', 'fp')
    out[#out + 1] = {existing, st[1] or '', st[2] or ''}
  else
    local status = shape[7]
    local key = jobp .. id
    redis.call('HSET', key, 'type', shape[1], 'payload', payload, 'retries', shape[2],
      'timeout', shape[3], 'status', status, 'enqueued_at', now, 'attempts', 0,
      'failures', 0, 'lost', 0, 'fp', fp)
    if idem ~= '' then
      redis.call('SET', idemp .. idem, id, 'PX', idem_ttl)
      redis.call('HSET', key, 'idem', idem)
    end
    if status == 'scheduled' then
      redis.call('ZADD', KEYS[2], shape[6], id)
      redis.call('HSET', key, 'run_at', shape[6])
      scheduled = scheduled + 1
    else
      pushed[#pushed + 1] = id
    end
    created = created + 1
    out[#out + 1] = status
  end
end
-- one RPUSH for the whole batch, in order (unpack in slices: Lua's stack is limited)
for s = 1, #pushed, 500 do
  redis.call('RPUSH', KEYS[1], unpack(pushed, s, math.min(s + 499, #pushed)))
end
if created > 0 then redis.call('HINCRBY', KEYS[4], 'enqueued', created) end
-- A scheduled job wakes one idle worker too, so it learns the new due time now rather than
-- at the end of its idle wait (up to 5 s late).
if (#pushed > 0 or scheduled > 0) and redis.call('LLEN', KEYS[3]) < notify_cap then
  redis.call('RPUSH', KEYS[3], '1')
end
return out
