-- Enqueue a batch of jobs into one queue, atomically.
-- KEYS: 1 queued, 2 scheduled, 3 notify, 4 stats
-- ARGV: 1 job key prefix, 2 idempotency key prefix, 3 idempotency ttl ms, 4 notify cap,
--       then 9 fields per job: id, type, payload, retries, timeout, delay_ms, run_at_ms,
--       idempotency key ('' = none), fingerprint
-- Returns: {now_ms, then per job: id, status, duplicate ('1'/'0'), fingerprint}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local jobp, idemp, idem_ttl, notify_cap = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {now}
local pushed, created, scheduled = 0, 0, 0
for i = 5, #ARGV, 9 do
  local id, typ, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local delay, run_at = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 6])
  local idem, fp = ARGV[i + 7], ARGV[i + 8]
  local existing = nil
  if idem ~= '' then
    local old = redis.call('GET', idemp .. idem)
    if old and redis.call('EXISTS', jobp .. old) == 1 then existing = old end
  end
  -- The same id twice (a client retrying after a lost reply) is the same job, not a second one.
  if not existing and redis.call('EXISTS', jobp .. id) == 1 then existing = id end
  if existing then
    local st = redis.call('HMGET', jobp .. existing, 'status', 'fp')
    out[#out + 1] = existing
    out[#out + 1] = st[1] or ''
    out[#out + 1] = '1'
    out[#out + 1] = st[2] or ''
  else
    local due = -1
    if delay > 0 then due = now + delay elseif run_at >= 0 then due = run_at end
    local status = 'queued'
    if due > now then status = 'scheduled' end
    local key = jobp .. id
    redis.call('HSET', key, 'type', typ, 'payload', payload, 'retries', ARGV[i + 3],
      'timeout', ARGV[i + 4], 'status', status, 'enqueued_at', now, 'attempts', 0,
      'failures', 0, 'lost', 0, 'fp', fp)
    if idem ~= '' then
      redis.call('SET', idemp .. idem, id, 'PX', idem_ttl)
      redis.call('HSET', key, 'idem', idem)
    end
    if status == 'scheduled' then
      redis.call('ZADD', KEYS[2], due, id)
      redis.call('HSET', key, 'run_at', due)
      scheduled = scheduled + 1
    else
      redis.call('RPUSH', KEYS[1], id)
      pushed = pushed + 1
    end
    created = created + 1
    out[#out + 1] = id
    out[#out + 1] = status
    out[#out + 1] = '0'
    out[#out + 1] = fp
  end
end
if created > 0 then redis.call('HINCRBY', KEYS[4], 'enqueued', created) end
-- A scheduled job wakes one idle worker too, so it learns the new due time now rather than
-- at the end of its idle wait (up to 5 s late).
if (pushed > 0 or scheduled > 0) and redis.call('LLEN', KEYS[3]) < notify_cap then
  redis.call('RPUSH', KEYS[3], '1')
end
return out
