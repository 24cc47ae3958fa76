"""The frame bus's server-side steps (Lua), each one atomic and one round trip.

Every script is flagged ``allow-oom``: at Redis' ``maxmemory`` (``noeviction``) new frames are refused (the
XADD, and with it the transaction it is in), but reading, dropping stale frames and writing results must go
on, because they are what frees the memory (a result record is ~1 KB, the frame it removes ~150 KB).

* :data:`TRIM_OVER_MAXLEN`, in the transaction that appends a frame, trims the camera's stream to
  ``redis.maxlen`` when it is over, counting the frames trimmed unread (drop-oldest backpressure).
* :data:`READ_FRESH` reads a camera's next frames for the inference group, oldest first, and drops
  (acknowledges, counts ``dropped_stale``) those older than ``inference.max_frame_age_ms`` by the
  entry id's time, which is Redis' own clock at XADD. So a replica never classifies a frame that
  waited too long, the accounting stays exact (the group reads every entry, in order), and a backlog
  of old frames costs no transfer to the replica.
* :data:`TRIM_ACKED` removes a camera's frames that the group has read and acknowledged (every
  entry before both the oldest pending one and the group's read position), so classified frames
  leave Redis at once and its memory holds only frames in flight.

Every count is kept per camera (``vigil:stats:<camera>``: ``published``, ``inferred``, ``dead_lettered``,
``dropped_stale``, ``evicted``) and per zone of the frames counted (the same fields with ``@<zone>``), in the
script that moves the frame, so ``published = inferred + dropped + dead_lettered`` holds exactly for each
camera and for each of its zones.
"""

from __future__ import annotations

from typing import Any

import redis

from pipeline.core.redis_clients import RedisClient, RedisPipeline, is_cluster

# Shared Lua: the id just after ``id`` ("ms-seq" -> "ms-(seq+1)"); entries >= it are unread.
_SHEBANG = "#!lua flags=allow-oom\n"
_SUCCESSOR = """
local function successor(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms .. '-' .. string.format('%d', tonumber(seq) + 1)
end
local function trim_acked(key, group)
  local summary = redis.call('XPENDING', key, group)
  local minid = summary[2]
  if not minid then
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local fields = {}
      for i = 1, #g, 2 do fields[g[i]] = g[i + 1] end
      if fields['name'] == group then minid = successor(fields['last-delivered-id']) end
    end
  end
  if minid then return redis.call('XTRIM', key, 'MINID', minid) end
  return 0
end
"""

# Shared Lua: per-zone counts. An entry's zones are its ``zones`` field (wire format 2; a version-1 entry is the
# zone ``full``); a camera's zone counters are the fields ``<what>@<zone>`` of its stats hash.
_ZONES = """
local function zones_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'zones' then return fields[i + 1] end
  end
  return 'full'
end
local function add_zones(counts, zones, n)
  for zone in string.gmatch(zones, '[^,]+') do counts[zone] = (counts[zone] or 0) + n end
end
local function count_zones(stats, what, counts)
  for zone, n in pairs(counts) do redis.call('HINCRBY', stats, what .. '@' .. zone, n) end
end
"""

#: KEYS: frames stream. ARGV: group. Returns the number of entries removed.
TRIM_ACKED = _SHEBANG + _SUCCESSOR + "return trim_acked(KEYS[1], ARGV[1])\n"

#: Most entries one publish evicts (a stream far over a lowered ``redis.maxlen`` shrinks over a few publishes).
EVICT_BATCH = 1000

