-- Delete finished jobs of one queue (operator purge), one batch per call, atomically.
-- Only records whose status is the index's own (completed or failed) are deleted; an index
-- entry whose record has already expired is dropped; an unfinished job is never touched
-- (a stray entry pointing at one is only removed from the finished index).
-- KEYS: 1 the finished index (completed or failed ZSET)
-- ARGV: 1 job key prefix, 2 idempotency key prefix, 3 status ('completed'|'failed'),
--       4 batch size, 5 cutoff ms ('' = now: entries finished later are left for later calls)
-- Returns: {cutoff_ms, entries examined, records deleted}
local jobp, idemp, status = ARGV[1], ARGV[2], ARGV[3]
local batch = tonumber(ARGV[4])
local cutoff = tonumber(ARGV[5])
if not cutoff then
  local t = redis.call('TIME')
  cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, batch)
local deleted = 0
for _, id in ipairs(ids) do
  local key = jobp .. id
  local f = redis.call('HMGET', key, 'status', 'idem')
  if f[1] == status then
    redis.call('DEL', key)
    if f[2] and f[2] ~= '' and redis.call('GET', idemp .. f[2]) == id then
      redis.call('DEL', idemp .. f[2])
    end
    deleted = deleted + 1
  end
  redis.call('ZREM', KEYS[1], id)
end
return {cutoff, #ids, deleted}
