-- Prelude: prepended by scripts.py to every script, the one source of the helpers below, so
-- the scripts cannot drift apart (one clock, one corrupt-counter policy, one capped wake-up,
-- one fail-for-good, one retention rule).
--
-- Job record (HASH <p>:{q}:job:<id>) fields:
--   type, payload, retries, timeout, status, enqueued_at, attempts, failures, lost, fp,
--   idem (its idempotency key, if any), run_at (scheduled/retrying), token (fencing token of
--   the last lease), worker, started_at, finished_at, result, error,
--   applied (what the last finish op with this token did: a repeat answers it),
--   priority (0-9; absent: 0), uniq (the unique-job key naming this job, if unique).
-- The live lease of an active record is also in <p>:{q}:leases (see lease_value).

-- Redis's clock in ms (every time in a record or index is on this clock).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A counter field read as an integer: absent is 0; anything else that is not an integer is nil.
local function int_field(v)
  if not v or v == '0' then return 0 end  -- the common case, without a pattern match
  if #v > 18 or not string.match(v, '^%-?%d+$') then return nil end
  return tonumber(v)
end

-- Add one to a counter field of a record; a corrupt value restarts from 0 (never an error
-- that would refuse a whole batch).
local function incr(key, field)
  local v = (int_field(redis.call('HGET', key, field)) or 0) + 1
  redis.call('HSET', key, field, v)
  return v
end

-- The one wake-up: one token wakes one idle worker's BLPOP; capped, so a queue nobody
-- consumes never grows an unbounded list of tokens.
local function wake(notify, cap)
  if redis.call('LLEN', notify) < cap then redis.call('RPUSH', notify, '1') end
end

-- HMGET that treats a key of another type (not a job record) as no record at all: nil.
local function fields(key, ...)
  local f = redis.pcall('HMGET', key, ...)
  if f.err then return nil end
  return f
end

