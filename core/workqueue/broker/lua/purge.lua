-- Delete finished jobs of one queue (operator purge), one batch per call, atomically.
-- Only records whose status is the index's own (completed or failed) are deleted, with their
-- ledger entry and their idempotency key (when it still names them); an index entry whose
-- record is gone is dropped; an unfinished job is never touched (a stray entry pointing at one
-- is only removed from the finished index).
-- KEYS: 1 the finished index (completed or failed ZSET), 2 ledger (optional: older callers)
-- ARGV: 1 job key prefix, 2 idempotency key prefix, 3 status ('completed'|'failed'),
--       4 batch size, 5 cutoff ms ('' = now: entries finished later are left for later calls)
-- Returns: {cutoff_ms, entries examined, records deleted}
local jobp, idemp, status = ARGV[1], ARGV[2], ARGV[3]
local batch = tonumber(ARGV[4])
local cutoff = tonumber(ARGV[5]) or now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, batch)
local dels, gone, deleted = {}, {}, 0
for _, id in ipairs(ids) do
  local key = jobp .. id
  local f = fields(key, 'status', 'idem')
  if f and f[1] == status then
    dels[#dels + 1] = key
    gone[#gone + 1] = id
    deleted = deleted + 1
    if f[2] and f[2] ~= '' and redis.call('GET', idemp .. f[2]) == id then
      dels[#dels + 1] = idemp .. f[2]
    end
  elseif f and not f[1] and redis.call('EXISTS', key) == 0 then
    gone[#gone + 1] = id
  end
end
each_chunk(ids, function(...) redis.call('ZREM', KEYS[1], ...) end)
each_chunk(dels, function(...) redis.call('DEL', ...) end)
if KEYS[2] then each_chunk(gone, function(...) redis.call('ZREM', KEYS[2], ...) end) end
return {cutoff, #ids, deleted}
