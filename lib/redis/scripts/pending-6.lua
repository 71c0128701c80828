--[[
  Reads, in one atomic step, what one shard holds for counter keys that Postgres may not have yet: their
  deltas in the dirty and the flushing hash, whether they were reset since, and the sequence numbers a
  reader needs to tell whether Postgres already holds the flushing batch.

  KEYS[1]  dirty hash
  KEYS[2]  flushing hash
  KEYS[3]  flushing meta hash
  KEYS[4]  sequence counter
  KEYS[5]  resets of the dirty hash (set)
  KEYS[6]  resets of the flushing hash (set)

  ARGV     counter keys, at least one

  Returns  {flushing batch seq, last handed-out seq, dirty deltas, flushing deltas, dirty resets,
           flushing resets}: the seqs nil when absent; then one entry per counter key in each list, a delta
           nil when absent and a reset 1 or 0.
]]
return {
  redis.call('HGET', KEYS[3], 'seq'),
  redis.call('GET', KEYS[4]),
  redis.call('HMGET', KEYS[1], unpack(ARGV)),
  redis.call('HMGET', KEYS[2], unpack(ARGV)),
  redis.call('SMISMEMBER', KEYS[5], unpack(ARGV)),
  redis.call('SMISMEMBER', KEYS[6], unpack(ARGV)),
}
