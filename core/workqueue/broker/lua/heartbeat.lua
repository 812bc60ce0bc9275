-- Record a worker's heartbeat on Redis's clock and forget workers that stopped beating.
-- Stamped with Redis TIME, not the worker's clock: a worker whose clock runs ahead must not
-- make the others look dead (nor one running behind look dead itself).
-- KEYS: 1 workers (ZSET worker id -> last heartbeat ms)
-- ARGV: 1 worker id, 2 ms after which a silent worker is forgotten
-- Returns: now_ms
local now = now_ms()
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return now
