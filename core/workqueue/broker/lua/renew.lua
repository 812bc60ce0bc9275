-- Extend the leases a worker holds on running jobs of one queue (fenced by token).
-- KEYS: 1 active
-- ARGV: 1 job key prefix, 2 lease ms, then pairs: id, token
-- Returns: the ids whose lease is no longer this worker's (lost: do not ack them).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local jobp, lease = ARGV[1], tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local f = redis.call('HMGET', jobp .. id, 'token', 'status')
  if f[1] == token and f[2] == 'active' and redis.call('ZSCORE', KEYS[1], id) then
    redis.call('ZADD', KEYS[1], 'XX', now + lease, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
