-- Job control helpers (SPEC 11), prepended after the prelude by scripts.py: how an attempt's
-- history entry is closed, and how a job ends cancelled.
--
-- Attempt history without a hot-path cost. The record's 'history' (prelude: a JSON array of
-- the last HISTORY_MAX entries) holds the attempts that ENDED OTHERWISE than by success:
-- failed, timed_out, lost, released, cancelled, written when they end (paths that read the
-- record anyway). The current attempt needs no entry of its own: the record already says its
-- number ('attempts'), 'worker' and 'started_at'; a reader shows it as 'running' while the
-- record is active and 'succeeded' (at 'finished_at') once it is completed. So reserve and
-- ack write no history at all (the hot path stays one HSET per job each).

-- Close the history entry of the attempt that just ended (the record's 'attempts', 'worker',
-- 'started_at'), with outcome and error (nil or text). Nothing when that attempt's entry is
-- closed already or the record has no attempt.
local function attempt_end(key, outcome, now, err)
  local f = fields(key, 'attempts', 'worker', 'started_at')
  local n = f and int_field(f[1])
  if not n or n < 1 then return end
  local list = history_read(key)
  local last = list[#list]
  if last and tonumber(last.attempt) == n then
    if last.outcome ~= 'running' then return end
    table.remove(list)
  end
  list[#list + 1] = {attempt = n, worker = f[2] or '', started_at = tonumber(f[3]) or cjson.null,
                     finished_at = now, outcome = outcome,
                     error = (err and err ~= '') and string.sub(err, 1, HISTORY_ERROR_MAX) or cjson.null}
  while #list > HISTORY_MAX do table.remove(list, 1) end
  redis.call('HSET', key, 'history', cjson.encode(list))
end

-- Cancelling. A running job is asked to stop with the record field cancel = '1' (cancel.lua);
-- renew.lua answers which renewed leases carry it; the worker stops that run and reports the
-- op 'cancel'. Whatever ends an attempt while cancel = '1' (a failure, a timeout, a graceful
-- release, an expired lease) ends the job cancelled instead of retrying or requeueing it;
-- only an ack completes it (the work was done before the request reached it).
-- Status 'cancelled' is final. The record is kept for the queue's FAILED retention in its own
-- index <p>:{q}:cancelled (housekeeping trims it as it trims failed records); its
-- idempotency key follows the same retention rule (prelude's retain).

-- End a job cancelled. q: {cancelled = index, stats, ledger, idemp, failed_ttl}; why: the
-- record's error text and the history entry's error; ran: an attempt was running (its
-- history entry is closed 'cancelled'); keep_token: false clears the token (a late report
-- from the attempt is then stale), true keeps it (finish: a repeat answers 'cancelled').
local function end_cancelled(q, key, id, typ, idem, now, why, ran, keep_token)
  redis.call('HINCRBY', q.stats, 'cancelled', 1)
  if typ and typ ~= '' then redis.call('HINCRBY', q.stats, 'cancelled|' .. typ, 1) end
  if retain(key, id, q.failed_ttl, q.ledger, q.idemp, idem) then
    if ran then attempt_end(key, 'cancelled', now, why) end
    redis.call('HSET', key, 'status', 'cancelled', 'finished_at', now, 'error', why,
      'applied', 'cancelled')
    if not keep_token then redis.call('HSET', key, 'token', '') end
    redis.call('HDEL', key, 'cancel', 'run_at')
    redis.call('ZADD', q.cancelled, now, id)
  end
end