#: KEYS: frames stream, stats hash. ARGV: group, maxlen. Run after the transaction that XADDs a frame when it says
#: the stream is over ``maxlen`` and a sixteenth (the pixels never pass through Lua, and the per-frame path runs no
#: script: as one script per frame, XADD included, publishing cost Redis 2.4x its CPU; a script in the frame's
#: transaction cost the client a SCRIPT EXISTS round trip per frame).
#: When the stream holds more than ``maxlen`` entries and a sixteenth, trim its oldest entries down to ``maxlen``
#: (XTRIM MINID: a prefix, as MAXLEN does, so Redis keeps counting the group's ``lag``), counting those the group
#: had not read yet ``evicted`` and per zone (drop-oldest). The prefix is mostly frames already answered and
#: waiting behind an older pending one; a pending frame trimmed there is still answered by its replica (its
#: acknowledgement does not need the entry). Returns the frames evicted.
TRIM_OVER_MAXLEN = _SHEBANG + _ZONES + """
local function after(a, b)  -- entry id a > entry id b
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  return am > bm or (am == bm and tonumber(as) > tonumber(bs))
end
local key, stats = KEYS[1], KEYS[2]
local group, maxlen = ARGV[1], tonumber(ARGV[2])
local excess = redis.call('XLEN', key) - maxlen
if excess <= math.max(1, math.floor(maxlen / 16)) then return 0 end
local last = '0-0'
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', key)
if ok then
  for _, g in ipairs(groups) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f['name'] == group then last = f['last-delivered-id'] end
  end
end
local old = redis.call('XRANGE', key, '-', '+', 'COUNT', math.min(excess, """ + str(EVICT_BATCH) + """))
local evicted, unread = {}, 0
for _, entry in ipairs(old) do
  if after(entry[1], last) then
    unread = unread + 1
    add_zones(evicted, zones_of(entry[2]), 1)
  end
end
local cut = old[#old][1]
local ms, seq = string.match(cut, '^(%d+)-(%d+)$')
redis.call('XTRIM', key, 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
if unread > 0 then
  redis.call('HINCRBY', stats, 'evicted', unread)
  count_zones(stats, 'evicted', evicted)
end
return unread
"""

#: KEYS: frames stream, stats hash. ARGV: group, consumer, count, max age (ms), most stale frames to drop.
#: Returns {stale dropped, {entry, ...}} with at most ``count`` fresh entries, now pending for ``consumer``.
READ_FRESH = _SHEBANG + _SUCCESSOR + _ZONES + """
local key, stats = KEYS[1], KEYS[2]
local group, consumer = ARGV[1], ARGV[2]
local want, max_age_ms, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - max_age_ms
local kept, stale, stale_zones = {}, 0, {}
while #kept < want and stale < budget do
  local asked = want - #kept
  local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', asked, 'STREAMS', key, '>')
  if not reply then break end
  local entries = reply[1][2]
  local old = {}
  for _, entry in ipairs(entries) do
    if tonumber(string.match(entry[1], '^(%d+)-')) < cutoff then
      old[#old + 1] = entry[1]
      add_zones(stale_zones, zones_of(entry[2]), 1)
    else
      kept[#kept + 1] = entry
    end
  end
  if #old > 0 then
    redis.call('XACK', key, group, unpack(old))
    stale = stale + #old
  end
  if #entries < asked then break end
end
if stale > 0 then
  redis.call('HINCRBY', stats, 'dropped_stale', stale)
  count_zones(stats, 'dropped_stale', stale_zones)
  trim_acked(key, group)
end
return {stale, kept}
"""

#: KEYS: results stream, failures hash, then each camera's frames stream and stats hash.
#: ARGV: group, results MAXLEN, number of cameras, then per frame: its camera (1-based, the camera's keys'
#: position), its entry id, the number of its records (one per zone), and per record its zone and its fields
#: ``v``, ``stream``, ``json`` (flat, as :data:`DEAD_LETTER` takes its record). Per frame: XACK it, and only if
#: that acknowledged it (a frame classified twice, e.g. reclaimed while its first batch was still being written,
#: is answered once) XADD its records and count it ``inferred`` (and each record ``inferred@<zone>``); then trim
#: each camera's acknowledged frames and forget the frames' failure reasons. Returns the records written.
WRITE_RESULTS = _SHEBANG + _SUCCESSOR + _ZONES + """
local group, maxlen, cameras = ARGV[1], ARGV[2], tonumber(ARGV[3])
local written, zones, done, total = {}, {}, {}, 0
local i = 4
while i <= #ARGV do
  local cam, id, records = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  local acked = redis.call('XACK', KEYS[1 + 2 * cam], group, id) == 1
  if acked then
    written[cam] = (written[cam] or 0) + 1
    zones[cam] = zones[cam] or {}
  end
  for r = 0, records - 1 do
    local at = i + 3 + 4 * r
    if acked then
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'v', ARGV[at + 1], 'stream', ARGV[at + 2],
                 'json', ARGV[at + 3])
      add_zones(zones[cam], ARGV[at], 1)
      total = total + 1
    end
  end
  done[#done + 1] = id
  i = i + 3 + 4 * records
end
for cam = 1, cameras do
  if written[cam] then
    redis.call('HINCRBY', KEYS[2 + 2 * cam], 'inferred', written[cam])
    count_zones(KEYS[2 + 2 * cam], 'inferred', zones[cam])
  end
  trim_acked(KEYS[1 + 2 * cam], group)
end
if #done > 0 then redis.call('HDEL', KEYS[2], unpack(done)) end
return total
"""

