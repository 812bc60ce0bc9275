"""Priority levels of a queue's waiting jobs, as the Lua prelude lays them out (SPEC 12).

Priority 0 waits in ``<p>:{q}:queued``; priority n in 1..9 in ``<p>:{q}:queued:<n>``; the
ZSET ``<p>:{q}:queued:levels`` lists the levels n > 0 that may hold jobs. Readers that count
the waiting jobs must count every level: :data:`QUEUED_DEPTH` does it in one command.
"""

from __future__ import annotations

__all__ = ["PRIORITY_LEVELS", "QUEUED_DEPTH", "QUEUED_HEAD", "level_key", "levels_key"]

#: the priority levels, highest first
PRIORITY_LEVELS = tuple(range(9, -1, -1))

#: EVAL source: the number of queued jobs over every level (KEYS[1]: the queued key)
QUEUED_DEPTH = (
    "local n = redis.call('LLEN', KEYS[1]) "
    "for p = 1, 9 do n = n + redis.call('LLEN', KEYS[1] .. ':' .. p) end "
    "return n"
)

#: EVAL source: the first ARGV[1] queued ids in the order they will start (highest level
#: first, FIFO within one); KEYS[1]: the queued key
QUEUED_HEAD = (
    "local want, out = tonumber(ARGV[1]), {} "
    "for p = 9, 0, -1 do "
    "  if #out >= want then break end "
    "  local key = KEYS[1] "
    "  if p > 0 then key = key .. ':' .. p end "
    "  for _, id in ipairs(redis.call('LRANGE', key, 0, want - #out - 1)) do "
    "    out[#out + 1] = id "
    "  end "
    "end "
    "return out"
)


def level_key(queued: str, priority: int) -> str:
    """The list of one priority level (0: the queued key itself)."""
    return queued if priority == 0 else f"{queued}:{priority}"


def levels_key(queued: str) -> str:
    """The ZSET of the levels n > 0 that may hold jobs."""
    return f"{queued}:levels"
