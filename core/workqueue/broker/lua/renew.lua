-- Extend the leases a worker holds on running jobs of one queue (fenced by token).
-- A job whose record is active under the caller's token holds: if its lease entry is missing
-- (an inconsistent state, e.g. a partial restore) the entry is written again, so the job is
-- neither abandoned by its live worker nor left active without a lease.
-- KEYS: 1 active, then one job record key per lease, in order
-- ARGV: 1 lease ms, then pairs: id, token (in the order of the record keys)
-- Returns: the ids whose lease is no longer held under the token (lost: do not ack them).
local now = now_ms()
local deadline = now + tonumber(ARGV[1])
local lost = {}
local wrote = false
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local f = fields(KEYS[1 + i / 2], 'token', 'status')
  if f and f[1] == token and f[2] == 'active' then
    -- First write a freeing ZREM: Redis at maxmemory (noeviction) refuses a script's
    -- memory-growing command (ZADD) only until the script has written, and a lease that
    -- cannot be renewed while enqueues are refused would send a live job to another worker.
    if not wrote then
      redis.call('ZREM', KEYS[1], id)
      wrote = true
    end
    redis.call('ZADD', KEYS[1], deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
