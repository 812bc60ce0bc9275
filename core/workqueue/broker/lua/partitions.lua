-- The partition layout of one queue, kept in its partition-0 settings hash (see
-- workqueue/broker/partitions.py): fields partitions (N), partitions_draining and
-- partitions_retired (comma-separated earlier N, largest first) and partitions_changed_ms.
-- This script is their only writer, so a change of N and the retiring of a drained layout
-- never undo each other.
-- KEYS: 1 settings of partition 0
-- ARGV: 1 op, then
--   'set':    2 N (1..256)
--     N becomes current; the former N joins the draining layouts (its partitions may hold
--     records); N leaves the draining and retired ones. Same N: nothing changes.
--     Returns {N, draining, retired, changed_ms}.
--   'retire': 2 layout n, 3 the N read, 4 the draining list read, 5 grace ms
--     Moves n from draining to retired when the layout is still as read and N has not
--     changed for the grace. Returns 1 when moved, else 0.

local function parse(v)
  local out = {}
  if not v then return out end
  for part in string.gmatch(v, '[^,]+') do
    local n = tonumber(part)
    if n and n >= 1 and n == math.floor(n) then out[#out + 1] = n end
  end
  return out
end

-- The list without `drop` (and without duplicates), largest first, as stored.
local function canon(list, drop)
  local seen, out = {}, {}
  for _, n in ipairs(list) do
    if n ~= drop and not seen[n] then seen[n] = true; out[#out + 1] = n end
  end
  table.sort(out, function(a, b) return a > b end)
  return out
end

local settings = KEYS[1]
local f = redis.call('HMGET', settings, 'partitions', 'partitions_draining',
                     'partitions_retired', 'partitions_changed_ms')
local current = tonumber(f[1]) or 1
local draining = canon(parse(f[2]), current)
local retired = canon(parse(f[3]), current)

if ARGV[1] == 'set' then
  local n = tonumber(ARGV[2])
  if n ~= current then
    draining[#draining + 1] = current
    draining = canon(draining, n)
    local in_draining = {}
    for _, d in ipairs(draining) do in_draining[d] = true end
    local kept = {}
    for _, r in ipairs(retired) do
      if not in_draining[r] then kept[#kept + 1] = r end
    end
    retired = canon(kept, n)
    redis.call('HSET', settings, 'partitions', n,
               'partitions_draining', table.concat(draining, ','),
               'partitions_retired', table.concat(retired, ','),
               'partitions_changed_ms', now_ms())
    current = n
  end
  return {current, table.concat(draining, ','), table.concat(retired, ','),
          redis.call('HGET', settings, 'partitions_changed_ms') or '0'}
end

if ARGV[1] == 'retire' then
  local n = tonumber(ARGV[2])
  if current ~= tonumber(ARGV[3]) or table.concat(draining, ',') ~= ARGV[4] then return 0 end
  local changed = tonumber(f[4]) or 0
  if now_ms() - changed < tonumber(ARGV[5]) then return 0 end
  local kept, found = {}, false
  for _, d in ipairs(draining) do
    if d == n then found = true else kept[#kept + 1] = d end
  end
  if not found then return 0 end
  retired[#retired + 1] = n
  redis.call('HSET', settings, 'partitions_draining', table.concat(kept, ','),
             'partitions_retired', table.concat(canon(retired, current), ','))
  return 1
end

return redis.error_reply('partitions.lua: unknown op ' .. tostring(ARGV[1]))