-- Variadic commands in chunks: unpack() of a huge table would overflow the Lua stack.
local function each_chunk(items, fn)
  for i = 1, #items, 1000 do
    fn(unpack(items, i, math.min(i + 999, #items)))
  end
end

-- HMGET of many fields of one hash (chunked): the values in order, false where absent.
local function hmget_all(key, names)
  local out = {}
  each_chunk(names, function(...)
    for _, v in ipairs(redis.call('HMGET', key, ...)) do out[#out + 1] = v end
  end)
  return out
end

-- A live lease entry (<p>:{q}:leases, id -> value): token, type and idempotency key in one
-- string, the key last. Invariant: an entry exists iff the job's record is active under that
-- token (reserve writes it; whatever ends the lease removes it), so finish and renew check a
-- whole batch with one HMGET instead of a read per record.
local function lease_value(token, typ, idem)  -- token: a string
  return token .. '\n' .. (typ or '') .. '\n' .. (idem or '')
end

-- The token of an entry read back (nil: no entry), and where the rest starts (after the
-- token's newline).
local function lease_token(v)
  if not v then return nil end
  local a = string.find(v, '\n', 1, true)
  if not a then return v, #v + 1 end
  return string.sub(v, 1, a - 1), a + 1
end

-- The rest of an entry, after its token: {type, idempotency key}; nil when a newline in the
-- type or the key (a tampered record) makes it ambiguous (callers read the record instead).
local function lease_parts(rest)
  local b = string.find(rest, '\n', 1, true)
  if not b or string.find(rest, '\n', b + 1, true) then return nil end
  return {string.sub(rest, 1, b - 1), string.sub(rest, b + 1)}
end

-- A non-negative integer setting from the queue's settings hash, else the caller's default.
local function setting(v, default)
  local n = int_field(v)
  if v and n and n >= 0 then return n end
  return tonumber(default)
end

-- The queue's fleet-wide settings (one HMGET of <p>:{q}:settings); ARGV defaults from the
-- calling process's configuration for the fields nobody has set.
local function queue_settings(key, d_done, d_failed, d_lost)
  local s = fields(key, 'completed_ttl_ms', 'failed_ttl_ms', 'max_lost_leases', 'paused') or {}
  return {done_ttl = setting(s[1], d_done), failed_ttl = setting(s[2], d_failed),
          max_lost = setting(s[3], d_lost), paused = s[4] == '1'}
end

-- Entries not run as they are, reported to the caller as {id, reason, type} (reason: orphan =
-- an index entry without a record, stray = an entry whose record is in another state,
-- invalid = a record that cannot be run); orphans and strays are counted in the stats hash
-- as '<reason>s' (pass stats = nil for an entry counted otherwise: an invalid one is 'failed').
local dropped = {}
local function drop(stats, id, reason, typ)
  if stats then redis.call('HINCRBY', stats, reason .. 's', 1) end
  dropped[#dropped + 1] = id
  dropped[#dropped + 1] = reason
  dropped[#dropped + 1] = typ or ''
end

-- Unique jobs (SPEC 12): the key <p>:{q}:uniq:<fingerprint of type and canonical payload>
-- names the unfinished job of that fingerprint (the record keeps the key's name in 'uniq').
-- It is free the moment its job is final (completed, failed, cancelled): enqueue treats a key
-- naming a final or gone job as free and takes it over. It is deleted with its record: by
-- retain when the record is not kept (retention 0), by delete_finished when housekeeping or
-- a purge trims it; so the finish fast path reads nothing more for it. uniqk: the key name,
-- or nil to read it from the record (false or '': known to be none).
local FINAL = {completed = true, failed = true, cancelled = true}
local function unique_release(key, id, uniqk)
  if uniqk == nil then
    local u = redis.pcall('HGET', key, 'uniq')
    if type(u) == 'string' then uniqk = u end
  end
  if uniqk and uniqk ~= '' and redis.call('GET', uniqk) == id then redis.call('DEL', uniqk) end
end

-- The retention rule, applied when a job finishes (completed or failed). ttl 0: not kept, the
-- record and its ledger entry go now. Else the record stays (no PEXPIRE: housekeeping trims it
-- from its finished index past the ttl). Either way its idempotency key never outlives it:
-- deleted with it, or made to expire no later than the record is due to go (PEXPIRE LT).
-- A record not kept takes its unique-job key along (uniqk as for unique_release).
-- Returns true when the record is kept (the caller then writes it and indexes it); else false
-- and whether there was a record to delete.
local function retain(key, id, ttl, ledger, idemp, idem, uniqk)
  if ttl <= 0 then unique_release(key, id, uniqk) end
  if idem and idem ~= '' then
    local ik = idemp .. idem
    if redis.call('GET', ik) == id then
      if ttl > 0 then redis.call('PEXPIRE', ik, ttl, 'LT') else redis.call('DEL', ik) end
    end
  end
  if ttl > 0 then return true end
  local existed = redis.call('DEL', key) == 1
  redis.call('ZREM', ledger, id)
  return false, existed
end

-- Delete the finished records of `ids` (entries of the finished index `index`) whose status is
-- `status`, each with its idempotency key when that still names it, in one DEL per chunk, and
-- remove the entries from the index and the ledger (a record that is gone leaves the ledger
-- too; an entry whose record is in another state is only removed from the index).
-- Returns the number of records deleted.
local function delete_finished(index, ledger, ids, status, jobp, idemp)
  local dels, gone, deleted = {}, {}, 0
  for _, id in ipairs(ids) do
    local key = jobp .. id
    local f = fields(key, 'status', 'idem', 'uniq')
    if f and f[1] == status then
      dels[#dels + 1] = key
      gone[#gone + 1] = id
      deleted = deleted + 1
      if f[2] and f[2] ~= '' and redis.call('GET', idemp .. f[2]) == id then
        dels[#dels + 1] = idemp .. f[2]
      end
      if f[3] and f[3] ~= '' and redis.call('GET', f[3]) == id then dels[#dels + 1] = f[3] end
    elseif f and not f[1] and redis.call('EXISTS', key) == 0 then
      gone[#gone + 1] = id
    end
  end
  each_chunk(ids, function(...) redis.call('ZREM', index, ...) end)
  each_chunk(dels, function(...) redis.call('DEL', ...) end)
  each_chunk(gone, function(...) redis.call('ZREM', ledger, ...) end)
  return deleted
end

-- Fail a job for good outside a worker's report (lost too often, or an invalid record).
-- q: {failed = failed index, stats, ledger, idemp, failed_ttl}. The token is cleared: a late
-- report from the last lease is refused as stale.
local function fail_for_good(q, key, id, typ, idem, now, err)
  redis.call('HINCRBY', q.stats, 'failed', 1)
  if typ and typ ~= '' then redis.call('HINCRBY', q.stats, 'failed|' .. typ, 1) end
  if retain(key, id, q.failed_ttl, q.ledger, q.idemp, idem) then
    redis.call('HSET', key, 'status', 'failed', 'finished_at', now, 'token', '', 'error', err)
    redis.call('ZADD', q.failed, now, id)
  end
end

-- Priorities (SPEC 12): a queued job of priority 0 waits in the queued LIST itself
-- (<p>:{q}:queued); one of priority n in 1..9 in <p>:{q}:queued:<n>, a name derived from the
-- declared queued key (same hash tag, same slot). The ZSET <p>:{q}:queued:levels holds each
-- level n > 0 whose list may be non-empty (member and score n): pushing adds it, a pop that
-- finds the list empty removes it, housekeeping's check puts back a missing one. Reserve
-- reads the levels (one ZRANGE of at most 9 members: nothing when no priority is used) and
-- pops the highest level first, FIFO within one: its cost does not grow with the queue.
local PRIO_MAX = 9

-- A priority as stored or sent (anything else: 0), as an integer 0..PRIO_MAX.
local function prio_of(v)
  local n = tonumber(v)
  if not n or n < 1 then return 0 end
  n = math.floor(n)
  if n > PRIO_MAX then return PRIO_MAX end
  return n
end

-- The list of one level (0: the queued key itself).
local function queued_list(queued, prio)
  if prio == 0 then return queued end
  return queued .. ':' .. prio
end

local function levels_key(queued)
  return queued .. ':levels'
end

-- Push ids (a table, all of one priority) to the back of their level's list, or to the front
-- (front = true: jobs that had waited their turn already; LPUSH reverses a batch, as before).
local function push_queued(queued, prio, ids, front)
  if #ids == 0 then return end
  local p = prio_of(prio)
  local list = queued_list(queued, p)
  local cmd = front and 'LPUSH' or 'RPUSH'
  each_chunk(ids, function(...) redis.call(cmd, list, ...) end)
  if p > 0 then redis.call('ZADD', levels_key(queued), p, p) end
end

-- Ids of mixed priorities gathered per level (group_add), then pushed (push_groups): one
-- push per level, in the order added within a level.
local function group_add(groups, prio, id)
  local p = prio_of(prio)
  local g = groups[p]
  if not g then
    g = {}
    groups[p] = g
  end
  g[#g + 1] = id
end

local function push_groups(queued, groups, front)
  for p, ids in pairs(groups) do push_queued(queued, p, ids, front) end
end

-- Push one job whose priority is in its record (a released job back to the front: finish).
local function push_record(queued, key, id, front)
  local p = redis.pcall('HGET', key, 'priority')
  push_queued(queued, type(p) == 'string' and p or 0, {id}, front)
end

-- Pop up to n queued ids, highest level first, FIFO within a level. Also returns whether
-- any queued job may be left (without a read where the pops already tell).
local function pop_queued(queued, n)
  local out = {}
  local left = false
  local lv = levels_key(queued)
  for _, p in ipairs(redis.call('ZRANGE', lv, 0, -1, 'REV')) do
    local want = n - #out
    if want <= 0 then
      left = true
      break
    end
    local ids = redis.call('LPOP', queued .. ':' .. p, want)
    local got = ids and #ids or 0
    for i = 1, got do out[#out + 1] = ids[i] end
    -- fewer than asked for: the list is empty now (an exact take leaves it to the next pop)
    if got < want then redis.call('ZREM', lv, p) else left = true end
  end
  local want = n - #out
  if want > 0 then
    local ids = redis.call('LPOP', queued, want)
    if ids and #ids == want then left = left or redis.call('LLEN', queued) > 0 end
    if ids then for _, id in ipairs(ids) do out[#out + 1] = id end end
  elseif not left then
    left = redis.call('LLEN', queued) > 0
  end
  return out, left
end

-- Promote up to `limit` due entries of a scheduled or retry index (status = 'scheduled' or
-- 'retrying') to the end of the queued list of their priority. The head is read first, so a
-- call with nothing due costs one ZRANGE. Returns the number promoted, whether the limit
-- was hit, and the index's earliest score when nothing was due (-1: empty; nil: unknown, read it again).
local function promote_due(index, status, queued, stats, jobp, now, limit)
  local head = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
  if not head[2] then return 0, false, -1 end
  if tonumber(head[2]) > now then return 0, false, tonumber(head[2]) end
  local due = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, limit)
  local pushed, n = {}, 0
  each_chunk(due, function(...) redis.call('ZREM', index, ...) end)
  for _, id in ipairs(due) do
    local f = fields(jobp .. id, 'status', 'priority')
    local st = f and f[1]
    if not st then
      drop(stats, id, 'orphan')
    elseif st ~= status then
      drop(stats, id, 'stray')
    else
      redis.call('HSET', jobp .. id, 'status', 'queued')
      group_add(pushed, f[2], id)
      n = n + 1
    end
  end
  push_groups(queued, pushed, false)
  return n, #due >= limit, nil
end

-- The earliest of some scores (-1: none), reading a sorted set's head only where its score is
-- not known yet: `heads` maps key -> known earliest score (-1: empty) or false (unknown).
local function earliest(keys, heads)
  local best = -1
  for _, z in ipairs(keys) do
    local s = heads and heads[z]
    if s == nil or s == false then
      local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
      s = first[2] and tonumber(first[2]) or -1
    end
    if s >= 0 and (best < 0 or s < best) then best = s end
  end
  return best
end

-- Attempt history: the record's field 'history', a JSON array of the last HISTORY_MAX
-- attempts that ended otherwise than by success, oldest first, each {attempt, worker,
-- started_at, finished_at, outcome, error} (times in ms). Written by control.lua's
-- attempt_end; the current attempt is read from the record itself (see control.lua).
local HISTORY_MAX = 25
local HISTORY_ERROR_MAX = 500

local function history_read(key)
  local raw = redis.call('HGET', key, 'history')
  if raw then
    local ok, list = pcall(cjson.decode, raw)
    if ok and type(list) == 'table' then return list end
  end
  return {}
end

-- ---------------------------------------------------------------------------------- script
