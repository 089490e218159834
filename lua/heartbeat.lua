-- heartbeat.lua — keep a worker's in-flight entries from being reclaimed.
--
-- For each (stream, entry, delivery count): if XPENDING shows the entry still pending for
-- this consumer with this delivery count, its idle time is reset (XCLAIM to itself with
-- min-idle 0 and JUSTID, which does not increase the delivery count). Otherwise it is
-- reported as lost and left alone: checking and claiming in one script means a heartbeat
-- never takes back an entry another consumer has reclaimed.
--
-- KEYS[k]      the stream of the k-th entry (repeats allowed)
-- ARGV[1]      key prefix "{ns}:" (unused here; every script receives it first)
-- ARGV[2]      consumer group
-- ARGV[3]      consumer name
-- ARGV[2+2k]   entry id of the k-th entry
-- ARGV[3+2k]   delivery count of the k-th entry
--
-- Returns the 1-based positions k of the entries that are no longer this consumer's.

local group, consumer = ARGV[2], ARGV[3]
local lost = {}
for k = 1, #KEYS do
  local entry, deliveries = ARGV[2 + 2 * k], ARGV[3 + 2 * k]
  if owner(KEYS[k], group, entry, consumer, deliveries) == 'ours' then
    rcall('XCLAIM', KEYS[k], group, consumer, 0, entry, 'JUSTID')
  else
    lost[#lost + 1] = k
  end
end
return lost
