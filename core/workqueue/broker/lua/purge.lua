-- Delete finished jobs of one queue (operator purge), one batch per call, atomically.
-- Only records whose status is the index's own (completed or failed) are deleted, with their
-- ledger entry and their idempotency key (when it still names them); an index entry whose
-- record is gone is dropped; an unfinished job is never touched (a stray entry pointing at one
-- is only removed from the finished index).
-- KEYS: 1 the finished index (completed or failed ZSET), 2 ledger
-- ARGV: 1 job key prefix, 2 idempotency key prefix, 3 status ('completed'|'failed'),
--       4 batch size, 5 cutoff ms ('' = now: entries finished later are left for later calls)
-- Returns: {cutoff_ms, entries examined, records deleted}
local jobp, idemp, status = ARGV[1], ARGV[2], ARGV[3]
local batch = tonumber(ARGV[4])
local cutoff = tonumber(ARGV[5]) or now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, batch)
return {cutoff, #ids, delete_finished(KEYS[1], KEYS[2], ids, status, jobp, idemp)}
