#!lua flags=allow-oom
--[[
  Starts a batch for one shard: moves the dirty hash to the flushing hash under a new batch id.
  A flushing hash that is still there belongs to a batch nobody finished (a crashed or slower syncer);
  it is never overwritten: its batch is returned instead, to be finished first.
  Runs under a full Redis (allow-oom): the swap is what lets the syncer empty Redis.

  KEYS[1]  dirty hash          (the API's HINCRBY target)
  KEYS[2]  flushing hash       (the batch being written to Postgres)
  KEYS[3]  flushing meta hash  (batch, seq, swapped_at of the flushing hash)
  KEYS[4]  sequence counter    (per-shard batch order)

  ARGV[1]  id for a new batch (uuid)
  ARGV[2]  swap time, ms since the epoch
  ARGV[3]  lowest sequence number to hand out: the caller's last committed one + 1, so that a counter
           lost with Redis data never goes backwards

  Returns  {batch id, seq, swapped_at ms, resumed (1 = unfinished batch, 0 = new)}
           or nil when the shard has nothing to flush.
]]
local function next_seq()
  local seq = redis.call('INCR', KEYS[4])
  local floor = tonumber(ARGV[3])
  if seq < floor then
    seq = floor
    redis.call('SET', KEYS[4], seq)
  end
  return seq
end

if redis.call('EXISTS', KEYS[2]) == 1 then
  local meta = redis.call('HMGET', KEYS[3], 'batch', 'seq', 'swapped_at')
  if meta[1] and meta[2] and meta[3] then
    return {meta[1], meta[2], meta[3], 1}
  end
  -- A flushing hash without its meta cannot come from swap.lua; adopt it rather than strand its deltas.
  local seq = next_seq()
  redis.call('HSET', KEYS[3], 'batch', ARGV[1], 'seq', seq, 'swapped_at', ARGV[2])
  return {ARGV[1], tostring(seq), ARGV[2], 1}
end

if redis.call('EXISTS', KEYS[1]) == 0 then
  return nil
end

local seq = next_seq()
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[3], 'batch', ARGV[1], 'seq', seq, 'swapped_at', ARGV[2])
return {ARGV[1], tostring(seq), ARGV[2], 0}