#: KEYS: dead-letter stream, frames stream, stats hash, failures hash. ARGV: group, entry id, dead-letter
#: MAXLEN, then the dead-letter record as field, value, ... XACK the frame, and only if that acknowledged it
#: (not answered meanwhile by a result) XADD the record and count it ``dead_lettered`` (and per zone of the
#: entry); then trim the camera's acknowledged frames and forget its failure reason. Returns 1 if it was
#: dead-lettered, else 0.
DEAD_LETTER = _SHEBANG + _SUCCESSOR + _ZONES + """
local group, id, maxlen = ARGV[1], ARGV[2], ARGV[3]
local acked = redis.call('XACK', KEYS[2], group, id)
if acked == 1 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, 4))
  redis.call('HINCRBY', KEYS[3], 'dead_lettered', 1)
  local entry = redis.call('XRANGE', KEYS[2], id, id)
  if #entry == 1 then
    local counts = {}
    add_zones(counts, zones_of(entry[1][2]), 1)
    count_zones(KEYS[3], 'dead_lettered', counts)
  end
end
trim_acked(KEYS[2], group)
redis.call('HDEL', KEYS[4], id)
return acked
"""


#: KEYS: frames stream, stats hash. ARGV: group. Read-only. Returns {wait, stale, queued}: how long (ms,
#: Redis' clock) the camera's oldest unread frame has waited (-1 when none waits, -2 when the stream or
#: the group does not exist yet), the camera's stale drops so far, and its frames waiting unread (the group's
#: lag less the frames evicted unread, which Redis' lag still counts).
QUEUE_STATE = """#!lua flags=no-writes
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if groups['err'] then return {-2, 0, 0} end
local last, lag = nil, 0
for _, g in ipairs(groups) do
  local fields = {}
  for i = 1, #g, 2 do fields[g[i]] = g[i + 1] end
  if fields['name'] == ARGV[1] then last, lag = fields['last-delivered-id'], fields['lag'] end
end
if not last then return {-2, 0, 0} end
local stale = tonumber(redis.call('HGET', KEYS[2], 'dropped_stale') or 0)
local oldest = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
if #oldest == 0 then return {-1, stale, 0} end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
-- Redis' lag counts the frames trimmed before the group read them as waiting still: less those, counted.
local evicted = tonumber(redis.call('HGET', KEYS[2], 'evicted') or 0)
local queued = lag and math.max(1, tonumber(lag) - evicted) or 1
return {now_ms - tonumber(string.match(oldest[1][1], '^(%d+)-')), stale, queued}
"""


class _Script:
    """One script: EVALSHA through redis-py's Script on an instance (loaded on first use, in pipelines too);
    EVAL of the text on a Redis Cluster, whose pipelines refuse EVALSHA (the server caches it all the same)."""

    def __init__(self, client: RedisClient, text: str) -> None:
        self._client, self._text = client, text
        self._registered = None if is_cluster(client) else client.register_script(text)

    def __call__(self, *, keys: list[str], args: list[Any], client: RedisClient | RedisPipeline | None = None) -> Any:
        # Registered on an instance only, whose clients and pipelines are redis.Redis (what redis-py's Script takes):
        # the isinstance narrows the type and is always true there.
        if self._registered is not None and (client is None or isinstance(client, redis.Redis)):
            return self._registered(keys=keys, args=args, client=client)
        return (client or self._client).execute_command("EVAL", self._text, len(keys), *keys, *args)


class BusScripts:
    """The bus's scripts on one client."""

    def __init__(self, client: RedisClient) -> None:
        self.read_fresh = _Script(client, READ_FRESH)
        self.trim_acked = _Script(client, TRIM_ACKED)
        self.write_results = _Script(client, WRITE_RESULTS)
        self.queue_state = _Script(client, QUEUE_STATE)
        self.dead_letter = _Script(client, DEAD_LETTER)
        self.trim_over_maxlen = _Script(client, TRIM_OVER_MAXLEN)
