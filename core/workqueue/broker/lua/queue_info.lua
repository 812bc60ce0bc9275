-- One (physical) queue's overview, read-only: its depth per status (queued counts every
-- priority level's list), the enqueue time of the oldest job waiting at the head of a level,
-- whether it is paused and its number of partitions (settings; 1 when unset).
-- KEYS: 1 queued, 2 scheduled, 3 retry, 4 active, 5 completed, 6 failed, 7 cancelled index
--       (a key of another type or absent counts 0), 8 settings
-- ARGV: 1 job key prefix
-- Returns: {queued, scheduled, retrying, active, completed, failed, cancelled,
--           oldest waiting enqueued_at ms (-1: none), paused (0|1), partitions, now_ms,
--           [level, depth]* (the levels with jobs)}
-- (The clock is read here, so the caller needs no TIME: on a cluster the calls go to
-- several masters at once.)
local jobp = ARGV[1]
local function zcard(key)
  local n = redis.pcall('ZCARD', key)
  if type(n) == 'number' then return n end
  return 0
end
local queued, oldest, levels = 0, -1, {}
for p = PRIO_MAX, 0, -1 do
  local list = queued_list(KEYS[1], p)
  local n = redis.call('LLEN', list)
  if n > 0 then
    queued = queued + n
    levels[#levels + 1] = p
    levels[#levels + 1] = n
    local head = redis.call('LINDEX', list, 0)
    local f = head and fields(jobp .. head, 'enqueued_at')
    local at = f and tonumber(f[1])
    if at and (oldest < 0 or at < oldest) then oldest = at end
  end
end
local s = fields(KEYS[8], 'paused', 'partitions') or {}
local parts = int_field(s[2])
if not parts or parts < 1 then parts = 1 end
local out = {queued, zcard(KEYS[2]), zcard(KEYS[3]), zcard(KEYS[4]), zcard(KEYS[5]),
             zcard(KEYS[6]), zcard(KEYS[7]), oldest, s[1] == '1' and 1 or 0, parts, now_ms()}
for _, v in ipairs(levels) do out[#out + 1] = v end
return out
