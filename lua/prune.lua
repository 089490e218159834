-- prune.lua — remove the stale state of one capability (`gleitzeit-submit prune`).
--
-- Two removals, each checked and done in this one call so nothing queued is ever lost:
--   * consumers of gone workers: each named consumer is deleted from the group of each of
--     the capability's streams only where it holds no pending entry (XGROUP DELCONSUMER
--     would drop a pending entry from the group, and with it its redelivery);
--   * the capability itself, when asked: only when its three streams hold no work (no entry
--     pending, none left to deliver; lib.lua's stream_needs), the streams are deleted with
--     their group and the capability leaves {ns}:caps. A task released later on it
--     (make_ready) adds the capability again and its XADD creates the stream; readers create
--     the group on NOGROUP, from id 0, so that entry is delivered.
-- The caller picks the candidates (idle long enough, no live worker); this script only
-- refuses what would lose work.
--
-- KEYS[1]  {ns}:caps
-- KEYS[2]  {ns}:q:<cap>        (normal priority)
-- KEYS[3]  {ns}:q:<cap>#high
-- KEYS[4]  {ns}:q:<cap>#low
-- ARGV[1]  key prefix "{ns}:"  (unused here; every script receives it first)
-- ARGV[2]  capability
-- ARGV[3]  consumer group
-- ARGV[4]  "1" to remove the capability when its streams are empty, "0" to keep it
-- ARGV[5..] pairs: stream (2, 3 or 4: the KEYS index) and consumer name, one pair for each
--          consumer the caller saw in that stream's group and wants gone
--
-- Returns {capability removed (1/0), consumers deleted (count over the three streams)}.

local cap, group, remove_cap = ARGV[2], ARGV[3], ARGV[4] == '1'

local deleted = 0
for a = 5, #ARGV - 1, 2 do
  local stream, consumer = KEYS[tonum(ARGV[a])], ARGV[a + 1]
  local p = rpcall('XPENDING', stream, group, '-', '+', 1, consumer)
  -- An error means the stream or its group is gone: nothing left to delete there.
  if type(p) == 'table' and not p.err and #p == 0 then
    rcall('XGROUP', 'DELCONSUMER', stream, group, consumer)
    deleted = deleted + 1
  end
end

local removed = 0
if remove_cap then
  local empty = true
  for s = 2, 4 do
    local _, busy = stream_needs(KEYS[s], true)
    if busy then empty = false end
  end
  if empty then
    rcall('DEL', KEYS[2], KEYS[3], KEYS[4])
    rcall('SREM', KEYS[1], cap)
    removed = 1
  end
end
return { removed, deleted }
