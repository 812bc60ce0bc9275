-- Limits: give concurrency slots back (a run of a limited type ended) and wake the first
-- waiters the freed slots can take. One bucket (see limit_acquire.lua).
-- Waiters are woken for when the rate allows a start too (now, or its next permit). A woken
-- waiter is removed from the list; it takes its turn again in acquire (a slot is not
-- reserved for it: if another job took it, it waits again, at the back of the list).
-- KEYS: 1 state, 2 holders, 3 waiting
-- ARGV: 1 rate count (0: none), 2 period ms, 3 concurrency (0: none), then holder members
--       (queue \n id \n token)
-- Returns: {} or {when to wake them (ms, Redis clock), then queue, id of each waiter}
local now = now_ms()
local count, period, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if #ARGV > 3 then redis.call('ZREM', KEYS[2], unpack(ARGV, 4)) end
if conc <= 0 then return {} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local free = conc - redis.call('ZCARD', KEYS[2])
if free <= 0 then return {} end
-- when the rate allows the next start (now, or the next permit)
local at = now
if count > 0 then
  local interval = period / count
  local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0') or 0
  at = math.max(now, math.ceil(tat - (period - interval)))
end
local out = {at}
local popped = redis.call('ZPOPMIN', KEYS[3], free)
for i = 1, #popped, 2 do  -- member, score pairs
  local m = popped[i]
  local a = string.find(m, '\n', 1, true)
  if a then
    out[#out + 1] = string.sub(m, 1, a - 1)
    out[#out + 1] = string.sub(m, a + 1)
  end
end
return out
