-- Check a batch of job records of one queue against the indexes and repair what disagrees.
-- Every script keeps each unfinished record in exactly the index of its status, so a record
-- found outside it was left there by something else (an evicted or restored index key, a
-- manual edit). Repairs:
--   active, no lease entry         -> a lease entry that expires now: the next reserve
--                                     recovers it like any lost lease (requeue, or fail once
--                                     lost too often)
--   scheduled/retrying, no entry   -> the entry again, due at the record's run_at (or now)
--   queued, not in the queue list  -> appended to the list (checked only while the list is
--                                     at most ARGV[2] long: LPOS is linear)
-- KEYS: 1 queued, 2 scheduled, 3 retry, 4 active, 5 stats, 6 notify
-- ARGV: 1 job key prefix, 2 longest queue list to search, then job ids
-- Returns: {id, status, ...} of each record repaired
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local jobp, max_list = ARGV[1], tonumber(ARGV[2])
local search_list = redis.call('LLEN', KEYS[1]) <= max_list
local repaired = {}
local pushed = false
for i = 3, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', jobp .. id, 'status', 'run_at')
  local st, fixed = f[1], false
  if st == 'active' then
    if not redis.call('ZSCORE', KEYS[4], id) then
      redis.call('ZADD', KEYS[4], now, id)
      fixed = true
    end
  elseif st == 'scheduled' or st == 'retrying' then
    local z = KEYS[2]
    if st == 'retrying' then z = KEYS[3] end
    if not redis.call('ZSCORE', z, id) then
      redis.call('ZADD', z, tonumber(f[2]) or now, id)
      fixed = true
    end
  elseif st == 'queued' and search_list then
    if not redis.call('LPOS', KEYS[1], id) then
      redis.call('RPUSH', KEYS[1], id)
      pushed = true
      fixed = true
    end
  end
  if fixed then
    redis.call('HINCRBY', KEYS[5], 'repaired', 1)
    repaired[#repaired + 1] = id
    repaired[#repaired + 1] = st
  end
end
if pushed then redis.call('RPUSH', KEYS[6], '1') end
return repaired
