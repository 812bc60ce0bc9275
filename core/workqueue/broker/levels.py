"""Priority levels of a queue's waiting jobs, as the Lua prelude lays them out (SPEC 12).

Priority 0 waits in ``<p>:{q}:queued``; priority n in 1..9 in ``<p>:{q}:queued:<n>``; the
ZSET ``<p>:{q}:queued:levels`` lists the levels n > 0 that may hold jobs. Readers that count
the waiting jobs must count every level: :data:`QUEUED_FIGURES` does it in one command.
"""

from __future__ import annotations

__all__ = ["PRIORITY_LEVELS", "QUEUED_FIGURES", "QUEUED_HEAD", "level_key", "levels_key"]

#: the priority levels, highest first
PRIORITY_LEVELS = tuple(range(9, -1, -1))

#: EVAL source: {the number of queued jobs over every level, the earliest ``enqueued_at``
#: (ms) of the jobs at the levels' heads, -1 when none} (KEYS[1]: the queued key; a head's
#: record is ``<base>job:<id>`` in the same slot). The head of each level is its oldest job
#: (recovered jobs go back to the front keeping their ``enqueued_at``), so the minimum over
#: the heads is the queue's oldest waiting job.
QUEUED_FIGURES = (
    "local base = string.sub(KEYS[1], 1, -7) "
    "local n, oldest = 0, -1 "
    "for p = 0, 9 do "
    "  local key = KEYS[1] "
    "  if p > 0 then key = key .. ':' .. p end "
    "  local len = redis.call('LLEN', key) "
    "  if len > 0 then "
    "    n = n + len "
    "    local at = redis.pcall('HGET', base .. 'job:' .. redis.call('LINDEX', key, 0), "
    "                           'enqueued_at') "
    "    at = type(at) == 'string' and tonumber(at) or nil "
    "    if at and (oldest < 0 or at < oldest) then oldest = at end "
    "  end "
    "end "
    "return {n, oldest}"
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
