-- Cancel one job, atomically (SPEC 11). A queued, scheduled or retrying job is removed from
-- its index and ends 'cancelled' now (control.lua's end_cancelled: counted in the stats
-- field 'cancelled', kept for the failed retention in KEYS[4]). An active job is asked to stop:
-- its record gets cancel = '1' (renew.lua tells its worker; the finish op or, if its worker is
-- gone, housekeeping's lease recovery then ends it cancelled). A finished job is left alone.
-- Cost: a queued job is found with one LREM (O(queue length)); the others are O(log N).
-- KEYS: 1 queued, 2 scheduled, 3 retry, 4 cancelled, 5 stats, 6 settings, 7 ledger,
--       8 the job's record
-- ARGV: 1 job id, 2 idempotency key prefix, 3 default failed retention ms
-- Returns: {outcome, status before, record fields as HGETALL (after the change)} with outcome
--   cancelled (ended now) | cancelling (active: asked to stop) | finished (status before is
--   completed, failed or cancelled: nothing done) | missing (no record)
local now = now_ms()
local id, key = ARGV[1], KEYS[8]
local f = fields(key, 'status', 'type', 'idem', 'priority')
if not f or not f[1] then return {'missing', ''} end
local st = f[1]
local INDEX = {queued = true, scheduled = KEYS[2], retrying = KEYS[3]}
if st == 'active' then
  redis.call('HSET', key, 'cancel', '1')
  return {'cancelling', st, redis.call('HGETALL', key)}
end
if not INDEX[st] then return {'finished', st, redis.call('HGETALL', key)} end
-- the index entry goes first (a freeing write: this still works at maxmemory)
if st == 'queued' then
  redis.call('LREM', queued_list(KEYS[1], prio_of(f[4])), 0, id)  -- H4: its priority's list
else
  redis.call('ZREM', INDEX[st], id)
end
local before = redis.call('HGETALL', key)
local q = queue_settings(KEYS[6], 0, ARGV[3], 0)
q.cancelled, q.stats, q.ledger, q.idemp = KEYS[4], KEYS[5], KEYS[7], ARGV[2]
local why = st == 'retrying' and 'cancelled while waiting to retry' or 'cancelled before it ran'
end_cancelled(q, key, id, f[2], f[3], now, why, false, false)
if redis.call('EXISTS', key) == 1 then return {'cancelled', st, redis.call('HGETALL', key)} end
-- not kept (failed retention 0): answer the record as it was, now cancelled
for _, v in ipairs({'status', 'cancelled', 'finished_at', tostring(now), 'error', why}) do
  before[#before + 1] = v
end
return {'cancelled', st, before}
