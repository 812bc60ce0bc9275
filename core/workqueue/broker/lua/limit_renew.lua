-- Limits: extend the concurrency slots a worker holds (its runs of limited types go on),
-- on Redis's clock. A holder already dropped (its deadline passed) stays dropped: its slot
-- may have been taken since, and the job's queue lease has expired too.
-- KEYS: 1 holders
-- ARGV: 1 lease ms, then holder members (queue \n id \n token)
-- Returns: the number of holders extended
local deadline = now_ms() + tonumber(ARGV[1]) + 1000
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', KEYS[1], 'XX', 'GT', 'CH', deadline, ARGV[i])
end
return n
