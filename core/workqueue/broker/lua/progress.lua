-- Write the progress a handler reported (ctx.set_progress) into job records, fenced: a value
-- is written only while the job's live lease (KEYS[1], the lease hash: an entry exists iff
-- the record is active under that token) is the reporting attempt's, so a superseded attempt
-- cannot overwrite the progress of the attempt that replaced it.
-- KEYS: 1 leases, then one job record key per value, in order
-- ARGV: triples: id, token, value (JSON text, at most 4 KB: the worker checks)
-- Returns: the ids whose value was refused (the lease is no longer held under that token).
-- Cost per call: one HMGET of the lease hash, one HSET per value written.
local ids = {}
for i = 1, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
local live = hmget_all(KEYS[1], ids)
local refused = {}
for n, id in ipairs(ids) do
  if lease_token(live[n]) == ARGV[3 * n - 1] then
    redis.call('HSET', KEYS[1 + n], 'progress', ARGV[3 * n])
  else
    refused[#refused + 1] = id
  end
end
return refused
