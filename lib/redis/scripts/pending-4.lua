--[[
  Reads, in one atomic step, what one shard holds for a counter that Postgres may not have yet.

  KEYS[1]  dirty hash
  KEYS[2]  flushing hash
  KEYS[3]  flushing meta hash
  KEYS[4]  sequence counter

  ARGV[1]  counter key

  Returns  {dirty delta, flushing delta, flushing batch seq, last handed-out seq}; each nil when absent.
]]
return {
  redis.call('HGET', KEYS[1], ARGV[1]),
  redis.call('HGET', KEYS[2], ARGV[1]),
  redis.call('HGET', KEYS[3], 'seq'),
  redis.call('GET', KEYS[4]),
}
