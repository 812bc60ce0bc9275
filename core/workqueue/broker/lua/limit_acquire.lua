-- Limits (SPEC 12): admit jobs of one limit bucket, or tell each when to come back.
-- A bucket is a job type, or a (type, limit_key); its keys carry their own hash tag
-- {limit:<bucket>}, so this script touches one slot and no queue's.
-- Rate: GCRA (a token bucket of `count` tokens refilled one every period/count): the state is
-- one time, `tat` (the theoretical arrival time); a start is allowed while tat - tau <= now,
-- with tau = period - interval (a burst of up to `count`), and moves tat on by one interval.
-- Concurrency: the holders ZSET (queue, id, token -> lease deadline); a holder whose deadline
-- passed (its worker died; renewals move it) is dropped here, so its slot comes back when its
-- lease expires.
-- A job refused joins the waiting ZSET (queue, id -> when it first waited: FIFO) and is told
-- when to come back: rate: its turn at the steady spacing behind the waiters ahead of it
-- (`ahead * interval` after the next permit), so waiters return one by one, never in a herd;
-- concurrency: when the earliest holder's lease could expire, later by one lease per `conc`
-- waiters ahead (a safety net: a release wakes the first waiters at once, limit_release.lua).
-- KEYS: 1 state (HASH tat, cfg), 2 holders, 3 waiting
-- ARGV: 1 rate count (0: no rate limit), 2 period ms, 3 concurrency (0: none), 4 lease ms,
--       then triples: queue, job id, token
-- Returns: {now, then per job: 1 (admitted) or the time to come back (ms, Redis clock)}
local now = now_ms()
local count, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local conc, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local interval, tau, tat = 0, 0, now
if count > 0 then
  interval = period / count
  tau = period - interval
  tat = math.max(tonumber(redis.call('HGET', KEYS[1], 'tat') or '0') or 0, now)
end
local held = 0
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  held = redis.call('ZCARD', KEYS[2])
end

-- the waiting list is read once: a bucket nobody waits in costs no ZREM per admitted job
local waiters = redis.call('ZCARD', KEYS[3]) > 0
local out = {now}
local latest = now + lease
local deadline = now + lease + 1000  -- a holder outlives its job's queue lease a little
local changed = false
for i = 5, #ARGV, 3 do
  local member = ARGV[i] .. '\n' .. ARGV[i + 1]
  local holder = member .. '\n' .. ARGV[i + 2]
  local conc_ok = conc == 0 or held < conc
  local rate_ok = count == 0 or tat - tau <= now
  -- a repeated call (its reply was lost) finds its holder: still admitted (looked up only
  -- when the slots are full: below the limit, ZADD of the same holder changes nothing)
  if not conc_ok and redis.call('ZSCORE', KEYS[2], holder) then
    out[#out + 1] = 1  -- a repeated call (its reply was lost): still admitted
  elseif conc_ok and rate_ok then
    if count > 0 then tat = tat + interval; changed = true end
    if conc > 0 then
      held = held + redis.call('ZADD', KEYS[2], deadline, holder)
    end
    if waiters then redis.call('ZREM', KEYS[3], member) end
    out[#out + 1] = 1
  else
    redis.call('ZADD', KEYS[3], 'NX', now, member)
    waiters = true
    local ahead = redis.call('ZRANK', KEYS[3], member)
    local at = now
    if not rate_ok then at = math.max(at, math.ceil(tat - tau + ahead * interval)) end
    if not conc_ok then
      local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      local earliest = tonumber(first[2] or now)
      at = math.max(at, earliest + math.floor(ahead / conc) * lease + 1)
    end
    if at > latest then latest = at end
    out[#out + 1] = at
  end
end
if changed then redis.call('HSET', KEYS[1], 'tat', string.format('%.3f', tat)) end
-- Idle buckets (e.g. one per customer) vanish by themselves: every key outlives what it
-- records (the last permit, the last holder's deadline, the last come-back time).
local ttl = math.max(period, latest - now, lease) + 60000
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ttl) end
return out
