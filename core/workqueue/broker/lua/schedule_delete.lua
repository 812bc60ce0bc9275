-- Delete a schedule (its definition and its firing state) and tell the schedulers.
-- KEYS: 1 index (SET of names), 2 the schedule (HASH), 3 version (STRING)
-- ARGV: 1 name
-- Returns: 1 deleted, 0 there was none
local deleted = redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[1], ARGV[1])
if deleted == 1 then redis.call('INCR', KEYS[3]) end
return deleted
