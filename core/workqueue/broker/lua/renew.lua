-- Extend the leases a worker holds on running jobs of one queue (fenced by token).
-- One HMGET of the lease hash checks them all: a lease whose entry carries the caller's token
-- holds (invariant: its record is active under that token) and gets the new deadline (one
-- ZADD for all). Only a lease whose entry is missing or differs is judged on its record: a
-- record active under the caller's token holds too (its lease entry was lost, e.g. a partial
-- restore) and both its lease entry and its active entry are written again, so the job is
-- neither abandoned by its live worker nor left active without a lease; else it is lost.
-- A held lease whose record has cancel = '1' (cancel.lua: the job was asked to stop) is also
-- answered, so the worker stops that run and reports the op 'cancel' (control.lua).
-- KEYS: 1 active, 2 leases, then one job record key per lease, in order
-- ARGV: 1 lease ms, then pairs: id, token (in the order of the record keys)
-- Returns: {lost, cancel}: the ids whose lease is no longer held under the token (lost: do not
--   ack them), and the ids held whose job is asked to cancel.
-- Cost per call: TIME, HMGET, ZREM, ZADD (one per 500 leases); one HGET per lease held (the
-- cancel flag); HMGET per lease not held.
local now = now_ms()
local deadline = now + tonumber(ARGV[1])
local ids = {}
for i = 2, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
local live = hmget_all(KEYS[2], ids)
local zargs, lost, restore, cancel = {}, {}, {}, {}
for n, id in ipairs(ids) do
  local token = ARGV[2 * n + 1]
  local held = lease_token(live[n]) == token
  if not held then
    local f = fields(KEYS[2 + n], 'token', 'status', 'type', 'idem')
    held = f and f[1] == token and f[2] == 'active'
    if held then
      restore[#restore + 1] = id
      restore[#restore + 1] = lease_value(token, f[3], f[4])
    end
  end
  if held then
    local c = fields(KEYS[2 + n], 'cancel')
    if c and c[1] == '1' then cancel[#cancel + 1] = id end
    zargs[#zargs + 1] = deadline
    zargs[#zargs + 1] = id
  else
    lost[#lost + 1] = id
  end
end
if #zargs > 0 then
  -- First a freeing write (ZREM): Redis at maxmemory (noeviction) refuses a script's
  -- memory-growing command (ZADD) only until the script has written, and a lease that
  -- cannot be renewed while enqueues are refused would send a live job to another worker.
  redis.call('ZREM', KEYS[1], zargs[2])
  each_chunk(zargs, function(...) redis.call('ZADD', KEYS[1], ...) end)
  each_chunk(restore, function(...) redis.call('HSET', KEYS[2], ...) end)
end
return {lost, cancel}
