#!lua flags=allow-oom
--[[
  Starts a batch for one shard: moves the dirty hash to the flushing hash, and the resets set to the flushing
  resets set, under a new batch id. A batch may hold deltas, resets or both. A flushing hash or resets set
  that is still there belongs to a batch nobody finished (a crashed or slower syncer); it is never
  overwritten: its batch is returned instead, to be finished first.
  Runs under a full Redis (allow-oom): the swap is what lets the syncer empty Redis.

  KEYS[1]  dirty hash          (the API's HINCRBY target)
  KEYS[2]  flushing hash       (the batch being written to Postgres)
  KEYS[3]  flushing meta hash  (batch, seq, swapped_at of the flushing hash; resumes: times it was resumed)
  KEYS[4]  sequence counter    (per-shard batch order)
  KEYS[5]  resets set          (keys reset since the last swap: the API's SADD target)
  KEYS[6]  flushing resets set (the batch's resets)

  ARGV[1]  id for a new batch (uuid)
  ARGV[2]  swap time, ms since the epoch
  ARGV[3]  lowest sequence number to hand out: the caller's last committed one + 1

  Returns  one of, by reason code:
           {"new", batch id, seq, swapped_at ms, renumbered}  a new batch; renumbered is 1 when the
                    sequence counter was missing (Redis lost its data) and restarts from ARGV[3]
           {"resumed", batch id, seq, swapped_at ms}  the unfinished batch, to be finished first
           {"empty"}  nothing to flush
           {"behind", seq}  the sequence counter is below what Postgres committed: this Redis went back
                    in time (a replica promoted without the latest writes); nothing was done
]]
local floor = tonumber(ARGV[3])

if redis.call('EXISTS', KEYS[2], KEYS[6]) > 0 then
  local meta = redis.call('HMGET', KEYS[3], 'batch', 'seq', 'swapped_at')
  if meta[1] and meta[2] and meta[3] then
    -- A write, so that a WAIT after this script covers the swap that made the batch: the batch is applied
    -- only once the replicas hold it, also when another syncer's swap was never confirmed.
    redis.call('HINCRBY', KEYS[3], 'resumes', 1)
    return {'resumed', meta[1], meta[2], meta[3]}
  end
  -- A flushing hash or resets set without its meta cannot come from this script; adopt it rather than strand
  -- what it holds.
  local seq = redis.call('INCR', KEYS[4])
  if seq < floor then
    seq = floor
    redis.call('SET', KEYS[4], seq)
  end
  redis.call('HSET', KEYS[3], 'batch', ARGV[1], 'seq', seq, 'swapped_at', ARGV[2])
  return {'resumed', ARGV[1], tostring(seq), ARGV[2]}
end

-- Checked before anything else, an empty shard included: a shard whose Redis went back stays stopped until
-- an operator has looked, whether or not increments are waiting in it.
local current = redis.call('GET', KEYS[4])
if current and tonumber(current) + 1 < floor then
  return {'behind', current}
end

local hasDeltas = redis.call('EXISTS', KEYS[1]) == 1
local hasResets = redis.call('EXISTS', KEYS[5]) == 1
if not hasDeltas and not hasResets then
  return {'empty'}
end

local renumbered = 0
local seq = redis.call('INCR', KEYS[4])
if seq < floor then
  -- No counter at all: Redis lost its data. Numbering goes on from Postgres, so reads stay consistent.
  seq = floor
  redis.call('SET', KEYS[4], seq)
  renumbered = 1
end
if hasDeltas then
  redis.call('RENAME', KEYS[1], KEYS[2])
end
if hasResets then
  redis.call('RENAME', KEYS[5], KEYS[6])
end
redis.call('HSET', KEYS[3], 'batch', ARGV[1], 'seq', seq, 'swapped_at', ARGV[2])
return {'new', ARGV[1], tostring(seq), ARGV[2], renumbered}
